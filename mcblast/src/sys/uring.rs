//! io_uring batched sends (crate `io-uring`): the submission-queue pushes,
//! buffer registration and the waits, which the crate leaves `unsafe`
//! because the kernel reads our memory after the call returns. Every
//! `unsafe` block carries a `// SAFETY:` note.
//!
//! One send of `n` datagrams is `n` SQEs (`IORING_OP_SENDMSG`, or
//! `IORING_OP_SEND_ZC` from a registered buffer with `--zerocopy`) linked
//! with `IOSQE_IO_LINK`, so the kernel runs them in order and, when one
//! fails, cancels the rest: what was sent is always a prefix, as the
//! engine contract wants. They are submitted and reaped with one
//! `io_uring_enter` (submit n, wait for n) unless a send must wait for
//! socket-buffer room; a wait longer than the send timeout cancels what is
//! left, and the first unsent datagram reports EAGAIN, like a blocking
//! socket's SO_SNDTIMEO.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::{Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};
use mcblast_common::wire::HEADER_LEN;

/// `IORING_SEND_ZC_REPORT_USAGE` (liburing): ask the kernel to say in the
/// notification whether it had to copy after all.
const SEND_ZC_REPORT_USAGE: u16 = 8;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: the notification's result bit for "copied".
const NOTIF_USAGE_ZC_COPIED: i32 = i32::MIN;
/// user_data of our cancel requests (datagram slots use 0..n).
const CANCEL_TAG: u64 = u64::MAX;
/// After cancelling, how long the kernel gets to finish every request.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// What this kernel's io_uring offers, from `io_uring_setup` and
/// `IORING_REGISTER_PROBE`.
#[derive(Debug, Clone)]
pub struct UringProbe {
    /// `IORING_FEAT_EXT_ARG`: waits with a timeout (5.11+); the engine needs it.
    pub ext_arg: bool,
    pub sendmsg: bool,
    pub send_zc: bool,
    pub sendmsg_zc: bool,
}

/// Sets up a small ring and asks it which operations it supports. Fails
/// when io_uring is missing or disabled (`kernel.io_uring_disabled`, seccomp).
pub fn probe() -> io::Result<UringProbe> {
    let ring: IoUring = IoUring::new(8)?;
    let mut p = Probe::new();
    ring.submitter().register_probe(&mut p)?;
    Ok(UringProbe {
        ext_arg: ring.params().is_feature_ext_arg(),
        sendmsg: p.is_supported(opcode::SendMsg::CODE),
        send_zc: p.is_supported(opcode::SendZc::CODE),
        sendmsg_zc: p.is_supported(opcode::SendMsgZc::CODE),
    })
}

/// The datagrams' memory.
enum Bufs {
    /// Per slot: its own header and a message of two iovecs (header, then
    /// the filler every slot shares).
    Msg { hdrs: Box<[[u8; HEADER_LEN]]>, _iovs: Box<[[libc::iovec; 2]]>, msgs: Box<[libc::msghdr]>, _filler: Arc<[u8]> },
    /// Zero-copy: `n` whole datagrams back to back in one buffer registered
    /// with the ring (index 0), so the kernel pins its pages once, not per send.
    Zc { buf: Box<[u8]>, length: usize },
}

/// Sends batches of datagrams on a fixed set of connected sockets.
///
/// Field order matters: the ring is dropped (and its requests torn down)
/// before the memory they point into.
pub struct UringSender {
    ring: IoUring,
    bufs: Bufs,
    n: usize,
    /// Sockets as registered files (index = slot), or raw descriptors when
    /// registration failed.
    fixed: bool,
    fds: Vec<RawFd>,
    timeout: Duration,
    /// Per-slot result of the current send.
    res: Vec<Option<i32>>,
    /// Set when requests might still be in flight: no more sends, and the
    /// memory is leaked rather than freed under the kernel.
    poisoned: Option<String>,
    /// A zero-copy notification said the kernel copied.
    pub zc_copied: bool,
}

