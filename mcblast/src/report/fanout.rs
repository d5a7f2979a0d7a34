//! Fan-out across receivers: exact loss records and `mcblast report`.
//!
//! **Records** (receiver side). Every counter of `mcblast recv` feeds the
//! tracker's loss events ([`LossEvent`]: a gap opened, a late datagram
//! filled one) into a [`LossLog`] per flow, which keeps the exact set of
//! lost sequence numbers as ranges, each tagged with the interval in which
//! its gap was detected. Intervals are aligned to the TAI clock
//! (`index = rx_ns / interval`), so receivers with synchronised clocks line
//! up. With `--json` the receiver ends with one `{"type":"loss",...}` line
//! per counter ([`LossLine`]): per flow, run-length-encoded ranges
//! `[first_seq, count]` grouped by interval.
//!
//! **FanoutReport** (`mcblast report r1.jsonl r2.jsonl …`, [`report`]). Merges
//! receivers' records into a receiver × interval matrix of lost datagrams
//! and classifies every lost sequence number of every flow:
//! * **common**: lost at every receiver that saw the flow: upstream of the
//!   replication point (the sender or the fabric before it);
//! * **unique**: lost at exactly one receiver: its own path or host;
//! * **partial**: lost at some but not all: between the replication point
//!   and the receivers (e.g. one emulated host, a downstream switch).
//!
//! With a single receiver every loss is common (nothing to compare with).
//! A sender's `mcblast send --json` output among the inputs adds its
//! ledger: datagrams its interface dropped after the kernel took them are
//! named as lost in the sender, not on the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use mcblast_common::FlowKey;
use mcblast_common::tracker::LossEvent;

use crate::output::{Printer, Record};

/// Most lost ranges a receiver keeps per flow; beyond it the flow's record
/// says `truncated` (its `lost` count stays exact in the summary).
pub const MAX_RANGES: usize = 100_000;

/// Ranges listed per class in a report (the largest ones; counts stay exact).
const TOP_RANGES: usize = 10;

/// Ranges shown in the receiver's human line of a flow.
const HUMAN_RANGES: usize = 8;

/// Interval columns the human matrix shows (the JSON has all).
const HUMAN_COLUMNS: usize = 20;

// ------------------------------------------------------------ loss records

/// The exact lost sequence numbers of one flow: the tracker's gaps minus
/// its fills, as disjoint ranges tagged with the interval of their gap.
///
/// Gaps never overlap and each fill lies in an earlier gap, so the result
/// does not depend on the order events are applied in (the kernel's ring
/// buffer may deliver a fill from one CPU before the gap from another): a
/// fill that finds no range waits until its gap comes.
#[derive(Debug, Default, Clone)]
pub struct LossLog {
    /// Range start to (end, exclusive; interval index of its gap).
    ranges: BTreeMap<u64, (u64, u64)>,
    /// Fills whose gap has not come (yet).
    pending: BTreeSet<u64>,
    /// Gaps or fills were left out: more than [`MAX_RANGES`].
    truncated: bool,
}

impl LossLog {
    /// Applies one tracker event detected in interval `interval`.
    pub fn apply(&mut self, ev: LossEvent, interval: u64) {
        match ev {
            LossEvent::None => {}
            LossEvent::Gap { from, to } => self.gap(from, to, interval),
            LossEvent::Fill { seq } => self.fill(seq),
        }
    }

    fn gap(&mut self, from: u64, to: u64, interval: u64) {
        if from >= to {
            return;
        }
        // Fills that came before their gap cut it into pieces.
        let holes: Vec<u64> = self.pending.range(from..to).copied().collect();
        let mut start = from;
        for h in holes {
            self.pending.remove(&h);
            self.insert(start, h, interval);
            start = h + 1;
        }
        self.insert(start, to, interval);
    }

    fn insert(&mut self, from: u64, to: u64, interval: u64) {
        if from >= to {
            return;
        }
        if self.ranges.len() >= MAX_RANGES {
            self.truncated = true;
            return;
        }
        self.ranges.insert(from, (to, interval));
    }

    fn fill(&mut self, seq: u64) {
        let hit = self.ranges.range(..=seq).next_back().map(|(&s, &(e, iv))| (s, e, iv)).filter(|&(_, e, _)| seq < e);
        let Some((s, e, iv)) = hit else {
            if self.pending.len() >= MAX_RANGES {
                self.truncated = true;
            } else {
                self.pending.insert(seq);
            }
            return;
        };
        self.ranges.remove(&s);
        if s < seq {
            self.ranges.insert(s, (seq, iv));
        }
        if seq + 1 < e {
            // A split adds a range: past the cap the rest of it is dropped.
            if self.ranges.len() >= MAX_RANGES {
                self.truncated = true;
            } else {
                self.ranges.insert(seq + 1, (e, iv));
            }
        }
    }

    /// Lost sequence numbers recorded.
    pub fn lost(&self) -> u64 {
        self.ranges.iter().map(|(s, (e, _))| e - s).sum()
    }

    /// Whether the log had to leave something out.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The ranges in sequence order, as `[first, count]`.
    pub fn ranges(&self) -> Vec<[u64; 2]> {
        self.ranges.iter().map(|(&s, &(e, _))| [s, e - s]).collect()
    }

    /// The flow's record: ranges grouped by interval (`interval_ns` long).
    pub fn record(&self, key: &FlowKey, interval_ns: u64) -> FlowLoss {
        let mut by_iv: BTreeMap<u64, Vec<[u64; 2]>> = BTreeMap::new();
        for (&s, &(e, iv)) in &self.ranges {
            by_iv.entry(iv).or_default().push([s, e - s]);
        }
        let ip = |v: u32| std::net::Ipv4Addr::from(v.to_ne_bytes()).to_string();
        FlowLoss {
            sender: ip(key.sender),
            group: ip(key.group),
            run: key.run,
            flow: key.flow,
            lost: self.lost(),
            truncated: self.truncated,
            intervals: by_iv
                .into_iter()
                .map(|(index, ranges)| IntervalLoss {
                    index,
                    start_tai_ns: index.saturating_mul(interval_ns),
                    lost: ranges.iter().map(|r| r[1]).sum(),
                    ranges,
                })
                .collect(),
        }
    }
}

