//! Lab topologies that emulate the platforms: emulated hosts (hypervisors),
//! each a namespace with its own bridge, joined by one shared switch
//! (`Fabric::Bridge`, AWS TGW-like) or by VXLAN tunnels with head-end
//! replication (`Fabric::Vxlan`, OpenStack OVN-like).
//!
//! ```text
//!   fabric bridge (TGW-like)                   fabric vxlan (OVN-like)
//!
//!          <p>sw: br0 10.77.0.254 querier       <p>ul: br0 (underlay switch, 10.78.0.0/24, no snooping)
//!          /     |      |      \                  /      |       |       \
//!        h0     h1     h2     h3   (ports)      h0      h1      h2      h3   (ports)
//!        |      |      |      |                 |       |       |       |
//!   <p>h0:br0 <p>h1:br0 ...   (uplink up0)   <p>hK: ul0 10.78.0.(10+K), one VXLAN port
//!     |        / | \                          vx-hJ per remote host J on br0 (static
//!   sender   r1 r2 r3                         all-zero FDB entry dst 10.78.0.(10+J)),
//!                                             <p>h0:br0 10.77.0.254 is the querier
//! ```
//!
//! The sender always sits on its own host `h0` (a sender VM on its own
//! hypervisor, as in the iperf runs this tool replaces), so every datagram
//! crosses the fabric; `--hosts` counts the receiver hosts h1..hH. Receivers
//! keep the names r1..rN and the flat lab's addresses (10.77.0.0/24 is one L2
//! segment across all hosts); `spread` puts r1..rR on h1, the next R on h2,
//! ...; `same-host` puts all of them on h1.
//!
//! VXLAN: one tunnel port per remote host (as OVN/OVS has one tunnel
//! interface per remote chassis), each with a static all-zero-MAC FDB entry
//! to that host's underlay address and learning off. The tunnel ports are
//! isolated bridge ports (split horizon: what arrives from a tunnel never
//! leaves through another tunnel), so the full mesh has no loop. The host
//! bridge replicates a datagram once per tunnel port whose remote host has
//! a member (IGMP snooping learns members per tunnel port): head-end
//! replication, one copy per remote host with members, not per receiver.
//! The underlay MTU is the overlay MTU + 50 (VXLAN overhead), so the
//! overlay keeps the MTU asked for; outer packets have DF set, so they can
//! never be fragmented.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::LabError;

/// Host namespaces are `<prefix>h0` (the sender's) .. `<prefix>hH`.
pub const HOST_PREFIX: &str = "h";
/// The underlay switch namespace of the VXLAN fabric.
pub const UNDERLAY: &str = "ul";
/// A host's uplink to the shared switch (bridge fabric).
pub const UPLINK: &str = "up0";
/// A host's underlay interface (VXLAN fabric).
pub const UNDERLAY_IF: &str = "ul0";
/// The underlay subnet: host K is 10.78.0.(10+K).
pub const UNDERLAY_NET: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 0);
/// VXLAN overhead on IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
pub const VXLAN_PORT: u16 = 4789;
/// Most receiver hosts.
pub const MAX_HOSTS: u32 = 32;

/// How the emulated hosts are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fabric {
    /// One shared L2 switch (namespace `sw`), every host bridge uplinked to it (AWS TGW-like).
    Bridge,
    /// VXLAN over an underlay, head-end replication (OpenStack OVN-like).
    Vxlan,
    /// A real OVN: one OVS + ovn-controller per host, Geneve or VXLAN tunnels (see `ovn.rs`).
    Ovn,
}

impl Fabric {
    pub fn as_str(self) -> &'static str {
        match self {
            Fabric::Bridge => "bridge",
            Fabric::Vxlan => "vxlan",
            Fabric::Ovn => "ovn",
        }
    }
    fn parse(s: &str) -> Option<Fabric> {
        match s {
            "bridge" => Some(Fabric::Bridge),
            "vxlan" => Some(Fabric::Vxlan),
            "ovn" => Some(Fabric::Ovn),
            _ => None,
        }
    }
}

