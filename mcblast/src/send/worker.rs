//! A worker thread: pinned to its CPU inside the thread, it builds its
//! engine there (so buffers are allocated on its NUMA node), waits for the
//! common start time, then sends its flows round robin, one batch per flow
//! in turn, paced on an absolute schedule or flat out, until its flows reach
//! their count, the time is up, or Ctrl-C. Then it sends every flow's end
//! marker three times, a few milliseconds apart.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use super::counters::{Counts, FlowCounter, WorkerCounters};
use super::engine::xdp::XdpSetup;
use super::engine::{Transmitter, FlowSocket, GsoEngine, MmsgEngine, SocketEngine, Template, UringEngine, XdpEngine};
use super::pacer::{PaceStats, Pacer, Step, batch_len, quantum};
use crate::clock::mono_ns;
use crate::sys::send::{pin_current_thread, set_timer_slack_ns, sleep_until_mono};

/// The common start time is this far after the workers are told it, so
/// each has woken and is waiting when it comes (a paced worker that started
/// late would begin with a schedule slip).
pub const START_LEAD_NS: u64 = 1_000_000;
/// End markers per flow, and the gap between them.
pub const END_MARKERS: u32 = 3;
pub const END_GAP_NS: u64 = 5_000_000;
/// At most one error message per worker this often (the counts are exact anyway).
pub const LOG_EVERY_NS: u64 = 5_000_000_000;
/// A worker whose sends all fail (other than ENOBUFS/EAGAIN) this long gives up.
pub const GIVE_UP_NS: u64 = 2_000_000_000;
/// Pause after an unexpected error before trying again, so a dead route does not spin a core.
const ERROR_BACKOFF_NS: u64 = 1_000_000;
/// After ENOBUFS (the local queue is full) the worker waits this long before
/// sending again, twice as long after each further ENOBUFS in a row, up to
/// [`ENOBUFS_BACKOFF_MAX_NS`]; a datagram taken resets it. The queue drains
/// at line rate, so a short wait is enough, and sleeping instead of spinning
/// keeps the CPU figure the cost of sending.
pub const ENOBUFS_BACKOFF_MIN_NS: u64 = 20_000;
pub const ENOBUFS_BACKOFF_MAX_NS: u64 = 1_000_000;

/// Exponential back-off for ENOBUFS retries.
#[derive(Debug, Default)]
pub struct Backoff {
    next_ns: u64,
}

impl Backoff {
    /// How long to wait after this failure.
    pub fn wait_ns(&mut self) -> u64 {
        let d = self.next_ns.max(ENOBUFS_BACKOFF_MIN_NS);
        self.next_ns = (d * 2).min(ENOBUFS_BACKOFF_MAX_NS);
        d
    }

    /// A send succeeded: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.next_ns = 0;
    }
}

/// Everything a worker needs; moved into its thread.
pub struct Worker {
    pub index: usize,
    pub cpu: Option<usize>,
    /// This worker's datagrams/s (None: flat out).
    pub pps: Option<f64>,
    pub engine: super::Engine,
    pub batch: usize,
    /// uring engine: zero-copy sends.
    pub zerocopy: bool,
    /// Datagrams per flow.
    pub count: Option<u64>,
    pub duration_ns: Option<u64>,
    pub template: Template,
    pub flows: Vec<FlowSocket>,
    pub counters: Arc<[WorkerCounters]>,
    /// Every flow's published count, by flow id.
    pub flow_sent: Arc<[FlowCounter]>,
    /// Set by any worker that gives up, so the others stop too.
    pub abort: Arc<AtomicBool>,
    /// The xdp engine's AF_XDP socket for this worker (opened before the run).
    pub xdp: Option<XdpSetup>,
}

/// What a worker reports when it is done.
#[derive(Debug, Default)]
pub struct Outcome {
    pub index: usize,
    /// (flow id, data datagrams sent).
    pub flows: Vec<(u32, u64)>,
    /// When it stopped sending data (CLOCK_MONOTONIC), before the end markers.
    pub data_end_ns: Option<u64>,
    /// Why it gave up, if it did.
    pub fatal: Option<String>,
    /// How it kept to its schedule (None: not paced).
    pub pacing: Option<PaceStats>,
}

