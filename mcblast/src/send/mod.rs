//! `mcblast send`: the sender.
//!
//! ```text
//! SendPlan (plan.rs; from the flags in commands/send.rs) → sockets → N pinned workers (worker.rs)
//!           { Pacer (pacer.rs) → Engine (engine/: socket | mmsg | gso | uring) }
//!         → per-worker counters (counters.rs) → reporter (report.rs)
//! ```
//!
//! Sockets are blocking, with a 200 ms send timeout: when the socket buffer
//! is full the kernel puts the worker to sleep until the device frees room,
//! which is exactly the back-pressure a flat-out sender wants (no spinning
//! on EAGAIN, and the CPU figure is the real cost of sending); pacing is
//! done with absolute sleeps, so nothing needs poll. The timeout bounds a
//! stall (link down) so Ctrl-C and the deadline are still noticed; each
//! expiry is counted as EAGAIN.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::clock::mono_ns;
use crate::output::Printer;
use crate::sys::send::{Buffer, set_buffer, set_dont_fragment, set_multicast_if, set_recverr};

pub mod counters;
pub mod engine;
pub mod ledger;
pub mod live;
pub mod pacer;
pub mod plan;
pub mod report;
pub mod support;
pub mod worker;

use counters::{FlowCounter, WorkerCounters, merge};
use pacer::PaceStats;
use engine::{FlowSocket, Template};
pub use plan::SendPlan;
use worker::{Outcome, START_LEAD_NS, Worker};

/// Socket send buffer asked for (SO_SNDBUFFORCE as root, else capped by net.core.wmem_max).
pub const SNDBUF: usize = 4 << 20;
/// How long a send may block on a full socket buffer before it counts as EAGAIN.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// The engine the user asks for (`send --engine`; what each does for the user
/// is its `--help` text, `cli::EngineArg`): one `engine/` module each, `Auto`
/// resolved to one of them in the plan (`support.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Socket,
    Mmsg,
    Gso,
    Uring,
    Xdp,
    Auto,
}

impl Engine {
    /// Every engine, `auto` first, in the order the docs and errors list them.
    pub const ALL: [Engine; 6] = [Engine::Auto, Engine::Socket, Engine::Mmsg, Engine::Gso, Engine::Uring, Engine::Xdp];

    /// The name the user types and the reports print.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Socket => "socket",
            Engine::Mmsg => "mmsg",
            Engine::Gso => "gso",
            Engine::Uring => "uring",
            Engine::Xdp => "xdp",
            Engine::Auto => "auto",
        }
    }
}

/// Runs `mcblast send` as planned (`commands/send.rs` resolves the flags into the plan).
pub fn run(plan: SendPlan) -> Result<ExitCode> {
    crate::sys::install_stop_signals().context("cannot install the Ctrl-C handler")?;
    if plan.stop_on_stdin_eof {
        crate::sys::stop_on_stdin_eof();
    }
    let run_id = plan.run_id.unwrap_or_else(random_run_id);
    let template = Template {
        run: run_id,
        clock: crate::clock::clock_id(),
        clock_synced: crate::clock::synchronized(),
        tai_offset: plan.tai_offset,
        length: plan.length,
    };
    // Sockets first: an error here (open-file limit, permissions) stops the
    // run before anything is sent.
    let (mut sockets, src_ports) = open_sockets(&plan)?;
    // The xdp engine's AF_XDP sockets, one per worker, before anything is sent.
    let (mut xdp, xdp_mode) = open_xdp(&plan, &src_ports)?;

    let mut out = Printer::new(plan.json);
    report::begin_with_mode(&mut out, &plan, run_id, xdp_mode)?;

    let shared = Shared::new(&plan);
    // The Prometheus endpoint reads the workers' and the flows' counters; the ledger's
    // interface counters once their start values are known.
    let prom_ledger: Arc<std::sync::OnceLock<(String, ledger::TxCounters)>> = Arc::default();
    let _prom = serve_prometheus(&plan, run_id, &shared, &prom_ledger)?;
    let (starts, handles) = start_workers(&plan, template, &mut sockets, &mut xdp, &shared)?;

    // The interface's transmit counters before the first datagram.
    let tx_start = plan.iface.as_ref().map(|(i, _)| ledger::TxCounters::read(&i.name));
    if let (Some((i, _)), Some(t)) = (&plan.iface, tx_start) {
        let _ = prom_ledger.set((i.name.clone(), t));
    }
    let start_ns = mono_ns() + START_LEAD_NS;
    for s in &starts {
        let _ = s.send(Some(start_ns));
    }
    let mut reporter = report::Reporter::new(start_ns, plan.interval_s);
    let report_err = report_while_sending(&mut out, &mut reporter, &handles, &shared);
    let mut outcomes: Vec<Outcome> = Vec::new();
    for h in handles {
        outcomes.push(h.join().map_err(|_| anyhow!("a worker thread panicked"))?);
    }
    if let Some(e) = report_err {
        return Err(e.into());
    }
    let sent = RunFacts { run_id, start_ns, tx_start, src_ports: &src_ports, xdp_mode };
    finish(&mut out, &plan, &mut reporter, &shared, outcomes, sent)
}