/// The interval (of `interval_ns`, aligned to the TAI clock) of a receive time.
pub fn interval_of(rx_tai_ns: u64, interval_ns: u64) -> u64 {
    rx_tai_ns / interval_ns.max(1)
}

/// The loss records of every flow one counter saw.
#[derive(Debug, Default, Clone)]
pub struct LossBook {
    pub flows: BTreeMap<FlowKey, LossLog>,
}

impl LossBook {
    /// Applies an event of `key`'s flow received at `rx_tai_ns`.
    pub fn apply(&mut self, key: FlowKey, ev: LossEvent, rx_tai_ns: u64, interval_ns: u64) {
        if ev != LossEvent::None {
            self.flows.entry(key).or_default().apply(ev, interval_of(rx_tai_ns, interval_ns));
        }
    }

    /// The `loss` line of a counter. `events_lost`: loss events the kernel
    /// could not queue (the records are then incomplete).
    pub fn line(&self, counter: &'static str, interval_ns: u64, events_lost: Option<u64>) -> LossLine {
        let flows: Vec<FlowLoss> =
            self.flows.iter().filter(|(_, l)| l.lost() > 0 || l.truncated()).map(|(k, l)| l.record(k, interval_ns)).collect();
        LossLine {
            role: "recv".into(),
            counter: counter.into(),
            interval_s: interval_ns as f64 / 1e9,
            complete: events_lost.unwrap_or(0) == 0 && flows.iter().all(|f| !f.truncated),
            events_lost,
            flows,
        }
    }

    /// The `loss` record of a counter: its line ([`LossBook::line`]) with this book for the human form.
    pub fn record(&self, counter: &'static str, interval_ns: u64, events_lost: Option<u64>) -> LossRecord<'_> {
        LossRecord { line: self.line(counter, interval_ns, events_lost), book: self }
    }

    /// One human line per flow with loss, e.g. `lost ranges (kernel), flow 0
    /// of 10.0.0.1: 1000+3, 2000+1 … (12 ranges)`; empty when nothing was lost.
    pub fn human(&self, counter: &str) -> String {
        let mut t = String::new();
        for (k, l) in &self.flows {
            if l.lost() == 0 && !l.truncated() {
                continue;
            }
            let r = l.ranges();
            let shown: Vec<String> = r.iter().take(HUMAN_RANGES).map(|[s, n]| format!("{s}+{n}")).collect();
            t.push_str(&format!(
                "lost ranges ({counter}), flow {} of {}: {}{} ({} ranges, {} datagrams{})\n",
                k.flow,
                std::net::Ipv4Addr::from(k.sender.to_ne_bytes()),
                shown.join(", "),
                if r.len() > HUMAN_RANGES { " …" } else { "" },
                r.len(),
                l.lost(),
                if l.truncated() { ", truncated" } else { "" }
            ));
        }
        t
    }
}

/// A counter's `loss` record: the JSON line, or one human line per flow with loss (nothing when nothing was
/// lost) and a warning when loss events found the kernel's ring buffer full.
#[derive(Serialize)]
pub struct LossRecord<'a> {
    #[serde(flatten)]
    pub line: LossLine,
    #[serde(skip)]
    pub book: &'a LossBook,
}

impl Record for LossRecord<'_> {
    const TYPE: &'static str = "loss";
    fn human(&self) -> String {
        let mut t = self.book.human(&self.line.counter);
        if let Some(n) = self.line.events_lost.filter(|n| *n > 0) {
            t.push_str(&format!(
                "warning: {n} loss events found the kernel's ring buffer full: \
                 the lost ranges above are incomplete (the counts are exact)"
            ));
        }
        t
    }
}

/// The `{"type":"loss",...}` line: a counter's exact lost ranges.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LossLine {
    pub role: String,
    pub counter: String,
    /// Length of the intervals the ranges are grouped by.
    pub interval_s: f64,
    /// False when ranges were left out (ring buffer full, or a flow truncated).
    pub complete: bool,
    /// Kernel counter: loss events that found the ring buffer full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_lost: Option<u64>,
    /// Flows with loss only.
    pub flows: Vec<FlowLoss>,
}

/// One flow's lost ranges.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FlowLoss {
    pub sender: String,
    pub group: String,
    pub run: u32,
    pub flow: u32,
    /// Datagrams in the ranges.
    pub lost: u64,
    /// More than [`MAX_RANGES`] ranges: some left out.
    pub truncated: bool,
    pub intervals: Vec<IntervalLoss>,
}

/// The ranges whose gap was detected in one interval.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct IntervalLoss {
    /// `start_tai_ns / interval`.
    pub index: u64,
    /// Start of the interval, ns of CLOCK_TAI.
    pub start_tai_ns: u64,
    pub lost: u64,
    /// `[first_seq, count]`, in sequence order.
    pub ranges: Vec<[u64; 2]>,
}

// ------------------------------------------------------------ range algebra

/// Sorted, disjoint, non-adjacent ranges `[first, count]` from any ranges.
fn normalize(mut v: Vec<[u64; 2]>) -> Vec<[u64; 2]> {
    v.retain(|r| r[1] > 0);
    v.sort_unstable();
    let mut out: Vec<[u64; 2]> = Vec::with_capacity(v.len());
    for [s, n] in v {
        let e = s.saturating_add(n);
        match out.last_mut() {
            Some(last) if s <= last[0] + last[1] => {
                let le = last[0] + last[1];
                if e > le {
                    last[1] = e - last[0];
                }
            }
            _ => out.push([s, n]),
        }
    }
    out
}

