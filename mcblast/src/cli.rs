//! Command-line flags (what the user typed): the clap types, their value
//! parsers and `--help`. Nothing here names the rest of the crate; each
//! command (`commands/`) turns its flags into its domain's resolved plan
//! before doing anything, so every error a user can cause is reported once,
//! up front, in one line.

use std::net::Ipv4Addr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "mcblast",
    version = env!("MCBLAST_VERSION"),
    about = "Multicast saturation tester: line-rate sender, in-kernel per-flow counter, loss attribution",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send multicast datagrams with mcblast headers.
    Send(SendArgs),
    /// Join group(s) and count every flow in the kernel (eBPF) and/or a socket.
    Recv(RecvArgs),
    /// The network-namespace lab: one sender and N receivers on a bridge.
    #[command(subcommand)]
    Lab(LabCommand),
    /// What this machine and interface support: io_uring, UDP GSO, AF_XDP, XDP, BTF, drop reasons, and the engine auto picks.
    Probe(ProbeArgs),
    /// Run a test plan (TOML: lab or hosts, loads, matrix, repeats) on the lab or on real hosts over ssh; CSVs of every run and mean/sd per case.
    Run(RunArgs),
    /// Check this host before a test: MTU, IGMP version, rp_filter, buffers, clock, XDP; each finding with its fix.
    Preflight(PreflightArgs),
    /// report.html of a run directory (plots, comparison table), two runs side by side (--compare),
    /// or receivers' --json outputs merged: receiver × interval loss matrix, each lost datagram common/partial/unique.
    Report(ReportArgs),
    /// Cleans up after a `mcblast run` that was killed (started by the run itself).
    #[command(name = "run-reaper", hide = true)]
    RunReaper(ReaperArgs),
    /// For packagers: man pages and shell completions, from this command-line definition.
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

/// `mcblast generate ...` (hidden): what a package installs beside the binary.
#[derive(Subcommand, Debug, Clone)]
pub enum GenerateCommand {
    /// Write the man pages (roff), mcblast.1 and one per subcommand (mcblast-recv.1, ...), into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// Print the completion script for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// A run directory `mcblast run` wrote (two with --compare: RUN_A RUN_B), or the outputs of
    /// `mcblast recv --json` (one file per receiver, named by its stem) and optionally the
    /// sender's `mcblast send --json` output, to merge.
    #[arg(value_name = "RUN_DIR | FILE.jsonl", required = true)]
    pub inputs: Vec<std::path::PathBuf>,
    /// Put two runs side by side (e.g. OVN vs TGW): cases matched by their parameters, with deltas.
    #[arg(long)]
    pub compare: bool,
    /// Platform label of a compared run: A=NAME or B=NAME (default: the plan's preset or fabric, else the directory name).
    #[arg(long, value_name = "A=NAME")]
    pub label: Vec<String>,
    /// Output file (default RUN_DIR/report.html; compare.html with --compare).
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// Merging receivers' files: the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PreflightArgs {
    /// Interface to check (default: the one the route to the first group uses).
    #[arg(short = 'I', long = "interface", value_name = "IF")]
    pub interface: Option<String>,
    /// Multicast group (repeat for several).
    #[arg(short = 'g', long = "group", default_value = "239.0.0.1", value_name = "ADDR")]
    pub groups: Vec<Ipv4Addr>,
    /// UDP port the test uses.
    #[arg(short = 'p', long, default_value_t = 5001)]
    pub port: u16,
    /// Datagram length the test sends (as send -l).
    #[arg(short = 'l', long, default_value_t = 8192)]
    pub length: usize,
    /// Rate of the test in bit/s (k/M/G), for the socket buffer sizes.
    #[arg(short = 'b', long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Which side this host plays.
    #[arg(long, value_enum, default_value_t = PreflightRoleArg::Both)]
    pub role: PreflightRoleArg,
    /// The IGMP version the path speaks: 2 for AWS TGW (checks force_igmp_version).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub igmp_version: Option<u8>,
    /// JSON output (one line).
    #[arg(long)]
    pub json: bool,
}

