//! What the sender prints: a begin line, one line per interval, a summary;
//! human text (iperf-like) or JSON Lines (`output::Send*`).
//!
//! Rates count UDP payload bits (the datagrams, mcblast header included), the
//! same unit `-b` takes.

use std::io;

use super::counters::Counts;
use super::ledger::Ledger;
use super::pacer::PaceStats;
use super::plan::{IP_UDP_OVERHEAD, IfaceSource, SendPlan};
use crate::output::{Printer, Record, SendBegin, SendFlow, SendInterval, SendSummary, fmt_bps};

/// Flows listed one by one in the human summary (all of them in JSON).
const HUMAN_FLOWS: usize = 16;

fn engine_name(p: &SendPlan) -> String {
    let mut n = p.engine.name().to_string();
    if p.zerocopy {
        n.push_str(" (zero-copy)");
    }
    n
}

/// The begin record: the common fields, why `auto` chose the engine, and the xdp engine's mode; its human form
/// also tells what the plan says of the route, pinning and pacing.
#[derive(serde::Serialize)]
struct Begin<'a> {
    #[serde(flatten)]
    base: SendBegin,
    /// Set when `--engine auto` chose: which probe decided, in one line.
    engine_reason: Option<String>,
    /// uring engine with `--zerocopy`.
    zerocopy: bool,
    /// `"zerocopy"`/`"copy"` when the xdp engine runs; without it the line is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    xdp_mode: Option<&'a str>,
    #[serde(skip)]
    plan: &'a SendPlan,
}

impl Record for Begin<'_> {
    const TYPE: &'static str = "begin";
    fn human(&self) -> String {
        begin_text(self.plan, self.base.run, self.xdp_mode)
    }
}

/// The summary record: the sender's summary, its ledger (absent when the interface is not known: no route and
/// no -I) and the xdp engine's mode; the plan tells the human block its table head and port.
#[derive(serde::Serialize)]
struct SummaryLine<'a> {
    #[serde(flatten)]
    summary: SendSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger: Option<&'a Ledger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xdp_mode: Option<&'a str>,
    #[serde(skip)]
    plan: &'a SendPlan,
}

impl Record for SummaryLine<'_> {
    const TYPE: &'static str = "summary";
    fn human(&self) -> String {
        summary_text(&self.summary, self.ledger, self.plan)
    }
}

impl Record for SendInterval {
    const TYPE: &'static str = "interval";
    fn human(&self) -> String {
        table_row("SUM", self)
    }
}

/// `1.50 MiB`.
pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.2} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.2} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

const TABLE_HEAD: &str = "[ ID] Interval           Datagrams     Transfer      Bandwidth   Datagrams/s   Errors";

/// One human table row (schedule slips, when there were any, after the table).
pub fn fmt_row(id: &str, start_s: f64, end_s: f64, c: &Counts, secs: f64) -> String {
    table_row(id, &interval_of(start_s, end_s, c, secs))
}

/// A record's human table row.
fn table_row(id: &str, r: &SendInterval) -> String {
    let mut row = format!(
        "[{id:>3}] {:6.2}-{:<6.2} sec {:>10} {:>12} {:>14} {:>11.0}/s {:>8}",
        r.start_s,
        r.end_s,
        r.sent,
        fmt_bytes(r.bytes),
        fmt_bps(r.rate_bps),
        r.rate_pps,
        r.errors
    );
    if r.pacing_slips > 0 {
        row.push_str(&format!("   {} slip{}", r.pacing_slips, if r.pacing_slips == 1 { "" } else { "s" }));
    }
    row
}

/// The `interval` record of the counts `c` over `secs`, shown as the interval `start_s`-`end_s`.
fn interval_of(start_s: f64, end_s: f64, c: &Counts, secs: f64) -> SendInterval {
    let (rate_bps, rate_pps) = rates(c, secs);
    SendInterval {
        role: "send",
        start_s,
        end_s,
        sent: c.sent,
        bytes: c.bytes,
        errors: c.errors(),
        rate_bps,
        rate_pps,
        pacing_slips: c.slips,
        pacing_deficit: c.deficit,
    }
}

