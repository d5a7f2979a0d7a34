//! Loss injection on the path: nftables rules in the switch namespace (TGW's limits: `tgw.rs`).
//!
//! ```text
//! table bridge mcblast {
//!   chain forward {            # bridge forward hook: sees each per-port copy of
//!     type filter hook forward priority filter; policy accept;   # flooded/snooped multicast
//!     oifname "r1" meta l4proto udp @th,64,32 0x4d43424c jump to-r1    # mcblast datagrams only
//!     ...
//!   }
//!   chain to-r1 {
//!     counter comment "offered"                                 # everything toward r1
//!     @th,104,8 0 numgen inc mod 4 0 counter drop comment "drop every 4"   # data only
//!   }
//! }
//! ```
//! `@th,64,32` is the mcblast magic right after the 8-byte UDP header and
//! `@th,104,8` the kind byte (payload offset 5; 0 = data, so end-of-flow
//! markers are never dropped). A fragmented datagram (MTU 1500 with 8192-byte
//! datagrams) is matched by its first fragment only; dropping that fragment
//! loses the datagram, so the counters still count datagrams.
//!
//! The table is created on first use, so a lab without impairment keeps
//! netfilter off its data path. With emulated hosts, each host namespace
//! gets this table for the nodes whose ports are on its bridge (loss is
//! injected on the receiver's access port, after the fabric).
//!
//! Fabric counters ([`Lab::watch_fabric`]): table `bridge mcblast_fabric`
//! in the shared switch (`sw`) or the underlay switch (`ul`), one counter
//! per host port of mcblast datagrams delivered toward that host; on the
//! underlay they are matched inside the VXLAN packet (outer UDP dport 4789,
//! the magic 8 + 8 + 14 + 20 + 8 bytes into the outer UDP header).

use std::process::Command;

use anyhow::{Context, Result, bail};
use mcblast_common::wire::{Kind, MAGIC};
use serde_json::Value;

use super::topo::{Fabric, VXLAN_PORT, host_name};
use super::{Lab, LabError, output, output_with_stdin, parse_json, require_tool};
use crate::lab::status::PortLoss;

const TABLE: &str = "mcblast";
const FABRIC_TABLE: &str = "mcblast_fabric";
/// Bit offset of the inner mcblast magic from the outer UDP header of a VXLAN
/// packet: outer UDP 8 + VXLAN 8 + inner Ethernet 14 + inner IPv4 20 + inner UDP 8.
const TH_VXLAN_MAGIC_BIT: u32 = (8 + 8 + 14 + 20 + 8) * 8;
/// Bit offset of the mcblast magic in the transport header (after the UDP header).
pub(super) const TH_MAGIC_BIT: u32 = 8 * 8;
/// Bit offset of the kind byte (payload offset 5).
pub(super) const TH_KIND_BIT: u32 = (8 + 5) * 8;
const OFFERED: &str = "offered";
const SENDER_NODE: &str = super::SENDER;
const DROP: &str = "drop every ";

fn port_chain(node: &str) -> String {
    format!("to-{node}")
}

/// One rule of a port chain, as nft lists it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RuleInfo {
    pub(super) handle: u64,
    pub(super) comment: String,
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) every: Option<u64>,
}

/// Rules of a chain from `nft -j list chain ...` output.
pub(super) fn parse_rules(v: &Value) -> Vec<RuleInfo> {
    let items = v["nftables"].as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(|i| i.get("rule"))
        .map(|r| {
            let exprs = r["expr"].as_array().map(Vec::as_slice).unwrap_or_default();
            RuleInfo {
                handle: r["handle"].as_u64().unwrap_or(0),
                comment: r["comment"].as_str().unwrap_or("").to_string(),
                packets: exprs.iter().find_map(|e| e["counter"]["packets"].as_u64()).unwrap_or(0),
                bytes: exprs.iter().find_map(|e| e["counter"]["bytes"].as_u64()).unwrap_or(0),
                every: exprs.iter().find_map(|e| e["match"]["left"]["numgen"]["mod"].as_u64()),
            }
        })
        .collect()
}

fn nft_cmd(ns: &str) -> Result<Command> {
    require_tool("nft")?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "nft"]);
    Ok(c)
}

