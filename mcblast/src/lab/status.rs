//! What `mcblast lab status` shows, read back from the live namespaces.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use serde_json::Value;

use super::{BRIDGE, Lab, NODE_IF, SWITCH, ip_json, output, parse_json};

/// The whole lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub prefix: String,
    pub bridge: BridgeStatus,
    pub nodes: Vec<NodeStatus>,
    /// The bridge's multicast group table (`bridge mdb show`).
    pub mdb: Vec<MdbEntry>,
    /// Per-port counters and drop rules, when loss injection is in use.
    pub loss: Option<Vec<PortLoss>>,
}

/// The switch's bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeStatus {
    pub namespace: String,
    pub name: String,
    pub addr: Option<Ipv4Addr>,
    pub up: bool,
    pub mtu: u32,
    pub snooping: bool,
    pub querier: bool,
    pub igmp_version: u32,
    pub query_interval_cs: u64,
    pub membership_interval_cs: u64,
}

/// One node and its switch port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub namespace: String,
    /// eth0's IPv4 address.
    pub addr: Option<Ipv4Addr>,
    /// eth0 is administratively up and has a carrier.
    pub up: bool,
    pub mtu: u32,
    /// The node's port on the bridge (named after the node) is up and enslaved.
    pub port_up: bool,
    pub port_mtu: u32,
}

/// One bridge group-table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MdbEntry {
    /// Port (= node name), or `br0` for the bridge itself.
    pub port: String,
    pub group: String,
    /// `temp` (learned from IGMP) or `permanent`.
    pub state: String,
}

/// Loss-injection counters toward one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortLoss {
    pub node: String,
    /// mcblast datagrams forwarded toward the node, before drops.
    pub offered: u64,
    /// The active drop rule: every n-th data datagram.
    pub drop_every: Option<u64>,
    pub dropped: u64,
}

fn flag(v: &Value) -> bool {
    v.as_u64() == Some(1) || v.as_bool() == Some(true)
}

fn is_up(link: &Value) -> bool {
    let admin = link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"));
    admin
        && link["operstate"].as_str() != Some("DOWN")
        && !link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "NO-CARRIER"))
}

fn ipv4_of(link: &Value) -> Option<Ipv4Addr> {
    link["addr_info"]
        .as_array()?
        .iter()
        .filter(|a| a["family"] == "inet")
        .find_map(|a| a["local"].as_str()?.parse().ok())
}

/// Reads the bridge's settings (`ip -d -j addr show br0` in the switch namespace).
pub(super) fn bridge_info(sw: &str) -> Result<BridgeStatus> {
    let v = ip_json(sw, &["-d", "addr", "show", "dev", BRIDGE])?;
    let link = v.get(0).ok_or_else(|| anyhow!("no bridge {BRIDGE} in {sw}"))?;
    let d = &link["linkinfo"]["info_data"];
    Ok(BridgeStatus {
        namespace: sw.to_string(),
        name: BRIDGE.to_string(),
        addr: ipv4_of(link),
        up: is_up(link),
        mtu: link["mtu"].as_u64().unwrap_or(0) as u32,
        snooping: flag(&d["mcast_snooping"]),
        querier: flag(&d["mcast_querier"]),
        igmp_version: d["mcast_igmp_version"].as_u64().unwrap_or(0) as u32,
        query_interval_cs: d["mcast_query_intvl"].as_u64().unwrap_or(0),
        membership_interval_cs: d["mcast_membership_intvl"].as_u64().unwrap_or(0),
    })
}

/// Parses `bridge -j mdb show` output.
fn parse_mdb(v: &Value) -> Vec<MdbEntry> {
    let mut out: Vec<MdbEntry> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["mdb"].as_array())
        .flatten()
        .map(|e| MdbEntry {
            port: e["port"].as_str().unwrap_or("").to_string(),
            group: e["grp"].as_str().unwrap_or("").to_string(),
            state: e["state"].as_str().unwrap_or("").to_string(),
        })
        .collect();
    out.sort_by(|a, b| (&a.group, port_rank(&a.port)).cmp(&(&b.group, port_rank(&b.port))));
    out
}

