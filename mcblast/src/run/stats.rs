//! Rows of `cases.csv`, their extraction from the JSON Lines of one run,
//! and the per-case statistics of `summary.csv`.

use anyhow::{Context, Result};
use serde_json::Value;

use super::plan::Case;

/// mean, sample standard deviation (n − 1; None for n < 2), min, max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    pub sd: Option<f64>,
    pub min: f64,
    pub max: f64,
}

pub fn stats(xs: &[f64]) -> Option<Stats> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let sd = (n >= 2).then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Stats { n, mean, sd, min, max })
}

/// What the sender's summary line says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendResult {
    pub run_id: u32,
    pub sent: u64,
    pub duration_s: f64,
    pub rate_bps: f64,
    pub cpu_s: f64,
}

/// A distribution as the tracker's log-linear histogram
/// ([`mcblast_common::hist`]) plus its exact extremes (ns): what the JSON
/// summary's `histogram_ns`, `min_us` and `max_us` say. Merging adds bucket
/// counts, so percentiles over receivers and repeats are exact merges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dist {
    pub hist: Vec<u64>,
    pub min_ns: i64,
    pub max_ns: i64,
}

impl Dist {
    /// From a JSON `delay` or `ipdv` object (None when it has no histogram).
    pub fn from_json(v: &Value) -> Option<Dist> {
        let pairs = v["histogram_ns"].as_array()?;
        let mut hist = vec![0u64; mcblast_common::hist::BUCKETS];
        for p in pairs {
            hist[mcblast_common::hist::bucket(p[0].as_i64()?)] += p[1].as_u64()?;
        }
        let ns = |key: &str| v[key].as_f64().map(|us| (us * 1e3).round() as i64);
        Some(Dist { hist, min_ns: ns("min_us").unwrap_or(0), max_ns: ns("max_us")? })
    }

    /// Adds another distribution's values.
    pub fn merge(&mut self, o: &Dist) {
        if self.hist.is_empty() {
            *self = o.clone();
            return;
        }
        self.hist.iter_mut().zip(&o.hist).for_each(|(a, b)| *a += b);
        (self.min_ns, self.max_ns) = (self.min_ns.min(o.min_ns), self.max_ns.max(o.max_ns));
    }

    /// The `q`-quantile in µs (see [`mcblast_common::hist::quantile_ns`]), three decimals.
    pub fn quantile_us(&self, q: f64) -> Option<String> {
        mcblast_common::hist::quantile_ns(&self.hist, q, self.min_ns, self.max_ns).map(|ns| f3(ns as f64 / 1e3))
    }
}

/// Merges the distributions some flows have.
fn merged(ds: impl Iterator<Item = Dist>) -> Option<Dist> {
    ds.reduce(|mut a, b| {
        a.merge(&b);
        a
    })
}

/// The percentiles `cases.csv` has per receiver and run, and `summary.csv` per case from the histograms merged
/// over receivers and repeats: p50 … p99.99 and the maximum (the 1-quantile: the exact largest value).
const QUANTILES: &[(&str, &str, f64)] = &[
    ("delay", "p50", 0.5),
    ("delay", "p90", 0.9),
    ("delay", "p99", 0.99),
    ("delay", "p999", 0.999),
    ("delay", "p9999", 0.9999),
    ("delay", "max", 1.0),
    ("ipdv", "p50", 0.5),
    ("ipdv", "p90", 0.9),
    ("ipdv", "p99", 0.99),
    ("ipdv", "p999", 0.999),
    ("ipdv", "p9999", 0.9999),
    ("ipdv", "max", 1.0),
];

fn quantile_columns(qs: &[(&str, &str, f64)]) -> Vec<String> {
    qs.iter().map(|(d, p, _)| format!("{d}_{p}_us")).collect()
}

fn quantile_fields(qs: &[(&str, &str, f64)], delay: Option<&Dist>, ipdv: Option<&Dist>) -> Vec<String> {
    let pick = |d: &str| if d == "delay" { delay } else { ipdv };
    qs.iter().map(|(d, _, q)| pick(d).and_then(|x| x.quantile_us(*q)).unwrap_or_default()).collect()
}

