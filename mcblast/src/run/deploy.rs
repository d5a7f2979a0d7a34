//! `mcblast run --deploy`: this very binary (`/proc/self/exe`) copied over
//! the hosts' own ssh to `mcblast_deploy_dir/TAG/mcblast` (default
//! `~/.cache/mcblast`), TAG naming the build, on every host where
//! `--version` there is not this build; the run then uses that path on the
//! host, behind the inventory's `sudo -n` (or whatever precedes the program
//! in `mcblast_path`). A second run finds the build there and copies nothing.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::inventory::Host;
use super::plan::Hosts;
use super::transport::{Node, Version, shell_quote};

/// Bound on one `--version` over ssh.
const VERSION_LIMIT: Duration = Duration::from_secs(40);
/// Bound on one copy.
const COPY_LIMIT: Duration = Duration::from_secs(600);

/// A build's directory name: the version as one path word
/// (`0.1.0 (53c08594a2e1)` → `0.1.0-53c08594a2e1`); a `-dirty` build adds
/// `hash` of its binary, since equal dirty versions may be different code.
pub fn build_tag(version: &str, hash: Option<u64>) -> String {
    let mut t = String::new();
    for c in version.chars() {
        if c.is_ascii_alphanumeric() || "._".contains(c) {
            t.push(c);
        } else if !t.ends_with('-') {
            t.push('-');
        }
    }
    let t = t.trim_matches('-').to_string();
    match hash {
        Some(h) if version.contains("-dirty") => format!("{t}-{h:016x}"),
        _ => t,
    }
}

/// FNV-1a, 64 bits: tells two dirty builds apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A path for the remote shell: a leading `~/` stays unquoted (the ssh
/// user's home), the rest is quoted.
pub fn remote_path(p: &str) -> String {
    match p.strip_prefix("~/") {
        Some(rest) => format!("~/{}", shell_quote(rest)),
        None if p == "~" => "~".into(),
        None => shell_quote(p),
    }
}

/// Where the build goes on `h`, as the remote shell reads it.
pub fn target(h: &Host, tag: &str) -> String {
    remote_path(&format!("{}/{tag}/mcblast", h.deploy_dir.trim_end_matches('/')))
}

/// `mcblast_path` for the deployed program: the words before the
/// program in the inventory's (`sudo -n`, `nice -n 5`, …) stay.
pub fn deployed_path(mcblast_path: &str, target: &str) -> String {
    let words: Vec<&str> = mcblast_path.split_whitespace().collect();
    match words.split_last() {
        Some((_, before)) if !before.is_empty() => format!("{} {target}", before.join(" ")),
        _ => target.to_string(),
    }
}