/// What the workers, the reporter and the Prometheus endpoint share.
struct Shared {
    counters: Arc<[WorkerCounters]>,
    flow_sent: Arc<[FlowCounter]>,
    /// Set to stop the workers early.
    abort: Arc<AtomicBool>,
}

impl Shared {
    /// Zeroed counters for the plan's workers and flows, not aborted.
    fn new(plan: &SendPlan) -> Shared {
        Shared {
            counters: (0..plan.workers.len()).map(|_| WorkerCounters::default()).collect(),
            flow_sent: (0..plan.flows.len()).map(|_| FlowCounter::default()).collect(),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Each flow's socket (by flow id) and its source port.
fn open_sockets(plan: &SendPlan) -> Result<(Vec<Option<FlowSocket>>, Vec<u16>)> {
    let mut sockets: Vec<Option<FlowSocket>> = Vec::with_capacity(plan.flows.len());
    let mut src_ports = Vec::with_capacity(plan.flows.len());
    for f in &plan.flows {
        let s = open_socket(plan, f.group).with_context(|| format!("flow {}: cannot set up its socket", f.id))?;
        src_ports.push(s.local_addr().map(|a| a.port()).unwrap_or(0));
        sockets.push(Some(FlowSocket { id: f.id, socket: s }));
    }
    Ok((sockets, src_ports))
}

/// The xdp engine's AF_XDP set-up of each worker and the mode's name (nothing for the other engines).
fn open_xdp(plan: &SendPlan, src_ports: &[u16]) -> Result<(Vec<Option<engine::xdp::XdpSetup>>, Option<&'static str>)> {
    Ok(match plan.engine {
        Engine::Xdp => {
            let (setups, mode) = engine::xdp::open_all(plan, src_ports)?;
            (setups.into_iter().map(Some).collect(), Some(mode.name()))
        }
        _ => (Vec::new(), None),
    })
}

/// The Prometheus endpoint of `--prometheus`, serving the shared counters and the ledger's once set.
fn serve_prometheus(
    plan: &SendPlan,
    run_id: u32,
    shared: &Shared,
    prom_ledger: &Arc<std::sync::OnceLock<(String, ledger::TxCounters)>>,
) -> Result<Option<crate::prom::MetricsServer>> {
    let Some(addr) = plan.prometheus else { return Ok(None) };
    let live = live::SendLive {
        run: run_id,
        flows: plan.flows.clone(),
        length: plan.length as u64,
        workers: shared.counters.clone(),
        flow_sent: shared.flow_sent.clone(),
    };
    let l = prom_ledger.clone();
    Ok(Some(crate::prom::serve(addr, move || live::send_page(&live, l.get().map(|(i, t)| (i.as_str(), t))))?))
}

/// A worker's start channel (Some(time) starts it, None stops it) and its thread.
type Started = (Vec<mpsc::Sender<Option<u64>>>, Vec<std::thread::JoinHandle<Outcome>>);

/// The workers' threads, each pinned and set up and waiting for its start; the first reason one could not be.
fn start_workers(
    plan: &SendPlan,
    template: Template,
    sockets: &mut [Option<FlowSocket>],
    xdp: &mut [Option<engine::xdp::XdpSetup>],
    shared: &Shared,
) -> Result<Started> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut starts = Vec::new();
    let mut handles = Vec::new();
    for w in &plan.workers {
        let (start_tx, start_rx) = mpsc::channel();
        starts.push(start_tx);
        let flows = w.flows.iter().map(|&id| sockets[id as usize].take().expect("each flow has one worker")).collect();
        let worker = Worker {
            index: w.index,
            cpu: w.cpu,
            pps: w.pps,
            engine: plan.engine,
            batch: plan.batch,
            zerocopy: plan.zerocopy,
            count: plan.count,
            duration_ns: plan.duration_s.map(|s| (s * 1e9) as u64),
            template,
            flows,
            counters: shared.counters.clone(),
            flow_sent: shared.flow_sent.clone(),
            abort: shared.abort.clone(),
            xdp: xdp.get_mut(w.index).and_then(Option::take),
        };
        match worker.spawn(ready_tx.clone(), start_rx) {
            Ok(h) => handles.push(h),
            Err(e) => {
                abort_workers(&starts, handles);
                return Err(anyhow!("cannot start worker thread {}: {e}", w.index));
            }
        }
    }
    drop(ready_tx);
    // Every worker pinned and set up, or the first reason one could not be.
    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((_, Err(msg))) => {
                abort_workers(&starts, handles);
                return Err(anyhow!(msg));
            }
            Err(_) => {
                abort_workers(&starts, handles);
                return Err(anyhow!("a worker thread died while setting up"));
            }
        }
    }
    Ok((starts, handles))
}

