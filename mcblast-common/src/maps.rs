//! Keys and values of the kernel counter's maps. `#[repr(C)]`, no implicit
//! padding, so the kernel and userspace agree byte for byte.

use crate::tracker::FlowState;

/// Identifies one flow: who sent it, to which group, in which run.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowKey {
    /// Sender IPv4 address, network byte order as it sits in the IP header.
    pub sender: u32,
    /// Destination (group) IPv4 address, network byte order.
    pub group: u32,
    /// The sender's run id.
    pub run: u32,
    /// The flow id within the run.
    pub flow: u32,
}

/// A flow's entry in the kernel map: the tracker state behind a lock.
/// `L` is `bpf_spin_lock` in the eBPF program and `u32` in userspace; both
/// are 4 bytes, so the layouts are identical.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowEntry<L: Copy> {
    pub lock: L,
    pub _pad: u32,
    pub state: FlowState,
}

/// Receiver configuration, element 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// UDP destination port to count, host byte order.
    pub port: u16,
    pub _pad: u16,
    /// Non-zero: only this run id is counted; others are foreign.
    pub run_filter: u32,
    /// Non-zero: drop counted mcblast datagrams (XDP_DROP) instead of passing them.
    pub sink: u32,
    /// Clock identity of this receiver (same hash as the header's `clock`).
    pub clock: u32,
}

/// Indices into the per-CPU `GLOBAL` counter array.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalCounter {
    /// UDP datagrams to the port that are not valid mcblast datagrams
    /// (short, bad magic, bad version, wrong length) or of a filtered run.
    Foreign = 0,
    /// Valid datagrams that found no room in the flow map.
    MapFull = 1,
    /// First IPv4 fragments to the port (and a joined group) seen; later
    /// fragments carry no UDP header and cannot be matched.
    Fragments = 2,
    /// All packets the program saw on the interface.
    Packets = 3,
    /// UDP datagrams to the port whose destination group the receiver did
    /// not join, or whose source a source-specific join excludes (only
    /// counted once the joined groups are listed); left untouched.
    OtherGroup = 4,
    /// Loss events ([`LossRecord`]) that found the `LOSS_EVENTS` ring
    /// buffer full: the exact lost ranges are incomplete when non-zero
    /// (the flows' `lost` counts stay exact).
    LossEventsLost = 5,
}

/// Number of entries in the `GLOBAL` array.
pub const GLOBAL_COUNTERS: u32 = 6;

/// Most flows one receiver tracks in the kernel.
pub const MAX_FLOWS: u32 = 4096;

/// Most joined groups the kernel counter's `GROUPS` map holds.
pub const MAX_GROUPS: u32 = 256;

/// Configuration of the drop tracer (the `skb:kfree_skb` tp_btf program),
/// element 0 of the `DROP_CONFIG` array map. The field offsets are resolved
/// by userspace from the running kernel's BTF (`/sys/kernel/btf/vmlinux`),
/// so the program reads `struct sk_buff` and friends without CO-RE.
/// `netns == 0` disables the tracer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropConfig {
    /// Inode number of the receiver's network namespace (`/proc/self/ns/net`).
    pub netns: u32,
    /// Index of the receiving interface (in that namespace).
    pub ifindex: u32,
    /// Byte offsets in `struct sk_buff`: `dev`, `head`, `data`, `len`,
    /// `data_len`, `network_header`.
    pub skb_dev: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_len: u32,
    pub skb_data_len: u32,
    pub skb_network_header: u32,
    /// Byte offsets in `struct net_device`: `ifindex`, `nd_net.net`.
    pub dev_ifindex: u32,
    pub dev_net: u32,
    /// Byte offset of `__sk_common.skc_net.net` in `struct sock`.
    pub sk_net: u32,
    /// Byte offset of `ns.inum` in `struct net`.
    pub net_inum: u32,
    /// The value of `SKB_DROP_REASON_NOT_SPECIFIED` in this kernel: drops
    /// with this reason are also keyed by where they happened (`location`).
    pub locate_reason: u32,
    /// Byte offset of `__sk_common.skc_cookie` in `struct sock`.
    pub sk_cookie: u32,
    /// Non-zero: a drop by a socket (`rx_sk`) counts only when it is this
    /// socket (its SO_COOKIE), so other sockets on the port are not charged.
    pub cookie: u64,
}

/// What a dropped datagram to the receiver's port was.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropClass {
    /// An mcblast data datagram of a counted flow (joined group, run filter).
    Data = 0,
    /// An mcblast end-of-flow marker of a counted flow.
    End = 1,
    /// Anything else to the port: not mcblast, another run, a group or
    /// source not joined, or a header the tracer could not read (not in the
    /// skb's linear part).
    Other = 2,
    /// A first IPv4 fragment to the port (a joined group).
    Fragment = 3,
}

impl DropClass {
    /// The class for its number in a [`DropKey`].
    pub fn from_u32(v: u32) -> Option<DropClass> {
        match v {
            0 => Some(DropClass::Data),
            1 => Some(DropClass::End),
            2 => Some(DropClass::Other),
            3 => Some(DropClass::Fragment),
            _ => None,
        }
    }
}

/// Key of the per-CPU `DROPS` map: the kernel's drop reason (a value of the
/// running kernel's `enum skb_drop_reason`, subsystem bits included) and the
/// [`DropClass`] of the datagram; for [`DropConfig::locate_reason`] also
/// the kernel address that freed it (the tracepoint's `location`), else 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DropKey {
    pub reason: u32,
    pub class: u32,
    pub location: u64,
}

/// Most (reason, class) pairs the `DROPS` map holds.
pub const MAX_DROP_KEYS: u32 = 1024;

