//! `mcblast recv`: join the group(s), count every flow in the kernel (eBPF
//! XDP) and/or in a socket (recvmmsg) with the same tracker, report per
//! interval and at the end.

pub mod attrib;
pub mod igmp_timing;
pub mod iperf2_server;
pub mod kernel;
pub mod live;
pub mod sink;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use mcblast_common::maps::{FORMAT_IPERF2, FORMAT_MCBLAST};
use mcblast_common::wire::{FLAG_CLOCK_SYNCED, FLAG_TAI_SHIFT};
use mcblast_common::{Config, FlowKey, FlowState, GlobalCounter, Header, iperf2};

use crate::clock;
use crate::iface::Iface;
use attrib::{LayersSummary, HostCounters, LayerDrops, Measured, ReasonCount, ReasonNames, Symbols};
use crate::report::fanout::LossBook;
use crate::recv::kernel::{DropTracer, KernelCounter};
use crate::output::{self, FlowReport, LayersInterval, Printer, RecvBegin, RecvInterval, RecvSummary};
use crate::sys::{self, net};

/// Which counters `recv` runs (`--counter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterMode {
    Kernel,
    Socket,
    Both,
}

/// What the datagrams on the port are (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// mcblast's own datagrams (`mcblast send`).
    #[default]
    Mcblast,
    /// iperf2's UDP datagrams (`iperf -c GROUP -u`), one flow per sender port.
    Iperf2,
}

/// What is known of an iperf2 sender's clock (`--sender-clock`): its
/// datagrams do not say, so one-way delay is trusted only when the user does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SenderClock {
    /// Nothing: delay is shown untrusted (IPDV and jitter need no clock).
    #[default]
    Unknown,
    /// Synchronised (NTP/PTP): delay is trusted when this receiver's clock is too.
    Synced,
    /// The sender runs on this receiver's kernel clock (same host, or a namespace of it).
    Shared,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Mcblast => "mcblast",
            Format::Iperf2 => "iperf2",
        }
    }
}

/// How the datagrams on the port are read into the tracker's headers.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    format: Format,
    /// mcblast format: only this run counts.
    run_filter: Option<u32>,
    port: u16,
    iperf2: iperf2::Reading,
}

impl Reader {
    /// A reader of `format` datagrams on `port` (of run `run_filter` only, if given), an iperf2 sender's clock
    /// being `sender_clock`.
    pub fn new(format: Format, sender_clock: SenderClock, run_filter: Option<u32>, port: u16) -> Reader {
        let local = clock::local();
        let (flags, clock) = match sender_clock {
            SenderClock::Unknown => (0, 0),
            SenderClock::Synced => (FLAG_CLOCK_SYNCED | (local.tai_offset as u16) << FLAG_TAI_SHIFT, 0),
            SenderClock::Shared => (0, local.id),
        };
        let iperf2 = iperf2::Reading { tai_minus_utc_ns: clock::tai_minus_utc_ns(), clock, flags, _pad: 0 };
        Reader { format, run_filter, port, iperf2 }
    }

    /// The header of a datagram from UDP port `sport`, if it is one of the format (and run) counted.
    fn header(&self, buf: &[u8], sport: u16) -> Option<Header> {
        match self.format {
            Format::Mcblast => Header::parse_datagram(buf).ok().filter(|h| self.run_filter.is_none_or(|r| r == h.run)),
            Format::Iperf2 => {
                let mut b = [0u8; iperf2::PEEK_LEN];
                let n = buf.len().min(iperf2::PEEK_LEN);
                b[..n].copy_from_slice(&buf[..n]);
                iperf2::parse(&b, buf.len(), sport, self.port, &self.iperf2).ok()
            }
        }
    }

    /// The kernel counter's configuration for this reader.
    fn config(&self, sink: bool) -> Config {
        Config {
            port: self.port,
            format: match self.format {
                Format::Mcblast => FORMAT_MCBLAST,
                Format::Iperf2 => FORMAT_IPERF2,
            },
            run_filter: self.run_filter.unwrap_or(0),
            sink: sink.into(),
            clock: clock::clock_id(),
            mono_to_tai_ns: 0, // measured by attach where the kernel needs it
            iperf2: self.iperf2,
        }
    }
}

/// What one counter knows at one moment.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub flows: Vec<(FlowKey, FlowState)>,
    pub foreign: u64,
    /// Kernel counter only: valid datagrams with no room in the flow map.
    pub map_full: Option<u64>,
    /// Kernel counter only: datagrams that arrived fragmented, counted in
    /// their flows by their first fragment.
    pub fragments: Option<u64>,
    /// Kernel counter only: per flow, its data datagrams that arrived
    /// fragmented (flows with none are left out).
    pub fragmented: Vec<(FlowKey, u64)>,
    /// Kernel counter only: later fragments matched to a counted first
    /// fragment, and later fragments that matched none.
    pub later_fragments: Option<u64>,
    pub unmatched_fragments: Option<u64>,
    /// Kernel counter only: datagrams to the port for groups (or from sources) not joined.
    pub other_group: Option<u64>,
    /// Kernel counter only: packets that carried several datagrams (GSO or
    /// GRO), and datagrams in them past the counter's walk (not counted).
    pub coalesced: Option<u64>,
    pub unwalked: Option<u64>,
    /// Kernel counter only: data datagrams the sink dropped after counting them.
    pub sunk: Option<u64>,
}

impl Snapshot {
    fn totals(&self) -> (u64, u64, i64) {
        self.flows.iter().fold((0, 0, 0), |(r, b, l), (_, s)| (r + s.received, b + s.bytes, l + s.lost as i64))
    }
}

/// State the socket thread shares with the reporter.
#[derive(Default)]
struct SocketView {
    flows: HashMap<FlowKey, FlowState>,
    foreign: u64,
    /// The socket's own drop counter (SO_RXQ_OVFL).
    drops: u64,
    /// The exact lost ranges of every flow.
    loss: LossBook,
}