/// Appends `[s, s+n)` to sorted ranges, merging with the last when adjacent.
fn push_range(v: &mut Vec<[u64; 2]>, s: u64, n: u64) {
    if n == 0 {
        return;
    }
    if let Some(last) = v.last_mut()
        && last[0] + last[1] == s
    {
        last[1] += n;
        return;
    }
    v.push([s, n]);
}

/// The classification of one flow's lost sequence numbers over `n` receivers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    /// Lost at all `n`.
    pub common: Vec<[u64; 2]>,
    /// Lost at 2..n-1 of them.
    pub partial: Vec<[u64; 2]>,
    /// Lost at exactly one (by receiver index), when `n >= 2`.
    pub unique: BTreeMap<usize, Vec<[u64; 2]>>,
}

/// Classifies lost ranges: `lost[i]` are receiver i's ranges (any order).
/// With one receiver everything is common.
pub fn classify(lost: &[Vec<[u64; 2]>]) -> Split {
    let n = lost.len();
    // Sweep: +1 at each range start, -1 at its end, per receiver.
    let mut edges: Vec<(u64, bool, usize)> = Vec::new();
    for (i, r) in lost.iter().enumerate() {
        for [s, c] in normalize(r.clone()) {
            edges.push((s, true, i));
            edges.push((s + c, false, i));
        }
    }
    edges.sort_unstable_by_key(|&(p, start, i)| (p, start, i));
    let mut active: BTreeSet<usize> = BTreeSet::new();
    let mut split = Split::default();
    let mut prev = 0u64;
    for (pos, start, i) in edges {
        if pos > prev && !active.is_empty() {
            let len = pos - prev;
            if active.len() == n {
                push_range(&mut split.common, prev, len);
            } else if active.len() == 1 {
                let who = *active.iter().next().expect("one active");
                push_range(split.unique.entry(who).or_default(), prev, len);
            } else {
                push_range(&mut split.partial, prev, len);
            }
        }
        prev = pos;
        if start {
            active.insert(i);
        } else {
            active.remove(&i);
        }
    }
    split
}

fn count(r: &[[u64; 2]]) -> u64 {
    r.iter().map(|x| x[1]).sum()
}

/// The largest `k` ranges (ties: lowest first), in sequence order.
fn top(r: &[[u64; 2]], k: usize) -> Vec<[u64; 2]> {
    let mut v = r.to_vec();
    v.sort_by_key(|x| (std::cmp::Reverse(x[1]), x[0]));
    v.truncate(k);
    v.sort_unstable();
    v
}

fn fmt_ranges(r: &[[u64; 2]], total_ranges: usize) -> String {
    if r.is_empty() {
        return String::new();
    }
    let mut s: Vec<String> = r.iter().map(|[a, n]| format!("{a}+{n}")).collect();
    if total_ranges > r.len() {
        s.push(format!("… ({total_ranges} ranges)"));
    }
    s.join(", ")
}

// ------------------------------------------------------------ the report

/// One receiver's input.
struct FanoutReceiver {
    name: String,
    file: PathBuf,
    /// "kernel", or "socket" when the receiver ran without the kernel counter.
    counter: String,
    /// Flows the counter saw (flow key to its `lost` count).
    flows: BTreeMap<FlowId, u64>,
    loss: LossLine,
}

/// A flow as the JSON names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
struct FlowId {
    sender: String,
    group: String,
    run: u32,
    flow: u32,
}

/// What the sender's `--json` output says.
#[derive(Debug, Clone, Serialize)]
struct SenderInfo {
    file: PathBuf,
    run: u64,
    sent: u64,
    /// Data datagrams per flow id.
    flows: BTreeMap<u32, u64>,
    /// Packets its interface dropped or failed after the kernel took them
    /// (ledger `tx_dropped + tx_errors`; None: not known).
    lost_in_sender: Option<u64>,
}

/// The report as one record: one JSON object (`"type"` = `"report"`, `mcblast report --json`) or the text.
#[derive(Serialize, Debug)]
struct FanoutReport {
    receivers: Vec<ReceiverRow>,
    interval_s: f64,
    /// Start of each matrix column, ns of CLOCK_TAI.
    intervals_tai_ns: Vec<u64>,
    flows: Vec<FlowSplit>,
    totals: Totals,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<SenderInfo>,
    /// False when a receiver's records are incomplete: the classification
    /// then covers only what was recorded.
    complete: bool,
}

#[derive(Serialize, Debug)]
struct ReceiverRow {
    name: String,
    file: PathBuf,
    counter: String,
    /// The counter's `lost`, summed over flows.
    lost: u64,
    /// Lost datagrams in the records (equal to `lost` when complete).
    recorded: u64,
    complete: bool,
    /// Recorded lost datagrams per interval (the matrix row).
    per_interval: Vec<u64>,
}

#[derive(Serialize, Debug, Default)]
struct Totals {
    common: u64,
    partial: u64,
    /// FanoutReceiver name to its unique loss (every receiver listed).
    unique: BTreeMap<String, u64>,
    /// Of the common loss, what the sender's ledger says its own host lost
    /// (at most; None without a sender input).
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<u64>,
    /// Common loss not explained by the sender: upstream of the replication point.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<u64>,
}

#[derive(Serialize, Debug)]
struct FlowSplit {
    #[serde(flatten)]
    id: FlowId,
    /// Receivers that saw the flow.
    receivers: Vec<String>,
    /// Datagrams the sender says it sent in this flow (sender input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<u64>,
    common: Class,
    partial: Class,
    /// Receivers with unique loss.
    unique: Vec<UniqueClass>,
}

