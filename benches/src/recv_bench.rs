//! `recv-bench`: what the receivers' kernel counter costs the lab, by attach
//! point. The same sender (each of `--engines`, 8192 B by default, flat out)
//! against 9 receivers that (a) only join the group (a socket bound to no
//! port of it, as `mcblast recv --counter kernel` joins), or run the kernel
//! counter at (b) native XDP, (c) generic XDP, (d) tc ingress, each with and
//! without `--sink`, and (e) with mcblast's own choices (`auto`: attach point and sink). Per case: the sender's datagrams/s and its ratio to the
//! join-only receivers in the same run (this machine is shared and noisy:
//! ratios hold, absolute figures drift), the machine's CPU per sent datagram
//! (sender and every receiver's stack: the lab runs on one machine), the
//! counter's own run time per datagram from the kernel's BPF statistics
//! (`kernel.bpf_stats_enabled`, read from each receiver's program
//! descriptors), and the counts (datagrams the counters received, and lost).
//!
//! `--segment off` turns UDP segmentation offload off on the sender's eth0
//! (`ethtool -K eth0 tx-udp-segmentation off`), so its own stack cuts each
//! GSO batch into datagrams, as on NICs without it (ENA among them); the
//! lab as it is lets GSO batches cross veth and the bridge whole, which no
//! real NIC does. `--segment both` runs the two, one after the other.
//!
//! Run it with `cargo xtask bench recv [flags]` (release build, needs root).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mcblast::lab::{Lab, LabConfig};
use serde::Serialize;
use serde_json::Value;

mod shared;
use shared::{Receivers, median};

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 1);
/// The receiver set-ups, in table order: `join` has no counter.
/// `auto` runs the receivers as `mcblast recv --counter kernel` with nothing else: the attach point and
/// the sink (`--sink auto`) are what it chooses; the others set both (`--sink=off` without `+sink`).
const MODES: [&str; 8] = ["join", "auto", "native", "native+sink", "generic", "generic+sink", "tc", "tc+sink"];

struct Opts {
    mcblast: PathBuf,
    engines: Vec<String>,
    modes: Vec<String>,
    length: usize,
    receivers: u32,
    seconds: f64,
    repeats: usize,
    /// "on" (the lab as it is), "off", or both.
    segment: Vec<bool>,
    out: PathBuf,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        mcblast: std::env::current_exe()?.with_file_name("mcblast"),
        engines: vec!["gso".into(), "mmsg".into()],
        modes: MODES.iter().map(|m| m.to_string()).collect(),
        length: 8192,
        receivers: 9,
        seconds: 5.0,
        repeats: 3,
        segment: vec![true, false],
        out: PathBuf::from("benches/results/recv-attach"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = |s: &str| s.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--mcblast" => o.mcblast = v.into(),
            "--engines" => o.engines = list(&v),
            "--modes" => o.modes = list(&v),
            "--length" => o.length = v.parse()?,
            "--receivers" => o.receivers = v.parse()?,
            "--seconds" => o.seconds = v.parse()?,
            "--repeats" => o.repeats = v.parse()?,
            "--segment" => {
                o.segment = match v.as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![true, false],
                    _ => bail!("--segment {v}: use on, off or both"),
                }
            }
            "--out" => o.out = v.into(),
            a => bail!(
                "unknown argument {a}; usage: recv-bench [--engines gso,mmsg] [--modes {}] [--length 8192] \
                 [--receivers 9] [--seconds 5] [--repeats 3] [--segment on|off|both] [--out PATH] [--mcblast BIN]",
                MODES.join(",")
            ),
        }
    }
    if let Some(m) = o.modes.iter().find(|m| !MODES.contains(&m.as_str())) {
        bail!("unknown receiver mode {m}: use {}", MODES.join(", "));
    }
    if !o.modes.iter().any(|m| m == "join") {
        bail!("--modes must include join: it is the reference every ratio is taken against");
    }
    Ok(o)
}

/// One measured repeat.
#[derive(Serialize, Clone, Debug, Default)]
struct Sample {
    sent: u64,
    pps: f64,
    /// Busy CPU time of the whole machine while the sender ran, per sent datagram.
    machine_cpu_us_per_dgram: f64,
    /// The counters' BPF run time (entry programs and their tail calls) per datagram counted.
    bpf_ns_per_dgram: f64,
    /// Datagrams the receivers' kernel counters received, summed (0 for join).
    received: u64,
    lost: u64,
    /// What the receivers run as, from their begin lines: attach point, and `+sink` with the sink on.
    chosen: String,
}

