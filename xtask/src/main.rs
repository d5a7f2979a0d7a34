//! Project tasks. `cargo xtask <task>`:
//!
//! * `setup` — install what the build and the tests need, if missing: Debian
//!   packages (iproute2, nftables, openssh, chromium for the report test, sudo and ansible-core for the deploy and
//!   playbook tests, Open vSwitch and OVN for `lab up --fabric ovn`), the pinned nightly with rust-src for the eBPF build, bpf-linker.
//! * `test`  — setup, then every test (unit, property, privileged
//!   integration tests in throwaway namespaces, a bounded fuzz run, `dist` and
//!   its checks, the kernel smoke suite of `kernels`, `docs`), then a check that
//!   nothing the tests made outlived them.
//! * `docs`  — the guide (docs/*.md, README.md, ARCHITECTURE.md) as HTML in
//!   target/docs/, failing on a broken relative link or anchor; see `docs.rs`.
//! * `demo`  — setup, build, bring up a lab of 1 sender + 9 receivers, send
//!   10 s of 8192-byte multicast at 100 Mbit/s, print each receiver's
//!   report, remove the lab.
//! * `bench [flags]` — build release binaries and run `benches/` lab-bench
//!   (engines × length × receivers, ratios against a reference in the same run);
//!   `bench recv [flags]` runs recv-bench instead (the receivers' kernel
//!   counter by attach point, against join-only receivers).
//! * `fuzz [--seconds N]` — run the wire-header parser fuzz target.
//! * `dist [--no-check]` — static musl binaries (x86_64, aarch64), .debs and SHA256SUMS in
//!   target/dist/, then their checks (qemu-user, a Debian 11 chroot); see `dist.rs`.
//! * `kernels [--only host,6.1,5.10] [--out FILE]` — the smoke suite on the
//!   host kernel and on Debian 13, 12 and 11 cloud kernels under QEMU (TCG);
//!   writes the compatibility table docs/kernels.md (see `kernels.rs`);
//!   `kernels --check` is the part of `test` that runs it.

mod dist;
mod docs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod kernels;

