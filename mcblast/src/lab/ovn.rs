//! `--fabric ovn`: a real OVN (Open vSwitch + OVN daemons) instead of the
//! Linux-bridge approximations.
//!
//! ```text
//!  <p>ovn: ovsdb-server NB + SB, ovn-northd (unix sockets in the lab directory)
//!  <p>ul:  br0, the underlay switch (Linux bridge), 10.78.0.0/24, MTU = overlay MTU + encapsulation
//!          /        |        \
//!  <p>h0: ul0 in br-phy (netdev) 10.78.0.10     <p>hK: ... 10.78.0.(10+K)    one hypervisor per host:
//!         br-int (netdev): port `sender`               ports rK                ovsdb-server, ovs-vswitchd,
//!           |                                           |                      ovn-controller (chassis hK)
//!  <p>sender eth0 10.77.0.1                   <p>rK eth0 10.77.0.(10+K)
//! ```
//!
//! Every daemon runs inside its namespace with its own run, database and log
//! directory under `/run/mcblast-ovn/lab-<prefix>/` (`central/`, `hK/`) and a
//! pidfile there; [`stop`] (part of `lab down`) ends each by the PID in its
//! pidfile, so a lab left by a killed `mcblast` is removed completely.
//! OVS runs its userspace datapath (`datapath_type=netdev`: no kernel module
//! needed) and userspace Geneve or VXLAN tunnels; it is slow (about
//! 100-150 Mbit/s in all), right for behaviour at 1/10/100 Mbit/s, not for
//! saturation runs. One logical switch `ls0` holds a logical port per node,
//! named after it; the multicast settings are the switch's `other_config`
//! (`mcast_*`), applied with `ovn-nbctl`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::topo::{Fabric, IgmpConfig, LabSpec, Topology, UNDERLAY, UNDERLAY_IF, host_name, underlay_addr};
use super::{BRIDGE, Lab, LabError, NODE_IF, check_interrupted, ip_batch, output, run_in_ns};

/// The namespace (without prefix) of the central NB/SB databases and ovn-northd.
pub const CENTRAL: &str = "ovn";
/// The one logical switch.
pub const LSWITCH: &str = "ls0";
/// Where every lab keeps its daemons' files: `<ROOT>/lab-<prefix>/`.
pub const ROOT: &str = "/run/mcblast-ovn";
/// Geneve overhead on IPv4 with OVN's 8-byte option: outer IP 20 + UDP 8 + Geneve 8 + option 8 + inner Ethernet 14.
pub const GENEVE_OVERHEAD: u32 = 58;
/// The querier's source addresses (`mcast_ip4_src`, `mcast_eth_src`): the switch address of the other fabrics.
pub const QUERIER_MAC: &str = "0a:77:00:00:00:fe";
/// How long `lab up` waits for chassis and ports.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The daemons the lab runs; [`stop`] signals nothing else.
const DAEMONS: &[&str] = &["ovsdb-server", "ovs-vswitchd", "ovn-controller", "ovn-northd"];
/// The clients the lab runs on its daemons' sockets: bounded by [`CTL_TIMEOUT`], and
/// [`stop`] ends any left by a killed `mcblast` (found by the lab directory in their arguments).
const CLIENTS: &[&str] = &["ovs-vsctl", "ovn-nbctl", "ovn-sbctl", "ovs-appctl", "ovsdb-tool"];
/// No OVS/OVN client the lab runs waits longer (e.g. for a daemon that died).
pub const CTL_TIMEOUT: &str = "--timeout=20";

/// Tunnel encapsulation between the hypervisors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    #[default]
    Geneve,
    Vxlan,
}

impl Encap {
    pub fn as_str(self) -> &'static str {
        match self {
            Encap::Geneve => "geneve",
            Encap::Vxlan => "vxlan",
        }
    }
    /// Bytes an encapsulated frame adds on the underlay.
    pub fn overhead(self) -> u32 {
        match self {
            Encap::Geneve => GENEVE_OVERHEAD,
            Encap::Vxlan => super::VXLAN_OVERHEAD,
        }
    }
}

