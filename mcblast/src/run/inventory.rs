//! Ansible-style inventories for `mcblast run` on real hosts: the INI and the
//! YAML format, with the groups `senders` and `receivers` (or others named by
//! the plan) and the host variables mcblast reads.
//!
//! INI: `[group]` sections of `host key=value ...` lines, `[group:vars]`,
//! `[all:vars]`, `[group:children]`, `#`/`;` comments. YAML: `all: vars:
//! children: GROUP: hosts: HOST: {key: value}` (top-level groups without
//! `all:` work too). Variables apply weakest first: `all` vars, the vars of
//! every group the host is in (parents before children, file order), the
//! host's own. Variables mcblast does not know are ignored, so an existing
//! inventory works as it is.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_yaml_ng::Value as Yaml;

/// One host as mcblast reaches it.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// The inventory name (rows of `cases.csv`, raw file names).
    pub name: String,
    /// `ansible_host`, else the name: what `ssh` connects to (a `Host` of ~/.ssh/config works).
    pub address: String,
    /// `ansible_user`.
    pub user: Option<String>,
    /// `ansible_port`.
    pub port: Option<u16>,
    /// `ansible_ssh_private_key_file`.
    pub key: Option<String>,
    /// `ansible_ssh_common_args`, split into words as a shell would.
    pub ssh_args: Vec<String>,
    /// `mcblast_interface`: the multicast interface (None: the route's).
    pub interface: Option<String>,
    /// `mcblast_path`: the remote program, as the remote shell reads it (default `mcblast`).
    pub mcblast_path: String,
    /// `mcblast_deploy_dir`: where `mcblast run --deploy` puts its builds (default [`DEFAULT_DEPLOY_DIR`]).
    pub deploy_dir: String,
}

/// Where `mcblast run --deploy` copies its binary on a host, under one directory per build.
pub const DEFAULT_DEPLOY_DIR: &str = "~/.cache/mcblast";

/// A parsed inventory: its groups (hosts in file order) and every host's variables.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    file: String,
    /// group -> hosts, in the order they first appear
    groups: BTreeMap<String, Vec<String>>,
    /// host -> merged variables
    vars: BTreeMap<String, BTreeMap<String, String>>,
}

/// What either format reads, before variables are merged.
#[derive(Debug, Default)]
struct Raw {
    /// groups in file order
    groups: Vec<RawGroup>,
}

#[derive(Debug, Default)]
struct RawGroup {
    name: String,
    hosts: Vec<(String, Vec<(String, String)>)>,
    vars: Vec<(String, String)>,
    children: Vec<String>,
}

impl Raw {
    fn group(&mut self, name: &str) -> &mut RawGroup {
        let i = match self.groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.groups.push(RawGroup { name: name.to_string(), ..RawGroup::default() });
                self.groups.len() - 1
            }
        };
        &mut self.groups[i]
    }
}

/// Reads an inventory file: YAML for `.yml`/`.yaml`, INI otherwise.
pub fn load(path: &Path) -> Result<Inventory> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading inventory {}", path.display()))?;
    let file = path.display().to_string();
    let yaml = path.extension().is_some_and(|e| e == "yml" || e == "yaml");
    if yaml { parse_yaml(&text, &file) } else { parse_ini(&text, &file) }
}

/// Splits `s` into words as `sh` would (single and double quotes, backslash
/// escapes; an unquoted `#` starting a word begins a comment).
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unclosed ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unclosed \" quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unclosed \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = it.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
}