/// `preflight --role`: which side this host plays (`check::preflight::PreflightRole`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightRoleArg {
    Send,
    Recv,
    Both,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The plan file (TOML), e.g. examples/seed-matrix.toml (lab) or examples/three-hosts.toml (ssh).
    #[arg(value_name = "PLAN.toml")]
    pub plan: std::path::PathBuf,
    /// Use the plan's [profile.quick]: shorter runs, fewer repeats.
    #[arg(long)]
    pub quick: bool,
    /// Directory for the results (default runs/<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// [hosts] plans: copy this binary over ssh to every host that lacks this build
    /// (into mcblast_deploy_dir, default ~/.cache/mcblast/VERSION/) and run it there.
    #[arg(long)]
    pub deploy: bool,
}

/// `mcblast run`'s reaper (hidden): waits for the run to end; if it ends
/// without saying so (killed), stops what the run started and removes its lab.
#[derive(Args, Debug, Clone)]
pub struct ReaperArgs {
    /// The namespace prefix of the run's labs.
    #[arg(long, value_name = "PREFIX")]
    pub lab_prefix: Option<String>,
    /// The run's process id (for the message).
    #[arg(long, value_name = "PID")]
    pub parent: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Interface to check (XDP, checksum offload, MTU).
    #[arg(short = 'I', long = "interface", value_name = "IF")]
    pub interface: Option<String>,
    /// One JSON line ({"type":"probe",...}) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags `send` and `recv` share.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Multicast group (repeat for several).
    #[arg(short = 'g', long = "group", default_value = "239.0.0.1", value_name = "ADDR")]
    pub groups: Vec<Ipv4Addr>,
    /// UDP destination port.
    #[arg(short = 'p', long, default_value_t = 5001)]
    pub port: u16,
    /// Interface (default: the one the route to the first group uses).
    #[arg(short = 'I', long = "interface", value_name = "IF")]
    pub interface: Option<String>,
    /// Seconds between interval reports (0 = none).
    #[arg(short = 'i', long, default_value_t = 1.0, value_name = "SECS")]
    pub interval: f64,
    /// JSON Lines output (one object per line) instead of human text.
    #[arg(long)]
    pub json: bool,
    /// Serve live counters in the Prometheus text format at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub prometheus: Option<std::net::SocketAddr>,
    /// Stop (as on Ctrl-C) when standard input ends: `mcblast run` keeps it open while it lives.
    #[arg(long, hide = true)]
    pub stop_on_stdin_eof: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    #[command(flatten)]
    pub common: Common,
    /// Engine: socket (one sendto per datagram, the iperf-like baseline), mmsg (sendmmsg batches),
    /// gso (UDP GSO: up to 64 datagrams per sendmsg), uring (io_uring batches), or auto (the
    /// fastest this machine and interface support, found by probing; the reason is printed).
    #[arg(short = 'e', long, value_enum, default_value_t = EngineArg::Auto)]
    pub engine: EngineArg,
    /// uring engine: zero-copy sends (IORING_OP_SEND_ZC from a registered buffer).
    #[arg(long)]
    pub zerocopy: bool,
    /// Multicast TTL.
    #[arg(long, default_value_t = 1)]
    pub ttl: u8,
    /// Loop datagrams back to local receivers (IP_MULTICAST_LOOP).
    #[arg(long = "loop")]
    pub loopback: bool,
    /// Datagram length in bytes, header included (40..65507: the mcblast header is 40 bytes).
    #[arg(short = 'l', long, default_value_t = 8192)]
    pub length: usize,
    /// Allow datagrams larger than the interface MTU (they fragment; AWS TGW drops fragmented multicast).
    #[arg(long)]
    pub allow_fragments: bool,
    /// Rate in bits/s for all flows together, with k/M/G (e.g. 100M). Absent: as fast as possible.
    #[arg(short = 'b', long, value_name = "RATE", value_parser = parse_rate, conflicts_with = "pps")]
    pub rate: Option<f64>,
    /// Rate in datagrams/s for all flows together, with k/M/G.
    #[arg(long, value_name = "PPS", value_parser = parse_rate)]
    pub pps: Option<f64>,
    /// Seconds to send (default 10 unless --count is given).
    #[arg(short = 't', long, value_name = "SECS")]
    pub time: Option<f64>,
    /// Datagrams to send per flow, then stop.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Number of flows (distinct source ports and flow ids), spread over groups and threads.
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// CPUs to pin workers to, e.g. 0,1 or 0-3 (worker k gets the k-th, round robin).
    // Fully qualified Vec: one value parsed into a whole list, not clap's repeated-value Vec.
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    pub cpus: Option<::std::vec::Vec<usize>>,
    /// Datagrams per batch: per sendmmsg (mmsg), per io_uring submission (uring); gso sends
    /// min(batch, 64, 65507 / length) per sendmsg.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Run id to put in the header (default: random).
    #[arg(long)]
    pub run_id: Option<u32>,
}

