//! `mcblast run PLAN.toml`: the test matrix of a plan file, on the lab or on
//! real hosts over ssh, with repeats, raw JSON Lines per run and node,
//! `cases.csv` and `summary.csv`.
//!
//! Every command on a node goes through [`transport`]: `ip netns exec` on
//! the lab, `ssh` to the hosts of an Ansible-style [`inventory`] otherwise.
//! On real hosts, `mcblast --version` on every host must match this build
//! before anything is sent.
//!
//! Per case: the lab with the case's topology (one lab is reused by
//! consecutive cases that share it), receivers started (`mcblast recv
//! --json`), group membership awaited (the bridges' group tables with
//! snooping, the receivers' `begin` lines without), optional warm-up traffic
//! under another run id, the case's impairment (loss, reordering,
//! duplicates: `mcblast lab impair`'s program) installed on every receiver's
//! port, the measured send, the receivers' summaries and the impairment's
//! counts collected, the impairment removed. Results are written as each run ends, so
//! Ctrl-C keeps every finished run and case.

pub mod csvfile;
pub mod deploy;
pub mod hlog;
pub mod iperf2;
pub mod inventory;
pub mod plan;
pub mod reaper;
pub mod stats;
pub mod transport;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::lab::{Lab, LabSpec};
use mcblast_common::maps::ImpairConfig;
use plan::{Case, Hosts, TestPlan, Sender};
use stats::{CaseSamples, FlowPick, RecvResult};
use transport::{Node, Proc};

/// Seconds between the receivers' interval lines (the report plots them over time).
const RECV_INTERVAL: &str = "1";

/// Default namespace prefix of the run's labs (`MCBLAST_LAB_PREFIX` overrides, `[lab] prefix` too).
pub const DEFAULT_RUN_PREFIX: &str = "mcb-run-";

fn check_stop() -> Result<()> {
    if crate::sys::stop_requested() { Err(anyhow::Error::msg("stopped")).context(StoppedMarker) } else { Ok(()) }
}

#[derive(Debug)]
struct StoppedMarker;
impl std::fmt::Display for StoppedMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by a signal")
    }
}

fn is_stop(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StoppedMarker>().is_some()
}

/// UTC `YYYYmmddTHHMMSSZ` for the default output directory.
pub(crate) fn timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil from days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The lab of a case: its spec, and TGW's limits in its fabric when the plan asks for them.
fn build_lab(plan: &TestPlan, spec: &LabSpec) -> Result<Lab> {
    let lab = Lab::up_spec(spec)?;
    if plan.tgw_limits {
        lab.tgw_limits_apply(&crate::lab::TgwLimits::aws(spec.base.receivers)).context("applying the TGW limits")?;
    }
    Ok(lab)
}

/// `mcblast run PLAN`: every case and repeat of the plan file `plan_file` (with its `[profile.NAME]` applied when
/// `profile` names one), the CSVs into `out` (default `runs/TIMESTAMP`); `deploy`: copy this binary to hosts that
/// lack it. Then `after_run` with the results directory once a case has finished (`app` hands over
/// `report::after_run`, which writes `report.html`: report reads run's files).
pub fn run(
    plan_file: &Path,
    profile: Option<&str>,
    out: Option<PathBuf>,
    deploy: bool,
    after_run: impl FnOnce(&Path),
) -> Result<ExitCode> {
    let default_prefix = std::env::var(crate::lab::PREFIX_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_RUN_PREFIX.to_string());
    let mut plan = plan::load(plan_file, profile, &default_prefix)?;
    crate::sys::install_stop_signals().context("installing signal handlers")?;
    if deploy && plan.hosts.is_none() {
        let p = plan_file.display();
        bail!("{p}: --deploy copies mcblast to the hosts of a [hosts] plan; a lab runs this binary itself: remove --deploy");
    }
    if plan.hosts.is_none() {
        crate::lab::require_root()?;
    }
    // started first, dropped last: after the run's own cleanup it is told to exit
    let reaper = reaper::Reaper::start(plan.hosts.is_none().then_some(plan.base.base.prefix.as_str()))?;
    transport::set_run_group(reaper.group());
    if let Some(h) = &mut plan.hosts {
        match prepare_hosts(h, deploy) {
            Err(e) if is_stop(&e) => {
                eprintln!("mcblast run: stopped during the version check; nothing was sent");
                return Ok(ExitCode::from(130));
            }
            r => r?,
        }
    }
    let out = prepare_out(out, plan_file, &plan)?;
    let mut w = Writer::create(&out)?;
    let n = plan.cases.len();
    eprintln!(
        "mcblast run: {} case(s) x {} repeat(s), results in {}",
        n,
        plan.repeats,
        out.display()
    );
    let mut progress = Progress::new(n as u32 * plan.repeats);
    let mut finished = 0;
    // the lab (if any) is removed when run_cases returns, before the progress line is finished
    let res = run_cases(&plan, &out, &mut w, &mut progress, &mut finished);
    progress.finish();
    if finished > 0 {
        after_run(&out);
    }
    finish_run(res, finished, n, &progress, &out)
}