/// Where the receivers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// `per_host` receivers on each of h1..hH.
    Spread,
    /// All receivers on h1 (the other hosts stay empty).
    SameHost,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Spread => "spread",
            Placement::SameHost => "same-host",
        }
    }
    fn parse(s: &str) -> Option<Placement> {
        match s {
            "spread" => Some(Placement::Spread),
            "same-host" => Some(Placement::SameHost),
            _ => None,
        }
    }
}

/// Emulated hosts: `hosts` receiver hosts h1..hH plus the sender's host h0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub hosts: u32,
    /// Receivers per host; the lab has `hosts * per_host` receivers whatever the placement.
    pub per_host: u32,
    pub fabric: Fabric,
    pub placement: Placement,
}

impl Topology {
    pub fn receivers(&self) -> u32 {
        self.hosts * self.per_host
    }

    /// The host (0 = the sender's) a node lives on; None for other names.
    pub fn host_of(&self, node: &str) -> Option<u32> {
        if node == super::SENDER {
            return Some(0);
        }
        let k = super::receiver_index(node).filter(|&k| k <= self.receivers())?;
        Some(match self.placement {
            Placement::Spread => (k - 1) / self.per_host + 1,
            Placement::SameHost => 1,
        })
    }

    /// `h0` .. `hH`.
    pub fn host_names(&self) -> Vec<String> {
        (0..=self.hosts).map(host_name).collect()
    }

    /// The namespace (without prefix) of the shared switch or underlay switch.
    pub fn fabric_node(&self) -> &'static str {
        match self.fabric {
            Fabric::Bridge => super::SWITCH,
            Fabric::Vxlan | Fabric::Ovn => UNDERLAY,
        }
    }

    /// The node (without prefix) whose bridge is the IGMP querier: the shared
    /// switch (TGW is the querier), or the sender's host (VXLAN).
    pub fn querier_node(&self) -> String {
        match self.fabric {
            Fabric::Bridge => super::SWITCH.to_string(),
            Fabric::Vxlan => host_name(0),
            Fabric::Ovn => super::ovn::CENTRAL.to_string(),
        }
    }

    pub fn validate(&self) -> Result<(), LabError> {
        if !(1..=MAX_HOSTS).contains(&self.hosts) {
            return Err(LabError::Config(format!("{} hosts: use 1..={MAX_HOSTS}", self.hosts)));
        }
        if self.per_host == 0 || self.receivers() > super::MAX_RECEIVERS {
            return Err(LabError::Config(format!(
                "{} hosts x {} receivers per host: use 1 or more per host, at most {} receivers in all",
                self.hosts,
                self.per_host,
                super::MAX_RECEIVERS
            )));
        }
        Ok(())
    }

    /// The text kept in the querier bridge's alias so `Lab::open` can read the topology back.
    pub(super) fn encode(&self) -> String {
        format!(
            "mcblast-topology hosts={} per_host={} fabric={} placement={}",
            self.hosts,
            self.per_host,
            self.fabric.as_str(),
            self.placement.as_str()
        )
    }

    pub(super) fn decode(s: &str) -> Option<Topology> {
        let rest = s.trim().strip_prefix("mcblast-topology ")?;
        let (mut hosts, mut per_host, mut fabric, mut placement) = (None, None, None, None);
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "hosts" => hosts = v.parse().ok(),
                "per_host" => per_host = v.parse().ok(),
                "fabric" => fabric = Fabric::parse(v),
                "placement" => placement = Placement::parse(v),
                _ => return None,
            }
        }
        Some(Topology { hosts: hosts?, per_host: per_host?, fabric: fabric?, placement: placement? })
    }
}

pub fn host_name(k: u32) -> String {
    format!("{HOST_PREFIX}{k}")
}

/// K for a host name `hK`.
pub(super) fn host_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(HOST_PREFIX)?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok().filter(|&k| k <= MAX_HOSTS)
}

/// Host K's underlay address.
pub fn underlay_addr(k: u32) -> Ipv4Addr {
    let [a, b, c, _] = UNDERLAY_NET.octets();
    Ipv4Addr::new(a, b, c, (10 + k) as u8)
}

/// The tunnel port on one host toward remote host `k`.
pub fn tunnel_port(k: u32) -> String {
    format!("vx-{}", host_name(k))
}