/// `send --engine`: the engine the user asks for (`send::Engine`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineArg {
    Socket,
    Mmsg,
    /// UDP GSO (UDP_SEGMENT): one sendmsg carries up to 64 datagrams.
    Gso,
    /// io_uring batched sendmsg (zero-copy send with --zerocopy).
    Uring,
    /// AF_XDP: whole frames through a UMEM and TX ring (zero-copy where the driver can).
    Xdp,
    /// The fastest engine this machine and interface support, by probing.
    Auto,
}

#[derive(Args, Debug, Clone)]
pub struct RecvArgs {
    #[command(flatten)]
    pub common: Common,
    /// Source-specific join (IGMPv3 SSM) from this sender address.
    #[arg(long, value_name = "ADDR")]
    pub source: Option<Ipv4Addr>,
    /// Which counters run: kernel (eBPF XDP), socket (recvmmsg), or both side by side
    /// (default both; kernel with --sink).
    #[arg(long, value_enum, default_value_t = CounterModeArg::Both,
          default_value_if("sink", "on", "kernel"),
          default_value_if("iperf2_server", clap::builder::ArgPredicate::IsPresent, "kernel"))]
    pub counter: CounterModeArg,
    /// Sink: the kernel counter drops every mcblast datagram it counted (XDP_DROP, or TC_ACT_SHOT at tc),
    /// so the stack past it never sees them. auto (the default): on for the kernel counter alone when
    /// nothing else on this host would take them (no socket bound to the port, the interface no port of a
    /// bridge or other device, no multicast routing on it), else off; the begin line says which and why.
    /// `--sink` alone is `--sink=on`, which implies --counter kernel.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "on",
          default_value_t = SinkArg::Auto, value_name = "WHEN")]
    pub sink: SinkArg,
    /// Stop after this many seconds at the latest (recv also stops once every flow has ended, plus --grace, and on Ctrl-C).
    #[arg(short = 't', long, value_name = "SECS")]
    pub time: Option<f64>,
    /// Human summary: every percentile of one-way delay and IPDV per flow (p50, p90, p99, p99.9, p99.99, max),
    /// in a second table (without it: delay min/mean/p99/max). JSON lines carry them always.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Seconds to wait after the last flow ended before stopping.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub grace: f64,
    /// Exit with status 1 when any flow's loss exceeds this percentage.
    #[arg(long, value_name = "PCT")]
    pub max_loss: Option<f64>,
    /// Count only this run id; datagrams of other runs count as foreign.
    #[arg(long)]
    pub run_id: Option<u32>,
    /// What the datagrams on the port are: mcblast's own, or iperf2's (`iperf -c GROUP -u`,
    /// one flow per sender address and port; see docs/iperf2.md).
    #[arg(long, value_enum, default_value_t = FormatArg::Mcblast)]
    pub format: FormatArg,
    /// With --format iperf2: what the iperf2 sender's clock is (its datagrams do not say), so
    /// one-way delay can be trusted: shared (same host), synced (NTP/PTP), or unknown.
    #[arg(long, value_enum, default_value_t = SenderClockArg::Unknown)]
    pub sender_clock: SenderClockArg,
    /// With --format iperf2: run an iperf2 server (`iperf -s -u -B GROUP`) beside the kernel
    /// counter and set its Lost/Total against the layers (implies --counter kernel: the socket
    /// layer is iperf2's).
    #[arg(long)]
    pub iperf2_server: bool,
    /// An extra argument for that iperf2 server, e.g. --iperf2-arg=-w --iperf2-arg=64K (repeat).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true, requires = "iperf2_server")]
    pub iperf2_arg: Vec<String>,
    /// Where the kernel counter attaches: auto (native XDP, then generic XDP, then tc
    /// ingress, saying which and why), native, generic, or tc (tc ingress through a tcx
    /// link, Linux 6.6+: whole frames of any size, where native XDP caps the MTU).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// Socket receive buffer in bytes (socket counter).
    #[arg(long, default_value_t = 4 << 20)]
    pub rcvbuf: usize,
    /// Wait until at least this many flows have been seen and every one has ended (0 = any number).
    #[arg(long, default_value_t = 0)]
    pub expect_flows: u32,
    /// After the run, leave the group(s) and keep the kernel counter counting this many
    /// seconds: datagrams after the leave and leave-to-last time in the igmp line (0 = off).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub leave_window: f64,
    /// Test aid (hidden): the socket counter sleeps this many microseconds
    /// per datagram read, so its socket buffer overflows on purpose.
    #[arg(long, default_value_t = 0, hide = true, value_name = "US")]
    pub read_delay_us: u64,
}