#[derive(Serialize)]
struct Case {
    engine: String,
    segmented_by_sender: bool,
    mode: String,
    samples: Vec<Sample>,
    median_pps: f64,
    ratio_to_join: f64,
    median_machine_cpu_us_per_dgram: f64,
    /// From `cost_sample`, the run with the kernel's BPF statistics on.
    bpf_ns_per_dgram: f64,
    cost_sample: Option<Sample>,
    /// Over the repeats and the cost run: datagrams the counters received,
    /// and lost, summed over receivers; sent × receivers for comparison.
    received: u64,
    lost: u64,
    expected: u64,
}

/// Busy and total jiffies of the machine (`/proc/stat`'s `cpu` line).
fn cpu_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = text.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The BPF run time (ns) of the XDP and tc programs process `pid` holds,
/// from each descriptor's fdinfo (`run_time_ns`, with bpf_stats_enabled).
fn bpf_run_time_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return 0 };
    let mut ns = 0;
    for e in dir.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        // prog_type 6 is XDP, 3 sched_cls (tc).
        if matches!(field("prog_type:").as_deref(), Some("6") | Some("3")) {
            ns += field("run_time_ns:").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ns
}

/// The receivers of one case: mcblast recv processes, or sockets that join
/// the group and are bound to no port of it (join): the membership the
/// kernel-only receiver holds, without its counter, so datagrams take the
/// same path up the stack (no listener on the port) in every mode.
enum Rx {
    /// The receivers, and what they chose (see [`Sample::chosen`]).
    Counters(Receivers, String),
    Joiners(#[allow(dead_code)] Vec<UdpSocket>),
}

fn start(lab: &Lab, o: &Opts, mode: &str) -> Result<Rx> {
    if mode == "join" {
        let mut socks = Vec::new();
        for node in lab.receivers() {
            let addr = lab.addr(&node);
            let s = mcblast::netns::run_in(&lab.ns_name(&node), move || -> std::io::Result<UdpSocket> {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                s.join_multicast_v4(&GROUP, &addr)?;
                Ok(s)
            })??;
            socks.push(s);
        }
        lab.wait_members(GROUP, &lab.receivers(), Duration::from_secs(15))?;
        return Ok(Rx::Joiners(socks));
    }
    let (point, sink) = match mode.strip_suffix("+sink") {
        Some(p) => (p, "--sink=on"),
        None if mode == "auto" => (mode, "--sink=auto"),
        None => (mode, "--sink=off"),
    };
    let mut chosen = std::collections::BTreeSet::new();
    let life = format!("{}", o.seconds + 60.0);
    let mut rx = Receivers(Vec::new());
    for node in lab.receivers() {
        let argv = [
            "mcblast", "recv", "--interface", "eth0", "--counter", "kernel", "--xdp-mode", point, "--json", "-i", "0",
            "-t", &life, "--grace", "3", sink,
        ];
        let mut child: Child = lab.exec_cmd(&node, &argv).stdout(Stdio::piped()).spawn()?;
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut first)?;
        let begin: Value = serde_json::from_str(&first).unwrap_or_default();
        if begin["type"] != "begin" {
            bail!("receiver {node} did not start at {point}: {first}");
        }
        let on = if begin["sink"] == true { "+sink" } else { "" };
        chosen.insert(format!("{}{on}", begin["xdp_mode"].as_str().unwrap_or("?")));
        rx.0.push((node, child));
    }
    lab.wait_members(GROUP, &lab.receivers(), Duration::from_secs(15))?;
    Ok(Rx::Counters(rx, chosen.into_iter().collect::<Vec<_>>().join(" / ")))
}

