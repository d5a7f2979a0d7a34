//! Engines: how a worker hands datagrams to the kernel. One trait, so the
//! worker loop (pacing, counting, retries, end markers) is written once and
//! later engines (UDP GSO, io_uring, AF_XDP) only implement the sending.
//!
//! The contract that keeps sequence numbers exact: a call to
//! [`Engine::send_data`] for `n` datagrams numbered `seq..seq + n` sends a
//! *prefix* of them and says how long it is. The worker advances the flow by
//! exactly that much and asks again for the rest, so a sequence number is
//! never skipped (a datagram the kernel refused is sent again with the same
//! number) and never repeated (a datagram the kernel took is never sent again).

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;

use mcblast_common::wire::{FLAG_CLOCK_SYNCED, FLAG_TAI_SHIFT, HEADER_LEN, Header, Kind, Packet};

pub mod gso;
pub mod mmsg;
pub mod socket;
pub mod uring;
pub mod xdp;

pub use gso::GsoEngine;
pub use mmsg::MmsgEngine;
pub use socket::SocketEngine;
pub use uring::UringEngine;
pub use xdp::XdpEngine;

/// What one send call achieved.
#[derive(Debug)]
pub struct Sent {
    /// Datagrams the kernel took: the first `n` of those asked for.
    pub n: usize,
    /// Why datagram `n` was not taken, when the kernel said.
    pub err: Option<io::Error>,
}

/// Sends a worker's flows.
pub trait Transmitter {
    /// Short name for reports.
    fn name(&self) -> &'static str;

    /// Sends up to `n` data datagrams of the worker's flow `slot` (an index
    /// into the flows it was built with) numbered `seq`, `seq + 1`, …;
    /// `n` is at most the batch size it was built with. See the module
    /// docs for the prefix contract.
    fn send_data(&mut self, slot: usize, seq: u64, n: usize) -> Sent;

    /// The flows it was built with, by slot.
    fn flows(&self) -> &[FlowSocket];

    /// The run's header template.
    fn template(&self) -> &Template;

    /// Sends one end-of-flow marker for `slot`, carrying `count`, the number
    /// of data datagrams the flow sent: a header-only datagram on the flow's
    /// socket, whatever the engine (end markers are rare, so no batching).
    fn send_end(&mut self, slot: usize, count: u64) -> io::Result<()> {
        let f = &self.flows()[slot];
        f.socket.send(&self.template().end_marker(f.id, count)).map(drop)
    }
}

/// What every datagram of a run carries besides sequence and time.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub run: u32,
    pub clock: u32,
    pub clock_synced: bool,
    /// The sender's kernel TAI−UTC offset in seconds (see [`FLAG_TAI_SHIFT`]).
    pub tai_offset: u8,
    /// Data datagram length (header included).
    pub length: usize,
}

impl Template {
    /// The header flags: clock synchronised (bit 0), TAI offset (bits 8..15).
    pub fn flags(&self) -> u16 {
        (if self.clock_synced { FLAG_CLOCK_SYNCED } else { 0 }) | (self.tai_offset as u16) << FLAG_TAI_SHIFT
    }

    /// The 40-byte header of flow `flow`, kind `kind`, for a datagram of `len` bytes.
    pub fn header(&self, kind: Kind, flow: u32, seq: u64, len: usize) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        Header {
            kind,
            flags: self.flags(),
            run: self.run,
            flow,
            seq,
            tx_ns: 0,
            len: len as u32,
            clock: self.clock,
        }
        .emit(&mut Packet::new_unchecked(&mut h[..]));
        h
    }

    /// The filler after the header: built once, shared by every datagram.
    /// Its content is not defined by the wire format; a fixed non-zero
    /// pattern keeps it from looking like an empty page.
    pub fn filler(&self) -> Arc<[u8]> {
        (0..self.length - HEADER_LEN).map(|i| (i % 251) as u8 | 0x80).collect()
    }

    /// A header-only end marker for `flow` carrying `count`, stamped now.
    pub fn end_marker(&self, flow: u32, count: u64) -> [u8; HEADER_LEN] {
        let mut h = self.header(Kind::End, flow, count, HEADER_LEN);
        Packet::new_unchecked(&mut h[..]).set_tx_ns(crate::clock::tai_ns());
        h
    }
}

/// One flow as an engine sees it: its id and its connected socket.
#[derive(Debug)]
pub struct FlowSocket {
    pub id: u32,
    pub socket: UdpSocket,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair(n: usize) -> (Vec<FlowSocket>, Vec<UdpSocket>) {
        let mut flows = Vec::new();
        let mut rxs = Vec::new();
        for i in 0..n {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            tx.connect(rx.local_addr().unwrap()).unwrap();
            flows.push(FlowSocket { id: 10 + i as u32, socket: tx });
            rxs.push(rx);
        }
        (flows, rxs)
    }

    const T: Template = Template { run: 0xfeed, clock: 99, clock_synced: true, tai_offset: 37, length: 100 };