/// `recv --counter`: which counters run (`recv::CounterMode`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterModeArg {
    Kernel,
    Socket,
    Both,
}

/// `recv --sink`: whether the kernel counter drops what it counted.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkArg {
    /// On when nothing else on this host would take the datagrams (see `recv::sink`).
    Auto,
    On,
    Off,
}

/// `recv --format`: what the datagrams on the port are (`recv::Format`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    /// mcblast's own datagrams (`mcblast send`).
    Mcblast,
    /// iperf2's UDP datagrams (`iperf -c GROUP -u`), one flow per sender port.
    Iperf2,
}

/// `recv --sender-clock`: what is known of an iperf2 sender's clock (`recv::SenderClock`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderClockArg {
    /// Nothing: delay is shown untrusted (IPDV and jitter need no clock).
    Unknown,
    /// Synchronised (NTP/PTP): delay is trusted when this receiver's clock is too.
    Synced,
    /// The sender runs on this receiver's kernel clock (same host, or a namespace of it).
    Shared,
}

/// `recv --xdp-mode`: where the kernel counter attaches (`recv::kernel::XdpMode`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
    /// tc ingress (tcx link), not XDP.
    Tc,
}

#[derive(Subcommand, Debug, Clone)]
pub enum LabCommand {
    /// Create the lab: namespaces sender, r1..rN on one bridge, or on emulated hosts (--hosts, --preset).
    Up(LabUpArgs),
    /// Show the lab's nodes, addresses and multicast group memberships.
    Status,
    /// Run a command in a lab node: mcblast lab exec r1 -- mcblast recv
    Exec {
        /// Node name: sender, r1, r2, ...
        node: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Remove the lab, including leftovers of a crashed run.
    Down,
    /// Drop, duplicate or reorder mcblast datagrams toward one receiver (eBPF at the bridge port's egress).
    Impair(LabImpairArgs),
}

/// `mcblast lab impair LINK ...`: one of --loss/--every (with --burst),
/// --duplicate, --reorder (combinable), or --stats, or --clear.
#[derive(Args, Debug, Clone, Default)]
pub struct LabImpairArgs {
    /// The link: a receiver's bridge port, named after it (r1, r2, ...; see `mcblast lab status`).
    pub link: String,
    /// Drop this percentage of data datagrams at random (seeded; 0 < PCT <= 100).
    #[arg(long, value_name = "PCT", value_parser = parse_pct, conflicts_with = "every")]
    pub loss: Option<u32>,
    /// Drop every Nth data datagram (the Nth, 2Nth, ...), deterministically.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub every: Option<u32>,
    /// Each drop (--loss or --every) drops K consecutive data datagrams (default 1).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: Option<u32>,
    /// Deliver this percentage of data datagrams one place late (after the flow's next one).
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    pub reorder: Option<u32>,
    /// Send this percentage of data datagrams twice.
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    pub duplicate: Option<u32>,
    /// Seed of the random decisions: the same seed gives the same decisions for the same datagrams.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print what the impairment on LINK touched so far.
    #[arg(long, conflicts_with_all = ["loss", "every", "burst", "reorder", "duplicate", "clear"])]
    pub stats: bool,
    /// Remove the impairment from LINK and print its final counts.
    #[arg(long, conflicts_with_all = ["loss", "every", "burst", "reorder", "duplicate"])]
    pub clear: bool,
    /// JSON Lines output.
    #[arg(long)]
    pub json: bool,
}

/// A percentage `0 < PCT <= 100` (`1`, `0.5`, `2%`) as parts per million.
pub fn parse_pct(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_end_matches('%');
    match t.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 && (p * 10_000.0).round() >= 1.0 => Ok((p * 10_000.0).round() as u32),
        _ => Err(format!("percentage '{s}' is out of range: use more than 0 and at most 100, e.g. 1 or 0.5")),
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct LabUpArgs {
    /// Number of receiver namespaces on the one bridge (flat lab; default 9).
    #[arg(long, conflicts_with_all = ["hosts", "per_host", "preset", "fabric", "placement"])]
    pub receivers: Option<u32>,
    /// Platform preset: tgw (AWS Transit Gateway) or ovn (OpenStack OVN); other flags override it.
    #[arg(long, value_enum)]
    pub preset: Option<LabPreset>,
    /// Emulated receiver hosts, each a namespace with its own bridge (default 3 with --per-host, --fabric or --preset).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub hosts: Option<u32>,
    /// Receivers per emulated host (default 3).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=243))]
    pub per_host: Option<u32>,
    /// How the hosts are joined: bridge (one shared switch, TGW-like), vxlan (head-end replication, OVN-like) or ovn (a real OVN).
    #[arg(long, value_enum)]
    pub fabric: Option<LabFabric>,
    /// spread: --per-host receivers on each host; same-host: all of them on host h1.
    #[arg(long, value_enum)]
    pub placement: Option<LabPlacement>,
    /// MTU of every lab link (the overlay with --fabric vxlan; the underlay gets MTU + 50). Default 9000.
    #[arg(long, value_parser = parse_lab_mtu)]
    pub mtu: Option<u32>,
    /// IGMP snooping on the bridges (default on).
    #[arg(long, value_enum)]
    pub snooping: Option<OnOff>,
    /// The querier bridge sends IGMP queries (default on).
    #[arg(long, value_enum)]
    pub querier: Option<OnOff>,
    /// IGMP version of the queries, 2 or 3 (default 3); 2 also forces every node's eth0 to IGMPv2.
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub igmp_version: Option<u8>,
    /// Seconds between general queries (default 125).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub query_interval: Option<u64>,
    /// Seconds a member stays without answering queries (default 2 x query interval + 10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=10000))]
    pub membership_interval: Option<u64>,
    /// AWS TGW's limits in the fabric: per-flow rates, fragments and IGMPv3 reports dropped (default on with --preset tgw).
    #[arg(long, value_enum)]
    pub tgw_limits: Option<OnOff>,
    /// Per-flow datagram rate the TGW fabric allows (default 75000, 15000 with more than 10 receivers).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub tgw_flow_pps: Option<u64>,
    /// Per-flow bit rate the TGW fabric allows, e.g. 1G or 200M (default 1G).
    #[arg(long, value_parser = parse_rate)]
    pub tgw_flow_rate: Option<f64>,
    /// Most members a group may have in the TGW fabric (default 100; 0: no cap).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub tgw_max_members: Option<u32>,
    #[command(flatten)]
    pub ovn: OvnArgs,
}

/// `lab up --encap`: tunnel encapsulation between the hypervisors (`lab::ovn::Encap`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapArg {
    Geneve,
    Vxlan,
}

/// A switch the user turns on or off (`lab up --snooping`, `--querier`, `--flood-unregistered`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

/// `lab up --profile`: a deployment's settings as a whole.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvnProfileArg {
    /// What OpenStack Neutron configures: snooping on, no querier, mcast_flood_unregistered=false.
    Neutron,
}

