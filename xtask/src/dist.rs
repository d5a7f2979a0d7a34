//! `cargo xtask dist [--no-check]`: what a user downloads, in `target/dist/`:
//!
//! * `mcblast-VERSION-x86_64-unknown-linux-musl` and `mcblast-VERSION-aarch64-unknown-linux-musl`:
//!   static binaries (musl, linked by rust-lld with the C runtime rustup ships for the target), each
//!   with its eBPF object embedded (build.rs builds it again for each target: it is BPF bytecode,
//!   compiled with the target's `bpf_target_arch`);
//! * `mcblast_VERSION-1_amd64.deb` and `mcblast_VERSION-1_arm64.deb` (cargo-deb, see
//!   `[package.metadata.deb]` in mcblast/Cargo.toml): the binary, man pages and bash/zsh/fish
//!   completions (`mcblast generate`), README, docs/ and examples/;
//! * `SHA256SUMS`.
//!
//! Then it checks them (`--no-check` skips this; `cargo xtask test` runs it): both binaries static
//! with an eBPF object inside; the x86_64 one runs `--version`, `probe` and attaches its kernel
//! counter in a Debian 11 chroot (glibc 2.31, debootstrap minbase, cached under the target
//! directory); the aarch64 one runs under qemu-user; the amd64 .deb installs, works, shows its man
//! pages and completions, and removes in a clean copy of that chroot; the arm64 .deb holds the same
//! files. Mounts happen in a private mount namespace, so none outlives the check, even on failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::{cargo, install_debian, is_root, output, root, run, setup_ebpf_toolchain};

/// (Rust target, Debian architecture, ELF e_machine).
const TARGETS: &[(&str, &str, u16)] =
    &[("x86_64-unknown-linux-musl", "amd64", 62), ("aarch64-unknown-linux-musl", "arm64", 183)];
const CARGO_DEB: &str = "3.8.0";
/// The cargo profile of the binaries (Cargo.toml): release without debug info, stripped.
const PROFILE: &str = "dist-release";
/// What the checks need: qemu-user for the aarch64 binary, debootstrap for the Debian 11 chroot.
const DIST_DEBIAN: &[(&str, &str)] = &[("qemu-aarch64-static", "qemu-user-static"), ("debootstrap", "debootstrap")];
/// Debian 11: glibc 2.31, older than every distribution the users run (see MISSION.md).
const OLD_DEBIAN: &str = "bullseye";
const EM_BPF: u16 = 247;

