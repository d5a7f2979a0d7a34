//! `cargo xtask kernels`: mcblast's smoke suite (`xtask/kernels/smoke.sh`) on
//! other kernels, and the compatibility table it produces.
//!
//! Each guest kernel is a Debian cloud kernel package (`linux-image-cloud-amd64`
//! of its suite), fetched with `apt-get download` through a private apt
//! configuration under `target/kernels/` (the host's sources are not touched;
//! the mirror is the one the host's apt uses) and unpacked with `dpkg-deb -x`.
//! It boots under QEMU with software emulation (TCG: no nested KVM here), from
//! an initramfs made of this machine's own binaries (mcblast, iproute2,
//! nftables, kmod, busybox) with the shared libraries they load, plus the
//! guest kernel's network modules. The guest's init runs the smoke script,
//! which builds the lab inside the guest (no host network is involved), and
//! writes its results to the second serial port, a file on the host. The host
//! kernel gets the same script directly, on a lab of its own prefix (`mcbk<pid>-`).
//! The results become `docs/kernels.md` (feature × kernel), never by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{output, root, run};

/// The smoke suite, run in every guest and on the host.
const SMOKE: &str = include_str!("../kernels/smoke.sh");
/// PID 1 of the guest's initramfs.
const INIT: &str = include_str!("../kernels/init.sh");
/// The lab prefix of the smoke runs starts so: `mcbk-` in the guests, and
/// `mcbk<pid>-` on the host, where other runs of it (other work trees) may run at the same time.
pub const PREFIX: &str = "mcbk";
/// Datagrams per sender engine (smoke.sh's NE).
const NE: u64 = 200;
/// Wall-clock limit of one guest, boot to power-off, and of the host's run.
const GUEST_LIMIT: Duration = Duration::from_secs(8 * 60);
const HOST_LIMIT: Duration = Duration::from_secs(5 * 60);

/// A guest kernel: the Debian suite whose `linux-image-cloud-amd64` it is
/// (`series`: its kernel's major.minor, for `--only`).
pub struct Guest {
    pub suite: &'static str,
    pub distro: &'static str,
    pub series: &'static str,
}

pub const GUESTS: &[Guest] = &[
    Guest { suite: "trixie", distro: "Debian 13", series: "6.12" },
    Guest { suite: "bookworm", distro: "Debian 12", series: "6.1" },
    Guest { suite: "bullseye", distro: "Debian 11", series: "5.10" },
];

/// Host binaries copied into the initramfs (with their libraries), and where.
const HOST_BINS: &[(&str, &str)] = &[
    ("ip", "usr/sbin/ip"),
    ("bridge", "usr/sbin/bridge"),
    ("tc", "usr/sbin/tc"),
    ("nft", "usr/sbin/nft"),
    ("kmod", "usr/bin/kmod"),
];
/// kmod's personalities; `/sbin/modprobe` is also what the kernel runs to load a module on demand.
const KMOD_LINKS: &[&str] = &["modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo"];
/// Guest modules: everything below these paths, plus what they depend on.
const MODULE_ROOTS: &[&str] = &[
    "kernel/net/bridge/",
    "kernel/net/netfilter/",
    "kernel/net/ipv4/",
    "kernel/net/ipv6/",
    "kernel/net/sched/",
    "kernel/net/core/",
    "kernel/net/llc/",
    "kernel/net/802/",
    "kernel/net/8021q/",
    "kernel/net/packet/",
    "kernel/drivers/net/veth.ko",
    "kernel/drivers/net/dummy.ko",
    "kernel/drivers/net/vxlan",
];

fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Downloads, unpacked kernels, initramfs parts, and each run's serial logs.
fn kdir() -> PathBuf {
    target().join("kernels")
}

/// `target/<profile>/mcblast`.
fn bin(profile: &str) -> PathBuf {
    target().join(profile).join("mcblast")
}

/// Removes a directory when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(p: PathBuf) -> Result<TempDir> {
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes a file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ------------------------------------------------------------------ kernels

/// A guest kernel unpacked: its vmlinuz and the module tree of its package.
struct Unpacked {
    package: String,
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

/// The host's Debian mirror: the repository its apt reads its own release from.
fn mirror() -> Result<String> {
    let codename = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_default();
    let targets = output(Command::new("apt-get").args([
        "indextargets",
        "--format",
        "$(REPO_URI) $(RELEASE) $(ORIGIN)",
        "Identifier: Packages",
    ]));
    targets
        .lines()
        .filter_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v.len() == 3 && v[2] == "Debian").then(|| (v[0].to_string(), v[1] == codename))
        })
        .max_by_key(|(_, own)| *own)
        .map(|(uri, _)| uri)
        .context("no Debian repository in the host's apt sources (apt-get indextargets); run apt-get update")
}