/// `lab up` flags of the OVN fabric (flattened into `mcblast lab up`).
#[derive(Args, Debug, Clone, Default)]
pub struct OvnArgs {
    /// --fabric ovn: tunnel encapsulation between hypervisors (default geneve).
    #[arg(long, value_enum)]
    pub encap: Option<EncapArg>,
    /// --fabric ovn: a deployment profile; neutron = snooping on, no querier, unregistered groups not flooded.
    #[arg(long, value_enum)]
    pub profile: Option<OvnProfileArg>,
    /// --fabric ovn: mcast_flood_unregistered, flood groups nobody joined (default off).
    #[arg(long, value_enum)]
    pub flood_unregistered: Option<OnOff>,
    /// --fabric ovn: mcast_table_size, most groups per switch (default 2048).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32766))]
    pub mcast_table_size: Option<u32>,
    /// --fabric ovn: mcast_query_max_response in seconds (default 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=25))]
    pub query_max_response: Option<u64>,
    /// --fabric ovn: options:mcast_flood=true on NODE's logical port: all multicast, joined or not (repeatable).
    #[arg(long, value_name = "NODE")]
    pub mcast_flood: Vec<String>,
    /// --fabric ovn: options:mcast_flood_reports=true on NODE's logical port: the others' IGMP reports too (repeatable).
    #[arg(long, value_name = "NODE")]
    pub mcast_flood_reports: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabPreset {
    /// AWS TGW multicast: shared switch, IGMPv2 querier every 120 s, member dropped after 3 missed queries, MTU 8500.
    Tgw,
    /// OpenStack OVN: a real OVN (--fabric ovn) when installed, else VXLAN head-end replication; snooping, queries every 150 s, idle timeout 300 s.
    Ovn,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabFabric {
    Bridge,
    Vxlan,
    /// A real OVN: OVS + ovn-controller per host (needs openvswitch-switch, ovn-central, ovn-host).
    Ovn,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabPlacement {
    Spread,
    SameHost,
}

/// Parses `--prometheus ADDR:PORT`.
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| format!("'{s}' is not ADDR:PORT: use e.g. 127.0.0.1:9464 (this host only) or 0.0.0.0:9464"))
}

/// Parses `100M`, `1.5G`, `64k`, `2500` (SI: k = 1000).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                'k' => 1e3,
                'm' => 1e6,
                'g' => 1e9,
                't' => 1e12,
                _ => return Err(format!("unknown unit '{c}' in '{s}': use k, M or G (e.g. 100M)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a rate: use a number with k, M or G (e.g. 100M)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("rate '{s}' must be positive"));
    }
    let r = v * mult;
    if !r.is_finite() {
        return Err(format!("rate '{s}' is too large to be a number"));
    }
    Ok(r)
}

/// The highest CPU number `--cpus` accepts (Linux's NR_CPUS is at most 4096).
pub const MAX_CPU: usize = 4095;

/// Parses `0,2,4-7`. CPU numbers above [`MAX_CPU`] are refused before any
/// range is expanded, so a silly range cannot allocate much.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("'{part}' is not a CPU or range: use e.g. 0,1 or 0-3");
        let cpu = |n: &str| -> Result<usize, String> {
            // Digits only: a number too big for usize is out of range, not malformed.
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match n.parse::<usize>() {
                Ok(c) if c <= MAX_CPU => Ok(c),
                _ => Err(format!("CPU {n} in '{part}' is out of range: CPU numbers go up to {MAX_CPU}")),
            }
        };
        if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (cpu(a)?, cpu(b)?);
            if a > b {
                return Err(bad());
            }
            out.extend(a..=b);
        } else {
            out.push(cpu(part)?);
        }
    }
    if out.is_empty() {
        return Err("empty CPU list: use e.g. 0,1 or 0-3".into());
    }
    Ok(out)
}

