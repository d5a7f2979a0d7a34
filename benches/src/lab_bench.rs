//! `lab-bench`: the sender's engines × datagram length × receiver count on
//! the namespace lab, flat out, each case repeated; receivers use the kernel
//! counter only (a socket receiver would measure the receivers, not the
//! sender). Results are medians with min–max ranges, and ratios against the
//! reference engine measured in the same run (this machine is shared and
//! noisy: absolute figures drift, ratios hold).
//!
//! Run it with `cargo xtask bench` (builds release binaries, needs root).
//! Engines are `mcblast send --engine` names; `uring+zc` adds `--zerocopy`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mcblast::lab::{Lab, LabConfig};
use serde::Serialize;
use serde_json::Value;

struct Opts {
    mcblast: PathBuf,
    engines: Vec<String>,
    lengths: Vec<usize>,
    receivers: Vec<u32>,
    seconds: f64,
    repeats: usize,
    out: PathBuf,
    reference: String,
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
            a => bail!(
                "unknown argument {a}; usage: lab-bench [--engines socket,mmsg,gso,uring,uring+zc] [--lengths 512,1470,8192] [--receivers 1,9] [--seconds 5] [--repeats 3] [--reference socket] [--out PATH] [--mcblast BIN]"
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
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

struct Receivers(Vec<(String, Child)>);

impl Drop for Receivers {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_case(lab: &Lab, o: &Opts, engine: &str, length: usize) -> Result<Sample> {
    let mut rx = Receivers(Vec::new());
    for node in lab.receivers() {
        let t = format!("{}", o.seconds + 30.0);
        let mut child = lab
            .exec_cmd(&node, &["mcblast", "recv", "--interface", "eth0", "--counter", "kernel", "--json", "-i", "0", "-t", &t])
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
    let (mut lost, mut received) = (0, 0);
    for (node, mut child) in std::mem::take(&mut rx.0) {
        let mut text = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut text)?;
        child.wait()?;
        let s = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "summary" && v["counter"] == "kernel")
            .with_context(|| format!("no kernel summary from {node}"))?;
        for f in s["flows"].as_array().into_iter().flatten() {
            lost += f["lost"].as_u64().unwrap_or(0);
            received += f["received"].as_u64().unwrap_or(0);
        }
    }
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
                });
            }
        }
    }
    let refs: Vec<(usize, u32, f64, f64)> = cases
        .iter()
        .filter(|c| c.engine == o.reference)
        .map(|c| (c.length, c.receivers, c.median_pps, c.median_cpu_us_per_dgram))
        .collect();
    for c in &mut cases {
        if let Some(&(_, _, pps, cpu)) = refs.iter().find(|r| r.0 == c.length && r.1 == c.receivers) {
            c.pps_ratio_to_reference = if pps > 0.0 { c.median_pps / pps } else { 0.0 };
            c.cpu_efficiency_vs_reference =
                if c.median_cpu_us_per_dgram > 0.0 { cpu / c.median_cpu_us_per_dgram } else { 0.0 };
        }
    }
    let mut md = format!(
        "Command: `{command}`  \nEach case: {} s flat out, {} repeats; median (min–max). Receivers: kernel counter only. \
         Ratios are against the `{}` engine in the same run.\n\n\
         | engine | length B | receivers | datagrams/s | Gbit/s | CPU µs/datagram | × {} (dgram/s) | CPU efficiency vs {} | receiver loss (max) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        o.seconds, o.repeats, o.reference, o.reference, o.reference
    );
    for c in &cases {
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            c.engine,
            c.length,
            c.receivers,
            c.median_pps,
            c.min_pps,
            c.max_pps,
            c.median_gbps,
            c.median_cpu_us_per_dgram,
            c.pps_ratio_to_reference,
            c.cpu_efficiency_vs_reference,
            c.max_recv_lost
        ));
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