/// How a send error is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    /// A signal interrupted the call: not an error, try again.
    Interrupted,
    /// The local queue (qdisc/driver) dropped it.
    Enobufs,
    /// The socket buffer stayed full for the whole send timeout.
    Eagain,
    /// The datagram does not fit the route's MTU and fragmenting is off.
    TooBig,
    Other,
}

pub fn classify(e: &io::Error) -> ErrKind {
    match e.raw_os_error() {
        Some(libc::EINTR) => ErrKind::Interrupted,
        Some(libc::ENOBUFS) => ErrKind::Enobufs,
        Some(libc::EAGAIN) => ErrKind::Eagain,
        Some(libc::EMSGSIZE) => ErrKind::TooBig,
        _ if e.kind() == io::ErrorKind::Interrupted => ErrKind::Interrupted,
        _ => ErrKind::Other,
    }
}

/// Counts an error of kind `k` (not `Interrupted`).
pub fn count_error(c: &mut Counts, k: ErrKind) {
    match k {
        ErrKind::Enobufs => c.enobufs += 1,
        ErrKind::Eagain => c.eagain += 1,
        ErrKind::Interrupted => {}
        ErrKind::TooBig | ErrKind::Other => c.other += 1,
    }
}

/// Rate-limited error messages on stderr (the hot path must not print a
/// line per failed datagram).
#[derive(Debug)]
pub struct ErrLog {
    worker: usize,
    last_ns: Option<u64>,
    suppressed: u64,
}

impl ErrLog {
    pub fn new(worker: usize) -> ErrLog {
        ErrLog { worker, last_ns: None, suppressed: 0 }
    }

    /// The message to print for this error now, or None when one was
    /// printed less than [`LOG_EVERY_NS`] ago (then it is only counted).
    pub fn note(&mut self, now_ns: u64, flow: u32, e: &io::Error) -> Option<String> {
        if let Some(t) = self.last_ns
            && now_ns.saturating_sub(t) < LOG_EVERY_NS
        {
            self.suppressed += 1;
            return None;
        }
        let more = match self.suppressed {
            0 => String::new(),
            n => format!(" ({n} more send errors since the last message)"),
        };
        self.last_ns = Some(now_ns);
        self.suppressed = 0;
        Some(format!("mcblast: worker {}, flow {flow}: send failed: {e}; counted, sending goes on{more}", self.worker))
    }
}

impl Worker {
    /// Starts the thread. It reports on `ready` once pinned and set up (or
    /// why it could not be), then waits on `start` for the common start time
    /// (None: abort without sending).
    pub fn spawn(
        self,
        ready: Sender<(usize, Result<(), String>)>,
        start: Receiver<Option<u64>>,
    ) -> io::Result<JoinHandle<Outcome>> {
        std::thread::Builder::new().name(format!("mcblast-send-{}", self.index)).spawn(move || self.run(ready, start))
    }

    fn run(self, ready: Sender<(usize, Result<(), String>)>, start: Receiver<Option<u64>>) -> Outcome {
        let idle =
            Outcome { index: self.index, flows: self.flows.iter().map(|f| (f.id, 0)).collect(), ..Default::default() };
        if let Some(cpu) = self.cpu
            && let Err(e) = pin_current_thread(cpu)
        {
            let _ = ready.send((self.index, Err(format!("cannot pin worker {} to CPU {cpu}: {e}", self.index))));
            return idle;
        }
        if self.pps.is_some() {
            // Paced: wake when asked, not up to 50 µs later. Failure only costs precision.
            let _ = set_timer_slack_ns(1_000);
        }
        let Worker {
            index, pps, engine, batch, zerocopy, count, duration_ns, template, flows, counters, flow_sent, abort, xdp, ..
        } = self;
        let ids: Vec<u32> = flows.iter().map(|f| f.id).collect();
        let ctx = Ctx { index, pps, batch, count, duration_ns, length: template.length as u64, ids, counters, flow_sent, abort };
        match engine {
            super::Engine::Socket => ctx.go(SocketEngine::new(flows, template), ready, start),
            super::Engine::Mmsg => ctx.go(MmsgEngine::new(flows, template, batch), ready, start),
            super::Engine::Xdp => match xdp {
                Some(x) => ctx.go(XdpEngine::new(flows, template, x), ready, start),
                None => {
                    let _ = ready.send((index, Err(format!("worker {index}: no AF_XDP socket was opened for it"))));
                    idle
                }
            },
            super::Engine::Gso => ctx.go(GsoEngine::new(flows, template, batch, index), ready, start),
            super::Engine::Uring => match UringEngine::new(flows, template, batch, zerocopy, index) {
                Ok(e) => ctx.go(e, ready, start),
                Err(e) => {
                    let _ = ready.send((index, Err(format!("worker {index}: cannot set up io_uring: {e}; use --engine mmsg"))));
                    idle
                }
            },
            // The plan resolves auto before any worker starts.
            super::Engine::Auto => {
                let _ = ready.send((index, Err("internal error: engine auto was not resolved".into())));
                idle
            }
        }
    }
}

