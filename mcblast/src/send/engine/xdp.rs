//! `xdp`: AF_XDP. The sender builds whole Ethernet/IPv4/UDP frames in a
//! UMEM and hands them to the driver through a TX ring, one AF_XDP socket
//! per worker, bound to queue = worker index (socket layer: `sys::xsk`).
//!
//! Frames: destination MAC 01:00:5e + the low 23 bits of the group; the
//! interface's own MAC (sysfs) and IPv4 address as source; IPv4 with DF,
//! ID 0 (RFC 6864: atomic datagrams), the plan's TTL, header checksum; UDP
//! with its checksum **computed** (the filler's share is summed once, so a
//! datagram costs a 40-byte sum). Source port: each flow still has its
//! kernel UDP socket (bound to an ephemeral port, used for the end
//! markers), and its frames carry that socket's port, so the kernel never
//! gives the port to anyone else and a flow's data and end markers come
//! from one port.
//!
//! Layout: UMEM chunks of 4096 bytes; a datagram whose frame (length + 42)
//! is larger takes several consecutive chunks, sent as one multi-buffer
//! packet (XDP_USE_SG, every descriptor but the last flagged
//! XDP_PKT_CONTD). A 16 KiB chunk would need a hugepage-backed UMEM on this
//! kernel (aligned chunks above the page size), so multi-buffer it is:
//! 8192-byte datagrams are 3 descriptors. Each packet slot is pre-filled
//! with the filler once; per datagram only the first 82 bytes (Ethernet,
//! IPv4, UDP and mcblast headers) are written.
//!
//! Modes: zero-copy when the driver supports it, else copy mode (the
//! kernel builds an skb per frame; veth, as in the lab, only has this).
//!
//! What `sent` means — the ledger:
//! * copy mode: the kernel transmits inside our `sendto`, so after each
//!   kick the engine knows exactly which frames the driver accepted. A
//!   frame counts as sent when the kernel took it off the TX ring and the
//!   driver's transmit did not refuse it. When the driver drops one
//!   (`sendto` → EBUSY, NET_XMIT_DROP) it is counted as an ENOBUFS error
//!   and its sequence number is sent again, as the socket engines do. After
//!   any error the published consumer index is not exact (the kernel
//!   publishes it only when it runs out of descriptors), so the engine
//!   rewrites every descriptor of the batch as invalid and kicks once more:
//!   the kernel skips those it had not taken and counts them
//!   (`tx_invalid_descs`); the difference is exactly what it took. Frames
//!   not taken are not sent and not counted; their numbers go out again.
//! * zero-copy: the NIC consumes the ring on its own, so a frame counts as
//!   sent when it is on the TX ring and the kernel was kicked; before the
//!   end markers the engine waits (bounded) for every frame's completion.
//!
//! End markers go through the flow's kernel UDP socket (same source
//! address and port), after every counted frame has left.

use std::io;
use std::net::Ipv4Addr;

use anyhow::{Result, anyhow, bail};
use mcblast_common::wire::{HEADER_LEN, Kind, Packet};

use super::{Transmitter, FlowSocket, Sent, Template};
use crate::send::plan::{IP_UDP_OVERHEAD, SendPlan};
use crate::sys::xsk::{PKT_CONTD, Xsk, XskConfig, XskError};

/// Ethernet + IPv4 + UDP header bytes.
pub const L2_L4: usize = 14 + 20 + 8;
/// UMEM chunk size.
pub const CHUNK: usize = 4096;
/// Packet slots per socket.
pub const SLOTS: usize = 1024;
/// Most descriptors one packet may have (the kernel's MAX_SKB_FRAGS + 1).
pub const MAX_DESCS: usize = 17;
/// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17+): descriptors copy mode sends per kick.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// The kernel's copy-mode budget without that option.
const DEFAULT_BUDGET: u32 = 32;

/// What the report says about the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ZeroCopy,
    Copy,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::ZeroCopy => "zerocopy",
            Mode::Copy => "copy",
        }
    }
}