/// The socket-mode baseline: a thread reading the group(s) with recvmmsg.
struct SocketCounter {
    view: Arc<Mutex<SocketView>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Key bits for an address, as the kernel counter stores them (network order).
fn addr_key(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

impl SocketCounter {
    /// `read_delay`: a pause per datagram read (test aid: a slow reader);
    /// `loss_iv_ns`: the interval the loss records are grouped by.
    fn start(
        fd: OwnedFd,
        default_group: Ipv4Addr,
        reader: Reader,
        read_delay: Duration,
        loss_iv_ns: u64,
    ) -> SocketCounter {
        let view = Arc::new(Mutex::new(SocketView::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (v, s) = (view.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("mcblast-sock".into())
            .spawn(move || -> Result<()> {
                let r = read_loop(&fd, &v, &s, default_group, reader, read_delay, loss_iv_ns);
                // The drop count as of now: drops after the last datagram read count too.
                if let Ok(d) = net::socket_drops(&fd) {
                    v.lock().expect("socket view lock").drops = d as u64;
                }
                r
            })
            .expect("spawn socket thread");
        SocketCounter { view, stop, thread: Some(thread) }
    }
}

/// The socket thread's work: read batches until stopped, then drain.
fn read_loop(
    fd: &OwnedFd,
    v: &Mutex<SocketView>,
    s: &AtomicBool,
    default_group: Ipv4Addr,
    reader: Reader,
    read_delay: Duration,
    loss_iv_ns: u64,
) -> Result<()> {
        let mut batch = net::RecvBatch::new(32, 65536);
        // Once stopped, read only what is already queued (non-blocking),
        // for at most DRAIN: traffic may still be arriving.
        let mut drain_until: Option<u64> = None;
        loop {
            if drain_until.is_none() && s.load(Ordering::Relaxed) {
                drain_until = Some(clock::mono_ns() + DRAIN.as_nanos() as u64);
            }
            let n = batch.recv(fd, drain_until.is_some()).context("receiving datagrams")?;
            if n == 0 {
                if drain_until.is_some() {
                    return Ok(()); // the queue is empty
                }
                continue;
            }
            let now = clock::tai_ns();
            let mut g = v.lock().expect("socket view lock");
            for i in 0..n {
                let (buf, meta) = batch.get(i);
                match reader.header(buf, meta.sport) {
                    Some(h) => {
                        let key = FlowKey {
                            sender: addr_key(meta.src),
                            group: addr_key(meta.dst.unwrap_or(default_group)),
                            run: h.run,
                            flow: h.flow,
                        };
                        let ev = g.flows.entry(key).or_default().on_header(&h, now).into();
                        g.loss.apply(key, ev, now, loss_iv_ns);
                    }
                    _ => g.foreign += 1,
                }
            }
            if let Some(d) = batch.drops {
                g.drops = d as u64;
            }
            drop(g);
            if !read_delay.is_zero() && drain_until.is_none() {
                std::thread::sleep(read_delay * n as u32);
            }
            if drain_until.is_some_and(|t| clock::mono_ns() >= t) {
                return Ok(());
            }
        }
}

impl SocketCounter {
    fn snapshot(&self) -> Snapshot {
        let g = self.view.lock().expect("socket view lock");
        let mut flows: Vec<_> = g.flows.iter().map(|(k, v)| (*k, *v)).collect();
        flows.sort_by_key(|(k, _)| *k);
        Snapshot { flows, foreign: g.foreign, ..Snapshot::default() }
    }

    /// Drains what is queued, stops the thread, and surfaces its error.
    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(p)) => std::panic::resume_unwind(p),
            None => Ok(()),
        }
    }
}

fn kernel_snapshot(k: &KernelCounter) -> Result<Snapshot> {
    let entries = k.flow_entries()?;
    let g = k.globals()?;
    Ok(Snapshot {
        flows: entries.iter().map(|(key, s, _)| (*key, *s)).collect(),
        fragmented: entries.iter().filter(|(_, _, f)| *f > 0).map(|(key, _, f)| (*key, *f)).collect(),
        foreign: g[GlobalCounter::Foreign as usize],
        map_full: Some(g[GlobalCounter::MapFull as usize]),
        fragments: Some(g[GlobalCounter::Fragments as usize]),
        later_fragments: Some(g[GlobalCounter::LaterFragments as usize]),
        unmatched_fragments: Some(g[GlobalCounter::UnmatchedFragments as usize]),
        other_group: Some(g[GlobalCounter::OtherGroup as usize]),
        coalesced: Some(g[GlobalCounter::Coalesced as usize]),
        unwalked: Some(g[GlobalCounter::Unwalked as usize]),
        sunk: Some(g[GlobalCounter::Sunk as usize]),
    })
}

/// Longest duration a flag may ask for (115 days).
pub const MAX_SECS: f64 = 1e7;

/// Longest the socket counter keeps reading its queue after the stop.
const DRAIN: Duration = Duration::from_millis(200);

/// How often the arrival gaps (dropouts) are sampled, and for at most how many flows.
const GAP_POLL: Duration = Duration::from_millis(100);
const MAX_GAP_FLOWS: usize = 256;

/// Longest a scrape waits for the main loop to refresh the live counters.
const LIVE_WAIT: Duration = Duration::from_millis(500);

/// Longest the receiver waits at the end for the iperf2 server's own report.
const IPERF2_WAIT: Duration = Duration::from_secs(2);

/// How often the receiver checks whether every flow has ended.
const END_CHECK: Duration = Duration::from_millis(250);

/// The resolved receive plan (from the flags in `commands/recv.rs`).
pub struct RecvPlan {
    pub iface: Iface,
    pub groups: Vec<Ipv4Addr>,
    pub port: u16,
    pub source: Option<Ipv4Addr>,
    pub kernel: bool,
    pub socket: bool,
    /// Whether the kernel counter drops what it counted (`--sink`), and why when `auto` chose.
    pub sink: sink::Sink,
    pub interval: Option<Duration>,
    pub time: Option<Duration>,
    pub grace: Duration,
    pub reader: Reader,
    /// --iperf2-server: iperf2 reads the socket beside the kernel counter.
    pub iperf2_server: bool,
    /// Extra arguments of that iperf2 server.
    pub iperf2_args: Vec<String>,
    /// Where the kernel counter attaches.
    pub xdp_mode: kernel::XdpMode,
    /// Socket receive buffer asked for, in bytes (socket counter).
    pub rcvbuf: usize,
    /// Test aid: the socket counter sleeps this long per datagram read.
    pub read_delay: Duration,
    /// After the run, the kernel counter keeps counting this many seconds with the group(s) left (0: off).
    pub leave_window: f64,
    /// Wait for at least this many flows (0: any number).
    pub expect_flows: u32,
    /// Exit with status 1 when any flow's loss exceeds this percentage.
    pub max_loss: Option<f64>,
    /// Every percentile in the human summary.
    pub verbose: bool,
    pub json: bool,
    /// Serve live counters in the Prometheus format here.
    pub prometheus: Option<std::net::SocketAddr>,
    /// Stop (as on Ctrl-C) when standard input ends.
    pub stop_on_stdin_eof: bool,
}

/// How long the main loop sleeps between its checks.
const STEP: Duration = Duration::from_millis(50);

/// Runs `mcblast recv` as planned, phase by phase: open, begin, count (the main loop), finish, report.
pub fn run(p: RecvPlan) -> Result<ExitCode> {
    let mut r = Receiver::open(p)?;
    r.begin()?;
    let (start, end) = r.count()?;
    let f = r.finish()?;
    r.report(f, (end - start) as f64 / 1e9)
}

/// A receiver between its phases: the plan and what `open` set up. Fields drop
/// in order: the memberships and the socket counter first, the live page and the printer last.
struct Receiver {
    /// --iperf2-server: the iperf2 server reading the socket.
    iperf2: Option<crate::recv::iperf2_server::Iperf2Server>,
    /// Kernel only: the joined socket, held (never read) for its membership.
    _membership: Option<OwnedFd>,
    socket: Option<SocketCounter>,
    /// --leave-window: the membership left explicitly at the end.
    keep: Option<OwnedFd>,
    /// The socket receive buffer granted (socket counter).
    granted: usize,
    /// IGMP timing: the queries that reach this host (taken by the report), and when the join was asked.
    query_watch: Option<Result<crate::recv::igmp_timing::QueryWatch, String>>,
    join_ns: u64,
    gaps: crate::recv::igmp_timing::GapTracker,
    /// The kernel counter's loss records, grouped by `loss_iv_ns`.
    kernel_loss: LossBook,
    loss_iv_ns: u64,
    host_start: HostCounters,
    /// The driver's statistics (ethtool -S); None when unreadable.
    driver_start: Option<Vec<(String, u64)>>,
    kernel: Option<KernelCounter>,
    reason_names: Option<ReasonNames>,
    /// Kernel symbols (for NOT_SPECIFIED drops), loaded once, when first needed.
    syms: Option<Symbols>,
    /// Whether the clock is synchronized (read at the begin line).
    synced: bool,
    live: Option<(Arc<crate::prom::Live<live::RecvLive>>, crate::prom::MetricsServer)>,
    out: Printer,
    p: RecvPlan,
}

/// The main loop's clocks (monotonic ns) and what the next interval line counts from.
struct Ticks {
    start: u64,
    last_tick: u64,
    last_gap_poll: u64,
    last_end_check: u64,
    /// Since when every flow seen has ended (None while one has not).
    ended_at: Option<u64>,
    prev: HashMap<&'static str, (u64, u64, i64)>,
    /// Per counter and flow, its delay and IPDV histograms at the last interval line.
    prev_hists: HashMap<(&'static str, FlowKey), Box<output::FlowMark>>,
    /// Whose one-way delays are trusted ([`output::delay_trusted`]).
    local: clock::LocalClock,
    prev_drops: LayerDrops,
    prev_driver: Option<u64>,
}

/// The receiver's sockets and memberships, as `join` leaves them.
struct Joined {
    socket: Option<SocketCounter>,
    membership: Option<OwnedFd>,
    keep: Option<OwnedFd>,
    granted: usize,
    query_watch: Result<crate::recv::igmp_timing::QueryWatch, String>,
    join_ns: u64,
}

/// --leave-window: when the group(s) were left, when the window ended, the kernel counter's flows before and after.
type Left = (u64, u64, Vec<(FlowKey, FlowState)>, Vec<(FlowKey, FlowState)>);

/// What the receiver read after its main loop: the report's input.
struct Finals {
    /// A failed socket thread, reported after the summaries.
    socket_error: Option<anyhow::Error>,
    snaps: Vec<(&'static str, Snapshot)>,
    socket_drops: Option<u64>,
    reasons: Option<Vec<ReasonCount>>,
    flow_drops: Option<Vec<(FlowKey, LayerDrops)>>,
    tracer_keys_full: Option<u64>,
    host_end: HostCounters,
    driver_end: Option<Vec<(String, u64)>>,
    leave: Option<Left>,
    kernel_mode: Option<&'static str>,
    kernel_events_lost: Option<u64>,
    socket_loss: Option<LossBook>,
    /// --iperf2-server: its report (or why there is none).
    iperf2: Option<Result<crate::recv::iperf2_server::Iperf2Report>>,
}

/// The drop tracer's counts by reason; with `per_flow`, also what they charged to each flow's layers. Kernel
/// symbols (for NOT_SPECIFIED drops) are loaded into `syms` once, when first needed.
fn tracer_counts(
    k: &KernelCounter,
    names: &ReasonNames,
    syms: &mut Option<Symbols>,
    per_flow: bool,
) -> Result<(Vec<ReasonCount>, Vec<(FlowKey, LayerDrops)>)> {
    let drops = k.drops()?;
    if syms.is_none() && drops.keys().any(|d| d.location != 0) {
        *syms = Some(Symbols::load());
    }
    let symbol = |a| syms.as_ref().and_then(|s: &Symbols| s.lookup(a));
    let flows = if per_flow { attrib::flow_drops(&drops, names, symbol) } else { Vec::new() };
    Ok((attrib::reason_counts(&drops, names, symbol), flows))
}

/// The kernel counter attached, counting only the groups (and source) joined, as the socket does; with the socket
/// counter also the drop tracer. Loss attribution needs both counters and the tracer; without the tracer the
/// receiver still counts, and says why there is no waterfall.
fn attach_kernel(p: &RecvPlan) -> Result<(KernelCounter, Option<ReasonNames>)> {
    let mut k = KernelCounter::attach(&p.iface, p.xdp_mode, p.reader.config(p.sink.on))?;
    let joined: Vec<_> = p.groups.iter().map(|g| (*g, p.source)).collect();
    k.set_groups(&joined)?;
    let mut reason_names = None;
    if p.socket || p.iperf2_server {
        match crate::sys::btf::Btf::from_kernel()
            .and_then(|btf| ReasonNames::from_btf(&btf))
            .and_then(|names| k.trace_drops(&p.iface, names.locate_reason()?, DropTracer::Auto).map(|_| names))
        {
            Ok(names) => reason_names = Some(names),
            Err(e) => eprintln!("mcblast: no loss attribution (layers): {e:#}"),
        }
    }
    Ok((k, reason_names))
}

/// Joins the plan's group(s) (from its source, if any) on `fd`.
fn join_groups(p: &RecvPlan, fd: &OwnedFd) -> Result<()> {
    for g in &p.groups {
        match (p.source, p.iface.addr) {
            (Some(src), Some(ifa)) => net::join_source(fd, *g, src, ifa),
            _ => net::join_group(fd, *g, p.iface.index),
        }
        .with_context(|| format!("cannot join {g} on {}", p.iface.name))?;
    }
    Ok(())
}

/// The membership socket (the socket counter's own socket, or, kernel only, an unbound socket that joins but
/// never queues datagrams), the IGMP query watch, the join, --leave-window's membership, the socket counter.
fn join(p: &RecvPlan, kernel: Option<&mut KernelCounter>, tracer: bool, loss_iv_ns: u64) -> Result<Joined> {
    let (fd, granted) = if p.socket {
        net::recv_socket(&net::RecvSocketOpts { port: p.port, rcvbuf: p.rcvbuf })
            .with_context(|| format!("cannot bind UDP port {}", p.port))?
    } else {
        (net::udp_socket().context("creating a socket")?, 0)
    };
    // Socket-level drops are charged only when they are this socket's.
    if let (Some(k), true, true) = (kernel, tracer, p.socket) {
        let cookie = net::socket_cookie(&fd).context("cannot read the socket's cookie (SO_COOKIE)")?;
        k.set_drop_socket(cookie)?;
    }
    // IGMP timing: the queries that reach this host, and when the join was asked.
    let query_watch = crate::recv::igmp_timing::QueryWatch::start().map_err(|e| format!("raw IGMP socket: {e}"));
    let join_ns = clock::tai_ns();
    join_groups(p, &fd)?;
    // With --leave-window: a second membership that outlives the counting
    // socket, left explicitly at the end while the kernel counter counts.
    let mut keep = if p.leave_window > 0.0 && p.socket {
        let k = net::udp_socket().context("creating a socket")?;
        join_groups(p, &k)?;
        Some(k)
    } else {
        None
    };
    // In kernel-only mode the joined socket is only kept alive (with its membership).
    let (socket, mut membership) = if p.socket {
        (Some(SocketCounter::start(fd, p.groups[0], p.reader, p.read_delay, loss_iv_ns)), None)
    } else {
        (None, Some(fd))
    };
    // Kernel only: that membership is the one --leave-window leaves.
    if p.leave_window > 0.0 && keep.is_none() {
        keep = membership.take();
    }
    Ok(Joined { socket, membership, keep, granted, query_watch, join_ns })
}

impl Receiver {
    /// The plan, the signals, the Prometheus endpoint (first: a bad address stops the run before anything is
    /// attached), the kernel counter (before joining, so the first datagram is counted), then the join.
    fn open(p: RecvPlan) -> Result<Receiver> {
        let out = Printer::new(p.json);
        sys::install_stop_signals().context("installing signal handlers")?;
        if p.stop_on_stdin_eof {
            sys::stop_on_stdin_eof();
        }
        let live = match p.prometheus {
            Some(addr) => {
                let live = crate::prom::Live::new(live::RecvLive::default());
                let (l, local) = (live.clone(), clock::local());
                let server = crate::prom::serve(addr, move || live::recv_page(&l.fresh(LIVE_WAIT), &local))?;
                Some((live, server))
            }
            None => None,
        };
        let (mut kernel, reason_names) = match p.kernel {
            true => attach_kernel(&p).map(|(k, names)| (Some(k), names))?,
            false => (None, None),
        };
        let host_start = HostCounters::read(&p.iface.name);
        let driver_start = sys::ethtool::stats(&p.iface.name).ok();
        // Loss records are grouped by the report interval (1 s without one),
        // aligned to the TAI clock so receivers line up.
        let loss_iv_ns = p.interval.unwrap_or(Duration::from_secs(1)).as_nanos().max(1) as u64;
        let j = join(&p, kernel.as_mut(), reason_names.is_some(), loss_iv_ns)?;
        let iperf2 = match p.iperf2_server {
            true => Some(crate::recv::iperf2_server::Iperf2Server::start(p.groups[0], p.port, &p.iface.name, &p.iperf2_args)?),
            false => None,
        };
        Ok(Receiver {
            iperf2,
            _membership: j.membership,
            socket: j.socket,
            keep: j.keep,
            granted: j.granted,
            query_watch: Some(j.query_watch),
            join_ns: j.join_ns,
            gaps: crate::recv::igmp_timing::GapTracker::default(),
            kernel_loss: LossBook::default(),
            loss_iv_ns,
            host_start,
            driver_start,
            kernel,
            reason_names,
            syms: None,
            synced: false,
            live,
            out,
            p,
        })
    }

    /// The begin record and its human line; a note when the socket buffer is less than half the one asked for.
    fn begin(&mut self) -> Result<()> {
        let (p, kernel) = (&self.p, &self.kernel);
        let counters: Vec<&'static str> =
            [(p.kernel, "kernel"), (p.socket, "socket")].into_iter().filter(|c| c.0).map(|c| c.1).collect();
        self.synced = clock::synchronized();
        let begin = RecvBegin {
            role: "recv",
            version: env!("CARGO_PKG_VERSION"),
            interface: p.iface.name.clone(),
            ifindex: p.iface.index,
            groups: p.groups.iter().map(|g| g.to_string()).collect(),
            port: p.port,
            source: p.source.map(|s| s.to_string()),
            counters: counters.clone(),
            format: p.reader.format.name(),
            xdp_mode: kernel.as_ref().map(|k| k.mode()),
            attach_reason: kernel.as_ref().map(|k| k.reason().to_string()),
            clock_synced: self.synced,
            drop_tracer: self.reason_names.is_some(),
            sink: p.sink.on,
            sink_reason: p.sink.why.clone(),
        };
        self.out.print(&begin)?;
        if p.socket && self.granted < self.p.rcvbuf / 2 {
            let small = Notice::RcvbufSmall { rcvbuf_granted: self.granted, rcvbuf_asked: self.p.rcvbuf };
            self.out.print(&RecvNotice::of(small))?;
        }
        Ok(())
    }

    /// The main loop, every STEP: the live page, the kernel's loss records, the arrival gaps, the interval lines;
    /// until the stop, --time, or every flow ended plus --grace. Returns when it started and ended (monotonic ns).
    fn count(&mut self) -> Result<(u64, u64)> {
        let start = clock::mono_ns();
        let mut t = Ticks {
            start,
            last_tick: start,
            last_gap_poll: start,
            last_end_check: start,
            ended_at: None,
            prev: HashMap::new(),
            prev_hists: HashMap::new(),
            local: clock::LocalClock { synced: self.synced, ..clock::local() },
            prev_drops: LayerDrops::default(),
            prev_driver: self.driver_start.as_deref().map(attrib::driver_drops),
        };
        loop {
            std::thread::sleep(STEP);
            self.publish_live()?;
            self.drain_kernel_loss();
            let now = clock::mono_ns();
            if now - t.last_gap_poll >= GAP_POLL.as_nanos() as u64 {
                t.last_gap_poll = now;
                self.poll_gaps()?;
                self.follow_clock(now - start)?;
                self.follow_readers(now - start)?;
            }
            let elapsed = Duration::from_nanos(now - start);
            let snaps = self.interval(&mut t, now)?;
            if sys::stop_requested() || self.p.time.is_some_and(|limit| elapsed >= limit) {
                break;
            }
            if now - t.last_end_check >= END_CHECK.as_nanos() as u64 {
                t.last_end_check = now;
                if self.ended(&mut t, now, snaps)? {
                    break;
                }
            }
        }
        Ok((start, clock::mono_ns()))
    }

    /// Keeps the kernel counter's TAI offset true where the kernel has no TAI
    /// helper (before 6.1), and says when the system clock stepped: the
    /// delays of what arrived since the last check (`GAP_POLL`) are off by it.
    fn follow_clock(&mut self, elapsed_ns: u64) -> Result<()> {
        let Some(k) = &self.kernel else { return Ok(()) };
        if let Some(moved_ns) = k.refresh_tai_offset()? {
            let step = Notice::ClockStep { step_us: moved_ns as f64 / 1e3, at_s: elapsed_ns as f64 / 1e9 };
            self.out.print(&RecvNotice::of(step))?;
        }
        Ok(())
    }

    /// `--sink auto`: turns the sink off, saying so, once a socket is bound to the port, so whatever reads it
    /// gets the datagrams from then on.
    fn follow_readers(&mut self, elapsed_ns: u64) -> Result<()> {
        let Some(k) = &self.kernel else { return Ok(()) };
        let Some(sockets) = self.p.sink.follow(self.p.port) else { return Ok(()) };
        k.set_sink(false)?;
        let off = Notice::SinkOff { why: sink::sockets_bound(sockets, self.p.port), at_s: elapsed_ns as f64 / 1e9 };
        self.out.print(&RecvNotice::of(off))?;
        Ok(())
    }

    /// Both counters' snapshots, kernel first.
    fn snap_all(&self) -> Result<Vec<(&'static str, Snapshot)>> {
        let mut v = Vec::new();
        if let Some(k) = &self.kernel {
            v.push(("kernel", kernel_snapshot(k)?));
        }
        if let Some(s) = &self.socket {
            v.push(("socket", s.snapshot()));
        }
        Ok(v)
    }

    /// The drop tracer's counts ([`tracer_counts`]); None without the kernel counter or the tracer.
    fn tracer(&mut self, per_flow: bool) -> Result<Option<(Vec<ReasonCount>, Vec<(FlowKey, LayerDrops)>)>> {
        match (&self.kernel, &self.reason_names) {
            (Some(k), Some(names)) => Ok(Some(tracer_counts(k, names, &mut self.syms, per_flow)?)),
            _ => Ok(None),
        }
    }

    /// Moves the kernel counter's new loss records into its loss book.
    fn drain_kernel_loss(&mut self) {
        let (book, loss_iv_ns) = (&mut self.kernel_loss, self.loss_iv_ns);
        if let Some(k) = &self.kernel {
            k.drain_loss(|r| {
                if let Some(ev) = r.event() {
                    book.apply(r.key, ev, r.rx_ns, loss_iv_ns);
                }
            });
        }
    }

    /// Refreshes the live page's counters when a scrape waits for them.
    fn publish_live(&mut self) -> Result<()> {
        if !self.live.as_ref().is_some_and(|(l, _)| l.wanted()) {
            return Ok(());
        }
        let reasons = self.tracer(false)?.map(|(r, _)| r);
        let socket_drops = self.socket.as_ref().map(|s| s.view.lock().expect("socket view lock").drops);
        let snaps = self.snap_all()?;
        if let Some((l, _)) = &self.live {
            l.publish(live::RecvLive { snaps, socket_drops, reasons });
        }
        Ok(())
    }

    /// Samples the flows' arrival gaps (dropouts): the kernel counter's flows, else the socket's.
    fn poll_gaps(&mut self) -> Result<()> {
        let flows = match (&self.kernel, &self.socket) {
            (Some(k), _) => k.flows()?,
            (None, Some(s)) => s.snapshot().flows,
            _ => Vec::new(),
        };
        if flows.len() <= MAX_GAP_FLOWS {
            self.gaps.observe(&flows);
        }
        Ok(())
    }

    /// At each --interval: the interval lines, with what each layer dropped since the last ones. Returns the
    /// snapshots it took (None when no interval was due).
    fn interval(&mut self, t: &mut Ticks, now: u64) -> Result<Option<Vec<(&'static str, Snapshot)>>> {
        match self.p.interval {
            Some(iv) if now - t.last_tick >= iv.as_nanos() as u64 => {}
            _ => return Ok(None),
        }
        let s = self.snap_all()?;
        let drops = match self.tracer(false)? {
            Some((reasons, _)) => {
                let now_drops = LayerDrops::of(&reasons);
                let mut d = now_drops.since(&t.prev_drops);
                t.prev_drops = now_drops;
                let driver = sys::ethtool::stats(&self.p.iface.name).ok().map(|s| attrib::driver_drops(&s));
                d.driver = driver.zip(t.prev_driver).map(|(a, b)| a.saturating_sub(b));
                t.prev_driver = driver.or(t.prev_driver);
                Some(d)
            }
            None => None,
        };
        let secs_since = |x: u64| (x - t.start) as f64 / 1e9;
        let (t0, t1) = (secs_since(t.last_tick), secs_since(now));
        let prev = Prev { totals: &mut t.prev, hists: &mut t.prev_hists, local: &t.local };
        interval_lines(&mut self.out, &s, drops, prev, t0, t1)?;
        t.last_tick = now;
        Ok(Some(s))
    }

    /// Whether to stop: every flow any counter saw has ended (and, with --expect-flows, that many were seen),
    /// --grace ago. `snaps`: this step's snapshots, if the interval took them.
    fn ended(&self, t: &mut Ticks, now: u64, snaps: Option<Vec<(&'static str, Snapshot)>>) -> Result<bool> {
        let s = match snaps {
            Some(s) => s,
            None => self.snap_all()?,
        };
        let seen = s.iter().map(|(_, c)| c.flows.len()).max().unwrap_or(0);
        let all_ended = seen > 0
            && s.iter().all(|(_, c)| c.flows.iter().all(|(_, f)| f.ended != 0))
            && (self.p.expect_flows == 0 || seen >= self.p.expect_flows as usize);
        if !all_ended {
            t.ended_at = None;
        } else if t.ended_at.is_none() {
            t.ended_at = Some(now);
        }
        Ok(t.ended_at.is_some_and(|e| now - e >= self.p.grace.as_nanos() as u64))
    }

    /// After the loop: the socket counter stopped (a failure is kept for after the summaries, so it does not cost
    /// the kernel counter's), the final counts, the live page's last values, --leave-window, the last loss
    /// records; the kernel counter detached.
    fn finish(&mut self) -> Result<Finals> {
        let socket_error = self.socket.as_mut().and_then(|s| s.finish().err());
        // iperf2's report, and its socket closed, before the tracer is read.
        let iperf2 = self.iperf2.take().map(|s| s.stop(IPERF2_WAIT));
        let snaps = self.snap_all()?;
        let socket_drops = self.socket.as_ref().map(|s| s.view.lock().expect("socket view lock").drops);
        // The tracer's counts, read after the socket closed.
        let (reasons, flow_drops) = match self.tracer(true)? {
            Some((r, f)) => (Some(r), Some(f)),
            None => (None, None),
        };
        let tracer_keys_full = match (&self.kernel, &self.reason_names) {
            (Some(k), Some(_)) => Some(k.global(GlobalCounter::DropKeysFull)?),
            _ => None,
        };
        if let Some((l, _)) = &self.live {
            l.finish(live::RecvLive { snaps: snaps.clone(), socket_drops, reasons: reasons.clone() });
        }
        let host_end = HostCounters::read(&self.p.iface.name);
        let driver_end = sys::ethtool::stats(&self.p.iface.name).ok();
        let leave = self.leave_window()?;
        let kernel_mode = self.kernel.as_ref().map(|k| k.mode());
        // The last loss records, and whether the ring buffer lost any.
        self.drain_kernel_loss();
        let kernel_events_lost = match &self.kernel {
            Some(k) => Some(k.global(GlobalCounter::LossEventsLost)?),
            None => None,
        };
        self.kernel = None;
        let socket_loss = self.socket.as_ref().map(|s| std::mem::take(&mut s.view.lock().expect("socket view lock").loss));
        Ok(Finals {
            socket_error,
            snaps,
            socket_drops,
            reasons,
            flow_drops,
            tracer_keys_full,
            host_end,
            driver_end,
            leave,
            kernel_mode,
            kernel_events_lost,
            socket_loss,
            iperf2,
        })
    }

    /// --leave-window: leaves the group(s) and keeps the kernel counter counting what still arrives.
    fn leave_window(&mut self) -> Result<Option<Left>> {
        let (Some(fd), Some(k)) = (self.keep.take(), &self.kernel) else {
            return Ok(None);
        };
        let p = &self.p;
        let before = k.flows()?;
        let at = clock::tai_ns();
        for g in &p.groups {
            match (p.source, p.iface.addr) {
                (Some(src), Some(ifa)) => net::leave_source(&fd, *g, src, ifa),
                _ => net::leave_group(&fd, *g, p.iface.index),
            }
            .with_context(|| format!("cannot leave {g} on {}", p.iface.name))?;
        }
        drop(fd);
        let until = clock::mono_ns() + (self.p.leave_window * 1e9) as u64;
        while clock::mono_ns() < until && !sys::stop_requested() {
            std::thread::sleep(STEP.min(Duration::from_nanos(until.saturating_sub(clock::mono_ns()))));
        }
        let after = k.flows()?;
        Ok(Some((at, clock::tai_ns(), before, after)))
    }

    /// The summaries, the layers (with --sink they end at the driver, where the counter dropped what it
    /// counted), the IGMP timing; then the socket counter's failure, or --max-loss's verdict.
    fn report(mut self, mut f: Finals, duration: f64) -> Result<ExitCode> {
        let worst = self.summaries(&f, duration)?;
        let layers = match f.reasons.take().or_else(|| self.p.sink.on.then(Vec::new)) {
            Some(reasons) => Some(self.layers(&f, reasons, duration)?),
            None => None,
        };
        match (f.iperf2.take(), layers) {
            (Some(Ok(r)), Some(l)) => {
                let kernel = f.snaps.iter().find(|(n, _)| *n == "kernel").map(|(_, s)| s.flows.as_slice()).unwrap_or_default();
                let ended = kernel.iter().filter(|(_, s)| s.ended != 0).count() as u64;
                let c = crate::recv::iperf2_server::compare(&r, &l, ended);
                self.out.print(&c)?;
            }
            (Some(Ok(_)), None) => eprintln!("mcblast: no comparison with iperf2: the drop tracer is not running"),
            (Some(Err(e)), _) => eprintln!("mcblast: no comparison with iperf2: {e:#}"),
            (None, _) => {}
        }
        self.igmp(&f)?;
        if let Some(e) = f.socket_error {
            return Err(e.context("the socket counter failed (the summaries above are up to that point)"));
        }
        if let Some(max) = self.p.max_loss
            && worst > max
        {
            self.out.print(&RecvNotice::of(Notice::MaxLoss { loss_pct: worst, max_loss_pct: max }))?;
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Each counter's summary record (and human form) and its loss records; with both counters, their comparison.
    /// Returns the worst flow's loss (%).
    fn summaries(&mut self, f: &Finals, duration: f64) -> Result<f64> {
        let local = clock::LocalClock { synced: self.synced, ..clock::local() };
        let mut worst: f64 = 0.0;
        let mut reports: Vec<(&'static str, Vec<FlowReport>)> = Vec::new();
        for (name, snap) in &f.snaps {
            let fragmented = |k: &FlowKey| snap.fragmented.iter().find(|(fk, _)| fk == k).map_or(0, |(_, n)| *n);
            let flows: Vec<FlowReport> = snap
                .flows
                .iter()
                .map(|(k, s)| FlowReport {
                    fragmented: (*name == "kernel").then(|| fragmented(k)),
                    ..output::flow_report(k, s, &local)
                })
                .collect();
            worst = flows.iter().map(|f| f.loss_pct).fold(worst, f64::max);
            let summary = RecvSummary {
                role: "recv",
                counter: name,
                duration_s: duration,
                format: self.p.reader.format.name(),
                foreign: snap.foreign,
                flows: flows.clone(),
                map_full: snap.map_full,
                fragments: snap.fragments,
                later_fragments: snap.later_fragments,
                unmatched_fragments: snap.unmatched_fragments,
                other_group: snap.other_group,
                coalesced: snap.coalesced,
                unwalked: snap.unwalked,
            };
            let socket_drops = if *name == "socket" { f.socket_drops } else { None };
            self.out.print(&SummaryLine { summary: &summary, socket_drops, verbose: self.p.verbose })?;
            let book = if *name == "kernel" { Some(&self.kernel_loss) } else { f.socket_loss.as_ref() };
            if let Some(book) = book {
                let events_lost = if *name == "kernel" { f.kernel_events_lost } else { None };
                self.out.print(&book.record(name, self.loss_iv_ns, events_lost))?;
            }
            reports.push((name, flows));
        }
        if let [(_, k), (_, s)] = reports.as_slice() {
            self.out.human(&compare(k, s))?;
        }
        Ok(worst)
    }

    /// The loss waterfall from both counters, the drop tracer's `reasons`, the host and driver counters.
    fn layers(&mut self, f: &Finals, reasons: Vec<ReasonCount>, duration: f64) -> Result<attrib::Layers> {
        let finals = &f.snaps;
        let total = |name: &str| finals.iter().find(|(n, _)| *n == name).map(|(_, s)| s.flows.as_slice()).unwrap_or_default();
        let sum = |flows: &[(FlowKey, FlowState)], f: fn(&FlowState) -> u64| flows.iter().map(|(_, s)| f(s)).sum::<u64>();
        let (kf, sf) = (total("kernel"), total("socket"));
        let m = Measured {
            expected: sum(kf, |s| s.expected()),
            at_driver: sum(kf, |s| s.received),
            path_lost: sum(kf, |s| s.lost),
            path_duplicates: sum(kf, |s| s.duplicates + s.stale),
            // The application: the socket counter, or iperf2 beside the kernel counter.
            read: match &f.iperf2 {
                Some(Ok(r)) => r.read,
                _ => sum(sf, |s| s.received),
            },
            so_rxq_ovfl: f.socket_drops.unwrap_or(0),
            fragments: finals
                .iter()
                .find(|(n, _)| *n == "kernel")
                .map_or(0, |(_, s)| s.fragmented.iter().map(|(_, n)| n).sum()),
            // The program counts the data datagrams it dropped after counting them in their flow (a fragmented
            // one with all its matched fragments).
            sunk: finals.iter().find(|(n, _)| *n == "kernel").and_then(|(_, s)| s.sunk).unwrap_or(0),
        };
        let mut layers = attrib::layers(&m, reasons, f.host_end.since(&self.host_start));
        if f.kernel_mode == Some("tc") {
            layers.counted_at = "tc ingress";
        }
        if matches!(f.iperf2, Some(Ok(_))) {
            layers.reader = "iperf2";
        }
        if let Some(names) = &self.reason_names {
            layers.drop_reasons = names.available();
        }
        if let (Some(a), Some(b)) = (&self.driver_start, &f.driver_end) {
            let (driver, other) = attrib::driver_layer(a, b);
            (layers.driver, layers.ethtool) = (Some(driver), Some(other));
        }
        let counted = |name: &str| finals.iter().find(|(n, _)| *n == name).map(|(_, s)| s.flows.as_slice());
        let fragmented = finals.iter().find(|(n, _)| *n == "kernel").map(|(_, s)| s.fragmented.as_slice());
        layers.flows = attrib::flow_layers(counted("kernel"), counted("socket"), fragmented, f.flow_drops.as_deref());
        layers.tracer_keys_full = f.tracer_keys_full.unwrap_or(0);
        self.out.print(&LayersSummary { role: "recv", counter: "layers", duration_s: duration, layers: layers.clone() })?;
        Ok(layers)
    }

    /// The IGMP timing record: join to first datagram, the queries seen, the gaps, --leave-window's leave.
    fn igmp(&mut self, f: &Finals) -> Result<()> {
        let (counter, flows) = f
            .snaps
            .iter()
            .find(|(n, _)| *n == "kernel")
            .or(f.snaps.first())
            .map(|(n, s)| (*n, s.flows.as_slice()))
            .unwrap_or(("none", &[]));
        let (queries, unavailable) = match self.query_watch.take() {
            Some(Ok(w)) => (w.finish(), None),
            Some(Err(e)) => (Vec::new(), Some(e)),
            None => (Vec::new(), None), // taken once, here
        };
        let l = f.leave.as_ref().map(|(at, end, before, after)| crate::recv::igmp_timing::Leave {
            at_ns: *at,
            window_end_ns: *end,
            before,
            after,
        });
        let mut r = crate::recv::igmp_timing::report(counter, &self.p.groups, self.join_ns, flows, &queries, &self.gaps.gaps, l.as_ref());
        r.queries_unavailable = unavailable;
        self.out.print(&r)?;
        Ok(())
    }
}

/// What the interval lines count from: per counter its totals, per counter and flow its histograms, at the last
/// interval line.
struct Prev<'a> {
    totals: &'a mut HashMap<&'static str, (u64, u64, i64)>,
    hists: &'a mut HashMap<(&'static str, FlowKey), Box<output::FlowMark>>,
    local: &'a clock::LocalClock,
}

/// A counter's delay and IPDV percentiles since the last interval line, over its flows and per flow (each flow
/// that received or lost datagrams since); keeps this line's counts and histograms in `prev`.
fn interval_dist(
    name: &'static str,
    s: &Snapshot,
    prev: &mut HashMap<(&'static str, FlowKey), Box<output::FlowMark>>,
    local: &clock::LocalClock,
) -> (output::IntervalDist, Vec<output::FlowInterval>) {
    let mut all = output::IntervalHists::default();
    let mut flows = Vec::new();
    for (key, st) in &s.flows {
        let before = prev.insert((name, *key), output::FlowMark::of(st));
        let before = before.as_deref();
        let trusted = output::delay_trusted(st, local);
        all.add(st, before, trusted);
        let received = st.received.saturating_sub(before.map_or(0, |b| b.received));
        let lost = st.lost as i64 - before.map_or(0, |b| b.lost as i64);
        if received == 0 && lost == 0 {
            continue;
        }
        let mut one = output::IntervalHists::default();
        one.add(st, before, trusted);
        let (sender, group) = output::flow_names(key);
        flows.push(output::FlowInterval { sender, group, run: key.run, flow: key.flow, received, lost, dist: one.dist() });
    }
    (all.dist(), flows)
}

/// An interval's delay p99 for its human line ("" without delays), marked when the clocks are not synchronised.
fn delay_p99(d: &output::IntervalDist) -> String {
    match (d.delay_p99_us, d.delay_trusted) {
        (Some(p), Some(true)) => format!(" p99 {p:>7.0} us"),
        (Some(p), _) => format!(" p99 {p:>7.0} us (untrusted)"),
        _ => String::new(),
    }
}

fn interval_lines(
    out: &mut Printer,
    snaps: &[(&'static str, Snapshot)],
    drops: Option<LayerDrops>,
    prev: Prev,
    t0: f64,
    t1: f64,
) -> Result<()> {
    let dt = (t1 - t0).max(1e-9);
    let mut parts = Vec::new();
    for (name, s) in snaps {
        let (r, b, l) = s.totals();
        let (pr, pb, pl) = prev.totals.insert(name, (r, b, l)).unwrap_or((0, 0, 0));
        let (dist, flows) = interval_dist(name, s, prev.hists, prev.local);
        let iv = RecvInterval {
            role: "recv",
            counter: name,
            start_s: t0,
            end_s: t1,
            received: r - pr,
            bytes: b - pb,
            lost: l - pl,
            rate_bps: (b - pb) as f64 * 8.0 / dt,
            rate_pps: (r - pr) as f64 / dt,
            dist,
            flows,
        };
        parts.push(IntervalPart::Counter(iv));
    }
    if let Some(d) = drops {
        parts.push(IntervalPart::Layers(LayersInterval {
            role: "recv",
            counter: "layers",
            start_s: t0,
            end_s: t1,
            kernel_dropped: d.kernel,
            unspecified: d.unspecified,
            no_listener: d.no_listener,
            socket_dropped: d.socket,
            unread_at_close: d.unread,
            reassembly_failed: d.reassembly,
            driver_dropped: d.driver,
        }));
    }
    out.print_group(&IntervalLine { start_s: t0, end_s: t1, parts })?;
    Ok(())
}

/// A counter's `interval` line, or the drop tracer's (`"counter":"layers"`).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum IntervalPart {
    Counter(RecvInterval),
    Layers(LayersInterval),
}

impl output::Record for IntervalPart {
    const TYPE: &'static str = "interval";
    /// Its piece of the interval's human line.
    fn human(&self) -> String {
        match self {
            IntervalPart::Counter(iv) => format!(
                "  {}: {:>8} dgrams {:>14} lost {:>6}{}",
                iv.counter,
                iv.received,
                output::fmt_bps(iv.rate_bps),
                iv.lost,
                delay_p99(&iv.dist)
            ),
            IntervalPart::Layers(d) => {
                format!("  dropped: kernel {:>6} socket {:>6}", d.kernel_dropped, d.socket_dropped)
            }
        }
    }
}

/// An interval's lines, each counter's and the drop tracer's: one human line for them all.
struct IntervalLine {
    start_s: f64,
    end_s: f64,
    parts: Vec<IntervalPart>,
}

impl output::Group for IntervalLine {
    type Item = IntervalPart;
    fn records(&self) -> &[IntervalPart] {
        &self.parts
    }
    fn human(&self) -> String {
        let mut t = format!("[{:6.1}-{:6.1} s]", self.start_s, self.end_s);
        for p in &self.parts {
            t.push_str(&output::Record::human(p));
        }
        t
    }
}

impl output::Record for RecvBegin {
    const TYPE: &'static str = "begin";
    fn human(&self) -> String {
        let at = |mode: &str| if mode == "tc" { "tc ingress, tcx".to_string() } else { format!("XDP {mode}") };
        let kernel = self.xdp_mode.zip(self.attach_reason.as_deref());
        format!(
            "mcblast recv on {} (ifindex {}), group {} port {}{}; counters: {}{}{}",
            self.interface,
            self.ifindex,
            self.groups.join(","),
            self.port,
            self.source.as_ref().map(|s| format!(" from {s}")).unwrap_or_default(),
            self.counters.join(" + "),
            kernel.map(|(mode, why)| format!(" ({}: {why})", at(mode))).unwrap_or_default(),
            match (self.sink, &self.sink_reason) {
                (true, Some(why)) => format!("; sink (auto: {why}): counted datagrams are dropped there"),
                (true, None) => "; sink: counted datagrams are dropped there".into(),
                (false, Some(why)) if self.counters == ["kernel"] => format!("; no sink (auto: {why})"),
                (false, _) => String::new(),
            },
        )
    }
}

/// A receiver's notice (`"type":"notice"`): what a person should be told that no other line says in words.
#[derive(serde::Serialize)]
struct RecvNotice {
    role: &'static str,
    #[serde(flatten)]
    notice: Notice,
}

impl RecvNotice {
    fn of(notice: Notice) -> RecvNotice {
        RecvNotice { role: "recv", notice }
    }
}

/// What a notice is about: its `notice` name and its numbers.
#[derive(serde::Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
enum Notice {
    /// The kernel granted the socket less than half the receive buffer `--rcvbuf` asked for (bytes).
    RcvbufSmall { rcvbuf_granted: usize, rcvbuf_asked: usize },
    /// The worst flow's loss (%) exceeded `--max-loss`: the exit status is 1.
    MaxLoss { loss_pct: f64, max_loss_pct: f64 },
    /// The system clock stepped by `step_us` (CLOCK_TAI against CLOCK_MONOTONIC) before `at_s` into the run; the
    /// kernel counter (no TAI helper) now adds the new offset.
    ClockStep { step_us: f64, at_s: f64 },
    /// `--sink auto` turned the sink off `at_s` into the run, because of `why` (a socket bound to the port).
    SinkOff { why: String, at_s: f64 },
}

impl output::Record for RecvNotice {
    const TYPE: &'static str = "notice";
    fn human(&self) -> String {
        match self.notice {
            Notice::RcvbufSmall { rcvbuf_granted, rcvbuf_asked } => {
                format!("note: socket receive buffer is {rcvbuf_granted} bytes, not the {rcvbuf_asked} asked for")
            }
            Notice::MaxLoss { loss_pct, max_loss_pct } => {
                format!("loss {loss_pct:.3} % exceeds --max-loss {max_loss_pct} %")
            }
            Notice::ClockStep { step_us, at_s } => format!(
                "note: the system clock stepped by {step_us:+.1} us before {at_s:.1} s; the kernel counter's delays \
                 of datagrams received in the 0.1 s before are off by it (this kernel has no TAI helper)"
            ),
            Notice::SinkOff { ref why, at_s } => format!(
                "note: the sink is off from {at_s:.1} s: {why} now (what came before was dropped after counting;                  --sink off keeps it off from the start)"
            ),
        }
    }
}

/// A counter's summary line, with what its human table shows besides: the socket's buffer drops and `-v`.
#[derive(serde::Serialize)]
struct SummaryLine<'a> {
    #[serde(flatten)]
    summary: &'a RecvSummary,
    #[serde(skip)]
    socket_drops: Option<u64>,
    #[serde(skip)]
    verbose: bool,
}

impl output::Record for SummaryLine<'_> {
    const TYPE: &'static str = "summary";
    fn human(&self) -> String {
        human_summary(self.summary, self.socket_drops, self.verbose)
    }
}

/// `verbose` (-v): a second table with every delay and IPDV percentile per flow.
fn human_summary(s: &RecvSummary, socket_drops: Option<u64>, verbose: bool) -> String {
    let mut t = format!("--- {} counter, {:.1} s ---\n", s.counter, s.duration_s);
    // iperf2 flows are port pairs: the group's port and the sender's.
    let iperf2 = s.format == Format::Iperf2.name();
    let (run, flow) = if iperf2 { ("port", "sport") } else { ("run", "flow") };
    t.push_str(&format!(
        "{:<15} {:<15} {:>8} {:>5} {:>10} {:>8} {:>8} {:>6} {:>5} {:>10}  {}\n",
        "sender", "group", run, flow, "received", "lost", "loss%", "reord", "dup", "jitter_us", "delay_us min/mean/p99/max"
    ));
    for f in &s.flows {
        let delay = f
            .delay
            .as_ref()
            .map(|d| {
                format!(
                    "{:.0}/{:.0}/{:.0}/{:.0}{}",
                    d.min_us,
                    d.mean_us,
                    d.percentiles.p99_us,
                    d.max_us,
                    if d.trusted { "" } else { " (clocks not synchronised)" }
                )
            })
            .unwrap_or_else(|| "-".into());
        t.push_str(&format!(
            "{:<15} {:<15} {:>8} {:>5} {:>10} {:>8} {:>8.3} {:>6} {:>5} {:>10.1}  {}{}\n",
            f.sender,
            f.group,
            if iperf2 { f.run.to_string() } else { format!("{:x}", f.run) },
            f.flow,
            f.received,
            f.lost,
            f.loss_pct,
            f.reordered,
            f.duplicates,
            f.jitter_us,
            delay,
            if f.ended { "" } else { "  (no end marker: loss after the last datagram is unknown)" }
        ));
    }
    if s.flows.is_empty() {
        t.push_str(&format!("(no {} flows seen)\n", s.format));
    }
    if verbose && !s.flows.is_empty() {
        t.push_str(&percentile_table(s, run, flow, iperf2));
    }
    t.push_str(&format!("foreign datagrams: {}", s.foreign));
    if let Some(m) = s.map_full.filter(|m| *m > 0) {
        t.push_str(&format!(", flows not tracked (map full): {m}"));
    }
    if let Some(o) = s.other_group.filter(|o| *o > 0) {
        t.push_str(&format!(", for groups or sources not joined (not counted): {o}"));
    }
    if let Some(d) = socket_drops {
        t.push_str(&format!(", socket buffer drops (SO_RXQ_OVFL): {d}"));
    }
    if let Some(c) = s.coalesced.filter(|c| *c > 0) {
        t.push_str(&format!("\n{c} packets carried several datagrams each (GSO or GRO), each datagram counted on its own"));
    }
    if let Some(u) = s.unwalked.filter(|u| *u > 0) {
        t.push_str(&format!(
            "\nwarning: {u} datagrams were in packets of more than {} datagrams and were not counted: \
             their flows show them as lost; count at another attach point (--xdp-mode native) or send fewer per GSO batch",
            mcblast_common::wire::MAX_WALKED
        ));
    }
    let later = s.later_fragments.unwrap_or(0);
    let unmatched = s.unmatched_fragments.unwrap_or(0);
    if s.fragments.is_some_and(|f| f > 0) || later > 0 || unmatched > 0 {
        t.push_str(&format!(
            "\n{} datagrams arrived fragmented, counted in their flows by their first fragment ({later} later \
             fragments matched to them, {unmatched} unmatched: before their first fragment, or not mcblast's); \
             a lost fragment loses the whole datagram: send datagrams that fit the MTU",
            s.fragments.unwrap_or(0)
        ));
    }
    t
}

/// Per flow, one-way delay and IPDV percentiles (µs): p50, p90, p99, p99.9, p99.99 and max.
fn percentile_table(s: &RecvSummary, run: &str, flow: &str, iperf2: bool) -> String {
    let cols = |p: &output::Percentiles, max: f64| {
        format!(
            "{:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.p9999_us, max
        )
    };
    let dash = format!("{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-", "-", "-");
    let head = format!("{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}", "p50", "p90", "p99", "p99.9", "p99.99", "max");
    let mut t = format!(
        "{:<15} {:<15} {:>8} {:>5}  {:<6} {head}  {:<6} {head}\n",
        "sender", "group", run, flow, "delay", "ipdv"
    );
    for f in &s.flows {
        let delay = f.delay.as_ref().map(|d| cols(&d.percentiles, d.max_us)).unwrap_or_else(|| dash.clone());
        let ipdv = f.ipdv.as_ref().map(|d| cols(&d.percentiles, d.max_us)).unwrap_or_else(|| dash.clone());
        let untrusted = f.delay.as_ref().is_some_and(|d| !d.trusted);
        t.push_str(&format!(
            "{:<15} {:<15} {:>8} {:>5}  {:<6} {delay}  {:<6} {ipdv}{}\n",
            f.sender,
            f.group,
            if iperf2 { f.run.to_string() } else { format!("{:x}", f.run) },
            f.flow,
            "µs",
            "µs",
            if untrusted { "  (delay: clocks not synchronised)" } else { "" }
        ));
    }
    t
}

/// One line saying whether the kernel and socket views agree, flow by flow.
fn compare(kernel: &[FlowReport], socket: &[FlowReport]) -> String {
    let key = |f: &FlowReport| (f.sender.clone(), f.group.clone(), f.run, f.flow);
    let sk: HashMap<_, _> = socket.iter().map(|f| (key(f), f)).collect();
    let mut diffs = Vec::new();
    for k in kernel {
        match sk.get(&key(k)) {
            None => diffs.push(format!("flow {} of {} seen only by the kernel counter", k.flow, k.sender)),
            Some(s) if (s.received, s.lost, s.duplicates) != (k.received, k.lost, k.duplicates) => diffs.push(format!(
                "flow {} of {}: kernel received {} lost {}, socket received {} lost {} (the difference died between the driver and the application)",
                k.flow, k.sender, k.received, k.lost, s.received, s.lost
            )),
            Some(_) => {}
        }
    }
    if socket.len() > kernel.len() {
        diffs.push(format!("{} flow(s) seen only by the socket counter", socket.len() - kernel.len()));
    }
    if diffs.is_empty() {
        "kernel and socket counters agree on every flow".into()
    } else {
        diffs.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_is_a_json_line_per_counter_and_one_human_line() {
        use crate::output::{Group, Record};
        let iv = RecvInterval {
            role: "recv",
            counter: "kernel",
            start_s: 1.0,
            end_s: 2.0,
            received: 700,
            bytes: 1_000_000,
            lost: 3,
            rate_bps: 8e6,
            rate_pps: 700.0,
            dist: output::IntervalDist { delay_p99_us: Some(26.6), delay_trusted: Some(true), ..Default::default() },
            flows: Vec::new(),
        };
        let layers = LayersInterval {
            role: "recv",
            counter: "layers",
            start_s: 1.0,
            end_s: 2.0,
            kernel_dropped: 4,
            unspecified: 0,
            no_listener: 0,
            socket_dropped: 5,
            unread_at_close: 0,
            reassembly_failed: 0,
            driver_dropped: None,
        };
        let json = serde_json::to_value(IntervalPart::Counter(iv.clone())).unwrap();
        assert_eq!(json, serde_json::to_value(&iv).unwrap(), "the part's JSON is the counter's line");
        let parts = vec![IntervalPart::Counter(iv), IntervalPart::Layers(layers)];
        let line = IntervalLine { start_s: 1.0, end_s: 2.0, parts };
        assert_eq!(line.records().len(), 2);
        assert_eq!(line.records()[1].human(), "  dropped: kernel      4 socket      5");
        assert_eq!(
            line.human(),
            "[   1.0-   2.0 s]  kernel:      700 dgrams    8.00 Mbit/s lost      3 p99      27 us  \
             dropped: kernel      4 socket      5"
        );
    }

    #[test]
    fn notices_have_a_json_form_and_the_old_text() {
        use crate::output::Record;
        let small = RecvNotice::of(Notice::RcvbufSmall { rcvbuf_granted: 425984, rcvbuf_asked: 4 << 20 });
        assert_eq!(
            serde_json::to_string(&small).unwrap(),
            r#"{"role":"recv","notice":"rcvbuf_small","rcvbuf_granted":425984,"rcvbuf_asked":4194304}"#
        );
        assert_eq!(small.human(), "note: socket receive buffer is 425984 bytes, not the 4194304 asked for");
        let loss = RecvNotice::of(Notice::MaxLoss { loss_pct: 10.0, max_loss_pct: 5.0 });
        assert_eq!(
            serde_json::to_string(&loss).unwrap(),
            r#"{"role":"recv","notice":"max_loss","loss_pct":10.0,"max_loss_pct":5.0}"#
        );
        assert_eq!(loss.human(), "loss 10.000 % exceeds --max-loss 5 %");
        let step = RecvNotice::of(Notice::ClockStep { step_us: 5000.25, at_s: 2.6 });
        assert_eq!(
            serde_json::to_string(&step).unwrap(),
            r#"{"role":"recv","notice":"clock_step","step_us":5000.25,"at_s":2.6}"#
        );
        assert!(step.human().starts_with("note: the system clock stepped by +5000.2 us before 2.6 s;"), "{}", step.human());
    }

    #[test]
    fn verbose_summary_adds_every_percentile() {
        let mut st = FlowState::new();
        for s in 0..100u64 {
            let _ = st.on_data(s, 100, 1_000_000 * s, 1_000_000 * s + 20_000 + 1000 * (s % 10), 0, 7);
        }
        let key = FlowKey {
            sender: u32::from_ne_bytes([10, 0, 0, 1]),
            group: u32::from_ne_bytes([239, 0, 0, 1]),
            run: 9,
            flow: 0,
        };
        let local = clock::LocalClock { id: 8, synced: false, tai_offset: 0 };
        let s = RecvSummary {
            role: "recv",
            counter: "kernel",
            duration_s: 1.0,
            format: "mcblast",
            foreign: 0,
            flows: vec![output::flow_report(&key, &st, &local)],
            map_full: None,
            fragments: None,
            later_fragments: None,
            unmatched_fragments: None,
            other_group: None,
            coalesced: None,
            unwalked: None,
        };
        let short = human_summary(&s, None, false);
        assert!(short.contains("delay_us min/mean/p99/max") && !short.contains("p99.99"), "{short}");
        let long = human_summary(&s, None, true);
        assert!(long.starts_with(&short[..short.find("foreign").unwrap()]), "the first table stays as it was");
        let head = long.lines().find(|l| l.contains("p99.99")).expect("a percentile table");
        assert_eq!(head.matches("p99.99").count(), 2, "delay and IPDV: {head}");
        let d = s.flows[0].delay.as_ref().unwrap();
        let row =
            long.lines().find(|l| l.contains("(delay: clocks not synchronised)")).expect("untrusted delay marked");
        assert!(
            row.contains(&format!("{:.1}", d.percentiles.p50_us)) && row.contains(&format!("{:.1}", d.max_us)),
            "{row}"
        );
    }
}
