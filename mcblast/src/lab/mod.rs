//! The lab: one sender and N receivers on a Linux bridge, all on one machine.
//!
//! Every part lives in a network namespace whose name starts with the lab's
//! prefix (default `mcb-`); nothing is created in the root namespace:
//!
//! ```text
//!  <prefix>sender      <prefix>r1   ...   <prefix>rN        node namespaces, each with
//!   eth0 10.77.0.1      eth0 .11          eth0 .10+N        one interface eth0 (+ lo)
//!     |                   |                 |               veth pairs
//!  [sender]             [r1]      ...     [rN]              ports named after the node
//!  +-------------------- br0 10.77.0.254 -----------------+ <prefix>sw: the switch
//! ```
//!
//! The bridge does IGMP snooping and is the IGMP querier (both switchable),
//! and sends IGMPv3 queries (1 s apart at startup, then every 125 s; hosts
//! answer within 1 s). The bridge floods every group for one query response
//! interval after its querier starts; [`Lab::up`] returns after that, so
//! snooping is in effect. Every link and the bridge share one MTU. Each
//! node routes 224.0.0.0/4 to eth0, has rp_filter off and IPv6 off (so no
//! MLD/ND noise shows up in the bridge's group table or counters).
//! With snooping on and the querier running, a group nobody joined reaches
//! no receiver port (measured on kernel 6.18: a receiver's eth0 sees only
//! the IGMP queries; `tests/e2e.rs` relies on flooding only with snooping
//! off). With snooping off, every group floods to every port.
//!
//! With emulated hosts ([`Lab::up_spec`] with a [`Topology`]; `mcblast lab
//! up --hosts/--preset`) each host is a namespace `<prefix>hK` with its own
//! bridge, the sender on `h0`, receivers on `h1`..; the hosts are joined by
//! a shared switch (`sw`) or by VXLAN over an underlay switch (`ul`): see
//! `topo.rs`. Node names, addresses and [`Lab::exec_cmd`] stay the same.
//!
//! Loss injection ([`Lab::drop_every_nth`]) is an nftables rule in the
//! switch namespace (with emulated hosts: the receiver's host), on the
//! bridge forward hook, per output port: the loss happens on the path,
//! before the receiver's driver. The nftables table is
//! created only on first use, so a lab without impairment has no netfilter
//! hook on its data path.

mod igmp;
pub mod impair;
mod nft;
pub mod ovn;
mod ovn_status;
mod status;
mod topo;
pub mod tgw;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub use igmp::IgmpListener;
pub use ovn_status::OvnStatus;
pub use tgw::{TgwDrops, TgwFlowDrop, TgwLimits};
pub use status::{BridgeStatus, HostStatus, LabStatus, MdbEntry, NodeStatus, PortLoss, TopologyStatus};
pub use topo::{
    Fabric, HOST_PREFIX, IgmpConfig, LabSpec, Placement, Preset, Topology, UNDERLAY, VXLAN_OVERHEAD,
    default_membership_cs, host_name, tunnel_port, underlay_addr,
};

/// Namespace-name prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "mcb-";
/// Environment variable the CLI reads the prefix from (for tests and parallel labs).
pub const PREFIX_ENV: &str = "MCBLAST_LAB_PREFIX";
/// The switch node (namespace `<prefix>sw`, holding the bridge). Not in [`Lab::nodes`],
/// but [`Lab::exec_cmd`] and `mcblast lab exec sw -- ...` accept it.
pub const SWITCH: &str = "sw";
/// The sender node.
pub const SENDER: &str = "sender";
/// The bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// The one interface of every node.
pub const NODE_IF: &str = "eth0";
/// The lab's private subnet (exists only inside the lab namespaces).
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
pub const SUBNET_LEN: u8 = 24;
/// Most receivers the address plan (10.77.0.11 .. 10.77.0.253) allows.
pub const MAX_RECEIVERS: u32 = 243;

/// Bridge IGMP timers, in centiseconds (the unit of the bridge's netlink API).
/// Query interval: the RFC 3376 default 125 s.
pub const QUERY_INTERVAL_CS: u64 = 12_500;
/// Startup queries 1 s apart, so memberships appear (and snooping takes effect) fast.
pub const STARTUP_QUERY_INTERVAL_CS: u64 = 100;
pub const STARTUP_QUERY_COUNT: u32 = 3;
/// Max response time hosts are told to answer queries within: 1 s instead of
/// the RFC's 10 s. The bridge also waits this long after its querier starts
/// before it trusts its group table, flooding every group until then; the
/// short value makes snooping take effect about 1 s after `lab up`.
pub const QUERY_RESPONSE_INTERVAL_CS: u64 = 100;

