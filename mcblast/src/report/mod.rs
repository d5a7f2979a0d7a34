//! `report.html` of a run directory (what `mcblast run` wrote: `plan.toml`,
//! `cases.csv`, `summary.csv`, `raw/*.jsonl`), and the side-by-side page of
//! two runs (`mcblast report --compare RUN_A RUN_B`).
//!
//! One self-contained file: inline CSS and inline SVG drawn here, no script,
//! no external URL. Every number on the page is read from the run's files:
//! the comparison table from `summary.csv` (as written) and `cases.csv`, the
//! plots from the receivers' interval and summary lines in `raw/`. Only the
//! cases `summary.csv` lists are reported (after Ctrl-C: the finished ones).

pub mod fanout;
mod html;
mod svg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One CSV row: column name -> field.
#[derive(Debug, Clone, Default)]
pub struct Row(HashMap<String, String>);

impl Row {
    /// The field, "" when the column is absent.
    pub fn get(&self, k: &str) -> &str {
        self.0.get(k).map(String::as_str).unwrap_or("")
    }
    fn num(&self, k: &str) -> Option<f64> {
        self.get(k).parse().ok()
    }
    fn int(&self, k: &str) -> Option<u64> {
        self.get(k).parse().ok()
    }
}

/// A CSV file `mcblast run` wrote, as rows (see [`crate::run::csvfile`]).
fn read_csv(path: &Path) -> Result<Vec<Row>> {
    let (header, rows) = crate::run::csvfile::read(path)?;
    Ok(rows.into_iter().map(|f| Row(header.iter().cloned().zip(f).collect())).collect())
}

fn json_lines(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a JSON line", path.display(), i + 1)))
        .collect()
}

/// One interval line of a receiver's counter.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub start_s: f64,
    pub end_s: f64,
    pub received: u64,
    pub lost: i64,
    pub rate_bps: f64,
    /// One-way delay percentiles (µs) of this interval alone; None without delays, or from a receiver
    /// older than the interval percentiles.
    pub delay_p50_us: Option<f64>,
    pub delay_p99_us: Option<f64>,
}

impl Interval {
    /// Loss in the interval, % of the datagrams it accounts for; None without traffic.
    pub fn loss_pct(&self) -> Option<f64> {
        let lost = self.lost.max(0) as u64;
        let total = self.received + lost;
        (total > 0).then(|| 100.0 * lost as f64 / total as f64)
    }
}

/// One receiver in one repeat: its `cases.csv` row and its raw lines.
#[derive(Debug, Clone)]
pub struct RecvRun {
    pub node: String,
    pub repeat: u32,
    pub row: Row,
    /// The counter the intervals come from: kernel when it ran, else socket.
    pub counter: String,
    pub intervals: Vec<Interval>,
    /// The `"counter":"layers"` summary (the loss waterfall), when the drop tracer ran.
    pub layers: Option<Value>,
    /// The begin line (version, attach point).
    pub begin: Option<Value>,
    /// One-way delay histogram of the run's flows (counter above), by power
    /// of two ([`octave_floor_us`]): (bucket floor µs, datagrams).
    pub delay_hist: Vec<(u64, u64)>,
    /// The same flows' delay and IPDV histograms by bucket top ([`bucket_tops`]): (one past the bucket's
    /// largest value in ns, datagrams), ascending, for the percentile curves.
    pub delay_tops: Vec<(i64, u64)>,
    pub ipdv_tops: Vec<(i64, u64)>,
}

/// One finished case.
#[derive(Debug, Clone)]
pub struct CaseData {
    pub k: usize,
    pub summary: Row,
    pub recvs: Vec<RecvRun>,
    /// The sender's begin line of the first repeat (engine, version).
    pub sender_begin: Option<Value>,
}

impl CaseData {
    /// What identifies a case across runs: its parameters, not its number or block name.
    pub fn key(&self) -> String {
        format!("{} q{}s", self.key_but_query(), self.summary.get("query_interval_s"))
    }

    /// The key without the IGMP query interval, which platform presets set differently (TGW 120 s, OVN 150 s).
    pub fn key_but_query(&self) -> String {
        let s = &self.summary;
        format!(
            "{} rx{} snoop {} injected {} {} {}s",
            s.get("load"),
            s.get("receivers"),
            s.get("snooping"),
            self.injected(),
            s.get("placement"),
            s.get("duration_s")
        )
    }

