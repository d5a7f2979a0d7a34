//! `gso`: UDP GSO. One `sendmsg` carries up to 64 datagrams of `-l` bytes
//! (at most 65507 bytes together: 7 at 8192 B), laid end to end in one
//! buffer with a `UDP_SEGMENT` control message; each datagram starts with
//! its own header and sequence number. The stack handles the whole buffer
//! as one packet (one route lookup, one trip through the qdisc and, on the
//! lab, through the bridge) and cuts it into datagrams as late as it can.
//!
//! A send is all or nothing, so the prefix contract holds trivially. The
//! plan probed support before the run; should the kernel still answer EIO
//! or EINVAL (a device without checksum offload, say), the engine says so
//! in one line on stderr and sends the rest of the run with `sendmmsg`,
//! starting with the very datagrams GSO refused.

use mcblast_common::wire::{Kind, Packet};

use super::{Transmitter, FlowSocket, MmsgEngine, Sent, Template};
use crate::sys::gso::{GsoBuf, max_segments};

pub struct GsoEngine {
    /// Empty once fallen back (the mmsg engine owns the sockets then).
    flows: Vec<FlowSocket>,
    template: Template,
    buf: GsoBuf,
    /// The flow whose id the buffer's headers carry now.
    current: usize,
    batch: usize,
    worker: usize,
    fallback: Option<MmsgEngine>,
}

impl GsoEngine {
    /// Up to `min(batch, 64, 65507 / length)` datagrams per send.
    pub fn new(flows: Vec<FlowSocket>, template: Template, batch: usize, worker: usize) -> GsoEngine {
        assert!(!flows.is_empty());
        let segs = batch.min(max_segments(template.length)).max(1);
        let mut d = Vec::with_capacity(template.length);
        d.extend_from_slice(&template.header(Kind::Data, flows[0].id, 0, template.length));
        d.extend_from_slice(&template.filler());
        let buf = GsoBuf::new(&d, segs);
        GsoEngine { flows, template, buf, current: 0, batch, worker, fallback: None }
    }

    /// Datagrams per GSO send.
    pub fn segments(&self) -> usize {
        self.buf.segs()
    }

    fn fall_back(&mut self, why: &std::io::Error) -> &mut MmsgEngine {
        eprintln!(
            "mcblast: worker {}: UDP GSO send refused ({why}): this path cannot segment UDP; \
             sending the rest of the run with the mmsg engine (use --engine mmsg to skip GSO)",
            self.worker
        );
        let flows = std::mem::take(&mut self.flows);
        self.fallback.insert(MmsgEngine::new(flows, self.template, self.batch))
    }
}

impl Transmitter for GsoEngine {
    fn name(&self) -> &'static str {
        if self.fallback.is_some() { "mmsg" } else { "gso" }
    }

    #[inline]
    fn send_data(&mut self, slot: usize, seq: u64, n: usize) -> Sent {
        if let Some(m) = self.fallback.as_mut() {
            return m.send_data(slot, seq, n);
        }
        let n = n.min(self.buf.segs());
        let now = crate::clock::tai_ns();
        let flow = self.flows[slot].id;
        let switch = self.current != slot;
        for i in 0..n {
            let mut p = Packet::new_unchecked(self.buf.datagram_mut(i));
            if switch {
                p.set_flow(flow);
            }
            p.set_seq(seq + i as u64);
            p.set_tx_ns(now);
        }
        if switch {
            // Headers past n still carry the old flow: rewrite them too, so
            // `current` describes every header in the buffer.
            for i in n..self.buf.segs() {
                Packet::new_unchecked(self.buf.datagram_mut(i)).set_flow(flow);
            }
            self.current = slot;
        }
        match self.buf.send(&self.flows[slot].socket, n) {
            Ok(k) => Sent { n: k, err: None },
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) => {
                self.fall_back(&e).send_data(slot, seq, n)
            }
            Err(e) => Sent { n: 0, err: Some(e) },
        }
    }

    fn flows(&self) -> &[FlowSocket] {
        match &self.fallback {
            Some(m) => m.flows(),
            None => &self.flows,
        }
    }

    fn template(&self) -> &Template {
        &self.template
    }
}