/// Applies an nft script atomically in a namespace.
pub(super) fn nft_apply(ns: &str, script: &str) -> Result<()> {
    output_with_stdin(nft_cmd(ns)?.args(["-f", "-"]), script).map(|_| ())
}

pub(super) fn nft_json(ns: &str, args: &[&str]) -> Result<Value> {
    let text = output(nft_cmd(ns)?.arg("-j").args(args))?;
    parse_json(&text).with_context(|| format!("output of nft -j {} in {ns}", args.join(" ")))
}

pub(super) fn table_exists(ns: &str, table: &str) -> Result<bool> {
    let v = nft_json(ns, &["list", "tables", "bridge"])?;
    let items = v["nftables"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(items.iter().any(|i| i["table"]["name"].as_str() == Some(table)))
}

impl Lab {
    fn loss_table_exists(&self, node: &str) -> Result<bool> {
        table_exists(&self.access_ns(node), TABLE)
    }

    fn port_rules(&self, node: &str) -> Result<Vec<RuleInfo>> {
        Ok(parse_rules(&nft_json(&self.access_ns(node), &["list", "chain", "bridge", TABLE, &port_chain(node)])?))
    }

    fn check_port(&self, node: &str) -> Result<()> {
        self.check_node(node)?;
        if !self.nodes().iter().any(|n| n == node) {
            bail!("{node} has no access port of its own: use sender or r1..r{}", self.config().receivers);
        }
        Ok(())
    }

    /// The access namespaces (switch, or hosts) and the nodes whose ports they hold.
    fn access_groups(&self) -> Vec<(String, Vec<String>)> {
        let mut v: Vec<(String, Vec<String>)> = Vec::new();
        for n in self.nodes() {
            let ns = self.access_ns(&n);
            match v.iter_mut().find(|(x, _)| *x == ns) {
                Some((_, nodes)) => nodes.push(n),
                None => v.push((ns, vec![n])),
            }
        }
        v
    }

    /// Counts mcblast datagrams the bridge forwards toward every port (see
    /// [`Lab::nft_offered`]) from now on. Idempotent; [`Lab::drop_every_nth`]
    /// calls it.
    pub fn watch_ports(&self) -> Result<()> {
        let magic = u32::from_be_bytes(MAGIC);
        for (ns, nodes) in self.access_groups() {
            if table_exists(&ns, TABLE)? {
                continue;
            }
            let mut s = format!(
                "add table bridge {TABLE}\n\
                 add chain bridge {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}\n"
            );
            for n in nodes {
                let chain = port_chain(&n);
                s += &format!("add chain bridge {TABLE} {chain}\n");
                s += &format!(
                    "add rule bridge {TABLE} forward oifname \"{n}\" meta l4proto udp \
                     @th,{TH_MAGIC_BIT},32 {magic:#010x} jump {chain}\n"
                );
                s += &format!("add rule bridge {TABLE} {chain} counter comment \"{OFFERED}\"\n");
            }
            nft_apply(&ns, &s).with_context(|| format!("installing the lab's nftables table in {ns}"))?;
        }
        Ok(())
    }

    /// Counts, from now on, the mcblast datagrams (data and end markers) the
    /// fabric delivers toward each emulated host: on the shared switch's
    /// port to the host, or on the underlay switch's port to it (VXLAN
    /// packets, matched inside). Idempotent. Fails on the flat lab.
    pub fn watch_fabric(&self) -> Result<()> {
        let Some(t) = self.topology() else {
            bail!("lab {} has no emulated hosts: build it with hosts (mcblast lab up --hosts H)", self.prefix());
        };
        let ns = self.ns_name(t.fabric_node());
        if table_exists(&ns, FABRIC_TABLE)? {
            return Ok(());
        }
        let magic = u32::from_be_bytes(MAGIC);
        let mut s = format!(
            "add table bridge {FABRIC_TABLE}\n\
             add chain bridge {FABRIC_TABLE} forward {{ type filter hook forward priority filter; policy accept; }}\n"
        );
        for h in t.host_names() {
            let m = match t.fabric {
                Fabric::Bridge => format!("meta l4proto udp @th,{TH_MAGIC_BIT},32 {magic:#010x}"),
                Fabric::Vxlan | Fabric::Ovn => format!("udp dport {VXLAN_PORT} @th,{TH_VXLAN_MAGIC_BIT},32 {magic:#010x}"),
            };
            s += &format!("add rule bridge {FABRIC_TABLE} forward oifname \"{h}\" {m} counter comment \"to {h}\"\n");
        }
        nft_apply(&ns, &s).context("installing the fabric counters")
    }

    /// mcblast datagrams the fabric delivered toward host `hK` (K = 0 is the
    /// sender's) since [`Lab::watch_fabric`].
    pub fn fabric_delivered(&self, host: u32) -> Result<u64> {
        let Some(t) = self.topology() else {
            bail!("lab {} has no emulated hosts", self.prefix());
        };
        if host > t.hosts {
            bail!("no host h{host}: hosts are h0..h{}", t.hosts);
        }
        let ns = self.ns_name(t.fabric_node());
        if !table_exists(&ns, FABRIC_TABLE)? {
            bail!("lab {} does not count fabric traffic yet: call watch_fabric() before sending", self.prefix());
        }
        let v = nft_json(&ns, &["list", "chain", "bridge", FABRIC_TABLE, "forward"])?;
        let want = format!("to {}", host_name(host));
        parse_rules(&v).iter().find(|r| r.comment == want).map(|r| r.packets).ok_or_else(|| {
            LabError::Incomplete { prefix: self.prefix().into(), detail: format!("no fabric counter {want}") }.into()
        })
    }

    /// Drops every n-th mcblast data datagram the bridge forwards toward
    /// `node` (the 1st, (n+1)-th, ...; n = 1 drops all), counting what it drops
    /// ([`Lab::nft_dropped`]). Replaces an earlier drop rule for that node
    /// (its count restarts at 0). End-of-flow markers are never dropped.
    pub fn drop_every_nth(&self, node: &str, n: u64) -> Result<()> {
        self.check_port(node)?;
        if !(1..=u64::from(u32::MAX)).contains(&n) {
            bail!("drop every {n}th: n must be 1..={}", u32::MAX);
        }
        self.watch_ports()?;
        let chain = port_chain(node);
        let ns = self.access_ns(node);
        let mut s = String::new();
        for r in self.port_rules(node)?.iter().filter(|r| r.comment.starts_with(DROP)) {
            s += &format!("delete rule bridge {TABLE} {chain} handle {}\n", r.handle);
        }
        s += &format!(
            "add rule bridge {TABLE} {chain} @th,{TH_KIND_BIT},8 {} numgen inc mod {n} 0 counter drop comment \"{DROP}{n}\"\n",
            Kind::Data as u8
        );
        nft_apply(&ns, &s).with_context(|| format!("installing the drop rule toward {node}"))
    }

    /// Removes the drop rule toward `node`, if any.
    pub fn clear_drop(&self, node: &str) -> Result<()> {
        self.check_port(node)?;
        if !self.loss_table_exists(node)? {
            return Ok(());
        }
        let chain = port_chain(node);
        let s: String = self
            .port_rules(node)?
            .iter()
            .filter(|r| r.comment.starts_with(DROP))
            .map(|r| format!("delete rule bridge {TABLE} {chain} handle {}\n", r.handle))
            .collect();
        if s.is_empty() { Ok(()) } else { nft_apply(&self.access_ns(node), &s) }
    }

    /// Packets the drop rule toward `node` has dropped (0 when there is
    /// none): datagrams, except that a GSO batch crossing the lab whole is
    /// one packet (see [`Lab::nft_dropped_counter`]).
    pub fn nft_dropped(&self, node: &str) -> Result<u64> {
        Ok(self.nft_dropped_counter(node)?.0)
    }

    /// The drop rule's counter toward `node`: (packets, bytes), as nft
    /// counts them. A packet is one skb: a GSO batch that crosses the lab
    /// whole is one packet of 28 header bytes (IPv4 and UDP, counted from
    /// the IP header in the bridge's hooks) and all its datagrams' bytes,
    /// so with datagrams of one length L it held (bytes − 28 × packets) / L.
    pub fn nft_dropped_counter(&self, node: &str) -> Result<(u64, u64)> {
        self.check_port(node)?;
        if !self.loss_table_exists(node)? {
            return Ok((0, 0));
        }
        let drops: Vec<RuleInfo> = self.port_rules(node)?.into_iter().filter(|r| r.comment.starts_with(DROP)).collect();
        Ok((drops.iter().map(|r| r.packets).sum(), drops.iter().map(|r| r.bytes).sum()))
    }

    /// mcblast datagrams (data and end markers; first fragments) the bridge
    /// forwarded toward `node` since [`Lab::watch_ports`], before any drop.
    pub fn nft_offered(&self, node: &str) -> Result<u64> {
        self.check_port(node)?;
        if !self.loss_table_exists(node)? {
            bail!(
                "lab {} does not count port traffic yet: call watch_ports() (or drop_every_nth()) before sending",
                self.prefix()
            );
        }
        self.port_rules(node)?.iter().find(|r| r.comment == OFFERED).map(|r| r.packets).ok_or_else(|| {
            LabError::Incomplete { prefix: self.prefix().into(), detail: format!("no counter toward {node}") }.into()
        })
    }

    /// Per-port counters and drop rules, when the table exists (for status).
    pub(crate) fn port_loss(&self) -> Result<Option<Vec<PortLoss>>> {
        if !super::on_path("nft") || !self.loss_table_exists(SENDER_NODE)? {
            return Ok(None);
        }
        let mut v = Vec::new();
        for n in self.nodes() {
            let rules = self.port_rules(&n)?;
            let drop = rules.iter().find(|r| r.comment.starts_with(DROP));
            v.push(PortLoss {
                node: n,
                offered: rules.iter().find(|r| r.comment == OFFERED).map_or(0, |r| r.packets),
                drop_every: drop.and_then(|r| r.every),
                dropped: drop.map_or(0, |r| r.packets),
            });
        }
        Ok(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcblast_common::wire::Packet;

    #[test]
    fn match_offsets_agree_with_the_wire_format() {
        let mut buf = [0xffu8; 64];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_magic();
        p.set_kind(Kind::Data);
        // a UDP header in front, as the transport header nft sees
        let mut th = vec![0u8; 8];
        th.extend_from_slice(&buf);
        fn at(th: &[u8], bit: u32, len: usize) -> &[u8] {
            &th[(bit / 8) as usize..(bit / 8) as usize + len]
        }
        assert_eq!(at(&th, TH_MAGIC_BIT, 4), &u32::from_be_bytes(MAGIC).to_be_bytes());
        assert_eq!(at(&th, TH_MAGIC_BIT, 4), b"MCBL");
        assert_eq!(at(&th, TH_KIND_BIT, 1), &[0]);
        let mut p = Packet::new_unchecked(&mut th[8..]);
        p.set_kind(Kind::End);
        assert_eq!(at(&th, TH_KIND_BIT, 1), &[1]);
    }

    #[test]
    fn parses_nft_json_rules() {
        // real `nft -j -a list chain` output of nftables 1.0.6
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"chain": {"family": "bridge", "table": "mcblast", "name": "to-r1", "handle": 2}}, {"rule": {"family": "bridge", "table": "mcblast", "chain": "to-r1", "handle": 6, "comment": "offered", "expr": [{"counter": {"packets": 105, "bytes": 7770}}]}}, {"rule": {"family": "bridge", "table": "mcblast", "chain": "to-r1", "handle": 8, "comment": "drop every 3", "expr": [{"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 104, "len": 8}}, "right": 0}}, {"match": {"op": "==", "left": {"numgen": {"mode": "inc", "mod": 3, "offset": 0}}, "right": 0}}, {"counter": {"packets": 34, "bytes": 2516}}, {"drop": null}]}}]}"#;
        let rules = parse_rules(&serde_json::from_str(text).unwrap());
        assert_eq!(
            rules,
            vec![
                RuleInfo { handle: 6, comment: "offered".into(), packets: 105, bytes: 7770, every: None },
                RuleInfo { handle: 8, comment: "drop every 3".into(), packets: 34, bytes: 2516, every: Some(3) },
            ]
        );
    }
}