#[derive(Serialize, Debug)]
struct Class {
    count: u64,
    /// Ranges in the class.
    ranges: usize,
    /// The largest ranges, `[first_seq, count]`.
    top: Vec<[u64; 2]>,
}

impl Class {
    fn of(r: &[[u64; 2]]) -> Class {
        Class { count: count(r), ranges: r.len(), top: top(r, TOP_RANGES) }
    }
}

#[derive(Serialize, Debug)]
struct UniqueClass {
    receiver: String,
    #[serde(flatten)]
    class: Class,
}

/// What one input file is.
enum Input {
    FanoutReceiver(FanoutReceiver),
    Sender(SenderInfo),
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Reads one `--json` output of `mcblast recv` or `mcblast send`.
fn read_input(path: &Path) -> Result<Input> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", display(path)))?;
    let not_ours = |why: &str| {
        anyhow::anyhow!(
            "{} is not the --json output of mcblast recv or send ({why}); give the files `mcblast recv --json > FILE.jsonl` wrote",
            display(path)
        )
    };
    let mut lines = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).map_err(|_| not_ours(&format!("line {} is not JSON", i + 1)))?;
        lines.push(v);
    }
    let Some(begin) = lines.first().filter(|v| v["type"] == "begin") else {
        return Err(not_ours("it does not start with a begin line"));
    };
    match begin["role"].as_str() {
        Some("recv") => {}
        Some("send") => return read_sender(path, &lines),
        _ => return Err(not_ours("its begin line has no role recv or send")),
    }
    let name = begin["name"].as_str().map(str::to_string).unwrap_or_else(|| {
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| display(path))
    });
    // The kernel counter's records when it ran, else the socket's.
    let pick = |counter: &str| -> Option<(serde_json::Value, serde_json::Value)> {
        let s = lines.iter().find(|v| v["type"] == "summary" && v["counter"] == counter)?;
        let l = lines.iter().find(|v| v["type"] == "loss" && v["counter"] == counter)?;
        Some((s.clone(), l.clone()))
    };
    let (counter, (summary, loss)) = match pick("kernel").map(|p| ("kernel", p)).or_else(|| pick("socket").map(|p| ("socket", p))) {
        Some(p) => p,
        None if lines.iter().any(|v| v["type"] == "summary") => bail!(
            "{} has no loss records (a {{\"type\":\"loss\"}} line): it was written by an mcblast recv without them; run the receivers with this version",
            display(path)
        ),
        None => bail!("{} has no summary: the receiver did not finish (it was killed, or the file was cut short)", display(path)),
    };
    let loss: LossLine =
        serde_json::from_value(loss).map_err(|e| not_ours(&format!("its loss line does not parse: {e}")))?;
    let mut flows = BTreeMap::new();
    for f in summary["flows"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let id = FlowId {
            sender: f["sender"].as_str().unwrap_or_default().to_string(),
            group: f["group"].as_str().unwrap_or_default().to_string(),
            run: f["run"].as_u64().and_then(|r| u32::try_from(r).ok()).ok_or_else(|| not_ours("a flow has no run"))?,
            flow: f["flow"].as_u64().and_then(|r| u32::try_from(r).ok()).ok_or_else(|| not_ours("a flow has no flow id"))?,
        };
        flows.insert(id, f["lost"].as_u64().ok_or_else(|| not_ours("a flow has no lost count"))?);
    }
    Ok(Input::FanoutReceiver(FanoutReceiver { name, file: path.to_path_buf(), counter: counter.into(), flows, loss }))
}

fn read_sender(path: &Path, lines: &[serde_json::Value]) -> Result<Input> {
    let Some(s) = lines.iter().find(|v| v["type"] == "summary") else {
        bail!("{} has no sender summary: the sender did not finish (it was killed, or the file was cut short)", display(path));
    };
    let ledger = &s["ledger"];
    let lost_in_sender = match (ledger["tx_dropped"].as_u64(), ledger["tx_errors"].as_u64()) {
        (Some(d), Some(e)) => Some(d + e),
        _ => None,
    };
    let flows = s["flows"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| Some((u32::try_from(f["flow"].as_u64()?).ok()?, f["sent"].as_u64()?)))
        .collect();
    Ok(Input::Sender(SenderInfo {
        file: path.to_path_buf(),
        run: s["run"].as_u64().unwrap_or(0),
        sent: s["sent"].as_u64().unwrap_or(0),
        flows,
        lost_in_sender,
    }))
}

/// Builds the report from the inputs.
fn build(inputs: Vec<Input>) -> Result<FanoutReport> {
    let (recvs, sender) = sort_inputs(inputs)?;
    // All receivers must share a run (the sender's, when given).
    check_one_run(&recvs, sender.as_ref())?;
    let iv = recvs[0].loss.interval_s;
    if let Some(r) = recvs.iter().find(|r| r.loss.interval_s != iv) {
        bail!(
            "{} groups its loss by {} s intervals and {} by {} s: run the receivers with the same --interval",
            display(&recvs[0].file),
            iv,
            display(&r.file),
            r.loss.interval_s
        );
    }
    let (columns, rows) = loss_matrix(&recvs);
    let (flows, mut totals) = split_flows(&recvs, sender.as_ref());
    if let Some(s) = &sender {
        let in_sender = s.lost_in_sender.map(|l| l.min(totals.common));
        totals.sender = in_sender;
        totals.path = in_sender.map(|l| totals.common - l);
    }
    let complete = rows.iter().all(|r| r.complete);
    Ok(FanoutReport {
        receivers: rows,
        interval_s: iv,
        intervals_tai_ns: columns,
        flows,
        totals,
        sender,
        complete,
    })
}