/// Deploys this build to every host that lacks it (in parallel) and points
/// their `mcblast_path` at it; one line per host, an error if any failed.
pub fn deploy(hosts: &mut Hosts) -> Result<()> {
    let exe = std::fs::read("/proc/self/exe").context("reading this program (/proc/self/exe) to deploy it")?;
    let tag = build_tag(crate::version::VERSION, Some(fnv1a(&exe)));
    let mb = exe.len() as f64 / 1e6;
    drop(exe);
    let all: Vec<&mut Host> = std::iter::once(&mut hosts.sender).chain(hosts.receivers.iter_mut()).collect();
    let (v, n) = (crate::version::VERSION, all.len());
    eprintln!("mcblast run: deploying mcblast {v} ({mb:.1} MB) to {n} host(s) where it is missing");
    let results: Vec<Result<String>> = std::thread::scope(|s| {
        let ts: Vec<_> = all.iter().map(|h| s.spawn(|| deploy_one(h, &tag))).collect();
        ts.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the deployment crashed")))).collect()
    });
    super::check_stop()?;
    let mut bad = 0;
    for (h, r) in all.into_iter().zip(results) {
        match r {
            Ok(line) => {
                eprintln!("{line}");
                h.mcblast_path = deployed_path(&h.mcblast_path, &target(h, &tag));
            }
            Err(e) => {
                eprintln!("{e:#}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} host(s) could not get mcblast (see above); nothing was sent", hosts.receivers.len() + 1);
    }
    Ok(())
}

/// One host: `--version` of the deployed path; a copy when it is not this build.
fn deploy_one(h: &Host, tag: &str) -> Result<String> {
    let to = target(h, tag);
    let probe = Node::ssh(&Host { mcblast_path: to.clone(), ..h.clone() });
    match probe.version(VERSION_LIMIT)? {
        Version::Same => return Ok(format!("{}: {to} is this build, not copied", h.name)),
        Version::Unreachable(line) => bail!("{line}"),
        Version::Other(_) => {}
    }
    copy(h, tag, &to)?;
    match probe.version(VERSION_LIMIT)? {
        Version::Same => Ok(format!("{}: copied to {to}", h.name)),
        Version::Unreachable(line) => bail!("{line}"),
        Version::Other(line) => bail!(
            "{line}, after copying it there (does the host have another CPU architecture, or an older glibc than this machine?)"
        ),
    }
}

/// Streams /proc/self/exe into `to` on `h` (a temporary name, then renamed: never half a binary).
fn copy(h: &Host, tag: &str, to: &str) -> Result<()> {
    let dir = remote_path(&format!("{}/{tag}", h.deploy_dir.trim_end_matches('/')));
    let script = format!(
        "t={dir}/.mcblast.$$; trap 'rm -f \"$t\"' EXIT; umask 022 && mkdir -p {dir} && cat > \"$t\" \
         && chmod 755 \"$t\" && mv -f \"$t\" {to}"
    );
    let exe = std::fs::File::open("/proc/self/exe").context("opening /proc/self/exe")?;
    let mut c = Node::ssh_base(h);
    c.arg(script).stdin(exe).stdout(Stdio::null()).stderr(Stdio::piped());
    super::transport::join_run_group(&mut c);
    let mut child = c.spawn().with_context(|| format!("{}: starting ssh (install openssh-client)", h.name))?;
    let deadline = Instant::now() + COPY_LIMIT;
    let st = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        let stop = super::check_stop();
        if stop.is_err() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            stop?;
            bail!("{}: copying mcblast to {to} took over {} s", h.name, COPY_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !st.success() {
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        let name = &h.name;
        bail!("{name}: copying mcblast to {to} failed ({st}): {last} (set mcblast_deploy_dir to a directory the ssh user may write)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_path_words() {
        assert_eq!(build_tag("0.1.0 (53c08594a2e1)", Some(7)), "0.1.0-53c08594a2e1");
        assert_eq!(build_tag("0.1.0 (53c08594a2e1-dirty)", Some(0xab)), "0.1.0-53c08594a2e1-dirty-00000000000000ab");
        assert_eq!(build_tag("0.1.0", None), "0.1.0");
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }

    #[test]
    fn deployed_paths_keep_sudo() {
        assert_eq!(remote_path("~/.cache/mcblast/x/mcblast"), "~/.cache/mcblast/x/mcblast");
        assert_eq!(remote_path("/opt/my dir/mcblast"), "'/opt/my dir/mcblast'");
        assert_eq!(deployed_path("sudo -n /usr/local/bin/mcblast", "~/x/mcblast"), "sudo -n ~/x/mcblast");
        assert_eq!(deployed_path("mcblast", "~/x/mcblast"), "~/x/mcblast");
        assert_eq!(deployed_path("", "/d/mcblast"), "/d/mcblast");
        let h = Host {
            name: "rx1".into(),
            address: "a".into(),
            user: None,
            port: None,
            key: None,
            ssh_args: vec![],
            interface: None,
            mcblast_path: "mcblast".into(),
            deploy_dir: "/var/tmp/mcb/".into(),
        };
        assert_eq!(target(&h, "0.1.0-abc"), "/var/tmp/mcb/0.1.0-abc/mcblast");
    }
}