/// The nightly that builds the eBPF programs (see ARCHITECTURE.md).
const NIGHTLY: &str = "nightly-2026-05-20";
const BPF_LINKER: &str = "0.10.4";
const CARGO_FUZZ: &str = "0.13.2";
/// Debian packages: (command that proves it is installed, package).
/// Commands the lab and the benchmark need, and the Debian package of each:
/// iperf2 and trafgen are the benchmark's references, perf shows where the
/// cycles go; `mcblast run` reaches real hosts with ssh, and its test runs
/// sshd in lab namespaces; chromium (headless) renders report.html in the report test; the ssh
/// tests run `sudo -n` (as root) like an inventory's mcblast_path, and examples/ansible's playbook;
/// `cargo xtask kernels` boots kernels with QEMU from an initramfs it makes with
/// cpio, busybox, kmod (depmod for the guest's modules), objcopy and xz.
const DEBIAN: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("bridge", "iproute2"),
    ("iperf", "iperf"),
    ("trafgen", "netsniff-ng"),
    ("perf", "linux-perf"),
    ("ethtool", "ethtool"),
    ("bpftool", "bpftool"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
    ("chromium", "chromium"),
    ("sudo", "sudo"),
    ("ansible-playbook", "ansible-core"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("cpio", "cpio"),
    ("busybox", "busybox-static"),
    ("depmod", "kmod"),
    ("objcopy", "binutils"),
    ("xz", "xz-utils"),
    ("dpkg-deb", "dpkg"),
    // The Prometheus test's own server (loopback only) and promtool.
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    // `mcblast lab up --fabric ovn`: a real OVN (central DBs + northd, one ovsdb-server, ovs-vswitchd
    // and ovn-controller per emulated hypervisor, all run by the lab itself, never as system services).
    ("ovs-vswitchd", "openvswitch-switch"),
    ("ovn-northd", "ovn-central"),
    ("ovn-controller", "ovn-host"),
];

/// System services the packages above may start or enable; the tests and the lab run their own instead.
const NOT_OUR_SERVICES: &[(&str, &str)] = &[
    ("openssh-server", "ssh"),
    ("openvswitch-switch", "openvswitch-switch"),
    ("ovn-central", "ovn-central"),
    ("ovn-host", "ovn-host"),
    ("prometheus", "prometheus"),
];

/// Debian's hook that tells maintainer scripts whether they may start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("docs") => docs::docs(&root()).map(drop),
        Some("bench") => bench(&args[1..]),
        Some("dist") => dist::dist(!args.iter().any(|a| a == "--no-check")).map(drop),
        Some("kernels") => kernels::kernels(&args[1..]),
        Some("fuzz") => {
            let secs = args
                .iter()
                .position(|a| a == "--seconds")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(30);
            setup().and_then(|_| fuzz(secs))
        }
        _ => {
            eprintln!("usage: cargo xtask <setup|test|docs|demo|bench [lab-bench flags]|bench recv [recv-bench flags]|fuzz [--seconds N]|dist [--no-check]|kernels [--only host,6.1,5.10] [--out FILE] [--check]>");
            std::process::exit(2);
        }
    };
    if let Err(e) = res {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let st = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> String {
    cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).trim() == "0"
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Installs what is missing; says what it did.
fn setup() -> Result<()> {
    install_debian(DEBIAN)?;
    setup_ebpf_toolchain()?;
    eprintln!("xtask: setup complete ({NIGHTLY} + rust-src, bpf-linker {BPF_LINKER}, iproute2, nftables, iperf, netsniff-ng, linux-perf, openssh-client, openssh-server, chromium, sudo, ansible-core, qemu-system-x86, cpio, busybox-static, kmod, binutils, xz-utils, openvswitch-switch, ovn-central, ovn-host, prometheus)");
    Ok(())
}

/// Installs the Debian packages of `wanted` (command that proves it is installed, package) whose command is missing.
fn install_debian(wanted: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = wanted.iter().filter(|(c, _)| !have(c)).map(|(_, p)| *p).collect();
    missing.dedup();
    if !missing.is_empty() {
        if !is_root() {
            bail!("missing Debian packages {}: run as root, or apt-get install {}", missing.join(" "), missing.join(" "));
        }
        // openssh-server is for the tests' own sshds: installing it must not
        // start a system sshd. A policy-rc.d that says 101 ("action
        // forbidden") while apt runs; the machine's own, if any, is put back.
        let saved = format!("{POLICY_RC_D}.xtask-saved");
        let had_policy = Path::new(POLICY_RC_D).exists();
        if had_policy {
            std::fs::rename(POLICY_RC_D, &saved).with_context(|| format!("moving {POLICY_RC_D} aside"))?;
        }
        let res = std::fs::write(POLICY_RC_D, "#!/bin/sh\n# cargo xtask setup: no service starts during package installation\nexit 101\n")
            .with_context(|| format!("writing {POLICY_RC_D}"))
            .and_then(|_| run(Command::new("chmod").args(["755", POLICY_RC_D])))
            .and_then(|_| run(Command::new("apt-get").arg("update").arg("-q")))
            .and_then(|_| {
                run(Command::new("apt-get")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .args(["install", "-y", "-q", "--no-install-recommends"])
                    .args(&missing))
            });
        let restored = if had_policy { std::fs::rename(&saved, POLICY_RC_D) } else { std::fs::remove_file(POLICY_RC_D) };
        res?;
        restored.with_context(|| format!("putting {POLICY_RC_D} back (it is {saved})"))?;
        for (package, service) in NOT_OUR_SERVICES.iter().filter(|(p, _)| missing.contains(p)) {
            disable_service(package, service);
        }
    }
    Ok(())
}

/// A service a package installed: stopped if it runs anyway (no policy-rc.d honoured, e.g. a
/// manual start), and not enabled for the next boot (systemd and sysv-rc links alike).
fn disable_service(package: &str, service: &str) {
    let unit = format!("{service}.service");
    let init_d = format!("/etc/init.d/{service}");
    if Path::new("/run/systemd/system").is_dir() {
        let _ = run(Command::new("systemctl").args(["disable", "--now", &unit]));
    } else if Path::new(&init_d).exists() {
        let _ = run(Command::new(&init_d).arg("stop"));
    }
    if Path::new(&init_d).exists() && have("update-rc.d") {
        let _ = run(Command::new("update-rc.d").args([service, "disable"]));
    }
    // without a running systemd, systemctl still removes the unit's links for the next boot
    if have("systemctl") && Path::new(&format!("/lib/systemd/system/{unit}")).exists() {
        let _ = run(Command::new("systemctl").args(["disable", &unit]));
    }
    eprintln!("xtask: {package}: service {service} stopped and disabled (the tests run their own)");
}

/// The pinned nightly with rust-src and bpf-linker: what build.rs needs for the eBPF program.
fn setup_ebpf_toolchain() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]));
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal", "--component", "rust-src"]))?;
    }

    let linker = output(Command::new("bpf-linker").arg("--version"));
    if !linker.contains(BPF_LINKER) {
        run(cargo().args(["install", "bpf-linker", "--version", BPF_LINKER, "--locked", "--force"]))?;
    }
    Ok(())
}

