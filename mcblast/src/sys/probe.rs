//! Cheap, side-effect-free questions to the kernel for `mcblast probe` and
//! the `auto` engine: can an AF_XDP socket be created (what the driver says
//! about an interface is in `ethtool.rs`). Every `unsafe` block carries a
//! `// SAFETY:` note.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use super::cvt;

/// `socket(AF_XDP, SOCK_RAW, 0)`, closed at once. Needs CAP_NET_RAW.
pub fn af_xdp_socket() -> io::Result<()> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns; dropping closes it once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}
