//! `socket`: one `send` per datagram on a connected UDP socket (the kernel's
//! sendto(2) with no address, as iperf does) — the baseline.

use mcblast_common::wire::{HEADER_LEN, Kind, Packet};

use super::{Transmitter, FlowSocket, Sent, Template};

pub struct SocketEngine {
    flows: Vec<FlowSocket>,
    template: Template,
    /// One whole datagram, header and filler, built once.
    buf: Vec<u8>,
    /// The flow whose id `buf` carries now.
    current: usize,
}

impl SocketEngine {
    pub fn new(flows: Vec<FlowSocket>, template: Template) -> SocketEngine {
        assert!(!flows.is_empty());
        let mut buf = Vec::with_capacity(template.length);
        buf.extend_from_slice(&template.header(Kind::Data, flows[0].id, 0, template.length));
        buf.extend_from_slice(&template.filler());
        debug_assert_eq!(buf.len(), template.length);
        debug_assert!(buf.len() >= HEADER_LEN);
        SocketEngine { flows, template, buf, current: 0 }
    }
}

impl Transmitter for SocketEngine {
    fn name(&self) -> &'static str {
        "socket"
    }

    #[inline]
    fn send_data(&mut self, slot: usize, seq: u64, n: usize) -> Sent {
        let sock = &self.flows[slot].socket;
        if self.current != slot {
            // Once per batch when the worker moves to another flow.
            Packet::new_unchecked(&mut self.buf[..]).set_flow(self.flows[slot].id);
            self.current = slot;
        }
        for i in 0..n {
            let mut p = Packet::new_unchecked(&mut self.buf[..]);
            p.set_seq(seq + i as u64);
            p.set_tx_ns(crate::clock::tai_ns());
            if let Err(e) = sock.send(&self.buf) {
                return Sent { n: i, err: Some(e) };
            }
        }
        Sent { n, err: None }
    }

    fn flows(&self) -> &[FlowSocket] {
        &self.flows
    }

    fn template(&self) -> &Template {
        &self.template
    }
}
