//! What `mcblast lab status` shows, read back from the live namespaces.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use serde_json::Value;

use super::topo::{Fabric, UNDERLAY_IF, UPLINK, host_name, tunnel_port};
use super::{BRIDGE, Lab, NODE_IF, ip_json, output, parse_json};

/// The whole lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub prefix: String,
    /// The querier's bridge: the switch's (`sw`), or with the VXLAN fabric the sender host's (`h0`).
    pub bridge: BridgeStatus,
    /// Emulated hosts, None for the flat lab.
    pub topology: Option<TopologyStatus>,
    pub nodes: Vec<NodeStatus>,
    /// The querier bridge's multicast group table (`bridge mdb show`).
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

/// The emulated hosts and how they are joined.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyStatus {
    /// `bridge` or `vxlan`.
    pub fabric: String,
    /// `spread` or `same-host`.
    pub placement: String,
    pub per_host: u32,
    /// The shared switch's (`sw`) or underlay switch's (`ul`) namespace.
    pub fabric_namespace: String,
    /// h0 (the sender's) .. hH.
    pub hosts: Vec<HostStatus>,
}

/// One emulated host: its bridge, nodes, fabric ports and group table.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub namespace: String,
    pub bridge: BridgeStatus,
    /// Nodes whose access ports are on this host's bridge.
    pub nodes: Vec<String>,
    /// Ports toward the fabric: `up0`, or one VXLAN port `vx-hJ` per remote host.
    pub fabric_ports: Vec<String>,
    /// The underlay interface's address and MTU (VXLAN fabric).
    pub underlay: Option<(Ipv4Addr, u32)>,
    pub mdb: Vec<MdbEntry>,
}

/// One node and its switch port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub namespace: String,
    /// The emulated host it lives on (None in the flat lab).
    pub host: Option<String>,
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

