//! AWS Transit Gateway's documented multicast limits, enforced in the lab's
//! fabric (`lab up --preset tgw`, `--tgw-limits`): nftables in the shared
//! switch's bridge **prerouting** hook, so each datagram is judged once, as
//! it enters the fabric, before it is replicated toward the hosts.
//!
//! ```text
//! table bridge mcblast_tgw {                       # in <prefix>sw
//!   set flows_pps / flows_bps { src . group . sport . dport; dynamic }     # one token bucket per flow
//!   set dropped { src . group . sport . dport; dynamic; counter }          # what the buckets dropped, per flow
//!   chain pre {
//!     type filter hook prerouting priority filter; policy accept;
//!     ip daddr 224.0.0.0/4 <first fragment>  counter drop comment "tgw fragmented datagrams"
//!     ip daddr 224.0.0.0/4 <later fragment>  counter drop comment "tgw later fragments"
//!     <mcblast end marker> accept comment "tgw end markers pass"
//!     ip daddr 224.0.0.0/4 ... update @flows_pps { flow limit rate over N/second } update @dropped { flow }
//!         counter drop comment "tgw flow pps N"
//!     ... the same with bytes/second                             comment "tgw flow bps N"
//!   }
//! }
//! table bridge mcblast_tgw { chain pre { igmp type membership-report-v3 counter drop } }   # sw and every host
//! ```
//! The rules' counters are the ground truth of what the fabric dropped; a
//! receiver's path loss equals them exactly. mcblast's own end-of-flow
//! markers pass uncounted by the buckets (a handful per flow), so the
//! receivers' accounting of the tail stays exact. IGMPv3 reports are dropped
//! before the bridges snoop them, so a v3-only member is never learned.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};
use mcblast_common::maps::{TgwGroup, TgwMemberConfig, TgwSlots};
use mcblast_common::wire::MAGIC;
use serde::Serialize;
use serde_json::Value;

use super::Lab;
use super::nft::{TH_KIND_BIT, TH_MAGIC_BIT, nft_apply, nft_json, parse_rules, table_exists};
use super::topo::Fabric;

const TABLE: &str = "mcblast_tgw";
const FRAG_FIRST: &str = "tgw fragmented datagrams";
const FRAG_LATER: &str = "tgw later fragments";
const PPS: &str = "tgw flow pps ";
const BPS: &str = "tgw flow bps ";
const V3: &str = "tgw igmpv3 reports";
/// TGW: 75,000 datagrams/s per flow, 15,000 once a group has more than 10 receivers.
pub const TGW_FLOW_PPS: u64 = 75_000;
pub const TGW_FLOW_PPS_MANY: u64 = 15_000;
pub const TGW_MANY_RECEIVERS: u32 = 10;
/// TGW: 1 Gbit/s per flow.
pub const TGW_FLOW_BPS: u64 = 1_000_000_000;
/// Token bucket depth: the packet bucket holds 5 datagrams (nft's default), the
/// byte bucket 5 datagrams of the lab's largest size.
const BURST_PACKETS: u64 = 5;
const BURST_BYTES: u64 = 5 * 9000;

/// Which TGW limits the fabric enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TgwLimits {
    /// Drop every fragment of multicast (IPv4 fragments toward 224.0.0.0/4).
    pub fragments: bool,
    /// Datagrams per second per flow (source, group, ports); None: no limit.
    pub flow_pps: Option<u64>,
    /// Bits per second per flow (IP bytes); None: no limit.
    pub flow_bps: Option<u64>,
    /// IGMPv3 reports dropped before any bridge snoops them (TGW speaks IGMPv2 only).
    pub igmpv2_only: bool,
    /// Most members a group may have, lab-wide (eBPF at the receivers' ports); None: no cap.
    pub max_members: Option<u32>,
    /// The switch's IGMP general queries come from 0.0.0.0, as TGW's do (else from the switch's address).
    pub queries_from_zero: bool,
}