/// One receiver in one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecvResult {
    pub received: u64,
    pub bytes: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub jitter_us: f64,
    pub delay_mean_us: Option<f64>,
    /// One-way delay and IPDV of the run's flows, merged.
    pub delay: Option<Dist>,
    pub ipdv: Option<Dist>,
    /// From the `layers` summary, when the receiver had the drop tracer.
    pub path_lost: Option<u64>,
    pub kernel_dropped: Option<u64>,
    pub socket_dropped: Option<u64>,
    /// Datagrams that arrived twice, and late (after a later one), by the counter.
    pub duplicates: u64,
    pub reordered: u64,
    /// What the lab's impairment program did toward this receiver (None on real hosts).
    pub injected: Option<Injected>,
    /// Datagrams the lab fabric's TGW limits dropped during the run (before replication: on every receiver's
    /// path); None without the limits.
    pub fabric_dropped: Option<u64>,
}

/// The impairment program's exact counts toward one receiver in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Dropped, plus held for reordering and never released (the flow
    /// ended first, or still held at the end): every datagram the program
    /// kept from the receiver.
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

fn summary<'a>(lines: &'a [Value], role: &str, counter: Option<&str>) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l["type"] == "summary" && l["role"] == role && counter.is_none_or(|c| l["counter"] == c))
}

/// The sender's summary.
pub fn parse_send(lines: &[Value]) -> Result<SendResult> {
    let s = summary(lines, "send", None).context("the sender printed no summary line")?;
    let begin = lines.iter().find(|l| l["type"] == "begin");
    Ok(SendResult {
        run_id: begin.and_then(|b| b["run"].as_u64()).unwrap_or(0) as u32,
        sent: s["sent"].as_u64().context("sender summary without sent")?,
        duration_s: s["duration_s"].as_f64().unwrap_or(0.0),
        rate_bps: s["rate_bps"].as_f64().unwrap_or(0.0),
        cpu_s: s["cpu_s"].as_f64().unwrap_or(0.0),
    })
}

/// Which of a receiver's flows are the run's: those of `run` (mcblast's run
/// id; with `--format iperf2` the destination port) and, when known, `flow`
/// (iperf2: the client's source port, as its output says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowPick {
    pub run: u32,
    pub flow: Option<u32>,
}

impl FlowPick {
    fn matches(&self, f: &Value) -> bool {
        f["run"].as_u64() == Some(u64::from(self.run)) && self.flow.is_none_or(|x| f["flow"].as_u64() == Some(u64::from(x)))
    }
}

/// A receiver's kernel-counter flow of `run_id` (the path as the driver saw
/// it) plus its `layers` line when present.
pub fn parse_recv(lines: &[Value], run_id: u32) -> Result<RecvResult> {
    parse_recv_flows(lines, &FlowPick { run: run_id, flow: None })
}

/// [`parse_recv`] of the flows `pick` matches.
pub fn parse_recv_flows(lines: &[Value], pick: &FlowPick) -> Result<RecvResult> {
    let k = summary(lines, "recv", Some("kernel"))
        .or_else(|| summary(lines, "recv", Some("socket")))
        .context("the receiver printed no summary line")?;
    let flows = k["flows"].as_array().context("summary without flows")?;
    let mine: Vec<&Value> = flows.iter().filter(|f| pick.matches(f)).collect();
    let sum = |key: &str| mine.iter().map(|f| f[key].as_u64().unwrap_or(0)).sum::<u64>();
    let received = sum("received");
    let lost = sum("lost");
    let duplicates = sum("duplicates");
    // received counts every arrival, duplicates included; the datagrams the
    // flow had are the unique ones plus the lost
    let total = received.saturating_sub(duplicates) + lost;
    let jitter = mine.iter().filter_map(|f| f["jitter_us"].as_f64()).fold(0.0, f64::max);
    let delays: Vec<f64> = mine.iter().filter_map(|f| f["delay"]["mean_us"].as_f64()).collect();
    let layers = summary(lines, "recv", Some("layers"));
    let lay = |key: &str| layers.and_then(|l| l[key].as_u64());
    Ok(RecvResult {
        received,
        bytes: sum("bytes"),
        lost,
        loss_pct: if total == 0 { 0.0 } else { 100.0 * lost as f64 / total as f64 },
        jitter_us: jitter,
        delay_mean_us: (!delays.is_empty()).then(|| delays.iter().sum::<f64>() / delays.len() as f64),
        delay: merged(mine.iter().filter_map(|f| Dist::from_json(&f["delay"]))),
        ipdv: merged(mine.iter().filter_map(|f| Dist::from_json(&f["ipdv"]))),
        path_lost: lay("path_lost"),
        kernel_dropped: lay("kernel_dropped"),
        socket_dropped: lay("socket_dropped"),
        duplicates,
        reordered: sum("reordered"),
        injected: None,
        fabric_dropped: None,
    })
}