/// The results directory (`--out`, else `runs/TIMESTAMP`), created with its `raw/`, the plan and the inventory
/// copied in.
fn prepare_out(out: Option<PathBuf>, plan_file: &Path, plan: &TestPlan) -> Result<PathBuf> {
    let out = out.unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        PathBuf::from("runs").join(timestamp(now))
    });
    std::fs::create_dir_all(out.join("raw")).with_context(|| format!("creating {}", out.display()))?;
    std::fs::copy(plan_file, out.join("plan.toml")).with_context(|| format!("copying the plan into {}", out.display()))?;
    if let Some(h) = &plan.hosts {
        std::fs::copy(&h.inventory, out.join("inventory"))
            .with_context(|| format!("copying the inventory into {}", out.display()))?;
    }
    Ok(out)
}

/// Runs every case in turn, counting those finished in `finished`; building a case's lab only when it differs from the
/// previous case's, and removing the last one before returning.
fn run_cases(plan: &TestPlan, out: &Path, w: &mut Writer, progress: &mut Progress, finished: &mut usize) -> Result<()> {
    let n = plan.cases.len();
    let mut lab: Option<Lab> = None;
    for (i, case) in plan.cases.iter().enumerate() {
        let k = i + 1;
        let site = match &plan.hosts {
            Some(h) => Site::hosts(h, case),
            None => {
                let spec = plan.spec_for(case);
                if lab.as_ref().is_none_or(|l| l.spec() != spec) {
                    drop(lab.take()); // removes the previous lab first
                    check_stop()?;
                    progress.show(k, n, 0, plan.repeats, "building the lab");
                    lab = Some(build_lab(plan, &spec).with_context(|| format!("case {k}: building the lab"))?);
                }
                Site::lab(lab.as_ref().unwrap(), spec)
            }
        };
        run_case(plan, &site, case, k, out, w, progress)?;
        *finished += 1;
    }
    Ok(())
}

/// Runs case number `k`'s repeats on `site`, writing their rows, the case's summary row and its delay histograms.
fn run_case(
    plan: &TestPlan,
    site: &Site,
    case: &Case,
    k: usize,
    out: &Path,
    w: &mut Writer,
    progress: &mut Progress,
) -> Result<()> {
    let n = plan.cases.len();
    let mut samples = CaseSamples::default();
    let mut delays: Vec<(u32, String, stats::Dist)> = Vec::new();
    for rep in 1..=plan.repeats {
        check_stop()?;
        progress.show(k, n, rep, plan.repeats, &case_label(case));
        let (s, rs) = one_run(plan, site, case, k, rep, out)?;
        for (node, r) in &rs {
            w.cases.row(&stats::cases_row(k, case, rep, node, &s, r))?;
            delays.extend(r.delay.clone().map(|d| (rep, node.clone(), d)));
        }
        let rs: Vec<RecvResult> = rs.into_iter().map(|(_, r)| r).collect();
        samples.add_repeat(&s, &rs);
        progress.repeat_done();
    }
    w.summary.row(&stats::summary_row(k, case, &samples))?;
    let entries: Vec<hlog::Entry> =
        delays.iter().map(|(repeat, node, delay)| hlog::Entry { repeat: *repeat, node, delay }).collect();
    let duration = std::time::Duration::from_secs_f64(case.duration);
    hlog::write(&out.join(format!("c{k:03}-delay.hlog")), &entries, duration)?;
    Ok(())
}

