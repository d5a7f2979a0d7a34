//! The output contract. Human text by default; with `--json`, JSON Lines:
//! one object per line, each with `"type"` = `"begin"`, `"interval"`,
//! `"summary"`, `"loss"` (a receiver's exact lost ranges, see
//! `report::fanout::LossLine`), `"notice"` (a receiver's notice) or `"error"`.
//! The types here are serialize-only; tests deserialize the program's real
//! output to check the contract.

use std::io::{self, Write};

use serde::Serialize;

use mcblast_common::hist;
use mcblast_common::tracker::FlowState;

/// Writes human text or JSON Lines to stdout.
pub struct Printer {
    json: bool,
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(flatten)]
    inner: &'a T,
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Printer { json }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// Emits one JSON line of the given type (JSON mode only).
    pub fn emit<T: Serialize>(&mut self, ty: &str, v: &T) -> io::Result<()> {
        if !self.json {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        serde_json::to_writer(&mut out, &Tagged { ty, inner: v })?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Prints a record: its JSON line with `--json`, else its human text (nothing when that is empty). Domain
    /// code builds records and hands them here; it does not pair `emit` with text of its own.
    pub fn print<R: Record>(&mut self, r: &R) -> io::Result<()> {
        if self.json {
            return self.emit(R::TYPE, r);
        }
        let text = r.human();
        if text.is_empty() { Ok(()) } else { self.human(&text) }
    }

    /// Prints records a person reads as one line: each record's JSON line with `--json`, else the group's text.
    pub fn print_group<G: Group>(&mut self, g: &G) -> io::Result<()> {
        if !self.json {
            return self.human(&g.human());
        }
        for r in g.records() {
            self.emit(G::Item::TYPE, r)?;
        }
        Ok(())
    }

    /// Prints human text (human mode only).
    pub fn human(&mut self, text: &str) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

/// A line of output in both its forms: the JSON object (with `"type"` = [`Record::TYPE`]) and the human text.
pub trait Record: Serialize {
    /// The line's `"type"`.
    const TYPE: &'static str;
    /// The text a person reads in place of the JSON line; empty when the line has nothing to tell them.
    fn human(&self) -> String;
}

/// Records printed together ([`Printer::print_group`]): a JSON line each, but one human text for all of them.
pub trait Group {
    type Item: Record;
    fn records(&self) -> &[Self::Item];
    /// The text a person reads in place of the records' JSON lines.
    fn human(&self) -> String;
}

/// Whether an error chain bottoms out in a broken pipe (`mcblast ... | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

#[derive(Serialize)]
struct ErrorLine {
    message: String,
}

/// Prints an error as one line: `mcblast: ...` on stderr, or a JSON error line.
pub fn print_error(json: bool, e: &anyhow::Error) {
    let msg = format!("{e:#}");
    if json {
        let _ = Printer::new(true).emit("error", &ErrorLine { message: msg.clone() });
    }
    eprintln!("mcblast: {msg}");
}

// ---------------------------------------------------------------- sender

#[derive(Serialize, Debug, Clone)]
pub struct SendBegin {
    pub role: &'static str,
    pub version: &'static str,
    pub run: u32,
    pub engine: String,
    pub interface: String,
    pub groups: Vec<String>,
    pub port: u16,
    pub length: usize,
    pub flows: u32,
    pub threads: u32,
    /// Target rate in bit/s, absent when sending as fast as possible.
    pub target_bps: Option<f64>,
    pub target_pps: Option<f64>,
    pub time_s: Option<f64>,
    pub count: Option<u64>,
}

#[derive(Serialize, Debug, Clone)]
pub struct SendInterval {
    pub role: &'static str,
    pub start_s: f64,
    pub end_s: f64,
    pub sent: u64,
    pub bytes: u64,
    pub errors: u64,
    pub rate_bps: f64,
    pub rate_pps: f64,
    /// Paced runs: times a worker fell more than a batch interval behind
    /// its schedule in this interval (the missed time is given up, not
    /// caught up in a burst), and the datagrams' worth of time given up.
    pub pacing_slips: u64,
    pub pacing_deficit: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct SendFlow {
    pub flow: u32,
    pub group: String,
    pub src_port: u16,
    pub sent: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct SendSummary {
    pub role: &'static str,
    pub run: u32,
    pub engine: String,
    pub duration_s: f64,
    /// Data datagrams handed to the kernel successfully.
    pub sent: u64,
    pub bytes: u64,
    /// Send calls that failed (ENOBUFS, EAGAIN, others); not fatal.
    pub errors: u64,
    pub errors_enobufs: u64,
    pub errors_eagain: u64,
    pub errors_other: u64,
    /// End-of-flow markers sent (several per flow).
    pub end_markers: u64,
    pub rate_bps: f64,
    pub rate_pps: f64,
    /// The rate asked for (as in the begin line), absent when sending as
    /// fast as possible: compare with `rate_bps`/`rate_pps`.
    pub target_bps: Option<f64>,
    pub target_pps: Option<f64>,
    /// Paced runs: times a worker fell more than a batch interval behind its
    /// schedule; each time its schedule restarted from then and the missed
    /// time was given up, not caught up in a burst.
    pub pacing_slips: u64,
    /// The datagrams' worth of time those slips gave up.
    pub pacing_deficit: u64,
    /// Paced runs: shortest and longest time between two batches of one worker, µs.
    pub pacing_gap_min_us: Option<f64>,
    pub pacing_gap_max_us: Option<f64>,
    /// CPU seconds (user + system) the sender used.
    pub cpu_s: f64,
    pub flows: Vec<SendFlow>,
}

// ---------------------------------------------------------------- receiver

#[derive(Serialize, Debug, Clone)]
pub struct RecvBegin {
    pub role: &'static str,
    pub version: &'static str,
    pub interface: String,
    pub ifindex: u32,
    pub groups: Vec<String>,
    pub port: u16,
    pub source: Option<String>,
    pub counters: Vec<&'static str>,
    /// What the datagrams are: "mcblast" or "iperf2" (`--format`).
    pub format: &'static str,
    /// The kernel counter's attach point: "native" or "generic" (XDP), or "tc"
    /// (tc ingress through tcx); absent without the kernel counter.
    pub xdp_mode: Option<&'static str>,
    /// Why the counter sits there: what `auto` found and chose, or the
    /// `--xdp-mode` asked for; absent without the kernel counter.
    pub attach_reason: Option<String>,
    pub clock_synced: bool,
    /// Whether the drop tracer runs, so the run ends with a `layers` summary
    /// (with `sink` the run ends with one too, without drop reasons).
    pub drop_tracer: bool,
    /// `--sink`: the kernel counter drops the mcblast datagrams it counted.
    pub sink: bool,
    /// What `--sink auto` (the default, for the kernel counter alone) found and chose; absent when the flags
    /// decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink_reason: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct FlowReport {
    pub sender: String,
    pub group: String,
    pub run: u32,
    pub flow: u32,
    pub received: u64,
    pub bytes: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub reordered: u64,
    pub duplicates: u64,
    pub stale: u64,
    /// Datagrams the flow is known to have sent (highest sequence + 1, or the end marker's count).
    pub expected: u64,
    pub ended: bool,
    pub jitter_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipdv: Option<Ipdv>,
    /// Kernel counter only: data datagrams of `received` that arrived
    /// fragmented (counted by their first fragment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragmented: Option<u64>,
}

/// One-way delay of a flow (receive time minus the header's send time).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Delay {
    /// True when the sender and receiver share a clock, or both are synchronised.
    pub trusted: bool,
    pub min_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    #[serde(flatten)]
    pub percentiles: Percentiles,
    /// Delays below zero (clocks apart), counted in the first bucket too.
    pub negative: u64,
    /// Non-empty buckets of the tracker's histogram ([`mcblast_common::hist`]).
    pub histogram_ns: Vec<(i64, u64)>,
}

/// Inter-packet delay variation of a flow (RFC 3393: |transit(i) −
/// transit(i−1)| of consecutive arrivals). Needs no clock synchronisation.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Ipdv {
    pub count: u64,
    pub max_us: f64,
    #[serde(flatten)]
    pub percentiles: Percentiles,
    pub histogram_ns: Vec<(i64, u64)>,
}

/// Percentiles (µs) read from a log-linear histogram: each within 6.25 % of
/// the true value (its bucket), clamped to the exact min and max.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
}

impl Percentiles {
    pub fn of(hist: &[u64], min_ns: i64, max_ns: i64) -> Percentiles {
        let q = |q: f64| hist::quantile_ns(hist, q, min_ns, max_ns).unwrap_or(0) as f64 / 1e3;
        Percentiles { p50_us: q(0.5), p90_us: q(0.9), p99_us: q(0.99), p999_us: q(0.999), p9999_us: q(0.9999) }
    }
}

/// The non-empty buckets of a histogram as `[lower_ns, count]`; the first
/// bucket (below 1024 ns, negative values included) says 0.
pub fn histogram_ns(hist: &[u64]) -> Vec<(i64, u64)> {
    hist.iter().enumerate().filter(|(_, n)| **n > 0).map(|(b, n)| (hist::lower_ns(b).max(0), *n)).collect()
}

#[derive(Serialize, Debug, Clone)]
pub struct RecvInterval {
    pub role: &'static str,
    pub counter: &'static str,
    pub start_s: f64,
    pub end_s: f64,
    pub received: u64,
    pub bytes: u64,
    /// Change of the lost count (negative when late datagrams filled gaps).
    pub lost: i64,
    pub rate_bps: f64,
    pub rate_pps: f64,
    /// Delay and IPDV percentiles of this interval alone, over the counter's flows (null without samples in it).
    #[serde(flatten)]
    pub dist: IntervalDist,
    /// The same per flow: each flow that received or lost datagrams in the interval.
    pub flows: Vec<FlowInterval>,
}

/// One flow's share of an interval line: what it received and lost, and its delay and IPDV percentiles.
#[derive(Serialize, Debug, Clone)]
pub struct FlowInterval {
    pub sender: String,
    pub group: String,
    pub run: u32,
    pub flow: u32,
    pub received: u64,
    /// Change of the flow's lost count (negative when late datagrams filled gaps).
    pub lost: i64,
    #[serde(flatten)]
    pub dist: IntervalDist,
}

/// One-way delay and IPDV percentiles (µs) of one interval, over a counter's flows: each flow's histogram of
/// the interval is the difference of two cumulative snapshots, and the flows' are summed (an exact merge).
/// Null when the interval had no such sample. `delay_max_us` is the top of the highest non-empty bucket (a
/// difference of histograms keeps no exact maximum), clamped to the largest delay seen so far: at most 6.25 %
/// above the interval's true maximum.
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct IntervalDist {
    /// False when a flow with delay samples in the interval has an untrusted delay (clocks not synchronised).
    pub delay_trusted: Option<bool>,
    pub delay_p50_us: Option<f64>,
    pub delay_p90_us: Option<f64>,
    pub delay_p99_us: Option<f64>,
    pub delay_p999_us: Option<f64>,
    pub delay_p9999_us: Option<f64>,
    pub delay_max_us: Option<f64>,
    pub ipdv_p50_us: Option<f64>,
    pub ipdv_p90_us: Option<f64>,
    pub ipdv_p99_us: Option<f64>,
    pub ipdv_p999_us: Option<f64>,
    pub ipdv_p9999_us: Option<f64>,
    pub ipdv_max_us: Option<f64>,
}

/// A flow's cumulative counts and delay and IPDV histograms at one interval line: what the next one subtracts.
#[derive(Clone)]
pub struct FlowMark {
    pub received: u64,
    pub lost: u64,
    pub delay: [u64; hist::BUCKETS],
    pub ipdv: [u64; hist::BUCKETS],
}

impl FlowMark {
    pub fn of(st: &FlowState) -> Box<FlowMark> {
        Box::new(FlowMark { received: st.received, lost: st.lost, delay: st.delay_hist, ipdv: st.ipdv_hist })
    }
}

/// The sum over a counter's flows of their histograms of one interval ([`IntervalDist`]).
pub struct IntervalHists {
    delay: [u64; hist::BUCKETS],
    ipdv: [u64; hist::BUCKETS],
    /// Bounds of the values the interval can hold: the flows' smallest and largest delays, and largest IPDV, so far.
    delay_min: i64,
    delay_max: i64,
    ipdv_max: i64,
    trusted: bool,
}

impl Default for IntervalHists {
    fn default() -> Self {
        IntervalHists {
            delay: [0; hist::BUCKETS],
            ipdv: [0; hist::BUCKETS],
            delay_min: i64::MAX,
            delay_max: i64::MIN,
            ipdv_max: 0,
            trusted: true,
        }
    }
}

impl IntervalHists {
    /// Adds one flow's interval: its histograms now minus those of the last report (`prev`; None for a flow new
    /// since then), bucket by bucket. `trusted`: whether the flow's one-way delay is ([`delay_trusted`]).
    pub fn add(&mut self, now: &FlowState, prev: Option<&FlowMark>, trusted: bool) {
        let mut any_delay = false;
        for b in 0..hist::BUCKETS {
            let d = now.delay_hist[b].saturating_sub(prev.map_or(0, |p| p.delay[b]));
            let i = now.ipdv_hist[b].saturating_sub(prev.map_or(0, |p| p.ipdv[b]));
            any_delay |= d > 0;
            self.delay[b] += d;
            self.ipdv[b] += i;
        }
        if any_delay {
            self.delay_min = self.delay_min.min(now.delay_min_ns);
            self.delay_max = self.delay_max.max(now.delay_max_ns);
            self.trusted &= trusted;
        }
        self.ipdv_max = self.ipdv_max.max(now.ipdv_max_ns.min(i64::MAX as u64) as i64);
    }

    pub fn dist(&self) -> IntervalDist {
        let us = |ns: Option<i64>| ns.map(|v| v as f64 / 1e3);
        let d = |q| us(hist::quantile_ns(&self.delay, q, self.delay_min, self.delay_max));
        let i = |q| us(hist::quantile_ns(&self.ipdv, q, 0, self.ipdv_max));
        let top = |h: &[u64], min: i64, max: i64| {
            us(h.iter().rposition(|n| *n > 0).map(|b| hist::upper_ns(b).saturating_sub(1).clamp(min, max)))
        };
        let delay_max_us = top(&self.delay, self.delay_min, self.delay_max);
        IntervalDist {
            delay_trusted: delay_max_us.map(|_| self.trusted),
            delay_p50_us: d(0.5),
            delay_p90_us: d(0.9),
            delay_p99_us: d(0.99),
            delay_p999_us: d(0.999),
            delay_p9999_us: d(0.9999),
            delay_max_us,
            ipdv_p50_us: i(0.5),
            ipdv_p90_us: i(0.9),
            ipdv_p99_us: i(0.99),
            ipdv_p999_us: i(0.999),
            ipdv_p9999_us: i(0.9999),
            ipdv_max_us: top(&self.ipdv, 0, self.ipdv_max),
        }
    }
}

/// A flow's key as the outputs name it: sender and group as dotted quads, run and flow as they are.
pub fn flow_names(key: &mcblast_common::FlowKey) -> (String, String) {
    let ip = |v: u32| std::net::Ipv4Addr::from(v.to_ne_bytes()).to_string();
    (ip(key.sender), ip(key.group))
}

#[derive(Serialize, Debug, Clone)]
pub struct RecvSummary {
    pub role: &'static str,
    pub counter: &'static str,
    pub duration_s: f64,
    /// What the datagrams are: "mcblast", or "iperf2" (then a flow's `run` is
    /// the destination port and its `flow` the sender's source port).
    pub format: &'static str,
    /// Datagrams to the port that were not mcblast's, were malformed, or of another run.
    pub foreign: u64,
    pub flows: Vec<FlowReport>,
    /// Kernel counter only: valid datagrams that found no room in the flow map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_full: Option<u64>,
    /// Kernel counter only: datagrams (data and end markers) that arrived
    /// fragmented, counted in their flows by their first fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragments: Option<u64>,
    /// Kernel counter only: later fragments (offset not 0) matched to a
    /// counted first fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub later_fragments: Option<u64>,
    /// Kernel counter only: later fragments that matched no counted first
    /// fragment (arrived before it, or not of an mcblast datagram).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmatched_fragments: Option<u64>,
    /// Kernel counter only: datagrams to the port for groups (or from sources) this receiver did not join.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_group: Option<u64>,
    /// Kernel counter only: packets that carried several datagrams behind
    /// one UDP header (a GSO batch that crossed veth and a bridge whole,
    /// or datagrams merged by GRO); each datagram was counted on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<u64>,
    /// Kernel counter only: datagrams in such packets past the most the
    /// counter walks: not counted, so their flows show them as lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwalked: Option<u64>,
}

/// Per interval, what the drop tracer charged to each layer (data datagrams;
/// path loss per interval is the kernel counter's interval `lost`).
#[derive(Serialize, Debug, Clone)]
pub struct LayersInterval {
    pub role: &'static str,
    pub counter: &'static str,
    pub start_s: f64,
    pub end_s: f64,
    pub kernel_dropped: u64,
    pub unspecified: u64,
    pub no_listener: u64,
    pub socket_dropped: u64,
    pub unread_at_close: u64,
    /// Datagrams whose reassembly failed (a fragment lost).
    pub reassembly_failed: u64,
    /// The driver's drop counters (`ethtool -S`, whole interface); null
    /// when the driver's statistics cannot be read.
    pub driver_dropped: Option<u64>,
}

/// Whether a flow's one-way delays are trusted (see [`flow_report`]).
pub fn delay_trusted(st: &FlowState, local: &crate::clock::LocalClock) -> bool {
    let sender_synced = st.flags & mcblast_common::tracker::STATE_SENDER_SYNCED != 0;
    st.sender_clock == local.id || (sender_synced && local.synced && st.sender_tai_offset() == local.tai_offset)
}

/// Builds a flow's report from its tracker state. One-way delays are
/// trusted when the sender shares our clock (same boot id), or both clocks
/// are synchronised and agree on the TAI−UTC offset (timestamps are
/// CLOCK_TAI; hosts that disagree on the offset differ by whole seconds).
pub fn flow_report(key: &mcblast_common::FlowKey, st: &FlowState, local: &crate::clock::LocalClock) -> FlowReport {
    let expected = st.expected();
    let loss_pct = if expected == 0 { 0.0 } else { st.lost as f64 * 100.0 / expected as f64 };
    let delay = (st.delay_count > 0).then(|| Delay {
        trusted: delay_trusted(st, local),
        min_us: st.delay_min_ns as f64 / 1e3,
        mean_us: st.delay_mean_ns().unwrap_or(0) as f64 / 1e3,
        max_us: st.delay_max_ns as f64 / 1e3,
        percentiles: Percentiles::of(&st.delay_hist, st.delay_min_ns, st.delay_max_ns),
        negative: st.delay_negative,
        histogram_ns: histogram_ns(&st.delay_hist),
    });
    let ipdv = (st.ipdv_count > 0).then(|| {
        let max = st.ipdv_max_ns.min(i64::MAX as u64) as i64;
        Ipdv {
            count: st.ipdv_count,
            max_us: max as f64 / 1e3,
            percentiles: Percentiles::of(&st.ipdv_hist, 0, max),
            histogram_ns: histogram_ns(&st.ipdv_hist),
        }
    });
    let (sender, group) = flow_names(key);
    FlowReport {
        sender,
        group,
        run: key.run,
        flow: key.flow,
        received: st.received,
        bytes: st.bytes,
        lost: st.lost,
        loss_pct,
        reordered: st.reordered,
        duplicates: st.duplicates,
        stale: st.stale,
        expected,
        ended: st.ended != 0,
        jitter_us: st.jitter_ns() as f64 / 1e3,
        delay,
        ipdv,
        fragmented: None,
    }
}

/// Human rate: 1.23 Gbit/s.
pub fn fmt_bps(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} Gbit/s", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.2} Mbit/s", bps / 1e6)
    } else if bps >= 1e3 {
        format!("{:.2} kbit/s", bps / 1e3)
    } else {
        format!("{bps:.0} bit/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_type() {
        #[derive(Serialize)]
        struct X {
            a: u32,
        }
        let s = serde_json::to_string(&Tagged { ty: "summary", inner: &X { a: 1 } }).unwrap();
        assert_eq!(s, r#"{"type":"summary","a":1}"#);
    }

    #[test]
    fn flow_report_from_state() {
        let mut st = FlowState::new();
        for s in [0u64, 1, 3] {
            st.on_data(s, 100, 1000, 3000, 0, 7);
        }
        st.on_end(5, 4000, 0, 7);
        let key = mcblast_common::FlowKey {
            sender: u32::from_ne_bytes([10, 0, 0, 1]),
            group: u32::from_ne_bytes([239, 0, 0, 1]),
            run: 9,
            flow: 2,
        };
        let here = |id, synced, tai_offset| crate::clock::LocalClock { id, synced, tai_offset };
        let r = flow_report(&key, &st, &here(7, false, 0));
        assert_eq!(r.sender, "10.0.0.1");
        assert_eq!(r.group, "239.0.0.1");
        assert_eq!((r.received, r.lost, r.expected), (3, 2, 5));
        assert!((r.loss_pct - 40.0).abs() < 1e-9);
        let d = r.delay.unwrap();
        assert!(d.trusted, "same clock id means the delay is trusted");
        assert_eq!(d.min_us, 2.0);
        // 2000 ns: the bucket [1984, 2048) ns of the log-linear histogram.
        assert_eq!(d.histogram_ns, vec![(1984, 3)]);
        assert_eq!((d.percentiles.p50_us, d.percentiles.p9999_us), (2.0, 2.0), "clamped to the exact max");
        let r2 = flow_report(&key, &st, &here(8, false, 0));
        assert!(!r2.delay.unwrap().trusted, "another clock, not synchronised");
        // Another host, both synchronised, sender's TAI offset 37 (flags bits 8..15).
        let mut synced = FlowState::new();
        synced.on_data(0, 100, 1000, 3000, mcblast_common::wire::FLAG_CLOCK_SYNCED | (37 << 8), 9);
        assert!(flow_report(&key, &synced, &here(8, true, 37)).delay.unwrap().trusted);
        assert!(!flow_report(&key, &synced, &here(8, true, 0)).delay.unwrap().trusted, "TAI offsets differ");
        assert!(!flow_report(&key, &synced, &here(8, false, 37)).delay.unwrap().trusted, "we are not synchronised");
    }

    #[test]
    fn interval_percentiles_are_the_difference_of_snapshots_merged_over_flows() {
        let data = |st: &mut FlowState, seq: u64, delay_ns: u64| {
            let _ = st.on_data(seq, 100, 1_000_000 * seq, 1_000_000 * seq + delay_ns, 0, 7);
        };
        let (mut a, mut b) = (FlowState::new(), FlowState::new());
        // before the last report: flow a 100 datagrams of 1 ms delay (b not seen yet)
        for s in 0..100 {
            data(&mut a, s, 1_000_000);
        }
        let prev_a = FlowMark::of(&a);
        let empty = IntervalHists::default();
        assert_eq!(empty.dist(), IntervalDist::default(), "no samples: every field null");
        // this interval: a 90 more at 10 µs, b (new) 10 at 5 ms
        for s in 100..190 {
            data(&mut a, s, 10_000);
        }
        for s in 0..10 {
            data(&mut b, s, 5_000_000);
        }
        let mut h = IntervalHists::default();
        h.add(&a, Some(&prev_a), true);
        h.add(&b, None, true);
        let d = h.dist();
        assert_eq!(h.delay.iter().sum::<u64>(), 100, "the 100 earlier datagrams are not in the interval");
        let near = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() <= want * 0.0625;
        assert!(near(d.delay_p50_us, 10.0), "{d:?}");
        assert!(near(d.delay_p99_us, 5000.0) && near(d.delay_p999_us, 5000.0), "b's delays are the top 10 %: {d:?}");
        assert!(d.delay_max_us.unwrap() <= 5000.0, "clamped to the largest delay seen");
        assert!(
            d.delay_p50_us <= d.delay_p99_us && d.delay_p99_us <= d.delay_p999_us && d.delay_p999_us <= d.delay_max_us
        );
        assert!(near(d.delay_p90_us, 10.0) && near(d.delay_p9999_us, 5000.0), "{d:?}");
        assert_eq!(d.delay_trusted, Some(true));
        // IPDV: a's 1 ms → 10 µs step once, the rest 0; b's all 0
        assert_eq!(h.ipdv.iter().sum::<u64>(), 90 + 9);
        assert!(d.ipdv_p50_us.unwrap() < 1.1 && d.ipdv_p90_us.unwrap() < 1.1 && near(d.ipdv_p99_us, 990.0), "{d:?}");
        assert!(near(d.ipdv_p9999_us, 990.0) && d.ipdv_max_us.unwrap() <= 990.0 && near(d.ipdv_max_us, 990.0));
        // a flow without new datagrams adds nothing; an untrusted one with samples marks the delay untrusted
        let mut h2 = IntervalHists::default();
        h2.add(&a, Some(&FlowMark::of(&a)), false);
        assert_eq!(h2.dist().delay_trusted, None);
        h2.add(&b, None, false);
        assert_eq!(h2.dist().delay_trusted, Some(false));
    }

    #[test]
    fn rates_format() {
        assert_eq!(fmt_bps(1.5e9), "1.50 Gbit/s");
        assert_eq!(fmt_bps(100e6), "100.00 Mbit/s");
    }
}
