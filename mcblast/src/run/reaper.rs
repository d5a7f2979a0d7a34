//! What cleans up after a `mcblast run` that was killed (SIGKILL, the OOM
//! killer, a crash): a small child, this binary as `mcblast run-reaper`,
//! started before anything else.
//!
//! The run keeps the write end of the reaper's stdin; the kernel closes it
//! however the run ends. The reaper leads a process group, and every command
//! the run starts (ssh clients, lab commands, preflights) joins that group, so
//! the group is the list of what to stop and a Ctrl-C at the terminal still
//! reaches the run only. A run that ends normally writes `done` first (after
//! its own cleanup) and the reaper exits. On a bare end of file the reaper
//! gives the commands [`GRACE`] to stop by themselves (they run with
//! `--stop-on-stdin-eof`, whose stdin the dead run held too, locally or
//! through ssh, so remote commands stop as well), kills what is left of the
//! group, and removes the run's lab namespaces by prefix.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::sys::proc as sysproc;

/// How long the commands get to stop by themselves (they see the end of their stdin).
pub const GRACE: Duration = Duration::from_secs(4);
/// How long killed commands get to be gone.
const KILL_WAIT: Duration = Duration::from_secs(3);
/// What the run writes when it ended normally.
const DONE: &str = "done";

/// The run's side: the reaper child and the pipe it watches. Dropped, it
/// tells the reaper the run cleaned up itself (the run drops it last).
pub struct Reaper {
    child: Child,
    tell: Option<ChildStdin>,
}

impl Reaper {
    /// Starts the reaper of this run (its lab namespaces, if any, have `lab_prefix`).
    pub fn start(lab_prefix: Option<&str>) -> Result<Reaper> {
        let exe = std::env::current_exe().context("finding this program for the run's reaper")?;
        let mut c = Command::new(exe);
        c.arg("run-reaper").arg("--parent").arg(std::process::id().to_string());
        if let Some(p) = lab_prefix {
            c.arg("--lab-prefix").arg(p);
        }
        c.stdin(Stdio::piped()).stdout(Stdio::null()).process_group(0);
        let mut child = c.spawn().context("starting the run's reaper (mcblast run-reaper)")?;
        let tell = child.stdin.take();
        Ok(Reaper { child, tell })
    }

    /// The process group every command of the run joins (the reaper's).
    pub fn group(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut t) = self.tell.take() {
            let _ = writeln!(t, "{DONE}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mcblast run-reaper`: waits for the end of run `parent` (its pid); cleans up unless it said `done`, removing the
/// labs of `lab_prefix` if given.
pub fn serve(lab_prefix: Option<&str>, parent: u32) -> Result<ExitCode> {
    // a closed terminal or a Ctrl-C there is the run's business, not the reaper's
    sysproc::ignore_signals(&[libc::SIGHUP, libc::SIGINT, libc::SIGQUIT]).context("ignoring signals")?;
    let mut said = String::new();
    let _ = std::io::stdin().read_to_string(&mut said);
    if said.lines().any(|l| l == DONE) {
        return Ok(ExitCode::SUCCESS);
    }
    let (stopped, killed) = stop_group(std::process::id());
    let removed = match lab_prefix {
        Some(p) => remove_lab(p),
        None => String::new(),
    };
    // the terminal may be gone: nothing to do about a failed write
    let _ = writeln!(
        std::io::stderr(),
        "\nmcblast run (pid {}) ended without cleaning up: its reaper stopped {stopped} and killed {killed} command(s){removed}",
        parent
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits up to [`GRACE`] for the group's commands to stop by themselves,
/// then kills the rest; (stopped by themselves, killed).
fn stop_group(me: u32) -> (usize, usize) {
    let first = sysproc::group_members(me, me).len();
    let left = wait_members(me, GRACE);
    for &pid in &left {
        if let Err(e) = sysproc::signal_in_group(pid, me, libc::SIGKILL) {
            let _ = writeln!(std::io::stderr(), "mcblast run-reaper: killing {pid}: {e}");
        }
    }
    let _ = wait_members(me, KILL_WAIT);
    (first.saturating_sub(left.len()), left.len())
}

/// The group's members still there after waiting up to `limit` for none.
fn wait_members(me: u32, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = sysproc::group_members(me, me);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the lab of `prefix`, twice half a second apart (a namespace an
/// `ip netns add` of the dead run was making appears late); what it did.
fn remove_lab(prefix: &str) -> String {
    let mut n = 0;
    for round in 0..2 {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        match crate::lab::down_counted(prefix) {
            Ok(k) => n += k,
            Err(e) => {
                return format!("; removing lab {prefix} failed: {e:#} (run `MCBLAST_LAB_PREFIX={prefix} mcblast lab down`)");
            }
        }
    }
    format!(" and removed {n} namespace(s) of lab {prefix}")
}