/// Downloads (once) and unpacks the suite's cloud kernel under `target/kernels/<suite>/`.
fn fetch(g: &Guest) -> Result<Unpacked> {
    let dir = kdir().join(g.suite);
    std::fs::create_dir_all(&dir)?;
    let deb = || -> Option<PathBuf> {
        std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("linux-image-"))
        })
    };
    if deb().is_none() {
        // A private apt: its own sources list, lists, cache and (empty) dpkg status.
        let apt = dir.join("apt");
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(apt.join(d))?;
        }
        std::fs::write(apt.join("status"), "")?;
        let sources = apt.join("sources.list");
        std::fs::write(
            &sources,
            format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {} main\n", mirror()?, g.suite),
        )?;
        let opts: Vec<String> = [
            format!("Dir::Etc::sourcelist={}", sources.display()),
            "Dir::Etc::sourceparts=-".into(),
            format!("Dir::State::Lists={}", apt.join("lists").display()),
            format!("Dir::State::status={}", apt.join("status").display()),
            format!("Dir::Cache={}", apt.join("cache").display()),
            "APT::Architecture=amd64".into(),
            "Acquire::Languages=none".into(),
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        run(Command::new("apt-get").args(&opts).args(["-q", "update"]))?;
        let deps = output(Command::new("apt-cache").args(&opts).args(["depends", "linux-image-cloud-amd64"]));
        let pkg = deps
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
            .with_context(|| format!("{}: linux-image-cloud-amd64 depends on no linux-image package", g.suite))?
            .trim()
            .to_string();
        // Into a directory of its own first: an interrupted download leaves no .deb behind.
        let dl = apt.join("dl");
        std::fs::create_dir_all(&dl)?;
        run(Command::new("apt-get").current_dir(&dl).args(&opts).args(["-q", "download", &pkg]))?;
        for e in std::fs::read_dir(&dl)?.flatten() {
            std::fs::rename(e.path(), dir.join(e.file_name()))?;
        }
        let _ = std::fs::remove_dir_all(&apt);
    }
    let deb = deb().context("apt-get download left no .deb")?;
    let package = deb.file_name().unwrap().to_string_lossy().trim_end_matches(".deb").to_string();
    let x = dir.join("x");
    let stamp = x.join(".unpacked");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(package.as_str()) {
        let _ = std::fs::remove_dir_all(&x);
        std::fs::create_dir_all(&x)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
        std::fs::write(&stamp, &package)?;
    }
    let moddir =
        ["lib/modules", "usr/lib/modules"].iter().map(|d| x.join(d)).find(|d| d.is_dir()).context("no modules")?;
    let release = std::fs::read_dir(&moddir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("no module directory")?;
    let vmlinuz = x.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} has no {}", deb.display(), vmlinuz.display());
    }
    Ok(Unpacked { package, release: release.clone(), vmlinuz, modules: moddir.join(release) })
}

// ---------------------------------------------------------------- initramfs

/// `find . | cpio -o -H newc` of `dir` into `out`.
fn cpio(dir: &Path, out: &Path) -> Result<()> {
    let f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let st = Command::new("sh")
        .current_dir(dir)
        .args(["-c", "find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0"])
        .stdout(f)
        .status()
        .context("running cpio")?;
    if !st.success() {
        bail!("cpio of {} failed: {st}", dir.display());
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().unwrap())?;
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    std::fs::create_dir_all(link.parent().unwrap())?;
    std::os::unix::fs::symlink(target, link).with_context(|| format!("linking {}", link.display()))
}

/// The shared libraries (and the loader) `ldd` says a binary loads.
fn libs(bin: &Path) -> Vec<PathBuf> {
    output(Command::new("ldd").arg(bin))
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=> ") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The userspace part of every guest's initramfs: init, the smoke script, the
/// binaries and their libraries, busybox for the rest.
fn userspace(mcblast: &Path, out: &Path) -> Result<()> {
    let stage = TempDir::new(kdir().join("stage-user"))?;
    let s = &stage.0;
    for d in ["proc", "sys", "dev", "run", "tmp", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin"] {
        std::fs::create_dir_all(s.join(d))?;
    }
    symlink("/run", &s.join("var/run"))?;
    std::fs::write(s.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(s.join("etc/group"), "root:x:0:\n")?;
    let mut bins: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (cmd, dest) in HOST_BINS {
        let path = output(Command::new("sh").args(["-c", &format!("command -v {cmd}")])).trim().to_string();
        if path.is_empty() {
            bail!("{cmd} is not installed (cargo xtask setup installs it)");
        }
        bins.push((PathBuf::from(path), s.join(dest)));
    }
    let busybox = PathBuf::from(output(Command::new("sh").args(["-c", "command -v busybox"])).trim());
    if !busybox.is_file() {
        bail!("busybox is not installed (cargo xtask setup installs busybox-static)");
    }
    bins.push((busybox.clone(), s.join("bin/busybox")));
    for (from, to) in &bins {
        copy(from, to)?;
        for lib in libs(from) {
            copy(&lib, &s.join(lib.strip_prefix("/")?))?;
        }
    }
    // mcblast without its debug information (6 of the release build's 38 MB).
    let st = Command::new("objcopy").arg("--strip-debug").arg(mcblast).arg(s.join("usr/bin/mcblast")).status()?;
    if !st.success() {
        bail!("objcopy --strip-debug {} failed", mcblast.display());
    }
    for lib in libs(mcblast) {
        copy(&lib, &s.join(lib.strip_prefix("/")?))?;
    }
    for l in KMOD_LINKS {
        symlink("/usr/bin/kmod", &s.join("sbin").join(l))?;
    }
    // busybox applets in /bin, except what the host binaries above provide.
    let ours: Vec<&str> = HOST_BINS.iter().map(|(c, _)| *c).chain(KMOD_LINKS.iter().copied()).collect();
    for applet in output(Command::new(&busybox).arg("--list")).lines() {
        if !applet.is_empty() && applet != "busybox" && !ours.contains(&applet) {
            symlink("busybox", &s.join("bin").join(applet))?;
        }
    }
    std::fs::write(s.join("init"), INIT)?;
    std::fs::write(s.join("smoke.sh"), SMOKE)?;
    run(Command::new("chmod").arg("755").arg(s.join("init")).arg(s.join("smoke.sh")))?;
    cpio(s, out)
}

/// The guest kernel's network modules (and their dependencies) with kmod's
/// indexes, as a cpio archive; cached per package.
fn modules(k: &Unpacked, out: &Path) -> Result<()> {
    // The package, and the version of the archive's layout.
    let stamp = out.with_extension("package");
    let made_of = format!("{} 2", k.package);
    if out.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(made_of.as_str()) {
        return Ok(());
    }
    // modules.dep of the whole package, to close the selection over dependencies.
    // depmod -b B reads B/lib/modules/<release>: B is the package root, or its usr/ when merged.
    let base = k.modules.parent().and_then(Path::parent).and_then(Path::parent).context("module tree")?;
    run(Command::new("depmod").arg("-b").arg(base).arg(&k.release))?;
    let dep = std::fs::read_to_string(k.modules.join("modules.dep"))?;
    let deps: BTreeMap<&str, Vec<&str>> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.trim(), d.split_whitespace().collect()))
        .collect();
    let mut want: Vec<&str> = deps.keys().copied().filter(|m| MODULE_ROOTS.iter().any(|r| m.starts_with(r))).collect();
    let mut i = 0;
    while i < want.len() {
        for d in deps.get(want[i]).into_iter().flatten() {
            if !want.contains(d) {
                want.push(d);
            }
        }
        i += 1;
    }
    let stage = TempDir::new(kdir().join("stage-modules"))?;
    let m = stage.0.join("lib/modules").join(&k.release);
    for rel in &want {
        copy(&k.modules.join(rel), &m.join(rel))?;
    }
    // xz-compressed modules (Debian 13) uncompressed: the guest's kmod offers each to the kernel
    // as it is first ("Invalid ELF header magic" on the console) before it unpacks it itself.
    run(Command::new("find").arg(&m).args(["-name", "*.ko.xz", "-exec", "xz", "-d", "{}", "+"]))?;
    for f in ["modules.builtin", "modules.builtin.modinfo", "modules.order"] {
        if k.modules.join(f).is_file() {
            copy(&k.modules.join(f), &m.join(f))?;
        }
    }
    run(Command::new("depmod").arg("-b").arg(&stage.0).arg(&k.release))?;
    cpio(&stage.0, out)?;
    std::fs::write(&stamp, &made_of)?;
    eprintln!("xtask: {} modules of {} in {}", want.len(), k.package, out.display());
    Ok(())
}