/// The receivers' outputs (at least one, names distinct) and the sender's (at most one), in input order.
fn sort_inputs(inputs: Vec<Input>) -> Result<(Vec<FanoutReceiver>, Option<SenderInfo>)> {
    let mut recvs: Vec<FanoutReceiver> = Vec::new();
    let mut sender: Option<SenderInfo> = None;
    for i in inputs {
        match i {
            Input::FanoutReceiver(r) => {
                if let Some(o) = recvs.iter().find(|o| o.name == r.name) {
                    bail!(
                        "{} and {} both name receiver {}: give each receiver's output its own file name",
                        display(&o.file),
                        display(&r.file),
                        r.name
                    );
                }
                recvs.push(r);
            }
            Input::Sender(s) => {
                if let Some(o) = &sender {
                    bail!("{} and {} are both sender outputs: give one sender", display(&o.file), display(&s.file));
                }
                sender = Some(s);
            }
        }
    }
    if recvs.is_empty() {
        bail!("no receiver output among the inputs: give the files `mcblast recv --json` wrote (one per receiver)");
    }
    Ok((recvs, sender))
}

/// The runs a receiver saw.
fn runs_of(r: &FanoutReceiver) -> BTreeSet<u32> {
    r.flows.keys().map(|f| f.run).collect()
}

/// Refuses receivers that saw no run in common, or none the sender sent.
fn check_one_run(recvs: &[FanoutReceiver], sender: Option<&SenderInfo>) -> Result<()> {
    if let Some(s) = sender
        && let Some(r) = recvs.iter().find(|r| !r.flows.is_empty() && !runs_of(r).contains(&(s.run as u32)))
    {
        bail!(
            "{} saw run(s) {} but the sender {} sent run {:x}: give outputs of one run",
            display(&r.file),
            hex_runs(&runs_of(r)),
            display(&s.file),
            s.run
        );
    }
    let with_flows: Vec<&FanoutReceiver> = recvs.iter().filter(|r| !r.flows.is_empty()).collect();
    if let Some(first) = with_flows.first() {
        let mut common = runs_of(first);
        for r in &with_flows[1..] {
            let rr = runs_of(r);
            if common.intersection(&rr).next().is_none() {
                bail!(
                    "{} saw run(s) {} and {} saw run(s) {}: these receivers are from different runs; give outputs of one run",
                    display(&first.file),
                    hex_runs(&runs_of(first)),
                    display(&r.file),
                    hex_runs(&rr)
                );
            }
            common = common.intersection(&rr).copied().collect();
        }
    }
    Ok(())
}

/// The matrix: the intervals' start times (columns) and each receiver's recorded loss per interval (rows).
fn loss_matrix(recvs: &[FanoutReceiver]) -> (Vec<u64>, Vec<ReceiverRow>) {
    let columns: BTreeSet<u64> =
        recvs.iter().flat_map(|r| r.loss.flows.iter().flat_map(|f| f.intervals.iter().map(|i| i.start_tai_ns))).collect();
    let columns: Vec<u64> = columns.into_iter().collect();
    let rows: Vec<ReceiverRow> = recvs
        .iter()
        .map(|r| {
            let mut per = vec![0u64; columns.len()];
            for f in &r.loss.flows {
                for i in &f.intervals {
                    let c = columns.binary_search(&i.start_tai_ns).expect("column of every interval");
                    per[c] += i.lost;
                }
            }
            ReceiverRow {
                name: r.name.clone(),
                file: r.file.clone(),
                counter: r.counter.clone(),
                lost: r.flows.values().sum(),
                recorded: per.iter().sum(),
                complete: r.loss.complete,
                per_interval: per,
            }
        })
        .collect();
    (columns, rows)
}

/// Per flow: who saw it and the classification of its loss over them; the totals of the classes (sender's share unset).
fn split_flows(recvs: &[FanoutReceiver], sender: Option<&SenderInfo>) -> (Vec<FlowSplit>, Totals) {
    let all_flows: BTreeSet<FlowId> = recvs.iter().flat_map(|r| r.flows.keys().cloned()).collect();
    let mut totals = Totals { unique: recvs.iter().map(|r| (r.name.clone(), 0)).collect(), ..Totals::default() };
    let mut flows = Vec::new();
    for id in all_flows {
        let seen: Vec<&FanoutReceiver> = recvs.iter().filter(|r| r.flows.contains_key(&id)).collect();
        let lost: Vec<Vec<[u64; 2]>> = seen
            .iter()
            .map(|r| {
                r.loss
                    .flows
                    .iter()
                    .filter(|f| f.sender == id.sender && f.group == id.group && f.run == id.run && f.flow == id.flow)
                    .flat_map(|f| f.intervals.iter().flat_map(|i| i.ranges.iter().copied()))
                    .collect()
            })
            .collect();
        let split = classify(&lost);
        totals.common += count(&split.common);
        totals.partial += count(&split.partial);
        let unique: Vec<UniqueClass> = split
            .unique
            .iter()
            .map(|(&i, r)| {
                *totals.unique.get_mut(&seen[i].name).expect("every receiver listed") += count(r);
                UniqueClass { receiver: seen[i].name.clone(), class: Class::of(r) }
            })
            .collect();
        let sent = sender.filter(|s| s.run == u64::from(id.run)).and_then(|s| s.flows.get(&id.flow).copied());
        flows.push(FlowSplit {
            receivers: seen.iter().map(|r| r.name.clone()).collect(),
            sent,
            common: Class::of(&split.common),
            partial: Class::of(&split.partial),
            unique,
            id,
        });
    }
    (flows, totals)
}

fn hex_runs(runs: &BTreeSet<u32>) -> String {
    runs.iter().map(|r| format!("{r:x}")).collect::<Vec<_>>().join(", ")
}

/// Two spaces before non-empty text.
fn sep(s: String) -> String {
    if s.is_empty() { s } else { format!("  {s}") }
}

impl Record for FanoutReport {
    const TYPE: &'static str = "report";
    fn human(&self) -> String {
        human(self)
    }
}