    /// The impairment the case injected, in words: every part that tells
    /// two cases apart (loss percent, its mode and burst, reordering,
    /// duplication, the seed of a random part), "none" without any.
    /// Summaries from before the impairment columns existed have only the
    /// loss percent.
    pub fn injected(&self) -> String {
        let s = &self.summary;
        let pct = |k: &str| s.num(k).filter(|v| *v > 0.0);
        let mut parts: Vec<String> = Vec::new();
        if let Some(loss) = pct("loss_injected_pct") {
            let mut p = format!("loss {loss}%");
            if !s.get("loss_mode").is_empty() {
                p += &format!(" {}", s.get("loss_mode"));
            }
            if s.int("burst").is_some_and(|b| b > 1) {
                p += &format!(" burst {}", s.get("burst"));
            }
            parts.push(p);
        }
        if let Some(r) = pct("reorder_injected_pct") {
            parts.push(format!("reorder {r}%"));
        }
        if let Some(d) = pct("duplicate_injected_pct") {
            parts.push(format!("duplicate {d}%"));
        }
        if !s.get("seed").is_empty() && !parts.is_empty() {
            parts.push(format!("seed {}", s.get("seed")));
        }
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }

    /// Receiver names in the order of `cases.csv`.
    pub fn receivers(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.recvs {
            if !v.contains(&r.node) {
                v.push(r.node.clone());
            }
        }
        v
    }

    /// Σ of an integer `cases.csv` column over receivers and repeats; None when every field is empty.
    pub fn sum(&self, col: &str) -> Option<u64> {
        let v: Vec<u64> = self.recvs.iter().filter_map(|r| r.row.int(col)).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }
}

/// The cases of two runs that match: equal parameters; failing that, equal
/// parameters but the query interval when that pairs one case with one case
/// (two presets' default query intervals differ).
pub fn pair_cases<'a>(a: &'a RunData, b: &'a RunData) -> Vec<(&'a CaseData, &'a CaseData)> {
    let mut pairs: Vec<(&CaseData, &CaseData)> = Vec::new();
    for ca in &a.cases {
        if let Some(cb) = b.cases.iter().find(|cb| cb.key() == ca.key()) {
            pairs.push((ca, cb));
        }
    }
    for ca in &a.cases {
        if pairs.iter().any(|p| p.0.k == ca.k) {
            continue;
        }
        let same = |c: &&CaseData| c.key_but_query() == ca.key_but_query();
        let in_a: Vec<&CaseData> = a.cases.iter().filter(same).filter(|c| !pairs.iter().any(|p| p.0.k == c.k)).collect();
        let in_b: Vec<&CaseData> = b.cases.iter().filter(same).filter(|c| !pairs.iter().any(|p| p.1.k == c.k)).collect();
        if in_a.len() == 1 && in_b.len() == 1 {
            pairs.push((ca, in_b[0]));
        }
    }
    pairs.sort_by_key(|p| p.0.k);
    pairs
}

/// A run directory, read.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    /// The platform label on the page (`--label`, else the plan's preset or fabric, else the directory name).
    pub label: String,
    pub plan_text: Option<String>,
    pub plan_file: Option<crate::run::plan::PlanFile>,
    /// The resolved plan, or why it did not resolve.
    pub plan: std::result::Result<crate::run::plan::TestPlan, String>,
    /// When the run started (the plan copy's modification time), UTC.
    pub started: Option<String>,
    pub cases: Vec<CaseData>,
}

impl RunData {
    pub fn dir_name(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| self.dir.display().to_string())
    }
}

/// `20261121T183200Z` -> `2026-11-21 18:32:00 UTC`.
fn pretty_time(ts: &str) -> String {
    let b = ts.as_bytes();
    if b.len() == 16 {
        format!("{}-{}-{} {}:{}:{} UTC", &ts[0..4], &ts[4..6], &ts[6..8], &ts[9..11], &ts[11..13], &ts[13..15])
    } else {
        ts.to_string()
    }
}