fn parse_lab_mtu(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(m) if (1280..=9000).contains(&m) => Ok(m),
        _ => Err(format!("lab MTU '{s}' is not supported: use 1280..9000, e.g. 9000, 8500 (AWS TGW) or 1500")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn rates() {
        assert_eq!(parse_rate("100M").unwrap(), 100e6);
        assert_eq!(parse_rate("1.5g").unwrap(), 1.5e9);
        assert_eq!(parse_rate("2500").unwrap(), 2500.0);
        assert!(parse_rate("10x").is_err());
        assert!(parse_rate("-1M").is_err());
        assert!(parse_rate("").is_err());
        // Finite before the unit, infinite after it.
        let e = parse_rate("1e300G").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        assert!(parse_rate("inf").is_err());
        assert_eq!(parse_rate("1e300").unwrap(), 1e300);
    }
    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("127.0.0.1:9464").unwrap().port(), 9464);
        assert!(parse_listen("9464").unwrap_err().contains("use e.g. 127.0.0.1:9464"));
        assert!(parse_listen("localhost:9464").is_err());
    }
    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("+1").is_err());
        assert_eq!(parse_cpu_list("4090-4095").unwrap().len(), 6);
        // Refused before the range is built (this one would be 800 GB).
        let e = parse_cpu_list("0-99999999999").unwrap_err();
        assert!(e.contains("CPU 99999999999 in '0-99999999999' is out of range") && e.contains("4095"), "{e}");
        assert!(parse_cpu_list("4096").unwrap_err().contains("out of range"));
        assert!(parse_cpu_list("0-999999999999999999999999").unwrap_err().contains("out of range"));
    }
    #[test]
    fn send_cpus_parse_as_one_list() {
        let Command::Send(a) = Cli::try_parse_from(["mcblast", "send", "--cpus", "0,2-3"]).unwrap().command else {
            panic!("not send")
        };
        assert_eq!(a.cpus, Some(vec![0, 2, 3]));
    }
    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
