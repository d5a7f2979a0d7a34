//! `mcblast run` on the lab: the real binary runs plan files in throwaway
//! namespaces (own prefix through MCBLAST_LAB_PREFIX) and its CSVs are
//! checked against what the senders sent and what the lab's impairment
//! program (`mcblast lab impair`, replayed here by its decision function)
//! did; a run killed with SIGKILL mid-case leaves nothing (its reaper).
//! Privileged: skipped with a message when not root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::csv::{csv, num};
use common::{BIN, serial};
use mcblast::lab::impair::lab_dir;
use mcblast_common::maps::{FlowKey, ImpairConfig, ImpairState, ImpairStats};

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and XDP";

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcblast-run-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes the lab of a prefix when the test ends (also on panic), in case the run left it.
struct LabGone(String);
impl Drop for LabGone {
    fn drop(&mut self) {
        let _ = mcblast::lab::down(&self.0);
    }
}

fn run(plan: &Path, out: &Path, prefix: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("run")
        .arg(plan)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("MCBLAST_LAB_PREFIX", prefix)
        .output()
        .expect("run mcblast")
}

#[test]
fn unknown_key_is_one_line_naming_key_and_file() {
    let d = tmpdir("badkey");
    let plan = d.join("bad.toml");
    std::fs::write(&plan, "duration = 2\n[[matrix]]\nlaod = [\"1M/512\"]\n").unwrap();
    let o = run(&plan, &d.join("out"), "mcbtbad-", &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.toml:3") && err.contains("laod"), "{err}");
    assert!(!d.join("out").exists(), "nothing is written for a bad plan");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn deploy_needs_hosts() {
    let d = tmpdir("deploylab");
    let plan = d.join("lab.toml");
    std::fs::write(&plan, "duration = 2\n").unwrap();
    let o = run(&plan, &d.join("out"), "mcbtdeploy-", &["--deploy"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("lab.toml: --deploy copies mcblast to the hosts of a [hosts] plan"), "{err}");
    assert!(err.contains("remove --deploy"), "{err}");
    assert!(!d.join("out").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn two_cases_two_repeats_injected_loss_exact() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let prefix = format!("mcbt{}run-", std::process::id());
    let _gone = LabGone(prefix.clone());
    let d = tmpdir("tiny");
    let plan = d.join("tiny.toml");
    std::fs::write(
        &plan,
        "duration = 2\nrepeats = 2\n[lab]\nhosts = 3\nper_host = 1\n\
         [[matrix]]\nname = \"tiny\"\nload = [\"10M/1470\"]\nloss = [0, 5]\n",
    )
    .unwrap();
    let out = d.join("out");
    let o = run(&plan, &out, &prefix, &[]);
    assert!(o.status.success(), "mcblast run failed: {}", String::from_utf8_lossy(&o.stderr));
    // stderr is a pipe: plain progress lines, no terminal escape codes
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains(['\x1b', '\r']), "escape codes in piped output: {err:?}");
    assert!(err.lines().any(|l| l.starts_with("mcblast run: case 2/2 repeat 2/2: ")), "{err}");
    let (_, rows) = csv(&out.join("cases.csv"));
    assert_eq!(rows.len(), 2 * 2 * 3, "case x repeat x receiver");
    for r in &rows {
        let (sent, received, lost) = (num(r, "sent"), num(r, "received"), num(r, "lost"));
        assert!(sent > 1000, "{r:?}");
        let want = match r["loss_injected_pct"].as_str() {
            "0" => 0,
            // the 20th, 40th, ... data datagram
            "5" => sent / 20,
            x => panic!("unexpected loss {x}"),
        };
        assert_eq!(lost, want, "{r:?}");
        assert_eq!(received, sent - want, "{r:?}");
        assert_eq!(r["path_lost"], want.to_string(), "the waterfall puts it on the path: {r:?}");
        assert_eq!(
            (num(r, "injected_dropped"), num(r, "injected_duplicated"), num(r, "injected_reordered")),
            (want, 0, 0),
            "the program's counts: {r:?}"
        );
        assert_eq!((num(r, "duplicates"), num(r, "reordered")), (0, 0), "{r:?}");
        // delay and IPDV percentiles, from the receiver's histogram: ordered
        let us = |k: &str| r[k].parse::<f64>().unwrap_or_else(|_| panic!("{k}: {r:?}"));
        let ps = ["p50", "p90", "p99", "p999", "p9999", "max"];
        let d: Vec<f64> = ps.iter().map(|p| us(&format!("delay_{p}_us"))).collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "{d:?} {r:?}");
        assert!(0.0 < us("delay_p50_us") && us("ipdv_p50_us") <= us("ipdv_p99_us"), "{r:?}");
        // no seed without a random part; no mode or burst without loss
        let params = if want == 0 { ("", "", "") } else { ("every", "1", "") };
        assert_eq!((r["loss_mode"].as_str(), r["burst"].as_str(), r["seed"].as_str()), params, "{r:?}");
    }
    let reps: Vec<(&str, &str, &str)> =
        rows.iter().map(|r| (r["case"].as_str(), r["repeat"].as_str(), r["receiver"].as_str())).collect();
    for c in ["1", "2"] {
        for rep in ["1", "2"] {
            for n in ["r1", "r2", "r3"] {
                assert!(reps.contains(&(c, rep, n)), "missing case {c} repeat {rep} {n}");
                assert!(out.join("raw").join(format!("c00{c}-r{rep}-{n}.jsonl")).is_file());
            }
            assert!(out.join("raw").join(format!("c00{c}-r{rep}-sender.jsonl")).is_file());
        }
    }
    let (_, sum) = csv(&out.join("summary.csv"));
    assert_eq!(sum.len(), 2);
    assert_eq!((sum[0]["loss_injected_pct"].as_str(), sum[1]["loss_injected_pct"].as_str()), ("0", "5"));
    for s in &sum {
        assert_eq!((num(s, "repeats"), num(s, "samples")), (2, 6));
        assert!(!s["throughput_mbps_sd"].is_empty() && !s["sender_cpu_s_sd"].is_empty());
        // percentiles of the histograms merged over receivers and repeats: ordered
        let p: Vec<f64> = ["delay_p50_us", "delay_p90_us", "delay_p99_us", "delay_p999_us", "delay_p9999_us"]
            .iter()
            .chain(&["delay_max_us"])
            .map(|k| s[*k].parse().unwrap_or_else(|_| panic!("{k}: {s:?}")))
            .collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
    }
    // the merged maximum is exactly the largest of the case's receivers and repeats
    for (i, c) in ["1", "2"].iter().enumerate() {
        let top = rows.iter().filter(|r| r["case"] == *c).map(|r| r["delay_max_us"].parse::<f64>().unwrap());
        assert_eq!(sum[i]["delay_max_us"].parse::<f64>().unwrap(), top.fold(0.0, f64::max), "case {c}");
    }
    // each case's delays as an HdrHistogram interval log: an interval per repeat and receiver
    for c in ["1", "2"] {
        let log = std::fs::read_to_string(out.join(format!("c00{c}-delay.hlog"))).expect("the case's .hlog");
        assert_eq!(log.lines().filter(|l| l.starts_with("Tag=")).count(), 2 * 3, "{log}");
    }
    assert_eq!(sum[0]["loss_pct_max"], "0.000");
    // 5 % injected: ⌊sent / 20⌋ of sent, between 5 − 100/sent % and 5 %
    let mean: f64 = sum[1]["loss_pct_mean"].parse().unwrap();
    assert!((4.8..=5.0).contains(&mean), "{mean}");
    assert_eq!((sum[0]["injected_dropped_mean"].as_str(), sum[0]["injected_reordered_mean"].as_str()), ("0.000", "0.000"));
    let mean_dropped: f64 = rows.iter().filter(|r| r["case"] == "2").map(|r| num(r, "lost") as f64).sum::<f64>() / 6.0;
    assert_eq!(sum[1]["injected_dropped_mean"], format!("{mean_dropped:.3}"));
    assert!(mcblast::lab::Lab::open(&prefix).is_err(), "the run removed its lab");
    assert!(!lab_dir(&prefix).exists(), "no impairment left pinned");
    let _ = std::fs::remove_dir_all(&d);
}

/// `preset = "tgw"` in a plan enforces TGW's limits in the lab's fabric: a flat-out flow of 8192-byte
/// datagrams is held to 1 Gbit/s at the switch, before replication, so both receivers lose the same datagrams
/// on the path.
#[test]
fn tgw_preset_plan_enforces_the_flow_rate_limit() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let prefix = format!("mcbt{}tgw-", std::process::id());
    let _gone = LabGone(prefix.clone());
    let d = tmpdir("tgw");
    let _rm = common::TempDir(d.clone()); // removed also when an assertion fails
    let plan = d.join("tgw.toml");
    std::fs::write(
        &plan,
        "duration = 2\nrepeats = 1\n[lab]\npreset = \"tgw\"\nhosts = 2\nper_host = 1\n\
         [[matrix]]\nname = \"flat\"\nload = [\"max/8192\"]\n",
    )
    .unwrap();
    let out = d.join("out");
    let o = run(&plan, &out, &prefix, &[]);
    assert!(o.status.success(), "mcblast run failed: {}", String::from_utf8_lossy(&o.stderr));
    let (_, rows) = csv(&out.join("cases.csv"));
    assert_eq!(rows.len(), 2);
    let lost: Vec<u64> = rows.iter().map(|r| num(r, "path_lost")).collect();
    assert!(lost[0] > 0 && lost[0] == lost[1], "the switch's bucket drops before replication: {rows:?}");
    for r in &rows {
        assert_eq!(num(r, "path_lost"), num(r, "fabric_dropped"), "the path loss is what the fabric counted: {r:?}");
    }
    // nftables' byte bucket holds one second of its rate (plus the burst), full when the flow starts: over D
    // seconds at most (D + 1) s of 1 Gbit/s of IP bytes pass, of which 8192 / 8220 is payload.
    let bound = 1000.0 * 3.0 / 2.0 * 8192.0 / 8220.0 * 1.01;
    for r in &rows {
        let (mbps, sent): (f64, f64) = (r["throughput_mbps"].parse().unwrap(), r["sender_rate_mbps"].parse().unwrap());
        assert!(mbps <= bound && mbps < sent, "held to 1 Gbit/s per flow: {mbps} Mbit/s of {sent}: {r:?}");
    }
    assert!(mcblast::lab::Lab::open(&prefix).is_err(), "the run removed its lab");
}

#[test]
fn seed_matrix_quick() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let prefix = format!("mcbt{}seed-", std::process::id());
    let _gone = LabGone(prefix.clone());
    let d = tmpdir("seed");
    let out = d.join("out");
    let plan = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-matrix.toml");
    let o = run(&plan, &out, &prefix, &["--quick"]);
    assert!(o.status.success(), "mcblast run --quick failed: {}", String::from_utf8_lossy(&o.stderr));
    let (_, sum) = csv(&out.join("summary.csv"));
    assert_eq!(sum.len(), 12);
    let (_, rows) = csv(&out.join("cases.csv"));
    let receivers: u64 = sum.iter().map(|s| num(s, "receivers")).sum();
    assert_eq!(rows.len() as u64, 2 * receivers, "2 repeats x every receiver of every case");
    for r in rows.iter().filter(|r| r["loss_injected_pct"] != "0") {
        let n = if r["loss_injected_pct"] == "1" { 100 } else { 20 };
        assert_eq!(num(r, "lost"), num(r, "sent") / n, "{r:?}");
        assert_eq!(num(r, "injected_dropped"), num(r, "sent") / n, "{r:?}");
    }
    assert!(sum.iter().any(|s| s["snooping"] == "off") && sum.iter().any(|s| s["placement"] == "same-host"));
    assert!(mcblast::lab::Lab::open(&prefix).is_err(), "the run removed its lab");
    let _ = std::fs::remove_dir_all(&d);
}

