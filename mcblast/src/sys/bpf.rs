//! The `bpf(2)` calls aya does not make the way the kernel counter needs.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `BPF_LINK_CREATE` from `include/uapi/linux/bpf.h`.
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_PROG_QUERY` from `include/uapi/linux/bpf.h`.
const BPF_PROG_QUERY: libc::c_long = 16;
/// `enum bpf_attach_type`: `BPF_XDP`.
const BPF_XDP: u32 = 37;
/// `enum bpf_attach_type`: `BPF_TCX_INGRESS` (Linux 6.6).
const BPF_TCX_INGRESS: u32 = 46;
/// `enum bpf_attach_type`: `BPF_TCX_EGRESS` (Linux 6.6).
const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_OBJ_PIN` from `include/uapi/linux/bpf.h`.
const BPF_OBJ_PIN: libc::c_long = 6;

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
    link_create(prog, ifindex, BPF_XDP, flags)
}

/// Attaches a `sched_cls` program to an interface's ingress through a tcx
/// BPF link (`BPF_LINK_CREATE`, `BPF_TCX_INGRESS`, Linux 6.6 and later),
/// after any tcx program already there.
///
/// As with [`xdp_link_create`], the attachment lives exactly as long as the
/// returned descriptor: nothing is left in the interface's tc setup.
pub fn tcx_link_create(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    link_create(prog, ifindex, BPF_TCX_INGRESS, 0)
}

/// Attaches a `sched_cls` program to an interface's egress through a tcx
/// BPF link (`BPF_TCX_EGRESS`, Linux 6.6 and later), after any tcx program
/// already there. Lives as long as the descriptor, or a pin of it
/// ([`obj_pin`]).
pub fn tcx_egress_link_create(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    link_create(prog, ifindex, BPF_TCX_EGRESS, 0)
}

/// The `obj_pin` member of `union bpf_attr`, zero-padded.
#[repr(C)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    _rest: [u64; 2],
}

/// Pins a BPF object (map, program, link) at `path` in a bpffs
/// (`BPF_OBJ_PIN`): it then lives until the file is removed.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let attr = ObjPinAttr { pathname: c.as_ptr() as u64, bpf_fd: fd.as_raw_fd() as u32, file_flags: 0, _rest: [0; 2] };
    // SAFETY: `attr` is a fully initialised, zero-padded `bpf_attr.obj_pin`
    // whose path points to `c`, a NUL-terminated string alive for the call;
    // the kernel only reads both. `fd` is an open descriptor borrowed for the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, &attr as *const ObjPinAttr, std::mem::size_of::<ObjPinAttr>() as libc::c_uint)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn link_create(prog: BorrowedFd<'_>, ifindex: u32, attach_type: u32, flags: u32) -> io::Result<OwnedFd> {
    // For tcx, the zeroed rest is `relative_fd` 0 and `expected_revision`
    // 0: append, whatever else is attached.
    let attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
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

/// The `query` member of `union bpf_attr` (`BPF_PROG_QUERY`).
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// How many programs are attached to the ingress tcx hook of the interface
/// `ifindex` of this network namespace (0 when the hook was never used).
pub fn tcx_ingress_programs(ifindex: u32) -> io::Result<u32> {
    tcx_programs(ifindex, BPF_TCX_INGRESS)
}

/// How many programs are attached to the egress tcx hook of the interface
/// `ifindex` of this network namespace.
pub fn tcx_egress_programs(ifindex: u32) -> io::Result<u32> {
    tcx_programs(ifindex, BPF_TCX_EGRESS)
}

fn tcx_programs(ifindex: u32, attach_type: u32) -> io::Result<u32> {
    let mut attr = QueryAttr { target_ifindex: ifindex, attach_type, ..QueryAttr::default() };
    // SAFETY: `attr` is a fully initialised, zero-padded `bpf_attr.query`
    // that outlives the call, and the size passed is its size. With
    // `prog_ids` and `link_ids` null the kernel writes only into `attr`
    // (the count, flags and revision).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            std::mem::size_of::<QueryAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr.prog_cnt)
}

/// Lifts `RLIMIT_MEMLOCK` for kernels before 5.11, which charge BPF maps to
/// it. Best effort: newer kernels account maps to the memory cgroup instead.
pub fn raise_memlock_limit() {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: `lim` is a valid rlimit read by the call.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes sure a BPF filesystem is mounted at `dir` (normally
/// `/sys/fs/bpf`), mounting one (mode 0700) when it is not.
pub fn ensure_bpffs(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` a writable statfs, both alive for the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let (src, fstype, opts) = (c"bpf", c"bpf", c"mode=0700");
    // SAFETY: every pointer is a NUL-terminated string alive for the call.
    let rc = unsafe { libc::mount(src.as_ptr(), c.as_ptr(), fstype.as_ptr(), 0, opts.as_ptr().cast()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