/// The run's exit: success, 130 when stopped (saying what finished), or the error with what finished.
fn finish_run(res: Result<()>, finished: usize, n: usize, progress: &Progress, out: &Path) -> Result<ExitCode> {
    match res {
        Ok(()) => {
            eprintln!(
                "mcblast run: {finished} case(s) done in {:.0} s: {}/cases.csv, {}/summary.csv",
                progress.start.elapsed().as_secs_f64(),
                out.display(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if is_stop(&e) || crate::sys::stop_requested() => {
            eprintln!(
                "mcblast run: stopped; {finished} of {n} case(s) finished, their results (and every finished repeat's rows) are in {}",
                out.display()
            );
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e.context(format!(
            "{finished} of {n} case(s) finished, their results are in {}",
            out.display()
        ))),
    }
}

/// With `deploy`, copies this build where it is missing; then checks every host.
fn prepare_hosts(h: &mut Hosts, deploy: bool) -> Result<()> {
    if deploy {
        deploy::deploy(h)?;
    }
    check_hosts(h)
}

/// Checks `mcblast --version` on every host (in parallel): one line per host
/// that is unreachable, lacks mcblast or runs another build, then an error.
fn check_hosts(h: &Hosts) -> Result<()> {
    let nodes: Vec<Node> = std::iter::once(&h.sender).chain(&h.receivers).map(Node::ssh).collect();
    eprintln!("mcblast run: checking mcblast {} on {} host(s) over ssh", crate::version::VERSION, nodes.len());
    let limit = Duration::from_secs(40);
    let bad: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = nodes.iter().map(|n| s.spawn(move || n.check_version(limit))).collect();
        hs.into_iter()
            .zip(&nodes)
            .filter_map(|(t, n)| match t.join() {
                Ok(Ok(None)) => None,
                Ok(Ok(Some(line))) => Some(line),
                Ok(Err(e)) => Some(format!("{}: {e:#}", n.name)),
                Err(_) => Some(format!("{}: the version check crashed", n.name)),
            })
            .collect()
    });
    check_stop()?;
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("{b}");
        }
        bail!("{} of {} host(s) not ready (see above); nothing was sent", bad.len(), nodes.len());
    }
    Ok(())
}

/// Where a case runs: its sender and receivers, and the lab (the injected
/// impairment, the bridges' group tables) when it is one.
struct Site<'a> {
    lab: Option<(&'a Lab, LabSpec)>,
    sender: Node,
    receivers: Vec<Node>,
}

impl<'a> Site<'a> {
    fn lab(lab: &'a Lab, spec: LabSpec) -> Site<'a> {
        let node = |n: &str| Node::lab(n, lab.ns_name(n));
        Site { sender: node(crate::lab::SENDER), receivers: lab.receivers().iter().map(|r| node(r)).collect(), lab: Some((lab, spec)) }
    }

    /// The sender and the case's first `receivers` receivers of the inventory.
    fn hosts(h: &Hosts, case: &Case) -> Site<'a> {
        Site {
            lab: None,
            sender: Node::ssh(&h.sender),
            receivers: h.receivers.iter().take(case.receivers as usize).map(Node::ssh).collect(),
        }
    }
}

fn case_label(c: &Case) -> String {
    if !c.on_lab {
        return format!("{} {} rx{} {}s", c.block, c.load.text, c.receivers, c.duration);
    }
    let i = &c.impair;
    let mut imp = format!("loss {}%", i.loss_pct);
    if i.loss_pct > 0.0 {
        imp += &format!(" {}", i.loss_mode.as_str());
        if i.burst > 1 {
            imp += &format!(" x{}", i.burst);
        }
    }
    if i.reorder_pct > 0.0 {
        imp += &format!(" reorder {}%", i.reorder_pct);
    }
    if i.duplicate_pct > 0.0 {
        imp += &format!(" dup {}%", i.duplicate_pct);
    }
    format!(
        "{} {} rx{} snoop {} q{}s {imp} {} {}s",
        c.block,
        c.load.text,
        c.receivers,
        if c.snooping { "on" } else { "off" },
        c.query_interval,
        c.placement.as_str(),
        c.duration
    )
}

