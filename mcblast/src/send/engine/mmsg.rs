//! `mmsg`: `sendmmsg` batches on a connected UDP socket. Each flow has a
//! pre-built batch (headers, iovecs, mmsghdrs, built once on the worker's
//! thread); a send rewrites only the headers' sequence numbers and send
//! time, and the filler is one shared read-only buffer every message points
//! to, so it costs nothing per datagram and stays in cache.

use mcblast_common::wire::{Kind, Packet};

use super::{Transmitter, FlowSocket, Sent, Template};
use crate::sys::send::MmsgBatch;

pub struct MmsgEngine {
    flows: Vec<FlowSocket>,
    batches: Vec<MmsgBatch>,
    template: Template,
}

impl MmsgEngine {
    /// Builds one batch of `batch` messages per flow.
    pub fn new(flows: Vec<FlowSocket>, template: Template, batch: usize) -> MmsgEngine {
        let filler = template.filler();
        let batches = flows
            .iter()
            .map(|f| MmsgBatch::new(&template.header(Kind::Data, f.id, 0, template.length), filler.clone(), batch))
            .collect();
        MmsgEngine { flows, batches, template }
    }
}

impl Transmitter for MmsgEngine {
    fn name(&self) -> &'static str {
        "mmsg"
    }

    #[inline]
    fn send_data(&mut self, slot: usize, seq: u64, n: usize) -> Sent {
        let b = &mut self.batches[slot];
        let n = n.min(b.len());
        // One clock read per batch: the whole batch goes out in one call.
        let now = crate::clock::tai_ns();
        for i in 0..n {
            let mut p = Packet::new_unchecked(&mut b.header_mut(i)[..]);
            p.set_seq(seq + i as u64);
            p.set_tx_ns(now);
        }
        match b.send(&self.flows[slot].socket, n) {
            // A short count: the kernel stopped at message k (and dropped
            // the reason); the worker sends the rest again from seq + k.
            Ok(k) => Sent { n: k, err: None },
            Err(e) => Sent { n: 0, err: Some(e) },
        }
    }

    fn flows(&self) -> &[FlowSocket] {
        &self.flows
    }

    fn template(&self) -> &Template {
        &self.template
    }
}
