//! UDP GSO (`UDP_SEGMENT`): one `sendmsg` hands the kernel several
//! datagrams of the same length laid end to end; the stack carries them as
//! one buffer as far as it can and cuts them into datagrams late (in the
//! driver, or in software just before the device). Every `unsafe` block
//! carries a `// SAFETY:` note.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use super::setsockopt;

/// The kernel's limit on segments per GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// The most UDP payload one send may carry: an IPv4 packet's 65535 bytes
/// less the IPv4 (20) and UDP (8) headers.
pub const MAX_PAYLOAD: usize = 65_535 - 28;

/// Segments of `length` bytes one GSO send can carry: at most
/// [`MAX_SEGMENTS`] and at most [`MAX_PAYLOAD`] bytes together.
pub fn max_segments(length: usize) -> usize {
    (MAX_PAYLOAD / length.max(1)).clamp(1, MAX_SEGMENTS)
}

/// Whether the kernel knows `UDP_SEGMENT`: sets it on `fd` and clears it
/// again, so later sends choose per message (the control message). This is
/// how quinn-udp probes; a kernel without UDP GSO (before 4.18) answers
/// ENOPROTOOPT.
pub fn probe_sockopt(fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd();
    setsockopt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, &(1400 as libc::c_int))?;
    setsockopt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, &(0 as libc::c_int))
}

/// `CMSG_SPACE(sizeof(u16))`, as a compile-time size for the control buffer.
const CMSG_BUF: usize = 32;

/// Control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Ctrl([u8; CMSG_BUF]);

/// A GSO send buffer: `segs` datagrams of `length` bytes back to back, one
/// iovec, and a `UDP_SEGMENT` control message saying where to cut. Only
/// each datagram's header is rewritten between sends.
///
/// Holds raw pointers into its own heap allocations (which do not move when
/// the struct does); not `Send`: build it on the thread that sends.
pub struct GsoBuf {
    buf: Box<[u8]>,
    length: usize,
    segs: usize,
    iov: Box<libc::iovec>,
    ctrl: Box<Ctrl>,
    msg: libc::msghdr,
}

impl GsoBuf {
    /// `segs` copies of `datagram` (whose length is the segment size).
    pub fn new(datagram: &[u8], segs: usize) -> GsoBuf {
        let length = datagram.len();
        assert!(length > 0 && length <= u16::MAX as usize, "segment size {length}");
        assert!((1..=MAX_SEGMENTS).contains(&segs) && segs * length <= MAX_PAYLOAD, "{segs} x {length}");
        let mut buf = vec![0u8; segs * length].into_boxed_slice();
        for chunk in buf.chunks_exact_mut(length) {
            chunk.copy_from_slice(datagram);
        }
        let mut iov = Box::new(libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: 0 });
        let mut ctrl = Box::new(Ctrl([0u8; CMSG_BUF]));
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut *iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
        assert!(space <= CMSG_BUF);
        msg.msg_controllen = space as _; // usize with glibc, u32 with musl
        // SAFETY: msg_control points to `space` zeroed, 8-aligned bytes owned
        // by `ctrl`, enough for one cmsghdr carrying a u16, so CMSG_FIRSTHDR
        // is non-null and CMSG_DATA stays inside the buffer.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            assert!(!c.is_null());
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), length as u16);
        }
        GsoBuf { buf, length, segs, iov, ctrl, msg }
    }

    /// Datagrams one send can carry.
    pub fn segs(&self) -> usize {
        self.segs
    }

    /// Datagram `i` (header first), to rewrite before [`GsoBuf::send`].
    #[inline(always)]
    pub fn datagram_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.length..(i + 1) * self.length]
    }

    /// One `sendmsg` of the first `count` datagrams on `fd` (a connected
    /// UDP socket). All or nothing: the kernel takes the whole buffer or
    /// fails. EIO or EINVAL mean the path cannot do GSO (no checksum
    /// offload on the device, a segment larger than the MTU).
    #[inline]
    pub fn send(&mut self, fd: impl AsFd, count: usize) -> io::Result<usize> {
        let count = count.clamp(1, self.segs);
        self.iov.iov_len = count * self.length;
        // Keep the pointers pointing where they must even if someone moved
        // the boxes' contents (they cannot, but it is free to be sure).
        self.iov.iov_base = self.buf.as_mut_ptr().cast();
        self.msg.msg_iov = &mut *self.iov;
        self.msg.msg_control = self.ctrl.0.as_mut_ptr().cast();
        // SAFETY: `msg` points to one iovec over `count * length` bytes of
        // `buf` and to an initialised control message in `ctrl`, all owned
        // by `self` and alive for the call; the kernel only reads them.
        let rc = unsafe { libc::sendmsg(fd.as_fd().as_raw_fd(), &self.msg, 0) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(count) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn segment_limits() {
        assert_eq!(max_segments(8192), 7);
        assert_eq!(max_segments(1470), 44);
        assert_eq!(max_segments(64), 64);
        assert_eq!(max_segments(40), 64);
        assert_eq!(max_segments(65_507), 1);
        assert_eq!(max_segments(32_754), 1);
        assert_eq!(max_segments(32_753), 2);
    }

    /// On loopback (which checksums in "hardware"), one send of 5 segments
    /// arrives as 5 datagrams with their own headers, in order.
    #[test]
    fn one_send_arrives_as_separate_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        probe_sockopt(&tx).unwrap();
        let mut b = GsoBuf::new(&[0x5au8; 300], 8);
        for i in 0..8 {
            b.datagram_mut(i)[0] = i as u8;
        }
        assert_eq!(b.send(&tx, 5).unwrap(), 5);
        let mut buf = [0u8; 2000];
        for i in 0..5 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(n, 300);
            assert_eq!(buf[0], i as u8);
            assert!(buf[1..300].iter().all(|&x| x == 0x5a));
        }
        // Nothing more: exactly 5.
        rx.set_nonblocking(true).unwrap();
        assert!(rx.recv(&mut buf).is_err());
    }
}