/// The logical switch's multicast settings (its `other_config:mcast_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvnSettings {
    pub encap: Encap,
    pub snoop: bool,
    pub querier: bool,
    pub flood_unregistered: bool,
    /// mcast_idle_timeout, seconds (OVN: 15..=3600).
    pub idle_timeout_s: u64,
    /// mcast_query_interval, seconds.
    pub query_interval_s: u64,
    pub query_max_response_s: u64,
    pub table_size: u32,
    /// Logical ports with `options:mcast_flood=true`.
    pub flood_ports: Vec<String>,
    /// Logical ports with `options:mcast_flood_reports=true`.
    pub flood_reports_ports: Vec<String>,
}

impl OvnSettings {
    /// The settings a spec implies: snooping/querier from the base settings, the
    /// query interval and membership interval (as the idle timeout) from the IGMP settings.
    pub fn from_spec(spec: &LabSpec) -> OvnSettings {
        OvnSettings {
            encap: Encap::Geneve,
            snoop: spec.base.snooping,
            querier: spec.base.querier,
            flood_unregistered: false,
            idle_timeout_s: (spec.igmp.membership_interval_cs / 100).clamp(15, 3600),
            query_interval_s: (spec.igmp.query_interval_cs / 100).clamp(1, 3600),
            query_max_response_s: 1,
            table_size: 2048,
            flood_ports: Vec::new(),
            flood_reports_ports: Vec::new(),
        }
    }

    /// Every port named by `--mcast-flood`/`--mcast-flood-reports` is a node of the topology.
    pub fn check_ports(&self, t: &Topology) -> Result<(), LabError> {
        let flags = [("--mcast-flood", &self.flood_ports), ("--mcast-flood-reports", &self.flood_reports_ports)];
        for (flag, ports) in flags {
            if let Some(p) = ports.iter().find(|p| t.host_of(p).is_none()) {
                let last = t.receivers();
                return Err(LabError::Config(format!("{flag} {p}: no such node in this lab (sender, r1..r{last})")));
            }
        }
        Ok(())
    }

    /// The `Logical_Switch_Port` options: (port, key) for each port set to true.
    pub fn port_options(&self) -> Vec<(String, &'static str)> {
        let flood = self.flood_ports.iter().map(|p| (p.clone(), "mcast_flood"));
        flood.chain(self.flood_reports_ports.iter().map(|p| (p.clone(), "mcast_flood_reports"))).collect()
    }

    /// The `ovn-nbctl set Logical_Switch` assignments, in OVN's key names.
    pub fn other_config(&self) -> Vec<(String, String)> {
        let on = |b: bool| b.to_string();
        let ip4 = super::node_addr(super::SWITCH, 1).expect("switch address").to_string();
        vec![
            ("mcast_snoop".into(), on(self.snoop)),
            ("mcast_querier".into(), on(self.querier)),
            ("mcast_ip4_src".into(), ip4),
            ("mcast_eth_src".into(), QUERIER_MAC.into()),
            ("mcast_flood_unregistered".into(), on(self.flood_unregistered)),
            ("mcast_idle_timeout".into(), self.idle_timeout_s.to_string()),
            ("mcast_query_interval".into(), self.query_interval_s.to_string()),
            ("mcast_query_max_response".into(), self.query_max_response_s.to_string()),
            ("mcast_table_size".into(), self.table_size.to_string()),
        ]
    }

    /// One line kept in the lab directory (read back by [`open_spec`]).
    fn encode(&self) -> String {
        format!(
            "encap={} snoop={} querier={} flood_unregistered={} idle={} query={} max_response={} table={} flood={} \
             flood_reports={}",
            self.encap.as_str(),
            self.snoop,
            self.querier,
            self.flood_unregistered,
            self.idle_timeout_s,
            self.query_interval_s,
            self.query_max_response_s,
            self.table_size,
            self.flood_ports.join(","),
            self.flood_reports_ports.join(",")
        )
    }

