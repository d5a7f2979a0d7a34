//! The `bpf(2)` calls aya does not make the way the kernel counter needs.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `BPF_LINK_CREATE` from `include/uapi/linux/bpf.h`.
const BPF_LINK_CREATE: libc::c_long = 28;
/// `enum bpf_attach_type`: `BPF_XDP`.
const BPF_XDP: u32 = 37;

/// The `link_create` member of `union bpf_attr`, zero-padded: the kernel
/// requires every byte past the fields it reads to be zero.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

/// Attaches an XDP program to an interface through a BPF link
/// (`BPF_LINK_CREATE`, `BPF_XDP`). `flags` are `XDP_FLAGS_*` (one mode).
///
/// The attachment lives exactly as long as the returned descriptor: closing
/// it, or the process dying in any way, detaches the program. Unlike aya's
/// `Xdp::attach`, this never falls back to a netlink attachment (which
/// would outlive the process).
pub fn xdp_link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
        _rest: [0; 4],
    };
    // SAFETY: `attr` is a fully initialised, zero-padded `bpf_attr.link_create`
    // that outlives the call, and the size passed is its size; the kernel only
    // reads it. `prog` is an open descriptor borrowed for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreateAttr,
            std::mem::size_of::<LinkCreateAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success BPF_LINK_CREATE returns a new descriptor that nothing
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) })
}

/// Lifts `RLIMIT_MEMLOCK` for kernels before 5.11, which charge BPF maps to
/// it. Best effort: newer kernels account maps to the memory cgroup instead.
pub fn raise_memlock_limit() {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: `lim` is a valid rlimit read by the call.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// Pins the calling thread to one CPU: the one pinning function is
/// [`super::send::pin_current_thread`]; this name stays only for callers
/// written against it (the kernel counter test).
pub use super::send::pin_current_thread as pin_thread_to_cpu;
