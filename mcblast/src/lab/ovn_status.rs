//! What `mcblast lab status` shows of an OVN lab (`--fabric ovn`): the logical
//! switch's multicast settings as OVN has them, the chassis and where each
//! port is bound, OVN's learned groups (`IGMP_Group`, per chassis, with the
//! `mrouters` entries), the `Multicast_Group`s northd made of them, each
//! receiver's own memberships, and each hypervisor's datapath counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use serde_json::Value;

use super::ovn::{LSWITCH, nbctl, sbctl};
use super::status::MdbEntry;
use super::topo::host_name;
use super::{Lab, NODE_IF, ip_json};

/// The whole OVN view.
#[derive(Debug, Clone, Serialize)]
pub struct OvnStatus {
    pub prefix: String,
    /// The logical switch's `other_config` (mcast_* keys), as OVN stores them.
    pub other_config: BTreeMap<String, String>,
    /// Logical port -> its `mcast_*` options (`mcast_flood=true`, ...), ports with none left out.
    pub port_options: BTreeMap<String, Vec<String>>,
    /// Chassis name -> (encap type, encap IP).
    pub chassis: BTreeMap<String, (String, String)>,
    /// Logical port -> (chassis it is bound on, up).
    pub ports: BTreeMap<String, (String, bool)>,
    /// OVN's learned groups: (group or `mrouters`, chassis, member ports).
    pub igmp_groups: Vec<(String, String, Vec<String>)>,
    /// northd's multicast groups of the switch: (name, ports).
    pub multicast_groups: Vec<(String, Vec<String>)>,
    /// Each receiver's own IPv4 memberships on eth0 (`ip maddr`).
    pub memberships: Vec<(String, Vec<String>)>,
    /// Per hypervisor: the datapath's `lookups:` line (hit, missed, lost).
    pub datapath: Vec<(String, String)>,
    /// Per hypervisor: what its userspace datapath dropped since the lab came up.
    pub datapath_drops: Vec<DatapathDrops>,
}

/// What one hypervisor's userspace datapath dropped since `lab up`: its ports' drop
/// and error counts (`ovs-appctl dpctl/show -s`) and OVS's drop coverage counters
/// (`ovs-appctl coverage/show`: `drop_action_*`, `datapath_drop_*`, ...), non-zero ones only.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DatapathDrops {
    pub host: String,
    /// (port, `rx_dropped`/`rx_errors`/`tx_dropped`/`tx_errors`, count).
    pub ports: Vec<(String, String, u64)>,
    /// (coverage counter, total).
    pub counters: Vec<(String, u64)>,
    /// Why the counters could not be read, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// The non-zero drop and error counts of each port in `ovs-appctl dpctl/show -s`
/// (`?` = a counter the port does not have, e.g. a tunnel's).
pub fn parse_port_drops(text: &str) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let mut port = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("port ") {
            // "port 5: r1" or "port 4: genev_sys_6081 (geneve: ...)"
            port = rest.split_once(": ").map_or("", |(_, n)| n).split_whitespace().next().unwrap_or("").to_string();
            continue;
        }
        let dir = match line.split_whitespace().next() {
            Some("RX") => "rx",
            Some("TX") => "tx",
            _ => continue,
        };
        for (k, v) in line.split_whitespace().filter_map(|w| w.split_once(':')) {
            if let ("dropped" | "errors", Ok(n)) = (k, v.parse::<u64>())
                && n > 0
            {
                out.push((port.clone(), format!("{dir}_{k}"), n));
            }
        }
    }
    out
}

/// The coverage counters of `ovs-appctl coverage/show` whose name says drop, with a non-zero total.
pub fn parse_drop_counters(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let name = l.split_whitespace().next()?;
            let total = l.rsplit_once("total:")?.1.trim().parse::<u64>().ok()?;
            (name.contains("drop") && total > 0).then(|| (name.to_string(), total))
        })
        .collect()
}