/// The VNI of the tunnel between hosts a and b (the same at both ends; one
/// per pair, because two VXLAN devices on one UDP port need distinct VNIs).
fn vni(a: u32, b: u32) -> u32 {
    10_000 + 100 * a.min(b) + a.max(b)
}

/// IGMP settings of every bridge in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IgmpConfig {
    /// Version of the querier's queries (2 or 3). With 2, every node's eth0
    /// also gets `force_igmp_version=2` (as EC2 instances behind TGW need).
    pub version: u8,
    /// General query interval, centiseconds.
    pub query_interval_cs: u64,
    /// How long a member stays without answering queries, centiseconds.
    pub membership_interval_cs: u64,
}

impl Default for IgmpConfig {
    /// The flat lab's: IGMPv3, 125 s queries, 260 s membership (the kernel's defaults).
    fn default() -> Self {
        IgmpConfig {
            version: 3,
            query_interval_cs: super::QUERY_INTERVAL_CS,
            membership_interval_cs: default_membership_cs(super::QUERY_INTERVAL_CS),
        }
    }
}

/// RFC 3376 membership interval with robustness 2 and a 10 s response
/// interval: 2 x query interval + 10 s (260 s for 125 s queries, the kernel default).
pub fn default_membership_cs(query_interval_cs: u64) -> u64 {
    2 * query_interval_cs + 1000
}

impl IgmpConfig {
    pub fn validate(&self) -> Result<(), LabError> {
        if !matches!(self.version, 2 | 3) {
            return Err(LabError::Config(format!("IGMP version {}: use 2 or 3", self.version)));
        }
        if !(100..=360_000).contains(&self.query_interval_cs) {
            return Err(LabError::Config(format!(
                "query interval {} s: use 1..=3600 s",
                self.query_interval_cs as f64 / 100.0
            )));
        }
        if self.membership_interval_cs <= self.query_interval_cs || self.membership_interval_cs > 1_000_000 {
            return Err(LabError::Config(format!(
                "membership interval {} s: use more than the query interval ({} s) and at most 10000 s, \
                 or members expire between queries",
                self.membership_interval_cs as f64 / 100.0,
                self.query_interval_cs as f64 / 100.0
            )));
        }
        Ok(())
    }

    /// How long a bridge that is not the querier keeps believing in the
    /// querier (and in its multicast-router port) without hearing a query:
    /// 2 x query interval + response interval (RFC 3376 "other querier present").
    pub(super) fn other_querier_cs(&self) -> u64 {
        2 * self.query_interval_cs + super::QUERY_RESPONSE_INTERVAL_CS
    }
}

/// Everything a lab is built from: the flat lab's settings, IGMP timers and
/// version, and optionally emulated hosts. `LabSpec::from(LabConfig)` is
/// exactly the flat lab [`super::Lab::up`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// Prefix, MTU, snooping, querier; `receivers` is `hosts * per_host` with a topology.
    pub base: super::LabConfig,
    pub igmp: IgmpConfig,
    /// None: the flat lab (one bridge in `sw`).
    pub topology: Option<Topology>,
}

impl From<super::LabConfig> for LabSpec {
    fn from(base: super::LabConfig) -> Self {
        LabSpec { base, igmp: IgmpConfig::default(), topology: None }
    }
}

impl LabSpec {
    pub fn validate(&self) -> Result<(), LabError> {
        if let Some(t) = &self.topology {
            t.validate()?;
        }
        self.base.validate()?;
        self.igmp.validate()?;
        if let Some(t) = &self.topology {
            if t.receivers() != self.base.receivers {
                return Err(LabError::Config(format!(
                    "{} receivers in the base settings but {} hosts x {} per host",
                    self.base.receivers, t.hosts, t.per_host
                )));
            }
            if t.fabric == Fabric::Vxlan && self.base.mtu + VXLAN_OVERHEAD > 65535 {
                return Err(LabError::Config(format!("MTU {}: VXLAN needs MTU + 50 <= 65535", self.base.mtu)));
            }
            if t.fabric == Fabric::Ovn && self.base.mtu + super::ovn::GENEVE_OVERHEAD > 65535 {
                return Err(LabError::Config(format!("MTU {}: OVN tunnels need MTU + 58 <= 65535", self.base.mtu)));
            }
        }
        Ok(())
    }
}