/// (bit/s, datagrams/s) over `secs`.
pub fn rates(c: &Counts, secs: f64) -> (f64, f64) {
    if secs > 0.0 { (c.bytes as f64 * 8.0 / secs, c.sent as f64 / secs) } else { (0.0, 0.0) }
}

/// The begin line.
pub fn begin(out: &mut Printer, p: &SendPlan, run: u32) -> io::Result<()> {
    begin_with_mode(out, p, run, None)
}

/// The begin line, with the xdp engine's mode when it runs.
pub fn begin_with_mode(out: &mut Printer, p: &SendPlan, run: u32, xdp_mode: Option<&str>) -> io::Result<()> {
    if !out.json()
        && let Some(why) = &p.engine_reason
    {
        eprintln!("mcblast: engine auto chose {}: {why}", p.engine.name());
    }
    out.print(&begin_record(p, run, xdp_mode))
}

/// The `begin` record of run `run`.
fn begin_record<'a>(p: &'a SendPlan, run: u32, xdp_mode: Option<&'a str>) -> Begin<'a> {
    Begin {
        engine_reason: p.engine_reason.clone(),
        zerocopy: p.zerocopy,
        xdp_mode,
        plan: p,
        base: SendBegin {
            role: "send",
            version: env!("CARGO_PKG_VERSION"),
            run,
            engine: p.engine.name().to_string(),
            interface: p.iface_name(),
            groups: p.groups.iter().map(|g| g.to_string()).collect(),
            port: p.port,
            length: p.length,
            flows: p.flows.len() as u32,
            threads: p.workers.len() as u32,
            target_bps: p.pps.map(|pps| pps * p.length as f64 * 8.0),
            target_pps: p.pps,
            time_s: p.duration_s,
            count: p.count,
        },
    }
}