    fn decode(line: &str) -> Option<OvnSettings> {
        let kv: std::collections::HashMap<&str, &str> = line.split_whitespace().filter_map(|w| w.split_once('=')).collect();
        let b = |k: &str| kv.get(k)?.parse::<bool>().ok();
        let n = |k: &str| kv.get(k)?.parse::<u64>().ok();
        let list =
            |k: &str| kv.get(k).map_or(Vec::new(), |v| v.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect());
        Some(OvnSettings {
            encap: match *kv.get("encap")? {
                "vxlan" => Encap::Vxlan,
                "geneve" => Encap::Geneve,
                _ => return None,
            },
            snoop: b("snoop")?,
            querier: b("querier")?,
            flood_unregistered: b("flood_unregistered")?,
            idle_timeout_s: n("idle")?,
            query_interval_s: n("query")?,
            query_max_response_s: n("max_response")?,
            table_size: n("table")? as u32,
            // absent in the spec of a lab made before per-port options: none
            flood_ports: list("flood"),
            flood_reports_ports: list("flood_reports"),
        })
    }
}

/// The lab directory of a prefix (`lab-` in front, so no prefix can name `..`).
pub fn lab_dir(prefix: &str) -> PathBuf {
    Path::new(ROOT).join(format!("lab-{prefix}"))
}

fn central_dir(prefix: &str) -> PathBuf {
    lab_dir(prefix).join("central")
}

fn host_dir(prefix: &str, k: u32) -> PathBuf {
    lab_dir(prefix).join(host_name(k))
}

/// `unix:<central>/nb.sock` or `sb.sock`.
pub fn db_remote(prefix: &str, db: &str) -> String {
    format!("unix:{}", central_dir(prefix).join(format!("{db}.sock")).display())
}

/// Fails with [`LabError::MissingTool`] when an OVS/OVN program is missing.
pub fn require_tools() -> Result<(), LabError> {
    for (tool, package) in [
        ("ovsdb-server", "openvswitch-switch"),
        ("ovs-vswitchd", "openvswitch-switch"),
        ("ovs-vsctl", "openvswitch-switch"),
        ("ovn-northd", "ovn-central"),
        ("ovn-nbctl", "ovn-central"),
        ("ovn-sbctl", "ovn-central"),
        ("ovn-controller", "ovn-host"),
        ("ethtool", "ethtool"),
    ] {
        if !super::on_path(tool) {
            return Err(LabError::MissingTool { tool: tool.to_string(), package });
        }
    }
    Ok(())
}

/// Whether OVN can run here (for `--preset ovn`, which falls back to `--fabric vxlan` without it).
pub fn installed() -> bool {
    require_tools().is_ok()
}

/// `ovn-nbctl` on the lab's NB database.
pub fn nbctl(prefix: &str, args: &[&str]) -> Result<String> {
    output(Command::new("ovn-nbctl").arg(CTL_TIMEOUT).arg(format!("--db={}", db_remote(prefix, "nb"))).args(args))
}

/// `ovn-sbctl` on the lab's SB database.
pub fn sbctl(prefix: &str, args: &[&str]) -> Result<String> {
    output(Command::new("ovn-sbctl").arg(CTL_TIMEOUT).arg(format!("--db={}", db_remote(prefix, "sb"))).args(args))
}

/// `ovs-vsctl` on hypervisor K's own database.
pub fn vsctl(prefix: &str, k: u32, args: &[&str]) -> Result<String> {
    let db = host_dir(prefix, k).join("db.sock");
    output(Command::new("ovs-vsctl").arg(CTL_TIMEOUT).arg(format!("--db=unix:{}", db.display())).args(args))
}

/// Starts a daemon inside `ns` with `--detach` and a pidfile `<dir>/<name>.pid`; its
/// run/db/log directories are `dir`. Returns once it has detached (it is ready then).
fn daemon(ns: &str, dir: &Path, name: &str, prog: &str, args: &[String]) -> Result<()> {
    let d = dir.display();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, prog]).args(args).args([
        format!("--pidfile={d}/{name}.pid"),
        format!("--log-file={d}/{name}.log"),
        "--detach".into(),
        "--no-chdir".into(),
    ]);
    // ovn-controller 23.03 has no --unixctl: its control socket goes to OVN_RUNDIR.
    if prog != "ovn-controller" {
        c.arg(format!("--unixctl={d}/{name}.ctl"));
    }
    for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR", "OVN_RUNDIR", "OVN_DBDIR", "OVN_LOGDIR"] {
        c.env(var, dir);
    }
    output(&mut c).with_context(|| format!("starting {prog} in {ns} (log {d}/{name}.log)"))?;
    Ok(())
}