    fn check_engine(mut e: impl Transmitter, rxs: &[UdpSocket]) {
        // Flow slot 1 then slot 0 then slot 1 again: ids and sequence numbers
        // follow the slot, the rest of the header is the template.
        assert_eq!(e.send_data(1, 0, 3).n, 3);
        assert_eq!(e.send_data(0, 0, 2).n, 2);
        assert_eq!(e.send_data(1, 3, 1).n, 1);
        e.send_end(1, 4).unwrap();
        let mut buf = [0u8; 2048];
        let mut got = |rx: &UdpSocket| {
            let n = rx.recv(&mut buf).unwrap();
            (Header::parse_datagram(&buf[..n]).unwrap(), buf[40..n].to_vec())
        };
        for seq in 0..4 {
            let (h, fill) = got(&rxs[1]);
            assert_eq!((h.kind, h.flow, h.seq, h.len), (Kind::Data, 11, seq, 100));
            assert_eq!((h.run, h.clock, h.flags), (0xfeed, 99, FLAG_CLOCK_SYNCED | 37 << 8));
            assert!(h.tx_ns > 0);
            assert_eq!(fill, T.filler().to_vec());
        }
        let (h, fill) = got(&rxs[1]);
        assert_eq!((h.kind, h.flow, h.seq, h.len), (Kind::End, 11, 4, 40));
        assert_eq!(h.flags, FLAG_CLOCK_SYNCED | 37 << 8);
        assert!(fill.is_empty());
        for seq in 0..2 {
            let (h, _) = got(&rxs[0]);
            assert_eq!((h.kind, h.flow, h.seq), (Kind::Data, 10, seq));
        }
    }

    #[test]
    fn flags_carry_sync_and_tai_offset() {
        assert_eq!(T.flags(), 0x2501);
        let t = Template { clock_synced: false, tai_offset: 255, ..T };
        assert_eq!(t.flags(), 0xff00);
        assert_eq!(Template { tai_offset: 0, ..t }.flags(), 0);
    }

    #[test]
    fn socket_engine_sends_headers_right() {
        let (flows, rxs) = pair(2);
        check_engine(SocketEngine::new(flows, T), &rxs);
    }

    #[test]
    fn mmsg_engine_sends_headers_right() {
        let (flows, rxs) = pair(2);
        check_engine(MmsgEngine::new(flows, T, 8), &rxs);
    }

    #[test]
    fn gso_engine_sends_headers_right() {
        let (flows, rxs) = pair(2);
        let e = GsoEngine::new(flows, T, 8, 0);
        assert_eq!(e.segments(), 8);
        check_engine(e, &rxs);
    }

    #[test]
    fn uring_engine_sends_headers_right() {
        let (flows, rxs) = pair(2);
        check_engine(UringEngine::new(flows, T, 8, false, 0).unwrap(), &rxs);
        let (flows, rxs) = pair(2);
        check_engine(UringEngine::new(flows, T, 8, true, 0).unwrap(), &rxs);
    }

    /// GSO segments per send: at most the batch, 64, and 65507 bytes.
    #[test]
    fn gso_segments_are_capped() {
        let seg = |length: usize, batch: usize| {
            let (flows, _rxs) = pair(1);
            GsoEngine::new(flows, Template { length, ..T }, batch, 0).segments()
        };
        assert_eq!(seg(8192, 32), 7);
        assert_eq!(seg(1470, 32), 32);
        assert_eq!(seg(1470, 1024), 44);
        assert_eq!(seg(64, 1024), 64);
    }

    /// A socket that does not checksum (SO_NO_CHECK) makes the kernel
    /// refuse GSO with EINVAL: the engine falls back to sendmmsg for the
    /// same datagrams (none lost, none repeated) and names itself mmsg.
    #[test]
    fn gso_falls_back_to_mmsg_on_einval() {
        let (flows, rxs) = pair(2);
        for f in &flows {
            crate::sys::setsockopt(&f.socket, libc::SOL_SOCKET, libc::SO_NO_CHECK, &(1 as libc::c_int)).unwrap();
        }
        let e = GsoEngine::new(flows, T, 8, 0);
        assert_eq!(e.name(), "gso");
        let mut e = e;
        assert_eq!(e.send_data(1, 0, 3).n, 3);
        assert_eq!(e.name(), "mmsg");
        assert_eq!(e.flows().len(), 2);
        let mut buf = [0u8; 256];
        for seq in 0..3 {
            let n = rxs[1].recv(&mut buf).unwrap();
            let h = Header::parse_datagram(&buf[..n]).unwrap();
            assert_eq!((h.flow, h.seq, n), (11, seq, 100));
        }
        rxs[1].set_nonblocking(true).unwrap();
        assert!(rxs[1].recv(&mut buf).is_err(), "each datagram once");
    }

    #[test]
    fn refused_datagram_is_reported_not_counted() {
        // A socket connected to a port nobody listens on: the first send
        // works, ICMP port unreachable makes a later one fail with
        // ECONNREFUSED. Whatever the engine, the error comes with n = the
        // datagrams taken before it, never more than asked. (sendmmsg drops
        // an error that stops it after the first message, so ask it for one.)
        for kind in 0..4 {
            let mmsg = kind == 1;
            let (flows, rxs) = pair(1);
            drop(rxs);
            let mut e: Box<dyn Transmitter> = match kind {
                0 => Box::new(SocketEngine::new(flows, T)),
                1 => Box::new(MmsgEngine::new(flows, T, 4)),
                2 => Box::new(GsoEngine::new(flows, T, 4, 0)),
                _ => Box::new(UringEngine::new(flows, T, 4, false, 0).unwrap()),
            };
            let mut seq = 0u64;
            let mut refused = false;
            for _ in 0..50 {
                let ask = if mmsg { 1 } else { 4 };
                let s = e.send_data(0, seq, ask);
                assert!(s.n <= ask);
                seq += s.n as u64;
                if let Some(err) = s.err {
                    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
                    refused = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            assert!(refused, "engine {kind}: no ECONNREFUSED after 50 sends");
        }
    }
}