impl TgwLimits {
    /// AWS's documented limits for a lab of `receivers` receivers (all of
    /// them may join one group: more than 10 lowers the rate to 15,000/s).
    pub fn aws(receivers: u32) -> Self {
        let pps = if receivers > TGW_MANY_RECEIVERS { TGW_FLOW_PPS_MANY } else { TGW_FLOW_PPS };
        TgwLimits {
            fragments: true,
            flow_pps: Some(pps),
            flow_bps: Some(TGW_FLOW_BPS),
            igmpv2_only: true,
            max_members: Some(TGW_MAX_MEMBERS),
            queries_from_zero: true,
        }
    }

    /// One line for `lab up` and `lab status`.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(p) = self.flow_pps {
            v.push(format!("{p} datagrams/s per flow"));
        }
        if let Some(b) = self.flow_bps {
            v.push(format!("{} Mbit/s per flow", b as f64 / 1e6));
        }
        if self.fragments {
            v.push("fragments dropped".into());
        }
        if self.igmpv2_only {
            v.push("IGMPv3 reports dropped".into());
        }
        if let Some(m) = self.max_members {
            v.push(format!("at most {m} members per group"));
        }
        if self.queries_from_zero {
            v.push("queries from 0.0.0.0".into());
        }
        if v.is_empty() { "none".into() } else { v.join(", ") }
    }
}

/// What one flow lost to the per-flow rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TgwFlowDrop {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub dropped: u64,
}

/// The fabric's counts of what each TGW limit dropped since `lab up`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TgwDrops {
    /// Fragmented datagrams (their first fragments).
    pub fragmented_datagrams: u64,
    /// Every dropped fragment, first ones included.
    pub fragments: u64,
    /// Datagrams over the per-flow datagram rate.
    pub over_pps: u64,
    /// Datagrams over the per-flow bit rate.
    pub over_bps: u64,
    /// IGMPv3 reports (on the switch and every host bridge).
    pub igmpv3_reports: u64,
    /// Per flow: datagrams the rate limits dropped (over_pps + over_bps in all).
    pub flows: Vec<TgwFlowDrop>,
    /// Per group: members the cap admitted, reports it refused.
    pub groups: Vec<TgwGroupCount>,
}

fn flow_key() -> &'static str {
    "ip saddr . ip daddr . udp sport . udp dport"
}

/// The nft script of the switch's table.
fn switch_script(l: &TgwLimits) -> String {
    let t = TABLE;
    let flow = "type ipv4_addr . ipv4_addr . inet_service . inet_service; flags dynamic; timeout 1h;";
    let mut s = format!(
        "add table bridge {t}\n\
         add chain bridge {t} pre {{ type filter hook prerouting priority filter; policy accept; }}\n\
         add set bridge {t} flows_pps {{ {flow} }}\n\
         add set bridge {t} flows_bps {{ {flow} }}\n\
         add set bridge {t} dropped {{ {flow} counter; }}\n"
    );
    let mc = "ip daddr 224.0.0.0/4";
    if l.fragments {
        // first fragment: MF set, offset 0; later ones: offset != 0
        s += &format!("add rule bridge {t} pre {mc} ip frag-off & 0x3fff == 0x2000 counter drop comment \"{FRAG_FIRST}\"\n");
        s += &format!("add rule bridge {t} pre {mc} ip frag-off & 0x1fff != 0 counter drop comment \"{FRAG_LATER}\"\n");
    }
    if l.flow_pps.is_some() || l.flow_bps.is_some() {
        let magic = u32::from_be_bytes(MAGIC);
        s += &format!(
            "add rule bridge {t} pre {mc} meta l4proto udp @th,{TH_MAGIC_BIT},32 {magic:#010x} @th,{TH_KIND_BIT},8 != 0 \
             accept comment \"tgw end markers pass\"\n"
        );
    }
    let k = flow_key();
    let link = "ip daddr != 224.0.0.0/24";
    if let Some(p) = l.flow_pps {
        s += &format!(
            "add rule bridge {t} pre {mc} {link} meta l4proto udp update @flows_pps {{ {k} limit rate over {p}/second \
             burst {BURST_PACKETS} packets }} update @dropped {{ {k} }} counter drop comment \"{PPS}{p}\"\n"
        );
    }
    if let Some(b) = l.flow_bps {
        s += &format!(
            "add rule bridge {t} pre {mc} {link} meta l4proto udp update @flows_bps {{ {k} limit rate over {} bytes/second \
             burst {BURST_BYTES} bytes }} update @dropped {{ {k} }} counter drop comment \"{BPS}{b}\"\n",
            b / 8
        );
    }
    s
}