/// A fresh OVSDB database file from a schema.
fn create_db(file: &Path, schema: &str) -> Result<()> {
    output(Command::new("ovsdb-tool").arg("create").arg(file).arg(schema)).map(drop)
}

/// An `ovsdb-server` serving `db` at `<dir>/<name>.sock`.
fn db_server(ns: &str, dir: &Path, name: &str, db: &Path) -> Result<()> {
    let sock = format!("--remote=punix:{}/{name}.sock", dir.display());
    daemon(ns, dir, name, "ovsdb-server", &[db.display().to_string(), sock])
}

/// The central namespace's daemons: NB and SB databases and ovn-northd; then the logical switch.
fn start_central(prefix: &str, settings: &OvnSettings) -> Result<()> {
    let dir = central_dir(prefix);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ns = format!("{prefix}{CENTRAL}");
    for (name, schema) in [("nb", "/usr/share/ovn/ovn-nb.ovsschema"), ("sb", "/usr/share/ovn/ovn-sb.ovsschema")] {
        let db = dir.join(format!("{name}.db"));
        create_db(&db, schema)?;
        db_server(&ns, &dir, name, &db)?;
    }
    let args = [format!("--ovnnb-db={}", db_remote(prefix, "nb")), format!("--ovnsb-db={}", db_remote(prefix, "sb"))];
    daemon(&ns, &dir, "ovn-northd", "ovn-northd", &args)?;
    nbctl(prefix, &["ls-add", LSWITCH])?;
    apply_settings(prefix, settings)
}