/// `sender = "iperf2"`: the users' own iperf2 client sends (10 Mbit/s, 1 s)
/// to 3 mcblast receivers; every receiver counts exactly the client's data
/// datagrams (its `Sent N` less the 2 it counts beyond them), no loss, and
/// the client's output is kept in raw/.
#[test]
fn iperf2_sender_one_case() {
    if common::skip(NEEDS) {
        return;
    }
    if !Path::new("/usr/bin/iperf").exists() && Command::new("iperf").arg("-v").output().is_err() {
        common::skipped("needs iperf2 (`iperf`, Debian package iperf)");
        return;
    }
    let _s = serial();
    let prefix = format!("mcbt{}ip2-", std::process::id());
    let _gone = LabGone(prefix.clone());
    let d = tmpdir("iperf2");
    let plan = d.join("iperf2.toml");
    let text = "sender = \"iperf2\"\niperf2_args = [\"-e\"]\nduration = 1\nrepeats = 1\n[lab]\nhosts = 3\nper_host = 1\n\
                [[matrix]]\nname = \"iperf2\"\nload = [\"10M/1470\"]\n";
    std::fs::write(&plan, text).unwrap();
    let out = d.join("out");
    let mut cmd = common::mcblast_run(&plan, &out, &prefix);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let st = common::wait_bounded(&mut child, Duration::from_secs(180), Duration::from_millis(100), "mcblast run took over 180 s");
    let err = err.join().unwrap();
    assert!(st.success(), "mcblast run failed: {err}");
    let client = std::fs::read_to_string(out.join("raw/c001-r1-sender.txt")).expect("the client's output in raw/");
    let reported: u64 = client
        .lines()
        .find_map(|l| l.split_once("Sent ")?.1.strip_suffix(" datagrams")?.parse().ok())
        .unwrap_or_else(|| panic!("no Sent line: {client}"));
    let (_, rows) = csv(&out.join("cases.csv"));
    assert_eq!(rows.len(), 3, "one row per receiver");
    for r in &rows {
        assert_eq!(num(r, "sent"), reported - 2, "the client's data datagrams: {r:?}");
        assert!(num(r, "sent") > 500, "{r:?}");
        assert_eq!((num(r, "received"), num(r, "lost")), (num(r, "sent"), 0), "{r:?}");
        assert_eq!((num(r, "duplicates"), num(r, "reordered")), (0, 0), "{r:?}");
        let mbps: f64 = r["throughput_mbps"].parse().unwrap_or_else(|_| panic!("{r:?}"));
        assert!((9.0..=11.5).contains(&mbps), "{r:?}");
    }
    let (_, sum) = csv(&out.join("summary.csv"));
    assert_eq!((sum.len(), sum[0]["loss_pct_max"].as_str()), (1, "0.000"));
    for n in ["r1", "r2", "r3"] {
        let raw = std::fs::read_to_string(out.join("raw").join(format!("c001-r1-{n}.jsonl"))).unwrap();
        assert!(raw.contains("\"format\":\"iperf2\""), "{n}: {raw}");
    }
    assert!(mcblast::lab::Lab::open(&prefix).is_err(), "the run removed its lab");
    assert_eq!(common::namespaces(&prefix), Default::default(), "no namespace left");
    let _ = std::fs::remove_dir_all(&d);
}