/// `mcblast run`'s progress on stderr. On a terminal, an indicatif bar of
/// cases × repeats with the current case, elapsed time and ETA, redrawn
/// every second so it ticks during a repeat; anywhere else (a log, a pipe)
/// one plain line per step and no escape codes.
struct Progress {
    start: Instant,
    total: u32,
    done: u32,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(total: u32) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template("{wide_msg}\n[{elapsed_precise}] {wide_bar} {pos}/{len} runs  ETA {eta}")
                .expect("a valid template");
            let b = ProgressBar::new(u64::from(total)).with_style(style);
            b.enable_steady_tick(Duration::from_secs(1));
            b
        });
        Progress { start: Instant::now(), total, done: 0, bar }
    }

    fn show(&self, k: usize, n: usize, rep: u32, reps: u32, what: &str) {
        let step = format!("case {k}/{n} repeat {rep}/{reps}: {what}");
        match &self.bar {
            Some(b) => b.set_message(step),
            None => {
                let el = self.start.elapsed().as_secs_f64();
                let eta = match self.done {
                    0 => "?".to_string(),
                    d => format!("{:.0} s", el / f64::from(d) * f64::from(self.total - d)),
                };
                eprintln!("mcblast run: {step} (elapsed {el:.0} s, ETA {eta})");
            }
        }
    }

    fn repeat_done(&mut self) {
        self.done += 1;
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `cases.csv` and `summary.csv`, a row written and flushed as soon as it is known.
struct Writer {
    cases: csvfile::CsvOut,
    summary: csvfile::CsvOut,
}

impl Writer {
    fn create(dir: &Path) -> Result<Writer> {
        Ok(Writer {
            cases: csvfile::CsvOut::create(&dir.join("cases.csv"), &stats::cases_header())?,
            summary: csvfile::CsvOut::create(&dir.join("summary.csv"), &stats::summary_header())?,
        })
    }
}

fn json_lines(node: &str, text: &str) -> Result<Vec<Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{node}: not a JSON line: {l}")))
        .collect()
}

fn fmt_s(x: f64) -> String {
    format!("{x}")
}

/// One run's fixed facts: its ids, the plan's group and port as arguments, the receivers' bound.
struct RunCtx<'a> {
    plan: &'a TestPlan,
    site: &'a Site<'a>,
    case: &'a Case,
    k: usize,
    rep: u32,
    run_id: u32,
    group: String,
    port: String,
    bound: f64,
}