/// Platform presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// AWS Transit Gateway multicast.
    Tgw,
    /// OpenStack OVN with IGMP snooping.
    Ovn,
}

/// TGW: IGMPv2 queries every 120 s.
pub const TGW_QUERY_INTERVAL_CS: u64 = 12_000;
/// TGW drops a member after 3 missed queries: 3 x 120 s + the response interval.
pub const TGW_MEMBERSHIP_CS: u64 = 3 * TGW_QUERY_INTERVAL_CS + super::QUERY_RESPONSE_INTERVAL_CS;
pub const TGW_MTU: u32 = 8500;
/// OVN `mcast_idle_timeout` default 300 s; `mcast_query_interval` defaults to half of it.
pub const OVN_IDLE_CS: u64 = 30_000;
pub const OVN_QUERY_INTERVAL_CS: u64 = OVN_IDLE_CS / 2;

impl Preset {
    /// The fabric the preset builds on this machine: OVN's is the real OVN
    /// where it is installed, else its VXLAN approximation (`settings`).
    pub fn fabric(self) -> Fabric {
        match self {
            Preset::Ovn if super::ovn::installed() => Fabric::Ovn,
            p => p.settings().0,
        }
    }

    /// (fabric, IGMP settings, MTU, snooping, querier) of the platform.
    pub fn settings(self) -> (Fabric, IgmpConfig, u32, bool, bool) {
        match self {
            Preset::Tgw => (
                Fabric::Bridge,
                IgmpConfig {
                    version: 2,
                    query_interval_cs: TGW_QUERY_INTERVAL_CS,
                    membership_interval_cs: TGW_MEMBERSHIP_CS,
                },
                TGW_MTU,
                true,
                true,
            ),
            Preset::Ovn => (
                Fabric::Vxlan,
                IgmpConfig { version: 3, query_interval_cs: OVN_QUERY_INTERVAL_CS, membership_interval_cs: OVN_IDLE_CS },
                9000,
                true,
                true,
            ),
        }
    }
}

/// `ip -batch` scripts that build a hierarchical lab, per namespace, in the
/// order they must run. Pure (no I/O) so the plan can be unit-tested.
#[derive(Debug, Default)]
pub(super) struct BuildSteps {
    /// (namespace, script) in order.
    pub steps: Vec<(String, String)>,
    /// (namespace, `bridge -batch` script): static FDB entries.
    pub fdb: Vec<(String, String)>,
    /// Last: the querier's bridge goes up (namespace, script).
    pub querier_up: (String, String),
}

/// The bridge creation line shared by every bridge of the lab.
pub(super) fn bridge_line(snooping: bool, igmp: &IgmpConfig, other_querier: bool) -> String {
    let mut s = format!(
        "link add {br} type bridge mcast_snooping {} mcast_querier 0 mcast_igmp_version {} \
         mcast_query_use_ifaddr 1 mcast_query_interval {} mcast_query_response_interval {} \
         mcast_startup_query_interval {} mcast_startup_query_count {} mcast_membership_interval {}",
        u8::from(snooping),
        igmp.version,
        igmp.query_interval_cs,
        super::QUERY_RESPONSE_INTERVAL_CS,
        super::STARTUP_QUERY_INTERVAL_CS,
        super::STARTUP_QUERY_COUNT,
        igmp.membership_interval_cs,
        br = super::BRIDGE,
    );
    if other_querier {
        let _ = write!(s, " mcast_querier_interval {}", igmp.other_querier_cs());
    }
    s
}

