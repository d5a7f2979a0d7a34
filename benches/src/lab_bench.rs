//! `lab-bench`: the sender's engines × datagram length × receiver count on
//! the namespace lab, flat out, each case repeated; receivers use the kernel
//! counter only (a socket receiver would measure the receivers, not the
//! sender), with the sink off, as in every table so far and beside the
//! iperf2 reference's `iperf -s`. Results are medians with min–max ranges, and ratios against the
//! reference engine measured in the same run (this machine is shared and
//! noisy: absolute figures drift, ratios hold).
//!
//! Run it with `cargo xtask bench` (builds release binaries, needs root).
//! Engines are `mcblast send --engine` names; `uring+zc` adds `--zerocopy`.
//! Two pseudo-engines are references: `iperf2` (Debian's iperf 2 client,
//! flat out, with an `iperf -s` per receiver namespace, `-w 4M`) and `trafgen`
//! (netsniff-ng's PACKET_MMAP generator, one CPU, sending the frame mcblast
//! sends, built by [`trafgen_conf`]). Ratios to both appear when they ran.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mcblast::lab::{Lab, LabConfig};
use serde::Serialize;
use serde_json::Value;

mod shared;
use shared::{Receivers, median};

struct Opts {
    mcblast: PathBuf,
    engines: Vec<String>,
    lengths: Vec<usize>,
    receivers: Vec<u32>,
    seconds: f64,
    repeats: usize,
    out: PathBuf,
    reference: String,
    /// The receivers' kernel counter attach point (`--xdp-mode` of recv).
    xdp_mode: String,
}

fn list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>> {
    s.split(',').map(|x| x.trim().parse::<T>().map_err(|_| anyhow::anyhow!("bad list item '{x}'"))).collect()
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        mcblast: std::env::current_exe()?.with_file_name("mcblast"),
        engines: vec!["socket".into(), "mmsg".into(), "gso".into(), "uring".into()],
        lengths: vec![512, 1470, 8192],
        receivers: vec![1, 9],
        seconds: 5.0,
        repeats: 3,
        out: PathBuf::from("benches/results/send-engines"),
        reference: "socket".into(),
        xdp_mode: "auto".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--mcblast" => o.mcblast = v.into(),
            "--engines" => o.engines = list(&v)?,
            "--lengths" => o.lengths = list(&v)?,
            "--receivers" => o.receivers = list(&v)?,
            "--seconds" => o.seconds = v.parse()?,
            "--repeats" => o.repeats = v.parse()?,
            "--out" => o.out = v.into(),
            "--reference" => o.reference = v,
            "--xdp-mode" => o.xdp_mode = v,
            a => bail!(
                "unknown argument {a}; usage: lab-bench [--engines socket,mmsg,gso,uring,uring+zc,xdp,iperf2,trafgen] [--lengths 512,1470,8192] [--receivers 1,9] [--seconds 5] [--repeats 3] [--reference socket] [--xdp-mode auto|native|generic|tc] [--out PATH] [--mcblast BIN]"
            ),
        }
        i += 2;
    }
    if !o.engines.contains(&o.reference) {
        bail!("the reference engine {} must be among --engines", o.reference);
    }
    Ok(o)
}

/// One measured repeat.
#[derive(Serialize, Clone, Debug)]
struct Sample {
    sent: u64,
    pps: f64,
    gbps: f64,
    cpu_s: f64,
    cpu_us_per_dgram: f64,
    send_errors: u64,
    /// Lost datagrams by the kernel counter, summed over receivers.
    recv_lost: u64,
    /// Datagrams the kernel counters received, summed over receivers.
    recv_received: u64,
    /// Packets the receivers' eth0 counted (rx_packets deltas), summed: a
    /// cross-check of the kernel counter (also counts IGMP queries).
    rx_if_packets: u64,
    /// How `recv_lost` was measured: "kernel counter" (mcblast engines), or
    /// "sent - rx_packets per receiver" (iperf2, trafgen: not mcblast flows).
    loss_by: &'static str,
}