/// Builds the artifacts and, unless `check` is false, checks them; returns how many checks passed.
pub fn dist(check: bool) -> Result<u64> {
    let started = Instant::now();
    if check && !is_root() {
        bail!("the checks mount a chroot: run as root, or `cargo xtask dist --no-check` to only build");
    }
    setup_ebpf_toolchain()?;
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]));
    for (t, _, _) in TARGETS {
        if !installed.lines().any(|l| l.trim() == *t) {
            run(Command::new("rustup").args(["target", "add", t]))?;
        }
    }
    if !output(cargo().args(["deb", "--version"])).contains(CARGO_DEB) {
        run(cargo().args(["install", "cargo-deb", "--version", CARGO_DEB, "--locked", "--force"]))?;
    }
    if check {
        install_debian(DIST_DEBIAN)?;
    }

    let version = crate_version()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let out = target_dir.join("dist");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing the old {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;

    // One cargo for both targets, so the two builds share the cores.
    let mut build = cargo();
    build.current_dir(root()).args(["build", "--profile", PROFILE, "-p", "mcblast"]);
    for (t, _, _) in TARGETS {
        build.args(["--target", t, "--config", &format!("target.{t}.linker=\"rust-lld\"")]);
    }
    run(&mut build)?;

    let bin = |t: &str| target_dir.join(t).join(PROFILE).join("mcblast");
    let mut files = Vec::new();
    for (t, _, machine) in TARGETS {
        let elf = std::fs::read(bin(t)).with_context(|| format!("reading {}", bin(t).display()))?;
        check_elf(&elf, *machine).with_context(|| format!("{}", bin(t).display()))?;
        let name = format!("mcblast-{version}-{t}");
        std::fs::copy(bin(t), out.join(&name))?;
        files.push(name);
    }

    // Man pages and completions come from the binary this machine runs; the command line is the same on both.
    let host = TARGETS
        .iter()
        .find(|(t, _, _)| t.starts_with(std::env::consts::ARCH))
        .with_context(|| format!("no dist target runs on this {} machine", std::env::consts::ARCH))?;
    let host_bin = bin(host.0);
    for (t, arch, _) in TARGETS {
        let gen_dir = target_dir.join(t).join(PROFILE).join("generated");
        if gen_dir.exists() {
            std::fs::remove_dir_all(&gen_dir)?;
        }
        std::fs::create_dir_all(gen_dir.join("completions"))?;
        run(Command::new(&host_bin).arg("generate").arg("man").arg(gen_dir.join("man")))?;
        // cargo-deb compresses man pages only when they are not built products: gzip them here (-n: no timestamp)
        let pages: Vec<PathBuf> =
            std::fs::read_dir(gen_dir.join("man"))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        run(Command::new("gzip").args(["-9n", "--"]).args(&pages))?;
        for (shell, file) in [("bash", "mcblast.bash"), ("zsh", "_mcblast"), ("fish", "mcblast.fish")] {
            let o = Command::new(&host_bin).args(["generate", "completions", shell]).output()?;
            ensure!(o.status.success() && !o.stdout.is_empty(), "mcblast generate completions {shell} failed");
            std::fs::write(gen_dir.join("completions").join(file), o.stdout)?;
        }
        let deb = format!("mcblast_{version}-1_{arch}.deb");
        run(cargo()
            .current_dir(root())
            .args(["deb", "-p", "mcblast", "--target", t, "--profile", PROFILE])
            .args(["--no-build", "--no-strip", "-o"])
            .arg(out.join(&deb)))?;
        files.push(deb);
    }
    let sums = Command::new("sha256sum").current_dir(&out).args(&files).output().context("running sha256sum")?;
    ensure!(sums.status.success(), "sha256sum failed");
    std::fs::write(out.join("SHA256SUMS"), &sums.stdout)?;
    let built = started.elapsed();

    let mut passed = 0;
    if check {
        passed = check_artifacts(&target_dir, &out, &files)?;
    }
    println!(
        "xtask dist: in {} ({:.0} s to build{}):",
        out.display(),
        built.as_secs_f64(),
        if check { format!(", {:.0} s with {passed} checks", started.elapsed().as_secs_f64()) } else { String::new() }
    );
    for f in files.iter().chain([&"SHA256SUMS".to_string()]) {
        let len = std::fs::metadata(out.join(f))?.len();
        println!("  {f:<50} {:>6.1} MiB", len as f64 / (1 << 20) as f64);
    }
    Ok(passed)
}

/// mcblast's version, from its Cargo.toml.
fn crate_version() -> Result<String> {
    let manifest = std::fs::read_to_string(root().join("mcblast/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .context("no version in mcblast/Cargo.toml")
}

/// A little-endian ELF64 executable for `machine`, without a program interpreter (so it needs no
/// dynamic loader and no libc of the host), and with at least one eBPF object (an ELF for EM_BPF)
/// inside it.
fn check_elf(elf: &[u8], machine: u16) -> Result<()> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    ensure!(elf.starts_with(b"\x7fELF\x02\x01"), "not a little-endian ELF64 file");
    ensure!(u16_at(18) == Some(machine), "ELF machine {:?}, expected {machine}", u16_at(18));
    let phoff = elf.get(32..40).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize).context("short ELF")?;
    let (phentsize, phnum) = (u16_at(54).context("short ELF")? as usize, u16_at(56).context("short ELF")? as usize);
    for i in 0..phnum {
        let p_type = elf.get(phoff + i * phentsize..phoff + i * phentsize + 4).context("short program headers")?;
        ensure!(p_type != 3u32.to_le_bytes(), "it has a program interpreter (PT_INTERP): it is not static");
    }
    let bpf = (1..elf.len().saturating_sub(20))
        .filter(|&i| elf[i..].starts_with(b"\x7fELF") && u16_at(i + 18) == Some(EM_BPF))
        .count();
    ensure!(bpf > 0, "no eBPF object inside: was it built with AYA_BUILD_SKIP?");
    Ok(())
}