/// Sums cargo's `test result:` lines.
#[derive(Default, Debug)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

fn tally_line(t: &mut Tally, line: &str) {
    // test result: ok. 17 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.51s
    let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let n = words.iter().rev().nth(1).and_then(|w| w.parse::<u64>().ok());
        match (n, words.last()) {
            (Some(n), Some(&"passed")) => t.passed += n,
            (Some(n), Some(&"failed")) => t.failed += n,
            (Some(n), Some(&"ignored")) => t.ignored += n,
            _ => {}
        }
    }
}

/// Where the tests record themselves as skipped (`mcblast/tests/common`'s
/// `skipped`): libtest counts a test that returns early as passed, so each
/// writes `SKIP binary::test: why` here, and `test` moves it to skipped.
const SKIP_LOG: &str = "MCBLAST_SKIP_LOG";

fn skip_log() -> PathBuf {
    std::env::temp_dir().join(format!("mcblast-xtask-test-skips-{}.log", std::process::id()))
}

/// The distinct tests of a skip log, each `binary::test: why`.
fn skips(log: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    log.lines()
        .filter_map(|l| l.strip_prefix("SKIP "))
        .filter(|l| seen.insert(l.split(": ").next().unwrap_or(l).to_string()))
        .map(str::to_string)
        .collect()
}

/// Runs cargo test with the given arguments, echoing its output and tallying results.
fn cargo_test(args: &[&str], t: &mut Tally) -> Result<bool> {
    let mut cmd = cargo();
    cmd.current_dir(root()).arg("test").args(args).env(SKIP_LOG, skip_log()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line?;
        println!("{line}");
        tally_line(t, &line);
    }
    Ok(child.wait()?.success())
}

/// Namespaces our tests and the lab create start with one of these.
const NS_PREFIXES: &[&str] = &["mcbt", "mcb-", "mcbb", kernels::PREFIX];

fn leftovers() -> Vec<String> {
    let mut v: Vec<String> = output(Command::new("ip").args(["netns", "list"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| NS_PREFIXES.iter().any(|p| n.starts_with(p)))
        .map(|n| format!("network namespace {n}"))
        .collect();
    v.extend(
        output(Command::new("ip").args(["-d", "link", "show"]))
            .lines()
            .filter(|l| l.contains("prog/xdp") || l.contains(" xdp"))
            .map(|l| format!("XDP program still attached: {}", l.trim())),
    );
    // Processes the tests start, by what their command lines hold: the ssh
    // test's sshds and the Prometheus test's server (config in their temp
    // directories), the OVN lab's daemons (run from /run/mcblast-ovn), and
    // what `mcblast run` starts (its reaper, and receivers and senders that
    // stop when the run's pipe closes).
    let ours = |l: &str| -> Option<&str> {
        if l.contains("sshd") && l.contains("mcblast-ssh-test-") {
            Some("sshd")
        } else if l.contains("prometheus") && l.contains("mcblast-prom-test-") {
            Some("prometheus")
        } else if l.contains("/run/mcblast-ovn/") {
            Some("OVN/OVS daemon of a lab")
        } else if l.contains("mcblast") && (l.contains(" run-reaper ") || l.contains(" --stop-on-stdin-eof ")) {
            Some("mcblast run's process")
        } else {
            None
        }
    };
    let ps = output(Command::new("ps").args(["-eo", "pid=,args="]));
    v.extend(ps.lines().filter_map(|l| ours(l).map(|what| format!("{what} still running: {}", l.trim()))));
    if let Ok(dirs) = std::fs::read_dir("/run/mcblast-ovn") {
        v.extend(dirs.flatten().map(|d| format!("OVN lab directory {}", d.path().display())));
    }
    // The receiver's drop tracer (tp_btf kfree_skb) and its counter at tc
    // ingress (tcx), when bpftool is there to list programs.
    if let Ok(out) = Command::new("bpftool").args(["prog", "show"]).output() {
        v.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("mcblast_drops") || l.contains("mcblast_tc"))
                .map(|l| format!("program still loaded: {}", l.trim())),
        );
    }
    // Lab impairments (`mcblast lab impair`) pinned in bpffs: anything left
    // under /sys/fs/bpf/mcblast outlived its lab.
    v.extend(pinned(std::path::Path::new("/sys/fs/bpf/mcblast")).into_iter().map(|p| format!("pinned BPF object: {p}")));
    v
}