/// A plan with `lab.fabric = "ovn"` runs on the real OVN (its lab directory and
/// NB/SB daemons exist while the run runs, OVN's settings from the plan): one case,
/// 10 Mbit/s for 1 s to 2 hosts x 1 receiver, every receiver exact; the run removes
/// its OVN lab.
#[test]
fn ovn_fabric_one_case() {
    if common::skip(NEEDS) {
        return;
    }
    if !mcblast::lab::ovn::installed() {
        common::skipped("OVN is not installed (openvswitch-switch, ovn-central, ovn-host): run cargo xtask setup");
        return;
    }
    let _s = serial();
    let prefix = format!("mcbt{}rovn-", std::process::id());
    let _gone = LabGone(prefix.clone());
    let d = tmpdir("ovn");
    let plan = d.join("ovn.toml");
    let text = "duration = 1\nrepeats = 1\n[lab]\nfabric = \"ovn\"\nhosts = 2\nper_host = 1\nquery_interval = 20\n\
                [[matrix]]\nname = \"ovn\"\nload = [\"10M/1470\"]\n";
    std::fs::write(&plan, text).unwrap();
    let out = d.join("out");
    let mut cmd = common::mcblast_run(&plan, &out, &prefix);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    // While it runs: an OVN lab of this prefix, with the plan's query interval on ls0.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut settings = None;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        if settings.is_none()
            && let Ok(Some((_, s))) = mcblast::lab::ovn::open_spec(&prefix)
        {
            settings = Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (limit, poll) = (Duration::from_secs(5), Duration::from_millis(100));
    let st = common::wait_bounded(&mut child, limit, poll, "mcblast run took over 180 s");
    let err = err.join().unwrap();
    assert!(st.success(), "mcblast run failed: {err}");
    let s = settings.expect("the run built an OVN lab");
    assert_eq!((s.snoop, s.querier, s.query_interval_s, s.idle_timeout_s), (true, true, 20, 50), "{s:?}");
    let (_, rows) = csv(&out.join("cases.csv"));
    assert_eq!(rows.len(), 2, "one row per receiver");
    for r in &rows {
        assert!(num(r, "sent") > 500, "{r:?}");
        assert_eq!((num(r, "received"), num(r, "lost"), num(r, "duplicates")), (num(r, "sent"), 0, 0), "{r:?}");
    }
    assert!(mcblast::lab::Lab::open(&prefix).is_err(), "the run removed its lab");
    assert!(!mcblast::lab::ovn::lab_dir(&prefix).exists(), "the run removed its OVN daemons' directory");
    assert_eq!(common::namespaces(&prefix), Default::default(), "no namespace left");
    let _ = std::fs::remove_dir_all(&d);
}

/// What the impairment program decides for `count` data datagrams of one
/// flow followed by its end marker; the counts `mcblast run` reports.
fn replay(cfg: &ImpairConfig, count: u64) -> (u64, u64, u64) {
    let mut s = ImpairState::new(cfg);
    let mut st = ImpairStats::default();
    let key = FlowKey::default();
    for _ in 0..count {
        s.on_data(cfg, &mut st, &key, 1470, false);
    }
    s.on_end(&mut st, &key);
    (st.dropped + st.reorder_lost, st.duplicated, st.reordered)
}

#[test]
fn random_loss_reorder_and_duplicates_exact_and_repeatable() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let prefix = format!("mcbt{}imp-", std::process::id());
    let _gone = LabGone(prefix.clone());
    let d = tmpdir("impair");
    let plan = d.join("impair.toml");
    let text = "duration = 1\nrepeats = 2\n[lab]\nhosts = 3\nper_host = 1\n\
                [[matrix]]\nname = \"impair\"\nload = [\"10M/1470\"]\nloss = [3]\nloss_mode = [\"random\"]\n\
                reorder = [4]\nduplicate = [5]\nseed = [11]\n";
    std::fs::write(&plan, text).unwrap();
    let cfg = mcblast::run::plan::parse(text, "impair.toml", None, "x-").unwrap().cases[0].impair_config().unwrap();
    assert_eq!((cfg.loss_ppm, cfg.reorder_ppm, cfg.duplicate_ppm, cfg.seed, cfg.every), (30_000, 40_000, 50_000, 11, 0));
    let out = d.join("out");
    let o = run(&plan, &out, &prefix, &[]);
    assert!(o.status.success(), "mcblast run failed: {}", String::from_utf8_lossy(&o.stderr));
    let (_, rows) = csv(&out.join("cases.csv"));
    assert_eq!(rows.len(), 2 * 3, "repeat x receiver");
    let mut by_sent: std::collections::HashMap<u64, (u64, u64, u64)> = Default::default();
    for r in &rows {
        let sent = num(r, "sent");
        assert!(sent > 500, "{r:?}");
        let injected = (num(r, "injected_dropped"), num(r, "injected_duplicated"), num(r, "injected_reordered"));
        assert_eq!(injected, replay(&cfg, sent), "the seed's decisions for {sent} datagrams: {r:?}");
        assert!(injected.0 > 0 && injected.1 > 0 && injected.2 > 0, "{r:?}");
        // the receiver's kernel counter saw exactly what was done to its
        // datagrams (received counts the duplicates' second arrivals too)
        assert_eq!(
            (num(r, "lost"), num(r, "duplicates"), num(r, "reordered"), num(r, "received")),
            (injected.0, injected.1, injected.2, sent - injected.0 + injected.1),
            "{r:?}"
        );
        let loss_pct: f64 = r["loss_pct"].parse().unwrap();
        assert_eq!(format!("{loss_pct:.4}"), format!("{:.4}", 100.0 * injected.0 as f64 / sent as f64), "lost / sent: {r:?}");
        assert_eq!((r["loss_mode"].as_str(), r["seed"].as_str(), r["reorder_injected_pct"].as_str()), ("random", "11", "4"));
        // same seed, same datagrams: the same counts (receivers and repeats alike)
        assert_eq!(*by_sent.entry(sent).or_insert(injected), injected, "{r:?}");
    }
    let (_, sum) = csv(&out.join("summary.csv"));
    let mean = rows.iter().map(|r| num(r, "injected_reordered") as f64).sum::<f64>() / 6.0;
    assert_eq!(sum[0]["injected_reordered_mean"], format!("{mean:.3}"));
    assert!(mcblast::lab::Lab::open(&prefix).is_err(), "the run removed its lab");
    assert!(!lab_dir(&prefix).exists(), "no impairment left pinned");
    let _ = std::fs::remove_dir_all(&d);
}