/// A directory removed when dropped, unless something is still mounted below it (then it says so
/// and leaves it: removing files through a mount would reach into what is mounted).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let me = self.0.to_string_lossy();
        if let Some(m) = mounts.lines().filter_map(|l| l.split(' ').nth(4)).find(|m| m.starts_with(&*me)) {
            eprintln!("xtask: {m} is still mounted: not removing {me}");
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `sh -c script` with `args`, prints its output, and counts its `check ok:` lines.
fn checks_in(cmd: &mut Command, what: &str) -> Result<u64> {
    eprintln!("xtask: {what}");
    let o = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("cannot start {cmd:?}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    print!("{text}");
    ensure!(o.status.success(), "{what} failed: {}", o.status);
    Ok(text.lines().filter(|l| l.starts_with("check ok:")).count() as u64)
}

/// `files`: the x86_64 and aarch64 binaries, the amd64 and arm64 .debs, in `out`.
fn check_artifacts(target_dir: &Path, out: &Path, files: &[String]) -> Result<u64> {
    let mut passed = 2; // check_elf of each binary, above
    run(Command::new("sha256sum").current_dir(out).args(["--check", "--quiet", "SHA256SUMS"]))?;
    passed += 1;

    // The aarch64 binary under qemu-user (no binfmt needed: qemu runs it directly).
    let arm = out.join(&files[1]);
    let x86 = out.join(&files[0]);
    let tmp = TempDir(target_dir.join(format!("dist-check-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0)?;
    passed += checks_in(
        Command::new("sh")
            .args(["-euc", QEMU_CHECKS, "sh"])
            .arg(&arm)
            .arg(&x86)
            .arg(&tmp.0)
            .args([&files[2], &files[3]])
            .current_dir(out),
        "checking the aarch64 binary under qemu-user and the arm64 .deb",
    )?;

    // Debian 11 (glibc 2.31) minbase with man-db, made once and kept under the target directory.
    let chroot = target_dir.join(format!("dist-cache/debian-{OLD_DEBIAN}-minbase"));
    if !chroot.join("usr/bin/man").exists() {
        let partial = TempDir(chroot.with_extension("partial"));
        if partial.0.exists() {
            std::fs::remove_dir_all(&partial.0)?;
        }
        let mut debootstrap = Command::new("unshare");
        debootstrap
            .args(["--mount", "--propagation", "private", "debootstrap"])
            .args(["--variant=minbase", "--include=man-db", OLD_DEBIAN])
            .arg(&partial.0);
        if let Some(mirror) = apt_mirror() {
            debootstrap.arg(mirror);
        }
        run(&mut debootstrap)?;
        std::fs::rename(&partial.0, &chroot)?;
    }
    let deb = out.join(&files[2]);
    passed += checks_in(
        Command::new("timeout")
            .args(["600", "unshare", "--mount", "--net", "--propagation", "private", "sh", "-euc", CHROOT_CHECKS, "sh"])
            .arg(&chroot)
            .arg(&tmp.0)
            .arg(&x86)
            .arg(&deb),
        &format!("checking the x86_64 binary and the amd64 .deb in a Debian 11 ({OLD_DEBIAN}) chroot"),
    )?;
    drop(tmp);
    Ok(passed)
}

/// The Debian mirror this machine's apt uses (deb822 `URIs:` or a one-line `deb URI suite`), if any:
/// debootstrap uses its own default otherwise.
fn apt_mirror() -> Option<String> {
    let deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let one_line = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    deb822
        .lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .flat_map(str::split_whitespace)
        .chain(
            one_line
                .lines()
                .filter_map(|l| l.strip_prefix("deb "))
                .filter_map(|l| l.split_whitespace().find(|w| w.contains("://"))),
        )
        .find(|u| !u.contains("security"))
        .map(str::to_string)
}

/// $1 aarch64 binary, $2 x86_64 binary, $3 scratch directory, $4 amd64 .deb, $5 arm64 .deb (cwd: target/dist).
const QEMU_CHECKS: &str = r#"
ok() { echo "check ok: $*"; }
a=$(qemu-aarch64-static "$1" --version); x=$("$2" --version)
[ "$a" = "$x" ] || { echo "aarch64 says '$a', x86_64 says '$x'"; exit 1; }
ok "aarch64 binary under qemu-user: --version ($a)"
qemu-aarch64-static "$1" probe > "$3/probe-arm.txt" || { cat "$3/probe-arm.txt"; exit 1; }
grep -q '^UDP GSO (kernel)' "$3/probe-arm.txt"
ok "aarch64 binary under qemu-user: probe"
qemu-aarch64-static "$1" generate man "$3/man-arm"; "$2" generate man "$3/man-x86"
diff -r "$3/man-arm" "$3/man-x86"
ok "aarch64 binary under qemu-user: generate man writes the same pages as x86_64"
[ "$(dpkg-deb --field "$5" Architecture)" = arm64 ] && [ "$(dpkg-deb --field "$4" Architecture)" = amd64 ]
dpkg-deb --contents "$4" | awk '{print $6}' > "$3/amd64.list"; dpkg-deb --contents "$5" | awk '{print $6}' > "$3/arm64.list"
diff "$3/amd64.list" "$3/arm64.list"
dpkg-deb --fsys-tarfile "$5" | tar -xO ./usr/bin/mcblast | cmp - "$1"
ok "the arm64 .deb holds the same files as the amd64 one, and the aarch64 binary"
"#;

/// $1 the cached chroot, $2 scratch directory, $3 x86_64 binary, $4 amd64 .deb. Runs in its own
/// mount and network namespaces: the mounts go with it, and the kernel counter attaches to a lo of its own.
const CHROOT_CHECKS: &str = r#"
root="$2/root"
cleanup() { umount "$root/sys" 2>/dev/null || true; umount "$root/proc" 2>/dev/null || true; umount "$root" 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$2/upper" "$2/work" "$root"
if ! mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$root" 2>/dev/null; then
    echo "xtask: no overlayfs here: copying the chroot" >&2
    cp -a "$1/." "$root/"
fi
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
cp "$3" "$root/tmp/mcblast"
cp "$4" "$root/tmp/mcblast.deb"
ch() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C TERM=dumb "$@"; }
ok() { echo "check ok: $*"; }
echo "$(ch ldd --version | head -1)"
ch /tmp/mcblast --version
ok "x86_64 binary on Debian 11: --version"
ch /tmp/mcblast probe > "$2/probe.txt" || { cat "$2/probe.txt"; exit 1; }
grep -q '^io_uring ' "$2/probe.txt"
ok "x86_64 binary on Debian 11: probe"
ch /tmp/mcblast recv --interface lo --counter kernel --xdp-mode generic -t 1 -i 0 > "$2/recv.txt" || { cat "$2/recv.txt"; exit 1; }
grep -q 'counters: kernel (XDP generic' "$2/recv.txt" || { cat "$2/recv.txt"; exit 1; }
ok "x86_64 binary on Debian 11: recv attaches its embedded eBPF counter (generic XDP on lo)"
ch dpkg -i /tmp/mcblast.deb
[ "$(ch mcblast --version)" = "$(ch /tmp/mcblast --version)" ]
ok "dpkg -i of the amd64 .deb on Debian 11: mcblast --version"
ch sh -c 'MANPAGER=cat MANWIDTH=100 man mcblast' > "$2/man.txt"
grep -q 'mcblast-recv(1)' "$2/man.txt"
ch sh -c 'MANPAGER=cat MANWIDTH=100 man mcblast-recv' | grep -q -- '--xdp-mode'
ok "man mcblast and man mcblast-recv"
ch bash -c '. /usr/share/bash-completion/completions/mcblast && complete -p mcblast' | grep -q _mcblast
[ -s "$root/usr/share/zsh/vendor-completions/_mcblast" ] && [ -s "$root/usr/share/fish/vendor_completions.d/mcblast.fish" ]
ok "bash completion loads; zsh and fish completions installed"
[ -s "$root/usr/share/doc/mcblast/README.md" ] && [ -s "$root/usr/share/doc/mcblast/docs/report.png" ]
ok "README and docs installed"
ch dpkg -r mcblast
[ ! -e "$root/usr/bin/mcblast" ]
ok "dpkg -r removes it"
ch apt-get install -q -y /tmp/mcblast.deb
ch mcblast --version
ok "apt-get install ./mcblast.deb (as the README says) installs it too"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 header for `machine` with one program header of type `p_type`, then `tail`.
    fn elf(machine: u16, p_type: u32, tail: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[18..20].copy_from_slice(&machine.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        e[64..68].copy_from_slice(&p_type.to_le_bytes());
        e.extend_from_slice(tail);
        e
    }

    #[test]
    fn elf_check_wants_static_and_an_ebpf_object_inside() {
        let bpf = elf(EM_BPF, 0, &[]);
        assert!(check_elf(&elf(62, 1, &bpf), 62).is_ok());
        let e = check_elf(&elf(62, 3, &bpf), 62).unwrap_err().to_string();
        assert!(e.contains("PT_INTERP"), "{e}");
        let e = check_elf(&elf(62, 1, &elf(62, 0, &[])), 62).unwrap_err().to_string();
        assert!(e.contains("no eBPF object"), "{e}");
        let e = check_elf(&elf(183, 1, &bpf), 62).unwrap_err().to_string();
        assert!(e.contains("machine"), "{e}");
    }
}