/// The human report.
fn human(r: &FanoutReport) -> String {
    let n = r.receivers.len();
    let counters: BTreeSet<&str> = r.receivers.iter().map(|x| x.counter.as_str()).collect();
    let mut t = format!(
        "mcblast report: {n} receiver(s), {} counter, {} flow(s)\n",
        counters.into_iter().collect::<Vec<_>>().join("/"),
        r.flows.len()
    );
    if !r.complete {
        t.push_str("warning: some receivers' loss records are incomplete (see `complete`); the classification covers what was recorded\n");
    }
    let width = r.receivers.iter().map(|x| x.name.len()).max().unwrap_or(8).max(8);
    t.push_str(&human_matrix(r, width));
    // The classification.
    for f in &r.flows {
        t.push_str(&human_flow(f, width));
    }
    t.push_str(&human_totals(r));
    t
}

/// The matrix, as text: lost datagrams per receiver and interval (receiver names padded to `width`).
fn human_matrix(r: &FanoutReport, width: usize) -> String {
    let cols = r.intervals_tai_ns.len().min(HUMAN_COLUMNS);
    let t0 = r.intervals_tai_ns.first().copied().unwrap_or(0);
    let mut t = format!("\nlost datagrams per receiver and {} s interval (columns: seconds from the first loss):\n", r.interval_s);
    t.push_str(&format!("{:<width$}", "receiver"));
    for c in &r.intervals_tai_ns[..cols] {
        t.push_str(&format!(" {:>7}", format!("+{:.0}", (c - t0) as f64 / 1e9)));
    }
    if r.intervals_tai_ns.len() > cols {
        t.push_str(&format!(" {:>7}", "…"));
    }
    t.push_str(&format!(" {:>9} {:>9}\n", "total", "lost"));
    for row in &r.receivers {
        t.push_str(&format!("{:<width$}", row.name));
        for v in &row.per_interval[..cols] {
            t.push_str(&format!(" {v:>7}"));
        }
        if r.intervals_tai_ns.len() > cols {
            t.push_str(&format!(" {:>7}", row.per_interval[cols..].iter().sum::<u64>()));
        }
        t.push_str(&format!(
            " {:>9} {:>9}{}\n",
            row.recorded,
            row.lost,
            if row.complete { "" } else { "  (records incomplete)" }
        ));
    }
    t
}

/// One flow's classification, as text: its common, partial and unique loss (receiver names padded to `width`).
fn human_flow(f: &FlowSplit, width: usize) -> String {
    let k = f.receivers.len();
    let mut t = format!(
        "\nflow {} of {} to {} (run {:x}): seen by {k} receiver(s){}\n",
        f.id.flow,
        f.id.sender,
        f.id.group,
        f.id.run,
        f.sent.map(|s| format!(", sender sent {s}")).unwrap_or_default()
    );
    t.push_str(&format!(
        "  common  (lost at all {k}: sender or fabric, upstream of the replication point): {:>8}{}\n",
        f.common.count,
        sep(fmt_ranges(&f.common.top, f.common.ranges))
    ));
    t.push_str(&format!(
        "  partial (lost at some, not all: between the replication point and the receivers): {:>8}{}\n",
        f.partial.count,
        sep(fmt_ranges(&f.partial.top, f.partial.ranges))
    ));
    if f.unique.is_empty() {
        t.push_str("  unique  (one receiver's path or host): none\n");
    }
    for u in &f.unique {
        t.push_str(&format!(
            "  unique  at {:<width$} (its own path or host): {:>8}{}\n",
            u.receiver,
            u.class.count,
            sep(fmt_ranges(&u.class.top, u.class.ranges))
        ));
    }
    t
}

/// The totals line, as text, and what the sender's ledger says of the common loss.
fn human_totals(r: &FanoutReport) -> String {
    let mut t = format!("\ntotal: common {}, partial {}", r.totals.common, r.totals.partial);
    let uniq: Vec<String> = r.totals.unique.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k} {v}")).collect();
    t.push_str(&format!(", unique {}", if uniq.is_empty() { "0".to_string() } else { uniq.join(", ") }));
    match (&r.sender, r.totals.sender, r.totals.path) {
        (Some(_), Some(0), Some(p)) => t.push_str(&format!(
            "\nof the common loss: none in the sender (its ledger: its interface dropped nothing after the kernel took it), {p} on the path"
        )),
        (Some(_), Some(s), Some(p)) => t.push_str(&format!(
            "\nof the common loss: up to {s} lost in the sender (its ledger: dropped by its interface after the kernel took them), {p} on the path"
        )),
        (Some(_), _, _) => t.push_str("\nthe sender's ledger does not say what its interface dropped: common loss may be the sender's or the path's"),
        _ => {}
    }
    t
}

