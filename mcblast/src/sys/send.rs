//! The sender's calls into the OS: socket options, `sendmmsg` batches,
//! CPU pinning, absolute sleeps. Thin, checked wrappers; every `unsafe`
//! block carries a `// SAFETY:` note.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use mcblast_common::wire::HEADER_LEN;

use super::{getsockopt_int, setsockopt};

/// Which socket buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    Send,
    Recv,
}

/// Asks for a socket buffer of `bytes`: first with the `*FORCE` option
/// (root may exceed `net.core.[wr]mem_max`), then the ordinary one (capped by
/// the sysctl). Returns the size the kernel granted (it doubles the request
/// for its own bookkeeping).
pub fn set_buffer(fd: impl AsFd, which: Buffer, bytes: usize) -> io::Result<usize> {
    let (force, plain) = match which {
        Buffer::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        Buffer::Recv => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    };
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    if setsockopt(fd.as_fd(), libc::SOL_SOCKET, force, &v).is_err() {
        setsockopt(fd.as_fd(), libc::SOL_SOCKET, plain, &v)?;
    }
    Ok(getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, plain)?.max(0) as usize)
}

/// `IP_MULTICAST_IF` with an `ip_mreqn`: send multicast out of interface
/// `ifindex`, with source address `addr` when given (else the kernel picks
/// one of the interface's).
pub fn set_multicast_if(fd: impl AsFd, ifindex: u32, addr: Option<Ipv4Addr>) -> io::Result<()> {
    let m = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: u32::from(addr.unwrap_or(Ipv4Addr::UNSPECIFIED)).to_be() },
        imr_ifindex: ifindex as libc::c_int,
    };
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &m)
}

/// `IP_RECVERR`: without it Linux reports a datagram the local queueing
/// discipline dropped as sent (it only bumps `SndbufErrors`); with it the
/// send call fails with ENOBUFS, so the sender can count the drop and send
/// that sequence number again.
pub fn set_recverr(fd: impl AsFd) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_RECVERR, &(1 as libc::c_int))
}

/// `IP_MTU_DISCOVER = IP_PMTUDISC_DO`: never fragment locally; a datagram
/// larger than the route's MTU fails with EMSGSIZE instead.
pub fn set_dont_fragment(fd: impl AsFd) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &libc::IP_PMTUDISC_DO)
}

/// Pins the calling thread to one CPU (`cpu` < CPU_SETSIZE, else EINVAL).
/// The crate's one pinning function, for senders and tests alike.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE was checked above, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: every index tested is < CPU_SETSIZE, inside `set`.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns` (an absolute time, so
/// wake-up latency never accumulates). Returns early when a signal
/// interrupts the sleep; callers loop.
pub fn sleep_until_mono(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as _,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec; with TIMER_ABSTIME the remainder
    // pointer is unused and may be null.
    let _ = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
}