/// The human begin lines of run `run` (and the interval table's head when there are intervals).
fn begin_text(p: &SendPlan, run: u32, xdp_mode: Option<&str>) -> String {
    let groups: Vec<String> = p.groups.iter().map(|g| format!("{g}:{}", p.port)).collect();
    let via = match &p.iface {
        Some((i, src)) => {
            format!("{} (MTU {}{})", i.name, i.mtu, if *src == IfaceSource::Route { ", from the route" } else { "" })
        }
        None => "the kernel's choice (no route, no -I)".into(),
    };
    let pin = match p.workers.iter().map(|w| w.cpu).collect::<Option<Vec<_>>>() {
        Some(cpus) => format!("pinned to CPUs {}", cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")),
        None => "not pinned".into(),
    };
    let rate = match (p.pps, p.bps) {
        (None, _) => "as fast as possible".to_string(),
        (Some(pps), Some(bps)) => format!("{} ({pps:.0} datagrams/s) for all flows", fmt_bps(bps)),
        (Some(pps), None) => format!("{pps:.0} datagrams/s ({}) for all flows", fmt_bps(pps * p.length as f64 * 8.0)),
    };
    let until = match (p.duration_s, p.count) {
        (Some(t), Some(n)) => format!("{n} datagrams per flow or {t} s, whichever comes first"),
        (Some(t), None) => format!("{t} s"),
        (None, Some(n)) => format!("{n} datagrams per flow"),
        (None, None) => "Ctrl-C".into(),
    };
    let engine = match xdp_mode {
        Some(m) => format!("{} ({m} mode)", engine_name(p)),
        None => engine_name(p),
    };
    let mut text = format!(
        "mcblast send: run {run:08x}, engine {engine}, {} flow(s) on {} thread(s), {pin}\n\
         \x20 to {} via {via}, TTL {}, loop {}\n\
         \x20 {}-byte datagrams ({}-byte IP packets{}), {rate}, until {until}\n",
        p.flows.len(),
        p.workers.len(),
        groups.join(" "),
        p.ttl,
        if p.loopback { "on" } else { "off" },
        p.length,
        p.length + IP_UDP_OVERHEAD,
        if p.allow_fragments && p.iface.as_ref().is_some_and(|(i, _)| p.length + IP_UDP_OVERHEAD > i.mtu as usize) {
            ", fragmented"
        } else {
            ""
        },
    );
    if p.interval_s > 0.0 {
        text.push_str(TABLE_HEAD);
    }
    text
}

/// Interval reports every `-i` seconds.
#[derive(Debug)]
pub struct Reporter {
    start_ns: u64,
    interval_ns: Option<u64>,
    /// Interval boundaries reported so far.
    k: u64,
    prev: Counts,
    prev_ns: u64,
}

impl Reporter {
    pub fn new(start_ns: u64, interval_s: f64) -> Reporter {
        let interval_ns = (interval_s > 0.0).then(|| ((interval_s * 1e9) as u64).max(1_000_000));
        Reporter { start_ns, interval_ns, k: 0, prev: Counts::default(), prev_ns: start_ns }
    }

    /// When the next interval ends (None: no interval reports).
    pub fn next_due(&self) -> Option<u64> {
        self.interval_ns.map(|iv| self.start_ns.saturating_add((self.k + 1).saturating_mul(iv)))
    }

    /// Reports the interval that ended, if one did by `now`.
    pub fn tick(&mut self, out: &mut Printer, now: u64, totals: &Counts) -> io::Result<()> {
        let Some(iv) = self.interval_ns else { return Ok(()) };
        // The plan caps -i far below overflow; saturating all the same.
        if now < self.start_ns.saturating_add((self.k + 1).saturating_mul(iv)) {
            return Ok(());
        }
        // Normally one interval; more if we woke very late (then one line spans them).
        let k_end = (now - self.start_ns) / iv;
        let (a, b) = (self.k as f64 * iv as f64 / 1e9, k_end as f64 * iv as f64 / 1e9);
        self.k = k_end;
        self.emit(out, a, b, now, totals)
    }

    /// The last, partial interval up to `end` (when the data stopped).
    pub fn last(&mut self, out: &mut Printer, end: u64, totals: &Counts) -> io::Result<()> {
        let Some(iv) = self.interval_ns else { return Ok(()) };
        let a = self.k as f64 * iv as f64 / 1e9;
        let b = end.saturating_sub(self.start_ns) as f64 / 1e9;
        // Skip a sliver (the run ended right at a boundary) unless it holds data.
        if b - a < 0.01 && totals.since(&self.prev).sent == 0 {
            return Ok(());
        }
        self.emit(out, a, b.max(a), end.max(self.prev_ns), totals)
    }

    fn emit(&mut self, out: &mut Printer, a: f64, b: f64, now: u64, totals: &Counts) -> io::Result<()> {
        let d = totals.since(&self.prev);
        // Rates over the time that really passed since the last report.
        let secs = now.saturating_sub(self.prev_ns) as f64 / 1e9;
        self.prev = *totals;
        self.prev_ns = now;
        out.print(&interval_of(a, b, &d, secs))
    }
}

/// What the summary needs.
pub struct Final<'a> {
    pub plan: &'a SendPlan,
    pub run_id: u32,
    pub duration_s: f64,
    pub totals: Counts,
    /// (flow id, sent), by flow id.
    pub per_flow: &'a [(u32, u64)],
    /// Source port of each flow, by flow id.
    pub src_ports: &'a [u16],
    pub cpu_s: f64,
    /// All workers' pacing (None: not paced).
    pub pacing: Option<PaceStats>,
    /// The xdp engine's mode (None: another engine).
    pub xdp_mode: Option<&'a str>,
    /// The sender's ledger (None: the interface is not known).
    pub ledger: Option<&'a Ledger>,
}