struct Ctx {
    index: usize,
    pps: Option<f64>,
    batch: usize,
    count: Option<u64>,
    duration_ns: Option<u64>,
    length: u64,
    ids: Vec<u32>,
    counters: Arc<[WorkerCounters]>,
    flow_sent: Arc<[FlowCounter]>,
    abort: Arc<AtomicBool>,
}

/// Whether the pacer lets the next batch go at `now` (its slips and deficit copied into `c`); else it has slept
/// toward its next send time (at most until `deadline`).
fn pace(p: &mut Pacer, now: u64, deadline: u64, c: &mut Counts) -> bool {
    match p.step(now, c.sent) {
        Step::Sleep(t) => {
            sleep_until_mono(t.min(deadline));
            false
        }
        Step::Send => {
            let s = p.stats();
            c.slips = s.slips;
            c.deficit = s.deficit as u64;
            true
        }
    }
}

/// What the data loop keeps about failing sends: the rate-limited log, since when every send has failed, and the
/// ENOBUFS back-off.
struct Failures {
    log: ErrLog,
    since: Option<u64>,
    enobufs: Backoff,
}

impl Ctx {
    fn stopping(&self) -> bool {
        crate::sys::stop_requested() || self.abort.load(Ordering::Relaxed)
    }

    fn go<E: Transmitter>(
        self,
        mut e: E,
        ready: Sender<(usize, Result<(), String>)>,
        start: Receiver<Option<u64>>,
    ) -> Outcome {
        let mut out =
            Outcome { index: self.index, flows: self.ids.iter().map(|&id| (id, 0)).collect(), ..Default::default() };
        if ready.send((self.index, Ok(()))).is_err() {
            return out;
        }
        let Ok(Some(start_ns)) = start.recv() else { return out };
        // Everyone starts together (bounded: the start is at most START_LEAD_NS away).
        while mono_ns() < start_ns && !self.stopping() {
            sleep_until_mono(start_ns);
        }
        let mut c = Counts::default();
        let mut seq = vec![0u64; self.ids.len()];
        let (fatal, pacing) = self.send_data(&mut e, start_ns, &mut seq, &mut c);
        out.fatal = fatal;
        out.pacing = pacing;
        out.data_end_ns = Some(mono_ns());
        if out.fatal.is_some() {
            self.abort.store(true, Ordering::Relaxed);
        }
        self.send_ends(&mut e, &seq, &mut c);
        for (o, s) in out.flows.iter_mut().zip(&seq) {
            o.1 = *s;
        }
        out
    }

    /// The data loop. `seq[slot]` is the flow's next sequence number, which
    /// is also how many it has sent. Returns why it gave up, if it did, and
    /// how it kept to its schedule when paced.
    fn send_data<E: Transmitter>(
        &self,
        e: &mut E,
        start_ns: u64,
        seq: &mut [u64],
        c: &mut Counts,
    ) -> (Option<String>, Option<PaceStats>) {
        let q = quantum(self.pps, self.batch);
        let mut pacer = self.pps.map(|p| Pacer::new(start_ns, p, q));
        let fatal = self.data_loop(e, start_ns, q, pacer.as_mut(), seq, c);
        (fatal, pacer.map(|p| p.stats()))
    }