/// Prints the interval reports until every worker has finished; the output's error if it went away (the workers
/// then told to stop).
fn report_while_sending(
    out: &mut Printer,
    reporter: &mut report::Reporter,
    handles: &[std::thread::JoinHandle<Outcome>],
    shared: &Shared,
) -> Option<std::io::Error> {
    while !handles.iter().all(|h| h.is_finished()) {
        let now = mono_ns();
        let wake = reporter.next_due().map_or(now + 50_000_000, |d| d.min(now + 50_000_000));
        crate::sys::send::sleep_until_mono(wake);
        if let Err(e) = reporter.tick(out, mono_ns(), &merge(&shared.counters)) {
            // Output is gone (e.g. `| head` exited): stop the workers, so
            // they still send their end markers, then report the error.
            shared.abort.store(true, std::sync::atomic::Ordering::Relaxed);
            return Some(e);
        }
    }
    None
}

/// What the finished run's summary needs besides the plan and the workers' outcomes.
struct RunFacts<'a> {
    run_id: u32,
    start_ns: u64,
    /// The interface's transmit counters before the first datagram.
    tx_start: Option<ledger::TxCounters>,
    src_ports: &'a [u16],
    xdp_mode: Option<&'static str>,
}

/// Prints the last interval and the summary (with the interface's ledger); the first worker's fatal error, if any.
fn finish(
    out: &mut Printer,
    plan: &SendPlan,
    reporter: &mut report::Reporter,
    shared: &Shared,
    outcomes: Vec<Outcome>,
    sent: RunFacts,
) -> Result<ExitCode> {
    let totals = merge(&shared.counters);
    let data_end = outcomes.iter().filter_map(|o| o.data_end_ns).max().unwrap_or_else(mono_ns);
    reporter.last(out, data_end, &totals)?;

    let ledger = match (&plan.iface, sent.tx_start) {
        (Some((i, _)), Some(start)) => Some(ledger::Ledger::new(&i.name, &totals, &start, &tx_settled(&i.name, &start, &totals))),
        _ => None,
    };

    let mut per_flow: Vec<(u32, u64)> = outcomes.iter().flat_map(|o| o.flows.iter().copied()).collect();
    per_flow.sort_unstable();
    report::summary(
        out,
        &report::Final {
            plan,
            run_id: sent.run_id,
            duration_s: data_end.saturating_sub(sent.start_ns) as f64 / 1e9,
            totals,
            per_flow: &per_flow,
            src_ports: sent.src_ports,
            cpu_s: crate::sys::process_cpu_seconds(),
            pacing: outcomes.iter().filter_map(|o| o.pacing).reduce(PaceStats::merge),
            xdp_mode: sent.xdp_mode,
            ledger: ledger.as_ref(),
        },
    )?;
    if let Some(msg) = outcomes.into_iter().find_map(|o| o.fatal) {
        return Err(anyhow!(msg));
    }
    Ok(ExitCode::SUCCESS)
}