pub(super) fn plan(prefix: &str, spec: &LabSpec, t: &Topology) -> BuildSteps {
    let ns = |n: &str| format!("{prefix}{n}");
    let br = super::BRIDGE;
    let querier = t.querier_node();
    let receivers: Vec<String> = (1..=t.receivers()).map(|k| format!("r{k}")).collect();
    let mut p = BuildSteps::default();

    // The fabric switch first (its bridge stays down until the end when it is the querier).
    let fab = ns(t.fabric_node());
    p.steps.push((fab.clone(), fabric_steps(spec, t)));
    for k in 0..=t.hosts {
        let hns = ns(&host_name(k));
        let s = host_steps(prefix, spec, t, k, &receivers, &mut p);
        p.steps.push((hns, s));
    }

    // The fabric switch's ports (the hosts' peers) and, for the bridge fabric, the switch itself.
    let mut s = String::new();
    for k in 0..=t.hosts {
        let h = host_name(k);
        s += &format!("link set {h} master {br}\nlink set {h} up\n");
    }
    p.steps.push((fab.clone(), s));
    p.querier_up = (ns(&querier), format!("link set {br} up\n"));
    p
}

/// The fabric switch's first batch: its bridge (the multicast fabric itself, or the underlay's plain bridge).
fn fabric_steps(spec: &LabSpec, t: &Topology) -> String {
    let br = super::BRIDGE;
    let m = spec.base.mtu;
    let mut s = String::from("link set lo up\n");
    match t.fabric {
        Fabric::Bridge => {
            s += &bridge_line(spec.base.snooping, &spec.igmp, true);
            s += &format!("\nlink set {br} mtu {m}\n");
            if spec.base.querier {
                s += &format!("link set {br} type bridge mcast_querier 1\n");
            }
            s += &format!("addr add {}/{} dev {br}\n", super::node_addr(super::SWITCH, 1).unwrap(), super::SUBNET_LEN);
        }
        Fabric::Vxlan | Fabric::Ovn => {
            // The underlay carries unicast VXLAN only: a plain bridge.
            let um = m + VXLAN_OVERHEAD;
            s += &format!("link add {br} type bridge mcast_snooping 0\nlink set {br} mtu {um}\nlink set {br} up\n");
        }
    }
    s
}

/// Host `k`'s batch: its bridge, its nodes' veths and its uplink (or underlay and tunnels, their fdb entries added
/// to `p.fdb`).
fn host_steps(prefix: &str, spec: &LabSpec, t: &Topology, k: u32, receivers: &[String], p: &mut BuildSteps) -> String {
    let br = super::BRIDGE;
    let m = spec.base.mtu;
    let fab = format!("{prefix}{}", t.fabric_node());
    let querier = t.querier_node();
    let h = host_name(k);
    let mut s = String::from("link set lo up\n");
    s += &bridge_line(spec.base.snooping, &spec.igmp, true);
    s += "\n";
    if querier == h && spec.base.querier {
        s += &format!("link set {br} type bridge mcast_querier 1\n");
    }
    let nodes: Vec<&str> = std::iter::once(super::SENDER)
        .chain(receivers.iter().map(String::as_str))
        .filter(|n| t.host_of(n) == Some(k))
        .collect();
    for n in nodes {
        let nns = format!("{prefix}{n}");
        s += &format!(
            "link add {n} mtu {m} type veth peer name {} mtu {m} netns {nns}\nlink set {n} master {br}\nlink set {n} up\n",
            super::NODE_IF
        );
    }
    match t.fabric {
        Fabric::Bridge => {
            s += &format!(
                "link add {UPLINK} mtu {m} type veth peer name {h} mtu {m} netns {fab}\n\
                 link set {UPLINK} master {br}\nlink set {UPLINK} up\n"
            );
        }
        Fabric::Vxlan | Fabric::Ovn => {
            let (tunnels, fdb) = host_tunnels(spec, t, k, &fab);
            s += &tunnels;
            p.fdb.push((format!("{prefix}{h}"), fdb));
        }
    }
    s += &format!("link set {br} mtu {m}\n");
    if querier == h {
        s += &format!("addr add {}/{} dev {br}\n", super::node_addr(super::SWITCH, 1).unwrap(), super::SUBNET_LEN);
    } else {
        s += &format!("link set {br} up\n");
    }
    if k == 0 {
        // Where `Lab::open` reads the topology back from.
        s += &format!("link set {br} alias \"{}\"\n", t.encode());
    }
    s
}