/// Throughput at a receiver, Mbit/s of UDP payload: its bytes over the sender's duration.
pub fn throughput_mbps(r: &RecvResult, s: &SendResult) -> f64 {
    if s.duration_s > 0.0 { r.bytes as f64 * 8.0 / s.duration_s / 1e6 } else { 0.0 }
}

pub const CASE_PARAMS: &[&str] = &[
    "case",
    "block",
    "load",
    "rate_bps",
    "length",
    "receivers",
    "snooping",
    "query_interval_s",
    "loss_injected_pct",
    "loss_mode",
    "burst",
    "reorder_injected_pct",
    "duplicate_injected_pct",
    "seed",
    "placement",
    "duration_s",
];

pub fn case_params(k: usize, c: &Case) -> Vec<String> {
    let lab = |s: String| if c.on_lab { s } else { String::new() };
    vec![
        k.to_string(),
        c.block.clone(),
        c.load.text.clone(),
        c.load.rate_bps.map(|r| format!("{r}")).unwrap_or_else(|| "max".into()),
        c.load.length.to_string(),
        c.receivers.to_string(),
        // real hosts: the network's own snooping, querier and placement, unknown to mcblast
        if !c.on_lab { String::new() } else if c.snooping { "on".into() } else { "off".into() },
        if c.on_lab { c.query_interval.to_string() } else { String::new() },
        format!("{}", c.impair.loss_pct),
        // the mode and burst of no loss, the seed of no random part: empty
        lab(if c.impair.loss_pct > 0.0 { c.impair.loss_mode.as_str().into() } else { String::new() }),
        lab(if c.impair.loss_pct > 0.0 { c.impair.burst.to_string() } else { String::new() }),
        format!("{}", c.impair.reorder_pct),
        format!("{}", c.impair.duplicate_pct),
        lab(if c.impair.random() { c.impair.seed.to_string() } else { String::new() }),
        if c.on_lab { c.placement.as_str().into() } else { String::new() },
        format!("{}", c.duration),
    ]
}