#[derive(Serialize)]
struct Case {
    engine: String,
    length: usize,
    receivers: u32,
    samples: Vec<Sample>,
    median_pps: f64,
    min_pps: f64,
    max_pps: f64,
    median_gbps: f64,
    median_cpu_us_per_dgram: f64,
    max_recv_lost: u64,
    /// Median pps over the reference engine's median pps, same length and receivers, same run.
    pps_ratio_to_reference: f64,
    /// Reference CPU per datagram over this engine's (higher is better).
    cpu_efficiency_vs_reference: f64,
    /// The same two ratios against iperf2 and trafgen when they ran (same
    /// run, same length and receivers): engine -> [pps ratio, CPU efficiency].
    ratios: std::collections::BTreeMap<String, [f64; 2]>,
}


/// eth0's (rx_packets, tx_packets) in the network namespace of process `pid`.
fn if_packets(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("eth0:"))?;
    let f: Vec<u64> = line.split(':').nth(1)?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    Some((*f.get(1)?, *f.get(9)?))
}

/// CPU seconds (user + system) of this process's waited-for children so far.
fn children_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A trafgen configuration for the frame mcblast sends: Ethernet to the
/// group's MAC, IPv4 239.0.0.1 TTL 1 (checksum by trafgen), UDP to 5001 with
/// a zero checksum, and an mcblast data header (magic, version, kind 0, the
/// datagram length) followed by zero filler. trafgen's runtime counters are
/// one byte wide, so the sequence field is constant: the kernel counter counts
/// these frames as received but its gap/duplicate figures mean nothing here.
fn trafgen_conf(src_mac: &str, src: std::net::Ipv4Addr, length: usize) -> String {
    let mut c = String::from("{\n");
    c.push_str("  0x01, 0x00, 0x5e, 0x00, 0x00, 0x01,\n");
    for b in src_mac.split(':') {
        c.push_str(&format!("0x{b}, "));
    }
    c.push_str("\n  c16(0x0800),\n");
    let ip_len = 20 + 8 + length;
    let [a, b, cc, d] = src.octets();
    c.push_str(&format!(
        "  0x45, 0x00, c16({ip_len}), c16(0), c16(0x4000), 1, 17, csumip(14, 33),\n  {a}, {b}, {cc}, {d}, 239, 0, 0, 1,\n"
    ));
    c.push_str(&format!("  c16(5001), c16(5001), c16({}), c16(0),\n", 8 + length));
    // mcblast header: magic, ver 1, kind 0 (data), flags 0, run id, flow id 0,
    // sequence, tx time, length, clock.
    c.push_str("  'M', 'C', 'B', 'L', 1, 0, c16(0), c32(0x7e7e7e7e), c32(0), c64(0), c64(0),\n");
    c.push_str(&format!("  c32({length}), c32(0),\n"));
    c.push_str(&format!("  fill(0x00, {}),\n}}\n", length - 40));
    c
}