/// Parses the INI format; `file` names it in errors (`file:line: ...`).
pub fn parse_ini(text: &str, file: &str) -> Result<Inventory> {
    let mut raw = Raw::default();
    let mut sec = IniSection::Hosts("ungrouped".into());
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            sec = ini_section(rest, t, file, n)?;
            raw.group(sec.group());
            continue;
        }
        let words = split_words(t).map_err(|e| anyhow::anyhow!("{file}:{n}: {e}"))?;
        if words.is_empty() {
            continue;
        }
        match &sec {
            IniSection::Hosts(g) => ini_host(&mut raw, g, &words, t, file, n)?,
            IniSection::Vars(g) => ini_var(&mut raw, g, t, file, n)?,
            IniSection::Children(g) => {
                if words.len() != 1 || !valid_name(&words[0]) {
                    bail!("{file}:{n}: [{g}:children] lists one group name per line: {t}");
                }
                let child = words[0].clone();
                raw.group(&child);
                raw.group(g).children.push(child);
            }
        }
    }
    resolve(raw, file)
}

/// The kind of an INI section, with its group's name.
enum IniSection {
    Hosts(String),
    Vars(String),
    Children(String),
}

impl IniSection {
    /// The section's group.
    fn group(&self) -> &str {
        match self {
            IniSection::Hosts(g) | IniSection::Vars(g) | IniSection::Children(g) => g,
        }
    }
}

/// The section a header line `t` opens (`rest` is what follows its `[`; `n` its line number).
fn ini_section(rest: &str, t: &str, file: &str, n: usize) -> Result<IniSection> {
    let Some(head) = rest.split_once(']').map(|(h, after)| (h.trim(), after.trim())) else {
        bail!("{file}:{n}: section header without `]`: {t}");
    };
    if !(head.1.is_empty() || head.1.starts_with('#') || head.1.starts_with(';')) {
        bail!("{file}:{n}: text after the section header: {t}");
    }
    let (name, kind) = head.0.split_once(':').unwrap_or((head.0, ""));
    if !valid_name(name) || name.contains(':') {
        bail!("{file}:{n}: bad group name `{name}` (letters, digits, `-`, `_`, `.`)");
    }
    Ok(match kind {
        "" => IniSection::Hosts(name.into()),
        "vars" => IniSection::Vars(name.into()),
        "children" => IniSection::Children(name.into()),
        k => bail!("{file}:{n}: unknown section kind `[{name}:{k}]`: use [{name}], [{name}:vars] or [{name}:children]"),
    })
}

/// Adds the host of a `[group]` line (its `words`: the name, then key=value pairs) to group `g`.
fn ini_host(raw: &mut Raw, g: &str, words: &[String], t: &str, file: &str, n: usize) -> Result<()> {
    let host = &words[0];
    if host.contains('[') {
        bail!("{file}:{n}: host ranges like `{host}` are not supported: list each host on its own line");
    }
    if host.contains('=') || !valid_name(host) {
        bail!("{file}:{n}: expected a host name first, then key=value pairs: {t}");
    }
    let mut vars = Vec::new();
    for w in &words[1..] {
        let Some((k, v)) = w.split_once('=') else {
            bail!("{file}:{n}: `{w}` is not key=value (quote values with spaces: key=\"a b\")");
        };
        if k.is_empty() {
            bail!("{file}:{n}: `{w}`: empty variable name");
        }
        vars.push((k.to_string(), v.to_string()));
    }
    raw.group(g).hosts.push((host.clone(), vars));
    Ok(())
}

/// Adds the variable of a `[group:vars]` line `t` to group `g`.
fn ini_var(raw: &mut Raw, g: &str, t: &str, file: &str, n: usize) -> Result<()> {
    let Some((k, v)) = t.split_once('=') else {
        bail!("{file}:{n}: `{t}` is not key=value ([{g}:vars] holds variables)");
    };
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        bail!("{file}:{n}: bad variable name `{k}`");
    }
    let v = split_words(v.trim()).map_err(|e| anyhow::anyhow!("{file}:{n}: {e}"))?;
    // a quoted value keeps its spaces; unquoted words are joined back
    raw.group(g).vars.push((k.to_string(), v.join(" ")));
    Ok(())
}