pub fn summary_of(f: &Final<'_>) -> SendSummary {
    let (rate_bps, rate_pps) = rates(&f.totals, f.duration_s);
    let t = &f.totals;
    SendSummary {
        role: "send",
        run: f.run_id,
        engine: f.plan.engine.name().to_string(),
        duration_s: f.duration_s,
        sent: t.sent,
        bytes: t.bytes,
        errors: t.errors(),
        errors_enobufs: t.enobufs,
        errors_eagain: t.eagain,
        errors_other: t.other,
        end_markers: t.end_markers,
        rate_bps,
        rate_pps,
        target_bps: f.plan.pps.map(|pps| pps * f.plan.length as f64 * 8.0),
        target_pps: f.plan.pps,
        pacing_slips: t.slips,
        pacing_deficit: t.deficit,
        pacing_gap_min_us: f.pacing.and_then(|p| p.gap_min_ns).map(|g| g as f64 / 1e3),
        pacing_gap_max_us: f.pacing.and_then(|p| p.gap_max_ns).map(|g| g as f64 / 1e3),
        cpu_s: f.cpu_s,
        flows: f
            .per_flow
            .iter()
            .map(|&(id, sent)| SendFlow {
                flow: id,
                group: f.plan.flows[id as usize].group.to_string(),
                src_port: f.src_ports[id as usize],
                sent,
            })
            .collect(),
    }
}

/// The summary line / block.
pub fn summary(out: &mut Printer, f: &Final<'_>) -> io::Result<()> {
    out.print(&SummaryLine { summary: summary_of(f), ledger: f.ledger, xdp_mode: f.xdp_mode, plan: f.plan })
}

/// The human summary block: the whole run's row, errors and CPU, pacing, the ledger, the first flows.
fn summary_text(s: &SendSummary, ledger: Option<&Ledger>, plan: &SendPlan) -> String {
    let mut text = String::new();
    text.push_str("- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -\n");
    if plan.interval_s <= 0.0 {
        text.push_str(TABLE_HEAD);
        text.push('\n');
    }
    let whole = SendInterval {
        role: "send",
        start_s: 0.0,
        end_s: s.duration_s,
        sent: s.sent,
        bytes: s.bytes,
        errors: s.errors,
        rate_bps: s.rate_bps,
        rate_pps: s.rate_pps,
        pacing_slips: s.pacing_slips,
        pacing_deficit: s.pacing_deficit,
    };
    text.push_str(&table_row("SUM", &whole));
    text.push_str("  sender\n");
    text.push_str(&format!(
        "      errors {} (ENOBUFS {}, EAGAIN {}, other {}), end markers {}, CPU {:.2} s ({:.0}% of one core)\n",
        s.errors,
        s.errors_enobufs,
        s.errors_eagain,
        s.errors_other,
        s.end_markers,
        s.cpu_s,
        if s.duration_s > 0.0 { s.cpu_s / s.duration_s * 100.0 } else { 0.0 }
    ));
    if let Some(line) = fmt_pacing(s) {
        text.push_str(&line);
        text.push('\n');
    }
    if let Some(l) = ledger {
        text.push_str(&l.human());
        text.push('\n');
    }
    for fl in s.flows.iter().take(HUMAN_FLOWS) {
        text.push_str(&format!(
            "[{:>3}] {}:{} from port {}: {} datagrams\n",
            fl.flow, fl.group, plan.port, fl.src_port, fl.sent
        ));
    }
    if s.flows.len() > HUMAN_FLOWS {
        text.push_str(&format!("      … and {} more flows (all of them with --json)\n", s.flows.len() - HUMAN_FLOWS));
    }
    text
}