/// Reads a run directory; errors are one line saying what to do.
pub fn load(dir: &Path) -> Result<RunData> {
    let (summary_path, cases_path) = run_files(dir)?;
    let summary = read_csv(&summary_path)?;
    if summary.is_empty() {
        bail!(
            "{}: no finished case in summary.csv, nothing to report (the run stopped before its first case finished)",
            dir.display()
        );
    }
    let rows = read_csv(&cases_path)?;
    let plan_path = dir.join("plan.toml");
    let plan_text = std::fs::read_to_string(&plan_path).ok();
    let plan_file: Option<crate::run::plan::PlanFile> = plan_text.as_deref().and_then(|t| toml::from_str(t).ok());
    let plan = match &plan_text {
        Some(t) => crate::run::plan::parse(t, "plan.toml", None, crate::run::DEFAULT_RUN_PREFIX).map_err(|e| format!("{e:#}")),
        None => Err("no plan.toml in the run directory".into()),
    };
    let started = std::fs::metadata(&plan_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| pretty_time(&crate::run::timestamp(d.as_secs())));
    let mut cases = Vec::new();
    for s in summary {
        let k: usize = s.get("case").parse().with_context(|| format!("{}: case {:?} is not a number", summary_path.display(), s.get("case")))?;
        let mut recvs = Vec::new();
        let mut sender_begin = None;
        for r in rows.iter().filter(|r| r.get("case") == s.get("case")) {
            recvs.push(load_recv(dir, &cases_path, k, r, &mut sender_begin)?);
        }
        if recvs.is_empty() {
            bail!("{}: case {k} has no rows in cases.csv: the run directory is inconsistent", dir.display());
        }
        cases.push(CaseData { k, summary: s, recvs, sender_begin });
    }
    let mut run = RunData { dir: dir.to_path_buf(), label: String::new(), plan_text, plan_file, plan, started, cases };
    run.label = default_label(&run);
    Ok(run)
}

/// The paths of a run directory's summary.csv and cases.csv, once it is seen to be one.
fn run_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: give a run directory that `mcblast run` wrote (its --out, default runs/<UTC time>)",
            dir.display()
        );
    }
    let summary_path = dir.join("summary.csv");
    if !summary_path.is_file() {
        bail!(
            "{} is not a run directory (no summary.csv): give a directory that `mcblast run` wrote (its --out, default runs/<UTC time>)",
            dir.display()
        );
    }
    let cases_path = dir.join("cases.csv");
    if !cases_path.is_file() {
        bail!("{} is missing: the run directory is incomplete, run the plan again with `mcblast run`", cases_path.display());
    }
    Ok((summary_path, cases_path))
}

/// One receiver's repeat of case `k` (its cases.csv row `r`) from its raw JSON Lines; the first time, the sender's
/// begin line into `sender_begin`.
fn load_recv(dir: &Path, cases_path: &Path, k: usize, r: &Row, sender_begin: &mut Option<Value>) -> Result<RecvRun> {
    let rep: u32 = r.get("repeat").parse().with_context(|| format!("{}: repeat {:?} is not a number", cases_path.display(), r.get("repeat")))?;
    let node = r.get("receiver").to_string();
    let raw = |who: &str| dir.join("raw").join(format!("c{k:03}-r{rep}-{who}.jsonl"));
    let p = raw(&node);
    if !p.is_file() {
        bail!("{} is missing: the report needs the raw JSON Lines of every receiver of a finished case", p.display());
    }
    let lines = json_lines(&p)?;
    let has = |c: &str| lines.iter().any(|l| l["type"] == "summary" && l["counter"] == c);
    let counter = if has("kernel") { "kernel" } else { "socket" };
    let intervals = lines
        .iter()
        .filter(|l| l["type"] == "interval" && l["counter"] == counter)
        .map(|l| Interval {
            start_s: l["start_s"].as_f64().unwrap_or(0.0),
            end_s: l["end_s"].as_f64().unwrap_or(0.0),
            received: l["received"].as_u64().unwrap_or(0),
            lost: l["lost"].as_i64().unwrap_or(0),
            rate_bps: l["rate_bps"].as_f64().unwrap_or(0.0),
            delay_p50_us: l["delay_p50_us"].as_f64(),
            delay_p99_us: l["delay_p99_us"].as_f64(),
        })
        .collect();
    let (delay_hist, delay_tops, ipdv_tops) = recv_delays(&lines, counter, r.int("run_id"));
    let layers = lines.iter().find(|l| l["type"] == "summary" && l["counter"] == "layers").cloned();
    let begin = lines.iter().find(|l| l["type"] == "begin").cloned();
    if sender_begin.is_none() {
        *sender_begin = json_lines(&raw("sender")).ok().and_then(|l| l.into_iter().find(|l| l["type"] == "begin"));
    }
    Ok(RecvRun {
        node,
        repeat: rep,
        row: r.clone(),
        counter: counter.into(),
        intervals,
        layers,
        begin,
        delay_hist,
        delay_tops,
        ipdv_tops,
    })
}