fn v3_script() -> String {
    format!(
        "add table bridge {TABLE}\n\
         add chain bridge {TABLE} pre {{ type filter hook prerouting priority filter; policy accept; }}\n\
         add rule bridge {TABLE} pre igmp type membership-report-v3 counter drop comment \"{V3}\"\n"
    )
}

/// The `lab status` section: the limits in force and what each dropped.
pub fn render(l: &TgwLimits, d: &TgwDrops) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    let rate = |x: Option<u64>, unit: &str| x.map_or("off".to_string(), |v| format!("{v} {unit}"));
    let mut s = String::from("TGW limits (nftables in the switch, bridge prerouting; counts since lab up):\n");
    s += &format!("  {:<32} {:<24} dropped {}\n", "datagrams/s per flow", rate(l.flow_pps, "/s"), d.over_pps);
    s += &format!("  {:<32} {:<24} dropped {}\n", "bit/s per flow", rate(l.flow_bps, "bit/s"), d.over_bps);
    s += &format!(
        "  {:<32} {:<24} dropped {} datagrams ({} fragments)\n",
        "fragmented multicast",
        on(l.fragments),
        d.fragmented_datagrams,
        d.fragments
    );
    s += &format!("  {:<32} {:<24} dropped {}\n", "IGMPv3 reports ignored", on(l.igmpv2_only), d.igmpv3_reports);
    s += &format!(
        "  {:<32} {:<24} refused {} report(s), {} member(s) aged out\n",
        "members per group",
        l.max_members.map_or("off".to_string(), |m| format!("at most {m}")),
        d.groups.iter().map(|g| g.refused).sum::<u64>(),
        d.groups.iter().map(|g| g.aged_out).sum::<u64>()
    );
    s += &format!("  {:<32} {}\n", "IGMP queries from 0.0.0.0", on(l.queries_from_zero));
    for g in &d.groups {
        s += &format!(
            "  group {}: {} member(s), {} report(s) refused, {} member(s) aged out\n",
            g.group, g.members, g.refused, g.aged_out
        );
    }
    for f in &d.flows {
        s += &format!("  flow {}:{} -> {}:{}  dropped {} (over a rate)\n", f.source, f.sport, f.group, f.dport, f.dropped);
    }
    s
}