impl RunCtx<'_> {
    fn ctx(&self, what: &str) -> String {
        format!("case {} repeat {}: {what}", self.k, self.rep)
    }

    fn iperf2(&self) -> Option<&[String]> {
        match &self.plan.sender {
            Sender::Iperf2 { args } => Some(args),
            Sender::Mcblast => None,
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn iface(n: &Node) -> Vec<String> {
    n.interface.iter().flat_map(|i| ["--interface".to_string(), i.clone()]).collect()
}

/// One repeat of one case: returns the sender's result and (node, result) per receiver.
fn one_run(
    plan: &TestPlan,
    site: &Site,
    case: &Case,
    k: usize,
    rep: u32,
    out: &Path,
) -> Result<(stats::SendResult, Vec<(String, RecvResult)>)> {
    // a run id per run: time-derived, low bit toggled for the warm-up
    let run_id = (SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u32).unwrap_or(1) | 1) ^ (k as u32) << 8;
    let (group, port) = (plan.group.to_string(), plan.port.to_string());
    let bound = plan.warmup + case.duration + 30.0;
    let r = RunCtx { plan, site, case, k, rep, run_id, group, port, bound };
    if rep == 1 {
        preflight_case(&r, out)?;
    }
    // iperf2 has no run id to tell a warm-up from the measured run: its warm-up runs before the receivers start
    if r.iperf2().is_some() && plan.warmup > 0.0 {
        send_iperf2(&r, "warm-up sender", plan.warmup, None)?;
    }
    let recvs = start_receivers(&r)?;
    if let Some((lab, spec)) = &site.lab
        && spec.base.snooping
    {
        lab.wait_members(plan.group, &lab.receivers(), Duration::from_secs(20)).with_context(|| r.ctx("waiting for IGMP membership"))?;
    }
    check_stop()?;
    if r.iperf2().is_none() && plan.warmup > 0.0 {
        send_mcblast(&r, "warm-up sender", run_id ^ 1, plan.warmup, None)?;
    }
    // the case's impairment on every receiver's port; removed when the guard
    // goes, also on an error or a stop
    let mut impaired = match &site.lab {
        Some((lab, _)) => Some(Impaired::install(lab, case.impair_config()).with_context(|| r.ctx("injecting the impairment"))?),
        None => None,
    };
    let (base, raw) = (format!("c{k:03}-r{rep}"), out.join("raw"));
    let fabric_before = fabric_dropped(&r)?;
    let (s, pick) = match r.iperf2() {
        Some(_) => {
            let rep = send_iperf2(&r, "sender", case.duration, Some(&raw.join(format!("{base}-sender.txt"))))?;
            // the receivers' flow of this client: run = the destination port, flow = its source port
            (rep.send, FlowPick { run: u32::from(plan.port), flow: rep.source_port.map(u32::from) })
        }
        None => {
            let s = send_mcblast(&r, "sender", run_id, case.duration, Some(&raw.join(format!("{base}-sender.jsonl"))))?;
            (s, FlowPick { run: run_id, flow: None })
        }
    };
    let mut rows = collect_receivers(&r, recvs, &pick, &raw, &base)?;
    let fabric = fabric_dropped(&r)?.zip(fabric_before).map(|(after, before)| after.saturating_sub(before));
    for (_, row) in &mut rows {
        row.fabric_dropped = fabric;
    }
    // the receivers saw the flow's end marker, so it has passed the ports:
    // the counts are final
    if let Some(imp) = impaired.take() {
        let counts = imp.finish().with_context(|| r.ctx("removing the impairment"))?;
        for (node, r) in &mut rows {
            r.injected = Some(counts.iter().find(|(l, _)| l == node).map(|(_, i)| *i).unwrap_or_default());
        }
    }
    Ok((s, rows))
}

/// What the lab fabric's TGW limits have dropped so far (all flows); None without the limits or off the lab.
fn fabric_dropped(r: &RunCtx) -> Result<Option<u64>> {
    match &r.site.lab {
        Some((lab, _)) if r.plan.tgw_limits => {
            Ok(Some(lab.tgw_dropped().with_context(|| r.ctx("reading the TGW limits' counters"))?))
        }
        _ => Ok(None),
    }
}

/// Preflight on every node before the case's first run: raw/cNNN-preflight-NODE.json, warnings once, a fail
/// stops the case.
fn preflight_case(r: &RunCtx, out: &Path) -> Result<()> {
    let (site, case) = (r.site, r.case);
    let mut pf = strings(&["-g", &r.group, "-p", &r.port, "-l", &case.load.length.to_string()]);
    pf.extend(case.load.rate_bps.map(|r| ["-b".to_string(), format!("{r}")]).into_iter().flatten());
    if site.lab.as_ref().is_some_and(|(_, spec)| spec.igmp.version == 2) {
        pf.extend(strings(&["--igmp-version", "2"]));
    }
    fn check<'n>(n: &'n Node, role: &'static str) -> crate::check::preflight::CheckNode<'n> {
        crate::check::preflight::CheckNode {
            name: n.name.clone(),
            role,
            interface: n.interface.clone(),
            command: Box::new(move |a: &[String]| n.command(a)),
        }
    }
    let nodes: Vec<_> =
        std::iter::once(check(&site.sender, "send")).chain(site.receivers.iter().map(|r| check(r, "recv"))).collect();
    let tag = format!("c{:03}", r.k);
    crate::check::preflight::before_case_on(&nodes, &pf, &out.join("raw"), &tag).with_context(|| r.ctx("preflight"))
}

/// Starts `mcblast recv --json` on every receiver and waits for each one's
/// begin line (printed after its join). With an iperf2 sender they count
/// iperf2's datagrams (`--format iperf2`): the lab's namespaces share this
/// host's clock (`--sender-clock shared`, delay trusted), real hosts' clocks
/// are not known to be synchronised (`unknown`).
fn start_receivers(r: &RunCtx) -> Result<Vec<Proc>> {
    let mut recvs = Vec::new();
    for node in &r.site.receivers {
        let mut argv = strings(&["recv", transport::STOP_ON_EOF]);
        argv.extend(iface(node));
        let bound = fmt_s(r.bound);
        argv.extend(strings(&["--json", "-i", RECV_INTERVAL, "-g", &r.group, "-p", &r.port, "--expect-flows", "1", "-t", &bound]));
        let id = match r.iperf2() {
            Some(_) => {
                let clock = if r.site.lab.is_some() { "shared" } else { "unknown" };
                argv.extend(strings(&["--format", "iperf2", "--sender-clock", clock]));
                // no run id on the command line: over ssh it stops by stdin EOF and -t, not by pkill
                None
            }
            None => {
                argv.extend(strings(&["--run-id", &r.run_id.to_string()]));
                Some(r.run_id)
            }
        };
        recvs.push(Proc::spawn(node, &argv, id)?);
    }
    for p in &mut recvs {
        wait_begin(r, p)?;
    }
    Ok(recvs)
}

/// A receiver's first line, which must be its begin line.
fn wait_begin(r: &RunCtx, p: &mut Proc) -> Result<()> {
    let first = p.first_line(Duration::from_secs(60)).with_context(|| r.ctx("waiting for the begin line"))?;
    let node = p.node.clone();
    let Some(first) = first else {
        let (code, _, err) = p.wait(Duration::from_secs(10))?;
        bail!("{}", r.ctx(&format!("{node}: recv did not start (exit {code:?}): {}", err.trim())));
    };
    let begin: Value = serde_json::from_str(&first)
        .map_err(|_| anyhow::anyhow!("{}", r.ctx(&format!("{node}: recv did not start (first line {:?})", first.trim()))))?;
    if begin["type"] != "begin" {
        bail!("{}", r.ctx(&format!("{node}: recv's first line is not begin: {}", first.trim())));
    }
    Ok(())
}

/// `mcblast send` of `secs` under run id `id` on the sender; its JSON Lines go to `raw` when given.
fn send_mcblast(r: &RunCtx, role: &str, id: u32, secs: f64, raw: Option<&Path>) -> Result<stats::SendResult> {
    let case = r.case;
    let mut v = strings(&["send", transport::STOP_ON_EOF]);
    v.extend(iface(&r.site.sender));
    v.extend(strings(&[
        "--json", "-i", "0", "-g", &r.group, "-p", &r.port, "-l", &case.load.length.to_string(), "-t", &fmt_s(secs),
        "--run-id", &id.to_string(), "--engine", &r.plan.engine,
    ]));
    if let Some(b) = case.load.rate_bps {
        v.extend(["-b".to_string(), format!("{b}")]);
    }
    let (code, sout, serr) = Proc::spawn(&r.site.sender, &v, Some(id))?.finish(Duration::from_secs_f64(secs + 30.0))?;
    if let Some(path) = raw {
        std::fs::write(path, &sout)?;
    }
    if code != Some(0) {
        bail!("{}", r.ctx(&format!("{role} failed: {}", serr.trim())));
    }
    stats::parse_send(&json_lines(role, &sout)?).with_context(|| r.ctx(role))
}

/// The iperf2 client for `secs` on the sender (`iperf -c GROUP -u ...`, TTL 1
/// as `mcblast send`'s default); its output (stdout, then stderr) goes to `raw` when given.
fn send_iperf2(r: &RunCtx, role: &str, secs: f64, raw: Option<&Path>) -> Result<iperf2::ClientReport> {
    let argv = iperf2::client_args(&r.group, &r.port, 1, r.case, secs, r.iperf2().unwrap_or_default());
    let (code, sout, serr) =
        Proc::spawn_program(&r.site.sender, iperf2::PROGRAM, &argv)?.finish(Duration::from_secs_f64(secs + 30.0))?;
    if let Some(path) = raw {
        std::fs::write(path, format!("$ {} {}\n{sout}{serr}", iperf2::PROGRAM, argv.join(" ")))?;
    }
    if code != Some(0) {
        bail!("{}", r.ctx(&format!("{role} (iperf client) failed (exit {code:?}): {}", serr.trim())));
    }
    iperf2::parse_client(&sout).with_context(|| r.ctx(&format!("{role} (iperf client)")))
}

/// Waits for every receiver's end, writes its raw lines, reads its flow.
fn collect_receivers(r: &RunCtx, recvs: Vec<Proc>, pick: &FlowPick, raw: &Path, base: &str) -> Result<Vec<(String, RecvResult)>>
{
    let mut rows = Vec::new();
    for p in recvs {
        let node = p.node.clone();
        let (code, text, err) = p.finish(Duration::from_secs_f64(r.bound + 10.0))?;
        std::fs::write(raw.join(format!("{base}-{node}.jsonl")), &text)?;
        if !matches!(code, Some(0) | Some(1)) {
            bail!("{}", r.ctx(&format!("{node}: recv failed: {}", err.trim())));
        }
        let res = stats::parse_recv_flows(&json_lines(&node, &text)?, pick).with_context(|| r.ctx(&node))?;
        rows.push((node, res));
    }
    Ok(rows)
}

/// The impairment of one run on the receivers' ports of the lab; what is
/// still attached when it is dropped is removed.
struct Impaired<'a> {
    lab: &'a Lab,
    links: Vec<String>,
}

