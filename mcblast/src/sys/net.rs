//! Receiving sockets: multicast joins and `recvmmsg` batches with the
//! source address, the destination (group) address and the socket's drop
//! counter of every datagram.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, getsockopt_int, setsockopt};

fn sockaddr(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr = libc::in_addr { s_addr: u32::from(addr).to_be() };
    sa
}

/// A new IPv4 UDP socket (close-on-exec).
pub fn udp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned fd is owned below.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Options for a receiving socket.
pub struct RecvSocketOpts {
    pub port: u16,
    pub rcvbuf: usize,
}

/// A UDP socket bound to `0.0.0.0:port` for multicast reception: address
/// reuse (several receivers per host), only groups this socket joined
/// (IP_MULTICAST_ALL off), destination address (IP_PKTINFO) and drop
/// counter (SO_RXQ_OVFL) per datagram, a receive buffer of `rcvbuf` bytes
/// (forced past rmem_max when privileged), and a 100 ms receive timeout.
/// Returns the socket and the receive buffer the kernel actually granted.
pub fn recv_socket(o: &RecvSocketOpts) -> io::Result<(OwnedFd, usize)> {
    let fd = udp_socket()?;
    let one: libc::c_int = 1;
    let zero: libc::c_int = 0;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, &one)?;
    setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, &zero)?;
    setsockopt(&fd, libc::IPPROTO_IP, libc::IP_PKTINFO, &one)?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &one)?;
    let want = o.rcvbuf.min(i32::MAX as usize / 2) as libc::c_int;
    if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &want).is_err() {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &want)?;
    }
    let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    let sa = sockaddr(Ipv4Addr::UNSPECIFIED, o.port);
    // SAFETY: `sa` is a valid sockaddr_in and its size is passed.
    cvt(unsafe {
        libc::bind(fd.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_in>() as u32)
    })?;
    // The kernel reports the doubled bookkeeping size; halve it to get payload bytes.
    let granted = getsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0) as usize / 2;
    Ok((fd, granted))
}

/// Joins `group` on interface `ifindex` (any-source, IGMP).
pub fn join_group(fd: &OwnedFd, group: Ipv4Addr, ifindex: u32) -> io::Result<()> {
    membership(fd, libc::IP_ADD_MEMBERSHIP, group, ifindex)
}

/// Joins `group` from `source` only (source-specific, IGMPv3), on the
/// interface with address `if_addr`.
pub fn join_source(fd: &OwnedFd, group: Ipv4Addr, source: Ipv4Addr, if_addr: Ipv4Addr) -> io::Result<()> {
    source_membership(fd, libc::IP_ADD_SOURCE_MEMBERSHIP, group, source, if_addr)
}

/// Leaves `group` on interface `ifindex` (IP_DROP_MEMBERSHIP).
pub fn leave_group(fd: &OwnedFd, group: Ipv4Addr, ifindex: u32) -> io::Result<()> {
    membership(fd, libc::IP_DROP_MEMBERSHIP, group, ifindex)
}

/// Leaves the source-specific membership of [`join_source`] (IP_DROP_SOURCE_MEMBERSHIP).
pub fn leave_source(fd: &OwnedFd, group: Ipv4Addr, source: Ipv4Addr, if_addr: Ipv4Addr) -> io::Result<()> {
    source_membership(fd, libc::IP_DROP_SOURCE_MEMBERSHIP, group, source, if_addr)
}

/// Adds or drops (`opt`) the any-source membership of `group` on `ifindex`.
fn membership(fd: &OwnedFd, opt: libc::c_int, group: Ipv4Addr, ifindex: u32) -> io::Result<()> {
    let m = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: u32::from(group).to_be() },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as libc::c_int,
    };
    setsockopt(fd, libc::IPPROTO_IP, opt, &m)
}

/// Adds or drops (`opt`) the membership of `group` from `source` on the
/// interface with address `if_addr`.
fn source_membership(
    fd: &OwnedFd,
    opt: libc::c_int,
    group: Ipv4Addr,
    source: Ipv4Addr,
    if_addr: Ipv4Addr,
) -> io::Result<()> {
    let m = libc::ip_mreq_source {
        imr_multiaddr: libc::in_addr { s_addr: u32::from(group).to_be() },
        imr_interface: libc::in_addr { s_addr: u32::from(if_addr).to_be() },
        imr_sourceaddr: libc::in_addr { s_addr: u32::from(source).to_be() },
    };
    setsockopt(fd, libc::IPPROTO_IP, opt, &m)
}

/// One received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub len: usize,
    pub src: Ipv4Addr,
    /// The sender's UDP port.
    pub sport: u16,
    /// Destination address (the group), from IP_PKTINFO.
    pub dst: Option<Ipv4Addr>,
}

const CMSG_SPACE: usize = 128;

/// Buffers for `recvmmsg`: allocated once, reused for every batch.
pub struct RecvBatch {
    slot: usize,
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u8; CMSG_SPACE]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    metas: Vec<Meta>,
    /// The socket's drop counter (SO_RXQ_OVFL) as of the last batch.
    pub drops: Option<u32>,
}