/// How long after its querier starts the bridge floods every group (one
/// query response interval) plus a margin; [`Lab::up`] and
/// [`Lab::restart_querier`] return only after it, so snooping is in effect.
pub const SNOOPING_SETTLE: Duration = Duration::from_millis(QUERY_RESPONSE_INTERVAL_CS * 10 + 300);

/// Errors a user can cause, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "the lab needs CAP_SYS_ADMIN and CAP_NET_ADMIN (network namespaces, bridges): run as root, e.g. sudo mcblast lab ..."
    )]
    NotRoot,
    #[error("`{tool}` not found: install the Debian package {package} (apt-get install -y {package})")]
    MissingTool { tool: String, package: &'static str },
    #[error("no lab is up (prefix {prefix}): run `mcblast lab up` first")]
    NotUp { prefix: String },
    #[error("lab {prefix} is incomplete ({detail}): run `mcblast lab down`, then `mcblast lab up`")]
    Incomplete { prefix: String, detail: String },
    #[error("no lab node {node}; nodes: {}, and {} ({})", nodes.join(", "), infra.join(", "), if infra.len() == 1 { "the switch" } else { "hosts and switches" })]
    UnknownNode { node: String, nodes: Vec<String>, infra: Vec<String> },
    #[error("invalid lab setting: {0}")]
    Config(String),
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Prefix of every namespace name (letters, digits, `-`, `_`, `.`).
    pub prefix: String,
    /// Receivers r1..rN (1..=243).
    pub receivers: u32,
    /// MTU of every link and the bridge.
    pub mtu: u32,
    /// IGMP snooping on the bridge.
    pub snooping: bool,
    /// The bridge is the IGMP querier (IGMPv3 queries).
    pub querier: bool,
}

impl Default for LabConfig {
    /// The CLI's defaults: prefix `mcb-`, 9 receivers, MTU 9000, snooping and querier on.
    fn default() -> Self {
        LabConfig { prefix: DEFAULT_PREFIX.to_string(), receivers: 9, mtu: 9000, snooping: true, querier: true }
    }
}

impl LabConfig {
    /// Checks the settings before anything is created.
    pub fn validate(&self) -> Result<(), LabError> {
        let p = &self.prefix;
        if p.is_empty() || p.len() > 40 || !p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(LabError::Config(format!(
                "prefix '{p}' must be 1..40 characters of letters, digits, '-', '_' or '.'"
            )));
        }
        if !(1..=MAX_RECEIVERS).contains(&self.receivers) {
            return Err(LabError::Config(format!("{} receivers: use 1..={MAX_RECEIVERS}", self.receivers)));
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(LabError::Config(format!("MTU {}: use 68..=65535 (e.g. 9000 or 1500)", self.mtu)));
        }
        Ok(())
    }
}

/// The prefix the CLI uses: `$MCBLAST_LAB_PREFIX`, else `mcb-`.
pub fn prefix_from_env() -> String {
    std::env::var(PREFIX_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_PREFIX.to_string())
}

/// Address of a node in a lab with `receivers` receivers: sender .1, rK .10+K,
/// the switch's bridge .254; None for a name that is not a node.
pub fn node_addr(node: &str, receivers: u32) -> Option<Ipv4Addr> {
    let host = match node {
        SENDER => 1,
        SWITCH => 254,
        _ => 10 + receiver_index(node).filter(|&k| k <= receivers)?,
    };
    let [a, b, c, _] = SUBNET.octets();
    Some(Ipv4Addr::new(a, b, c, host as u8))
}

/// K for a receiver name `rK` (K >= 1, no leading zero).
fn receiver_index(node: &str) -> Option<u32> {
    let digits = node.strip_prefix('r')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&k| (1..=MAX_RECEIVERS).contains(&k))
}

/// Whether `ns` is one of the namespaces a lab with `prefix` creates (flat:
/// switch, sender, receivers; hierarchical also hosts `hK` and the underlay `ul`).
fn is_lab_ns(prefix: &str, ns: &str) -> bool {
    ns.strip_prefix(prefix).is_some_and(|rest| {
        rest == SWITCH
            || rest == SENDER
            || rest == topo::UNDERLAY
            || rest == ovn::CENTRAL
            || receiver_index(rest).is_some()
            || topo::host_index(rest).is_some()
    })
}