impl<'a> Impaired<'a> {
    /// Installs `cfg` on every receiver's port (nothing when None: the
    /// counts are then all 0). A link left impaired by an earlier,
    /// interrupted process is cleared first.
    fn install(lab: &'a Lab, cfg: Option<ImpairConfig>) -> Result<Impaired<'a>> {
        let mut g = Impaired { lab, links: Vec::new() };
        let receivers = lab.receivers();
        for l in lab.impaired_links().into_iter().filter(|l| receivers.contains(l)) {
            lab.impair_clear(&l).with_context(|| format!("clearing a stale impairment on {l}"))?;
        }
        if let Some(cfg) = cfg {
            for r in receivers {
                lab.impair(&r, cfg)?;
                g.links.push(r);
            }
        }
        Ok(g)
    }

    /// Removes the impairment from every port; its final counts per receiver.
    fn finish(mut self) -> Result<Vec<(String, stats::Injected)>> {
        let mut out = Vec::new();
        let mut gso_passed = 0;
        // a link leaves the list only once cleared: on an error the guard tries the rest
        while let Some(l) = self.links.last().cloned() {
            let rep = self.lab.impair_clear(&l)?;
            self.links.pop();
            gso_passed += rep.gso_passed;
            // kept from the receiver: dropped, held when the flow ended, held now
            let dropped = rep.dropped + rep.reorder_lost + rep.held;
            out.push((l, stats::Injected { dropped, duplicated: rep.duplicated, reordered: rep.reordered }));
        }
        if gso_passed > 0 {
            // The injected columns stay exact (what the program did); say why they are short.
            eprintln!(
                "\nmcblast run: {gso_passed} datagrams crossed the impairment inside UDP GSO batches, untouched: set engine = \"mmsg\" in the plan to impair every datagram"
            );
        }
        Ok(out)
    }
}

impl Drop for Impaired<'_> {
    fn drop(&mut self) {
        for l in self.links.drain(..) {
            if let Err(e) = self.lab.impair_clear(&l) {
                eprintln!("mcblast run: removing the impairment on {l}: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_utc() {
        assert_eq!(super::timestamp(0), "19700101T000000Z");
        assert_eq!(super::timestamp(1_700_000_000), "20231114T221320Z");
        assert_eq!(super::timestamp(951_782_400), "20000229T000000Z");
    }
}