// SAFETY: the raw pointers inside `iovs`/`msgs` point only into this
// struct's own heap buffers, which move with it.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Room for `n` datagrams of up to `slot` bytes each.
    pub fn new(n: usize, slot: usize) -> RecvBatch {
        let mut b = RecvBatch {
            slot,
            bufs: vec![0u8; n * slot],
            // SAFETY: an all-zero sockaddr_in is a valid value.
            names: vec![unsafe { zeroed() }; n],
            ctrl: vec![[0u8; CMSG_SPACE]; n],
            // SAFETY: an all-zero iovec (null base, zero length) is a valid value.
            iovs: vec![unsafe { zeroed() }; n],
            // SAFETY: an all-zero mmsghdr (null pointers, zero lengths) is a valid value.
            msgs: vec![unsafe { zeroed() }; n],
            metas: vec![Meta { len: 0, src: Ipv4Addr::UNSPECIFIED, sport: 0, dst: None }; n],
            drops: None,
        };
        for i in 0..n {
            b.iovs[i].iov_base = b.bufs[i * slot..].as_mut_ptr() as *mut libc::c_void;
            b.iovs[i].iov_len = slot;
        }
        b
    }

    /// Receives up to a batch; returns how many (0 on timeout, EINTR, or,
    /// with `nonblocking`, an empty queue).
    pub fn recv(&mut self, fd: &OwnedFd, nonblocking: bool) -> io::Result<usize> {
        let n = self.msgs.len();
        for i in 0..n {
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = &mut self.names[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CMSG_SPACE as _; // usize with glibc, u32 with musl
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        // SAFETY: every mmsghdr points at buffers owned by `self` that stay
        // alive and unaliased for the duration of the call.
        let flags = if nonblocking { libc::MSG_DONTWAIT } else { libc::MSG_WAITFORONE };
        let rc = unsafe { libc::recvmmsg(fd.as_raw_fd(), self.msgs.as_mut_ptr(), n as u32, flags as _, std::ptr::null_mut()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let got = rc as usize;
        for i in 0..got {
            let m = &self.msgs[i];
            let name = &self.names[i];
            let mut meta = Meta {
                len: (m.msg_len as usize).min(self.slot),
                src: Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
                sport: u16::from_be(name.sin_port),
                dst: None,
            };
            // SAFETY: msg_hdr was filled by the kernel; the CMSG macros walk
            // only within msg_control/msg_controllen.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                while !c.is_null() {
                    let (lvl, ty) = ((*c).cmsg_level, (*c).cmsg_type);
                    if lvl == libc::IPPROTO_IP && ty == libc::IP_PKTINFO {
                        let pi = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                        meta.dst = Some(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr)));
                    } else if lvl == libc::SOL_SOCKET && ty == libc::SO_RXQ_OVFL {
                        self.drops = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const u32));
                    }
                    c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
                }
            }
            self.metas[i] = meta;
        }
        Ok(got)
    }

    /// The i-th datagram of the last batch and its metadata.
    pub fn get(&self, i: usize) -> (&[u8], Meta) {
        let m = self.metas[i];
        (&self.bufs[i * self.slot..i * self.slot + m.len], m)
    }
}

/// The socket's cookie (`SO_COOKIE`): the kernel's unique id of the socket.
pub fn socket_cookie(fd: &OwnedFd) -> io::Result<u64> {
    let mut v: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid and writable; `len` says how much room `v` has.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_COOKIE, (&raw mut v).cast(), &mut len)
    };
    cvt(rc)?;
    Ok(v)
}

/// `SK_MEMINFO_DROPS` and the length of `SO_MEMINFO`'s array (`linux/sock_diag.h`).
const SK_MEMINFO_DROPS: usize = 8;
const SK_MEMINFO_VARS: usize = 9;

/// The socket's drop counter now (`SO_MEMINFO`, the value SO_RXQ_OVFL
/// reports with each datagram): every datagram the kernel dropped for this
/// socket, including after the last one read.
pub fn socket_drops(fd: &OwnedFd) -> io::Result<u32> {
    let mut v = [0u32; SK_MEMINFO_VARS];
    let mut len = size_of::<[u32; SK_MEMINFO_VARS]>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid and writable; `len` says how much room `v` has.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MEMINFO, v.as_mut_ptr().cast(), &mut len)
    };
    cvt(rc)?;
    if (len as usize) < (SK_MEMINFO_DROPS + 1) * size_of::<u32>() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "SO_MEMINFO too short"));
    }
    Ok(v[SK_MEMINFO_DROPS])
}

/// UDP sockets of this network namespace bound to `port`, IPv4 and IPv6 (a dual-stack socket takes IPv4
/// datagrams too), from /proc/net/udp and /proc/net/udp6; None when /proc/net/udp is unreadable.
pub fn udp_sockets_on(port: u16) -> Option<usize> {
    let v4 = std::fs::read_to_string("/proc/net/udp").ok()?;
    let v6 = std::fs::read_to_string("/proc/net/udp6").unwrap_or_default();
    Some(count_port(&v4, port) + count_port(&v6, port))
}

/// Rows of a /proc/net/udp table whose local port is `port`.
fn count_port(proc_net_udp: &str, port: u16) -> usize {
    let want = format!("{port:04X}");
    proc_net_udp
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1).and_then(|a| a.split(':').nth(1)) == Some(want.as_str()))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_sockets_bound_to_a_port() {
        let udp = "  sl  local_address rem_address   st\n   1: 00000000:1389 00000000:0000 07\n   2: 0100007F:1389 00000000:0000 07\n   3: 00000000:1388 00000000:0000 07\n";
        assert_eq!(count_port(udp, 5001), 2);
        assert_eq!(count_port(udp, 5000), 1);
        let udp6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:1389 00000000000000000000000000000000:0000 07\n";
        assert_eq!(count_port(udp6, 5001), 1);
        assert_eq!(count_port(udp6, 5000), 0);
    }
}