/// Parses the YAML format; `file` names it in errors (`file:line: ...` for syntax).
pub fn parse_yaml(text: &str, file: &str) -> Result<Inventory> {
    let doc: Yaml = serde_yaml_ng::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        match e.location() {
            Some(l) => anyhow::anyhow!("{file}:{}: {}", l.line(), msg.split_whitespace().collect::<Vec<_>>().join(" ")),
            None => anyhow::anyhow!("{file}: {}", msg.split_whitespace().collect::<Vec<_>>().join(" ")),
        }
    })?;
    let mut raw = Raw::default();
    match &doc {
        Yaml::Mapping(top) => {
            for (k, g) in top {
                let name = yaml_key(file, k, "top level")?;
                yaml_group(&mut raw, &name, g, file, 0)?;
            }
        }
        Yaml::Null => {}
        _ => bail!("{file}: expected a mapping of groups (all: children: senders: hosts: ...)"),
    }
    resolve(raw, file)
}

/// A YAML scalar as text (null as empty); `what` names it in the error for a list or mapping.
fn yaml_scalar(file: &str, v: &Yaml, what: &str) -> Result<String> {
    Ok(match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        _ => bail!("{file}: {what}: expected a single value, not a list or mapping"),
    })
}

/// A YAML mapping key as a name (text or a number).
fn yaml_key(file: &str, k: &Yaml, what: &str) -> Result<String> {
    match k {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        _ => bail!("{file}: {what}: a name must be text"),
    }
}

/// The variables of a YAML mapping (none for null), in file order.
fn yaml_vars(file: &str, v: &Yaml, what: &str) -> Result<Vec<(String, String)>> {
    match v {
        Yaml::Null => Ok(Vec::new()),
        Yaml::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let k = yaml_key(file, k, what)?;
                let val = yaml_scalar(file, v, &format!("{what} {k}"))?;
                Ok((k, val))
            })
            .collect(),
        _ => bail!("{file}: {what}: expected a mapping of variables"),
    }
}

/// Adds group `name` (its YAML `g`: hosts, vars, children) and, recursively, its children to `raw`.
fn yaml_group(raw: &mut Raw, name: &str, g: &Yaml, file: &str, depth: u32) -> Result<()> {
    if depth > 32 {
        bail!("{file}: groups nested deeper than 32 levels");
    }
    if !valid_name(name) {
        bail!("{file}: bad group name `{name}`");
    }
    raw.group(name);
    let m = match g {
        Yaml::Null => return Ok(()),
        Yaml::Mapping(m) => m,
        _ => bail!("{file}: group `{name}`: expected a mapping with hosts, vars or children"),
    };
    for (k, v) in m {
        let k = yaml_key(file, k, &format!("group `{name}`"))?;
        match k.as_str() {
            "hosts" => yaml_hosts(raw, name, v, file)?,
            "vars" => {
                let vars = yaml_vars(file, v, &format!("group `{name}` vars"))?;
                raw.group(name).vars.extend(vars);
            }
            "children" => match v {
                Yaml::Null => {}
                Yaml::Mapping(children) => {
                    for (c, cv) in children {
                        let c = yaml_key(file, c, &format!("group `{name}` children"))?;
                        if !raw.group(name).children.contains(&c) {
                            raw.group(name).children.push(c.clone());
                        }
                        yaml_group(raw, &c, cv, file, depth + 1)?;
                    }
                }
                _ => bail!("{file}: group `{name}`: `children` must be a mapping of groups"),
            },
            other => bail!("{file}: group `{name}`: unknown key `{other}` (a group has hosts, vars and children)"),
        }
    }
    Ok(())
}

/// Adds the hosts of group `name`'s YAML `hosts` mapping (host: vars or empty) to `raw`.
fn yaml_hosts(raw: &mut Raw, name: &str, v: &Yaml, file: &str) -> Result<()> {
    match v {
        Yaml::Null => {}
        Yaml::Mapping(hosts) => {
            for (h, hv) in hosts {
                let h = yaml_key(file, h, &format!("group `{name}` hosts"))?;
                if h.contains('[') {
                    bail!("{file}: host ranges like `{h}` are not supported: list each host");
                }
                if !valid_name(&h) {
                    bail!("{file}: group `{name}`: bad host name `{h}`");
                }
                let vars = yaml_vars(file, hv, &format!("host `{h}`"))?;
                raw.group(name).hosts.push((h, vars));
            }
        }
        _ => bail!("{file}: group `{name}`: `hosts` must be a mapping (host: vars or empty), not a list"),
    }
    Ok(())
}