/// Sets the calling thread's timer slack (how late the kernel may wake a
/// sleeper to batch wake-ups; 50 µs by default).
pub fn set_timer_slack_ns(ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument and only
    // affects the calling thread; the unused arguments are zero.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            ns as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A pre-built `sendmmsg` batch for one connected socket: `n` datagrams, each
/// two iovecs — its own 40-byte header, then a filler shared by all messages
/// (read-only, built once). Per send only the headers are rewritten.
///
/// Holds raw pointers into its own allocations, so it is neither `Send` nor
/// `Sync`: build it on the thread that sends.
pub struct MmsgBatch {
    /// `n` headers, from `Box::into_raw`; freed in Drop. All access (ours and
    /// the iovecs') derives from this one pointer.
    hdrs: NonNull<[u8; HEADER_LEN]>,
    n: usize,
    /// Pointed to by `msgs`; never touched from Rust after construction.
    _iovs: Box<[[libc::iovec; 2]]>,
    msgs: Box<[libc::mmsghdr]>,
    /// Pointed to by every message's second iovec.
    _filler: Arc<[u8]>,
}

impl MmsgBatch {
    /// `n` messages whose headers start as `header`, followed by `filler`.
    pub fn new(header: &[u8; HEADER_LEN], filler: Arc<[u8]>, n: usize) -> MmsgBatch {
        assert!(n > 0, "an empty batch");
        let boxed: Box<[[u8; HEADER_LEN]]> = vec![*header; n].into_boxed_slice();
        // SAFETY: Box::into_raw never returns null.
        let hdrs = unsafe { NonNull::new_unchecked(Box::into_raw(boxed) as *mut [u8; HEADER_LEN]) };
        let iovlen = if filler.is_empty() { 1 } else { 2 };
        let mut iovs: Box<[[libc::iovec; 2]]> = (0..n)
            .map(|i| {
                [
                    libc::iovec {
                        // SAFETY: i < n, inside the header allocation.
                        iov_base: unsafe { hdrs.as_ptr().add(i) }.cast(),
                        iov_len: HEADER_LEN,
                    },
                    // The kernel only reads from the filler.
                    libc::iovec { iov_base: filler.as_ptr() as *mut libc::c_void, iov_len: filler.len() },
                ]
            })
            .collect();
        let msgs: Box<[libc::mmsghdr]> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                // Connected socket: no destination address per message.
                m.msg_hdr.msg_iov = iov.as_mut_ptr();
                m.msg_hdr.msg_iovlen = iovlen;
                m
            })
            .collect();
        MmsgBatch { hdrs, n, _iovs: iovs, msgs, _filler: filler }
    }

    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Message `i`'s header, to rewrite before [`MmsgBatch::send`].
    #[inline(always)]
    pub fn header_mut(&mut self, i: usize) -> &mut [u8; HEADER_LEN] {
        assert!(i < self.n);
        // SAFETY: i < n, inside the allocation; `&mut self` guarantees no
        // other reference to it exists, and the kernel reads it only during
        // `send`, which also takes `&mut self`.
        unsafe { &mut *self.hdrs.as_ptr().add(i) }
    }

    /// `sendmmsg` of the first `count` messages on `fd` (a connected
    /// socket). Returns how many the kernel took, always a prefix; when that
    /// is fewer than `count`, the rest were not sent (the kernel drops the
    /// error that stopped it: sending the rest again reports it).
    #[inline]
    pub fn send(&mut self, fd: impl AsFd, count: usize) -> io::Result<usize> {
        let count = count.min(self.n);
        // SAFETY: `msgs[..count]` are initialised mmsghdrs whose iovecs point
        // into this batch's header allocation and its filler, both alive for
        // the call (owned by `self`); the kernel writes only `msg_len`.
        let rc = unsafe { libc::sendmmsg(fd.as_fd().as_raw_fd(), self.msgs.as_mut_ptr(), count as libc::c_uint, 0) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
    }
}

impl Drop for MmsgBatch {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.hdrs.as_ptr(), self.n);
        // SAFETY: `hdrs`/`n` came from Box::into_raw of a boxed slice of this
        // length in `new`, and are freed only here, once.
        drop(unsafe { Box::from_raw(slice) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn allowed_cpus_are_listed() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn pin_to_an_allowed_cpu_and_reject_a_silly_one() {
        let cpu = allowed_cpus().unwrap()[0];
        std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            assert!(pin_current_thread(libc::CPU_SETSIZE as usize + 5).is_err());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn absolute_sleep_reaches_its_deadline() {
        let t0 = crate::clock::mono_ns();
        sleep_until_mono(t0 + 2_000_000);
        assert!(crate::clock::mono_ns() >= t0 + 2_000_000);
        // A deadline in the past returns at once.
        sleep_until_mono(t0);
    }

    #[test]
    fn mmsg_batch_sends_prefix_with_rewritten_headers() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let filler: Arc<[u8]> = vec![0xa5u8; 60].into();
        let mut b = MmsgBatch::new(&[7u8; HEADER_LEN], filler, 4);
        for i in 0..4 {
            b.header_mut(i)[0] = i as u8;
        }
        assert_eq!(b.send(&tx, 3).unwrap(), 3);
        let mut buf = [0u8; 200];
        for i in 0..3 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(n, 100);
            assert_eq!(buf[0], i as u8);
            assert_eq!(&buf[1..40], &[7u8; 39][..]);
            assert!(buf[40..100].iter().all(|&x| x == 0xa5));
        }
        // Header-only datagrams (empty filler).
        let mut h = MmsgBatch::new(&[1u8; HEADER_LEN], Arc::from(Vec::new()), 2);
        assert_eq!(h.send(&tx, 2).unwrap(), 2);
        assert_eq!(rx.recv(&mut buf).unwrap(), 40);
    }

    #[test]
    fn buffers_and_options_apply() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(set_buffer(&s, Buffer::Send, 1 << 20).unwrap() > 0);
        assert!(set_buffer(&s, Buffer::Recv, 1 << 20).unwrap() > 0);
        set_recverr(&s).unwrap();
        set_dont_fragment(&s).unwrap();
        set_multicast_if(&s, crate::sys::if_index("lo").unwrap(), Some(Ipv4Addr::LOCALHOST)).unwrap();
    }
}
