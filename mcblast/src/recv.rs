//! `mcblast recv`: join the group(s), count every flow in the kernel (eBPF
//! XDP) and/or in a socket (recvmmsg) with the same tracker, report per
//! interval and at the end.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use mcblast_common::{Config, FlowKey, FlowState, GlobalCounter, Header};

use crate::cli::RecvArgs;
use crate::mcast::check_groups;
use crate::clock;
use crate::iface::{self, Iface};
use crate::attrib::{self, HostCounters, LayerDrops, Measured, ReasonCount, ReasonNames, Symbols};
use crate::fanout::LossBook;
use crate::kernel::{DropTracer, KernelCounter};
use crate::output::{self, FlowReport, LayersInterval, LayersSummary, Printer, RecvBegin, RecvInterval, RecvSummary};
use crate::sys::{self, net};

/// Which counters `recv` runs (`--counter`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterMode {
    Kernel,
    Socket,
    Both,
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
        run_filter: Option<u32>,
        read_delay: Duration,
        loss_iv_ns: u64,
    ) -> SocketCounter {
        let view = Arc::new(Mutex::new(SocketView::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (v, s) = (view.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("mcblast-sock".into())
            .spawn(move || -> Result<()> {
                let r = read_loop(&fd, &v, &s, default_group, run_filter, read_delay, loss_iv_ns);
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
    run_filter: Option<u32>,
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
                match Header::parse_datagram(buf) {
                    Ok(h) if run_filter.is_none_or(|r| r == h.run) => {
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
    })
}

/// Longest duration a flag may ask for (115 days).
const MAX_SECS: f64 = 1e7;

/// Longest the socket counter keeps reading its queue after the stop.
const DRAIN: Duration = Duration::from_millis(200);

/// How often the arrival gaps (dropouts) are sampled, and for at most how many flows.
const GAP_POLL: Duration = Duration::from_millis(100);
const MAX_GAP_FLOWS: usize = 256;

/// Longest a scrape waits for the main loop to refresh the live counters.
const LIVE_WAIT: Duration = Duration::from_millis(500);

/// How often the receiver checks whether every flow has ended.
const END_CHECK: Duration = Duration::from_millis(250);

/// The resolved receive plan.
struct Plan {
    iface: Iface,
    groups: Vec<Ipv4Addr>,
    port: u16,
    source: Option<Ipv4Addr>,
    kernel: bool,
    socket: bool,
    sink: bool,
    interval: Option<Duration>,
    time: Option<Duration>,
    grace: Duration,
}

fn plan(a: &RecvArgs) -> Result<Plan> {
    check_groups(&a.common.groups)?;
    let name = match &a.common.interface {
        Some(n) => n.clone(),
        None => iface::default_for_group(a.common.groups[0]).with_context(|| {
            format!(
                "no route for {} and no --interface: name the interface to join on, e.g. --interface eth0 (interfaces here: {})",
                a.common.groups[0],
                iface::names().join(", ")
            )
        })?,
    };
    let iface = iface::lookup(&name)?;
    if a.source.is_some() && iface.addr.is_none() {
        bail!("interface {} has no IPv4 address: a source-specific join (--source) needs one", iface.name);
    }
    let (kernel, socket) = match a.counter {
        CounterMode::Kernel => (true, false),
        CounterMode::Socket => (false, true),
        CounterMode::Both => (true, true),
    };
    if a.sink && a.counter != CounterMode::Kernel {
        bail!("--sink drops mcblast datagrams in the kernel counter, so no socket would see them: use --sink with --counter kernel");
    }
    if kernel && !(sys::has_capability(39) || sys::has_capability(21)) || kernel && !sys::has_capability(12) {
        bail!(
            "the kernel counter needs CAP_BPF and CAP_NET_ADMIN to load and attach its XDP program: run as root, or use --counter socket"
        );
    }
    let secs = |s: f64, what: &str| -> Result<Duration> {
        if (0.0..=MAX_SECS).contains(&s) {
            Ok(Duration::from_secs_f64(s))
        } else {
            bail!("{what} must be a number of seconds from 0 to {MAX_SECS:e}, not {s}")
        }
    };
    if a.leave_window > 0.0 && !kernel {
        bail!("--leave-window counts what arrives after the leave with the kernel counter: use --counter kernel or both");
    }
    secs(a.leave_window, "--leave-window")?;
    if a.run_id == Some(0) {
        bail!("--run-id 0 is not a run id: run ids are non-zero (the sender prints its run id)");
    }
    if let Some(p) = a.max_loss
        && !(0.0..=100.0).contains(&p)
    {
        bail!("--max-loss is a percentage from 0 to 100, not {p}");
    }
    Ok(Plan {
        groups: a.common.groups.clone(),
        port: a.common.port,
        source: a.source,
        kernel,
        socket,
        sink: a.sink,
        interval: Some(secs(a.common.interval, "--interval")?).filter(|d| !d.is_zero()),
        time: a.time.map(|t| secs(t, "--time")).transpose()?,
        grace: secs(a.grace, "--grace")?,
        iface,
    })
}

/// Runs `mcblast recv`.
pub fn run(a: RecvArgs) -> Result<ExitCode> {
    let p = plan(&a)?;
    let mut out = Printer::new(a.common.json);
    sys::install_stop_signals().context("installing signal handlers")?;
    if a.common.stop_on_stdin_eof {
        sys::stop_on_stdin_eof();
    }
    // The Prometheus endpoint first: a bad address stops the run before anything is attached.
    let live = match a.common.prometheus {
        Some(addr) => {
            let live = crate::prom::Live::new(crate::prom::RecvLive::default());
            let (l, local) = (live.clone(), clock::local());
            let server = crate::prom::serve(addr, move || crate::prom::recv_page(&l.fresh(LIVE_WAIT), &local))?;
            Some((live, server))
        }
        None => None,
    };

    // Attach the kernel counter before joining, so the first datagram is counted.
    let mut reason_names: Option<ReasonNames> = None;
    let mut kernel = if p.kernel {
        let cfg = Config {
            port: p.port,
            _pad: 0,
            run_filter: a.run_id.unwrap_or(0),
            sink: p.sink.into(),
            clock: clock::clock_id(),
            mono_to_tai_ns: 0, // measured by attach where the kernel needs it
        };
        let mut k = KernelCounter::attach(&p.iface, a.xdp_mode, cfg)?;
        // Count only the groups (and source) we join, as the socket does.
        let joined: Vec<_> = p.groups.iter().map(|g| (*g, p.source)).collect();
        k.set_groups(&joined)?;
        // Loss attribution needs both counters and the drop tracer; without
        // the tracer the receiver still counts, and says why there is no waterfall.
        if p.socket {
            match crate::btf::Btf::from_kernel()
                .and_then(|btf| ReasonNames::from_btf(&btf))
                .and_then(|names| k.trace_drops(&p.iface, names.locate_reason()?, DropTracer::Auto).map(|_| names))
            {
                Ok(names) => reason_names = Some(names),
                Err(e) => eprintln!("mcblast: no loss attribution (layers): {e:#}"),
            }
        }
        Some(k)
    } else {
        None
    };
    let host_start = HostCounters::read(&p.iface.name);
    // The driver's statistics (ethtool -S); None when unreadable.
    let driver_start = sys::ethtool::stats(&p.iface.name).ok();
    // Loss records are grouped by the report interval (1 s without one),
    // aligned to the TAI clock so receivers line up.
    let loss_iv_ns = p.interval.unwrap_or(Duration::from_secs(1)).as_nanos().max(1) as u64;
    let mut kernel_loss = LossBook::default();
    let mut drain_kernel_loss = |k: &KernelCounter| {
        k.drain_loss(|r| {
            if let Some(ev) = r.event() {
                kernel_loss.apply(r.key, ev, r.rx_ns, loss_iv_ns);
            }
        });
    };

    // The membership socket: the socket counter's own socket, or (kernel
    // only) an unbound socket that joins but never queues datagrams.
    let (fd, granted) = if p.socket {
        net::recv_socket(&net::RecvSocketOpts { port: p.port, rcvbuf: a.rcvbuf })
            .with_context(|| format!("cannot bind UDP port {}", p.port))?
    } else {
        (net::udp_socket().context("creating a socket")?, 0)
    };
    // Socket-level drops are charged only when they are this socket's.
    if let (Some(k), Some(_), true) = (kernel.as_mut(), &reason_names, p.socket) {
        let cookie = net::socket_cookie(&fd).context("cannot read the socket's cookie (SO_COOKIE)")?;
        k.set_drop_socket(cookie)?;
    }
    // IGMP timing: the queries that reach this host, and when the join was asked.
    let query_watch = crate::igmp_timing::QueryWatch::start().map_err(|e| format!("raw IGMP socket: {e}"));
    let join_ns = clock::tai_ns();
    let join = |fd: &OwnedFd| -> Result<()> {
        for g in &p.groups {
            match (p.source, p.iface.addr) {
                (Some(src), Some(ifa)) => net::join_source(fd, *g, src, ifa),
                _ => net::join_group(fd, *g, p.iface.index),
            }
            .with_context(|| format!("cannot join {g} on {}", p.iface.name))?;
        }
        Ok(())
    };
    join(&fd)?;
    // With --leave-window: a second membership that outlives the counting
    // socket, left explicitly at the end while the kernel counter counts.
    let mut keep = if a.leave_window > 0.0 && p.socket {
        let k = net::udp_socket().context("creating a socket")?;
        join(&k)?;
        Some(k)
    } else {
        None
    };
    // In kernel-only mode the joined socket is only kept alive (with its membership).
    let (mut socket, mut membership) = if p.socket {
        (Some(SocketCounter::start(fd, p.groups[0], a.run_id, Duration::from_micros(a.read_delay_us), loss_iv_ns)), None)
    } else {
        (None, Some(fd))
    };
    // Kernel only: that membership is the one --leave-window leaves.
    if a.leave_window > 0.0 && keep.is_none() {
        keep = membership.take();
    }

    let counters: Vec<&'static str> =
        [(p.kernel, "kernel"), (p.socket, "socket")].into_iter().filter(|c| c.0).map(|c| c.1).collect();
    let synced = clock::synchronized();
    let begin = RecvBegin {
        role: "recv",
        version: env!("CARGO_PKG_VERSION"),
        interface: p.iface.name.clone(),
        groups: p.groups.iter().map(|g| g.to_string()).collect(),
        port: p.port,
        source: p.source.map(|s| s.to_string()),
        counters: counters.clone(),
        xdp_mode: kernel.as_ref().map(|k| k.mode()),
        attach_reason: kernel.as_ref().map(|k| k.reason().to_string()),
        clock_synced: synced,
        drop_tracer: reason_names.is_some(),
        sink: p.sink,
    };
    out.emit("begin", &begin)?;
    out.human(&format!(
        "mcblast recv on {} (ifindex {}), group {} port {}{}; counters: {}{}{}",
        p.iface.name,
        p.iface.index,
        begin.groups.join(","),
        p.port,
        p.source.map(|s| format!(" from {s}")).unwrap_or_default(),
        counters.join(" + "),
        kernel
            .as_ref()
            .map(|k| {
                let at = if k.mode() == "tc" { "tc ingress, tcx".to_string() } else { format!("XDP {}", k.mode()) };
                format!(" ({at}: {})", k.reason())
            })
            .unwrap_or_default(),
        if p.sink { "; sink: counted datagrams are dropped there" } else { "" },
    ))?;
    if p.socket && granted < a.rcvbuf / 2 {
        out.human(&format!("note: socket receive buffer is {granted} bytes, not the {} asked for", a.rcvbuf))?;
    }

    let snap_all = |socket: &Option<SocketCounter>| -> Result<Vec<(&'static str, Snapshot)>> {
        let mut v = Vec::new();
        if let Some(k) = &kernel {
            v.push(("kernel", kernel_snapshot(k)?));
        }
        if let Some(s) = socket {
            v.push(("socket", s.snapshot()));
        }
        Ok(v)
    };

    // The drop tracer's counts by reason; kernel symbols (for NOT_SPECIFIED
    // drops) are loaded once, when first needed.
    let mut syms: Option<Symbols> = None;
    // With `per_flow`, also what they charged to each flow's layers.
    let mut tracer_counts =
        |k: &KernelCounter, names: &ReasonNames, per_flow: bool| -> Result<(Vec<ReasonCount>, Vec<(FlowKey, LayerDrops)>)> {
            let drops = k.drops()?;
            if syms.is_none() && drops.keys().any(|d| d.location != 0) {
                syms = Some(Symbols::load());
            }
            let symbol = |a| syms.as_ref().and_then(|s: &Symbols| s.lookup(a));
            let flows = if per_flow { attrib::flow_drops(&drops, names, symbol) } else { Vec::new() };
            Ok((attrib::reason_counts(&drops, names, symbol), flows))
        };
    let mut tracer_reasons =
        |k: &KernelCounter, names: &ReasonNames| -> Result<Vec<ReasonCount>> { Ok(tracer_counts(k, names, false)?.0) };

    let start = clock::mono_ns();
    let secs_since = |t: u64| (t - start) as f64 / 1e9;
    let mut last_tick = start;
    let mut prev: HashMap<&'static str, (u64, u64, i64)> = HashMap::new();
    let mut prev_drops = LayerDrops::default();
    let mut prev_driver = driver_start.as_deref().map(attrib::driver_drops);
    let mut ended_at: Option<u64> = None;
    let mut last_end_check = start;
    let mut gaps = crate::igmp_timing::GapTracker::default();
    let mut last_gap_poll = start;
    let step = Duration::from_millis(50);
    loop {
        std::thread::sleep(step);
        if let Some((l, _)) = &live
            && l.wanted()
        {
            let reasons = match (&kernel, &reason_names) {
                (Some(k), Some(names)) => Some(tracer_reasons(k, names)?),
                _ => None,
            };
            let socket_drops = socket.as_ref().map(|s| s.view.lock().expect("socket view lock").drops);
            l.publish(crate::prom::RecvLive { snaps: snap_all(&socket)?, socket_drops, reasons });
        }
        if let Some(k) = &kernel {
            drain_kernel_loss(k);
        }
        let now = clock::mono_ns();
        if now - last_gap_poll >= GAP_POLL.as_nanos() as u64 {
            last_gap_poll = now;
            let flows = match (&kernel, &socket) {
                (Some(k), _) => k.flows()?,
                (None, Some(s)) => s.snapshot().flows,
                _ => Vec::new(),
            };
            if flows.len() <= MAX_GAP_FLOWS {
                gaps.observe(&flows);
            }
        }
        let elapsed = Duration::from_nanos(now - start);
        let mut snaps = None;
        if let Some(iv) = p.interval
            && now - last_tick >= iv.as_nanos() as u64
        {
            let s = snap_all(&socket)?;
            let drops = match (&kernel, &reason_names) {
                (Some(k), Some(names)) => {
                    let now_drops = LayerDrops::of(&tracer_reasons(k, names)?);
                    let mut d = now_drops.since(&prev_drops);
                    prev_drops = now_drops;
                    let driver = sys::ethtool::stats(&p.iface.name).ok().map(|s| attrib::driver_drops(&s));
                    d.driver = driver.zip(prev_driver).map(|(a, b)| a.saturating_sub(b));
                    prev_driver = driver.or(prev_driver);
                    Some(d)
                }
                _ => None,
            };
            interval_lines(&mut out, &s, drops, &mut prev, secs_since(last_tick), secs_since(now))?;
            last_tick = now;
            snaps = Some(s);
        }
        if sys::stop_requested() || p.time.is_some_and(|t| elapsed >= t) {
            break;
        }
        if now - last_end_check >= END_CHECK.as_nanos() as u64 {
            last_end_check = now;
            // Stop once every flow any counter saw has ended, plus the grace.
            let s = match snaps {
                Some(s) => s,
                None => snap_all(&socket)?,
            };
            let seen = s.iter().map(|(_, c)| c.flows.len()).max().unwrap_or(0);
            let all_ended = seen > 0
                && s.iter().all(|(_, c)| c.flows.iter().all(|(_, f)| f.ended != 0))
                && (a.expect_flows == 0 || seen >= a.expect_flows as usize);
            if !all_ended {
                ended_at = None;
            } else if ended_at.is_none() {
                ended_at = Some(now);
            }
            if ended_at.is_some_and(|t| now - t >= p.grace.as_nanos() as u64) {
                break;
            }
        }
    }
    let end = clock::mono_ns();
    // A failed socket thread must not cost the kernel counter's summary:
    // report what both counted, then the error.
    let socket_error = socket.as_mut().and_then(|s| s.finish().err());
    let finals = snap_all(&socket)?;
    let socket_drops = socket.as_ref().map(|s| s.view.lock().expect("socket view lock").drops);
    // The tracer's counts, read after the socket closed.
    let (reasons, flow_drops) = match (&kernel, &reason_names) {
        (Some(k), Some(names)) => {
            let (r, f) = tracer_counts(k, names, true)?;
            (Some(r), Some(f))
        }
        _ => (None, None),
    };
    let tracer_keys_full = match (&kernel, &reason_names) {
        (Some(k), Some(_)) => Some(k.global(GlobalCounter::DropKeysFull)?),
        _ => None,
    };
    if let Some((l, _)) = &live {
        l.finish(crate::prom::RecvLive { snaps: finals.clone(), socket_drops, reasons: reasons.clone() });
    }
    let host_end = HostCounters::read(&p.iface.name);
    let driver_end = sys::ethtool::stats(&p.iface.name).ok();
    // --leave-window: leave, and count what still arrives (the kernel counter).
    let leave = match (keep.take(), &kernel) {
        (Some(fd), Some(k)) => {
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
            let until = clock::mono_ns() + (a.leave_window * 1e9) as u64;
            while clock::mono_ns() < until && !sys::stop_requested() {
                std::thread::sleep(step.min(Duration::from_nanos(until.saturating_sub(clock::mono_ns()))));
            }
            let after = k.flows()?;
            Some((at, clock::tai_ns(), before, after))
        }
        _ => None,
    };
    let kernel_mode = kernel.as_ref().map(|k| k.mode());
    // The last loss records, and whether the ring buffer lost any.
    let kernel_events_lost = match &kernel {
        Some(k) => {
            drain_kernel_loss(k);
            Some(k.global(GlobalCounter::LossEventsLost)?)
        }
        None => None,
    };
    drop(kernel);
    let socket_loss = socket.as_ref().map(|s| std::mem::take(&mut s.view.lock().expect("socket view lock").loss));

    let local = clock::LocalClock { synced, ..clock::local() };
    let duration = secs_since(end);
    let mut worst: f64 = 0.0;
    let mut reports: Vec<(&'static str, Vec<FlowReport>)> = Vec::new();
    for (name, snap) in &finals {
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
        out.emit("summary", &summary)?;
        out.human(&human_summary(&summary, if *name == "socket" { socket_drops } else { None }))?;
        let book = if *name == "kernel" { Some(&kernel_loss) } else { socket_loss.as_ref() };
        if let Some(book) = book {
            let events_lost = if *name == "kernel" { kernel_events_lost } else { None };
            out.emit("loss", &book.line(name, loss_iv_ns, events_lost))?;
            let text = book.human(name);
            if !text.is_empty() {
                out.human(&text)?;
            }
            if events_lost.is_some_and(|n| n > 0) {
                out.human(&format!(
                    "warning: {} loss events found the kernel's ring buffer full: the lost ranges above are incomplete (the counts are exact)",
                    events_lost.unwrap_or(0)
                ))?;
            }
        }
        reports.push((name, flows));
    }
    if let [(_, k), (_, s)] = reports.as_slice() {
        out.human(&compare(k, s))?;
    }
    // With --sink nothing reaches the stack: the waterfall ends at the
    // driver, where the counter dropped what it counted.
    if let Some(reasons) = reasons.or_else(|| p.sink.then(Vec::new)) {
        let total = |name: &str| finals.iter().find(|(n, _)| *n == name).map(|(_, s)| s.flows.as_slice()).unwrap_or_default();
        let sum = |flows: &[(FlowKey, FlowState)], f: fn(&FlowState) -> u64| flows.iter().map(|(_, s)| f(s)).sum::<u64>();
        let (kf, sf) = (total("kernel"), total("socket"));
        let m = Measured {
            expected: sum(kf, |s| s.expected()),
            at_driver: sum(kf, |s| s.received),
            path_lost: sum(kf, |s| s.lost),
            path_duplicates: sum(kf, |s| s.duplicates + s.stale),
            read: sum(sf, |s| s.received),
            so_rxq_ovfl: socket_drops.unwrap_or(0),
            fragments: finals
                .iter()
                .find(|(n, _)| *n == "kernel")
                .map_or(0, |(_, s)| s.fragmented.iter().map(|(_, n)| n).sum()),
            // The program drops every datagram it counted in a flow (a
            // fragmented one with all its matched fragments).
            sunk: if p.sink { sum(kf, |s| s.received) } else { 0 },
        };
        let mut layers = attrib::layers(&m, reasons, host_end.since(&host_start));
        if kernel_mode == Some("tc") {
            layers.counted_at = "tc ingress";
        }
        if let Some(names) = &reason_names {
            layers.drop_reasons = names.available();
        }
        if let (Some(a), Some(b)) = (&driver_start, &driver_end) {
            let (driver, other) = attrib::driver_layer(a, b);
            (layers.driver, layers.ethtool) = (Some(driver), Some(other));
        }
        let counted = |name: &str| finals.iter().find(|(n, _)| *n == name).map(|(_, s)| s.flows.as_slice());
        let fragmented = finals.iter().find(|(n, _)| *n == "kernel").map(|(_, s)| s.fragmented.as_slice());
        layers.flows = attrib::flow_layers(counted("kernel"), counted("socket"), fragmented, flow_drops.as_deref());
        layers.tracer_keys_full = tracer_keys_full.unwrap_or(0);
        out.human(&attrib::human(&layers))?;
        out.emit("summary", &LayersSummary { role: "recv", counter: "layers", duration_s: duration, layers })?;
    }
    {
        let (counter, flows) = finals
            .iter()
            .find(|(n, _)| *n == "kernel")
            .or(finals.first())
            .map(|(n, s)| (*n, s.flows.as_slice()))
            .unwrap_or(("none", &[]));
        let (queries, unavailable) = match query_watch {
            Ok(w) => (w.finish(), None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let l = leave.as_ref().map(|(at, end, before, after)| crate::igmp_timing::Leave {
            at_ns: *at,
            window_end_ns: *end,
            before,
            after,
        });
        let mut r = crate::igmp_timing::report(counter, &p.groups, join_ns, flows, &queries, &gaps.gaps, l.as_ref());
        r.queries_unavailable = unavailable;
        out.emit("igmp", &r)?;
        out.human(&crate::igmp_timing::human(&r))?;
    }
    if let Some(e) = socket_error {
        return Err(e.context("the socket counter failed (the summaries above are up to that point)"));
    }
    if let Some(max) = a.max_loss
        && worst > max
    {
        out.human(&format!("loss {worst:.3} % exceeds --max-loss {max} %"))?;
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn interval_lines(
    out: &mut Printer,
    snaps: &[(&'static str, Snapshot)],
    drops: Option<LayerDrops>,
    prev: &mut HashMap<&'static str, (u64, u64, i64)>,
    t0: f64,
    t1: f64,
) -> Result<()> {
    let dt = (t1 - t0).max(1e-9);
    let mut human = format!("[{t0:6.1}-{t1:6.1} s]");
    for (name, s) in snaps {
        let (r, b, l) = s.totals();
        let (pr, pb, pl) = prev.insert(name, (r, b, l)).unwrap_or((0, 0, 0));
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
        };
        out.emit("interval", &iv)?;
        human.push_str(&format!(
            "  {name}: {:>8} dgrams {:>14} lost {:>6}",
            iv.received,
            output::fmt_bps(iv.rate_bps),
            iv.lost
        ));
    }
    if let Some(d) = drops {
        out.emit(
            "interval",
            &LayersInterval {
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
            },
        )?;
        human.push_str(&format!("  dropped: kernel {:>6} socket {:>6}", d.kernel, d.socket));
    }
    out.human(&human)?;
    Ok(())
}

fn human_summary(s: &RecvSummary, socket_drops: Option<u64>) -> String {
    let mut t = format!("--- {} counter, {:.1} s ---\n", s.counter, s.duration_s);
    t.push_str(&format!(
        "{:<15} {:<15} {:>8} {:>4} {:>10} {:>8} {:>8} {:>6} {:>5} {:>10}  {}\n",
        "sender", "group", "run", "flow", "received", "lost", "loss%", "reord", "dup", "jitter_us", "delay_us min/mean/p99/max"
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
            "{:<15} {:<15} {:>8x} {:>4} {:>10} {:>8} {:>8.3} {:>6} {:>5} {:>10.1}  {}{}\n",
            f.sender,
            f.group,
            f.run,
            f.flow,
            f.received,
            f.lost,
            f.loss_pct,
            f.reordered,
            f.duplicates,
            f.jitter_us,
            delay,
            if f.ended { "" } else { "  (no end marker yet)" }
        ));
    }
    if s.flows.is_empty() {
        t.push_str("(no mcblast flows seen)\n");
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