// ---------------------------------------------------------------------- runs

/// One step of the smoke suite, as the script reported it.
#[derive(Default, Debug, Clone)]
pub struct Step {
    pub rc: i32,
    pub secs: f64,
    pub out: Vec<String>,
    pub err: Vec<String>,
}

/// One kernel's run.
#[derive(Default, Debug)]
pub struct Run {
    /// Column head: `host (6.18)`, `Debian 12 cloud (6.1)`.
    pub column: String,
    /// `uname -r` as the suite saw it.
    pub release: String,
    /// The kernel's package (guests).
    pub package: Option<String>,
    pub steps: BTreeMap<String, Step>,
    /// Seconds from boot until init started the suite (guests), and the suite's own.
    pub boot_secs: Option<f64>,
    pub suite_secs: Option<f64>,
    pub wall_secs: f64,
    /// What went wrong with the harness itself (no boot, time limit), if anything.
    pub problem: Option<String>,
}

/// Reads the `@@MCBK` lines.
pub fn parse(text: &str, run: &mut Run) {
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix("@@MCBK ") else { continue };
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match kind {
            "begin" => run.release = rest.strip_prefix("kernel=").unwrap_or(rest).to_string(),
            "boot" => run.boot_secs = rest.strip_prefix("secs=").and_then(|s| s.parse().ok()),
            "done" => run.suite_secs = rest.strip_prefix("secs=").and_then(|s| s.parse().ok()),
            "step" => {
                let mut it = rest.split_whitespace();
                let name = it.next().unwrap_or_default().to_string();
                let st = run.steps.entry(name).or_default();
                for kv in it {
                    match kv.split_once('=') {
                        Some(("rc", v)) => st.rc = v.parse().unwrap_or(-1),
                        Some(("secs", v)) => st.secs = v.parse().unwrap_or(0.0),
                        _ => {}
                    }
                }
            }
            "out" | "err" => {
                let (name, l) = rest.split_once(' ').unwrap_or((rest, ""));
                let st = run.steps.entry(name.to_string()).or_default();
                if kind == "out" { &mut st.out } else { &mut st.err }.push(l.to_string());
            }
            _ => {}
        }
    }
}

fn major_minor(release: &str) -> String {
    release.split(['.', '-']).take(2).collect::<Vec<_>>().join(".")
}

/// Stops a process group (the host's suite) when dropped, and removes its lab.
struct HostSuite {
    child: Child,
    mcblast: PathBuf,
    prefix: String,
}

impl Drop for HostSuite {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
        let _ = Command::new(&self.mcblast).env("MCBLAST_LAB_PREFIX", &self.prefix).args(["lab", "down"]).output();
    }
}

/// Kills QEMU when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(p: &Path) -> String {
    let mut s = Vec::new();
    let _ = std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut s));
    String::from_utf8_lossy(&s).into_owned()
}