/// Host `k`'s underlay link and its VXLAN tunnels to every other host, and the fdb entries those tunnels need.
fn host_tunnels(spec: &LabSpec, t: &Topology, k: u32, fab: &str) -> (String, String) {
    let br = super::BRIDGE;
    let m = spec.base.mtu;
    let um = m + VXLAN_OVERHEAD;
    let h = host_name(k);
    let me = underlay_addr(k);
    let mut s = format!(
        "link add {UNDERLAY_IF} mtu {um} type veth peer name {h} mtu {um} netns {fab}\n\
         addr add {me}/24 dev {UNDERLAY_IF}\nlink set {UNDERLAY_IF} up\n"
    );
    let mut fdb = String::new();
    for j in (0..=t.hosts).filter(|&j| j != k) {
        let port = tunnel_port(j);
        s += &format!(
            "link add {port} mtu {m} type vxlan id {} local {me} dstport {VXLAN_PORT} nolearning df set ttl 64\n\
             link set {port} master {br}\nlink set {port} type bridge_slave isolated on\nlink set {port} up\n",
            vni(k, j)
        );
        fdb += &format!("fdb append 00:00:00:00:00:00 dev {port} dst {}\n", underlay_addr(j));
    }
    (s, fdb)
}

/// Reads the topology kept in the sender host's bridge alias.
pub(super) fn read_topology(prefix: &str) -> Result<Topology> {
    let hns = format!("{prefix}{}", host_name(0));
    let v = super::ip_json(&hns, &["link", "show", "dev", super::BRIDGE])?;
    let alias = v.get(0).and_then(|l| l["ifalias"].as_str()).unwrap_or("");
    match Topology::decode(alias) {
        Some(t) => Ok(t),
        None => bail!("bridge {} in {hns} does not describe a topology (alias {alias:?})", super::BRIDGE),
    }
}

/// Whether a lab with this prefix has host namespaces (a hierarchical lab).
pub(super) fn is_hierarchical(names: &[String], prefix: &str) -> bool {
    names.iter().any(|n| n.strip_prefix(prefix).is_some_and(|r| host_index(r).is_some()))
}