/// Sets the logical switch's `other_config:mcast_*` from `settings`.
pub fn apply_settings(prefix: &str, settings: &OvnSettings) -> Result<()> {
    let mut args = vec!["set".to_string(), "Logical_Switch".into(), LSWITCH.into()];
    args.extend(settings.other_config().into_iter().map(|(k, v)| format!("other_config:{k}=\"{v}\"")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nbctl(prefix, &args).map(drop)
}

/// Sets the per-port options (`mcast_flood`, `mcast_flood_reports`) on the logical switch ports.
pub fn apply_port_options(prefix: &str, settings: &OvnSettings) -> Result<()> {
    for (port, key) in settings.port_options() {
        nbctl(prefix, &["set", "Logical_Switch_Port", &port, &format!("options:{key}=true")])?;
    }
    Ok(())
}

/// Hypervisor K: its own ovsdb-server and ovs-vswitchd, br-phy with the encap
/// address on the underlay, br-int, and ovn-controller as chassis `hK`.
fn start_hypervisor(prefix: &str, k: u32, settings: &OvnSettings, underlay_mtu: u32) -> Result<()> {
    let dir = host_dir(prefix, k);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ns = format!("{prefix}{}", host_name(k));
    let conf = dir.join("conf.db");
    create_db(&conf, "/usr/share/openvswitch/vswitch.ovsschema")?;
    db_server(&ns, &dir, "db", &conf)?;
    let ip = underlay_addr(k);
    vsctl(prefix, k, &["--no-wait", "init"])?;
    vsctl(prefix, k, &[
        "--no-wait",
        "set",
        "Open_vSwitch",
        ".",
        &format!("external_ids:system-id={}", host_name(k)),
        &format!("external_ids:hostname={}", host_name(k)),
        &format!("external_ids:ovn-remote={}", db_remote(prefix, "sb")),
        &format!("external_ids:ovn-encap-type={}", settings.encap.as_str()),
        &format!("external_ids:ovn-encap-ip={ip}"),
        "external_ids:ovn-bridge-datapath-type=netdev",
    ])?;
    let db = format!("unix:{}/db.sock", dir.display());
    daemon(&ns, &dir, "ovs-vswitchd", "ovs-vswitchd", &[db.clone()])?;
    let mtu = format!("mtu_request={underlay_mtu}");
    vsctl(prefix, k, &[
        "add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev", "--", "set", "Interface", "br-phy",
        &mtu, "--", "add-port", "br-phy", UNDERLAY_IF,
    ])?;
    vsctl(prefix, k, &[
        "add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev", "fail-mode=secure",
        "other-config:disable-in-band=true",
    ])?;
    ip_batch(&ns, &format!("addr add {ip}/24 dev br-phy\nlink set br-phy up\n"))?;
    daemon(&ns, &dir, "ovn-controller", "ovn-controller", &[db])
}

/// A node's MAC: 0a:77:00:00:00:<last octet of its address>.
pub fn node_mac(lab: &Lab, node: &str) -> String {
    format!("0a:77:00:00:00:{:02x}", lab.addr(node).octets()[3])
}

/// A node's veth into its hypervisor's br-int, and its logical switch port.
fn attach_node(lab: &Lab, node: &str, k: u32) -> Result<()> {
    let prefix = lab.prefix();
    let (hns, nns, m) = (lab.ns_name(&host_name(k)), lab.ns_name(node), lab.cfg.mtu);
    ip_batch(&hns, &format!("link add {node} mtu {m} type veth peer name {NODE_IF} mtu {m} netns {nns}\nlink set {node} up\n"))?;
    let mac = node_mac(lab, node);
    ip_batch(&nns, &format!("link set {NODE_IF} address {mac}\n"))?;
    lab.node_up(node)?;
    // Partial checksums do not survive OVS's AF_PACKET ports: checksum in the node's stack.
    output(Command::new("ip").args(["netns", "exec", &nns, "ethtool", "-K", NODE_IF, "tx", "off"]))?;
    let addrs = format!("{mac} {}", lab.addr(node));
    nbctl(prefix, &["--may-exist", "lsp-add", LSWITCH, node, "--", "lsp-set-addresses", node, &addrs])?;
    let iface = format!("external_ids:iface-id={node}");
    vsctl(prefix, k, &["add-port", "br-int", node, "--", "set", "Interface", node, &iface]).map(drop)
}

/// The underlay switch and each hypervisor's veth into it.
fn underlay(lab: &Lab, t: &Topology, mtu: u32) -> Result<()> {
    let ul = lab.ns_name(UNDERLAY);
    let mut s = format!("link set lo up\nlink add {BRIDGE} type bridge mcast_snooping 0\nlink set {BRIDGE} mtu {mtu}\n");
    for k in 0..=t.hosts {
        let (h, hns) = (host_name(k), lab.ns_name(&host_name(k)));
        ip_batch(&hns, &format!("link set lo up\nlink add {UNDERLAY_IF} mtu {mtu} type veth peer name {h} mtu {mtu} netns {ul}\nlink set {UNDERLAY_IF} up\n"))?;
        let _ = writeln!(s, "link set {h} master {BRIDGE}\nlink set {h} up");
    }
    s += &format!("link set {BRIDGE} up\n");
    ip_batch(&ul, &s)
}

impl Lab {
    /// Builds a lab with `--fabric ovn` and these settings; otherwise as [`Lab::up_spec`].
    pub fn up_ovn(spec: &LabSpec, settings: &OvnSettings) -> Result<Lab> {
        spec.validate()?;
        super::require_root()?;
        require_tools()?;
        let t = match spec.topology {
            Some(t) if t.fabric == Fabric::Ovn => t,
            _ => return Err(LabError::Config("an OVN lab needs a topology with fabric ovn".into()).into()),
        };
        settings.check_ports(&t)?;
        let cfg = &spec.base;
        super::down(&cfg.prefix).context("removing a stale lab")?;
        let lab = Lab { cfg: cfg.clone(), igmp: spec.igmp, topology: spec.topology, mcblast: None, owned: true };
        lab.build_ovn(&t, settings).with_context(|| format!("building OVN lab {}", cfg.prefix))?;
        Ok(lab)
    }

    fn build_ovn(&self, t: &Topology, settings: &OvnSettings) -> Result<()> {
        let prefix = self.prefix().to_string();
        let dir = lab_dir(&prefix);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("spec"), spec_text(&self.spec(), settings))?;
        let nodes = self.nodes();
        let mut infra = vec![CENTRAL.to_string(), UNDERLAY.to_string()];
        infra.extend(t.host_names());
        for n in infra.iter().chain(&nodes) {
            check_interrupted()?;
            output(Command::new("ip").args(["netns", "add", &self.ns_name(n)]))?;
        }
        for n in &infra {
            run_in_ns(&self.ns_name(n), super::switch_sysctls)??;
        }
        for n in &nodes {
            run_in_ns(&self.ns_name(n), super::node_sysctls)??;
        }
        let umtu = self.cfg.mtu + settings.encap.overhead();
        underlay(self, t, umtu)?;
        start_central(&prefix, settings)?;
        for k in 0..=t.hosts {
            check_interrupted()?;
            start_hypervisor(&prefix, k, settings, umtu)?;
        }
        prime_tunnel_neighbours(&prefix, t)?;
        for n in &nodes {
            check_interrupted()?;
            attach_node(self, n, t.host_of(n).expect("node of the topology"))?;
        }
        apply_port_options(&prefix, settings)?;
        wait_ready(&prefix, t, &nodes, READY_TIMEOUT)
    }
}

/// `ovs-appctl` on hypervisor K's ovs-vswitchd.
pub fn vswitchd_ctl(prefix: &str, k: u32, args: &[&str]) -> Result<String> {
    let ctl = host_dir(prefix, k).join("ovs-vswitchd.ctl");
    output(Command::new("ovs-appctl").arg(CTL_TIMEOUT).arg(format!("--target={}", ctl.display())).args(args))
}

/// OVS's userspace tunnels drop a packet whose remote endpoint's MAC is not yet in
/// its neighbour cache (it sends an ARP request instead): the first datagram to each
/// host would be lost. Every hypervisor gets every other's br-phy MAC up front, aged
/// out after an hour at the earliest (ARP traffic on the underlay refreshes them);
/// the underlay switch gets every br-phy MAC as a static FDB entry.
fn prime_tunnel_neighbours(prefix: &str, t: &Topology) -> Result<()> {
    let mut macs = Vec::new();
    for k in 0..=t.hosts {
        let v = super::ip_json(&format!("{prefix}{}", host_name(k)), &["link", "show", "dev", "br-phy"])?;
        let mac = v.get(0).and_then(|l| l["address"].as_str()).map(str::to_string);
        macs.push(mac.with_context(|| format!("no MAC on br-phy of {}", host_name(k)))?);
    }
    // The tunnels are one-way traffic the underlay switch would never learn the
    // destination of, flooding every copy to every host: static entries instead.
    let fdb: String = macs.iter().enumerate().map(|(k, mac)| format!("fdb add {mac} dev {} master static\n", host_name(k as u32))).collect();
    super::output_with_stdin(Command::new("bridge").args(["-n", &format!("{prefix}{UNDERLAY}"), "-batch", "-"]), &fdb)?;
    for k in 0..=t.hosts {
        vswitchd_ctl(prefix, k, &["tnl/neigh/aging", "3600"])?;
        for (j, mac) in macs.iter().enumerate().filter(|&(j, _)| j as u32 != k) {
            vswitchd_ctl(prefix, k, &["tnl/neigh/set", "br-phy", &underlay_addr(j as u32).to_string(), mac])?;
        }
    }
    Ok(())
}

/// Polls until every hypervisor is a registered chassis and every logical port is up
/// (bound and its flows installed); `--wait=hv` is not trusted.
fn wait_ready(prefix: &str, t: &Topology, nodes: &[String], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        check_interrupted()?;
        let chassis = sbctl(prefix, &["--bare", "--columns=name", "list", "Chassis"])?;
        let missing_chassis: Vec<String> =
            t.host_names().into_iter().filter(|h| !chassis.split_whitespace().any(|c| c == h)).collect();
        let mut down = Vec::new();
        for n in nodes {
            if nbctl(prefix, &["lsp-get-up", n]).map(|s| s.trim() != "up").unwrap_or(true) {
                down.push(n.clone());
            }
        }
        if missing_chassis.is_empty() && down.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "OVN did not become ready in {} s: chassis not registered: [{}], ports not up: [{}] (logs in {})",
                limit.as_secs(),
                missing_chassis.join(" "),
                down.join(" "),
                lab_dir(prefix).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the lab directory keeps of the spec: the topology line, the base and IGMP settings, the OVN settings.
fn spec_text(spec: &LabSpec, s: &OvnSettings) -> String {
    let t = spec.topology.expect("topology");
    let b = &spec.base;
    let ig = &spec.igmp;
    format!(
        "{}\nmtu={} snooping={} querier={} igmp_version={} query_interval_cs={} membership_interval_cs={}\n{}\n",
        t.encode(),
        b.mtu,
        b.snooping,
        b.querier,
        ig.version,
        ig.query_interval_cs,
        ig.membership_interval_cs,
        s.encode()
    )
}

fn parse_spec_text(prefix: &str, text: &str) -> Option<(LabSpec, OvnSettings)> {
    let mut lines = text.lines();
    let t = Topology::decode(lines.next()?)?;
    let kv: std::collections::HashMap<&str, &str> =
        lines.next()?.split_whitespace().filter_map(|w| w.split_once('=')).collect();
    let settings = OvnSettings::decode(lines.next()?)?;
    let n = |k: &str| kv.get(k)?.parse::<u64>().ok();
    let b = |k: &str| kv.get(k)?.parse::<bool>().ok();
    let base = super::LabConfig {
        prefix: prefix.to_string(),
        receivers: t.receivers(),
        mtu: n("mtu")? as u32,
        snooping: b("snooping")?,
        querier: b("querier")?,
    };
    let igmp = IgmpConfig {
        version: n("igmp_version")? as u8,
        query_interval_cs: n("query_interval_cs")?,
        membership_interval_cs: n("membership_interval_cs")?,
    };
    Some((LabSpec { base, igmp, topology: Some(t) }, settings))
}

/// The spec and settings of the OVN lab of this prefix, None when it is not an OVN lab.
pub fn open_spec(prefix: &str) -> Result<Option<(LabSpec, OvnSettings)>> {
    let file = lab_dir(prefix).join("spec");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    match parse_spec_text(prefix, &text) {
        Some(s) => Ok(Some(s)),
        None => bail!("{} does not describe an OVN lab: {text:?}", file.display()),
    }
}

/// Whether /proc/PID is one of our daemons (its program a known daemon, its
/// arguments naming the lab directory): a recycled PID is never signalled.
fn is_our_daemon(pid: u32, dir: &Path) -> bool {
    is_ours(pid, dir, DAEMONS)
}

/// Whether /proc/PID runs one of `progs` with the lab directory in its arguments.
fn is_ours(pid: u32, dir: &Path, progs: &[&str]) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let prog = args.first().and_then(|a| a.rsplit('/').next()).unwrap_or("");
    let dir = format!("{}/", dir.display());
    progs.contains(&prog) && args.iter().any(|a| a.contains(&dir))
}

/// Clients of this lab's daemons still running (left by a killed `mcblast`).
fn stray_clients(dir: &Path) -> Vec<u32> {
    let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    pids.filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|&p| is_ours(p, dir, CLIENTS)).collect()
}

