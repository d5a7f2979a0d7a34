//! A plain-socket mcblast stream for the lab tests: crafted datagrams sent
//! from the lab's sender, and receiver threads that collect sequence numbers.

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcblast::lab::{Lab, NodeThread};
use mcblast_common::wire::{HEADER_LEN, Kind, Packet, VERSION};

pub const PORT: u16 = 5001;

/// What a receiver got: data sequence numbers, in arrival order.
pub type Seqs = Vec<u64>;

/// Datagrams of `len` bytes of run `run`, flow 1, sent `gap` apart.
pub struct Stream {
    pub len: usize,
    pub run: u32,
    pub gap: Duration,
}

impl Stream {
    pub fn datagram(&self, kind: Kind, seq: u64) -> Vec<u8> {
        let mut b = vec![0u8; self.len];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_magic();
        p.set_version(VERSION);
        p.set_kind(kind);
        p.set_run(self.run);
        p.set_flow(1);
        p.set_seq(seq);
        p.set_len_field(self.len as u32);
        b
    }

    /// Sends data datagrams 0..count, then 3 end markers, from the sender,
    /// paced so no receiver's socket buffer can overflow.
    pub fn send(&self, lab: &Lab, group: Ipv4Addr, count: u64) {
        let data: Vec<Vec<u8>> = (0..count).map(|s| self.datagram(Kind::Data, s)).collect();
        let end = self.datagram(Kind::End, count);
        let gap = self.gap;
        lab.run_in("sender", move || -> io::Result<()> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_multicast_ttl_v4(1)?;
            for d in &data {
                s.send_to(d, (group, PORT))?;
                std::thread::sleep(gap);
            }
            for _ in 0..3 {
                s.send_to(&end, (group, PORT))?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
        .unwrap()
        .unwrap();
    }

    /// A receiver thread in `node` joined to `group`, collecting data
    /// sequence numbers until the first end marker (bounded: 30 s); every
    /// datagram must have the stream's length. Returns once it has joined.
    pub fn receiver(&self, lab: &Lab, node: &str, group: Ipv4Addr) -> NodeThread<io::Result<Seqs>> {
        let addr = lab.addr(node);
        let len = self.len;
        let (tx, rx) = mpsc::channel();
        let t = lab
            .spawn(node, move || -> io::Result<Seqs> {
                let s = UdpSocket::bind(("0.0.0.0", PORT))?;
                s.join_multicast_v4(&group, &addr)?;
                s.set_read_timeout(Some(Duration::from_millis(200)))?;
                let _ = tx.send(());
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut seqs = Vec::new();
                let mut buf = vec![0u8; 65536];
                while Instant::now() < deadline {
                    match s.recv(&mut buf) {
                        Ok(n) if n >= HEADER_LEN => {
                            assert_eq!(n, len, "datagram length");
                            let p = Packet::new_unchecked(&buf[..n]);
                            match Kind::from_u8(p.kind_raw()) {
                                Some(Kind::Data) => seqs.push(p.seq()),
                                Some(Kind::End) => return Ok(seqs),
                                None => {}
                            }
                        }
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("no end marker within 30 s; got {} data", seqs.len())))
            })
            .unwrap();
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            panic!("receiver in {node} did not start: {:?}", t.join());
        }
        t
    }
}