/// Reads the spec of a hierarchical lab back from its live namespaces.
pub(super) fn open_spec(prefix: &str, names: &[String]) -> Result<LabSpec> {
    let t = read_topology(prefix)?;
    let mut want: Vec<String> = vec![t.fabric_node().to_string(), super::SENDER.to_string()];
    want.extend(t.host_names());
    want.extend((1..=t.receivers()).map(|k| format!("r{k}")));
    let mut want: Vec<String> = want.into_iter().map(|n| format!("{prefix}{n}")).collect();
    let mut have = names.to_vec();
    want.sort();
    have.sort();
    if want != have {
        bail!("namespaces are {} but the topology ({}) needs {}", have.join(", "), t.encode(), want.join(", "));
    }
    let q = super::status::bridge_info(&format!("{prefix}{}", t.querier_node())).context("the querier's bridge")?;
    let base = super::LabConfig {
        prefix: prefix.to_string(),
        receivers: t.receivers(),
        mtu: q.mtu,
        snooping: q.snooping,
        querier: q.querier,
    };
    let igmp = IgmpConfig {
        version: q.igmp_version as u8,
        query_interval_cs: q.query_interval_cs,
        membership_interval_cs: q.membership_interval_cs,
    };
    Ok(LabSpec { base, igmp, topology: Some(t) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(fabric: Fabric, placement: Placement) -> Topology {
        Topology { hosts: 3, per_host: 3, fabric, placement }
    }

    #[test]
    fn placement_maps_receivers_to_hosts() {
        let t = topo(Fabric::Bridge, Placement::Spread);
        let hosts: Vec<u32> = (1..=9).map(|k| t.host_of(&format!("r{k}")).unwrap()).collect();
        assert_eq!(hosts, [1, 1, 1, 2, 2, 2, 3, 3, 3]);
        assert_eq!(t.host_of("sender"), Some(0));
        assert_eq!(t.host_of("r10"), None);
        assert_eq!(t.host_of("h1"), None);
        let t = topo(Fabric::Bridge, Placement::SameHost);
        assert!((1..=9).all(|k| t.host_of(&format!("r{k}")) == Some(1)));
    }

    #[test]
    fn topology_round_trips_through_the_alias() {
        for t in [topo(Fabric::Vxlan, Placement::SameHost), topo(Fabric::Bridge, Placement::Spread)] {
            assert_eq!(Topology::decode(&t.encode()), Some(t));
        }
        assert_eq!(Topology::decode("something else"), None);
        assert_eq!(Topology::decode("mcblast-topology hosts=3 per_host=3 fabric=x placement=spread"), None);
    }

    #[test]
    fn host_names_are_exact() {
        assert_eq!(host_index("h0"), Some(0));
        assert_eq!(host_index("h12"), Some(12));
        assert_eq!(host_index("h01"), None);
        assert_eq!(host_index("h"), None);
        assert_eq!(host_index("h1x"), None);
        assert_eq!(host_index("h33"), None);
    }

    #[test]
    fn vni_is_shared_by_both_ends_and_unique_per_pair() {
        assert_eq!(vni(1, 3), vni(3, 1));
        let mut all = std::collections::BTreeSet::new();
        for a in 0..=MAX_HOSTS {
            for b in a + 1..=MAX_HOSTS {
                assert!(all.insert(vni(a, b)), "{a} {b}");
            }
        }
        assert!(all.iter().all(|&v| v < 1 << 24));
    }

    #[test]
    fn vxlan_plan_has_one_tunnel_per_remote_host_with_static_fdb() {
        let t = topo(Fabric::Vxlan, Placement::Spread);
        let spec = LabSpec {
            base: super::super::LabConfig { prefix: "x-".into(), ..Default::default() },
            igmp: IgmpConfig::default(),
            topology: Some(t),
        };
        let p = plan("x-", &spec, &t);
        let (ns, h1) = &p.steps[2];
        assert_eq!(ns, "x-h1");
        for j in [0, 2, 3] {
            assert!(h1.contains(&format!("link add vx-h{j} mtu 9000 type vxlan id {} local 10.78.0.11", vni(1, j))), "{h1}");
            assert!(h1.contains(&format!("link set vx-h{j} type bridge_slave isolated on")), "{h1}");
        }
        assert!(!h1.contains("vx-h1 "), "no tunnel to itself: {h1}");
        assert!(h1.contains("link add ul0 mtu 9050 type veth peer name h1 mtu 9050 netns x-ul"), "{h1}");
        for r in ["r1", "r2", "r3"] {
            assert!(h1.contains(&format!("link add {r} mtu 9000 type veth peer name eth0")), "{h1}");
        }
        assert!(!h1.contains("link add r4 "), "{h1}");
        let (fns, fdb) = &p.fdb[1];
        assert_eq!(fns, "x-h1");
        assert_eq!(
            fdb,
            "fdb append 00:00:00:00:00:00 dev vx-h0 dst 10.78.0.10\n\
             fdb append 00:00:00:00:00:00 dev vx-h2 dst 10.78.0.12\n\
             fdb append 00:00:00:00:00:00 dev vx-h3 dst 10.78.0.13\n"
        );
        // the sender's host is the querier, with the querier address; its bridge comes up last
        let h0 = &p.steps[1].1;
        assert!(h0.contains("mcast_querier 1") && h0.contains("addr add 10.77.0.254/24 dev br0"), "{h0}");
        assert!(!h0.contains("link set br0 up"), "{h0}");
        assert_eq!(p.querier_up, ("x-h0".to_string(), "link set br0 up\n".to_string()));
    }

    #[test]
    fn presets_match_the_platform_facts() {
        let (f, igmp, mtu, snoop, q) = Preset::Tgw.settings();
        assert_eq!((f, igmp.version, igmp.query_interval_cs, mtu, snoop, q), (Fabric::Bridge, 2, 12_000, 8500, true, true));
        assert_eq!(igmp.membership_interval_cs, 36_100);
        let (f, igmp, _, snoop, q) = Preset::Ovn.settings();
        assert_eq!((f, igmp.version, igmp.query_interval_cs, igmp.membership_interval_cs), (Fabric::Vxlan, 3, 15_000, 30_000));
        assert!(snoop && q);
        assert!(igmp.validate().is_ok());
        assert_eq!(IgmpConfig::default().membership_interval_cs, 26_000);
    }
}