fn port_rank(p: &str) -> (u32, String) {
    match super::receiver_index(p) {
        Some(k) => (k, String::new()),
        None => (0, p.to_string()),
    }
}

/// The bridge's multicast group table.
pub(super) fn mdb(sw: &str) -> Result<Vec<MdbEntry>> {
    let text = output(Command::new("bridge").args(["-n", sw, "-j", "mdb", "show"]))?;
    Ok(parse_mdb(&parse_json(&text).context("output of bridge -j mdb show")?))
}

impl Lab {
    /// Reads the lab's state: bridge settings, every node's eth0 and port, the group table.
    pub fn status(&self) -> Result<LabStatus> {
        let sw = self.ns_name(SWITCH);
        let bridge = bridge_info(&sw)?;
        let ports = ip_json(&sw, &["link", "show", "master", BRIDGE])?;
        let port = |n: &str| ports.as_array().into_iter().flatten().find(|p| p["ifname"] == n).cloned();
        let mut nodes = Vec::new();
        for n in self.nodes() {
            let ns = self.ns_name(&n);
            let eth = ip_json(&ns, &["addr", "show", "dev", NODE_IF])?;
            let eth = eth.get(0).cloned().unwrap_or(Value::Null);
            let p = port(&n).unwrap_or(Value::Null);
            nodes.push(NodeStatus {
                name: n,
                namespace: ns,
                addr: ipv4_of(&eth),
                up: is_up(&eth),
                mtu: eth["mtu"].as_u64().unwrap_or(0) as u32,
                port_up: is_up(&p),
                port_mtu: p["mtu"].as_u64().unwrap_or(0) as u32,
            });
        }
        Ok(LabStatus { prefix: self.prefix().to_string(), bridge, nodes, mdb: mdb(&sw)?, loss: self.port_loss()? })
    }

    /// The bridge's multicast group table alone (cheaper than [`Lab::status`]).
    pub fn mdb(&self) -> Result<Vec<MdbEntry>> {
        mdb(&self.ns_name(SWITCH))
    }

