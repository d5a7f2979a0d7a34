//! The kernel counter at tc ingress on kernels without tcx links (before
//! Linux 6.6): a `clsact` qdisc and a direct-action BPF filter, attached
//! by netlink. Unlike a BPF link, such a filter is not released with the
//! process: mcblast removes it when the counter is dropped, but `kill -9`
//! leaves it. So every filter mcblast adds sits at one priority and handle
//! ([`PRIORITY`], [`HANDLE`]) and has an owner file naming the process
//! (`/run/mcblast/tc/<netns>-<ifindex>`: pid and start time). A receiver
//! that finds the filter of a process that is gone removes it and says so;
//! one that finds a live owner refuses. The `clsact` qdisc stays (empty, it
//! changes nothing); a lab's go with its namespaces on `lab down`.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use aya::programs::SchedClassifier;
use aya::programs::tc::{self, NlOptions, TcAttachOptions, TcAttachType, TcError};

use crate::iface::Iface;

/// The filter's priority and handle on the ingress hook: "MC", "BL".
pub const PRIORITY: u16 = 0x4d43;
pub const HANDLE: u32 = 0x424c;

/// Where the owners of mcblast's classic filters are written.
const OWNERS: &str = "/run/mcblast/tc";

/// The owner file of this process's filter: removed when dropped (after
/// the filter itself went with the program).
#[derive(Debug)]
pub struct Owner(PathBuf);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A process's identity: pid and start time (clock ticks after boot), so a
/// reused pid is not taken for the owner.
fn identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name's closing parenthesis.
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

fn owner_path(iface: &Iface) -> Result<PathBuf> {
    let ns = crate::sys::netns_inode().context("cannot identify this network namespace")?;
    Ok(PathBuf::from(OWNERS).join(format!("{ns}-{}", iface.index)))
}

/// Attaches `prog` (loaded) at tc ingress of `iface` as mcblast's classic
/// filter. Returns its owner file, and a line to print when it removed a
/// filter a killed mcblast left.
pub fn attach(prog: &mut SchedClassifier, iface: &Iface) -> Result<(Owner, Option<String>)> {
    let path = owner_path(iface)?;
    let mut note = None;
    if let Ok(owner) = std::fs::read_to_string(&path) {
        let pid: u32 = owner.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if identity(pid).as_deref() == Some(owner.trim()) {
            bail!(
                "another mcblast (pid {pid}) counts at tc ingress of {} with a classic tc filter; stop it first, \
                 or count at another attach point (--xdp-mode native)",
                iface.name
            );
        }
        detach_stale(iface)?;
        note = Some(format!("mcblast: removed the tc filter a killed mcblast (pid {pid}) left on {}", iface.name));
    }
    match tc::qdisc_add_clsact(&iface.name) {
        Ok(()) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot add a clsact qdisc to {}", iface.name)),
    }
    let opts = NlOptions { priority: PRIORITY, handle: HANDLE.into(), ..NlOptions::default() };
    let attach = |p: &mut SchedClassifier| p.attach_with_options(&iface.name, TcAttachType::Ingress, TcAttachOptions::Netlink(opts));
    if let Err(first) = attach(prog) {
        // A filter of ours without an owner file (/run was cleared): stale too.
        detach_stale(iface).map_err(|_| first)?;
        note = Some(format!("mcblast: removed an ownerless mcblast tc filter from {}", iface.name));
        let opts = NlOptions { priority: PRIORITY, handle: HANDLE.into(), ..NlOptions::default() };
        prog.attach_with_options(&iface.name, TcAttachType::Ingress, TcAttachOptions::Netlink(opts))
            .with_context(|| format!("cannot attach the counter as a classic tc filter on {}", iface.name))?;
    }
    std::fs::create_dir_all(OWNERS).with_context(|| format!("cannot create {OWNERS}"))?;
    let me = identity(std::process::id()).context("cannot read this process's start time")?;
    std::fs::write(&path, me).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((Owner(path), note))
}

/// Removes mcblast's filter from the ingress of `iface`.
fn detach_stale(iface: &Iface) -> Result<()> {
    match tc::qdisc_detach_program(&iface.name, TcAttachType::Ingress, super::TC_PROGRAM) {
        Ok(()) => Ok(()),
        Err(TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove a stale mcblast tc filter from {}", iface.name)),
    }
}
