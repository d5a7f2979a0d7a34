//! Processes by id, for `mcblast run`'s reaper: which process group a
//! process is in (from /proc), signals that reach a process only while it is
//! still in that group (a pidfd, so a recycled pid is never hit), and
//! signals the reaper ignores.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// (state, process group) of a process, from `/proc/PID/stat`; None when it is gone.
pub fn state_and_group(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses, the last ')' ends it
    let mut f = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// The live (not zombie) processes of process group `pgid`, `except` left out.
pub fn group_members(pgid: u32, except: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != except && state_and_group(pid).is_some_and(|(s, g)| g == pgid && s != 'Z'))
        .collect()
}

/// Sends `sig` to `pid` if it is (still) in process group `pgid`: Ok(false)
/// when it is gone or in another group. The pidfd pins the process the
/// group was read from, so a pid reused in between is never signalled.
pub fn signal_in_group(pid: u32, pgid: u32, sig: libc::c_int) -> io::Result<bool> {
    // SAFETY: pidfd_open(2) takes a pid and flags 0 and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) { Ok(false) } else { Err(e) };
    }
    // SAFETY: `fd` is a fresh descriptor from pidfd_open that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    if state_and_group(pid).is_none_or(|(_, g)| g != pgid) {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, a signal number, no siginfo and flags 0.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) { Ok(false) } else { Err(e) }
}

/// Ignores these signals from now on (and in programs this one execs).
pub fn ignore_signals(sigs: &[libc::c_int]) -> io::Result<()> {
    for &sig in sigs {
        // SAFETY: SIG_IGN as the disposition of a catchable signal; no handler code runs.
        if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_of_a_child_in_its_own_group() {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let pid = c.id();
        assert_eq!(state_and_group(pid).map(|(_, g)| g), Some(pid));
        assert_eq!(group_members(pid, 0), [pid]);
        assert_eq!(group_members(pid, pid), Vec::<u32>::new());
        assert!(!signal_in_group(pid, pid + 1, libc::SIGKILL).unwrap(), "another group: untouched");
        assert!(state_and_group(pid).is_some());
        assert!(signal_in_group(pid, pid, libc::SIGKILL).unwrap());
        let st = c.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL));
        assert!(!signal_in_group(pid, pid, libc::SIGKILL).unwrap(), "gone");
        let me = std::process::id();
        assert_ne!(state_and_group(me).map(|(_, g)| g), None);
    }
}

/// Sends SIGINT to a child process this one started and has not waited for
/// (so its pid cannot have been reused).
pub fn interrupt(child: &std::process::Child) -> io::Result<()> {
    // SAFETY: kill(2) with the pid of our own unreaped child and a signal number.
    if unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