/// A running lab. One returned by [`Lab::up`] is a guard: dropping it removes
/// the whole lab (also when a test panics), unless [`Lab::keep`] was called.
/// One returned by [`Lab::open`] never removes anything.
#[derive(Debug)]
pub struct Lab {
    cfg: LabConfig,
    igmp: IgmpConfig,
    topology: Option<Topology>,
    mcblast: Option<PathBuf>,
    owned: bool,
}

impl Lab {
    /// Builds a lab. Removes a stale lab of the same prefix first; on any
    /// failure midway removes what it made. Returns once snooping is in
    /// effect (about 1.3 s). The lab is removed again when the returned
    /// value is dropped, unless [`Lab::keep`] is called.
    pub fn up(cfg: &LabConfig) -> Result<Lab> {
        Lab::up_spec(&LabSpec::from(cfg.clone()))
    }

    /// Builds a lab from a full spec: the flat lab with other IGMP settings,
    /// or emulated hosts joined by a fabric (see [`Topology`]). Same
    /// guarantees as [`Lab::up`].
    pub fn up_spec(spec: &LabSpec) -> Result<Lab> {
        if spec.topology.is_some_and(|t| t.fabric == Fabric::Ovn) {
            return Lab::up_ovn(spec, &ovn::OvnSettings::from_spec(spec));
        }
        spec.validate()?;
        require_root()?;
        let cfg = &spec.base;
        down(&cfg.prefix).context("removing a stale lab")?;
        let lab = Lab { cfg: cfg.clone(), igmp: spec.igmp, topology: spec.topology, mcblast: None, owned: true };
        let built = match &spec.topology {
            None => lab.build(),
            Some(t) => lab.build_hierarchical(t),
        };
        built.with_context(|| format!("building lab {}", cfg.prefix))?;
        Ok(lab)
    }

    /// The lab that is up with this prefix (e.g. made by `mcblast lab up`);
    /// its settings are read back from the bridge. Dropping it removes nothing.
    pub fn open(prefix: &str) -> Result<Lab> {
        require_root()?;
        let names = lab_namespaces(prefix)?;
        let has = |n: &str| names.iter().any(|ns| ns.strip_prefix(prefix) == Some(n));
        if names.is_empty() {
            return Err(LabError::NotUp { prefix: prefix.to_string() }.into());
        }
        let incomplete = |detail: String| LabError::Incomplete { prefix: prefix.to_string(), detail };
        if let Some((spec, _)) = ovn::open_spec(prefix).map_err(|e| incomplete(format!("{e:#}")))? {
            return Ok(Lab { cfg: spec.base, igmp: spec.igmp, topology: spec.topology, mcblast: None, owned: false });
        }
        if topo::is_hierarchical(&names, prefix) {
            let spec = topo::open_spec(prefix, &names).map_err(|e| incomplete(format!("{e:#}")))?;
            return Ok(Lab {
                cfg: spec.base,
                igmp: spec.igmp,
                topology: spec.topology,
                mcblast: None,
                owned: false,
            });
        }
        for n in [SWITCH, SENDER] {
            if !has(n) {
                return Err(incomplete(format!("namespace {prefix}{n} is missing")).into());
            }
        }
        let receivers = (1..=MAX_RECEIVERS).take_while(|k| has(&format!("r{k}"))).count() as u32;
        let extra = names.len() as u32 - 2 - receivers;
        if receivers == 0 || extra != 0 {
            return Err(incomplete(format!("receiver namespaces are not r1..rN: {}", names.join(", "))).into());
        }
        let sw = format!("{prefix}{SWITCH}");
        let info = status::bridge_info(&sw).map_err(|e| incomplete(format!("{e:#}")))?;
        let cfg = LabConfig {
            prefix: prefix.to_string(),
            receivers,
            mtu: info.mtu,
            snooping: info.snooping,
            querier: info.querier,
        };
        let igmp = IgmpConfig {
            version: info.igmp_version as u8,
            query_interval_cs: info.query_interval_cs,
            membership_interval_cs: info.membership_interval_cs,
        };
        Ok(Lab { cfg, igmp, topology: None, mcblast: None, owned: false })
    }

    /// Leaves the lab running when this value is dropped (for `mcblast lab up`).
    pub fn keep(mut self) -> Lab {
        self.owned = false;
        self
    }

    /// The program [`Lab::exec_cmd`] runs for argv[0] `mcblast` (default: this
    /// executable; integration tests pass `env!("CARGO_BIN_EXE_mcblast")`).
    pub fn with_mcblast(mut self, path: impl Into<PathBuf>) -> Lab {
        self.mcblast = Some(path.into());
        self
    }