/// The `cases.csv` header.
pub fn cases_header() -> Vec<String> {
    let strs = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut h = strs(CASE_PARAMS);
    h.extend(strs(&["repeat", "run_id", "receiver", "sent", "received", "lost", "loss_pct", "jitter_us", "delay_mean_us"]));
    h.extend(quantile_columns(QUANTILES));
    h.extend(strs(&[
        "throughput_mbps",
        "sender_rate_mbps",
        "sender_cpu_s",
        "path_lost",
        "kernel_dropped",
        "socket_dropped",
        "duplicates",
        "reordered",
        "injected_dropped",
        "injected_duplicated",
        "injected_reordered",
        "fabric_dropped",
    ]));
    h
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn f3(x: f64) -> String {
    format!("{x:.3}")
}

/// A `cases.csv` row (its fields).
pub fn cases_row(k: usize, c: &Case, repeat: u32, node: &str, s: &SendResult, r: &RecvResult) -> Vec<String> {
    let mut v = case_params(k, c);
    v.extend([
        repeat.to_string(),
        s.run_id.to_string(),
        node.to_string(),
        s.sent.to_string(),
        r.received.to_string(),
        r.lost.to_string(),
        format!("{:.4}", r.loss_pct),
        f3(r.jitter_us),
        opt(r.delay_mean_us.map(f3)),
    ]);
    v.extend(quantile_fields(QUANTILES, r.delay.as_ref(), r.ipdv.as_ref()));
    v.extend([
        f3(throughput_mbps(r, s)),
        f3(s.rate_bps / 1e6),
        f3(s.cpu_s),
        opt(r.path_lost),
        opt(r.kernel_dropped),
        opt(r.socket_dropped),
        r.duplicates.to_string(),
        r.reordered.to_string(),
        opt(r.injected.map(|i| i.dropped)),
        opt(r.injected.map(|i| i.duplicated)),
        opt(r.injected.map(|i| i.reordered)),
        opt(r.fabric_dropped),
    ]);
    v
}

pub const METRICS: &[&str] = &["throughput_mbps", "loss_pct", "jitter_us", "sender_cpu_s"];

/// Means over receivers and repeats of the impairment's counts (empty on real hosts).
pub const INJECTED_MEANS: &[&str] = &["injected_dropped_mean", "injected_duplicated_mean", "injected_reordered_mean"];

/// The `summary.csv` header.
pub fn summary_header() -> Vec<String> {
    let mut h: Vec<String> = CASE_PARAMS.iter().map(|s| s.to_string()).collect();
    h.push("repeats".into());
    h.push("samples".into());
    for m in METRICS {
        for s in ["mean", "sd", "min", "max"] {
            h.push(format!("{m}_{s}"));
        }
    }
    h.extend(INJECTED_MEANS.iter().map(|s| s.to_string()));
    h.extend(quantile_columns(QUANTILES));
    h
}

/// Samples of one case: per receiver and repeat (throughput, loss, jitter), per repeat (sender CPU).
#[derive(Debug, Default, Clone)]
pub struct CaseSamples {
    pub repeats: u32,
    pub throughput: Vec<f64>,
    pub loss: Vec<f64>,
    pub jitter: Vec<f64>,
    pub cpu: Vec<f64>,
    /// Per receiver and repeat with an impairment program's counts: dropped, duplicated, reordered.
    pub injected: Vec<Injected>,
    /// One-way delay and IPDV over every receiver and repeat, merged.
    pub delay: Option<Dist>,
    pub ipdv: Option<Dist>,
}

impl CaseSamples {
    pub fn add_repeat(&mut self, s: &SendResult, rs: &[RecvResult]) {
        self.repeats += 1;
        self.cpu.push(s.cpu_s);
        for r in rs {
            self.throughput.push(throughput_mbps(r, s));
            self.loss.push(r.loss_pct);
            self.jitter.push(r.jitter_us);
            self.injected.extend(r.injected);
            self.delay = merged(self.delay.take().into_iter().chain(r.delay.clone()));
            self.ipdv = merged(self.ipdv.take().into_iter().chain(r.ipdv.clone()));
        }
    }
}

/// A `summary.csv` row (its fields).
pub fn summary_row(k: usize, c: &Case, cs: &CaseSamples) -> Vec<String> {
    let mut v = case_params(k, c);
    v.push(cs.repeats.to_string());
    v.push(cs.throughput.len().to_string());
    for xs in [&cs.throughput, &cs.loss, &cs.jitter, &cs.cpu] {
        match stats(xs) {
            Some(st) => v.extend([f3(st.mean), opt(st.sd.map(f3)), f3(st.min), f3(st.max)]),
            None => v.extend(std::iter::repeat_n(String::new(), 4)),
        }
    }
    for f in [|i: &Injected| i.dropped, |i: &Injected| i.duplicated, |i: &Injected| i.reordered] {
        let xs: Vec<f64> = cs.injected.iter().map(|i| f(i) as f64).collect();
        v.push(opt(stats(&xs).map(|st| f3(st.mean))));
    }
    v.extend(quantile_fields(QUANTILES, cs.delay.as_ref(), cs.ipdv.as_ref()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Placement;
    use crate::run::plan::parse_load;

    #[test]
    fn stats_by_hand() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum 32, sample variance 32/7
        let s = stats(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.n, 8);
        assert_eq!(s.mean, 5.0);
        assert!((s.sd.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        let one = stats(&[3.5]).unwrap();
        assert_eq!((one.mean, one.sd, one.min, one.max), (3.5, None, 3.5, 3.5));
        assert!(stats(&[]).is_none());
        // 1, 2: mean 1.5, sd sqrt(0.5)
        assert!((stats(&[1.0, 2.0]).unwrap().sd.unwrap() - 0.5f64.sqrt()).abs() < 1e-12);
    }

    fn case() -> Case {
        Case {
            block: "load".into(),
            load: parse_load("10M/1470").unwrap(),
            receivers: 3,
            snooping: true,
            query_interval: 125,
            impair: crate::run::plan::Impairment { loss_pct: 5.0, reorder_pct: 0.5, seed: 7, ..Default::default() },
            placement: Placement::SameHost,
            duration: 2.0,
            on_lab: true,
        }
    }

    /// Percentiles per receiver from its flows' merged histograms, and per
    /// case from every receiver's and repeat's: merged bucket counts, never
    /// averaged percentiles; clamped to the exact extremes.
    #[test]
    fn percentiles_come_from_merged_histograms() {
        let recv = |flows: &str| -> RecvResult {
            let line = format!(r#"{{"type":"summary","role":"recv","counter":"kernel","flows":[{flows}]}}"#);
            parse_recv(&[serde_json::from_str(&line).unwrap()], 7).unwrap()
        };
        // r1: two flows, 2 µs ×90 and 1 ms ×10 between them; r2: 5 µs ×100.
        let r1 = recv(
            r#"{"run":7,"delay":{"min_us":2.0,"max_us":2.0,"histogram_ns":[[1984,90]]}},
               {"run":7,"delay":{"min_us":2.0,"max_us":1000.0,"histogram_ns":[[983040,10]]},"ipdv":{"max_us":0.5,"histogram_ns":[[0,9]]}}"#,
        );
        let r2 = recv(r#"{"run":7,"delay":{"min_us":5.0,"max_us":5.0,"histogram_ns":[[4864,100]]}}"#);
        let s = SendResult { run_id: 7, sent: 100, duration_s: 1.0, rate_bps: 0.0, cpu_s: 0.0 };
        let row = cases_row(1, &case(), 1, "r1", &s, &r1);
        let at_case = |name: &str| cases_header().iter().position(|h| h == name).unwrap();
        let at = at_case;
        // p50 in the 2 µs bucket ([1984, 2048) ns, clamped to the max 1000 µs: 2.047);
        // p99 in the 1 ms bucket, clamped to the exact max.
        assert_eq!((&row[at("delay_p50_us")][..], &row[at("delay_p99_us")][..]), ("2.047", "1000.000"));
        assert_eq!((&row[at("ipdv_p50_us")][..], &row[at("ipdv_p99_us")][..]), ("0.500", "0.500"));
        let mut cs = CaseSamples::default();
        cs.add_repeat(&s, &[r1, r2]);
        let f = summary_row(1, &case(), &cs);
        let at = |name: &str| summary_header().iter().position(|h| h == name).unwrap();
        // 200 values: rank 100 is the last of r2's 5 µs bucket ([4864, 5120) ns), clamped to 5.119;
        // rank 198 is in the 1 ms bucket.
        assert_eq!((&f[at("delay_p50_us")][..], &f[at("delay_p99_us")][..]), ("5.119", "1000.000"));
        assert_eq!(&f[at("delay_p90_us")][..], "5.119");
        // the maximum is the exact largest value of the merged distributions, not a bucket bound
        assert_eq!((&f[at("delay_max_us")][..], &f[at("delay_p9999_us")][..]), ("1000.000", "1000.000"));
        assert_eq!(&row[at_case("delay_max_us")][..], "1000.000");
    }

    #[test]
    fn parse_lines_and_rows() {
        let send: Vec<Value> = [
            r#"{"type":"begin","role":"send","run":77}"#,
            r#"{"type":"summary","role":"send","sent":1000,"duration_s":2.0,"rate_bps":5880000.0,"cpu_s":0.25}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let recv: Vec<Value> = [
            r#"{"type":"begin","role":"recv"}"#,
            r#"{"type":"summary","role":"recv","counter":"kernel","flows":[{"run":77,"received":950,"bytes":1396500,"lost":50,"duplicates":4,"reordered":6,"jitter_us":3.5,"delay":{"mean_us":20.0}},{"run":5,"received":9,"bytes":9,"lost":9}]}"#,
            r#"{"type":"summary","role":"recv","counter":"layers","path_lost":50,"kernel_dropped":0,"socket_dropped":1}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let s = parse_send(&send).unwrap();
        assert_eq!(s, SendResult { run_id: 77, sent: 1000, duration_s: 2.0, rate_bps: 5_880_000.0, cpu_s: 0.25 });
        let mut r = parse_recv(&recv, 77).unwrap();
        // 950 received of which 4 duplicates: 946 + 50 lost datagrams
        assert_eq!((r.received, r.lost, r.loss_pct, r.duplicates, r.reordered), (950, 50, 100.0 * 50.0 / 996.0, 4, 6));
        assert_eq!(r.injected, None);
        assert_eq!((r.path_lost, r.kernel_dropped, r.socket_dropped), (Some(50), Some(0), Some(1)));
        assert_eq!(throughput_mbps(&r, &s), 1396500.0 * 8.0 / 2.0 / 1e6);
        let header = cases_header().join(",");
        let row = cases_row(3, &case(), 2, "r1", &s, &r).join(",");
        assert_eq!(header.split(',').count(), row.split(',').count());
        assert_eq!(
            row,
            "3,load,10M/1470,10000000,1470,3,on,125,5,every,1,0.5,0,7,same-host,2,2,77,r1,1000,950,50,5.0201,3.500,20.000,,,,,,,,,,,,,5.586,5.880,0.250,50,0,1,4,6,,,,"
        );
        r.injected = Some(Injected { dropped: 50, duplicated: 4, reordered: 6 });
        assert!(cases_row(3, &case(), 2, "r1", &s, &r).join(",").ends_with(",50,0,1,4,6,50,4,6,"));
        assert!(header.starts_with("case,block,load,rate_bps,length,receivers,snooping,query_interval_s,loss_injected_pct,loss_mode,burst,reorder_injected_pct,duplicate_injected_pct,seed,placement,duration_s,repeat,run_id,receiver,sent,received,lost,loss_pct"));
        assert!(header.ends_with(",path_lost,kernel_dropped,socket_dropped,duplicates,reordered,injected_dropped,injected_duplicated,injected_reordered,fabric_dropped"));
        // no loss, nothing random: no mode, burst or seed
        let clean = Case { impair: Default::default(), ..case() };
        assert!(cases_row(3, &clean, 2, "r1", &s, &r).join(",").starts_with("3,load,10M/1470,10000000,1470,3,on,125,0,,,0,0,,same-host,2,"));
        // real hosts: the lab-only parameters are empty
        let hosts = Case { on_lab: false, impair: Default::default(), ..case() };
        assert!(cases_row(3, &hosts, 2, "r1", &s, &r).join(",").starts_with("3,load,10M/1470,10000000,1470,3,,,0,,,0,0,,,2,"));
        assert!(parse_send(&recv).is_err());
    }

    #[test]
    fn summary_row_values() {
        let mut cs = CaseSamples::default();
        let s1 = SendResult { run_id: 1, sent: 10, duration_s: 1.0, rate_bps: 0.0, cpu_s: 1.0 };
        let s2 = SendResult { cpu_s: 3.0, ..s1.clone() };
        let r = |bytes, loss_pct, jitter_us| RecvResult {
            bytes,
            loss_pct,
            jitter_us,
            injected: Some(Injected { dropped: bytes / 1_000_000, duplicated: 1, reordered: 0 }),
            ..Default::default()
        };
        cs.add_repeat(&s1, &[r(1_000_000, 0.0, 1.0), r(2_000_000, 5.0, 3.0)]);
        cs.add_repeat(&s2, &[r(3_000_000, 5.0, 5.0), r(2_000_000, 10.0, 7.0)]);
        // throughput 8, 16, 24, 16 Mbit/s: mean 16, sd sqrt(128/3); loss 0,5,5,10: mean 5, sd sqrt(50/3)
        let f = summary_row(1, &case(), &cs);
        assert_eq!(summary_header().len(), f.len());
        assert_eq!(&f[16..18], ["2", "4"]);
        assert_eq!(&f[18..22], ["16.000", &format!("{:.3}", (128.0f64 / 3.0).sqrt()), "8.000", "24.000"]);
        assert_eq!(&f[22..26], ["5.000", &format!("{:.3}", (50.0f64 / 3.0).sqrt()), "0.000", "10.000"]);
        assert_eq!(&f[26..30], ["4.000", &format!("{:.3}", (20.0f64 / 3.0).sqrt()), "1.000", "7.000"]);
        assert_eq!(&f[30..34], ["2.000", &format!("{:.3}", 2.0f64.sqrt()), "1.000", "3.000"]);
        // injected dropped 1, 2, 3, 2: mean 2; duplicated 1 each; reordered 0
        assert_eq!(&f[34..37], ["2.000", "1.000", "0.000"]);
        assert!(summary_header().join(",").contains(",sender_cpu_s_max,injected_dropped_mean,injected_duplicated_mean,injected_reordered_mean,delay_p50_us,"));
        let quantiles = ",delay_p50_us,delay_p90_us,delay_p99_us,delay_p999_us,delay_p9999_us,delay_max_us,\
                         ipdv_p50_us,ipdv_p90_us,ipdv_p99_us,ipdv_p999_us,ipdv_p9999_us,ipdv_max_us";
        assert!(cases_header().join(",").contains(&format!(",delay_mean_us{quantiles},throughput_mbps,")));
        assert!(summary_header().join(",").ends_with(quantiles));
        // one repeat: sd left empty
        let mut one = CaseSamples::default();
        one.add_repeat(&s1, &[r(1_000_000, 0.0, 1.0)]);
        let f1 = summary_row(1, &case(), &one);
        assert_eq!(f1[19], "");
        assert_eq!(f1[31], "");
        // no impairment counts (real hosts): the means are empty
        let mut none = CaseSamples::default();
        none.add_repeat(&s1, &[RecvResult::default()]);
        assert!(summary_row(1, &case(), &none).join(",").ends_with(",,,"));
    }

}
