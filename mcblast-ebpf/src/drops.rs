//! The drop tracer: on `skb:kfree_skb` (every skb the kernel frees as a
//! drop, with its `enum skb_drop_reason`; normal frees go to
//! `consume_skb` instead), count the datagrams to the receiver's port.
//!
//! The tracepoint fires for every namespace on the machine, so a drop is
//! ours only when it happened in the receiver's network namespace: the
//! namespace of the receiving socket (`rx_sk`, set for socket-level drops,
//! whose `skb->dev` the UDP code may already have overwritten), else that of
//! `skb->dev`, which must also be the receiver's interface; once userspace
//! names its socket (`DropConfig::cookie`), a socket's drop counts only when
//! it is that socket. The IPv4 and
//! UDP headers are read at `skb->head + skb->network_header`, which the
//! stack sets on receive before any of its drop points; the mcblast header
//! when it lies in the skb's linear part. When it does not (a datagram sent
//! with UDP GSO carries its payload in page fragments, and so do the
//! datagrams the stack cuts from it), the flow is the one the counter noted
//! for the datagram's UDP tuple (`TUPLES`: mcblast sends each flow from its
//! own socket), the datagram count that of the skb's `gso_size`, and the
//! class data (end markers are small, sent alone, and linear).
//!
//! Every kernel read goes through `bpf_probe_read_kernel` at offsets
//! userspace resolved from the running kernel's BTF ([`DropConfig`]): a
//! failed read just means "not ours".

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_probe_read_kernel, programs::BtfTracePointContext};
use mcblast_common::{
    iperf2,
    maps::{Config, DropClass, DropConfig, DropKey, FORMAT_IPERF2, FlowKey, GlobalCounter, NO_DROP_REASON, TupleKey},
    wire::{HEADER_LEN, Header, Kind, Packet, datagrams, stride},
};

use super::{CONFIG, DROP_CONFIG, DROPS, IPPROTO_UDP, TUPLES, UDP_HLEN, joined};

/// `tp_btf/kfree_skb` arguments, by position.
const ARG_SKB: usize = 0;
const ARG_LOCATION: usize = 1;
const ARG_REASON: usize = 2;
const ARG_RX_SK: usize = 3;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies size_of::<T>() bytes from a kernel
    // address into a local; a bad address makes it fail (returns an error),
    // never fault. `T` is plain data (integers, byte arrays).
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// The arguments of the running kernel's `kfree_skb` tracepoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// `(skb, location, reason, rx_sk)`: 6.11 and later.
    WithSocket,
    /// `(skb, location, reason)`: 5.17 to 6.10.
    WithReason,
    /// `(skb, location)`: before 5.17; every drop is keyed by its location.
    NoReason,
}

#[inline(always)]
pub fn on_kfree_skb(ctx: &BtfTracePointContext, args: Args) {
    let Some(&dc) = DROP_CONFIG.get(0) else { return };
    if dc.netns == 0 {
        return;
    }
    let Some(&cfg) = CONFIG.get(0) else { return };
    let skb: u64 = ctx.arg(ARG_SKB);
    let reason: u32 = if args == Args::NoReason { NO_DROP_REASON } else { ctx.arg(ARG_REASON) };
    let rx_sk: u64 = if args == Args::WithSocket { ctx.arg(ARG_RX_SK) } else { 0 };
    if let Some((class, flow, n)) = classify(&dc, &cfg, skb, rx_sk) {
        let location: u64 = if reason == dc.locate_reason { ctx.arg(ARG_LOCATION) } else { 0 };
        count(DropKey { reason, class: class as u32, location, flow }, n);
    }
}

/// Whether the drop happened in the receiver's namespace (and, unless a
/// socket of that namespace dropped it, on the receiver's interface).
#[inline(always)]
fn in_our_namespace(dc: &DropConfig, skb: u64, rx_sk: u64) -> bool {
    let net: u64 = if rx_sk != 0 {
        if dc.cookie != 0 && read::<u64>(rx_sk, dc.sk_cookie) != Some(dc.cookie) {
            return false; // another socket's drop
        }
        match read(rx_sk, dc.sk_net) {
            Some(n) => n,
            None => return false,
        }
    } else {
        let Some(dev) = read::<u64>(skb, dc.skb_dev) else { return false };
        if read::<u32>(dev, dc.dev_ifindex) != Some(dc.ifindex) {
            return false;
        }
        match read(dev, dc.dev_net) {
            Some(n) => n,
            None => return false,
        }
    };
    read::<u32>(net, dc.net_inum) == Some(dc.netns)
}