/// The smoke suite on the host's own kernel, on a lab of prefix `mcbk<pid>-`.
fn run_host(mcblast: &Path, stop: &AtomicBool) -> Result<Run> {
    let dir = kdir().join("host");
    std::fs::create_dir_all(&dir)?;
    let tmp = TempDir::new(dir.join("tmp"))?;
    let results = dir.join("results.log");
    std::fs::write(&results, "")?;
    let script = tmp.0.join("smoke.sh");
    std::fs::write(&script, SMOKE)?;
    let prefix = format!("{PREFIX}{}-", std::process::id());
    let t0 = Instant::now();
    eprintln!("xtask: smoke suite on the host kernel (lab prefix {prefix}), at most {} s", HOST_LIMIT.as_secs());
    let child = Command::new("sh")
        .arg(&script)
        .env("MCBLAST", mcblast)
        .env("MCBK_OUT", &results)
        .env("MCBK_TMP", &tmp.0)
        .env("MCBLAST_LAB_PREFIX", &prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the smoke suite")?;
    let mut suite = HostSuite { child, mcblast: mcblast.to_path_buf(), prefix };
    let mut run = Run { column: String::new(), ..Default::default() };
    loop {
        if suite.child.try_wait()?.is_some() {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if t0.elapsed() > HOST_LIMIT {
            run.problem = Some(format!("the suite did not finish in {} s", HOST_LIMIT.as_secs()));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(suite);
    run.wall_secs = t0.elapsed().as_secs_f64();
    parse(&read(&results), &mut run);
    run.column = format!("host ({})", major_minor(&run.release));
    Ok(run)
}

/// Boots one guest kernel under QEMU (TCG) and runs the suite in it.
fn run_guest(g: &Guest, user: &Path, stop: &AtomicBool) -> Result<Run> {
    let k = fetch(g)?;
    let dir = kdir().join(g.suite);
    let mods = dir.join("modules.cpio");
    modules(&k, &mods)?;
    // Concatenated newc archives are one initramfs to the kernel.
    let initrd = TempFile(dir.join("initrd.cpio"));
    let mut data = std::fs::read(user)?;
    data.extend(std::fs::read(&mods)?);
    std::fs::write(&initrd.0, data)?;
    let (console, results) = (dir.join("console.log"), dir.join("results.log"));
    std::fs::write(&results, "")?;
    let mut run = Run {
        column: format!("{} cloud ({})", g.distro, major_minor(&k.release)),
        package: Some(k.package.clone()),
        ..Default::default()
    };
    eprintln!("xtask: booting {} under QEMU (TCG), at most {} s", k.package, GUEST_LIMIT.as_secs());
    let t0 = Instant::now();
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "10", "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "2"])
        .args(["-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-monitor", "none", "-nic", "none"])
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(&initrd.0)
        .args(["-append", "console=ttyS0,115200 panic=-1 loglevel=4 mitigations=off"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("qemu.log"))?);
    let mut qemu = Qemu(cmd.spawn().context("starting qemu-system-x86_64")?);
    loop {
        if let Some(st) = qemu.0.try_wait()? {
            if !st.success() {
                run.problem = Some(format!("QEMU exited with {st} (see {})", dir.join("qemu.log").display()));
            }
            break;
        }
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if t0.elapsed() > GUEST_LIMIT {
            run.problem = Some(format!("the guest did not finish in {} s: stopped", GUEST_LIMIT.as_secs()));
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(qemu);
    run.wall_secs = t0.elapsed().as_secs_f64();
    parse(&read(&results), &mut run);
    if run.problem.is_none() && run.suite_secs.is_none() {
        let last = read(&console).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().to_string();
        run.problem = Some(format!("the guest stopped before the suite ended; console's last line: {last}"));
    }
    Ok(run)
}

// --------------------------------------------------------------- evaluation

/// One cell of the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Yes,
    /// Works, with a remark.
    YesBut(String),
    No(String),
    /// Could not be tried (an earlier step failed).
    NotRun(String),
}

impl Cell {
    pub fn is_yes(&self) -> bool {
        matches!(self, Cell::Yes | Cell::YesBut(_))
    }
}

fn json(st: &Step) -> Vec<Value> {
    st.out.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The first line of standard error that says what failed; after a verifier
/// log, also the verifier's own last word (the line before its statistics).
fn first_error(st: &Step) -> String {
    let first = st
        .err
        .iter()
        .position(|l| l.starts_with("mcblast: ") && !l.contains("no loss attribution"))
        .or_else(|| st.err.iter().position(|l| !l.trim().is_empty()));
    let Some(i) = first else { return format!("exit status {}", st.rc) };
    let line = st.err[i].clone();
    if !line.contains("verifier log") {
        return line;
    }
    let is_stat = |l: &str| {
        ["verification time", "stack depth", "processed ", "max_states_per_insn"].iter().any(|p| l.starts_with(p))
    };
    let is_insn = |l: &str| l.starts_with(';') || l.split(':').next().is_some_and(|n| n.parse::<u32>().is_ok());
    match st.err[i + 1..].iter().rev().find(|l| !l.trim().is_empty() && !is_stat(l) && !is_insn(l)) {
        Some(why) => format!("{line} … {why}"),
        None => line,
    }
}

/// The step's failure as a cell, or None when it exited 0.
fn failed(run: &Run, name: &str) -> Option<Cell> {
    let Some(st) = run.steps.get(name) else {
        return Some(Cell::NotRun(match &run.problem {
            Some(p) => format!("not reached: {p}"),
            None => "not reached".into(),
        }));
    };
    match st.rc {
        0 => None,
        125 => Some(Cell::NotRun(first_error(st))),
        124 => Some(Cell::No(format!("{name} hit its time limit after {:.0} s", st.secs))),
        137 | 143 => Some(Cell::No(format!(
            "{name} was killed (SIG{}) after {:.0} s, before its own time limit",
            if st.rc == 137 { "KILL" } else { "TERM" },
            st.secs
        ))),
        _ => Some(Cell::No(first_error(st))),
    }
}

fn ok_step(run: &Run, name: &str) -> Cell {
    failed(run, name).unwrap_or(Cell::Yes)
}

fn of_type<'a>(v: &'a [Value], ty: &str, counter: Option<&str>) -> Option<&'a Value> {
    v.iter().find(|j| j["type"] == ty && counter.is_none_or(|c| j["counter"] == c))
}

/// The sender's run id and datagrams sent.
fn sent(run: &Run, send: &str) -> Result<(u64, u64), Cell> {
    if let Some(c) = failed(run, send) {
        return Err(match c {
            Cell::No(e) => Cell::NotRun(format!("the sender failed: {e}")),
            c => c,
        });
    }
    let j = json(&run.steps[send]);
    let s = of_type(&j, "summary", None).ok_or_else(|| Cell::No("the sender printed no summary".into()))?;
    Ok((s["run"].as_u64().unwrap_or(0), s["sent"].as_u64().unwrap_or(0)))
}

/// A counter's flow of run `id` in a receiver's output: (received, lost).
fn flow(j: &[Value], counter: &str, id: u64) -> Option<(u64, u64)> {
    let s = of_type(j, "summary", Some(counter))?;
    let f = s["flows"].as_array()?.iter().find(|f| f["run"].as_u64() == Some(id))?;
    Some((f["received"].as_u64()?, f["lost"].as_u64()?))
}

fn count_cell(what: &str, got: Option<(u64, u64)>, want: u64, lost: u64) -> Option<Cell> {
    match got {
        None => Some(Cell::No(format!("the {what} counted none of the {want} datagrams"))),
        Some((r, l)) if r != want || l != lost => {
            Some(Cell::No(format!("the {what} counted {r} of {want} datagrams, {l} lost (expected {lost})")))
        }
        Some(_) => None,
    }
}

fn mode_name(mode: &str) -> &'static str {
    match mode {
        "native" => "native XDP",
        "generic" => "generic XDP",
        _ => "tc ingress",
    }
}

/// The receiver test at one attach point and length: both counters count every datagram.
fn recv_cell(run: &Run, mode: &str, len: u32, sink: bool) -> Cell {
    let name = format!("{}_{mode}_{len}", if sink { "sink" } else { "recv" });
    if let Some(c) = failed(run, &name) {
        return c;
    }
    let (id, n) = match sent(run, &format!("send_{mode}_{len}")) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let j = json(&run.steps[&name]);
    let Some(begin) = of_type(&j, "begin", None) else { return Cell::No("the receiver printed no begin line".into()) };
    if begin["xdp_mode"] != mode {
        return Cell::No(format!("attached at {} instead", begin["xdp_mode"]));
    }
    if let Some(c) = count_cell("kernel counter", flow(&j, "kernel", id), n, 0) {
        return c;
    }
    if sink {
        let sunk = of_type(&j, "summary", Some("layers")).and_then(|l| l["sunk"].as_u64());
        if sunk != Some(n) {
            return Cell::No(format!("sunk {} of {n}", sunk.map_or("?".into(), |s| s.to_string())));
        }
    } else if let Some(c) = count_cell("socket counter", flow(&j, "socket", id), n, 0) {
        return c;
    }
    Cell::Yes
}

/// The drop tracer: attached in the attribution test's receiver, and naming its nftables drops.
fn tracer_cells(run: &Run) -> (Cell, Cell) {
    if let Some(c) = failed(run, "recv_drops") {
        let c = match c {
            Cell::No(e) => Cell::NotRun(format!("the receiver failed: {e}")),
            c => c,
        };
        return (c.clone(), c);
    }
    let st = &run.steps["recv_drops"];
    let j = json(st);
    if of_type(&j, "begin", None).and_then(|b| b["drop_tracer"].as_bool()) != Some(true) {
        let why = st
            .err
            .iter()
            .find(|l| l.contains("no loss attribution"))
            .cloned()
            .unwrap_or_else(|| "the receiver's begin line says drop_tracer false".into());
        return (Cell::No(why.clone()), Cell::NotRun("the drop tracer did not attach".into()));
    }
    let (id, n) = match sent(run, "send_auto") {
        Ok(v) => v,
        Err(c) => return (Cell::Yes, c),
    };
    let want = n / 10;
    let layers = of_type(&j, "summary", Some("layers"));
    let dropped = layers.and_then(|l| l["kernel_dropped"].as_u64()).unwrap_or(0);
    let named = layers
        .and_then(|l| l["reasons"].as_array())
        .into_iter()
        .flatten()
        // Without drop reasons (before 5.17): by the function that freed them.
        .find(|r| r["reason"] == "NETFILTER_DROP" || (r["reason"] == "NO_REASON_IN_KERNEL" && r["function"] == "nf_hook_slow"))
        .and_then(|r| r["data"].as_u64())
        .unwrap_or(0);
    let names = if dropped == want && named == want {
        // The socket counter sees the dropped datagrams as sequence gaps.
        match count_cell("socket counter", flow(&j, "socket", id), n - want, want) {
            Some(Cell::No(e)) => Cell::No(e),
            _ => Cell::Yes,
        }
    } else {
        Cell::No(format!("{dropped} kernel drops, {named} as NETFILTER_DROP (or in nf_hook_slow), of the {want} nftables dropped"))
    };
    (Cell::Yes, names)
}

/// The drop tracer at the socket: a burst overflowing a 4 KiB receive
/// buffer, every overflow charged to the socket layer (datagrams of every
/// class, as the kernel's Udp RcvbufErrors counts them).
fn rcvbuf_cell(run: &Run) -> Cell {
    if let Some(c) = failed(run, "recv_rcvbuf") {
        return c;
    }
    let j = json(&run.steps["recv_rcvbuf"]);
    let Some(l) = of_type(&j, "summary", Some("layers")) else {
        return Cell::No("no waterfall (the drop tracer did not attach)".into());
    };
    let socket: u64 = l["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["layer"] == "socket")
        .map(|r| ["data", "end", "other", "fragments"].iter().map(|f| r[f].as_u64().unwrap_or(0)).sum::<u64>())
        .sum();
    let errors = l["host"]["udp_rcvbuf_errors"].as_u64();
    match errors {
        Some(e) if e > 0 && e == socket && l["adds_up"] == true => Cell::Yes,
        Some(0) => Cell::No("the burst did not overflow the receive buffer".into()),
        e => {
            let by: Vec<String> = l["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{} in {} ({}): {}", r["reason"], r["function"], r["layer"], r["data"]))
                .collect();
            Cell::No(format!("{socket} charged to the socket, Udp RcvbufErrors {e:?}; drops: {}", by.join(", ")))
        }
    }
}

/// `mcblast lab impair`: attached, and its own counts on clearing (every 10th of N dropped).
fn impair_cell(run: &Run) -> Cell {
    if let Some(c) = failed(run, "impair") {
        return c;
    }
    let (_, n) = match sent(run, "send_auto") {
        Ok(v) => v,
        Err(c) => return c,
    };
    if let Some(c) = failed(run, "impair_clear") {
        return c;
    }
    let j = json(&run.steps["impair_clear"]);
    let Some(c) = of_type(&j, "impair", None) else { return Cell::No("--clear printed no counts".into()) };
    let (seen, dropped) = (c["seen"].as_u64().unwrap_or(0), c["dropped"].as_u64().unwrap_or(0));
    if seen != n || dropped != n / 10 {
        return Cell::No(format!("the impairment saw {seen} and dropped {dropped} of {n} datagrams"));
    }
    // The socket-counter receiver behind the impaired port.
    if let Some(c) = failed(run, "recv_impair") {
        return c;
    }
    let id = run.steps.get("send_auto").and_then(|s| of_type(&json(s), "summary", None)?["run"].as_u64());
    let got = id.and_then(|id| flow(&json(&run.steps["recv_impair"]), "socket", id));
    count_cell("impaired receiver's socket counter", got, n - n / 10, n / 10).unwrap_or(Cell::Yes)
}

/// A sender engine: it ran, sent NE datagrams, and the socket receiver counted them all.
fn engine_cell(run: &Run, engine: &str, id: u64) -> Cell {
    let name = format!("engine_{engine}");
    if let Some(c) = failed(run, &name) {
        return c;
    }
    let j = json(&run.steps[&name]);
    let Some(s) = of_type(&j, "summary", None) else { return Cell::No("the sender printed no summary".into()) };
    if s["sent"].as_u64() != Some(NE) {
        return Cell::No(format!("sent {} of {NE}", s["sent"]));
    }
    if failed(run, "erecv").is_some() {
        return Cell::YesBut("sent; no receiver counted it".into());
    }
    match count_cell("socket counter", flow(&json(&run.steps["erecv"]), "socket", id), NE, 0) {
        Some(c) => c,
        None => Cell::Yes,
    }
}

fn socket_cell(run: &Run) -> Cell {
    if let Some(c) = failed(run, "erecv") {
        return c;
    }
    let j = json(&run.steps["erecv"]);
    let exact = of_type(&j, "summary", Some("socket"))
        .and_then(|s| s["flows"].as_array())
        .into_iter()
        .flatten()
        .any(|f| f["received"].as_u64() == Some(NE) && f["lost"].as_u64() == Some(0));
    if exact { Cell::Yes } else { Cell::No("no engine's flow was counted exactly".into()) }
}

/// Feature rows: (row head, cell per run).
pub fn features(run: &Run) -> Vec<(String, Cell)> {
    let mut rows = vec![
        ("`mcblast --version` (the host's glibc 2.36 build)".to_string(), ok_step(run, "version")),
        ("`mcblast lab up --receivers 2` (namespaces, veth, bridge, IGMP querier)".into(), ok_step(run, "lab_up")),
        ("`mcblast probe -I eth0 --json`".into(), ok_step(run, "probe")),
    ];
    for len in [1470, 8192] {
        for mode in ["native", "generic", "tc"] {
            rows.push((
                format!("recv, kernel counter at {}, {len} B", mode_name(mode)),
                recv_cell(run, mode, len, false),
            ));
        }
    }
    for len in [1470, 8192] {
        for mode in ["native", "generic", "tc"] {
            rows.push((format!("recv --sink at {}, {len} B", mode_name(mode)), recv_cell(run, mode, len, true)));
        }
    }
    rows.push(("recv --counter socket".into(), socket_cell(run)));
    let (attach, names) = tracer_cells(run);
    rows.push(("drop tracer (tp_btf kfree_skb) attaches".into(), attach));
    rows.push(("drop tracer names nftables drops (NETFILTER_DROP; before 5.17, by nf_hook_slow)".into(), names));
    rows.push(("drop tracer charges receive-buffer overflows to the socket (= Udp RcvbufErrors)".into(), rcvbuf_cell(run)));
    rows.push(("`mcblast lab impair` (a tc egress program on the bridge port)".into(), impair_cell(run)));
    for (i, e) in ["socket", "mmsg", "gso", "uring", "xdp"].iter().enumerate() {
        rows.push((format!("send --engine {e}"), engine_cell(run, e, 11 + i as u64)));
    }
    rows.push(("`mcblast lab down`".into(), ok_step(run, "lab_down")));
    rows
}

/// `mcblast probe`'s checks: (check, value) in the probe's order.
fn probe_checks(run: &Run) -> Vec<(String, String)> {
    let Some(st) = run.steps.get("probe") else { return Vec::new() };
    let j = json(st);
    let Some(p) = of_type(&j, "probe", None) else { return Vec::new() };
    let mut v: Vec<(String, String)> = p["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let value = c["value"].as_str().unwrap_or("?").to_string();
            let cell = match c["ok"].as_bool() {
                Some(false) if value == "no" => "no".to_string(),
                Some(false) => format!("no ({value})"),
                _ => value,
            };
            (c["name"].as_str().unwrap_or("?").to_string(), cell)
        })
        .collect();
    if let Some(e) = p["auto_engine"].as_str() {
        v.push(("send --engine auto would use".into(), e.to_string()));
    }
    v
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The report: the feature table, its notes, the probe table, and the runs.
pub fn markdown(runs: &[Run], command: &str, version: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Kernel compatibility\n");
    let _ = writeln!(
        md,
        "Generated by `{command}` ({}, mcblast {version}); do not edit by hand: run it again.\n",
        output(Command::new("date").args(["-u", "+%Y-%m-%d"])).trim()
    );
    md.push_str(
        "Each column is one kernel running mcblast's smoke suite (`xtask/kernels/smoke.sh`): the host's own \
kernel, and Debian cloud kernels (`linux-image-cloud-amd64`) booted under QEMU with software emulation (TCG), \
2 vCPUs, 2 GiB, from an initramfs of the host's own binaries (mcblast, iproute2, nftables, kmod, busybox, \
with their glibc 2.36 libraries) and the kernel package's network modules. In each, the suite brings up \
`mcblast lab up --receivers 2` and, for each attach point (native XDP, generic XDP, tc ingress: a tcx link, or a \
classic clsact filter before Linux 6.6) and 1470 and 8192-byte datagrams, counts 300 \
datagrams (`send -e mmsg --pps 300`) with `recv` on r1 (both counters) and `recv --sink` on r2; sends 200 \
datagrams with each engine to a `--counter socket` receiver; drops every 10th datagram with an nftables rule \
in r1 (the drop tracer must name them) and with `mcblast lab impair` on r2's port (counted there by a \
`--counter socket` receiver); overflows a 4 KiB receive buffer on r2 with 300 datagrams of 8192 bytes (the \
drop tracer must charge every overflow to the socket). `yes` means the step ran and every count was exact; a note gives the first error \
line or the wrong count.\n\n",
    );
    let table: Vec<Vec<(String, Cell)>> = runs.iter().map(features).collect();
    let _ = write!(md, "| feature |");
    for r in runs {
        let _ = write!(md, " {} |", r.column);
    }
    let _ = write!(md, "\n|---|");
    for _ in runs {
        md.push_str("---|");
    }
    md.push('\n');
    let mut notes: Vec<String> = Vec::new();
    let mut note = |text: String| -> usize {
        match notes.iter().position(|n| *n == text) {
            Some(i) => i + 1,
            None => {
                notes.push(text);
                notes.len()
            }
        }
    };
    for (i, (head, _)) in table.first().map(|t| t.as_slice()).unwrap_or_default().iter().enumerate() {
        let _ = write!(md, "| {head} |");
        for col in &table {
            let cell = match &col[i].1 {
                Cell::Yes => "yes".to_string(),
                Cell::YesBut(t) => format!("yes [{}]", note(t.clone())),
                Cell::No(t) => format!("**no** [{}]", note(t.clone())),
                Cell::NotRun(t) => format!("– [{}]", note(t.clone())),
            };
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    if !notes.is_empty() {
        md.push_str("\n**no**: tried and failed; –: not tried, because what it needs failed first.\n\n");
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, md_escape(n));
        }
    }

    md.push_str("\n## What `mcblast probe` found\n\n");
    md.push_str("`mcblast lab exec sender -- mcblast probe -I eth0 --json` in each kernel:\n\n| check |");
    let probes: Vec<Vec<(String, String)>> = runs.iter().map(probe_checks).collect();
    for r in runs {
        let _ = write!(md, " {} |", r.column);
    }
    let _ = write!(md, "\n|---|");
    for _ in runs {
        md.push_str("---|");
    }
    md.push('\n');
    let mut checks: Vec<&String> = Vec::new();
    for p in &probes {
        for (c, _) in p {
            if !checks.contains(&c) {
                checks.push(c);
            }
        }
    }
    for c in checks {
        let _ = write!(md, "| {} |", md_escape(c));
        for p in &probes {
            let v = p.iter().find(|(n, _)| n == c).map_or("–", |(_, v)| v.as_str());
            let _ = write!(md, " {} |", md_escape(v));
        }
        md.push('\n');
    }

    md.push_str("\n## The runs\n\n");
    md.push_str("| column | kernel | package | boot s | suite s | wall s | harness |\n|---|---|---|---|---|---|---|\n");
    for r in runs {
        let f = |v: Option<f64>| v.map_or("–".to_string(), |s| format!("{s:.0}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} | {} |",
            r.column,
            if r.release.is_empty() { "–" } else { &r.release },
            r.package.as_deref().unwrap_or("(host)"),
            f(r.boot_secs),
            f(r.suite_secs),
            r.wall_secs,
            md_escape(r.problem.as_deref().unwrap_or("ok")),
        );
    }
    md
}

/// The cells a committed report says `yes` to: (column, feature).
fn yes_cells(md: &str) -> Vec<(String, String)> {
    let mut cols: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in md.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").map(str::trim).collect();
        if line.starts_with("| feature |") {
            cols = cells[1..].iter().map(|s| s.to_string()).collect();
        } else if line.starts_with("## ") {
            cols.clear();
        } else if !cols.is_empty() && line.starts_with("| ") && cells.len() == cols.len() + 1 {
            for (c, v) in cols.iter().zip(&cells[1..]) {
                if *v == "yes" || v.starts_with("yes [") {
                    out.push((c.clone(), cells[0].to_string()));
                }
            }
        }
    }
    out
}

/// Which kernels to run: `host`, and guests by suite or version (`6.1`, `bookworm`).
fn selected(only: &Option<Vec<String>>, name: &[&str]) -> bool {
    only.as_ref().is_none_or(|o| o.iter().any(|w| name.contains(&w.as_str())))
}

/// Builds mcblast (`release` or `debug`), runs the suite on the chosen kernels, returns the runs.
fn suite(only: &Option<Vec<String>>, profile: &str, stop: &AtomicBool) -> Result<(Vec<Run>, String)> {
    let mut build = crate::cargo();
    build.current_dir(root()).args(["build", "-p", "mcblast"]);
    if profile == "release" {
        build.arg("--release");
    }
    run(&mut build)?;
    let mcblast = bin(profile);
    let version = output(Command::new(&mcblast).arg("--version")).trim().trim_start_matches("mcblast ").to_string();
    std::fs::create_dir_all(kdir())?;
    let mut runs = Vec::new();
    if selected(only, &["host"]) {
        runs.push(run_host(&mcblast, stop)?);
    }
    let guests: Vec<&Guest> = GUESTS.iter().filter(|g| selected(only, &[g.suite, g.series])).collect();
    if !guests.is_empty() {
        let user = kdir().join("userspace.cpio");
        let t = Instant::now();
        userspace(&mcblast, &user)?;
        eprintln!("xtask: guest userspace in {} ({:.1} s)", user.display(), t.elapsed().as_secs_f64());
        for g in guests {
            let r = run_guest(g, &user, stop)?;
            eprintln!(
                "xtask: {} done in {:.0} s{}",
                r.column,
                r.wall_secs,
                r.problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default()
            );
            runs.push(r);
        }
    }
    Ok((runs, version))
}

fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // Only one handler per process: a second call (xtask test) keeps the first.
    let _ = ctrlc::set_handler(move || s.store(true, Ordering::SeqCst));
    stop
}

/// `cargo xtask kernels [--only host,6.1,5.10] [--out FILE]`: writes docs/kernels.md (or FILE);
/// `cargo xtask kernels --check`: what `cargo xtask test` runs (see [`test`]).
pub fn kernels(args: &[String]) -> Result<()> {
    if !crate::is_root() {
        bail!("the smoke suite creates network namespaces and attaches XDP programs: run it as root");
    }
    crate::setup()?;
    let mut only = None;
    let mut out = root().join("docs/kernels.md");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => only = Some(it.next().context("--only needs a list")?.split(',').map(String::from).collect()),
            "--out" => out = PathBuf::from(it.next().context("--out needs a file")?),
            "--check" => return test(),
            _ => bail!("usage: cargo xtask kernels [--only host,6.1,5.10] [--out FILE] [--check]"),
        }
    }
    let t = Instant::now();
    let (runs, version) = suite(&only, "release", &stop_flag())?;
    let mut command = "cargo xtask kernels".to_string();
    for a in args {
        let _ = write!(command, " {a}");
    }
    std::fs::write(&out, markdown(&runs, &command, &version)).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("xtask: wrote {} ({:.0} s in all)", out.display(), t.elapsed().as_secs_f64());
    match runs.iter().filter_map(|r| r.problem.as_ref().map(|p| format!("{}: {p}", r.column))).collect::<Vec<_>>() {
        p if p.is_empty() => Ok(()),
        p => bail!("the harness failed: {}", p.join("; ")),
    }
}