/// Hypervisor K's datapath drops.
fn datapath_drops(prefix: &str, k: u32) -> DatapathDrops {
    let mut d = DatapathDrops { host: host_name(k), ..Default::default() };
    let show = super::ovn::vswitchd_ctl(prefix, k, &["dpctl/show", "-s"]);
    let cov = super::ovn::vswitchd_ctl(prefix, k, &["coverage/show"]);
    match (show, cov) {
        (Ok(s), Ok(c)) => (d.ports, d.counters) = (parse_port_drops(&s), parse_drop_counters(&c)),
        (Err(e), _) | (_, Err(e)) => d.unreadable = Some(format!("{e:#}")),
    }
    d
}

/// The string atoms of an OVSDB JSON value: `"x"`, `["uuid", "u"]`, `["set", [...]]`, `["map", ...]` as `k=v`.
fn atoms(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(a) if a.len() == 2 && a[0] == "set" => a[1].as_array().into_iter().flatten().flat_map(atoms).collect(),
        Value::Array(a) if a.len() == 2 && a[0] == "map" => a[1]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| format!("{}={}", atoms(&kv[0]).join(""), atoms(&kv[1]).join("")))
            .collect(),
        Value::Array(a) if a.len() == 2 && (a[0] == "uuid" || a[0] == "named-uuid") => atoms(&a[1]),
        _ => vec![],
    }
}

/// Rows of a `--format=json list` output as column -> atoms.
pub(super) fn rows(json: &str) -> Result<Vec<BTreeMap<String, Vec<String>>>> {
    let v: Value = serde_json::from_str(json).context("OVSDB JSON")?;
    let heads: Vec<String> = atoms(&Value::Array(vec!["set".into(), v["headings"].clone()]));
    let data = v["data"].as_array().ok_or_else(|| anyhow!("no data in {json}"))?;
    Ok(data
        .iter()
        .map(|r| heads.iter().cloned().zip(r.as_array().into_iter().flatten().map(atoms)).collect())
        .collect())
}

fn sb_rows(prefix: &str, table: &str, cols: &str) -> Result<Vec<BTreeMap<String, Vec<String>>>> {
    rows(&sbctl(prefix, &["--format=json", &format!("--columns={cols}"), "list", table])?)
}

fn first(r: &BTreeMap<String, Vec<String>>, col: &str) -> String {
    r.get(col).and_then(|v| v.first()).cloned().unwrap_or_default()
}

/// uuid -> name maps of the SB Chassis and Port_Binding tables.
fn names(prefix: &str) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let ch = sb_rows(prefix, "Chassis", "_uuid,name")?.iter().map(|r| (first(r, "_uuid"), first(r, "name"))).collect();
    let pb = sb_rows(prefix, "Port_Binding", "_uuid,logical_port")?
        .iter()
        .map(|r| (first(r, "_uuid"), first(r, "logical_port")))
        .collect();
    Ok((ch, pb))
}

/// OVN's learned groups: (address, chassis name, member port names), sorted.
pub fn igmp_groups(prefix: &str) -> Result<Vec<(String, String, Vec<String>)>> {
    let (ch, pb) = names(prefix)?;
    let name = |m: &BTreeMap<String, String>, u: &String| m.get(u).cloned().unwrap_or_else(|| u.clone());
    let mut v: Vec<_> = sb_rows(prefix, "IGMP_Group", "address,chassis,ports")?
        .iter()
        .map(|r| {
            let mut ports: Vec<String> = r.get("ports").into_iter().flatten().map(|u| name(&pb, u)).collect();
            ports.sort_by_key(|p| port_rank(p));
            (first(r, "address"), name(&ch, &first(r, "chassis")), ports)
        })
        .collect();
    v.sort();
    Ok(v)
}

fn port_rank(p: &str) -> (u32, String) {
    (p.strip_prefix('r').and_then(|d| d.parse().ok()).unwrap_or(0), p.to_string())
}