/// The interface's transmit counters once what the kernel took has left
/// (or stopped leaving): packets may still sit in a queue when the workers
/// return. Polls every 10 ms, for at most 300 ms.
fn tx_settled(iface: &str, start: &ledger::TxCounters, totals: &counters::Counts) -> ledger::TxCounters {
    let handed = totals.sent + totals.end_markers;
    let mut last = ledger::TxCounters::read(iface);
    for _ in 0..30 {
        let left = last.tx_packets.zip(start.tx_packets).map(|(e, s)| e.wrapping_sub(s));
        if left.is_none_or(|l| l >= handed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        let now = ledger::TxCounters::read(iface);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Tells set-up workers not to start, and waits for them.
fn abort_workers(starts: &[mpsc::Sender<Option<u64>>], handles: Vec<std::thread::JoinHandle<Outcome>>) {
    for s in starts {
        let _ = s.send(None);
    }
    for h in handles {
        let _ = h.join();
    }
}

/// One flow's socket: its own ephemeral source port, connected to the
/// group, multicast out of the plan's interface.
fn open_socket(plan: &SendPlan, group: Ipv4Addr) -> Result<UdpSocket> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| {
        if e.raw_os_error() == Some(libc::EMFILE) {
            anyhow!("{e}: too many open files for this many flows; raise the limit (ulimit -n) or use fewer --flows")
        } else {
            anyhow!("cannot open a UDP socket: {e}")
        }
    })?;
    if let Some((ifc, _)) = &plan.iface {
        set_multicast_if(&s, ifc.index, ifc.addr).with_context(|| format!("IP_MULTICAST_IF {}", ifc.name))?;
    }
    s.set_multicast_ttl_v4(plan.ttl as u32).context("IP_MULTICAST_TTL")?;
    s.set_multicast_loop_v4(plan.loopback).context("IP_MULTICAST_LOOP")?;
    set_buffer(&s, Buffer::Send, SNDBUF).context("SO_SNDBUF")?;
    set_recverr(&s).context("IP_RECVERR")?;
    if !plan.allow_fragments {
        set_dont_fragment(&s).context("IP_MTU_DISCOVER")?;
    }
    s.set_write_timeout(Some(SEND_TIMEOUT)).context("SO_SNDTIMEO")?;
    // Connected: the route is looked up once, not per datagram.
    s.connect((group, plan.port)).with_context(|| {
        format!(
            "cannot send to {group}:{}: is there a route for it? (add one, or pick an interface with -I)",
            plan.port
        )
    })?;
    Ok(s)
}

/// A random run id from the kernel's generator (never 0).
pub fn random_run_id() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    let v = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map(|_| u32::from_ne_bytes(b))
        // No /dev/urandom: the clock's low bits are unpredictable enough for a run id.
        .unwrap_or_else(|_| crate::clock::tai_ns() as u32 ^ std::process::id().rotate_left(16));
    nonzero(v)
}

/// A run id from random bits: 0 means "any run" to a receiver, so it becomes 1.
fn nonzero(v: u32) -> u32 {
    v.max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_differ() {
        let ids: std::collections::HashSet<u32> = (0..16).map(|_| super::random_run_id()).collect();
        assert!(ids.len() > 14);
        assert!(!ids.contains(&0));
        assert_eq!((super::nonzero(0), super::nonzero(7)), (1, 7));
    }
}