/// Per-flow counters of the `dropped` set, from `nft -j list set`.
fn parse_flow_drops(v: &Value) -> Vec<TgwFlowDrop> {
    let items = v["nftables"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out = Vec::new();
    for set in items.iter().filter_map(|i| i.get("set")) {
        for e in set["elem"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let e = &e["elem"];
            let Some(key) = e["val"]["concat"].as_array() else { continue };
            let addr = |i: usize| key.get(i).and_then(Value::as_str).and_then(|s| s.parse().ok());
            let port = |i: usize| key.get(i).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
            let (Some(source), Some(group), Some(sport), Some(dport)) = (addr(0), addr(1), port(2), port(3)) else {
                continue;
            };
            out.push(TgwFlowDrop { source, group, sport, dport, dropped: e["counter"]["packets"].as_u64().unwrap_or(0) });
        }
    }
    out.sort_by_key(|f| (f.source, f.group, f.sport, f.dport));
    out
}

/// The member cap's program and maps in the eBPF object.
const MEMBERS_PROGRAM: &str = "mcblast_tgw_members";
const MEMBERS_CONFIG: &str = "TGW_CONFIG";
const MEMBERS_GROUPS: &str = "TGW_GROUPS";
const MEMBERS_SLOTS: &str = "TGW_SLOTS_MAP";
/// TGW: 100 members per group (by default).
pub const TGW_MAX_MEMBERS: u32 = 100;

fn members_pin(prefix: &str, what: &str) -> std::path::PathBuf {
    super::impair::lab_dir(prefix).join(format!("tgw-members-{what}"))
}

/// The pinned hash map at `pin`.
fn pinned_hash<V: aya::Pod>(pin: &std::path::Path) -> Result<aya::maps::HashMap<aya::maps::MapData, u32, V>> {
    let data = aya::maps::MapData::from_pin(pin).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", pin.display()))?;
    Ok(aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))?)
}

/// One group of the member cap: live members (reported within the membership
/// interval), reports refused (every slot held a live member), members aged
/// out (silent longer than the membership interval, their slot given to a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TgwGroupCount {
    pub group: Ipv4Addr,
    pub members: u32,
    pub refused: u64,
    pub aged_out: u64,
}

impl TgwGroupCount {
    /// Counts `g`'s live members at `now_ns` (CLOCK_MONOTONIC) with membership interval `age_ns`.
    fn of(group: u32, g: &TgwGroup<u32>, slots: Option<&TgwSlots>, age_ns: u64, now_ns: u64) -> Self {
        let live = slots.map_or(0, |s| {
            s.member.iter().zip(&s.seen_ns).filter(|&(&m, &t)| m != 0 && now_ns.wrapping_sub(t) <= age_ns).count()
        });
        TgwGroupCount {
            group: Ipv4Addr::from(group.to_ne_bytes()),
            members: live as u32,
            refused: g.refused,
            aged_out: g.aged_out,
        }
    }
}

impl Lab {
    /// Admits at most `cap` members per group, lab-wide: the eBPF program
    /// `mcblast_tgw_members` at the tcx ingress of every receiver's access
    /// port, all sharing one map, drops the IGMP reports of members beyond
    /// it before the bridge snoops them. A member silent for the lab's
    /// membership interval (as long as the bridges keep it) ages out and its
    /// place goes to the next new member. Pinned under the lab's bpffs
    /// directory, so `lab down` removes it.
    pub fn tgw_members_apply(&self, cap: u32) -> Result<()> {
        use std::os::fd::{AsFd, OwnedFd};
        let prefix = self.prefix().to_string();
        if members_pin(&prefix, "groups").exists() {
            bail!("lab {prefix} already caps the members per group");
        }
        if !crate::sys::kfeatures::KernelFeatures::probe().tcx {
            bail!("the TGW member cap needs tcx links (Linux 6.6 or later)");
        }
        let mut ebpf = super::impair::load_lab_object("the member cap")?;
        let mut cfg: aya::maps::Array<aya::maps::MapData, TgwMemberConfig> =
            aya::maps::Array::try_from(ebpf.take_map(MEMBERS_CONFIG).context("eBPF object has no TGW_CONFIG map")?)?;
        cfg.set(0, TgwMemberConfig { cap, _pad: 0, age_ns: self.tgw_member_age_ns() }, 0)?;
        let dir = super::impair::lab_dir(&prefix);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let groups = ebpf.take_map(MEMBERS_GROUPS).context("eBPF object has no TGW_GROUPS map")?;
        let slots = ebpf.take_map(MEMBERS_SLOTS).context("eBPF object has no TGW_SLOTS_MAP map")?;
        let prog: &mut aya::programs::SchedClassifier =
            ebpf.program_mut(MEMBERS_PROGRAM).context("eBPF object has no member cap program")?.try_into()?;
        prog.load().map_err(|e| anyhow::anyhow!("the kernel refused the member cap program: {e}"))?;
        let prog_fd: OwnedFd = prog.fd()?.as_fd().try_clone_to_owned()?;
        cfg.pin(members_pin(&prefix, "config")).map_err(|e| anyhow::anyhow!("cannot pin the member cap config: {e}"))?;
        groups.pin(members_pin(&prefix, "groups")).map_err(|e| anyhow::anyhow!("cannot pin the member cap map: {e}"))?;
        slots.pin(members_pin(&prefix, "slots")).map_err(|e| anyhow::anyhow!("cannot pin the member slots: {e}"))?;
        for node in self.receivers() {
            let ns = self.access_ns(&node);
            let fd = prog_fd.try_clone()?;
            let port = node.clone();
            let link = super::run_in_ns(&ns, move || -> Result<OwnedFd> {
                let ifindex = crate::sys::if_index(&port).with_context(|| format!("no port {port}"))?;
                crate::sys::bpf::tcx_link_create(fd.as_fd(), ifindex)
                    .map_err(|e| anyhow::anyhow!("cannot attach at tc ingress (tcx) of {port}: {e}"))
            })
            .and_then(|r| r)
            .with_context(|| format!("capping members on {node}'s port in {ns}"))?;
            crate::sys::bpf::obj_pin(link.as_fd(), &members_pin(&prefix, &format!("link-{node}")))
                .with_context(|| format!("cannot pin the member cap link of {node}"))?;
        }
        Ok(())
    }