    /// Removes the lab now.
    pub fn down(mut self) -> Result<()> {
        self.owned = false;
        down(&self.cfg.prefix)
    }

    pub fn config(&self) -> &LabConfig {
        &self.cfg
    }

    /// The IGMP settings of the lab's bridges.
    pub fn igmp(&self) -> &IgmpConfig {
        &self.igmp
    }

    /// The emulated hosts, or None for the flat lab.
    pub fn topology(&self) -> Option<&Topology> {
        self.topology.as_ref()
    }

    /// The whole spec (what [`Lab::up_spec`] would build again).
    pub fn spec(&self) -> LabSpec {
        LabSpec { base: self.cfg.clone(), igmp: self.igmp, topology: self.topology }
    }

    /// The namespace holding the bridge port a node (`sender`, `rK`) hangs
    /// off: the switch in the flat lab, the node's host otherwise.
    pub fn access_ns(&self, node: &str) -> String {
        match self.topology.as_ref().and_then(|t| t.host_of(node)) {
            Some(k) => self.ns_name(&host_name(k)),
            None => self.ns_name(SWITCH),
        }
    }

    /// The host a node lives on (`h0` for the sender), None in the flat lab.
    pub fn host_of(&self, node: &str) -> Option<String> {
        self.topology.as_ref()?.host_of(node).map(host_name)
    }

    /// The node (without prefix) whose bridge is the IGMP querier: `sw`, or
    /// `h0` with the VXLAN fabric.
    pub fn querier_node(&self) -> String {
        self.topology.as_ref().map_or(SWITCH.to_string(), |t| t.querier_node())
    }

    /// Namespaces that are not nodes but that `exec` accepts: `sw` in the
    /// flat lab; hosts and the fabric switch otherwise.
    pub fn infra_nodes(&self) -> Vec<String> {
        match &self.topology {
            None => vec![SWITCH.to_string()],
            Some(t) => {
                let mut v = t.host_names();
                v.push(t.fabric_node().to_string());
                if t.fabric == Fabric::Ovn {
                    v.push(ovn::CENTRAL.to_string());
                }
                v
            }
        }
    }

    pub fn prefix(&self) -> &str {
        &self.cfg.prefix
    }

    /// The namespace of a node (`sender`, `rK`, or `sw`): prefix + node.
    pub fn ns_name(&self, node: &str) -> String {
        format!("{}{node}", self.cfg.prefix)
    }

    /// The address of a node's eth0 (the bridge's for `sw`).
    ///
    /// # Panics
    /// When `node` is not a node of this lab; check user input with [`Lab::check_node`].
    pub fn addr(&self, node: &str) -> Ipv4Addr {
        node_addr(node, self.cfg.receivers).unwrap_or_else(|| panic!("{}", self.unknown(node)))
    }

    /// `sender`, `r1` .. `rN`.
    pub fn nodes(&self) -> Vec<String> {
        let mut v = vec![SENDER.to_string()];
        v.extend(self.receivers());
        v
    }

    /// `r1` .. `rN`.
    pub fn receivers(&self) -> Vec<String> {
        (1..=self.cfg.receivers).map(|k| format!("r{k}")).collect()
    }

    fn unknown(&self, node: &str) -> LabError {
        LabError::UnknownNode { node: node.to_string(), nodes: self.nodes(), infra: self.infra_nodes() }
    }

    /// Ok for a node of this lab, or a host or switch namespace (`sw`;
    /// `h0`.. and `ul` with emulated hosts); otherwise an error listing them.
    pub fn check_node(&self, node: &str) -> Result<(), LabError> {
        if self.infra_nodes().iter().any(|n| n == node)
            || (node != SWITCH && node_addr(node, self.cfg.receivers).is_some())
        {
            Ok(())
        } else {
            Err(self.unknown(node))
        }
    }

    /// `ip netns exec <ns> argv...`, not yet started. An argv[0] of `mcblast`
    /// becomes the program set with [`Lab::with_mcblast`] (default: this executable).
    pub fn exec_cmd<S: AsRef<OsStr>>(&self, node: &str, argv: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(self.ns_name(node));
        for (i, a) in argv.iter().enumerate() {
            if i == 0 && a.as_ref() == "mcblast" {
                c.arg(self.mcblast_path());
            } else {
                c.arg(a);
            }
        }
        c
    }

    fn mcblast_path(&self) -> PathBuf {
        self.mcblast.clone().or_else(|| std::env::current_exe().ok()).unwrap_or_else(|| PathBuf::from("mcblast"))
    }