/// A receiver's delay octaves (sorted), delay and IPDV histograms by bucket top, summed over the flows of run `run_id`
/// in its `counter` summary.
fn recv_delays(
    lines: &[Value],
    counter: &str,
    run_id: Option<u64>,
) -> (Vec<(u64, u64)>, Vec<(i64, u64)>, Vec<(i64, u64)>) {
    let mut delay_hist: Vec<(u64, u64)> = Vec::new();
    let (mut delay_tops, mut ipdv_tops) = (Vec::new(), Vec::new());
    if let Some(sm) = lines.iter().find(|l| l["type"] == "summary" && l["counter"] == counter) {
        for f in sm["flows"].as_array().into_iter().flatten().filter(|f| f["run"].as_u64() == run_id) {
            for (ge, n) in delay_octaves(&f["delay"]) {
                match delay_hist.iter_mut().find(|e| e.0 == ge) {
                    Some(e) => e.1 += n,
                    None => delay_hist.push((ge, n)),
                }
            }
            merge_tops(&mut delay_tops, &bucket_tops(&f["delay"]));
            merge_tops(&mut ipdv_tops, &bucket_tops(&f["ipdv"]));
        }
    }
    delay_hist.sort();
    (delay_hist, delay_tops, ipdv_tops)
}

/// The plan's preset (TGW, OVN), else its fabric, else the directory name.
fn default_label(r: &RunData) -> String {
    let lab = r.plan_file.as_ref().and_then(|p| p.lab.as_ref());
    if let Some(p) = lab.and_then(|l| l.preset.as_deref()) {
        return p.to_uppercase();
    }
    if let Some(f) = lab.and_then(|l| l.fabric.as_deref()) {
        return f.to_string();
    }
    r.dir_name()
}

/// The page of one run directory.
pub fn render_run(dir: &Path) -> Result<String> {
    Ok(html::run_page(&load(dir)?))
}