fn other_config(prefix: &str) -> Result<BTreeMap<String, String>> {
    let cols = nbctl(prefix, &["--format=json", "--columns=other_config", "find", "Logical_Switch", &format!("name={LSWITCH}")])?;
    let r = rows(&cols)?;
    Ok(r.first()
        .and_then(|r| r.get("other_config"))
        .into_iter()
        .flatten()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect())
}

/// The `mcast_*` options of the switch's logical ports (`--mcast-flood`, `--mcast-flood-reports`).
fn port_options(prefix: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let r = rows(&nbctl(prefix, &["--format=json", "--columns=name,options", "list", "Logical_Switch_Port"])?)?;
    Ok(r.iter()
        .map(|r| {
            let o: Vec<String> = r.get("options").into_iter().flatten().filter(|o| o.starts_with("mcast_")).cloned().collect();
            (first(r, "name"), o)
        })
        .filter(|(_, o)| !o.is_empty())
        .collect())
}

fn chassis(prefix: &str) -> Result<BTreeMap<String, (String, String)>> {
    Ok(sb_rows(prefix, "Encap", "chassis_name,type,ip")?
        .iter()
        .map(|r| (first(r, "chassis_name"), (first(r, "type"), first(r, "ip"))))
        .collect())
}

fn ports(prefix: &str) -> Result<BTreeMap<String, (String, bool)>> {
    let (ch, _) = names(prefix)?;
    let mut m = BTreeMap::new();
    for r in sb_rows(prefix, "Port_Binding", "logical_port,chassis,up")? {
        let c = ch.get(&first(&r, "chassis")).cloned().unwrap_or_else(|| "-".into());
        m.insert(first(&r, "logical_port"), (c, first(&r, "up") == "true"));
    }
    Ok(m)
}

fn multicast_groups(prefix: &str) -> Result<Vec<(String, Vec<String>)>> {
    let (_, pb) = names(prefix)?;
    let mut v: Vec<_> = sb_rows(prefix, "Multicast_Group", "name,ports")?
        .iter()
        .map(|r| {
            let mut ports: Vec<String> =
                r.get("ports").into_iter().flatten().map(|u| pb.get(u).cloned().unwrap_or_else(|| u.clone())).collect();
            ports.sort_by_key(|p| port_rank(p));
            (first(r, "name"), ports)
        })
        .collect();
    v.sort();
    Ok(v)
}

/// A node's IPv4 multicast memberships on eth0 (`ip -j maddr show dev eth0`).
pub fn memberships(lab: &Lab, node: &str) -> Result<Vec<String>> {
    let v = ip_json(&lab.ns_name(node), &["maddr", "show", "dev", NODE_IF])?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["maddr"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["family"] == "inet")
        .filter_map(|m| m["address"].as_str().map(str::to_string))
        .collect())
}

/// Hypervisor K's datapath `lookups:` line (`ovs-appctl dpctl/show`).
fn datapath(prefix: &str, k: u32) -> String {
    match super::ovn::vswitchd_ctl(prefix, k, &["dpctl/show"]) {
        Ok(s) => s.lines().find(|l| l.contains("lookups:")).map_or("-".into(), |l| l.trim().to_string()),
        Err(e) => format!("unreadable: {e:#}"),
    }
}

impl Lab {
    /// OVN's view of the lab (only for `--fabric ovn`).
    pub fn ovn_status(&self) -> Result<OvnStatus> {
        let p = self.prefix();
        let hosts = self.topology().map_or(0, |t| t.hosts);
        let mut memberships = Vec::new();
        for r in self.receivers() {
            let m = memberships_or_err(self, &r);
            memberships.push((r, m));
        }
        Ok(OvnStatus {
            prefix: p.to_string(),
            other_config: other_config(p)?,
            port_options: port_options(p)?,
            chassis: chassis(p)?,
            ports: ports(p)?,
            igmp_groups: igmp_groups(p)?,
            multicast_groups: multicast_groups(p)?,
            memberships,
            datapath: (0..=hosts).map(|k| (host_name(k), datapath(p, k))).collect(),
            datapath_drops: (0..=hosts).map(|k| datapath_drops(p, k)).collect(),
        })
    }