    /// Runs `f` on a new thread inside a node's network namespace (sockets it
    /// opens belong to the node). Returns once the thread is inside.
    pub fn spawn<T, F>(&self, node: &str, f: F) -> Result<NodeThread<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.check_node(node)?;
        spawn_in_ns(&self.ns_name(node), f)
    }

    /// Runs `f` inside a node's network namespace and waits for its result.
    pub fn run_in<T, F>(&self, node: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        Ok(self.spawn(node, f)?.join())
    }

    /// Makes the bridge send a fresh round of startup general queries now
    /// (toggles `mcast_querier`), and returns once snooping is in effect
    /// again ([`SNOOPING_SETTLE`]). Fails when the lab's querier is off.
    pub fn restart_querier(&self) -> Result<()> {
        if !self.cfg.querier {
            bail!("the querier of lab {} is off: use `mcblast lab up --querier on`", self.cfg.prefix);
        }
        let sw = self.ns_name(&self.querier_node());
        ip_batch(
            &sw,
            &format!("link set {BRIDGE} type bridge mcast_querier 0\nlink set {BRIDGE} type bridge mcast_querier 1\n"),
        )?;
        std::thread::sleep(SNOOPING_SETTLE);
        Ok(())
    }

    fn build(&self) -> Result<()> {
        let cfg = &self.cfg;
        let sw = self.ns_name(SWITCH);
        let nodes = self.nodes();

        // Namespaces, with their sysctls set before any interface exists so
        // every interface inherits the `default` values.
        let mut all = vec![sw.clone()];
        all.extend(nodes.iter().map(|n| self.ns_name(n)));
        for ns in &all {
            check_interrupted()?;
            output(Command::new("ip").args(["netns", "add", ns]))?;
        }
        run_in_ns(&sw, switch_sysctls)??;
        for n in &nodes {
            check_interrupted()?;
            run_in_ns(&self.ns_name(n), node_sysctls)??;
        }

        // The switch: bridge, one veth per node (the peer lands in the node as
        // eth0), MTU everywhere. The bridge goes up last, so its startup
        // queries reach every port.
        let mut b = String::new();
        let _ = writeln!(b, "link set lo up");
        // The querier is switched on in a second step, after the timers are
        // set: enabling it starts the bridge's "wait one query response
        // interval before trusting the group table" delay with whatever
        // response interval is set at that moment (the 10 s default if both
        // come in one netlink message).
        let _ = writeln!(b, "{}", topo::bridge_line(cfg.snooping, &self.igmp, false));
        if cfg.querier {
            let _ = writeln!(b, "link set {BRIDGE} type bridge mcast_querier 1");
        }
        for n in &nodes {
            let ns = self.ns_name(n);
            let m = cfg.mtu;
            let _ = writeln!(b, "link add {n} mtu {m} type veth peer name {NODE_IF} mtu {m} netns {ns}");
            let _ = writeln!(b, "link set {n} master {BRIDGE}");
            let _ = writeln!(b, "link set {n} up");
        }
        let _ = writeln!(b, "link set {BRIDGE} mtu {}", cfg.mtu);
        let _ = writeln!(b, "addr add {}/{SUBNET_LEN} dev {BRIDGE}", self.addr(SWITCH));
        let _ = writeln!(b, "link set {BRIDGE} up");
        check_interrupted()?;
        ip_batch(&sw, &b)?;
        let querier_started = Instant::now();

        for n in &nodes {
            check_interrupted()?;
            self.node_up(n)?;
        }
        if cfg.querier && cfg.snooping {
            std::thread::sleep(SNOOPING_SETTLE.saturating_sub(querier_started.elapsed()));
        }
        Ok(())
    }

    /// Brings a node's eth0 up with its address and the multicast route
    /// (once its veth end is in the namespace), and forces IGMPv2 if asked.
    fn node_up(&self, node: &str) -> Result<()> {
        let script = format!(
            "link set lo up\nlink set {NODE_IF} up\naddr add {}/{SUBNET_LEN} dev {NODE_IF}\n\
             route add 224.0.0.0/4 dev {NODE_IF}\n",
            self.addr(node)
        );
        ip_batch(&self.ns_name(node), &script)?;
        self.force_igmp(node)
    }

    /// Sysctls of a node namespace: the common ones, and with IGMPv2 the
    /// node's eth0 forced to IGMPv2 (called once eth0 exists).
    fn force_igmp(&self, node: &str) -> Result<()> {
        if self.igmp.version == 2 {
            run_in_ns(&self.ns_name(node), || sysctl("net.ipv4.conf.eth0.force_igmp_version", "2", false))??;
        }
        Ok(())
    }

    fn build_hierarchical(&self, t: &Topology) -> Result<()> {
        let cfg = &self.cfg;
        let nodes = self.nodes();
        let mut infra = vec![t.fabric_node().to_string()];
        infra.extend(t.host_names());
        for n in infra.iter().chain(&nodes) {
            check_interrupted()?;
            output(Command::new("ip").args(["netns", "add", &self.ns_name(n)]))?;
        }
        for n in &infra {
            check_interrupted()?;
            run_in_ns(&self.ns_name(n), switch_sysctls)??;
        }
        for n in &nodes {
            check_interrupted()?;
            run_in_ns(&self.ns_name(n), node_sysctls)??;
        }
        let plan = topo::plan(&cfg.prefix, &self.spec(), t);
        for (ns, script) in &plan.steps {
            check_interrupted()?;
            ip_batch(ns, script)?;
        }
        for (ns, script) in &plan.fdb {
            check_interrupted()?;
            output_with_stdin(Command::new("bridge").args(["-n", ns, "-batch", "-"]), script)?;
        }
        for n in &nodes {
            check_interrupted()?;
            self.node_up(n)?;
        }
        // The querier's bridge last, so its startup queries reach every host and node.
        check_interrupted()?;
        ip_batch(&plan.querier_up.0, &plan.querier_up.1)?;
        if cfg.querier && cfg.snooping {
            std::thread::sleep(SNOOPING_SETTLE);
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = down(&self.cfg.prefix)
        {
            eprintln!("mcblast: removing lab {}: {e:#}", self.cfg.prefix);
        }
    }
}