/// Every file below `dir` (none when it does not exist).
fn pinned(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(pinned(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

fn test() -> Result<()> {
    if !is_root() {
        bail!("the tests create network namespaces and attach XDP programs: run them as root (sudo -E cargo xtask test)");
    }
    setup()?;
    let before = leftovers();
    let mut t = Tally::default();
    let _ = std::fs::remove_file(skip_log());
    let mut ok = cargo_test(&["--workspace", "--exclude", "mcblast-ebpf", "--no-fail-fast", "--lib", "--bins", "--tests"], &mut t)?;
    ok &= cargo_test(&["--workspace", "--exclude", "mcblast-ebpf", "--doc"], &mut t)?;
    // Tests that could not run here said so: skipped, not passed.
    let skipped = skips(&std::fs::read_to_string(skip_log()).unwrap_or_default());
    let _ = std::fs::remove_file(skip_log());
    t.passed = t.passed.saturating_sub(skipped.len() as u64);
    t.ignored += skipped.len() as u64;
    if !skipped.is_empty() {
        println!("xtask test: {} test(s) could not run here and are skipped:\n  {}", skipped.len(), skipped.join("\n  "));
    }
    // The guide builds and every link in it resolves.
    match docs::docs(&root()) {
        Ok(_) => t.passed += 1,
        Err(e) => {
            eprintln!("xtask: docs failed: {e:#}");
            t.failed += 1;
            ok = false;
        }
    }
    if let Err(e) = fuzz(20) {
        eprintln!("xtask: fuzz run failed: {e:#}");
        t.failed += 1;
        ok = false;
    } else {
        t.passed += 1;
    }
    // The downloadable binaries and .debs, built and checked (qemu-user, a Debian 11 chroot).
    match dist::dist(true) {
        Ok(n) => t.passed += n,
        Err(e) => {
            eprintln!("xtask: dist failed: {e:#}");
            t.failed += 1;
            ok = false;
        }
    }
    // The smoke suite on the host kernel and on Debian 13, 12 and 11 under QEMU (about 4 minutes).
    if let Err(e) = kernels::test() {
        eprintln!("xtask: {e:#}");
        t.failed += 1;
        ok = false;
    } else {
        t.passed += 1;
    }
    let after: Vec<String> = leftovers().into_iter().filter(|l| !before.contains(l)).collect();
    if !after.is_empty() {
        eprintln!("xtask: the tests left these behind:\n  {}", after.join("\n  "));
        t.failed += 1;
        ok = false;
    }
    println!("xtask test: {} passed, {} failed, {} skipped", t.passed, t.failed, t.ignored);
    if !ok {
        bail!("tests failed");
    }
    Ok(())
}

fn fuzz(secs: u64) -> Result<()> {
    let have_fuzz = output(cargo().args(["fuzz", "--version"])).contains(CARGO_FUZZ);
    if !have_fuzz {
        run(cargo().args(["install", "cargo-fuzz", "--version", CARGO_FUZZ, "--locked", "--force"]))?;
    }
    run(cargo()
        .current_dir(root().join("fuzz"))
        .env("RUSTUP_TOOLCHAIN", NIGHTLY)
        .args(["fuzz", "run", "wire_header", "--", &format!("-max_total_time={secs}"), "-max_len=9000"]))
}

/// Children killed (SIGTERM, then reaped) when dropped.
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

/// Removes the lab when dropped, however the demo ends.
struct LabGuard(PathBuf);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(&self.0).args(["lab", "down"]).status();
    }
}

fn demo() -> Result<()> {
    setup()?;
    if !is_root() {
        bail!("the demo creates network namespaces and attaches XDP programs: run it as root");
    }
    run(cargo().current_dir(root()).args(["build", "--release", "-p", "mcblast"]))?;
    let bin = root().join("target/release/mcblast");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst)).context("installing Ctrl-C handler")?;

    run(Command::new(&bin).args(["lab", "down"]))?;
    run(Command::new(&bin).args(["lab", "up", "--receivers", "9"]))?;
    let _lab = LabGuard(bin.clone());

    let mut procs = Procs(Vec::new());
    let mut readers = Vec::new();
    for i in 1..=9 {
        let node = format!("r{i}");
        let mut child = Command::new(&bin)
            .args(["lab", "exec", &node, "--", "mcblast", "recv", "--interface", "eth0", "-i", "0", "-t", "40"])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the receiver in {node}"))?;
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first)?;
        if first.is_empty() {
            bail!("receiver {node} exited before it was ready");
        }
        readers.push((node.clone(), first, out));
        procs.0.push((node, child));
    }
    wait_for_members(9)?;
    eprintln!("xtask: 9 receivers joined 239.0.0.1; sending 10 s at 100 Mbit/s with 8192-byte datagrams");
    let st = Command::new(&bin)
        .args(["lab", "exec", "sender", "--", "mcblast", "send", "--interface", "eth0", "-b", "100M", "-l", "8192", "-t", "10"])
        .status()?;
    if !st.success() {
        bail!("the sender failed: {st}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (_, c) in &mut procs.0 {
        while c.try_wait()?.is_none() {
            if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
                bail!("receivers did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (node, first, mut rest) in readers {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut rest, &mut text)?;
        println!("===== receiver {node} =====\n{first}{text}");
    }
    procs.0.clear();
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    setup()?;
    if !is_root() {
        bail!("the benchmark creates network namespaces and attaches XDP programs: run it as root");
    }
    run(cargo().current_dir(root()).args(["build", "--release", "-p", "mcblast", "-p", "mcblast-benches"]))?;
    // `bench recv ...`: the receivers' attach points; otherwise the sender's engines.
    let (bin, args) = match args.first().map(String::as_str) {
        Some("recv") => ("recv-bench", &args[1..]),
        _ => ("lab-bench", args),
    };
    run(Command::new(root().join("target/release").join(bin))
        .current_dir(root())
        .arg("--mcblast")
        .arg(root().join("target/release/mcblast"))
        .args(args))
}

/// Waits (bounded) until the lab bridge lists `n` members of the default group.
fn wait_for_members(n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let prefix = std::env::var("MCBLAST_LAB_PREFIX").unwrap_or_else(|_| "mcb-".into());
        let mdb = output(Command::new("bridge").args(["-n", &format!("{prefix}sw"), "mdb", "show"]));
        let members = mdb.lines().filter(|l| l.contains("239.0.0.1")).count();
        if members >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {members} of {n} receivers appear in the bridge's group table after 15 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn tallies_cargo_lines() {
        let mut t = Tally::default();
        tally_line(&mut t, "test result: ok. 17 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.51s");
        tally_line(&mut t, "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        tally_line(&mut t, "running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (20, 1, 2));
    }

    #[test]
    fn counts_each_skipped_test_once() {
        let log = "SKIP send::a: needs root\nSKIP send::a: needs root\nnoise\nSKIP lab::b: no: really\n";
        assert_eq!(skips(log), ["send::a: needs root", "lab::b: no: really"]);
    }
}
