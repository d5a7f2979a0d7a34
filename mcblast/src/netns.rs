//! Throwaway network namespaces for tests and the lab: created with
//! `ip netns add`, entered per thread with `setns`, removed on drop (also
//! when a test fails and unwinds).

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A named network namespace that is deleted when dropped.
pub struct NetNs {
    name: String,
}

/// Runs `ip` with arguments, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

/// Runs a command, failing with its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {prog}: is it installed?"))?;
    if !out.status.success() {
        bail!("{prog} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl NetNs {
    /// Creates namespace `name` (removing a stale one of that name first) with `lo` up.
    pub fn new(name: &str) -> Result<NetNs> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name])?;
        let ns = NetNs { name: name.to_string() };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace, failing with its stderr.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Result<()> {
        let mut v = vec!["netns", "exec", &self.name, prog];
        v.extend_from_slice(args);
        ip(&v)
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        run_in(&self.name, f)
    }

    /// Enters the namespace on the calling thread (for threads that stay there).
    pub fn enter(&self) -> Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("open {path}"))?;
        crate::sys::setns_net(file.as_fd()).context("setns")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Whether we may create namespaces (root with CAP_SYS_ADMIN and CAP_NET_ADMIN).
pub fn privileged() -> bool {
    crate::sys::has_capability(21) && crate::sys::has_capability(12)
}

/// Runs `f` on a new thread inside the existing namespace `name` (as listed by `ip netns`).
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("open {path}: is the namespace there?"))?;
    let handle = std::thread::spawn(move || -> Result<T> {
        crate::sys::setns_net(file.as_fd()).context("setns")?;
        Ok(f())
    });
    match handle.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}