/// Writes `DIR/report.html`; returns its path.
pub fn write_run_report(dir: &Path) -> Result<PathBuf> {
    let page = render_run(dir)?;
    let out = dir.join("report.html");
    std::fs::write(&out, page).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// After `mcblast run` (also after Ctrl-C): writes the run's report.html
/// from its finished cases and says where, or says in one line why not.
pub fn after_run(dir: &Path) {
    match write_run_report(dir) {
        Ok(p) => eprintln!("mcblast run: report in {}", p.display()),
        Err(e) => eprintln!("mcblast run: report.html not written: {e:#} (try `mcblast report {}`)", dir.display()),
    }
}

/// The comparison page of run directories `a` and `b`, each labelled as `labels` say (else by its plan's preset or
/// fabric, else its directory name); the same label twice gets the directory names added.
pub fn render_compare(a: &Path, b: &Path, labels: &[Option<String>; 2]) -> Result<String> {
    let mut ra = load(a)?;
    let mut rb = load(b)?;
    if let Some(l) = &labels[0] {
        ra.label = l.clone();
    }
    if let Some(l) = &labels[1] {
        rb.label = l.clone();
    }
    if ra.label == rb.label {
        // same platform twice: tell the runs apart by directory
        ra.label = format!("{} ({})", ra.label, ra.dir_name());
        rb.label = format!("{} ({})", rb.label, rb.dir_name());
    }
    Ok(html::compare_page(&ra, &rb))
}


/// A flow's delay histogram by power of two ([`octave_floor_us`]):
/// (floor µs, datagrams), from its `histogram_ns`, or from the power-of-two
/// `histogram` (floor µs) of runs recorded before the log-linear one.
pub fn delay_octaves(delay: &serde_json::Value) -> Vec<(u64, u64)> {
    let pairs = |key: &str| delay[key].as_array().cloned().unwrap_or_default();
    let n = |b: &serde_json::Value| b[1].as_u64().unwrap_or(0);
    match delay.get("histogram_ns") {
        Some(_) => pairs("histogram_ns").iter().map(|b| (octave_floor_us(b[0].as_i64().unwrap_or(0)), n(b))).collect(),
        None => pairs("histogram").iter().map(|b| (b[0].as_u64().unwrap_or(0), n(b))).collect(),
    }
}

/// A flow's delay or IPDV histogram by bucket top: (one past the bucket's largest value in ns, datagrams),
/// ascending: from its log-linear `histogram_ns` (`[lower_ns, n]`; the open-ended last bucket's top is taken
/// as twice its lower bound), or from the power-of-two `histogram` (`[floor_us, n]`) of older runs.
pub fn bucket_tops(dist: &Value) -> Vec<(i64, u64)> {
    use mcblast_common::hist;
    let pairs = |key: &str| dist[key].as_array().cloned().unwrap_or_default();
    let n = |b: &Value| b[1].as_u64().unwrap_or(0);
    let mut v: Vec<(i64, u64)> = match dist.get("histogram_ns") {
        Some(_) => pairs("histogram_ns")
            .iter()
            .map(|b| {
                let lower = b[0].as_i64().unwrap_or(0);
                let top = match hist::upper_ns(hist::bucket(lower)) {
                    i64::MAX => lower.saturating_mul(2),
                    t => t,
                };
                (top, n(b))
            })
            .collect(),
        None => pairs("histogram").iter().map(|b| ((b[0].as_i64().unwrap_or(0) * 2).max(1) * 1000, n(b))).collect(),
    };
    v.sort();
    v
}

/// Adds the buckets of `add` to `into` (both by bucket top, ascending): an exact merge.
pub fn merge_tops(into: &mut Vec<(i64, u64)>, add: &[(i64, u64)]) {
    for &(top, n) in add {
        match into.binary_search_by_key(&top, |e| e.0) {
            Ok(i) => into[i].1 += n,
            Err(i) => into.insert(i, (top, n)),
        }
    }
}

/// The cumulative distribution of a histogram by bucket top: (top in µs, fraction of the values below it).
pub fn cdf(tops: &[(i64, u64)]) -> Vec<(f64, f64)> {
    let total: u64 = tops.iter().map(|t| t.1).sum();
    let mut seen = 0;
    tops.iter()
        .filter(|t| t.1 > 0)
        .map(|&(top, n)| {
            seen += n;
            (top as f64 / 1e3, seen as f64 / total as f64)
        })
        .collect()
}

/// The `q`-quantile read from a [`cdf`]: the first bucket top at which the fraction reaches `q` (as
/// `hist::quantile_bucket`, a bound on the true value).
pub fn cdf_quantile(cdf: &[(f64, f64)], q: f64) -> Option<f64> {
    cdf.iter().find(|p| p.1 >= q - 1e-12).map(|p| p.0)
}

/// The power-of-two bucket (floor in µs; 0 for below 1 µs) the report's
/// delay chart puts a fine histogram bucket in, by the bucket's lower bound
/// in ns: the chart shows the distribution's shape, the percentiles come
/// from the fine buckets.
pub fn octave_floor_us(lower_ns: i64) -> u64 {
    let us = (lower_ns.max(0) as u64) / 1000;
    if us == 0 { 0 } else { 1 << (63 - us.leading_zeros()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_written_by_run_reads_back_with_commas_quotes_and_newlines() {
        let dir = std::env::temp_dir().join(format!("mcblast-report-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cases.csv");
        let header = crate::run::stats::cases_header();
        let names = ["r1", "rack 2, \"east\"", "two\nlines", "\"\"", ""];
        let mut w = crate::run::csvfile::CsvOut::create(&p, &header).unwrap();
        for n in names {
            let row: Vec<String> = header.iter().map(|h| if h == "receiver" { n.to_string() } else { h.clone() }).collect();
            w.row(&row).unwrap();
        }
        drop(w);
        let rows = read_csv(&p);
        std::fs::remove_dir_all(&dir).unwrap();
        let rows = rows.unwrap();
        assert_eq!(rows.iter().map(|r| r.get("receiver")).collect::<Vec<_>>(), names);
        assert!(rows.iter().all(|r| r.get("loss_pct") == "loss_pct" && r.get("case") == "case"));
    }

    fn case(pairs: &[(&str, &str)]) -> CaseData {
        let row = Row(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        CaseData { k: 1, summary: row, recvs: Vec::new(), sender_begin: None }
    }

    #[test]
    fn cases_differing_only_in_impairment_have_different_keys() {
        let base = [("load", "10M/1470"), ("receivers", "3"), ("snooping", "on"), ("placement", "spread"), ("duration_s", "2")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = base.to_vec();
            v.extend_from_slice(extra);
            case(&v)
        };
        let every = with(&[("loss_injected_pct", "1"), ("loss_mode", "every"), ("burst", "1")]);
        let random = with(&[("loss_injected_pct", "1"), ("loss_mode", "random"), ("burst", "1"), ("seed", "7")]);
        let seed8 = with(&[("loss_injected_pct", "1"), ("loss_mode", "random"), ("burst", "1"), ("seed", "8")]);
        let bursty = with(&[("loss_injected_pct", "1"), ("loss_mode", "every"), ("burst", "4")]);
        let reorder = with(&[("loss_injected_pct", "0"), ("reorder_injected_pct", "2"), ("duplicate_injected_pct", "0")]);
        let dup = with(&[("loss_injected_pct", "0"), ("reorder_injected_pct", "0"), ("duplicate_injected_pct", "2")]);
        let clean = with(&[("loss_injected_pct", "0"), ("reorder_injected_pct", "0"), ("duplicate_injected_pct", "0")]);
        let old = with(&[("loss_injected_pct", "1")]);
        assert_eq!(every.injected(), "loss 1% every");
        assert_eq!(random.injected(), "loss 1% random, seed 7");
        assert_eq!(bursty.injected(), "loss 1% every burst 4");
        assert_eq!(reorder.injected(), "reorder 2%");
        assert_eq!(dup.injected(), "duplicate 2%");
        assert_eq!(clean.injected(), "none");
        assert_eq!(old.injected(), "loss 1%", "a summary without the impairment columns");
        let keys: Vec<String> = [&every, &random, &seed8, &bursty, &reorder, &dup, &clean, &old].iter().map(|c| c.key()).collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn bucket_tops_merge_and_cdf() {
        let a = serde_json::json!({"histogram_ns": [[0, 2], [19456, 6]]});
        let old = serde_json::json!({"histogram": [[0, 1], [16, 1]]});
        let (ta, to) = (bucket_tops(&a), bucket_tops(&old));
        assert_eq!(ta, vec![(1024, 2), (20480, 6)], "[19456, 20480) ns is one log-linear bucket");
        assert_eq!(to, vec![(1000, 1), (32000, 1)], "power-of-two buckets: [16, 32) µs");
        let mut m = Vec::new();
        merge_tops(&mut m, &ta);
        merge_tops(&mut m, &ta);
        merge_tops(&mut m, &to);
        assert_eq!(m, vec![(1000, 1), (1024, 4), (20480, 12), (32000, 1)]);
        let c = cdf(&m);
        assert_eq!(c.len(), 4);
        assert_eq!(c.last().unwrap().1, 1.0);
        assert_eq!(cdf_quantile(&c, 0.5), Some(20.48));
        assert_eq!(cdf_quantile(&c, 1.0), Some(32.0));
        assert!(cdf(&[]).is_empty());
    }

    #[test]
    fn interval_loss() {
        let iv = |received, lost| Interval { start_s: 0.0, end_s: 1.0, received, lost, rate_bps: 0.0, delay_p50_us: None, delay_p99_us: None };
        assert_eq!(iv(95, 5).loss_pct(), Some(5.0));
        assert_eq!(iv(0, 0).loss_pct(), None);
        assert_eq!(iv(10, -2).loss_pct(), Some(0.0));
    }

    #[test]
    fn times() {
        assert_eq!(pretty_time("20261121T183200Z"), "2026-11-21 18:32:00 UTC");
    }
}