    fn data_loop<E: Transmitter>(
        &self,
        e: &mut E,
        start_ns: u64,
        q: usize,
        mut pacer: Option<&mut Pacer>,
        seq: &mut [u64],
        c: &mut Counts,
    ) -> Option<String> {
        let me = &self.counters[self.index];
        // The plan caps -t far below overflow; saturating all the same.
        let deadline = self.duration_ns.map_or(u64::MAX, |d| start_ns.saturating_add(d));
        let mut active: Vec<usize> = (0..seq.len()).collect();
        let mut rr = 0usize;
        let mut f = Failures { log: ErrLog::new(self.index), since: None, enobufs: Backoff::default() };

        'run: while !active.is_empty() {
            if self.stopping() {
                break;
            }
            let now = mono_ns();
            if now >= deadline {
                break;
            }
            if let Some(p) = pacer.as_deref_mut()
                && !pace(p, now, deadline, c)
            {
                continue;
            }
            if rr >= active.len() {
                rr = 0;
            }
            let slot = active[rr];
            let mut left = batch_len(q, seq[slot], self.count);
            while left > 0 {
                let s = e.send_data(slot, seq[slot], left);
                if s.n > 0 {
                    seq[slot] += s.n as u64;
                    self.flow_sent[self.ids[slot] as usize].publish(seq[slot]);
                    left -= s.n;
                    c.sent += s.n as u64;
                    c.bytes += s.n as u64 * self.length;
                    f.since = None;
                    f.enobufs.reset();
                }
                let err = match s.err {
                    Some(err) => err,
                    None if s.n == 0 => io::Error::other("the kernel took no datagram and gave no reason"),
                    None => continue,
                };
                let now = match self.on_send_error(&err, slot, c, &mut f, deadline) {
                    Ok(now) => now,
                    Err(fatal) => {
                        me.publish(c);
                        return Some(fatal);
                    }
                };
                if self.stopping() || now >= deadline {
                    break 'run;
                }
            }
            me.publish(c);
            if self.count.is_some_and(|n| seq[slot] >= n) {
                active.remove(rr);
            } else {
                rr += 1;
            }
        }
        me.publish(c);
        None
    }

    /// Counts and logs a failed send of flow slot `slot`, and backs off as its kind asks; the time it was noted, or
    /// the reason to give up (a datagram too big for the route, or every send failing for [`GIVE_UP_NS`]).
    fn on_send_error(
        &self,
        err: &io::Error,
        slot: usize,
        c: &mut Counts,
        f: &mut Failures,
        deadline: u64,
    ) -> Result<u64, String> {
        let kind = classify(err);
        count_error(c, kind);
        let now = mono_ns();
        if kind != ErrKind::Interrupted
            && let Some(line) = f.log.note(now, self.ids[slot], err)
        {
            eprintln!("{line}");
        }
        match kind {
            ErrKind::TooBig => {
                return Err(format!(
                    "{}-byte datagrams do not fit the route's MTU ({err}); use a smaller -l, or --allow-fragments to let the kernel fragment them",
                    self.length
                ));
            }
            ErrKind::Other => {
                let since = *f.since.get_or_insert(now);
                if now - since >= GIVE_UP_NS {
                    return Err(format!(
                        "flow {}: every send failed for {} s: {err}",
                        self.ids[slot],
                        GIVE_UP_NS / 1_000_000_000
                    ));
                }
                sleep_until_mono(now + ERROR_BACKOFF_NS);
            }
            ErrKind::Enobufs => sleep_until_mono(now.saturating_add(f.enobufs.wait_ns()).min(deadline)),
            ErrKind::Eagain | ErrKind::Interrupted => {}
        }
        Ok(now)
    }

    /// Every flow's end marker, [`END_MARKERS`] times, [`END_GAP_NS`] apart.
    fn send_ends<E: Transmitter>(&self, e: &mut E, seq: &[u64], c: &mut Counts) {
        let me = &self.counters[self.index];
        let mut log = ErrLog::new(self.index);
        for round in 0..END_MARKERS {
            if round > 0 {
                sleep_until_mono(mono_ns() + END_GAP_NS);
            }
            for (slot, &n) in seq.iter().enumerate() {
                // One retry when a signal interrupts the call.
                for _ in 0..2 {
                    match e.send_end(slot, n) {
                        Ok(()) => c.end_markers += 1,
                        Err(err) => {
                            let kind = classify(&err);
                            if kind == ErrKind::Interrupted {
                                continue;
                            }
                            count_error(c, kind);
                            if let Some(line) = log.note(mono_ns(), self.ids[slot], &err) {
                                eprintln!("{line}");
                            }
                        }
                    }
                    break;
                }
            }
            me.publish(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::engine::Sent;
    use mcblast_common::wire::{Header, Kind};
    use std::net::UdpSocket;

    /// An engine that takes random prefixes and fails at random, and checks
    /// on every call that the worker asks for exactly the next sequence
    /// number of the flow: no skip, no repeat. Its data go nowhere; its end
    /// markers are the trait's own, sent on real loopback sockets to `rxs`.
    struct Flaky {
        rng: u64,
        next: Vec<u64>,
        calls: u64,
        enobufs: u64,
        eagain: u64,
        other: u64,
        batch: usize,
        /// (mono time, worker datagrams sent before this call) per call that took something.
        sends: Vec<(u64, u64)>,
        fail: bool,
        flows: Vec<FlowSocket>,
        template: Template,
        /// One receiving socket per flow slot.
        rxs: Vec<UdpSocket>,
    }

    impl Flaky {
        fn new(flows: usize, batch: usize, fail: bool) -> Flaky {
            let (mut socks, mut rxs) = (Vec::new(), Vec::new());
            for i in 0..flows {
                let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
                rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
                let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
                tx.connect(rx.local_addr().unwrap()).unwrap();
                socks.push(FlowSocket { id: 10 + i as u32, socket: tx });
                rxs.push(rx);
            }
            Flaky {
                rng: 0x9e37_79b9_7f4a_7c15,
                next: vec![0; flows],
                calls: 0,
                enobufs: 0,
                eagain: 0,
                other: 0,
                batch,
                sends: Vec::new(),
                fail,
                flows: socks,
                template: Template { run: 7, clock: 1, clock_synced: false, tai_offset: 0, length: 100 },
                rxs,
            }
        }
        fn rand(&mut self) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng
        }
    }

    impl Transmitter for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn send_data(&mut self, slot: usize, seq: u64, n: usize) -> Sent {
            assert_eq!(seq, self.next[slot], "flow slot {slot}: asked for {seq}, next unsent is {}", self.next[slot]);
            assert!(n >= 1 && n <= self.batch, "batch of {n}");
            self.calls += 1;
            let before: u64 = self.next.iter().sum();
            let err = |e| Some(io::Error::from_raw_os_error(e));
            let (k, e) = match if self.fail { self.rand() % 12 } else { 99 } {
                0 => {
                    self.enobufs += 1;
                    (0, err(libc::ENOBUFS))
                }
                1 => {
                    self.eagain += 1;
                    (0, err(libc::EAGAIN))
                }
                2 => (0, err(libc::EINTR)),
                3 if self.other < 3 => {
                    self.other += 1;
                    (0, err(libc::ENETUNREACH))
                }
                4 | 5 => (1 + self.rand() as usize % n, None), // short sendmmsg
                6 if n > 1 => {
                    self.enobufs += 1;
                    (1 + self.rand() as usize % (n - 1), err(libc::ENOBUFS))
                } // socket engine stopping mid-batch
                _ => (n, None),
            };
            self.next[slot] += k as u64;
            if k > 0 {
                self.sends.push((mono_ns(), before));
            }
            Sent { n: k, err: e }
        }
        fn flows(&self) -> &[FlowSocket] {
            &self.flows
        }
        fn template(&self) -> &Template {
            &self.template
        }
    }

    fn ctx(flows: usize, pps: Option<f64>, batch: usize, count: Option<u64>, duration_ns: Option<u64>) -> Ctx {
        Ctx {
            index: 0,
            pps,
            batch,
            count,
            duration_ns,
            length: 100,
            ids: (0..flows as u32).map(|i| 10 + i).collect(),
            counters: (0..1).map(|_| WorkerCounters::default()).collect(),
            flow_sent: (0..10 + flows).map(|_| FlowCounter::default()).collect(),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn partial_sends_and_errors_never_skip_or_repeat_a_sequence_number() {
        let x = ctx(3, None, 8, Some(1000), Some(60_000_000_000));
        let mut e = Flaky::new(3, 8, true);
        let mut seq = vec![0u64; 3];
        let mut c = Counts::default();
        assert_eq!(x.send_data(&mut e, mono_ns(), &mut seq, &mut c).0, None);
        assert_eq!(seq, vec![1000; 3]);
        assert_eq!(e.next, vec![1000; 3]);
        assert!(e.calls > 400, "{} calls: the flaky paths were exercised", e.calls);
        assert_eq!((c.sent, c.bytes), (3000, 300_000));
        assert_eq!((c.enobufs, c.eagain, c.other), (e.enobufs, e.eagain, e.other));
        assert!(c.enobufs > 0 && c.eagain > 0 && c.other > 0);
        assert_eq!(x.counters[0].read(), c, "published");
        assert!(x.ids.iter().all(|&id| x.flow_sent[id as usize].read() == 1000), "every flow's count published");
        x.send_ends(&mut e, &seq, &mut c);
        assert_eq!(c.end_markers, 3 * END_MARKERS as u64);
        // Each flow's socket carried its end markers, with the flow's id and count.
        let mut buf = [0u8; 256];
        for (slot, rx) in e.rxs.iter().enumerate() {
            for _ in 0..END_MARKERS {
                let n = rx.recv(&mut buf).unwrap();
                let h = Header::parse_datagram(&buf[..n]).unwrap();
                assert_eq!((h.kind, h.flow, h.seq, h.run), (Kind::End, 10 + slot as u32, 1000, 7));
            }
        }
    }

    #[test]
    fn flows_take_turns_one_batch_each() {
        let x = ctx(2, None, 4, Some(10), None);
        let mut e = Flaky::new(2, 4, false);
        let mut seq = vec![0u64; 2];
        let mut c = Counts::default();
        x.send_data(&mut e, mono_ns(), &mut seq, &mut c);
        // 4,4 | 4,4 | 2,2: each flow alternately, the last batch cut at the count.
        let totals: Vec<u64> = e.sends.iter().map(|s| s.1).collect();
        assert_eq!(totals, vec![0, 4, 8, 12, 16, 18]);
        assert_eq!(seq, vec![10, 10]);
    }

    #[test]
    fn paced_worker_never_sends_before_due_and_stops_at_deadline() {
        // 20,000 datagrams/s, 2 flows of 300: about 30 ms.
        let pps = 20_000.0;
        let x = ctx(2, Some(pps), 32, Some(300), None);
        let mut e = Flaky::new(2, 32, false);
        let mut seq = vec![0u64; 2];
        let mut c = Counts::default();
        let start = mono_ns();
        let (fatal, pacing) = x.send_data(&mut e, start, &mut seq, &mut c);
        assert!(fatal.is_none() && pacing.is_some());
        // A slip only ever moves the schedule later, so nothing goes out
        // before it is due on the original one.
        let p = Pacer::new(start, pps, quantum(Some(pps), 32));
        for &(t, before) in &e.sends {
            assert!(t >= p.due_ns(before), "datagram {before} sent {} ns early", p.due_ns(before) - t);
        }
        assert_eq!(c.sent, 600);
        // A time limit stops a flat-out worker with contiguous sequence numbers.
        let x = ctx(2, None, 32, None, Some(5_000_000));
        let mut e = Flaky::new(2, 32, true);
        let mut seq = vec![0u64; 2];
        let mut c = Counts::default();
        x.send_data(&mut e, mono_ns(), &mut seq, &mut c);
        assert_eq!(seq, e.next);
        assert_eq!(c.sent, seq.iter().sum::<u64>());
    }

    #[test]
    fn enobufs_backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.wait_ns()).collect();
        assert_eq!(waits, vec![20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 1_000_000, 1_000_000]);
        b.reset();
        assert_eq!(b.wait_ns(), ENOBUFS_BACKOFF_MIN_NS);
    }

    /// An engine whose queue is always full: the worker waits between tries
    /// instead of spinning, so in 30 ms it can try only a few dozen times
    /// (the sleeps alone add up to 30 ms by the 30th try); a slower machine
    /// only makes that fewer. It stops at the deadline.
    #[test]
    fn a_full_queue_is_retried_with_sleeps_not_spins() {
        struct Full {
            calls: u64,
            flows: Vec<FlowSocket>,
            template: Template,
        }
        impl Transmitter for Full {
            fn name(&self) -> &'static str {
                "full"
            }
            fn send_data(&mut self, _slot: usize, _seq: u64, _n: usize) -> Sent {
                self.calls += 1;
                Sent { n: 0, err: Some(io::Error::from_raw_os_error(libc::ENOBUFS)) }
            }
            fn flows(&self) -> &[FlowSocket] {
                &self.flows
            }
            fn template(&self) -> &Template {
                &self.template
            }
        }
        let x = ctx(1, None, 8, None, Some(30_000_000));
        let flaky = Flaky::new(1, 8, false);
        let mut e = Full { calls: 0, flows: flaky.flows, template: flaky.template };
        let mut seq = vec![0u64];
        let mut c = Counts::default();
        assert_eq!(x.send_data(&mut e, mono_ns(), &mut seq, &mut c).0, None);
        assert!(e.calls >= 1 && e.calls <= 40, "{} tries in 30 ms", e.calls);
        assert_eq!((c.enobufs, c.sent, seq[0]), (e.calls, 0, 0));
    }

    /// A send that stalls 150 ms (longer than the pacer catches up) makes
    /// the worker slip: counted, with at least the stall less one batch
    /// interval given up, and published with the other counts.
    #[test]
    fn a_stalled_worker_counts_its_slip() {
        struct Stall {
            calls: u64,
            flows: Vec<FlowSocket>,
            template: Template,
        }
        impl Transmitter for Stall {
            fn name(&self) -> &'static str {
                "stall"
            }
            fn send_data(&mut self, _slot: usize, _seq: u64, n: usize) -> Sent {
                self.calls += 1;
                if self.calls == 10 {
                    // Longer than the pacer catches up (CATCH_UP_NS): a slip.
                    sleep_until_mono(mono_ns() + 150_000_000);
                }
                Sent { n, err: None }
            }
            fn flows(&self) -> &[FlowSocket] {
                &self.flows
            }
            fn template(&self) -> &Template {
                &self.template
            }
        }
        let pps = 20_000.0;
        let x = ctx(1, Some(pps), 32, Some(200), None);
        let flaky = Flaky::new(1, 32, false);
        let mut e = Stall { calls: 0, flows: flaky.flows, template: flaky.template };
        let mut seq = vec![0u64];
        let mut c = Counts::default();
        let (fatal, pacing) = x.send_data(&mut e, mono_ns(), &mut seq, &mut c);
        assert!(fatal.is_none());
        let s = pacing.unwrap();
        assert!(s.slips >= 1 && s.deficit >= (150_000_000.0 - 200_000.0) / 50_000.0, "{s:?}");
        assert_eq!((c.sent, c.slips, c.deficit), (200, s.slips, s.deficit as u64));
        assert_eq!(x.counters[0].read(), c, "published");
        assert!(s.gap_max_ns.unwrap() >= 150_000_000, "{s:?}");
    }

    #[test]
    fn errors_are_classified_and_counted_by_kind() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::ENOBUFS)), ErrKind::Enobufs);
        assert_eq!(classify(&e(libc::EAGAIN)), ErrKind::Eagain);
        assert_eq!(classify(&e(libc::EINTR)), ErrKind::Interrupted);
        assert_eq!(classify(&e(libc::EMSGSIZE)), ErrKind::TooBig);
        assert_eq!(classify(&e(libc::ENETUNREACH)), ErrKind::Other);
        let mut c = Counts::default();
        for k in
            [ErrKind::Enobufs, ErrKind::Enobufs, ErrKind::Eagain, ErrKind::Interrupted, ErrKind::Other, ErrKind::TooBig]
        {
            count_error(&mut c, k);
        }
        assert_eq!((c.enobufs, c.eagain, c.other, c.errors()), (2, 1, 2, 5));
    }

    #[test]
    fn error_log_is_rate_limited_and_says_how_many_it_hid() {
        let mut l = ErrLog::new(1);
        let e = io::Error::from_raw_os_error(libc::ENOBUFS);
        let first = l.note(1_000, 7, &e).unwrap();
        assert!(first.contains("worker 1, flow 7") && first.contains("counted"), "{first}");
        for i in 0..1000 {
            assert!(l.note(1_000 + i * 1_000_000, 7, &e).is_none());
        }
        let next = l.note(1_000 + LOG_EVERY_NS, 7, &e).unwrap();
        assert!(next.contains("1000 more send errors"), "{next}");
        assert!(l.note(2_000 + LOG_EVERY_NS, 7, &e).is_none());
    }
}