/// Reads the bridge's settings (`ip -d -j addr show br0` in a namespace).
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
    /// Reads the lab's state: bridge settings, every node's eth0 and port,
    /// the group tables, and the emulated hosts.
    pub fn status(&self) -> Result<LabStatus> {
        let sw = self.ns_name(&self.querier_node());
        let bridge = bridge_info(&sw)?;
        let mut ports_of: Vec<(String, Value)> = Vec::new();
        let mut nodes = Vec::new();
        for n in self.nodes() {
            let ans = self.access_ns(&n);
            if !ports_of.iter().any(|(x, _)| *x == ans) {
                let v = ip_json(&ans, &["link", "show", "master", BRIDGE])?;
                ports_of.push((ans.clone(), v));
            }
            let ports = &ports_of.iter().find(|(x, _)| *x == ans).expect("just added").1;
            let p = ports.as_array().into_iter().flatten().find(|p| p["ifname"] == n.as_str()).cloned();
            let ns = self.ns_name(&n);
            let eth = ip_json(&ns, &["addr", "show", "dev", NODE_IF])?;
            let eth = eth.get(0).cloned().unwrap_or(Value::Null);
            let p = p.unwrap_or(Value::Null);
            nodes.push(NodeStatus {
                host: self.host_of(&n),
                name: n,
                namespace: ns,
                addr: ipv4_of(&eth),
                up: is_up(&eth),
                mtu: eth["mtu"].as_u64().unwrap_or(0) as u32,
                port_up: is_up(&p),
                port_mtu: p["mtu"].as_u64().unwrap_or(0) as u32,
            });
        }
        let topology = match self.topology() {
            None => None,
            Some(t) => {
                let mut hosts = Vec::new();
                for k in 0..=t.hosts {
                    let h = host_name(k);
                    let ns = self.ns_name(&h);
                    let underlay = match t.fabric {
                        Fabric::Bridge => None,
                        Fabric::Vxlan | Fabric::Ovn => {
                            let v = ip_json(&ns, &["addr", "show", "dev", UNDERLAY_IF])?;
                            let l = v.get(0).cloned().unwrap_or(Value::Null);
                            ipv4_of(&l).map(|a| (a, l["mtu"].as_u64().unwrap_or(0) as u32))
                        }
                    };
                    let fabric_ports = match t.fabric {
                        Fabric::Bridge => vec![UPLINK.to_string()],
                        Fabric::Vxlan | Fabric::Ovn => (0..=t.hosts).filter(|&j| j != k).map(tunnel_port).collect(),
                    };
                    hosts.push(HostStatus {
                        bridge: bridge_info(&ns)?,
                        nodes: self.nodes().into_iter().filter(|n| t.host_of(n) == Some(k)).collect(),
                        fabric_ports,
                        underlay,
                        mdb: mdb(&ns)?,
                        name: h,
                        namespace: ns,
                    });
                }
                Some(TopologyStatus {
                    fabric: t.fabric.as_str().to_string(),
                    placement: t.placement.as_str().to_string(),
                    per_host: t.per_host,
                    fabric_namespace: self.ns_name(t.fabric_node()),
                    hosts,
                })
            }
        };
        Ok(LabStatus {
            prefix: self.prefix().to_string(),
            bridge,
            topology,
            nodes,
            mdb: mdb(&sw)?,
            loss: self.port_loss()?,
        })
    }

    /// The querier bridge's multicast group table alone (cheaper than
    /// [`Lab::status`]): the switch's in the flat lab.
    pub fn mdb(&self) -> Result<Vec<MdbEntry>> {
        mdb(&self.ns_name(&self.querier_node()))
    }

    /// The multicast group table of the bridge in a host or switch namespace
    /// (`sw`, `h0`, `h1`, ...).
    pub fn mdb_of(&self, node: &str) -> Result<Vec<MdbEntry>> {
        self.check_node(node)?;
        mdb(&self.ns_name(node))
    }

    /// Where a receiver's membership must show for traffic to reach it:
    /// (namespace node, port) pairs — its port on its access bridge, and with
    /// emulated hosts also its host's port on the querier's bridge (`hK` on
    /// the shared switch, `vx-hK` on the sender's host).
    fn membership_path(&self, port: &str) -> Vec<(String, String)> {
        match self.topology() {
            None => vec![(self.querier_node(), port.to_string())],
            Some(t) => match t.host_of(port) {
                Some(k) if k > 0 => {
                    let up = match t.fabric {
                        Fabric::Bridge => host_name(k),
                        Fabric::Vxlan | Fabric::Ovn => tunnel_port(k),
                    };
                    vec![(host_name(k), port.to_string()), (t.querier_node(), up)]
                }
                Some(k) => vec![(host_name(k), port.to_string())],
                None => vec![(self.querier_node(), port.to_string())],
            },
        }
    }

    /// Waits until `ports` (node names) are all members of `group` in the
    /// bridge's table, polling every 50 ms for at most `timeout`; returns the
    /// (querier bridge's) table, or an error naming the ports that never
    /// joined. With emulated hosts a receiver counts once both its host's
    /// bridge and the querier's bridge (the shared switch, or the sender's
    /// host for VXLAN) list it. Without snooping the tables stay empty:
    /// don't wait then.
    pub fn wait_members(&self, group: Ipv4Addr, ports: &[String], timeout: std::time::Duration) -> Result<Vec<MdbEntry>> {
        if self.topology().is_some_and(|t| t.fabric == Fabric::Ovn) {
            return self.ovn_wait_members(group, ports, timeout);
        }
        let g = group.to_string();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut tables: Vec<(String, Vec<MdbEntry>)> = Vec::new();
            let mut missing: Vec<&String> = Vec::new();
            for p in ports {
                let mut ok = true;
                for (node, port) in self.membership_path(p) {
                    if !tables.iter().any(|(n, _)| *n == node) {
                        let t = mdb(&self.ns_name(&node))?;
                        tables.push((node.clone(), t));
                    }
                    let t = &tables.iter().find(|(n, _)| *n == node).expect("just added").1;
                    ok &= t.iter().any(|e| e.group == g && e.port == port);
                }
                if !ok {
                    missing.push(p);
                }
            }
            if missing.is_empty() {
                return self.mdb();
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

/// Appends a group table: `title`, then one line per group with its ports.
fn render_groups(s: &mut String, title: &str, indent: &str, mdb: &[MdbEntry]) {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for e in mdb {
        match groups.last_mut() {
            Some((g, ports)) if *g == e.group => ports.push(&e.port),
            _ => groups.push((&e.group, vec![&e.port])),
        }
    }
    if groups.is_empty() {
        let _ = writeln!(s, "{}: none joined", title.trim_end_matches(':').trim_end_matches(" (bridge mdb)"));
    } else {
        let _ = writeln!(s, "{title}");
        for (g, ports) in groups {
            let _ = writeln!(s, "{indent}  {g:<15} {}", ports.join(" "));
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

impl LabStatus {
    /// Human text for `mcblast lab status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_bridge(&mut s);
        self.render_nodes(&mut s);
        self.render_mdb(&mut s);
        self.render_loss(&mut s);
        s
    }

    /// Appends the lab's bridge, its IGMP settings and the topology's summary line to `s`.
    fn render_bridge(&self, s: &mut String) {
        let b = &self.bridge;
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
        if let Some(t) = &self.topology {
            let receivers = self.nodes.len().saturating_sub(1);
            let _ = writeln!(
                s,
                "topology: {} receiver hosts + the sender's host h0, {receivers} receivers ({}, {} per host), fabric {}",
                t.hosts.len().saturating_sub(1),
                t.placement,
                t.per_host,
                match t.fabric.as_str() {
                    "vxlan" => format!(
                        "vxlan over the underlay switch in {} (head-end replication: one tunnel port per remote host)",
                        t.fabric_namespace
                    ),
                    _ => format!("bridge: the shared switch in {}", t.fabric_namespace),
                }
            );
        }
    }

    /// Appends the nodes' table to `s`: namespace, address, interface and bridge port of each.
    fn render_nodes(&self, s: &mut String) {
        let w = self.nodes.iter().map(|n| n.namespace.len()).max().unwrap_or(9).max(9);
        let host_col = if self.topology.is_some() { " host" } else { "" };
        let _ = writeln!(s, "{:<8} {:<w$} {:<15} {:<18} port{host_col}", "node", "namespace", "address", NODE_IF);
        for n in &self.nodes {
            let eth = format!("{} mtu {}", if n.up { "up" } else { "DOWN" }, n.mtu);
            let mut port = format!("{} mtu {}", if n.port_up { "up" } else { "DOWN" }, n.port_mtu);
            if let Some(h) = &n.host {
                port = format!("{port:<12} {h}");
            }
            let addr = n.addr.map_or("none".to_string(), |a| a.to_string());
            let _ = writeln!(s, "{:<8} {:<w$} {:<15} {:<18} {}", n.name, n.namespace, addr, eth, port);
        }
    }

    /// Appends the joined groups to `s`: the bridge's, or the switch's and each host's.
    fn render_mdb(&self, s: &mut String) {
        match &self.topology {
            None => render_groups(s, "multicast groups (bridge mdb):", "", &self.mdb),
            Some(t) => {
                if !t.hosts.iter().any(|h| h.namespace == self.bridge.namespace) {
                    render_groups(s, &format!("multicast groups on the switch {}:", self.bridge.namespace), "", &self.mdb);
                }
                for h in &t.hosts {
                    let b = &h.bridge;
                    let ul = h.underlay.map_or(String::new(), |(a, m)| format!(", underlay {UNDERLAY_IF} {a} mtu {m}"));
                    let _ = writeln!(
                        s,
                        "host {} ({}): {} {} mtu {}, snooping {}, querier {}{ul}",
                        h.name,
                        h.namespace,
                        b.name,
                        if b.up { "up" } else { "DOWN" },
                        b.mtu,
                        on_off(b.snooping),
                        on_off(b.querier),
                    );
                    let nodes = if h.nodes.is_empty() { "none".to_string() } else { h.nodes.join(" ") };
                    let _ = writeln!(s, "  nodes: {nodes}; fabric ports: {}", h.fabric_ports.join(" "));
                    render_groups(s, "  groups:", "    ", &h.mdb);
                }
            }
        }
    }

    /// Appends the path counters to `s`, when the lab has them.
    fn render_loss(&self, s: &mut String) {
        if let Some(loss) = &self.loss {
            let _ = writeln!(s, "path counters (nftables, mcblast datagrams toward each port):");
            for l in loss {
                let rule = l.drop_every.map_or(String::new(), |n| format!(", drop every {n}: dropped {}", l.dropped));
                let _ = writeln!(s, "  {:<8} offered {}{rule}", l.node, l.offered);
            }
        }
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
            topology: None,
            nodes: vec![NodeStatus {
                host: None,
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