/// A thread running inside a lab node's network namespace.
pub struct NodeThread<T> {
    handle: JoinHandle<Option<T>>,
}

impl<T> NodeThread<T> {
    /// Waits for the thread; a panic in it is resumed here.
    pub fn join(self) -> T {
        match self.handle.join() {
            Ok(Some(v)) => v,
            // spawn_in_ns returns an error instead of a NodeThread when setns fails.
            Ok(None) => unreachable!("node thread never entered its namespace"),
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

fn spawn_in_ns<T, F>(ns: &str, f: F) -> Result<NodeThread<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = netns_path(ns);
    let file = File::open(&path).with_context(|| format!("network namespace {ns} ({})", path.display()))?;
    let (tx, rx) = mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(format!("lab {ns}"))
        .spawn(move || match crate::sys::setns_net(file.as_fd()) {
            Ok(()) => {
                drop(file);
                let _ = tx.send(Ok(()));
                Some(f())
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
        })
        .context("spawning a thread")?;
    match rx.recv() {
        Ok(Ok(())) => Ok(NodeThread { handle }),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(anyhow!(e).context(format!("entering network namespace {ns}")))
        }
        Err(_) => {
            let _ = handle.join();
            bail!("thread for network namespace {ns} died before entering it")
        }
    }
}

fn run_in_ns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Ok(spawn_in_ns(ns, f)?.join())
}

/// Writes a sysctl of the calling thread's network namespace (/proc/sys/net
/// follows the thread's namespace).
fn sysctl(key: &str, value: &str, optional: bool) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    match std::fs::write(&path, value) {
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.with_context(|| format!("sysctl {key}={value}")),
    }
}

fn no_ipv6() -> Result<()> {
    // Optional: absent when the kernel has no IPv6.
    sysctl("net.ipv6.conf.all.disable_ipv6", "1", true)?;
    sysctl("net.ipv6.conf.default.disable_ipv6", "1", true)
}

fn switch_sysctls() -> Result<()> {
    no_ipv6()?;
    // If br_netfilter is loaded, keep bridged traffic out of iptables.
    for t in ["iptables", "ip6tables", "arptables"] {
        sysctl(&format!("net.bridge.bridge-nf-call-{t}"), "0", true)?;
    }
    Ok(())
}

fn node_sysctls() -> Result<()> {
    no_ipv6()?;
    for scope in ["all", "default"] {
        sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0", false)?;
    }
    // A receiver may join many groups (flows spread over groups); the default is 20.
    sysctl("net.ipv4.igmp_max_memberships", "1024", false)
}

fn check_interrupted() -> Result<()> {
    if crate::sys::stop_requested() {
        bail!("interrupted");
    }
    Ok(())
}

