//! Builds the eBPF programs (crate `mcblast-ebpf`) for the BPF target with the
//! pinned nightly toolchain and bpf-linker, and leaves the object in OUT_DIR
//! for `include_bytes_aligned!` in `src/kernel.rs`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The toolchain the eBPF crate builds with (see ARCHITECTURE.md).
const TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = Path::new(&manifest_dir)
        .parent()
        .context("mcblast has no parent directory")?
        .join("mcblast-ebpf");
    let root = root.to_str().context("non-UTF-8 path to mcblast-ebpf")?;
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    version_stamp(&manifest_dir);

    if skipped() {
        // Leave an empty object so the crate still compiles (e.g. for lints);
        // `KernelCounter::attach` then says the program is missing.
        let out = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
        let obj = Path::new(&out).join("mcblast");
        if !obj.exists() {
            std::fs::write(&obj, b"").context("cannot write the empty eBPF object")?;
        }
    } else {
        check_tools()?;
    }
    aya_build::build_ebpf(
        [Package { name: "mcblast-ebpf", root_dir: root, ..Default::default() }],
        Toolchain::Custom(TOOLCHAIN),
    )
    .map_err(|e| anyhow!("building the eBPF program failed: {e:#}\n(if the toolchain is incomplete, run `cargo xtask setup`)"))
}

/// Fails early, with the fix, when the eBPF toolchain pieces are missing.
fn check_tools() -> anyhow::Result<()> {
    let nightly_ok = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .is_some_and(|sysroot| Path::new(&sysroot).join("lib/rustlib/src/rust/library/core").is_dir());
    if !nightly_ok {
        return Err(anyhow!(
            "the eBPF program needs the Rust toolchain {TOOLCHAIN} with the rust-src component; run `cargo xtask setup`"
        ));
    }
    let linker_ok = Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| o.status.success());
    if !linker_ok {
        return Err(anyhow!(
            "the eBPF program needs bpf-linker 0.10.4 on PATH; run `cargo xtask setup`"
        ));
    }
    Ok(())
}

/// `MCBLAST_VERSION` for `mcblast --version`: the crate version and, when
/// built from a git checkout, the commit it was built at (`0.1.0
/// (3f2a9c1d04be)`), so `mcblast run` can tell two builds apart.
fn version_stamp(manifest_dir: &str) {
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git").arg("-C").arg(manifest_dir).args(args).output().ok()?;
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let pkg = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    // "-dirty" when tracked files differ from the commit: two hosts that
    // both say "(abc-dirty)" may still run different code.
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let version = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) if !commit.is_empty() => format!("{pkg} ({commit}{})", if dirty { "-dirty" } else { "" }),
        _ => pkg,
    };
    println!("cargo:rustc-env=MCBLAST_VERSION={version}");
    // an edit to a tracked source makes the tree dirty (or clean again)
    let root = Path::new(manifest_dir).parent().unwrap_or(Path::new(manifest_dir));
    for dir in ["mcblast/src", "mcblast-common/src", "mcblast-ebpf/src", "Cargo.lock"] {
        let p = root.join(dir);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    // a new commit (or another branch checked out) stamps again
    if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &r])
        && Path::new(&path).exists()
    {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// aya-build's own switch to skip the eBPF build.
fn skipped() -> bool {
    std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}