/// Multicast MAC for an IPv4 group: 01:00:5e + the low 23 bits.
pub fn multicast_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// Ones'-complement sum of `data` as big-endian 16-bit words (a trailing
/// odd byte is the high half of a last word), not yet folded. `data` must
/// start at an even offset of what is being summed.
pub fn sum16(data: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut it = data.chunks_exact(2);
    for w in &mut it {
        s += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [b] = it.remainder() {
        s += (*b as u64) << 8;
    }
    s
}

/// Folds a sum to 16 bits and complements it.
pub fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A flow's frame headers, built once.
#[derive(Debug, Clone)]
pub struct FlowFrame {
    /// Ethernet, IPv4 (checksum filled in) and UDP (checksum 0) headers.
    pub l2_l4: [u8; L2_L4],
    /// The flow's mcblast header (sequence and time rewritten per datagram).
    pub header: [u8; HEADER_LEN],
    /// Sum of the UDP pseudo-header, the UDP header and the filler.
    pub partial: u64,
}

/// Addresses of one flow's frames.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub group: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
}

impl FlowFrame {
    pub fn new(a: &Addrs, header: [u8; HEADER_LEN], filler: &[u8]) -> FlowFrame {
        let udp_len = (8 + HEADER_LEN + filler.len()) as u16;
        let mut h = [0u8; L2_L4];
        h[0..6].copy_from_slice(&multicast_mac(a.group));
        h[6..12].copy_from_slice(&a.src_mac);
        h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut h[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, ID 0
        ip[8] = a.ttl;
        ip[9] = libc::IPPROTO_UDP as u8;
        ip[12..16].copy_from_slice(&a.src.octets());
        ip[16..20].copy_from_slice(&a.group.octets());
        let c = fold(sum16(ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let udp = &mut h[34..42];
        udp[0..2].copy_from_slice(&a.src_port.to_be_bytes());
        udp[2..4].copy_from_slice(&a.dst_port.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        let pseudo = sum16(&a.src.octets()) + sum16(&a.group.octets()) + libc::IPPROTO_UDP as u64 + udp_len as u64;
        let partial = pseudo + sum16(&h[34..42]) + sum16(filler);
        FlowFrame { l2_l4: h, header, partial }
    }

    /// Writes the first `L2_L4 + HEADER_LEN` bytes of datagram `seq`, sent
    /// at `tx_ns`, into `out`, UDP checksum included.
    #[inline]
    pub fn write(&self, out: &mut [u8], seq: u64, tx_ns: u64) {
        out[..L2_L4].copy_from_slice(&self.l2_l4);
        let mc = &mut out[L2_L4..L2_L4 + HEADER_LEN];
        mc.copy_from_slice(&self.header);
        let mut p = Packet::new_unchecked(&mut mc[..]);
        p.set_seq(seq);
        p.set_tx_ns(tx_ns);
        let c = match fold(self.partial + sum16(mc)) {
            0 => 0xffff, // 0 means "no checksum" in UDP over IPv4
            c => c,
        };
        out[40..42].copy_from_slice(&c.to_be_bytes());
    }
}

/// Descriptors a frame of `frame_len` bytes takes.
pub fn descs_for(frame_len: usize) -> usize {
    frame_len.div_ceil(CHUNK)
}

/// Refuses plans the xdp engine cannot send, one line each, saying what to use instead.
pub fn check_plan(p: &SendPlan) -> Result<()> {
    let Some((ifc, _)) = &p.iface else {
        bail!("the xdp engine needs an interface (it builds whole Ethernet frames): give one with -I, e.g. -I eth0");
    };
    if ifc.addr.is_none() {
        bail!(
            "the xdp engine needs an IPv4 address on {} for the frames' source; add one, or use --engine mmsg",
            ifc.name
        );
    }
    if p.loopback {
        bail!(
            "--loop does not work with the xdp engine (its frames bypass the IP stack); use --engine mmsg for local listeners"
        );
    }
    let packet = p.length + IP_UDP_OVERHEAD;
    if packet > ifc.mtu as usize {
        bail!(
            "-l {} makes {packet}-byte IP packets, more than the {}-byte MTU of {}, and the xdp engine does not fragment; use -l {} or less, or --engine mmsg --allow-fragments",
            p.length,
            ifc.mtu,
            ifc.name,
            (ifc.mtu as usize).saturating_sub(IP_UDP_OVERHEAD)
        );
    }
    if descs_for(p.length + L2_L4) > MAX_DESCS {
        bail!(
            "-l {} needs {} AF_XDP buffers per frame, more than the kernel's {MAX_DESCS}; use -l {} or less, or --engine mmsg",
            p.length,
            descs_for(p.length + L2_L4),
            MAX_DESCS * CHUNK - L2_L4
        );
    }
    let queues = crate::sys::xsk::tx_queues(&ifc.name);
    if p.workers.len() > queues as usize {
        bail!(
            "--threads {} needs {} queues on {} (one AF_XDP socket per queue), it has {queues}; use --threads {queues} or fewer with --engine xdp",
            p.workers.len(),
            p.workers.len(),
            ifc.name
        );
    }
    Ok(())
}

/// One worker's AF_XDP socket, opened before the run starts.
pub struct XdpSetup {
    xsk: Xsk,
    mode: Mode,
    addrs: Vec<Addrs>,
}

impl XdpSetup {
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// A one-line message for a failed set-up step.
fn explain(e: &XskError, ifname: &str, queue: u32, length: usize, sg: bool) -> String {
    let code = e.err.raw_os_error();
    let hint = match (e.step, code) {
        ("socket(AF_XDP)", Some(libc::EAFNOSUPPORT)) => {
            "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS); use --engine mmsg".to_string()
        }
        ("socket(AF_XDP)", Some(libc::EPERM | libc::EACCES)) => {
            "AF_XDP needs CAP_NET_RAW (run as root); use --engine mmsg".to_string()
        }
        ("XDP_UMEM_REG", Some(libc::EPERM | libc::ENOMEM | libc::ENOBUFS)) => format!(
            "cannot lock {} MiB of UMEM: raise the locked-memory limit (ulimit -l) or run as root; or use --engine mmsg",
            (SLOTS * descs_for(length + L2_L4) * CHUNK) >> 20
        ),
        ("bind", Some(libc::EBUSY)) => {
            format!(
                "queue {queue} of {ifname} already has an AF_XDP socket (another sender?); stop it, or use --engine mmsg"
            )
        }
        ("bind", Some(libc::EINVAL)) if sg => format!(
            "this kernel refuses multi-buffer AF_XDP frames (XDP_USE_SG), which -l {length} needs; use -l {} or less, or --engine mmsg",
            CHUNK - L2_L4
        ),
        ("bind", _) => format!("{ifname} does not support AF_XDP on queue {queue}; use --engine mmsg"),
        _ => "use --engine mmsg".to_string(),
    };
    format!("xdp engine on {ifname}: {e}: {hint}")
}

/// Opens every worker's socket: zero-copy first, copy mode when the driver
/// has no zero-copy (then says so once on stderr). Returns them in worker order.
pub fn open_all(p: &SendPlan, src_ports: &[u16]) -> Result<(Vec<XdpSetup>, Mode)> {
    check_plan(p)?;
    let (ifc, _) = p.iface.as_ref().expect("checked");
    let src_mac = crate::sys::xsk::mac_address(&ifc.name)
        .map_err(|e| anyhow!("xdp engine: cannot read the MAC address of {}: {e}; use --engine mmsg", ifc.name))?;
    let src = ifc.addr.expect("checked");
    let per = descs_for(p.length + L2_L4);
    let sg = per > 1;
    let mut out = Vec::new();
    let mut mode = Mode::ZeroCopy;
    for w in &p.workers {
        let mut cfg = XskConfig {
            ifindex: ifc.index,
            queue: w.index as u32,
            chunk: CHUNK as u32,
            chunks: (SLOTS * per) as u32,
            tx_size: (SLOTS * per).next_power_of_two() as u32,
            cq_size: (SLOTS * per).next_power_of_two() as u32,
            zerocopy: mode == Mode::ZeroCopy,
            sg,
        };
        let xsk = match Xsk::open(&cfg) {
            Ok(x) => x,
            Err(e) if cfg.zerocopy && e.step == "bind" && e.err.raw_os_error() != Some(libc::EBUSY) => {
                cfg.zerocopy = false;
                let x = Xsk::open(&cfg).map_err(|e| anyhow!(explain(&e, &ifc.name, cfg.queue, p.length, sg)))?;
                mode = Mode::Copy;
                eprintln!(
                    "mcblast: {}: AF_XDP zero-copy not available ({}), sending in copy mode (the kernel copies each frame into an skb)",
                    ifc.name, e.err
                );
                x
            }
            Err(e) => bail!(explain(&e, &ifc.name, cfg.queue, p.length, sg)),
        };
        if !xsk.zerocopy() {
            mode = Mode::Copy;
        }
        let addrs = w
            .flows
            .iter()
            .map(|&id| Addrs {
                src_mac,
                src,
                group: p.flows[id as usize].group,
                src_port: src_ports[id as usize],
                dst_port: p.port,
                ttl: p.ttl,
            })
            .collect();
        out.push(XdpSetup { mode: if xsk.zerocopy() { Mode::ZeroCopy } else { Mode::Copy }, xsk, addrs });
    }
    Ok((out, mode))
}

pub struct XdpEngine {
    flows: Vec<FlowSocket>,
    template: Template,
    xsk: Xsk,
    mode: Mode,
    frames: Vec<FlowFrame>,
    /// Descriptors per packet, and the bytes of each.
    per: usize,
    desc_len: Vec<u32>,
    /// Bytes of UMEM per packet slot.
    slot_bytes: usize,
    free: Vec<u32>,
    /// Descriptors of each slot the kernel still holds.
    outstanding: Vec<u16>,
    /// Descriptors one copy-mode kick may carry.
    budget: usize,
    /// The slots of the batch being sent.
    batch: Vec<u32>,
    /// Set when the TX ring is in a state the engine cannot account for.
    broken: Option<String>,
}

impl XdpEngine {
    /// Takes the worker's flows and its socket; pre-fills every packet slot.
    pub fn new(flows: Vec<FlowSocket>, template: Template, setup: XdpSetup) -> XdpEngine {
        let XdpSetup { mut xsk, mode, addrs } = setup;
        // Copy mode charges each frame's skb to the socket's send buffer
        // until the driver frees it; the default (~200 KiB) is 25 frames of 8 KiB.
        let _ = xsk.set_sndbuf(16 << 20);
        let filler = template.filler();
        let frames: Vec<FlowFrame> = flows
            .iter()
            .zip(&addrs)
            .map(|(f, a)| FlowFrame::new(a, template.header(Kind::Data, f.id, 0, template.length), &filler))
            .collect();
        let frame_len = L2_L4 + template.length;
        let per = descs_for(frame_len);
        let slot_bytes = per * CHUNK;
        // One whole frame, copied into every slot once: later only the headers change.
        let mut frame = vec![0u8; frame_len];
        frames[0].write(&mut frame, 0, 0);
        frame[L2_L4 + HEADER_LEN..].copy_from_slice(&filler);
        let umem = xsk.umem_mut();
        let slots = umem.len() / slot_bytes;
        for s in 0..slots {
            for (i, part) in frame.chunks(CHUNK).enumerate() {
                let at = s * slot_bytes + i * CHUNK;
                umem[at..at + part.len()].copy_from_slice(part);
            }
        }
        let desc_len = frame.chunks(CHUNK).map(|c| c.len() as u32).collect();
        let budget =
            xsk.raise_tx_budget(XDP_MAX_TX_SKB_BUDGET, (slots * per) as u32).unwrap_or(DEFAULT_BUDGET) as usize;
        XdpEngine {
            flows,
            template,
            xsk,
            mode,
            frames,
            per,
            desc_len,
            slot_bytes,
            free: (0..slots as u32).rev().collect(),
            outstanding: vec![0; slots],
            budget: budget.max(per),
            batch: Vec::new(),
            broken: None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Returns completed frames' slots to the free list.
    fn reap(&mut self) {
        let (outstanding, free, slot_bytes) = (&mut self.outstanding, &mut self.free, self.slot_bytes);
        self.xsk.reap(|addr| {
            let s = addr as usize / slot_bytes;
            if let Some(o) = outstanding.get_mut(s)
                && *o > 0
            {
                *o -= 1;
                if *o == 0 {
                    free.push(s as u32);
                }
            }
        });
    }

    /// Writes packets `seq..seq + m` of flow `slot` into free slots and
    /// publishes their descriptors. Returns the first ring index used.
    fn queue(&mut self, slot: usize, seq: u64, m: usize) -> u32 {
        let start = self.xsk.tx_producer();
        let now = crate::clock::tai_ns();
        self.batch.clear();
        let mut idx = start;
        for j in 0..m {
            let s = self.free.pop().expect("caller checked room");
            let base = s as usize * self.slot_bytes;
            let umem = self.xsk.umem_mut();
            self.frames[slot].write(&mut umem[base..base + L2_L4 + HEADER_LEN], seq + j as u64, now);
            for (i, &len) in self.desc_len.iter().enumerate() {
                let opt = if i + 1 < self.per { PKT_CONTD } else { 0 };
                let ok = self.xsk.set_tx_desc(idx, (base + i * CHUNK) as u64, len, opt);
                debug_assert!(ok, "ring room was checked");
                idx = idx.wrapping_add(1);
            }
            self.outstanding[s as usize] = self.per as u16;
            self.batch.push(s);
        }
        self.xsk.tx_submit((m * self.per) as u32);
        start
    }

    /// Packets that fit now: free slots, ring room, and (copy mode) one kick's budget.
    fn room(&self) -> usize {
        let ring = self.xsk.tx_room() as usize / self.per;
        let kick = if self.mode == Mode::Copy { self.budget / self.per } else { usize::MAX };
        self.free.len().min(ring).min(kick)
    }

    /// Copy mode, after a kick that did not drain the ring (or failed):
    /// finds exactly how many of the batch's packets the kernel took (see
    /// the module docs). Returns that number.
    fn recount(&mut self, start: u32) -> Result<usize, String> {
        let total = self.batch.len() * self.per;
        let invalid_addr = self.xsk.umem_len() as u64; // past the UMEM: the kernel skips it
        for i in 0..total as u32 {
            self.xsk.set_tx_desc(start.wrapping_add(i), invalid_addr, 0, 0);
        }
        let before = self.xsk.tx_stats().map_err(|e| format!("XDP_STATISTICS: {e}"))?.0;
        // The kernel publishes its consumer index only when it next looks
        // for descriptors and finds its cached ones used up, so a kick that
        // ends on skipped descriptors leaves it behind: a second kick
        // publishes it (bounded: a few kicks, each with nothing to send).
        for _ in 0..4 {
            let _ = self.xsk.kick();
            if self.xsk.tx_consumer() == self.xsk.tx_producer() {
                break;
            }
        }
        let after = self.xsk.tx_stats().map_err(|e| format!("XDP_STATISTICS: {e}"))?.0;
        if self.xsk.tx_consumer() != self.xsk.tx_producer() {
            return Err("the AF_XDP TX ring did not drain after a failed send; cannot account for its frames".into());
        }
        let skipped = (after - before) as usize;
        if skipped > total {
            return Err(format!("the kernel skipped {skipped} TX descriptors of {total}"));
        }
        let taken = total - skipped;
        // The skipped ones are the batch's last: the kernel never completes them.
        for d in taken..total {
            let s = self.batch[d / self.per] as usize;
            self.outstanding[s] -= 1;
            if self.outstanding[s] == 0 {
                self.free.push(s as u32);
            }
        }
        Ok(taken / self.per)
    }

    fn send_copy(&mut self, slot: usize, seq: u64, n: usize) -> Sent {
        let mut done = 0;
        while done < n {
            let mut m = self.room().min(n - done);
            if m == 0 {
                // Every slot is still with the kernel: give it a moment, then say the ring is full.
                crate::sys::send::sleep_until_mono(crate::clock::mono_ns() + 20_000);
                self.reap();
                m = self.room().min(n - done);
                if m == 0 {
                    return Sent { n: done, err: Some(io::Error::from_raw_os_error(libc::EAGAIN)) };
                }
            }
            let start = self.queue(slot, seq + done as u64, m);
            let r = self.xsk.kick();
            if r.is_ok() && self.xsk.tx_consumer() == self.xsk.tx_producer() {
                done += m;
                continue;
            }
            let taken = match self.recount(start) {
                Ok(t) => t,
                Err(msg) => {
                    self.broken = Some(msg.clone());
                    return Sent { n: done, err: Some(io::Error::other(msg)) };
                }
            };
            let err = match r {
                // The driver refused the last frame it took (NET_XMIT_DROP):
                // not sent; counted like a full queue, and its number goes out again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && taken > 0 => {
                    return Sent { n: done + taken - 1, err: Some(io::Error::from_raw_os_error(libc::ENOBUFS)) };
                }
                Err(e) => e,
                // Fewer taken and no reason given: the ring was full for the kernel.
                Ok(()) => io::Error::from_raw_os_error(libc::EAGAIN),
            };
            return Sent { n: done + taken, err: Some(err) };
        }
        Sent { n: done, err: None }
    }

    fn send_zerocopy(&mut self, slot: usize, seq: u64, n: usize) -> Sent {
        let m = self.room().min(n);
        if m > 0 {
            self.queue(slot, seq, m);
        }
        // In zero-copy mode sendto only wakes the driver; EBUSY/EAGAIN/ENOBUFS
        // mean it is busy and will get to the ring anyway.
        let woke = match self.xsk.kick() {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN | libc::ENOBUFS)) => Err(e),
            _ => Ok(()),
        };
        match (m, woke) {
            (_, Err(e)) => Sent { n: m, err: Some(e) },
            (0, Ok(())) => Sent { n: 0, err: Some(io::Error::from_raw_os_error(libc::EAGAIN)) },
            (m, Ok(())) => Sent { n: m, err: None },
        }
    }

    /// Zero-copy: waits (at most 200 ms) until the NIC has completed every
    /// queued frame, so the end marker cannot overtake data.
    fn drain(&mut self) {
        if self.mode != Mode::ZeroCopy {
            return; // copy mode: every counted frame left inside its sendto
        }
        let deadline = crate::clock::mono_ns() + 200_000_000;
        while self.outstanding.iter().any(|&o| o > 0) && crate::clock::mono_ns() < deadline {
            let _ = self.xsk.kick();
            self.reap();
            crate::sys::send::sleep_until_mono(crate::clock::mono_ns() + 50_000);
        }
    }
}

impl Transmitter for XdpEngine {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn send_data(&mut self, slot: usize, seq: u64, n: usize) -> Sent {
        if let Some(msg) = &self.broken {
            return Sent { n: 0, err: Some(io::Error::other(msg.clone())) };
        }
        self.reap();
        match self.mode {
            Mode::Copy => self.send_copy(slot, seq, n),
            Mode::ZeroCopy => self.send_zerocopy(slot, seq, n),
        }
    }

    fn flows(&self) -> &[FlowSocket] {
        &self.flows
    }

    fn template(&self) -> &Template {
        &self.template
    }

    fn send_end(&mut self, slot: usize, count: u64) -> io::Result<()> {
        self.drain();
        let f = &self.flows[slot];
        f.socket.send(&self.template.end_marker(f.id, count)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum of `data` as the RFC 1071 reference computes it: word by word, folding as it goes.
    fn reference_csum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = data[i] as u32;
            let lo = if i + 1 < data.len() { data[i + 1] as u32 } else { 0 };
            s += hi << 8 | lo;
            s = (s & 0xffff) + (s >> 16);
            i += 2;
        }
        !(s as u16)
    }

    fn addrs() -> Addrs {
        Addrs {
            src_mac: [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
            src: Ipv4Addr::new(10, 77, 0, 1),
            group: Ipv4Addr::new(239, 200, 3, 4),
            src_port: 40123,
            dst_port: 5001,
            ttl: 7,
        }
    }

    #[test]
    fn multicast_mac_keeps_the_low_23_bits() {
        assert_eq!(multicast_mac(Ipv4Addr::new(239, 0, 0, 1)), [1, 0, 0x5e, 0, 0, 1]);
        assert_eq!(multicast_mac(Ipv4Addr::new(239, 200, 3, 4)), [1, 0, 0x5e, 0x48, 3, 4]);
        assert_eq!(multicast_mac(Ipv4Addr::new(224, 255, 255, 255)), [1, 0, 0x5e, 0x7f, 0xff, 0xff]);
    }

    #[test]
    fn frames_have_right_addresses_lengths_and_checksums() {
        // Odd and even lengths, one-buffer and multi-buffer sizes.
        for length in [40usize, 41, 64, 1470, 1471, 8192] {
            let t = Template { run: 9, clock: 3, clock_synced: true, tai_offset: 37, length };
            let filler = t.filler();
            let ff = FlowFrame::new(&addrs(), t.header(Kind::Data, 5, 0, length), &filler);
            let mut frame = vec![0u8; L2_L4 + length];
            frame[L2_L4 + HEADER_LEN..].copy_from_slice(&filler);
            for seq in [0u64, 1, 0xdead_beef_1234] {
                ff.write(&mut frame, seq, 1_700_000_000_123_456_789);
                assert_eq!(&frame[0..6], &[1, 0, 0x5e, 0x48, 3, 4]);
                assert_eq!(&frame[6..12], &addrs().src_mac);
                assert_eq!(&frame[12..14], &[0x08, 0x00]);
                let ip = &frame[14..34];
                assert_eq!(ip[0], 0x45);
                assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, 28 + length);
                assert_eq!((ip[6], ip[8], ip[9]), (0x40, 7, 17));
                assert_eq!(&ip[12..16], &[10, 77, 0, 1]);
                assert_eq!(&ip[16..20], &[239, 200, 3, 4]);
                assert_eq!(reference_csum(ip), 0, "IPv4 header checksum");
                let udp = &frame[34..];
                assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 40123);
                assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 5001);
                assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, 8 + length);
                assert_ne!(u16::from_be_bytes([udp[6], udp[7]]), 0, "checksum computed, not left out");
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&[10, 77, 0, 1, 239, 200, 3, 4, 0, 17]);
                pseudo.extend_from_slice(&((8 + length) as u16).to_be_bytes());
                pseudo.extend_from_slice(udp);
                assert_eq!(reference_csum(&pseudo), 0, "UDP checksum, length {length}, seq {seq}");
                let h = mcblast_common::wire::Header::parse_datagram(&udp[8..]).unwrap();
                assert_eq!((h.kind, h.flow, h.seq, h.len as usize, h.run), (Kind::Data, 5, seq, length, 9));
                assert_eq!(h.tx_ns, 1_700_000_000_123_456_789);
            }
        }
    }