/// Runs `mcblast report FILE.jsonl…` over receivers' (and a sender's)
/// `--json` outputs.
pub fn report(inputs: &[PathBuf], json: bool) -> Result<ExitCode> {
    if inputs.is_empty() {
        bail!("give the receivers' JSON outputs: mcblast report r1.jsonl r2.jsonl …");
    }
    let parsed = inputs.iter().map(|p| read_input(p)).collect::<Result<Vec<_>>>()?;
    let r = build(parsed)?;
    Printer::new(json).print(&r)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey { sender: u32::from_ne_bytes([10, 0, 0, 1]), group: u32::from_ne_bytes([239, 0, 0, 1]), run: 7, flow: 0 }
    }

    #[test]
    fn log_keeps_gaps_minus_fills_in_any_order() {
        let evs = [
            LossEvent::Gap { from: 10, to: 20 },
            LossEvent::Fill { seq: 12 },
            LossEvent::Fill { seq: 10 },
            LossEvent::Fill { seq: 19 },
            LossEvent::Gap { from: 30, to: 31 },
            LossEvent::Fill { seq: 15 },
        ];
        let mut a = LossLog::default();
        for (i, e) in evs.iter().enumerate() {
            a.apply(*e, i as u64 / 3);
        }
        assert_eq!(a.ranges(), vec![[11, 1], [13, 2], [16, 3], [30, 1]]);
        assert_eq!(a.lost(), 7);
        // Fills first (another CPU's gap came later): the same set.
        let mut b = LossLog::default();
        for e in evs.iter().rev() {
            b.apply(*e, 0);
        }
        assert_eq!(b.ranges(), a.ranges());
        assert!(b.pending.is_empty() && !b.truncated());
        // Intervals: the gap's interval stays with every piece of it.
        let rec = a.record(&key(), 1_000_000_000);
        assert_eq!(rec.intervals.len(), 2);
        assert_eq!((rec.intervals[0].index, rec.intervals[0].lost), (0, 6));
        assert_eq!(rec.intervals[0].ranges, vec![[11, 1], [13, 2], [16, 3]]);
        assert_eq!((rec.intervals[1].index, rec.intervals[1].start_tai_ns), (1, 1_000_000_000));
        assert_eq!((rec.sender.as_str(), rec.group.as_str(), rec.lost), ("10.0.0.1", "239.0.0.1", 7));
    }

    #[test]
    fn log_agrees_with_the_tracker() {
        // Drop every 7th and 3 in a row at 500, reorder a few, end at 1000.
        let mut st = mcblast_common::FlowState::new();
        let mut log = LossLog::default();
        let mut order: Vec<u64> = (0..1000).filter(|s| s % 7 != 3 && !(500..503).contains(s)).collect();
        order.swap(10, 40);
        order.swap(100, 101);
        for (i, s) in order.iter().enumerate() {
            log.apply(st.on_data(*s, 10, 0, i as u64, 0, 0).into(), i as u64 / 100);
        }
        log.apply(st.on_end(1003, 0, 0, 0).into(), 99);
        let truth: Vec<u64> = (0..1003).filter(|s| s % 7 == 3 || (500..503).contains(s) || *s >= 1000).collect();
        let got: Vec<u64> = log.ranges().iter().flat_map(|[s, n]| *s..s + n).collect();
        assert_eq!(got, truth);
        assert_eq!(log.lost(), st.lost);
    }

    #[test]
    fn log_is_capped() {
        let mut l = LossLog::default();
        for i in 0..(MAX_RANGES as u64 + 5) {
            l.apply(LossEvent::Gap { from: 2 * i, to: 2 * i + 1 }, 0);
        }
        assert!(l.truncated());
        assert_eq!(l.lost(), MAX_RANGES as u64);
        let line = LossBook { flows: [(key(), l)].into() }.line("kernel", 1_000_000_000, Some(0));
        assert!(!line.complete);
    }

    #[test]
    fn book_line_and_human() {
        let mut b = LossBook::default();
        b.apply(key(), LossEvent::Gap { from: 5, to: 8 }, 2_500_000_000, 1_000_000_000);
        b.apply(FlowKey { flow: 1, ..key() }, LossEvent::None, 0, 1_000_000_000);
        let line = b.line("kernel", 1_000_000_000, Some(0));
        assert!(line.complete);
        assert_eq!(line.flows.len(), 1);
        assert_eq!(line.flows[0].intervals[0].start_tai_ns, 2_000_000_000);
        assert_eq!(line.flows[0].intervals[0].ranges, vec![[5, 3]]);
        assert_eq!(b.human("kernel"), "lost ranges (kernel), flow 0 of 10.0.0.1: 5+3 (1 ranges, 3 datagrams)\n");
        assert!(!b.line("kernel", 1_000_000_000, Some(4)).complete, "ring buffer overflows make it incomplete");
        // JSON round trip, as `report` reads it back.
        let v = serde_json::to_string(&line).unwrap();
        assert_eq!(serde_json::from_str::<LossLine>(&v).unwrap(), line);
    }

    #[test]
    fn loss_record_is_the_line_and_the_books_text() {
        let mut b = LossBook::default();
        assert_eq!(b.record("kernel", 1_000_000_000, Some(0)).human(), "", "nothing lost: no human text");
        b.apply(key(), LossEvent::Gap { from: 5, to: 8 }, 2_500_000_000, 1_000_000_000);
        let r = b.record("kernel", 1_000_000_000, Some(2));
        let line = b.line("kernel", 1_000_000_000, Some(2));
        assert_eq!(serde_json::to_value(&r).unwrap(), serde_json::to_value(line).unwrap(), "the JSON is the line's");
        let text = r.human();
        assert!(text.starts_with(&b.human("kernel")), "{text}");
        let warning = "warning: 2 loss events found the kernel's ring buffer full: \
                       the lost ranges above are incomplete (the counts are exact)";
        assert!(text.ends_with(warning), "{text}");
    }

    #[test]
    fn classify_common_unique_partial() {
        // Three receivers: 0..10 lost at all, 20..25 at r0 only, 30..33 at r1 and r2,
        // 40 at r2 only; ranges split differently at each receiver.
        let r0 = vec![[0, 4], [4, 6], [20, 5]];
        let r1 = vec![[0, 10], [30, 3]];
        let r2 = vec![[0, 2], [2, 8], [30, 3], [40, 1]];
        let s = classify(&[r0, r1, r2]);
        assert_eq!(s.common, vec![[0, 10]]);
        assert_eq!(s.partial, vec![[30, 3]]);
        assert_eq!(s.unique, BTreeMap::from([(0, vec![[20, 5]]), (2, vec![[40, 1]])]));
        // Overlaps that start and end inside each other.
        let s = classify(&[vec![[0, 10]], vec![[5, 10]]]);
        assert_eq!(s.common, vec![[5, 5]]);
        assert_eq!(s.unique, BTreeMap::from([(0, vec![[0, 5]]), (1, vec![[10, 5]])]));
        assert!(s.partial.is_empty());
        // One receiver: all common.
        let s = classify(&[vec![[3, 2]]]);
        assert_eq!((s.common, s.unique.len()), (vec![[3, 2]], 0));
        // Nothing lost anywhere.
        assert_eq!(classify(&[vec![], vec![]]), Split::default());
    }

    #[test]
    fn normalize_and_top() {
        assert_eq!(normalize(vec![[5, 2], [0, 3], [3, 2], [6, 4], [20, 0]]), vec![[0, 10]]);
        assert_eq!(top(&[[0, 1], [5, 3], [10, 3], [20, 2]], 2), vec![[5, 3], [10, 3]]);
        assert_eq!(fmt_ranges(&[[5, 3]], 4), "5+3, … (4 ranges)");
    }

    fn recv_file(dir: &Path, name: &str, run: u32, lost: u64, ranges: &[[u64; 2]]) -> PathBuf {
        let flow = format!(
            r#"{{"sender":"10.0.0.1","group":"239.0.0.1","run":{run},"flow":0,"received":1,"bytes":1,"lost":{lost},"loss_pct":0.0,"reordered":0,"duplicates":0,"stale":0,"expected":1,"ended":true,"jitter_us":0.0}}"#
        );
        let loss = LossLine {
            role: "recv".into(),
            counter: "kernel".into(),
            interval_s: 1.0,
            complete: true,
            events_lost: Some(0),
            flows: vec![FlowLoss {
                sender: "10.0.0.1".into(),
                group: "239.0.0.1".into(),
                run,
                flow: 0,
                lost: count(ranges),
                truncated: false,
                intervals: vec![IntervalLoss { index: 5, start_tai_ns: 5_000_000_000, lost: count(ranges), ranges: ranges.to_vec() }],
            }],
        };
        let text = format!(
            "{{\"type\":\"begin\",\"role\":\"recv\"}}\n{{\"type\":\"summary\",\"role\":\"recv\",\"counter\":\"kernel\",\"flows\":[{flow}]}}\n{}\n",
            serde_json::to_string(&serde_json::json!({"type": "loss", "role": "recv", "counter": "kernel", "interval_s": 1.0, "complete": true, "events_lost": 0, "flows": loss.flows}))
                .unwrap()
        );
        let p = dir.join(format!("{name}.jsonl"));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn report_from_files_and_its_errors() {
        let dir = std::env::temp_dir().join(format!("mcblast-fanout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = recv_file(&dir, "a", 9, 4, &[[0, 1], [10, 3]]);
        let b = recv_file(&dir, "b", 9, 2, &[[0, 1], [50, 1]]);
        let read = |ps: &[&PathBuf]| build(ps.iter().map(|p| read_input(p)).collect::<Result<Vec<_>>>()?);
        let r = read(&[&a, &b]).unwrap();
        assert_eq!((r.totals.common, r.totals.partial), (1, 0));
        assert_eq!(r.totals.unique, BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 1)]));
        assert_eq!(r.receivers[0].per_interval, vec![4]);
        assert_eq!((r.receivers[0].lost, r.receivers[0].recorded), (4, 4));
        assert!(human(&r).contains("unique  at a"), "{}", human(&r));
        // A sender whose interface dropped 1 after the kernel took it: of the
        // 1 common datagram, 1 is named the sender's, none the path's.
        let snd = dir.join("snd.jsonl");
        std::fs::write(
            &snd,
            "{\"type\":\"begin\",\"role\":\"send\",\"run\":9}\n\
             {\"type\":\"summary\",\"role\":\"send\",\"run\":9,\"sent\":60,\"flows\":[{\"flow\":0,\"sent\":60}],\
             \"ledger\":{\"tx_dropped\":1,\"tx_errors\":0}}\n",
        )
        .unwrap();
        let r = read(&[&a, &b, &snd]).unwrap();
        assert_eq!((r.totals.sender, r.totals.path), (Some(1), Some(0)));
        assert_eq!(r.flows[0].sent, Some(60));
        assert!(human(&r).contains("up to 1 lost in the sender"), "{}", human(&r));
        let other = dir.join("other.jsonl");
        std::fs::write(&other, "{\"type\":\"begin\",\"role\":\"send\"}\n{\"type\":\"summary\",\"role\":\"send\",\"run\":10}\n").unwrap();
        let e = format!("{:#}", read(&[&a, &other]).expect_err("another run"));
        assert!(e.contains("sent run a"), "{e}");
        let err = |ps: &[&PathBuf]| format!("{:#}", read(ps).expect_err("an error"));
        // Another run.
        let c = recv_file(&dir, "c", 10, 0, &[]);
        assert!(err(&[&a, &c]).contains("different runs"), "{}", err(&[&a, &c]));
        // Same name twice.
        let sub = dir.join("x");
        std::fs::create_dir_all(&sub).unwrap();
        let a2 = recv_file(&sub, "a", 9, 0, &[]);
        assert!(err(&[&a, &a2]).contains("both name receiver a"));
        // Not mcblast output, missing file.
        let junk = dir.join("junk.jsonl");
        std::fs::write(&junk, "hello\n").unwrap();
        assert!(err(&[&junk]).contains("not the --json output of mcblast"), "{}", err(&[&junk]));
        assert!(err(&[&dir.join("nope.jsonl")]).starts_with("cannot read"));
        // A receiver without loss records.
        let old = dir.join("old.jsonl");
        std::fs::write(&old, "{\"type\":\"begin\",\"role\":\"recv\"}\n{\"type\":\"summary\",\"role\":\"recv\",\"counter\":\"kernel\",\"flows\":[]}\n").unwrap();
        assert!(err(&[&old]).contains("no loss records"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