/// The class of a dropped skb when it is a datagram to our port in our
/// namespace, its flow when its mcblast header could be read (else a zero
/// key), and how many datagrams it carried (several in a GSO or GRO skb:
/// see `wire::stride`); None when it is not ours.
#[inline(always)]
fn classify(dc: &DropConfig, cfg: &Config, skb: u64, rx_sk: u64) -> Option<(DropClass, FlowKey, u64)> {
    let none = FlowKey::default();
    if cfg.port == 0 || !in_our_namespace(dc, skb, rx_sk) {
        return None;
    }
    let head: u64 = read(skb, dc.skb_head)?;
    let nh: u16 = read(skb, dc.skb_network_header)?;
    let l3 = head + nh as u64;
    let ip: [u8; 20] = read(l3, 0)?;
    if ip[0] >> 4 != 4 || ip[9] != IPPROTO_UDP {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as u64) * 4;
    if ihl < 20 {
        return None;
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x1fff != 0 {
        return None; // a later fragment: no UDP header
    }
    let l4 = l3 + ihl;
    let udp: [u8; UDP_HLEN] = read(l4, 0)?;
    if u16::from_be_bytes([udp[2], udp[3]]) != cfg.port {
        return None;
    }
    let saddr = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let daddr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    if !joined(daddr, saddr) {
        return Some((DropClass::Other, none, 1));
    }
    // A first fragment (MF set): its datagram never reassembles. Its UDP
    // length is the whole datagram's, as the mcblast header says.
    let first_fragment = frag & 0x2000 != 0;
    let unparsed = if first_fragment { DropClass::Fragment } else { DropClass::Other };
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    let tuple = TupleKey { sender: saddr, group: daddr, sport: ne16(udp[0], udp[1]), dport: ne16(udp[2], udp[3]) };
    let hdr = l4 + UDP_HLEN as u64;
    if cfg.format == FORMAT_IPERF2 {
        return Some(iperf2_class(dc, skb, head, hdr, &tuple, udp_len, first_fragment));
    }
    if udp_len < UDP_HLEN + HEADER_LEN {
        return Some((unparsed, none, 1));
    }
    let payload_len = udp_len - UDP_HLEN;
    // The mcblast header must lie in the linear part.
    let Some(linear_end) = linear_end(dc, skb) else { return Some((unparsed, none, 1)) };
    let bytes = if hdr + HEADER_LEN as u64 > linear_end || hdr < head {
        None
    } else {
        read::<[u8; HEADER_LEN]>(hdr, 0)
    };
    let Some(bytes) = bytes else {
        let n = paged_datagrams(dc, skb, head, payload_len);
        return Some(match noted_flow(&tuple) {
            Some(flow) if first_fragment => (DropClass::Fragment, flow, n),
            Some(flow) => (DropClass::Data, flow, n),
            None => (unparsed, none, n),
        });
    };
    let pkt = Packet::new_unchecked(&bytes[..]);
    // A GSO or GRO skb (an nft rule, say, dropped it before the UDP layer
    // cut it up): as many datagrams as the first one's length goes into the
    // payload, all of the first one's flow (one socket sent them, or GRO
    // merged one flow's).
    let stride = stride(pkt.len_field(), payload_len);
    let n = datagrams(payload_len, stride) as u64;
    let Ok(h) = Header::parse(&pkt, stride) else {
        return Some((unparsed, none, n));
    };
    if cfg.run_filter != 0 && h.run != cfg.run_filter {
        return Some((DropClass::Other, none, n));
    }
    let flow = FlowKey { sender: saddr, group: daddr, run: h.run, flow: h.flow };
    Some(match h.kind {
        Kind::Data if first_fragment => (DropClass::Fragment, flow, n),
        Kind::Data => (DropClass::Data, flow, n),
        Kind::End => (DropClass::End, flow, n),
    })
}

/// Where the skb's linear part ends: data + (len - data_len).
#[inline(always)]
fn linear_end(dc: &DropConfig, skb: u64) -> Option<u64> {
    let data = read::<u64>(skb, dc.skb_data)?;
    let len = read::<u32>(skb, dc.skb_len)?;
    let data_len = read::<u32>(skb, dc.skb_data_len)?;
    Some(data + len.saturating_sub(data_len) as u64)
}

/// The class and flow of a dropped iperf2 datagram (`recv --format
/// iperf2`): its header read from the linear part when it is there, else
/// the flow the counter noted for its tuple, as data. iperf2 sends one
/// datagram a packet.
#[inline(always)]
fn iperf2_class(
    dc: &DropConfig,
    skb: u64,
    head: u64,
    hdr: u64,
    tuple: &TupleKey,
    udp_len: usize,
    first_fragment: bool,
) -> (DropClass, FlowKey, u64) {
    let data = if first_fragment { DropClass::Fragment } else { DropClass::Data };
    let unparsed = if first_fragment { DropClass::Fragment } else { DropClass::Other };
    let in_linear = linear_end(dc, skb).is_some_and(|end| hdr >= head && hdr + iperf2::PEEK_LEN as u64 <= end);
    let bytes = if in_linear { read::<[u8; iperf2::PEEK_LEN]>(hdr, 0) } else { None };
    let Some(bytes) = bytes else {
        return match noted_flow(tuple) {
            Some(flow) => (data, flow, 1),
            None => (unparsed, FlowKey::default(), 1),
        };
    };
    let payload_len = udp_len.saturating_sub(UDP_HLEN);
    let r = iperf2::Reading::default(); // the kind and the flow only
    match iperf2::parse(&bytes, payload_len, u16::from_be(tuple.sport), u16::from_be(tuple.dport), &r) {
        Ok(h) => {
            let flow = FlowKey { sender: tuple.sender, group: tuple.group, run: h.run, flow: h.flow };
            (if h.kind == Kind::End { DropClass::End } else { data }, flow, 1)
        }
        Err(_) => (unparsed, FlowKey::default(), 1),
    }
}

#[inline(always)]
fn ne16(a: u8, b: u8) -> u16 {
    u16::from_ne_bytes([a, b])
}

/// The flow the counter noted for this tuple, if exactly one.
#[inline(always)]
fn noted_flow(tuple: &TupleKey) -> Option<FlowKey> {
    // SAFETY: `p` points to a live FlowKey value of TUPLES (valid for the
    // program's run, RCU); a plain 16-byte read.
    let flow = unsafe { *TUPLES.get_ptr(tuple)? };
    (flow != FlowKey::default()).then_some(flow)
}

/// Datagrams in a dropped skb whose payload is in page fragments: as many
/// as its `gso_size` goes into the payload for a GSO or GRO skb, else one.
#[inline(always)]
fn paged_datagrams(dc: &DropConfig, skb: u64, head: u64, payload_len: usize) -> u64 {
    let Some(end) = read::<u32>(skb, dc.skb_end) else { return 1 };
    match read::<u16>(head + end as u64, dc.shinfo_gso_size) {
        Some(gso) if gso != 0 => datagrams(payload_len, gso as usize) as u64,
        _ => 1,
    }
}

#[inline(always)]
fn count(key: DropKey, n: u64) {
    if DROPS.get_ptr_mut(key).is_none() {
        // NOEXIST: an entry another CPU made meanwhile stays; per-CPU values
        // start at zero on every CPU. A full map is counted, never silent.
        if DROPS.insert(key, 0u64, BPF_NOEXIST as u64).is_err() && DROPS.get_ptr_mut(key).is_none() {
            super::count(GlobalCounter::DropKeysFull);
            return;
        }
    }
    if let Some(p) = DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU hash value, live during the
        // program's run (RCU). The tracer is not re-entered on one CPU (the
        // kernel skips a nested run of the same program), so nothing else
        // writes this slot concurrently.
        unsafe { *p += n };
    }
}
