//! A raw `AF_PACKET` socket that sends whole Ethernet frames, for tests and
//! the lab: frames the IP stack would not build (802.1Q tags in the data,
//! chosen IP options, hand-made fragments).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sends complete Ethernet frames out of one interface. Receives nothing
/// (protocol 0).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a sending socket on the interface with this index, in the
    /// calling thread's network namespace.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PacketSocket { fd, ifindex: ifindex as i32 })
    }

    /// Sends one frame (destination MAC first), as is.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        if frame.len() < 14 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "shorter than an Ethernet header"));
        }
        // SAFETY: a zeroed sockaddr_ll is valid; the fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` is valid for `frame.len()` bytes and `sll` for its
        // size during the call; the fd is an open AF_PACKET socket.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
}