    /// How long a member keeps its place without reporting: the bridges' membership interval.
    fn tgw_member_age_ns(&self) -> u64 {
        self.igmp().membership_interval_cs * 10_000_000
    }

    /// The member cap in force, None without one.
    fn tgw_members_cap(&self) -> Result<Option<u32>> {
        let pin = members_pin(self.prefix(), "config");
        if !pin.exists() {
            return Ok(None);
        }
        let data = aya::maps::MapData::from_pin(&pin).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", pin.display()))?;
        let map: aya::maps::Array<aya::maps::MapData, TgwMemberConfig> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data))?;
        Ok(Some(map.get(&0, 0)?.cap))
    }

    /// Removes the member cap's pins (the kernel then detaches its programs).
    fn tgw_members_remove(&self) -> Result<()> {
        let dir = super::impair::lab_dir(self.prefix());
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_str().is_some_and(|n| n.starts_with("tgw-members-")) {
                std::fs::remove_file(e.path()).with_context(|| format!("cannot remove {}", e.path().display()))?;
            }
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// The member cap's groups (live members, reports refused, members aged out); None without a cap.
    pub fn tgw_members(&self) -> Result<Option<Vec<TgwGroupCount>>> {
        let pin = members_pin(self.prefix(), "groups");
        if !pin.exists() {
            return Ok(None);
        }
        let groups: aya::maps::HashMap<_, u32, TgwGroup<u32>> = pinned_hash(&pin)?;
        let slots: aya::maps::HashMap<_, u32, TgwSlots> = pinned_hash(&members_pin(self.prefix(), "slots"))?;
        let (age_ns, now_ns) = (self.tgw_member_age_ns(), crate::clock::mono_ns());
        let mut v = Vec::new();
        for kv in groups.iter() {
            let (g, e) = kv?;
            v.push(TgwGroupCount::of(g, &e, slots.get(&g, 0).ok().as_ref(), age_ns, now_ns));
        }
        v.sort_by_key(|g| g.group);
        Ok(Some(v))
    }

    /// The namespaces that drop IGMPv3 reports: the switch and every host.
    fn tgw_igmp_namespaces(&self) -> Vec<String> {
        let mut v = vec![self.ns_name(super::SWITCH)];
        if let Some(t) = self.topology() {
            v.extend(t.host_names().iter().map(|h| self.ns_name(h)));
        }
        v
    }

    /// Enforces TGW's limits in the fabric (replacing earlier ones). Needs
    /// emulated hosts on the bridge fabric (`--preset tgw`). The tables live
    /// in the lab's namespaces, so `lab down` removes them.
    pub fn tgw_limits_apply(&self, l: &TgwLimits) -> Result<()> {
        match self.topology() {
            Some(t) if t.fabric == Fabric::Bridge => {}
            _ => bail!(
                "TGW limits need emulated hosts on the bridge fabric (mcblast lab up --preset tgw); lab {} has none",
                self.prefix()
            ),
        }
        self.tgw_limits_remove()?;
        let sw = self.ns_name(super::SWITCH);
        let mut sw_script = switch_script(l);
        if l.igmpv2_only {
            for ns in self.tgw_igmp_namespaces() {
                if ns == sw {
                    sw_script += &format!(
                        "add rule bridge {TABLE} pre igmp type membership-report-v3 counter drop comment \"{V3}\"\n"
                    );
                } else {
                    nft_apply(&ns, &v3_script()).with_context(|| format!("dropping IGMPv3 reports in {ns}"))?;
                }
            }
        }
        nft_apply(&sw, &sw_script).context("installing the TGW limits in the fabric switch")?;
        if l.flow_pps.is_some() || l.flow_bps.is_some() {
            // ENA has no UDP segmentation offload: the sender's stack segments, and the buckets count datagrams
            if let Err(e) = self.set_sender_offload(false) {
                eprintln!("mcblast: warning: {e:#}; the rate buckets count a UDP GSO batch as one datagram");
            }
        }
        if let Some(m) = l.max_members {
            self.tgw_members_apply(m)?;
        }
        self.tgw_query_source(l.queries_from_zero)
    }

    /// The switch's general queries from 0.0.0.0 (`zero`) or from its own address (the lab's default).
    fn tgw_query_source(&self, zero: bool) -> Result<()> {
        let sw = self.ns_name(super::SWITCH);
        let v = if zero { "0" } else { "1" };
        let mut ip = Command::new("ip");
        ip.args(["-n", &sw, "link", "set", super::BRIDGE, "type", "bridge", "mcast_query_use_ifaddr", v]);
        super::output(&mut ip)
            .with_context(|| format!("setting the switch's IGMP query source in {sw}"))?;
        Ok(())
    }

    /// Whether the switch's general queries come from 0.0.0.0.
    fn tgw_queries_from_zero(&self) -> Result<bool> {
        let sw = self.ns_name(super::SWITCH);
        let path = format!("/sys/class/net/{}/bridge/multicast_query_use_ifaddr", super::BRIDGE);
        Ok(super::output(Command::new("ip").args(["netns", "exec", &sw, "cat", &path]))?.trim() == "0")
    }

    /// Removes the TGW limits (no-op when there are none).
    pub fn tgw_limits_remove(&self) -> Result<()> {
        self.tgw_members_remove()?;
        self.tgw_query_source(false)?;
        for ns in self.tgw_igmp_namespaces() {
            if table_exists(&ns, TABLE)? {
                nft_apply(&ns, &format!("delete table bridge {TABLE}\n"))?;
            }
        }
        Ok(())
    }

    /// The TGW limits in force and what each dropped so far; None when the
    /// lab enforces none.
    pub fn tgw_limits(&self) -> Result<Option<(TgwLimits, TgwDrops)>> {
        if !super::on_path("nft") || self.topology().is_none_or(|t| t.fabric != Fabric::Bridge) {
            return Ok(None);
        }
        let sw = self.ns_name(super::SWITCH);
        if !table_exists(&sw, TABLE)? {
            return Ok(None);
        }
        let rules = parse_rules(&nft_json(&sw, &["list", "chain", "bridge", TABLE, "pre"])?);
        let find = |p: &str| rules.iter().find(|r| r.comment.starts_with(p));
        let param = |p: &str| find(p).and_then(|r| r.comment[p.len()..].parse::<u64>().ok());
        let limits = TgwLimits {
            fragments: find(FRAG_FIRST).is_some(),
            flow_pps: param(PPS),
            flow_bps: param(BPS),
            igmpv2_only: find(V3).is_some(),
            max_members: self.tgw_members_cap()?,
            queries_from_zero: self.tgw_queries_from_zero()?,
        };
        let pk = |p: &str| find(p).map_or(0, |r| r.packets);
        let mut d = TgwDrops {
            fragmented_datagrams: pk(FRAG_FIRST),
            fragments: pk(FRAG_FIRST) + pk(FRAG_LATER),
            over_pps: pk(PPS),
            over_bps: pk(BPS),
            igmpv3_reports: pk(V3),
            flows: parse_flow_drops(&nft_json(&sw, &["list", "set", "bridge", TABLE, "dropped"])?),
            groups: self.tgw_members()?.unwrap_or_default(),
        };
        if limits.igmpv2_only {
            for ns in self.tgw_igmp_namespaces().into_iter().filter(|n| *n != sw) {
                if table_exists(&ns, TABLE)? {
                    let r = parse_rules(&nft_json(&ns, &["list", "chain", "bridge", TABLE, "pre"])?);
                    d.igmpv3_reports += r.iter().filter(|r| r.comment == V3).map(|r| r.packets).sum::<u64>();
                }
            }
        }
        Ok(Some((limits, d)))
    }

    /// Datagrams the TGW fabric dropped of all flows: fragmented datagrams and
    /// datagrams over a per-flow rate (0 when no limits are in force).
    pub fn tgw_dropped(&self) -> Result<u64> {
        Ok(self.tgw_limits()?.map_or(0, |(_, d)| d.fragmented_datagrams + d.over_pps + d.over_bps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_defaults_follow_the_receiver_count() {
        assert_eq!(TgwLimits::aws(9).flow_pps, Some(75_000));
        assert_eq!(TgwLimits::aws(10).flow_pps, Some(75_000));
        assert_eq!(TgwLimits::aws(11).flow_pps, Some(15_000));
        assert_eq!(TgwLimits::aws(9).flow_bps, Some(1_000_000_000));
        assert!(TgwLimits::aws(9).fragments && TgwLimits::aws(9).igmpv2_only);
    }

    #[test]
    fn script_names_every_limit_it_enforces() {
        let s = switch_script(&TgwLimits::aws(9));
        assert!(s.contains("limit rate over 75000/second"), "{s}");
        assert!(s.contains("limit rate over 125000000 bytes/second"), "{s}");
        assert!(s.contains(FRAG_FIRST) && s.contains(FRAG_LATER));
        let none = TgwLimits { fragments: false, flow_pps: None, flow_bps: None, igmpv2_only: false, max_members: None, queries_from_zero: false };
        let s = switch_script(&none);
        assert!(!s.contains("add rule"), "{s}");
        assert_eq!(none.describe(), "none");
    }

    #[test]
    fn parses_the_per_flow_drop_set() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "bridge", "name": "dropped", "table": "mcblast_tgw", "type": ["ipv4_addr", "ipv4_addr", "inet_service", "inet_service"], "handle": 3, "size": 65535, "flags": ["timeout"], "timeout": 3600, "elem": [{"elem": {"val": {"concat": ["10.77.0.1", "239.0.0.1", 40000, 5001]}, "timeout": 3600, "expires": 3590, "counter": {"packets": 12, "bytes": 1104}}}]}}]}"#;
        let v = parse_flow_drops(&serde_json::from_str(text).unwrap());
        assert_eq!(
            v,
            vec![TgwFlowDrop {
                source: "10.77.0.1".parse().unwrap(),
                group: "239.0.0.1".parse().unwrap(),
                sport: 40000,
                dport: 5001,
                dropped: 12
            }]
        );
    }
}