/// One change of a flow's lost set, from the kernel counter's tracker
/// ([`crate::tracker::LossEvent`]) to userspace through the `LOSS_EVENTS`
/// ring buffer. A gap is `from..to` (`to` exclusive); a fill is the late
/// arrival of `from` (`to == from + 1`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LossRecord {
    pub key: FlowKey,
    /// [`LOSS_GAP`] or [`LOSS_FILL`].
    pub kind: u32,
    pub _pad: u32,
    pub from: u64,
    pub to: u64,
    /// Receive time (ns, CLOCK_TAI) of the datagram that caused it.
    pub rx_ns: u64,
}

/// [`LossRecord::kind`] of a gap and of a fill.
pub const LOSS_GAP: u32 = 1;
pub const LOSS_FILL: u32 = 2;

/// Bytes of the `LOSS_EVENTS` ring buffer (a power of two, a multiple of
/// the page size): 4 MiB, some 70 000 records between two reads.
pub const LOSS_RING_BYTES: u32 = 4 << 20;

impl LossRecord {
    /// The record for a tracker event, None for [`crate::tracker::LossEvent::None`].
    #[inline(always)]
    pub fn of(key: FlowKey, ev: crate::tracker::LossEvent, rx_ns: u64) -> Option<LossRecord> {
        let (kind, from, to) = match ev {
            crate::tracker::LossEvent::None => return None,
            crate::tracker::LossEvent::Gap { from, to } => (LOSS_GAP, from, to),
            crate::tracker::LossEvent::Fill { seq } => (LOSS_FILL, seq, seq.wrapping_add(1)),
        };
        Some(LossRecord { key, kind, _pad: 0, from, to, rx_ns })
    }

    /// The tracker event it carries (None for an unknown kind).
    pub fn event(&self) -> Option<crate::tracker::LossEvent> {
        match self.kind {
            LOSS_GAP => Some(crate::tracker::LossEvent::Gap { from: self.from, to: self.to }),
            LOSS_FILL => Some(crate::tracker::LossEvent::Fill { seq: self.from }),
            _ => None,
        }
    }

    /// Decodes a record from the ring buffer's bytes (native byte order).
    pub fn from_bytes(b: &[u8]) -> Option<LossRecord> {
        if b.len() < core::mem::size_of::<LossRecord>() {
            return None;
        }
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_ne_bytes(a)
        };
        Some(LossRecord {
            key: FlowKey { sender: u32_at(0), group: u32_at(4), run: u32_at(8), flow: u32_at(12) },
            kind: u32_at(16),
            _pad: u32_at(20),
            from: u64_at(24),
            to: u64_at(32),
            rx_ns: u64_at(40),
        })
    }
}

#[cfg(feature = "user")]
mod user {
    #![allow(unsafe_code)]
    use super::*;
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding, every bit pattern valid.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above; `FlowState` is `#[repr(C)]` of u64/i64/u32 fields.
    unsafe impl aya::Pod for FlowEntry<u32> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above; u32 fields only.
    unsafe impl aya::Pod for DropConfig {}
    // SAFETY: as above; two u32 fields and a u64, no padding.
    unsafe impl aya::Pod for DropKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes_have_no_padding() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 16);
        assert_eq!(core::mem::size_of::<Config>(), 16);
        assert_eq!(core::mem::size_of::<DropConfig>(), 64);
        assert_eq!(core::mem::size_of::<DropKey>(), 16);
        for c in [DropClass::Data, DropClass::End, DropClass::Other, DropClass::Fragment] {
            assert_eq!(DropClass::from_u32(c as u32), Some(c));
        }
        assert_eq!(DropClass::from_u32(4), None);
        // A record survives the trip through the ring buffer's bytes.
        let key = FlowKey { sender: 1, group: 2, run: 3, flow: 4 };
        let r = LossRecord::of(key, crate::tracker::LossEvent::Gap { from: 10, to: 13 }, 99).unwrap();
        let mut bytes = [0u8; 48];
        let fields: [&[u8]; 9] = [
            &1u32.to_ne_bytes(), &2u32.to_ne_bytes(), &3u32.to_ne_bytes(), &4u32.to_ne_bytes(),
            &LOSS_GAP.to_ne_bytes(), &0u32.to_ne_bytes(), &10u64.to_ne_bytes(), &13u64.to_ne_bytes(), &99u64.to_ne_bytes(),
        ];
        let mut o = 0;
        for f in fields {
            bytes[o..o + f.len()].copy_from_slice(f);
            o += f.len();
        }
        assert_eq!(LossRecord::from_bytes(&bytes), Some(r));
        assert_eq!(r.event(), Some(crate::tracker::LossEvent::Gap { from: 10, to: 13 }));
        let f = LossRecord::of(key, crate::tracker::LossEvent::Fill { seq: 11 }, 5).unwrap();
        assert_eq!((f.kind, f.from, f.to, f.event()), (LOSS_FILL, 11, 12, Some(crate::tracker::LossEvent::Fill { seq: 11 })));
        assert_eq!(LossRecord::of(key, crate::tracker::LossEvent::None, 5), None);
        assert_eq!(LossRecord::from_bytes(&bytes[..47]), None);
        // The last counter's index is the array's last slot.
        assert_eq!(GlobalCounter::LossEventsLost as u32 + 1, GLOBAL_COUNTERS);
        assert_eq!(core::mem::size_of::<LossRecord>(), 48);
        assert_eq!(
            core::mem::size_of::<FlowEntry<u32>>(),
            8 + core::mem::size_of::<FlowState>()
        );
    }
}