/// Gone, or a zombie nobody reaped yet.
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).output();
}

/// The PIDs in the lab directory's pidfiles (every subdirectory).
fn pidfile_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let subdirs = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir());
    for sub in subdirs {
        for f in std::fs::read_dir(&sub).into_iter().flatten().flatten().map(|e| e.path()) {
            if f.extension().is_some_and(|e| e == "pid")
                && let Some(pid) = std::fs::read_to_string(&f).ok().and_then(|s| s.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Stops every daemon of the lab (SIGTERM, SIGKILL after 3 s) by the PID in its
/// pidfile, and any OVS/OVN client a killed `mcblast` left waiting on them, and
/// removes the lab directory. Returns how many daemons it stopped.
/// Idempotent: no directory is not an error.
pub fn stop(prefix: &str) -> Result<usize> {
    let dir = lab_dir(prefix);
    if !dir.exists() {
        return Ok(0);
    }
    let mut pids: Vec<u32> = pidfile_pids(&dir).into_iter().filter(|&p| is_our_daemon(p, &dir)).collect();
    pids.extend(stray_clients(&dir));
    for &p in &pids {
        signal(p, "-TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|&p| !is_gone(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids.iter().filter(|&&p| !is_gone(p)) {
        signal(p, "-KILL");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| !is_gone(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(p) = pids.iter().find(|&&p| !is_gone(p)) {
        bail!("OVN daemon {p} of lab {prefix} does not stop");
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    // The shared root too, once no other lab uses it (fails harmlessly while one does).
    let _ = std::fs::remove_dir(ROOT);
    Ok(pids.len())
}

/// `mcblast lab up` with `--fabric ovn`, the logical switch set up as `settings` say.
pub fn up_cmd(mut spec: LabSpec, settings: OvnSettings) -> Result<std::process::ExitCode> {
    spec.base.snooping = settings.snoop;
    spec.base.querier = settings.querier;
    crate::sys::install_stop_signals().context("installing signal handlers")?;
    let started = Instant::now();
    let lab = Lab::up_ovn(&spec, &settings)?.keep();
    let t = spec.topology.expect("topology");
    let p = lab.prefix();
    println!(
        "lab {p} is up in {:.1} s: sender {} on hypervisor h0, r1..r{} on h1..h{} ({}, {} per host), fabric ovn \
         (encap {}, underlay {p}{UNDERLAY} mtu {}, overlay mtu {}; central NB/SB + ovn-northd in {p}{CENTRAL}; files in {})",
        started.elapsed().as_secs_f64(),
        lab.addr(super::SENDER),
        t.receivers(),
        t.hosts,
        t.placement.as_str(),
        t.per_host,
        settings.encap.as_str(),
        spec.base.mtu + settings.encap.overhead(),
        spec.base.mtu,
        lab_dir(p).display(),
    );
    let kv: Vec<String> = settings.other_config().iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  logical switch {LSWITCH}: {}", kv.join(" "));
    let po: Vec<String> = settings.port_options().iter().map(|(p, k)| format!("{p}:{k}=true")).collect();
    if !po.is_empty() {
        println!("  logical switch ports: {}", po.join(" "));
    }
    println!("  note: OVS's userspace datapath carries about 100-150 Mbit/s in all: for behaviour, not saturation");
    println!("  try: mcblast lab exec r1 -- mcblast recv    |    mcblast lab status    |    mcblast lab down");
    Ok(std::process::ExitCode::SUCCESS)
}

/// `mcblast lab status` of an OVN lab: nodes and hosts, then OVN's own view.
pub fn status_cmd(lab: &Lab) -> Result<std::process::ExitCode> {
    let p = lab.prefix();
    let (spec, s) = open_spec(p)?.ok_or_else(|| LabError::NotUp { prefix: p.to_string() })?;
    let t = spec.topology.expect("topology");
    println!(
        "lab {p}: fabric ovn, encap {}, {} receiver hosts + h0, {} receivers ({}, {} per host), mtu {} (underlay {})",
        s.encap.as_str(),
        t.hosts,
        t.receivers(),
        t.placement.as_str(),
        t.per_host,
        spec.base.mtu,
        spec.base.mtu + s.encap.overhead()
    );
    for n in lab.nodes() {
        println!("  {n:<7} {:<11} on {}", lab.addr(&n).to_string(), lab.host_of(&n).unwrap_or_default());
    }
    print!("{}", lab.ovn_status()?.render());
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LabSpec {
        LabSpec {
            base: super::super::LabConfig { prefix: "x-".into(), ..Default::default() },
            igmp: IgmpConfig::default(),
            topology: Some(Topology { hosts: 3, per_host: 3, fabric: Fabric::Ovn, placement: super::super::Placement::Spread }),
        }
    }

    #[test]
    fn spec_round_trips_through_the_lab_directory() {
        let s = OvnSettings { encap: Encap::Vxlan, table_size: 7, ..OvnSettings::from_spec(&spec()) };
        let (back, settings) = parse_spec_text("x-", &spec_text(&spec(), &s)).unwrap();
        assert_eq!((back, settings), (spec(), s.clone()));
        let (flood_ports, flood_reports_ports) = (vec!["r2".into(), "sender".into()], vec!["r9".into()]);
        let p = OvnSettings { flood_ports, flood_reports_ports, ..s };
        assert_eq!(parse_spec_text("x-", &spec_text(&spec(), &p)).unwrap().1, p);
        assert!(parse_spec_text("x-", "garbage").is_none());
    }

    #[test]
    fn lab_dir_cannot_escape_the_root() {
        assert_eq!(lab_dir(".."), Path::new("/run/mcblast-ovn/lab-.."));
        assert_eq!(lab_dir("..").parent(), Some(Path::new(ROOT)));
    }
}