/// The human pacing line: the rate asked for against the rate achieved, and
/// whether the sender fell behind (None when not paced).
pub fn fmt_pacing(s: &SendSummary) -> Option<String> {
    let target = s.target_pps?;
    let mut line = format!(
        "      paced: target {target:.0} datagrams/s, achieved {:.0} ({:.1}%)",
        s.rate_pps,
        if target > 0.0 { s.rate_pps / target * 100.0 } else { 0.0 }
    );
    if s.pacing_slips == 0 {
        line.push_str(", on schedule");
    } else {
        line.push_str(&format!(
            ", fell behind {} times: {} datagrams' worth of time given up, not caught up",
            s.pacing_slips, s.pacing_deficit
        ));
    }
    if let (Some(a), Some(b)) = (s.pacing_gap_min_us, s.pacing_gap_max_us) {
        line.push_str(&format!("; batches {a:.0}-{b:.0} µs apart"));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_rows_read_well() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(3 << 20), "3.00 MiB");
        let c = Counts { sent: 20_000, bytes: 20_000 * 8192, enobufs: 2, ..Default::default() };
        let row = fmt_row("SUM", 0.0, 1.0, &c, 1.0);
        assert!(row.starts_with("[SUM]   0.00-1.00   sec"), "{row}");
        assert!(
            row.contains("20000")
                && row.contains("156.25 MiB")
                && row.contains("1.31 Gbit/s")
                && row.contains("20000/s"),
            "{row}"
        );
        assert!(row.trim_end().ends_with(" 2"), "{row}");
        let row = fmt_row("SUM", 0.0, 1.0, &Counts { slips: 3, ..c }, 1.0);
        assert!(row.ends_with(" 2   3 slips"), "{row}");
        let row = fmt_row("SUM", 0.0, 1.0, &Counts { slips: 1, ..c }, 1.0);
        assert!(row.ends_with(" 2   1 slip"), "{row}");
    }

    #[test]
    fn pacing_line_compares_target_and_achieved() {
        let plan = crate::commands::send::test_plan(&["-I", "lo", "-l", "1250", "--pps", "10k"]);
        let f = Final {
            plan: &plan,
            run_id: 1,
            duration_s: 2.0,
            totals: Counts { sent: 15_000, bytes: 15_000 * 1250, slips: 4, deficit: 5_000, ..Default::default() },
            per_flow: &[(0, 15_000)],
            src_ports: &[4000],
            cpu_s: 0.5,
            pacing: Some(PaceStats { slips: 4, deficit: 5_000.4, gap_min_ns: Some(150_000), gap_max_ns: Some(9_000_000) }),
            xdp_mode: None,
            ledger: None,
        };
        let s = summary_of(&f);
        assert_eq!((s.target_pps, s.target_bps), (Some(10_000.0), Some(100e6)));
        assert_eq!((s.rate_pps, s.pacing_slips, s.pacing_deficit), (7_500.0, 4, 5_000));
        assert_eq!((s.pacing_gap_min_us, s.pacing_gap_max_us), (Some(150.0), Some(9_000.0)));
        let line = fmt_pacing(&s).unwrap();
        assert_eq!(
            line,
            "      paced: target 10000 datagrams/s, achieved 7500 (75.0%), fell behind 4 times: \
             5000 datagrams' worth of time given up, not caught up; batches 150-9000 µs apart"
        );
        let on_time = SendSummary { pacing_slips: 0, pacing_deficit: 0, ..s.clone() };
        assert!(fmt_pacing(&on_time).unwrap().contains(", on schedule;"));
        let flat = SendSummary { target_pps: None, ..s };
        assert!(fmt_pacing(&flat).is_none());
    }

    #[test]
    fn reporter_reports_each_interval_once_with_its_own_counts() {
        let mut out = Printer::new(true);
        let mut r = Reporter::new(1_000, 1.0);
        assert_eq!(r.next_due(), Some(1_000 + 1_000_000_000));
        let c1 = Counts { sent: 10, bytes: 100, ..Default::default() };
        r.tick(&mut out, 500_000_000, &c1).unwrap();
        assert_eq!(r.k, 0, "nothing before the first boundary");
        r.tick(&mut out, 1_000_001_000, &c1).unwrap();
        assert_eq!((r.k, r.prev), (1, c1));
        assert_eq!(r.next_due(), Some(1_000 + 2_000_000_000));
        // Woke 2.5 intervals late: one line covering both boundaries.
        r.tick(&mut out, 3_500_000_000, &c1).unwrap();
        assert_eq!(r.k, 3);
        assert!(Reporter::new(0, 0.0).next_due().is_none());
    }
}