impl UringSender {
    /// `n` slots of `length`-byte datagrams starting as `datagram` (header,
    /// then filler), on sockets `fds`; zero-copy sends with `zerocopy`.
    /// Build it on the thread that sends: the ring is single-issuer.
    pub fn new(
        fds: Vec<RawFd>,
        datagram: &[u8],
        n: usize,
        zerocopy: bool,
        timeout: Duration,
    ) -> io::Result<UringSender> {
        assert!(n > 0 && datagram.len() >= HEADER_LEN && !fds.is_empty());
        let entries = (2 * n).next_power_of_two().max(8) as u32;
        // Task work only when we wait (we always do): fewer interruptions.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (kernel older than 5.11): cannot bound a wait",
            ));
        }
        let fixed = ring.submitter().register_files(&fds).is_ok();
        let bufs = if zerocopy {
            let length = datagram.len();
            let mut buf = vec![0u8; n * length].into_boxed_slice();
            for c in buf.chunks_exact_mut(length) {
                c.copy_from_slice(datagram);
            }
            let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            // SAFETY: the buffer lives in `self.bufs` until after the ring
            // is dropped (field order), or is leaked when poisoned; its heap
            // allocation never moves.
            unsafe { ring.submitter().register_buffers(&[iov])? };
            Bufs::Zc { buf, length }
        } else {
            let mut hdr = [0u8; HEADER_LEN];
            hdr.copy_from_slice(&datagram[..HEADER_LEN]);
            let filler: Arc<[u8]> = datagram[HEADER_LEN..].into();
            let mut hdrs: Box<[[u8; HEADER_LEN]]> = vec![hdr; n].into_boxed_slice();
            let iovlen = if filler.is_empty() { 1 } else { 2 };
            let mut iovs: Box<[[libc::iovec; 2]]> = hdrs
                .iter_mut()
                .map(|h| {
                    [
                        libc::iovec { iov_base: h.as_mut_ptr().cast(), iov_len: HEADER_LEN },
                        // The kernel only reads from the filler.
                        libc::iovec { iov_base: filler.as_ptr() as *mut libc::c_void, iov_len: filler.len() },
                    ]
                })
                .collect();
            let msgs: Box<[libc::msghdr]> = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
                    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                    m.msg_iov = iov.as_mut_ptr();
                    m.msg_iovlen = iovlen;
                    m
                })
                .collect();
            Bufs::Msg { hdrs, _iovs: iovs, msgs, _filler: filler }
        };
        Ok(UringSender { ring, bufs, n, fixed, fds, timeout, res: vec![None; n], poisoned: None, zc_copied: false })
    }

    /// Datagrams per send.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether the sockets are registered files.
    pub fn fixed_files(&self) -> bool {
        self.fixed
    }

    /// Slot `i`'s header, to rewrite before [`UringSender::send`].
    #[inline(always)]
    pub fn header_mut(&mut self, i: usize) -> &mut [u8] {
        match &mut self.bufs {
            Bufs::Msg { hdrs, .. } => &mut hdrs[i][..],
            Bufs::Zc { buf, length } => &mut buf[i * *length..i * *length + HEADER_LEN],
        }
    }

    fn entry(&self, i: usize, sock: usize) -> squeue::Entry {
        let e = match (&self.bufs, self.fixed) {
            (Bufs::Msg { msgs, .. }, true) => opcode::SendMsg::new(Fixed(sock as u32), &msgs[i]).build(),
            (Bufs::Msg { msgs, .. }, false) => opcode::SendMsg::new(Fd(self.fds[sock]), &msgs[i]).build(),
            (Bufs::Zc { buf, length }, fixed) => {
                let p = buf[i * length..].as_ptr();
                let op = |e: opcode::SendZc| e.buf_index(Some(0)).zc_flags(SEND_ZC_REPORT_USAGE).build();
                if fixed {
                    op(opcode::SendZc::new(Fixed(sock as u32), p, *length as u32))
                } else {
                    op(opcode::SendZc::new(Fd(self.fds[sock]), p, *length as u32))
                }
            }
        };
        e.user_data(i as u64)
    }

    /// Pushes an entry; when the submission queue is full, submits what it
    /// holds first (the backlog goes to the kernel, the loop is bounded by
    /// the queue's size).
    fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        for _ in 0..3 {
            // SAFETY: every pointer in the entry (msghdr and iovecs, or the
            // registered buffer) points into `self.bufs`, which outlives
            // every request: `send` does not return before each one has
            // completed, else the sender is poisoned and leaks the memory.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// Sends slots `0..count` on socket `sock` (an index into the fds it
    /// was built with) in order. Returns how many were sent (a prefix) and
    /// why the next one was not.
    pub fn send(&mut self, sock: usize, count: usize) -> (usize, Option<io::Error>) {
        if let Some(why) = &self.poisoned {
            return (0, Some(io::Error::other(why.clone())));
        }
        let n = count.clamp(1, self.n);
        for r in &mut self.res[..n] {
            *r = None;
        }
        if let Err(err) = self.push_batch(sock, n) {
            return (0, Some(err));
        }
        match self.wait_all(n) {
            Ok(cancelled) => self.outcome(n, cancelled),
            Err(e) => (0, Some(e)),
        }
    }

    /// Queues `n` linked sends on socket `sock`; the push's error (the ring poisoned when part of the batch may be in
    /// flight).
    fn push_batch(&mut self, sock: usize, n: usize) -> io::Result<()> {
        for i in 0..n {
            let mut e = self.entry(i, sock);
            if i + 1 < n {
                e = e.flags(squeue::Flags::IO_LINK);
            }
            if let Err(err) = self.push(&e) {
                // Nothing of this batch may be in flight when we return:
                // only possible if earlier pushes were submitted already.
                if i == 0 {
                    return Err(err);
                }
                self.poisoned = Some(format!("io_uring: {err}"));
                return Err(err);
            }
        }
        Ok(())
    }

    /// Waits until all `n` sends (and their notifications) have completed, cancelling what is left after the send
    /// timeout; whether it cancelled, or the error that poisoned the ring.
    fn wait_all(&mut self, n: usize) -> io::Result<bool> {
        let mut done = 0usize;
        let mut notifs = 0usize;
        let mut deadline = super::clock_ns(libc::CLOCK_MONOTONIC) + self.timeout.as_nanos() as u64;
        let mut cancelled = false;
        let mut want = n;
        loop {
            let left_ns = deadline.saturating_sub(super::clock_ns(libc::CLOCK_MONOTONIC));
            let ts = Timespec::from(Duration::from_nanos(left_ns.max(1)));
            let args = SubmitArgs::new().timespec(&ts);
            let waited = self.ring.submitter().submit_with_args(want, &args);
            self.reap(&mut done, &mut notifs);
            if done == n && notifs == 0 {
                return Ok(cancelled);
            }
            want = (n - done + notifs).max(1);
            match waited {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ETIME) || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    // Cannot wait: the requests may still run.
                    self.poisoned = Some(format!("io_uring wait failed: {e}"));
                    return Err(e);
                }
            }
            if super::clock_ns(libc::CLOCK_MONOTONIC) < deadline {
                continue;
            }
            if cancelled {
                let why =
                    format!("io_uring: {} sends neither completed nor were cancelled in {CANCEL_WAIT:?}", n - done);
                self.poisoned = Some(why.clone());
                return Err(io::Error::other(why));
            }
            self.cancel_rest(n)?;
            cancelled = true;
            deadline = super::clock_ns(libc::CLOCK_MONOTONIC) + CANCEL_WAIT.as_nanos() as u64;
        }
    }

    /// Queues a cancel for each of the `n` sends not completed yet; the push's error (the ring then poisoned).
    fn cancel_rest(&mut self, n: usize) -> io::Result<()> {
        // The socket buffer stayed full for the whole timeout: cancel
        // what is left (in order, so the chain's head goes first).
        for i in 0..n {
            if self.res[i].is_none() {
                let c = opcode::AsyncCancel::new(i as u64).build().user_data(CANCEL_TAG);
                if let Err(e) = self.push(&c) {
                    self.poisoned = Some(format!("io_uring: cannot cancel: {e}"));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Once all `n` have completed: how many sends succeeded (a prefix), and the reason the next one failed.
    fn outcome(&self, n: usize, cancelled: bool) -> (usize, Option<io::Error>) {
        let mut k = 0;
        while k < n && self.res[k].is_some_and(|r| r >= 0) {
            k += 1;
        }
        if k == n {
            return (n, None);
        }
        let r = self.res[k].unwrap_or(-libc::ECANCELED);
        debug_assert!(self.res[k..n].iter().all(|r| r.is_some_and(|r| r < 0)), "a send after a failed one succeeded");
        let err = if r == -libc::ECANCELED && cancelled {
            // Our own cancel after the send timeout: what a blocking socket
            // reports as EAGAIN.
            io::Error::from_raw_os_error(libc::EAGAIN)
        } else {
            io::Error::from_raw_os_error(-r)
        };
        (k, Some(err))
    }

    fn reap(&mut self, done: &mut usize, notifs: &mut usize) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data();
            if ud == CANCEL_TAG {
                continue;
            }
            let flags = cqe.flags();
            if cqueue::notif(flags) {
                *notifs = notifs.saturating_sub(1);
                if cqe.result() & NOTIF_USAGE_ZC_COPIED != 0 {
                    self.zc_copied = true;
                }
                continue;
            }
            let i = ud as usize;
            if i < self.res.len() && self.res[i].is_none() {
                self.res[i] = Some(cqe.result());
                *done += 1;
                if cqueue::more(flags) {
                    *notifs += 1;
                }
            }
        }
    }
}

impl Drop for UringSender {
    fn drop(&mut self) {
        if self.poisoned.is_some() {
            // The kernel may still read this memory: never free it.
            let bufs = std::mem::replace(&mut self.bufs, Bufs::Zc { buf: Box::new([]), length: 1 });
            std::mem::forget(bufs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn probe_finds_sendmsg() {
        let p = probe().unwrap();
        assert!(p.sendmsg && p.ext_arg, "{p:?}");
    }

    fn check(zerocopy: bool) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut d = vec![7u8; 100];
        d[HEADER_LEN..].fill(0xa5);
        let mut s = UringSender::new(vec![tx.as_raw_fd()], &d, 4, zerocopy, Duration::from_millis(200)).unwrap();
        for i in 0..4 {
            s.header_mut(i)[0] = i as u8;
        }
        let (k, e) = s.send(0, 3);
        assert_eq!((k, e.map(|e| e.to_string())), (3, None));
        let mut buf = [0u8; 200];
        for i in 0..3 {
            assert_eq!(rx.recv(&mut buf).unwrap(), 100);
            assert_eq!(buf[0], i as u8, "in order");
            assert!(buf[1..40].iter().all(|&x| x == 7) && buf[40..100].iter().all(|&x| x == 0xa5));
        }
        rx.set_nonblocking(true).unwrap();
        assert!(rx.recv(&mut buf).is_err(), "exactly 3");
    }

    #[test]
    fn sends_a_batch_in_order() {
        check(false);
    }

    #[test]
    fn zerocopy_sends_a_batch_in_order() {
        if !probe().unwrap().send_zc {
            eprintln!("SKIP: no IORING_OP_SEND_ZC");
            return;
        }
        check(true);
    }

    /// A socket connected to a port nobody listens on: ICMP port
    /// unreachable makes a later send fail with ECONNREFUSED; the linked
    /// rest of that batch is cancelled, so the result is a prefix and the
    /// error is the real one, not ECANCELED.
    #[test]
    fn a_failed_send_cancels_the_rest_and_reports_a_prefix() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        drop(rx);
        let d = vec![1u8; 64];
        let mut s = UringSender::new(vec![tx.as_raw_fd()], &d, 8, false, Duration::from_millis(200)).unwrap();
        let mut refused = false;
        for _ in 0..50 {
            let (k, e) = s.send(0, 8);
            assert!(k <= 8);
            if let Some(e) = e {
                assert!(k < 8);
                assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(refused);
    }
}
