//! The only place mcblast calls the OS through `unsafe`: thin, checked
//! wrappers that turn C return codes into `io::Result`.
//!
//! Every `unsafe` block carries a `// SAFETY:` note.

pub mod bpf;
pub mod btf;
pub mod ethtool;
pub mod kfeatures;
pub mod net;
pub mod packet;
pub mod proc;

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};

pub mod send;
pub mod gso;
pub mod probe;
pub mod uring;
pub mod xsk;

/// A C return code as an `io::Result`: negative means failure, with the
/// reason in `errno`.
pub(crate) fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Sets a socket option from a plain C value (an `int`, `ip_mreqn`, `timeval`, …).
pub(crate) fn setsockopt<T: Copy>(fd: impl AsFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live, initialised `T` of exactly the length
    // passed; the kernel only reads that many bytes and rejects lengths it
    // does not expect for the option with EINVAL.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    cvt(rc).map(drop)
}

/// Reads an `int` socket option.
pub(crate) fn getsockopt_int(fd: impl AsFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid and writable; `len` says how much room `v` has.
    let rc =
        unsafe { libc::getsockopt(fd.as_fd().as_raw_fd(), level, name, (&mut v as *mut libc::c_int).cast(), &mut len) };
    cvt(rc).map(|_| v)
}

/// Nanoseconds of the given clock.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock ids used here exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `adjtimex` read-only query: its return state and the kernel's `timex`.
fn adjtimex_read() -> io::Result<(i32, libc::timex)> {
    // SAFETY: a zeroed timex with modes = 0 is a valid read-only query.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: `tx` is a valid, writable timex.
    let rc = unsafe { libc::adjtimex(&mut tx) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((rc, tx))
}

/// `adjtimex` read-only query: (return state, status flags).
pub fn adjtimex_state() -> io::Result<(i32, i32)> {
    adjtimex_read().map(|(rc, tx)| (rc, tx.status))
}

/// The kernel's estimated and maximum clock error in µs (adjtimex `esterror`, `maxerror`).
pub fn clock_error_us() -> io::Result<(i64, i64)> {
    // c_long: i64 here, i32 on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    adjtimex_read().map(|(_, tx)| (tx.esterror as i64, tx.maxerror as i64))
}

/// The kernel's TAI−UTC offset in seconds (adjtimex `tai`): what
/// CLOCK_TAI is ahead of CLOCK_REALTIME. 0 until something (chrony, ptp4l,
/// ntpd with a leap-second file) sets it; 37 since 2017 when set.
pub fn tai_offset_s() -> io::Result<i32> {
    adjtimex_read().map(|(_, tx)| tx.tai)
}

/// CPU seconds (user + system) used by this process so far.
pub fn process_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// CPU seconds (user + system) used by the calling thread so far.
pub fn thread_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_THREAD)
}

fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: zeroed rusage is a valid out-buffer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable; `who` is RUSAGE_SELF or RUSAGE_THREAD.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Interface index for a name, if the interface exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { None } else { Some(idx) }
}

/// IPv4 addresses per interface name (from getifaddrs).
pub fn ipv4_addrs() -> io::Result<Vec<(String, Ipv4Addr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr of at least sa_family.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: ifa_name is a valid NUL-terminated string while the list lives.
                let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
                    .to_string_lossy()
                    .into_owned();
                out.push((name, Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Whether the process has an effective capability (by number, see capability.h).
pub fn has_capability(cap: u32) -> bool {
    // /proc/self/status CapEff is a hex mask; reading it needs no unsafe.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1u64 << cap) != 0)
}

/// Inode number of the calling thread's network namespace (what
/// `ns.inum` of its `struct net` holds in the kernel).
pub fn netns_inode() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino())
}

/// Moves the calling thread into the network namespace behind `fd`.
pub fn setns_net(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `fd` is an open namespace file descriptor; setns only affects the calling thread.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM handlers that only set a flag ([`stop_requested`]),
/// so the program can finish its report and detach what it attached.
pub fn install_stop_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an
        // atomic is async-signal-safe; sa_mask is emptied before use.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// Requests the stop SIGINT/SIGTERM would once standard input reaches its
/// end (or fails): `mcblast run` holds the other end of the pipe, locally or
/// through ssh, so a run that dies, however, stops its commands.
pub fn stop_on_stdin_eof() {
    std::thread::spawn(|| {
        let mut buf = [0u8; 512];
        loop {
            match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() != io::ErrorKind::Interrupted => break,
                _ => {}
            }
        }
        STOP.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}

/// An IPv4 raw socket for one IP protocol (e.g. `libc::IPPROTO_IGMP`), in the
/// calling thread's network namespace; it receives a copy of every packet of
/// that protocol the host receives, IP header included. Needs CAP_NET_RAW.
pub fn raw_ipv4_socket(protocol: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2) call with constant arguments; no pointers involved.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor from socket(2) that nothing else owns,
    // so the OwnedFd becomes its only owner and closes it exactly once.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    /// The offset adjtimex reports is the one the kernel applies: CLOCK_TAI
    /// minus CLOCK_REALTIME, to the nearest second.
    #[test]
    fn tai_offset_is_what_separates_the_clocks() {
        let tai = super::tai_offset_s().unwrap();
        let real = super::clock_ns(libc::CLOCK_REALTIME) as i64;
        let tai_ns = super::clock_ns(libc::CLOCK_TAI) as i64;
        assert_eq!(((tai_ns - real) as f64 / 1e9).round() as i32, tai);
        assert!(super::adjtimex_state().is_ok());
    }
}