/// Merges variables: `all` vars, each group's (parents first, file order), the host's own.
fn resolve(raw: Raw, file: &str) -> Result<Inventory> {
    // every group a group is in, itself included, parents first
    fn ancestors(raw: &Raw, g: &str, out: &mut Vec<String>, depth: u32, file: &str) -> Result<()> {
        if depth > 32 {
            bail!("{file}: group `{g}` is its own ancestor (a [..:children] cycle)");
        }
        for p in raw.groups.iter().filter(|p| p.children.iter().any(|c| c == g)) {
            ancestors(raw, &p.name, out, depth + 1, file)?;
        }
        if !out.iter().any(|x| x == g) {
            out.push(g.to_string());
        }
        Ok(())
    }
    let mut inv = Inventory { file: file.to_string(), ..Inventory::default() };
    let all_vars: Vec<(String, String)> =
        raw.groups.iter().filter(|g| g.name == "all").flat_map(|g| g.vars.clone()).collect();
    let mut host_groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut host_own: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for g in &raw.groups {
        for (h, vars) in &g.hosts {
            if !order.contains(h) {
                order.push(h.clone());
            }
            let mut anc = Vec::new();
            ancestors(&raw, &g.name, &mut anc, 0, file)?;
            let hg = host_groups.entry(h.clone()).or_default();
            for a in anc {
                if !hg.contains(&a) {
                    hg.push(a);
                }
            }
            host_own.entry(h.clone()).or_default().extend(vars.iter().cloned());
        }
    }
    for h in &order {
        let mut v: BTreeMap<String, String> = all_vars.iter().cloned().collect();
        for g in &host_groups[h] {
            for gr in raw.groups.iter().filter(|x| &x.name == g && x.name != "all") {
                v.extend(gr.vars.iter().cloned());
            }
        }
        v.extend(host_own[h].iter().cloned());
        inv.vars.insert(h.clone(), v);
        for g in &host_groups[h] {
            let members = inv.groups.entry(g.clone()).or_default();
            if !members.contains(h) {
                members.push(h.clone());
            }
        }
    }
    for g in &raw.groups {
        inv.groups.entry(g.name.clone()).or_default();
    }
    inv.groups.insert("all".into(), order);
    Ok(inv)
}

impl Inventory {
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The hosts of a group, in file order; an error names the groups there are.
    pub fn group(&self, name: &str) -> Result<Vec<Host>> {
        let hosts = match self.groups.get(name) {
            Some(h) if !h.is_empty() => h,
            Some(_) => bail!("{}: group `{name}` has no hosts", self.file),
            None => {
                let known: Vec<&str> = self.groups.keys().map(String::as_str).filter(|g| !["all", "ungrouped"].contains(g)).collect();
                bail!("{}: no group `{name}` (groups: {})", self.file, if known.is_empty() { "none".into() } else { known.join(", ") })
            }
        };
        hosts.iter().map(|h| self.host(h)).collect()
    }