    fn plan(args: &[&str]) -> SendPlan {
        let mut v = vec!["-e", "xdp"];
        v.extend_from_slice(args);
        crate::commands::send::test_plan(&v)
    }

    fn refusal(args: &[&str]) -> String {
        let e = check_plan(&plan(args)).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn plans_it_cannot_send_are_refused_with_the_way_out() {
        let e = refusal(&["-I", "lo", "--loop"]);
        assert!(e.contains("--loop") && e.contains("--engine mmsg"), "{e}");
        // Loopback has one TX queue: one AF_XDP socket, one worker.
        let e = refusal(&["-I", "lo", "--threads", "2", "--flows", "2"]);
        assert!(e.contains("--threads 2 needs 2 queues on lo") && e.contains("use --threads 1"), "{e}");
        let mtu = crate::iface::lookup("lo").unwrap().mtu as usize;
        if mtu <= 65_000 {
            let big = (mtu - 27).to_string();
            let e = refusal(&["-I", "lo", "-l", &big, "--allow-fragments"]);
            assert!(e.contains("does not fragment") && e.contains("--engine mmsg"), "{e}");
        }
        assert!(check_plan(&plan(&["-I", "lo", "-l", "8192"])).is_ok());
    }

    #[test]
    fn descriptors_per_frame() {
        assert_eq!(descs_for(64 + L2_L4), 1);
        assert_eq!(descs_for(CHUNK), 1);
        assert_eq!(descs_for(CHUNK + 1), 2);
        assert_eq!(descs_for(8192 + L2_L4), 3);
    }
}