    /// Waits until `ports` (node names) are all members of `group` in the
    /// bridge's table, polling every 50 ms for at most `timeout`; returns the
    /// table, or an error naming the ports that never joined. Without
    /// snooping the table stays empty: don't wait then.
    pub fn wait_members(&self, group: Ipv4Addr, ports: &[String], timeout: std::time::Duration) -> Result<Vec<MdbEntry>> {
        let g = group.to_string();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let table = self.mdb()?;
            let missing: Vec<&String> =
                ports.iter().filter(|p| !table.iter().any(|e| e.group == g && &e.port == *p)).collect();
            if missing.is_empty() {
                return Ok(table);
            }
            if std::time::Instant::now() >= deadline {
                return Err(anyhow!(
                    "{} did not join {group} within {:.1} s",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    timeout.as_secs_f64()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

impl LabStatus {
    /// Human text for `mcblast lab status`.
    pub fn render(&self) -> String {
        let b = &self.bridge;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "lab {}: bridge {} in {} {}, mtu {}, address {}",
            self.prefix,
            b.name,
            b.namespace,
            if b.up { "up" } else { "DOWN" },
            b.mtu,
            b.addr.map_or("none".to_string(), |a| a.to_string())
        );
        let _ = writeln!(
            s,
            "  IGMP snooping {}, querier {} (IGMPv{}, query interval {} s, membership interval {} s)",
            on_off(b.snooping),
            on_off(b.querier),
            b.igmp_version,
            b.query_interval_cs as f64 / 100.0,
            b.membership_interval_cs as f64 / 100.0
        );
        let w = self.nodes.iter().map(|n| n.namespace.len()).max().unwrap_or(9).max(9);
        let _ = writeln!(s, "{:<8} {:<w$} {:<15} {:<18} port", "node", "namespace", "address", NODE_IF);
        for n in &self.nodes {
            let eth = format!("{} mtu {}", if n.up { "up" } else { "DOWN" }, n.mtu);
            let port = format!("{} mtu {}", if n.port_up { "up" } else { "DOWN" }, n.port_mtu);
            let addr = n.addr.map_or("none".to_string(), |a| a.to_string());
            let _ = writeln!(s, "{:<8} {:<w$} {:<15} {:<18} {}", n.name, n.namespace, addr, eth, port);
        }
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for e in &self.mdb {
            match groups.last_mut() {
                Some((g, ports)) if *g == e.group => ports.push(&e.port),
                _ => groups.push((&e.group, vec![&e.port])),
            }
        }
        if groups.is_empty() {
            let _ = writeln!(s, "multicast groups: none joined");
        } else {
            let _ = writeln!(s, "multicast groups (bridge mdb):");
            for (g, ports) in groups {
                let _ = writeln!(s, "  {g:<15} {}", ports.join(" "));
            }
        }
        if let Some(loss) = &self.loss {
            let _ = writeln!(s, "path counters (nftables, mcblast datagrams toward each port):");
            for l in loss {
                let rule = l.drop_every.map_or(String::new(), |n| format!(", drop every {n}: dropped {}", l.dropped));
                let _ = writeln!(s, "  {:<8} offered {}{rule}", l.node, l.offered);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mdb_json_sorted_by_group_and_port() {
        // real `bridge -j mdb show` output (iproute2 6.1)
        let text = r#"[{"mdb":[{"index":2,"dev":"br0","port":"r10","grp":"239.1.1.1","state":"temp","flags":[]},{"index":2,"dev":"br0","port":"r2","grp":"239.1.1.1","state":"temp","flags":[]},{"index":2,"dev":"br0","port":"r1","grp":"239.1.1.1","state":"temp","flags":[]}],"router":{}}]"#;
        let m = parse_mdb(&serde_json::from_str(text).unwrap());
        let ports: Vec<&str> = m.iter().map(|e| e.port.as_str()).collect();
        assert_eq!(ports, ["r1", "r2", "r10"]);
        assert!(m.iter().all(|e| e.group == "239.1.1.1" && e.state == "temp"));
        assert!(parse_mdb(&serde_json::from_str(r#"[{"mdb":[],"router":{}}]"#).unwrap()).is_empty());
    }

    #[test]
    fn renders_groups_and_loss() {
        let st = LabStatus {
            prefix: "mcb-".into(),
            bridge: BridgeStatus {
                namespace: "mcb-sw".into(),
                name: "br0".into(),
                addr: Some(Ipv4Addr::new(10, 77, 0, 254)),
                up: true,
                mtu: 9000,
                snooping: true,
                querier: true,
                igmp_version: 3,
                query_interval_cs: 12500,
                membership_interval_cs: 26000,
            },
            nodes: vec![NodeStatus {
                name: "r1".into(),
                namespace: "mcb-r1".into(),
                addr: Some(Ipv4Addr::new(10, 77, 0, 11)),
                up: true,
                mtu: 9000,
                port_up: true,
                port_mtu: 9000,
            }],
            mdb: vec![MdbEntry { port: "r1".into(), group: "239.0.0.1".into(), state: "temp".into() }],
            loss: Some(vec![PortLoss { node: "r1".into(), offered: 10, drop_every: Some(2), dropped: 5 }]),
        };
        let text = st.render();
        assert!(text.contains("IGMP snooping on, querier on (IGMPv3, query interval 125 s"), "{text}");
        assert!(text.contains("r1       mcb-r1    10.77.0.11      up mtu 9000        up mtu 9000"), "{text}");
        assert!(text.contains("  239.0.0.1       r1"), "{text}");
        assert!(text.contains("r1       offered 10, drop every 2: dropped 5"), "{text}");
    }
}