    /// One host with its merged variables.
    pub fn host(&self, name: &str) -> Result<Host> {
        let v = self.vars.get(name).with_context(|| format!("{}: no host `{name}`", self.file))?;
        let get = |k: &str| v.get(k).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let port = match get("ansible_port") {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p > 0).with_context(|| {
                format!("{}: host `{name}`: ansible_port `{p}` is not a port number (1..65535)", self.file)
            })?),
        };
        let ssh_args = match get("ansible_ssh_common_args") {
            None => Vec::new(),
            Some(a) => split_words(&a)
                .map_err(|e| anyhow::anyhow!("{}: host `{name}`: ansible_ssh_common_args: {e}", self.file))?,
        };
        let interface = get("mcblast_interface");
        if let Some(i) = &interface
            && (i.len() > 15 || i.contains(['/', ' ']))
        {
            bail!("{}: host `{name}`: mcblast_interface `{i}` is not an interface name", self.file);
        }
        Ok(Host {
            name: name.to_string(),
            address: get("ansible_host").unwrap_or_else(|| name.to_string()),
            user: get("ansible_user"),
            port,
            key: get("ansible_ssh_private_key_file"),
            ssh_args,
            interface,
            mcblast_path: get("mcblast_path").unwrap_or_else(|| "mcblast".into()),
            deploy_dir: get("mcblast_deploy_dir").unwrap_or_else(|| DEFAULT_DEPLOY_DIR.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = r#"
# the lab's three machines
[all:vars]
ansible_user=ubuntu
mcblast_interface=ens5

[senders]
tx1 ansible_host=10.0.1.10 mcblast_path=/opt/mcblast/mcblast

[receivers]
rx1 ansible_host=10.0.1.11   # the first
rx2 ansible_host=10.0.1.12 mcblast_interface=ens6 ansible_port=2222
; an old one
rx3 ansible_host=10.0.1.13 ansible_ssh_common_args="-o ProxyJump=bastion -o 'IdentitiesOnly yes'"

[receivers:vars]
ansible_ssh_private_key_file=~/.ssh/lab.pem
ansible_user = ec2-user
"#;

    #[test]
    fn ini_groups_and_vars() {
        let inv = parse_ini(INI, "hosts.ini").unwrap();
        let s = inv.group("senders").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0],
            Host {
                name: "tx1".into(),
                address: "10.0.1.10".into(),
                user: Some("ubuntu".into()),
                port: None,
                key: None,
                ssh_args: vec![],
                interface: Some("ens5".into()),
                mcblast_path: "/opt/mcblast/mcblast".into(),
                deploy_dir: "~/.cache/mcblast".into(),
            }
        );
        let r = inv.group("receivers").unwrap();
        assert_eq!(r.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["rx1", "rx2", "rx3"]);
        assert_eq!(r[0].user.as_deref(), Some("ec2-user"), "group vars beat all:vars");
        assert_eq!(r[0].key.as_deref(), Some("~/.ssh/lab.pem"));
        assert_eq!(r[0].interface.as_deref(), Some("ens5"));
        assert_eq!(r[0].mcblast_path, "mcblast");
        assert_eq!((r[1].interface.as_deref(), r[1].port), (Some("ens6"), Some(2222)), "host vars beat group vars");
        assert_eq!(r[2].ssh_args, ["-o", "ProxyJump=bastion", "-o", "IdentitiesOnly yes"]);
        assert!(inv.group("all").unwrap().len() == 4);
    }

    #[test]
    fn ini_children_and_ungrouped() {
        let t = "lonely\n[eu]\ne1\n[us]\nu1 ansible_host=u1.example\n[receivers:children]\neu\nus\n[eu:vars]\nmcblast_interface=eth9\n";
        let inv = parse_ini(t, "c.ini").unwrap();
        let r = inv.group("receivers").unwrap();
        assert_eq!(r.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["e1", "u1"]);
        assert_eq!(r[0].interface.as_deref(), Some("eth9"));
        assert_eq!(r[1].address, "u1.example");
        assert_eq!(inv.group("ungrouped").unwrap()[0].name, "lonely");
        let e = inv.group("senders").unwrap_err().to_string();
        assert_eq!(e, "c.ini: no group `senders` (groups: eu, receivers, us)");
    }

    #[test]
    fn ini_errors_name_file_and_line() {
        for (text, line, what) in [
            ("[senders]\ntx1\n[receivers\nrx1\n", 3, "without `]`"),
            ("[senders]\ntx1 ansible_host\n", 2, "not key=value"),
            ("[senders]\nh[1:3]\n", 2, "host ranges"),
            ("\n[senders:hostvars]\n", 2, "unknown section kind"),
            ("[all:vars]\nnovalue\n", 2, "not key=value"),
            ("[senders]\ntx1 ansible_ssh_common_args=\"-o x\n", 2, "unclosed"),
        ] {
            let e = parse_ini(text, "bad.ini").unwrap_err().to_string();
            assert!(e.starts_with(&format!("bad.ini:{line}: ")), "{e}");
            assert!(e.contains(what), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let inv = parse_ini("[senders]\ntx1 ansible_port=http\n", "p.ini").unwrap();
        let e = inv.group("senders").unwrap_err().to_string();
        assert_eq!(e, "p.ini: host `tx1`: ansible_port `http` is not a port number (1..65535)");
        let e = parse_ini("[senders]\n", "e.ini").unwrap().group("senders").unwrap_err().to_string();
        assert_eq!(e, "e.ini: group `senders` has no hosts");
    }

    const YAML: &str = r#"
all:
  vars:
    ansible_user: ubuntu
    mcblast_interface: ens5
  children:
    senders:
      hosts:
        tx1:
          ansible_host: 10.0.1.10
          mcblast_path: /opt/mcblast/mcblast
    receivers:
      vars:
        ansible_user: ec2-user
      hosts:
        rx1: {ansible_host: 10.0.1.11}
        rx2: {ansible_host: 10.0.1.12, ansible_port: 2222, mcblast_interface: ens6}
        rx3:
"#;

    #[test]
    fn yaml_same_as_ini() {
        let inv = parse_yaml(YAML, "hosts.yml").unwrap();
        let s = inv.group("senders").unwrap();
        assert_eq!((s[0].address.as_str(), s[0].user.as_deref()), ("10.0.1.10", Some("ubuntu")));
        assert_eq!(s[0].mcblast_path, "/opt/mcblast/mcblast");
        let r = inv.group("receivers").unwrap();
        assert_eq!(r.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["rx1", "rx2", "rx3"]);
        assert_eq!(r[0].user.as_deref(), Some("ec2-user"));
        assert_eq!((r[1].port, r[1].interface.as_deref()), (Some(2222), Some("ens6")));
        assert_eq!((r[2].address.as_str(), r[2].interface.as_deref()), ("rx3", Some("ens5")));
        // top-level groups without `all:`
        let inv = parse_yaml("senders:\n  hosts:\n    a:\nreceivers:\n  hosts:\n    b: {ansible_host: 10.1.1.1}\n", "t.yaml").unwrap();
        assert_eq!(inv.group("receivers").unwrap()[0].address, "10.1.1.1");
    }

    #[test]
    fn yaml_errors() {
        let e = parse_yaml("all:\n  children:\n    senders:\n      hosts:\n        tx1: {ansible_host: [\n", "bad.yml").unwrap_err().to_string();
        assert!(e.starts_with("bad.yml:"), "{e}");
        let line: u32 = e["bad.yml:".len()..].split(':').next().unwrap().parse().unwrap_or_else(|_| panic!("{e}"));
        assert!((5..=6).contains(&line), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse_yaml("all:\n  children:\n    senders:\n      hosts:\n        - tx1\n", "l.yml").unwrap_err().to_string();
        assert_eq!(e, "l.yml: group `senders`: `hosts` must be a mapping (host: vars or empty), not a list");
        let e = parse_yaml("senders:\n  hostz:\n    a:\n", "k.yml").unwrap_err().to_string();
        assert_eq!(e, "k.yml: group `senders`: unknown key `hostz` (a group has hosts, vars and children)");
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(split_words(r#"-o "A B" 'c d'e f\ g # tail"#).unwrap(), ["-o", "A B", "c de", "f g"]);
        assert!(split_words("'open").is_err());
        assert_eq!(split_words("").unwrap(), Vec::<String>::new());
    }
}