/// For `cargo xtask test`: the suite on every kernel, the report in
/// target/kernels/kernels.md. Fails when a guest did not run the suite to
/// its end, when anything fails on the host kernel, or when a cell that
/// docs/kernels.md says `yes` to is no longer `yes`.
pub fn test() -> Result<()> {
    let t = Instant::now();
    // The debug build the tests built already: a release build would add minutes to CI.
    let (runs, version) = suite(&None, "debug", &stop_flag())?;
    let out = kdir().join("kernels.md");
    let md = markdown(&runs, "cargo xtask test", &version);
    std::fs::write(&out, &md)?;
    eprintln!("xtask: kernel smoke suite in {:.0} s, report in {}", t.elapsed().as_secs_f64(), out.display());
    let mut problems: Vec<String> =
        runs.iter().filter_map(|r| r.problem.as_ref().map(|p| format!("{}: {p}", r.column))).collect();
    for r in runs.iter().filter(|r| r.package.is_none()) {
        for (f, c) in features(r) {
            if !c.is_yes() {
                problems.push(format!("{}: {f}: {c:?}", r.column));
            }
        }
    }
    let now: Vec<(String, String)> = yes_cells(&md);
    let committed = std::fs::read_to_string(root().join("docs/kernels.md")).unwrap_or_default();
    for (col, feature) in yes_cells(&committed) {
        // Only kernels that ran (the host's column is named after its kernel).
        if md.contains(&format!(" {col} |")) && !now.contains(&(col.clone(), feature.clone())) {
            problems.push(format!("{col}: {feature}: yes in docs/kernels.md, not any more"));
        }
    }
    if !problems.is_empty() {
        bail!("kernel smoke suite:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Run {
        let mut r = Run { column: "host (6.18)".into(), ..Default::default() };
        parse(
            "@@MCBK begin kernel=6.18.44\r\n@@MCBK step version rc=0 secs=0.0\r\n@@MCBK out version mcblast 0.1.0\n\
             @@MCBK step recv_tc_1470 rc=2 secs=3.5\n@@MCBK err recv_tc_1470 mcblast: eth0: tcx needs Linux 6.6\n\
             @@MCBK step send_tc_1470 rc=0 secs=1.0\n\
             @@MCBK out send_tc_1470 {\"type\":\"summary\",\"run\":7,\"sent\":300}\n\
             @@MCBK step sink_tc_1470 rc=0 secs=3.0\n\
             @@MCBK out sink_tc_1470 {\"type\":\"begin\",\"xdp_mode\":\"tc\"}\n\
             @@MCBK out sink_tc_1470 {\"type\":\"summary\",\"counter\":\"kernel\",\"flows\":[{\"run\":7,\
             \"received\":300,\"lost\":0}]}\n\
             @@MCBK out sink_tc_1470 {\"type\":\"summary\",\"counter\":\"layers\",\"sunk\":300}\n\
             @@MCBK done secs=60.5\n",
            &mut r,
        );
        r
    }

    #[test]
    fn parses_steps_and_judges_cells() {
        let r = sample();
        assert_eq!(r.release, "6.18.44");
        assert_eq!(r.suite_secs, Some(60.5));
        assert_eq!(r.steps["recv_tc_1470"].rc, 2);
        assert_eq!(ok_step(&r, "version"), Cell::Yes);
        assert_eq!(recv_cell(&r, "tc", 1470, false), Cell::No("mcblast: eth0: tcx needs Linux 6.6".into()));
        assert_eq!(recv_cell(&r, "tc", 1470, true), Cell::Yes);
        assert!(matches!(recv_cell(&r, "native", 1470, false), Cell::NotRun(_)));
    }

    #[test]
    fn verifier_rejections_name_the_verifiers_reason() {
        let st = Step {
            rc: 2,
            secs: 3.0,
            out: vec![],
            err: [
                "mcblast: the kernel verifier rejected the counter's XDP program (Invalid argument (os error 22)); \
                 end of the verifier log:",
                "465: (4f) r7 |= r1",
                "; fun()",
                "466: (85) call unknown#208",
                "invalid func unknown#208",
                "verification time 29954 usec",
                "stack depth 296+0",
            ]
            .map(String::from)
            .to_vec(),
        };
        assert!(
            first_error(&st).ends_with("end of the verifier log: … invalid func unknown#208"),
            "{}",
            first_error(&st)
        );
    }

    #[test]
    fn report_round_trips_its_yes_cells() {
        let r = sample();
        let md = markdown(&[r], "cargo xtask kernels", "0.1.0");
        let yes = yes_cells(&md);
        assert!(yes.contains(&("host (6.18)".into(), "recv --sink at tc ingress, 1470 B".into())), "{yes:?}");
        assert!(!yes.iter().any(|(_, f)| f == "recv, kernel counter at tc ingress, 1470 B"));
        assert!(md.contains("2. mcblast: eth0: tcx needs Linux 6.6") && md.contains("1. not reached"), "{md}");
    }
}