/// Fails with [`LabError::NotRoot`] without CAP_SYS_ADMIN and CAP_NET_ADMIN,
/// and with [`LabError::MissingTool`] without `ip` and `bridge` (iproute2).
pub fn require_root() -> Result<(), LabError> {
    if !crate::netns::privileged() {
        return Err(LabError::NotRoot);
    }
    require_tool("ip")?;
    require_tool("bridge")
}

/// The Debian package that provides a tool the lab runs.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "nft" => "nftables",
        "python3" => "python3",
        _ => "iproute2",
    }
}

/// Whether a program is on PATH (for tools run through `ip netns exec`,
/// whose absence `ip` would only report as a failed exec).
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool)).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

fn require_tool(tool: &str) -> Result<(), LabError> {
    if on_path(tool) {
        Ok(())
    } else {
        Err(LabError::MissingTool { tool: tool.to_string(), package: package_of(tool) })
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Why `cmd` could not be started: a missing tool names its package.
pub fn spawn_error(cmd: &Command, e: std::io::Error) -> anyhow::Error {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    if e.kind() == std::io::ErrorKind::NotFound {
        LabError::MissingTool { package: package_of(&prog), tool: prog }.into()
    } else {
        anyhow!(e).context(format!("cannot run {prog}"))
    }
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| spawn_error(cmd, e))?;
    if !out.status.success() {
        bail!("{} failed: {}", describe(cmd), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with `input` on stdin; its stdout, or an error with its stderr.
fn output_with_stdin(cmd: &mut Command, input: &str) -> Result<String> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(cmd, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).with_context(|| format!("writing to {}", describe(cmd)))?;
    }
    let out = child.wait_with_output().with_context(|| format!("waiting for {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\ninput was:\n{}",
            describe(cmd),
            String::from_utf8_lossy(&out.stderr).trim(),
            input.trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip` commands (one per line) in a namespace, stopping at the first failure.
fn ip_batch(ns: &str, script: &str) -> Result<()> {
    output_with_stdin(Command::new("ip").args(["-n", ns, "-batch", "-"]), script).map(|_| ())
}

/// Runs `ip -j ...` in a namespace and parses its JSON.
fn ip_json(ns: &str, args: &[&str]) -> Result<serde_json::Value> {
    let text = output(Command::new("ip").args(["-n", ns, "-j"]).args(args))?;
    parse_json(&text).with_context(|| format!("output of ip -n {ns} -j {}", args.join(" ")))
}

fn parse_json(text: &str) -> Result<serde_json::Value> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Array(vec![]));
    }
    Ok(serde_json::from_str(text)?)
}

/// All network namespace names (`ip netns list`).
fn all_namespaces() -> Result<Vec<String>> {
    let text = output(Command::new("ip").args(["netns", "list"]))?;
    Ok(text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

/// The namespaces of the lab with this prefix, sorted (switch, sender, r1..).
fn lab_namespaces(prefix: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = all_namespaces()?.into_iter().filter(|ns| is_lab_ns(prefix, ns)).collect();
    let rank = |ns: &String| match &ns[prefix.len()..] {
        SWITCH | topo::UNDERLAY => (0, 0),
        h if topo::host_index(h).is_some() => (1, topo::host_index(h).unwrap_or(0)),
        SENDER => (2, 0),
        r => (3, receiver_index(r).unwrap_or(u32::MAX)),
    };
    v.sort_by_key(rank);
    Ok(v)
}

/// Removes every namespace of the lab with this prefix — a whole lab or the
/// leftovers of a crashed run. Idempotent: no lab is not an error.
pub fn down(prefix: &str) -> Result<()> {
    down_counted(prefix).map(|_| ())
}

/// [`down`], returning how many namespaces it removed. The lab's
/// impairments (pinned eBPF programs, see [`impair`]) go first.
pub fn down_counted(prefix: &str) -> Result<usize> {
    require_root()?;
    impair::remove_all(prefix).context("removing the lab's impairments")?;
    // OVN's daemons first (by their pidfiles), or they would keep the namespaces alive.
    ovn::stop(prefix).context("stopping the lab's OVN daemons")?;
    let names = lab_namespaces(prefix)?;
    for ns in &names {
        // A process still inside keeps the namespace (and its interfaces)
        // alive after `ip netns del`; delete the interfaces themselves so the
        // lab's data path is gone either way, and say who holds it.
        let pids = output(Command::new("ip").args(["netns", "pids", ns])).unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            if let Ok(links) = ip_json(ns, &["link", "show"]) {
                let script: String = links
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["ifname"].as_str())
                    .filter(|n| *n != "lo")
                    .map(|n| format!("link del {n}\n"))
                    .collect();
                if !script.is_empty() {
                    let _ = Command::new("ip")
                        .args(["-n", ns, "-force", "-batch", "-"])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .and_then(|mut c| {
                            if let Some(mut i) = c.stdin.take() {
                                let _ = i.write_all(script.as_bytes());
                            }
                            c.wait()
                        });
                }
            }
            eprintln!(
                "mcblast: note: processes {} are still inside {ns}; it disappears when they exit",
                pids.join(", ")
            );
        }
        let out = Command::new("ip")
            .args(["netns", "del", ns])
            .output()
            .map_err(|e| spawn_error(Command::new("ip").args(["netns", "del", ns]), e))?;
        if !out.status.success() && netns_path(ns).exists() {
            bail!("ip netns del {ns} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    let left = lab_namespaces(prefix)?;
    if !left.is_empty() {
        bail!("lab namespaces still present after removal: {}", left.join(", "));
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan() {
        assert_eq!(node_addr("sender", 3), Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(node_addr("r1", 3), Some(Ipv4Addr::new(10, 77, 0, 11)));
        assert_eq!(node_addr("r3", 3), Some(Ipv4Addr::new(10, 77, 0, 13)));
        assert_eq!(node_addr("r4", 3), None);
        assert_eq!(node_addr("r0", 3), None);
        assert_eq!(node_addr("r01", 3), None);
        assert_eq!(node_addr("sw", 3), Some(Ipv4Addr::new(10, 77, 0, 254)));
        assert_eq!(node_addr("r243", 243), Some(Ipv4Addr::new(10, 77, 0, 253)));
        assert_eq!(node_addr("x", 3), None);
    }

    #[test]
    fn lab_namespace_names_are_recognised_exactly() {
        assert!(is_lab_ns("mcb-", "mcb-sw"));
        assert!(is_lab_ns("mcb-", "mcb-sender"));
        assert!(is_lab_ns("mcb-", "mcb-r12"));
        // another lab whose prefix extends ours is not ours
        assert!(!is_lab_ns("mcb-", "mcb-x-sender"));
        assert!(!is_lab_ns("mcb-", "mcb-r1x"));
        assert!(!is_lab_ns("mcb-", "other"));
    }

    #[test]
    fn config_validation() {
        assert!(LabConfig::default().validate().is_ok());
        let bad = |f: fn(&mut LabConfig)| {
            let mut c = LabConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.prefix = "a/b".into()).contains("prefix"));
        assert!(bad(|c| c.prefix.clear()).contains("prefix"));
        assert!(bad(|c| c.receivers = 0).contains("receivers"));
        assert!(bad(|c| c.receivers = 244).contains("receivers"));
        assert!(bad(|c| c.mtu = 10).contains("MTU"));
    }

    #[test]
    fn unknown_node_error_lists_nodes() {
        let lab = Lab {
            cfg: LabConfig { receivers: 2, ..Default::default() },
            igmp: IgmpConfig::default(),
            topology: None,
            mcblast: None,
            owned: false,
        };
        let e = lab.check_node("r9").unwrap_err().to_string();
        assert_eq!(e, "no lab node r9; nodes: sender, r1, r2, and sw (the switch)");
        assert!(lab.check_node("r2").is_ok());
        assert!(lab.check_node("sw").is_ok());
    }

    #[test]
    fn exec_cmd_substitutes_mcblast_only_as_program() {
        let lab = Lab { cfg: LabConfig::default(), igmp: IgmpConfig::default(), topology: None, mcblast: None, owned: false }.with_mcblast("/x/mcblast-bin");
        let c = lab.exec_cmd("r1", &["mcblast", "recv", "mcblast"]);
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["netns", "exec", "mcb-r1", "/x/mcblast-bin", "recv", "mcblast"]);
    }

    #[test]
    fn missing_tool_names_the_package() {
        let e = output(&mut Command::new("mcblast-no-such-tool")).unwrap_err().to_string();
        assert!(e.starts_with("`mcblast-no-such-tool` not found: install the Debian package"), "{e}");
        assert_eq!(package_of("nft"), "nftables");
        assert_eq!(package_of("ip"), "iproute2");
        assert_eq!(package_of("bridge"), "iproute2");
        let e = LabError::MissingTool { tool: "nft".into(), package: package_of("nft") }.to_string();
        assert_eq!(e, "`nft` not found: install the Debian package nftables (apt-get install -y nftables)");
    }
}