/// The processes under `pid` (children, their children, …), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let ppid = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        let children: Vec<u32> = all.iter().copied().filter(|&p| ppid(p) == Some(parent) && !out.contains(&p)).collect();
        out.extend(children);
        i += 1;
    }
    out.remove(0);
    out
}

fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ")
}

/// Alive and not a zombie (an orphan's zombie waits for init to reap it).
fn alive(pid: u32) -> bool {
    mcblast::sys::proc::state_and_group(pid).is_some_and(|(s, _)| s != 'Z')
}

/// `kill -9` of `mcblast run` while the sender sends, with an impairment
/// attached: within 10 s its reaper has stopped the receivers and the
/// sender, removed the lab's namespaces and pinned programs, and exited.
#[test]
fn killed_run_leaves_nothing() {
    if common::skip(NEEDS) {
        return;
    }
    let _s = serial();
    let prefix = format!("mcbt{}kill-", std::process::id());
    let _gone = LabGone(prefix.clone());
    let d = tmpdir("kill");
    let plan = d.join("kill.toml");
    let text = "duration = 60\nrepeats = 1\n[lab]\nhosts = 3\nper_host = 1\n[[matrix]]\nload = [\"1M/512\"]\nloss = [5]\n";
    std::fs::write(&plan, text).unwrap();
    let mut run = common::mcblast_run(&plan, &d.join("out"), &prefix);
    let mut run = run.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = run.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    // mid-case: the measured send runs (after the joins and the impairment)
    let sender_ns = format!("{prefix}sender");
    let deadline = Instant::now() + Duration::from_secs(90);
    let procs = loop {
        let procs = descendants(run.id());
        if procs.iter().any(|&p| cmdline(p).contains(" send ")) && lab_dir(&prefix).exists() {
            break procs;
        }
        if let Some(st) = run.try_wait().unwrap() {
            panic!("the run ended early ({st}): {}", err.join().unwrap());
        }
        assert!(Instant::now() < deadline, "the send did not start in {sender_ns}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let reaper = procs.iter().copied().find(|&p| cmdline(p).contains(" run-reaper ")).expect("a reaper");
    assert_eq!(procs.iter().filter(|&&p| cmdline(p).contains(" recv ")).count(), 3, "{procs:?}");
    // SAFETY: kill(2) with the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let st = run.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL));
    let left = loop {
        let left: Vec<String> = procs.iter().filter(|&&p| alive(p)).map(|&p| format!("{p} {}", cmdline(p))).collect();
        let ns = common::namespaces(&prefix);
        let clean = left.is_empty() && ns.is_empty() && !lab_dir(&prefix).exists();
        if clean || killed.elapsed() > Duration::from_secs(10) {
            break (left, ns);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = err.join().unwrap();
    assert_eq!(left, (Vec::new(), Default::default()), "processes or namespaces outlived the run by 10 s: {err}");
    assert!(!lab_dir(&prefix).exists(), "the impairment's pins outlived the run");
    assert!(!alive(reaper), "the reaper exits when done");
    assert!(err.contains("ended without cleaning up") && err.contains(&prefix), "{err}");
    eprintln!("cleaned up {:.1} s after the kill", killed.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&d);
}