fn run_case(lab: &Lab, o: &Opts, engine: &str, length: usize) -> Result<Sample> {
    if engine == "iperf2" || engine == "trafgen" {
        return run_reference(lab, o, engine, length);
    }
    let rx = start_receivers(lab, o)?;
    let rx0: Vec<u64> = rx.0.iter().map(|(_, c)| if_packets(c.id()).map_or(0, |p| p.0)).collect();
    let secs = format!("{}", o.seconds);
    let len = length.to_string();
    // `uring+zc` is the uring engine with --zerocopy.
    let (name, zc) = match engine.strip_suffix("+zc") {
        Some(base) => (base, true),
        None => (engine, false),
    };
    let mut argv = vec!["mcblast", "send", "--interface", "eth0", "--engine", name, "-l", &len, "-t", &secs, "--json", "-i", "0"];
    if zc {
        argv.push("--zerocopy");
    }
    let out = lab.exec_cmd("sender", &argv).output()?;
    if !out.status.success() {
        bail!("sender failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let summary: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .context("no sender summary")?;
    std::thread::sleep(Duration::from_millis(200));
    let rx_if_packets: u64 =
        rx.0.iter().zip(&rx0).map(|((_, c), b)| if_packets(c.id()).map_or(0, |p| p.0).saturating_sub(*b)).sum();
    let (received, lost) = rx.kernel_totals()?;
    let sent = summary["sent"].as_u64().unwrap_or(0);
    let cpu_s = summary["cpu_s"].as_f64().unwrap_or(0.0);
    Ok(Sample {
        sent,
        pps: summary["rate_pps"].as_f64().unwrap_or(0.0),
        gbps: summary["rate_bps"].as_f64().unwrap_or(0.0) / 1e9,
        cpu_s,
        cpu_us_per_dgram: if sent == 0 { 0.0 } else { cpu_s * 1e6 / sent as f64 },
        send_errors: summary["errors"].as_u64().unwrap_or(0),
        recv_lost: lost,
        recv_received: received,
        rx_if_packets,
        loss_by: "kernel counter",
    })
}

/// Starts the kernel-counter receivers (they join the group, so snooping
/// forwards it), returns them once the bridge lists every receiver.
fn start_receivers(lab: &Lab, o: &Opts) -> Result<Receivers> {
    let mut rx = Receivers(Vec::new());
    for node in lab.receivers() {
        let t = format!("{}", o.seconds + 30.0);
        let mut child = lab
            .exec_cmd(
                &node,
                &[
                    "mcblast", "recv", "--interface", "eth0", "--counter", "kernel", "--xdp-mode", &o.xdp_mode, "--json",
                    "-i", "0", "-t", &t, "--sink=off",
                ],
            )
            .stdout(Stdio::piped())
            .spawn()?;
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut first)?;
        if !first.contains("\"begin\"") {
            bail!("receiver {node} did not start: {first}");
        }
        rx.0.push((node, child));
    }
    lab.wait_members("239.0.0.1".parse()?, &lab.receivers(), Duration::from_secs(15))?;
    Ok(rx)
}

/// iperf2 or trafgen as the sender. Neither writes an mcblast flow the kernel
/// counter can follow, so: sent = the sender's eth0 tx_packets delta, rate =
/// tx_packets growth over the window it grew in (polled every 20 ms, so
/// start-up is not counted), delivered = each receiver's eth0 rx_packets
/// delta, loss = sent - delivered per receiver, CPU = the sender process's
/// user+system time (rusage of the waited-for child).
fn run_reference(lab: &Lab, o: &Opts, engine: &str, length: usize) -> Result<Sample> {
    let mut rx = start_receivers(lab, o)?;
    // A process that stays in the sender's namespace, to read its eth0 counters
    // through /proc/<pid>/net/dev before, during and after the sender.
    let life = format!("{}", o.seconds as u64 + 30);
    let watch = Receivers(vec![("sender".into(), lab.exec_cmd("sender", &["sleep", &life]).spawn()?)]);
    let wpid = watch.0[0].1.id();
    let entered = std::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{wpid}/comm")).is_ok_and(|c| c.trim() != "sleep")
        && entered.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let len = length.to_string();
    let secs = format!("{}", o.seconds);
    // iperf2's own receivers, as its users run them (they compete for the CPU like real ones).
    let mut iperf_rx = Receivers(Vec::new());
    let tmp = std::env::temp_dir().join(format!("mcbb{}-trafgen.cfg", std::process::id()));
    let mut sender = if engine == "iperf2" {
        for node in lab.receivers() {
            let c = lab
                .exec_cmd(&node, &["iperf", "-s", "-u", "-B", "239.0.0.1%eth0", "-l", &len, "-w", "4M", "-t", &life])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            iperf_rx.0.push((node, c));
        }
        std::thread::sleep(Duration::from_millis(500));
        let src = format!("{}", lab.addr("sender"));
        lab.exec_cmd("sender", &["iperf", "-c", "239.0.0.1", "-u", "-T", "1", "-l", &len, "-b", "100G", "-t", &secs, "-B", &src])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?
    } else {
        let mac = String::from_utf8(lab.exec_cmd("sender", &["cat", "/sys/class/net/eth0/address"]).output()?.stdout)?;
        std::fs::write(&tmp, trafgen_conf(mac.trim(), lab.addr("sender"), length))?;
        let tmp_s = tmp.display().to_string();
        lab.exec_cmd("sender", &["timeout", "-s", "INT", &secs, "trafgen", "--dev", "eth0", "--conf", &tmp_s, "--cpus", "1", "-J"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?
    };
    let cpu0 = children_cpu_s();
    let rx0: Vec<u64> = rx.0.iter().map(|(_, c)| if_packets(c.id()).map_or(0, |p| p.0)).collect();
    let t0 = std::time::Instant::now();
    let base = if_packets(wpid).map_or(0, |p| p.1);
    let mut last = base;
    let (mut first_t, mut first_p, mut last_t) = (None, base, 0.0);
    let deadline = Duration::from_secs_f64(o.seconds + 20.0);
    while sender.try_wait()?.is_none() {
        if t0.elapsed() > deadline {
            let _ = sender.kill();
            break;
        }
        if let Some((_, tx)) = if_packets(wpid) {
            let t = t0.elapsed().as_secs_f64();
            if tx > last {
                if first_t.is_none() {
                    first_t = Some(t);
                    first_p = tx;
                }
                last_t = t;
                last = tx;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = sender.wait()?;
    let cpu_s = children_cpu_s() - cpu0;
    let mut err = String::new();
    std::io::Read::read_to_string(sender.stderr.as_mut().expect("stderr"), &mut err)?;
    let _ = std::fs::remove_file(&tmp);
    // timeout(1) exits 124 when it stopped trafgen, as intended.
    if !status.success() && status.code() != Some(124) {
        bail!("{engine} failed ({status}): {err}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let delivered: Vec<u64> =
        rx.0.iter().zip(&rx0).map(|((_, c), b)| if_packets(c.id()).map_or(0, |p| p.0).saturating_sub(*b)).collect();
    let sent = if_packets(wpid).map_or(last, |p| p.1) - base;
    drop(watch);
    let span = last_t - first_t.unwrap_or(last_t);
    let pps = if span > 0.0 { (last - first_p) as f64 / span } else { 0.0 };
    drop(iperf_rx);
    let mut received = 0;
    for (node, mut child) in std::mem::take(&mut rx.0) {
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut text = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut text)?;
        child.wait()?;
        if let Some(s) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "summary" && v["counter"] == "kernel")
        {
            for f in s["flows"].as_array().into_iter().flatten() {
                received += f["received"].as_u64().unwrap_or(0);
            }
        } else {
            eprintln!("note: no kernel summary from {node}");
        }
    }
    Ok(Sample {
        sent,
        pps,
        gbps: pps * length as f64 * 8.0 / 1e9,
        cpu_s,
        cpu_us_per_dgram: if sent == 0 { 0.0 } else { cpu_s * 1e6 / sent as f64 },
        send_errors: 0,
        recv_lost: delivered.iter().map(|d| sent.saturating_sub(*d)).sum(),
        recv_received: received,
        rx_if_packets: delivered.iter().sum(),
        loss_by: "sent - rx_packets per receiver",
    })
}

fn main() -> Result<()> {
    let o = opts()?;
    if !o.mcblast.exists() {
        bail!("{} not found: build it with cargo build --release -p mcblast, or pass --mcblast", o.mcblast.display());
    }
    let shown: Vec<String> = std::env::args().skip(1).collect::<Vec<_>>().chunks(2).filter(|p| p[0] != "--mcblast").flat_map(|p| p.to_vec()).collect();
    let command = format!("cargo xtask bench {}", shown.join(" ")).trim_end().to_string();
    let mut cases: Vec<Case> = Vec::new();
    for &r in &o.receivers {
        // A prefix of this run's own: two benchmarks at once must not share a lab.
        let cfg = LabConfig { prefix: format!("mcbb{}-", std::process::id()), receivers: r, ..LabConfig::default() };
        let lab = Lab::up(&cfg)?.with_mcblast(&o.mcblast);
        for &len in &o.lengths {
            for engine in &o.engines {
                let mut samples = Vec::new();
                for k in 0..o.repeats {
                    let s = run_case(&lab, &o, engine, len)?;
                    eprintln!(
                        "{engine:>6} {len:>5} B x{r} rcv, repeat {}: {:.0} dgram/s {:.2} Gbit/s, {:.2} us CPU/dgram, receiver loss {}",
                        k + 1,
                        s.pps,
                        s.gbps,
                        s.cpu_us_per_dgram,
                        s.recv_lost
                    );
                    samples.push(s);
                }
                let pps: Vec<f64> = samples.iter().map(|s| s.pps).collect();
                cases.push(Case {
                    engine: engine.clone(),
                    length: len,
                    receivers: r,
                    median_pps: median(pps.clone()),
                    min_pps: pps.iter().cloned().fold(f64::INFINITY, f64::min),
                    max_pps: pps.iter().cloned().fold(0.0, f64::max),
                    median_gbps: median(samples.iter().map(|s| s.gbps).collect()),
                    median_cpu_us_per_dgram: median(samples.iter().map(|s| s.cpu_us_per_dgram).collect()),
                    max_recv_lost: samples.iter().map(|s| s.recv_lost).max().unwrap_or(0),
                    samples,
                    pps_ratio_to_reference: 0.0,
                    cpu_efficiency_vs_reference: 0.0,
                    ratios: Default::default(),
                });
            }
        }
    }
    // Ratio columns: the reference, then iperf2 and trafgen when they ran.
    let mut against = vec![o.reference.clone()];
    for e in ["iperf2", "trafgen"] {
        if o.engines.iter().any(|x| x == e) && !against.iter().any(|x| x == e) {
            against.push(e.to_string());
        }
    }
    let base: Vec<(String, usize, u32, f64, f64)> = cases
        .iter()
        .filter(|c| against.contains(&c.engine))
        .map(|c| (c.engine.clone(), c.length, c.receivers, c.median_pps, c.median_cpu_us_per_dgram))
        .collect();
    for c in &mut cases {
        for (e, _, _, pps, cpu) in base.iter().filter(|r| r.1 == c.length && r.2 == c.receivers) {
            let pr = if *pps > 0.0 { c.median_pps / pps } else { 0.0 };
            let ce = if c.median_cpu_us_per_dgram > 0.0 { cpu / c.median_cpu_us_per_dgram } else { 0.0 };
            if *e == o.reference {
                c.pps_ratio_to_reference = pr;
                c.cpu_efficiency_vs_reference = ce;
            }
            c.ratios.insert(e.clone(), [pr, ce]);
        }
    }
    let mut md = format!(
        "Command: `{command}`  \nEach case: {} s flat out, {} repeats; median (min–max). Receivers: kernel counter only. \
         Ratios are against engines measured in the same run, same length and receivers; \
         CPU efficiency = their CPU µs/datagram ÷ this one's (4 = a quarter of the CPU per datagram). \
         Receiver loss: max over repeats of the loss summed over receivers, by the kernel counter for mcblast engines; \
         iperf2 and trafgen datagrams are not mcblast flows, so for them it is the sender's eth0 tx_packets minus each \
         receiver's eth0 rx_packets, and their datagrams/s is the sender's tx_packets growth.\n\n\
         | engine | length B | receivers | datagrams/s | Gbit/s | CPU µs/datagram |",
        o.seconds, o.repeats
    );
    for e in &against {
        md.push_str(&format!(" × {e} (dgram/s) | CPU efficiency vs {e} |"));
    }
    md.push_str(" receiver loss (max) |\n|---|---:|---:|---:|---:|---:|");
    md.push_str(&"---:|---:|".repeat(against.len()));
    md.push_str("---:|\n");
    for c in &cases {
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.2} | {:.2} |",
            c.engine, c.length, c.receivers, c.median_pps, c.min_pps, c.max_pps, c.median_gbps, c.median_cpu_us_per_dgram,
        ));
        for e in &against {
            match c.ratios.get(e) {
                Some([p, ce]) => md.push_str(&format!(" {p:.2} | {ce:.2} |")),
                None => md.push_str(" – | – |"),
            }
        }
        md.push_str(&format!(" {} |\n", c.max_recv_lost));
    }
    print!("{md}");
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(o.out.with_extension("md"), &md)?;
    std::fs::write(
        o.out.with_extension("json"),
        serde_json::to_string_pretty(&serde_json::json!({"command": command, "cases": cases}))?,
    )?;
    eprintln!("wrote {} and {}", o.out.with_extension("md").display(), o.out.with_extension("json").display());
    Ok(())
}
