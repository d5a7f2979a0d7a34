//! `uring`: io_uring batched sends. A batch of `n` datagrams is `n` linked
//! `IORING_OP_SENDMSG` requests (header iovec + shared filler, like
//! `mmsg`), submitted and reaped with one `io_uring_enter`; the worker's
//! sockets are registered files. With `--zerocopy`, `IORING_OP_SEND_ZC`
//! from one registered buffer of whole datagrams instead (the kernel pins
//! the pages once; each send waits for the kernel's notification that it
//! is done with the buffer before the headers are rewritten). See
//! `sys::uring` for how the prefix contract is kept.

use std::os::fd::AsRawFd;

use mcblast_common::wire::{Kind, Packet};

use super::{Transmitter, FlowSocket, Sent, Template};
use crate::sys::uring::UringSender;

pub struct UringEngine {
    flows: Vec<FlowSocket>,
    template: Template,
    tx: UringSender,
    /// The flow whose id every slot's header carries now.
    current: usize,
    worker: usize,
    zerocopy: bool,
    told_copied: bool,
}

impl UringEngine {
    /// A ring for this worker's flows, `batch` datagrams per send.
    pub fn new(
        flows: Vec<FlowSocket>,
        template: Template,
        batch: usize,
        zerocopy: bool,
        worker: usize,
    ) -> std::io::Result<UringEngine> {
        assert!(!flows.is_empty());
        let mut d = Vec::with_capacity(template.length);
        d.extend_from_slice(&template.header(Kind::Data, flows[0].id, 0, template.length));
        d.extend_from_slice(&template.filler());
        let fds = flows.iter().map(|f| f.socket.as_raw_fd()).collect();
        let tx = UringSender::new(fds, &d, batch, zerocopy, crate::send::SEND_TIMEOUT)?;
        Ok(UringEngine { flows, template, tx, current: 0, worker, zerocopy, told_copied: false })
    }
}

impl Transmitter for UringEngine {
    fn name(&self) -> &'static str {
        "uring"
    }

    #[inline]
    fn send_data(&mut self, slot: usize, seq: u64, n: usize) -> Sent {
        let n = n.min(self.tx.len());
        let now = crate::clock::tai_ns();
        if self.current != slot {
            let flow = self.flows[slot].id;
            for i in 0..self.tx.len() {
                Packet::new_unchecked(self.tx.header_mut(i)).set_flow(flow);
            }
            self.current = slot;
        }
        for i in 0..n {
            let mut p = Packet::new_unchecked(self.tx.header_mut(i));
            p.set_seq(seq + i as u64);
            p.set_tx_ns(now);
        }
        let (k, err) = self.tx.send(slot, n);
        if self.zerocopy && self.tx.zc_copied && !self.told_copied {
            self.told_copied = true;
            eprintln!(
                "mcblast: worker {}: the kernel copied the zero-copy sends on this path (IORING_NOTIF_USAGE_ZC_COPIED); \
                 --zerocopy gains nothing here",
                self.worker
            );
        }
        Sent { n: k, err }
    }

    fn flows(&self) -> &[FlowSocket] {
        &self.flows
    }

    fn template(&self) -> &Template {
        &self.template
    }
}