    /// The ports OVN lists as members of `group` (IGMP_Group, every chassis), sorted.
    pub fn ovn_members(&self, group: Ipv4Addr) -> Result<Vec<String>> {
        let g = group.to_string();
        let mut v: Vec<String> = igmp_groups(self.prefix())?.into_iter().filter(|(a, _, _)| *a == g).flat_map(|(_, _, p)| p).collect();
        v.sort_by_key(|p| port_rank(p));
        Ok(v)
    }

    /// Waits until OVN lists every port in `ports` as a member of `group` (IGMP_Group),
    /// then a moment for the sender's chassis to install the group's flows. With
    /// snooping off OVN learns nothing: returns at once.
    pub fn ovn_wait_members(&self, group: Ipv4Addr, ports: &[String], timeout: Duration) -> Result<Vec<MdbEntry>> {
        let (g, p) = (group.to_string(), self.prefix());
        let snoop = other_config(p)?.get("mcast_snoop").is_some_and(|v| v == "true");
        let deadline = Instant::now() + timeout;
        loop {
            let groups = igmp_groups(p)?;
            let member = |n: &String| groups.iter().any(|(a, _, ps)| *a == g && ps.contains(n));
            let missing: Vec<&str> = ports.iter().filter(|n| snoop && !member(n)).map(String::as_str).collect();
            if missing.is_empty() {
                std::thread::sleep(Duration::from_millis(if snoop { 1000 } else { 0 }));
                let entries = groups.into_iter().filter(|(a, _, _)| *a == g);
                return Ok(entries
                    .flat_map(|(a, c, ps)| ps.into_iter().map(move |port| MdbEntry { port, group: a.clone(), state: c.clone() }))
                    .collect());
            }
            if Instant::now() >= deadline {
                return Err(anyhow!("{} did not join {group} within {:.1} s (OVN IGMP_Group)", missing.join(", "), timeout.as_secs_f64()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn memberships_or_err(lab: &Lab, node: &str) -> Vec<String> {
    memberships(lab, node).unwrap_or_else(|e| vec![format!("unreadable: {e:#}")])
}

impl OvnStatus {
    /// The human-readable view.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "OVN logical switch {LSWITCH} (ovn-nbctl get Logical_Switch {LSWITCH} other_config):");
        for (k, v) in &self.other_config {
            let _ = writeln!(s, "  {k:<26} {v}");
        }
        let _ = writeln!(s, "logical switch ports' multicast options (ovn-nbctl get Logical_Switch_Port PORT options):");
        if self.port_options.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        let mut po: Vec<_> = self.port_options.iter().collect();
        po.sort_by_key(|(p, _)| port_rank(p));
        for (p, o) in po {
            let _ = writeln!(s, "  {p:<7} {}", o.join(" "));
        }
        let _ = writeln!(s, "chassis (encap):");
        for (c, (t, ip)) in &self.chassis {
            let bound: Vec<&str> = self.ports.iter().filter(|(_, (ch, _))| ch == c).map(|(p, _)| p.as_str()).collect();
            let _ = writeln!(s, "  {c:<4} {t} {ip:<12} ports: {}", bound.join(" "));
        }
        let down: Vec<&str> = self.ports.iter().filter(|(_, (_, up))| !up).map(|(p, _)| p.as_str()).collect();
        let _ = writeln!(s, "ports up: {} of {}{}", self.ports.len() - down.len(), self.ports.len(), if down.is_empty() { String::new() } else { format!(" (down: {})", down.join(" ")) });
        let _ = writeln!(s, "OVN IGMP_Group (learned per chassis; mrouters = multicast-router ports):");
        if self.igmp_groups.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for (g, c, ps) in &self.igmp_groups {
            let _ = writeln!(s, "  {g:<15} on {c:<4} {}", if ps.is_empty() { "-".to_string() } else { ps.join(" ") });
        }
        let _ = writeln!(s, "OVN Multicast_Group:");
        for (n, ps) in &self.multicast_groups {
            let _ = writeln!(s, "  {n:<18} {}", ps.join(" "));
        }
        let _ = writeln!(s, "receivers' own memberships (eth0):");
        for (r, m) in &self.memberships {
            let m: Vec<&str> = m.iter().map(String::as_str).filter(|a| *a != "224.0.0.1").collect();
            let _ = writeln!(s, "  {r:<5} {}", if m.is_empty() { "-".to_string() } else { m.join(" ") });
        }
        let _ = writeln!(s, "userspace datapath (ovs-appctl dpctl/show; lost = upcalls dropped):");
        for (h, l) in &self.datapath {
            let _ = writeln!(s, "  {h:<4} {l}");
        }
        s += &self.render_drops();
        s
    }

    /// The datapath drops since `lab up`, a line per hypervisor.
    fn render_drops(&self) -> String {
        let mut s = String::from("userspace datapath drops since lab up (dpctl/show -s ports; coverage/show *drop*):\n");
        for d in &self.datapath_drops {
            let mut parts: Vec<String> = d.ports.iter().map(|(p, k, n)| format!("{p} {k} {n}")).collect();
            parts.extend(d.counters.iter().map(|(c, n)| format!("{c} {n}")));
            let line = match &d.unreadable {
                Some(e) => format!("unreadable: {e}"),
                None if parts.is_empty() => "none".to_string(),
                None => parts.join(", "),
            };
            let _ = writeln!(s, "  {:<4} {line}", d.host);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovsdb_json_rows_flatten_uuids_sets_and_maps() {
        let j = r#"{"data":[[["uuid","u1"],"239.0.0.1",["set",[["uuid","p1"],["uuid","p2"]]],["map",[["mcast_snoop","true"]]]]],
                    "headings":["_uuid","address","ports","other_config"]}"#;
        let r = rows(j).unwrap();
        assert_eq!(first(&r[0], "_uuid"), "u1");
        assert_eq!(r[0]["ports"], ["p1", "p2"]);
        assert_eq!(r[0]["other_config"], ["mcast_snoop=true"]);
        assert_eq!(port_rank("r10").0, 10);
    }

    #[test]
    fn datapath_drops_parse_ports_and_coverage() {
        let show = "netdev@ovs-netdev:
  lookups: hit:3 missed:1 lost:0
  port 4: genev_sys_6081 (geneve: packet_type=ptap)
    RX packets:9 errors:? dropped:? overruns:? frame:?
    TX packets:9 errors:? dropped:? aborted:? carrier:?
  port 5: r1
    RX packets:7 errors:0 dropped:2 overruns:0 frame:0
    TX packets:0 errors:1 dropped:0 aborted:0 carrier:0
";
        let want = [("r1".to_string(), "rx_dropped".to_string(), 2), ("r1".into(), "tx_errors".into(), 1)];
        assert_eq!(parse_port_drops(show), want);
        let cov = "Event coverage, avg rate over last: 5 seconds, last minute, last hour,  hash=71254e36:\n\
            datapath_drop_userspace_action_error   0.4/sec     0.033/sec        0.0006/sec   total: 4\n\
            drop_action_of_pipeline    0.0/sec     0.000/sec        0.0000/sec   total: 0\n\
            netdev_sent               59.4/sec     4.950/sec        0.0825/sec   total: 297\n97 events never hit\n";
        assert_eq!(parse_drop_counters(cov), [("datapath_drop_userspace_action_error".to_string(), 4)]);
    }
}