/// The sender, flat out for `o.seconds`: its JSON summary.
fn send(lab: &Lab, o: &Opts, engine: &str) -> Result<Value> {
    let (secs, len) = (format!("{}", o.seconds), o.length.to_string());
    let argv = ["mcblast", "send", "--interface", "eth0", "--engine", engine, "-l", &len, "-t", &secs, "--json", "-i", "0"];
    let out = lab.exec_cmd("sender", &argv).output()?;
    if !out.status.success() {
        bail!("sender failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .context("no sender summary")
}

/// The receivers' kernel summaries, once each has stopped: (received, lost).
fn finish(rx: Rx) -> Result<(u64, u64)> {
    let Rx::Counters(rx, _) = rx else { return Ok((0, 0)) };
    rx.kernel_totals()
}

/// One run of `mode`; with `stats` the kernel's BPF run-time statistics are on
/// for it (and the counters' run time read), else off (and it reads 0).
fn run_case(lab: &Lab, o: &Opts, engine: &str, mode: &str, stats: bool) -> Result<Sample> {
    let _stats = if stats { Some(BpfStats::on()?) } else { None };
    let rx = start(lab, o, mode)?;
    let pids: Vec<u32> = match &rx {
        Rx::Counters(r, _) => r.0.iter().map(|(_, c)| c.id()).collect(),
        Rx::Joiners(_) => Vec::new(),
    };
    let chosen = match &rx {
        Rx::Counters(_, c) => c.clone(),
        Rx::Joiners(_) => String::new(),
    };
    let bpf0: u64 = pids.iter().map(|&p| bpf_run_time_ns(p)).sum();
    let cpu0 = cpu_jiffies();
    let summary = send(lab, o, engine)?;
    let cpu1 = cpu_jiffies();
    let bpf_ns = pids.iter().map(|&p| bpf_run_time_ns(p)).sum::<u64>().saturating_sub(bpf0);
    let (received, lost) = finish(rx)?;
    let sent = summary["sent"].as_u64().unwrap_or(0);
    let hz = 100.0; // USER_HZ
    let busy_s = (cpu1.0 - cpu0.0) as f64 / hz;
    Ok(Sample {
        sent,
        pps: summary["rate_pps"].as_f64().unwrap_or(0.0),
        machine_cpu_us_per_dgram: if sent == 0 { 0.0 } else { busy_s * 1e6 / sent as f64 },
        bpf_ns_per_dgram: if received == 0 { 0.0 } else { bpf_ns as f64 / received as f64 },
        received,
        lost,
        chosen,
    })
}

/// Turns UDP segmentation offload of the sender's eth0 on or off.
fn set_segmentation(lab: &Lab, offload: bool) -> Result<()> {
    let state = if offload { "on" } else { "off" };
    let out = lab.exec_cmd("sender", &["ethtool", "-K", "eth0", "tx-udp-segmentation", state]).output()?;
    if !out.status.success() {
        bail!("ethtool -K eth0 tx-udp-segmentation {state}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// `kernel.bpf_stats_enabled` on for the run, back to what it was after.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
    fn on() -> Result<BpfStats> {
        let was = std::fs::read_to_string(Self::PATH).context("cannot read kernel.bpf_stats_enabled")?;
        std::fs::write(Self::PATH, "1").context("cannot enable kernel.bpf_stats_enabled")?;
        Ok(BpfStats(was.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

fn measure(lab: &Lab, o: &Opts, engine: &str, offload: bool) -> Result<Vec<Case>> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); o.modes.len()];
    let show = |mode: &str, run: &str, s: &Sample| {
        eprintln!(
            "{engine:>5} segmentation {}: {mode:>12}, {run}: {:.0} dgram/s, {:.2} us machine CPU/dgram, {:.0} ns BPF/dgram, received {} lost {}",
            if offload { "offloaded" } else { "by sender" },
            s.pps,
            s.machine_cpu_us_per_dgram,
            s.bpf_ns_per_dgram,
            s.received,
            s.lost
        )
    };
    // Repeats outermost: drift on a shared machine spreads over every mode.
    for k in 0..o.repeats {
        for (i, mode) in o.modes.iter().enumerate() {
            let s = run_case(lab, o, engine, mode, false)?;
            show(mode, &format!("repeat {}", k + 1), &s);
            samples[i].push(s);
        }
    }
    // The counters' own run time, from one more run of each counter mode with
    // the kernel's BPF statistics on: they read the clock twice a program run,
    // which the rates above must not pay.
    let mut costs: Vec<Option<Sample>> = Vec::new();
    for mode in &o.modes {
        costs.push(if mode == "join" { None } else { Some(run_case(lab, o, engine, mode, true)?) });
        if let Some(s) = costs.last().unwrap() {
            show(mode, "BPF statistics on", s);
        }
    }
    let join_pps = median(samples[o.modes.iter().position(|m| m == "join").expect("checked")].iter().map(|s| s.pps).collect());
    Ok(o.modes
        .iter()
        .zip(samples)
        .zip(costs)
        .map(|((mode, s), cost)| {
            let pps = median(s.iter().map(|x| x.pps).collect());
            let all = || s.iter().chain(cost.iter());
            Case {
                engine: engine.to_string(),
                segmented_by_sender: !offload,
                mode: mode.clone(),
                median_pps: pps,
                ratio_to_join: if join_pps > 0.0 { pps / join_pps } else { 0.0 },
                median_machine_cpu_us_per_dgram: median(s.iter().map(|x| x.machine_cpu_us_per_dgram).collect()),
                bpf_ns_per_dgram: cost.as_ref().map_or(0.0, |c| c.bpf_ns_per_dgram),
                received: all().map(|x| x.received).sum(),
                lost: all().map(|x| x.lost).sum(),
                expected: if mode == "join" { 0 } else { all().map(|x| x.sent).sum::<u64>() * o.receivers as u64 },
                samples: s,
                cost_sample: cost,
            }
        })
        .collect())
}

fn table(cases: &[Case], o: &Opts, command: &str) -> String {
    let mut md = format!(
        "Command: `{command}`  \nSender flat out, {} B datagrams, {} receivers, each case {} s, {} repeats, medians. \
         `× join` is the sender's datagrams/s over its rate with join-only receivers in the same run. \
         Machine CPU is all busy time of the machine (sender and every receiver's stack) per sent datagram; \
         BPF ns is the counter's own run time per datagram it counted, from one more run of the case with \
         `kernel.bpf_stats_enabled` on (off for the measured rates: it reads the clock twice a program run). \
         received/lost: the kernel counters' totals over receivers, repeats and that run, against sent × receivers.\n\n",
        o.length, o.receivers, o.seconds, o.repeats
    );
    md.push_str("| engine | UDP segmentation | receivers | datagrams/s | × join | machine CPU µs/datagram | BPF ns/datagram | received / expected | lost |\n");
    md.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    for c in cases {
        let counted = if c.mode == "join" {
            "—".to_string()
        } else {
            format!("{} / {}", c.received, c.expected)
        };
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |\n",
            c.engine,
            if c.segmented_by_sender { "sender's stack (off)" } else { "offloaded (lab as is)" },
            match c.samples.first() {
                Some(s) if c.mode == "auto" => format!("auto → {}", s.chosen),
                _ => c.mode.clone(),
            },
            c.median_pps,
            c.ratio_to_join,
            c.median_machine_cpu_us_per_dgram,
            if c.mode == "join" { "—".to_string() } else { format!("{:.0}", c.bpf_ns_per_dgram) },
            counted,
            if c.mode == "join" { "—".to_string() } else { c.lost.to_string() },
        ));
    }
    md
}

fn main() -> Result<()> {
    let o = opts()?;
    if !o.mcblast.exists() {
        bail!("{} not found: build it with cargo build --release -p mcblast, or pass --mcblast", o.mcblast.display());
    }
    let shown: Vec<String> =
        std::env::args().skip(1).collect::<Vec<_>>().chunks(2).filter(|p| p[0] != "--mcblast").flat_map(|p| p.to_vec()).collect();
    let command = format!("cargo xtask bench recv {}", shown.join(" ")).trim_end().to_string();
    let cfg = LabConfig { prefix: format!("mcbr{}-", std::process::id()), receivers: o.receivers, ..LabConfig::default() };
    let lab = Lab::up(&cfg)?.with_mcblast(&o.mcblast);
    let mut cases = Vec::new();
    for &offload in &o.segment {
        set_segmentation(&lab, offload)?;
        for engine in &o.engines {
            cases.extend(measure(&lab, &o, engine, offload)?);
        }
    }
    drop(lab);
    let md = table(&cases, &o, &command);
    print!("{md}");
    std::fs::write(o.out.with_extension("md"), &md)?;
    std::fs::write(o.out.with_extension("json"), serde_json::to_string_pretty(&cases)?)?;
    eprintln!("wrote {}.md and .json", o.out.display());
    Ok(())
}
