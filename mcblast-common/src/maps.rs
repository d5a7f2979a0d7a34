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
}

/// Number of entries in the `GLOBAL` array.
pub const GLOBAL_COUNTERS: u32 = 5;

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
        // The last counter's index is the array's last slot.
        assert_eq!(GlobalCounter::OtherGroup as u32 + 1, GLOBAL_COUNTERS);
        assert_eq!(
            core::mem::size_of::<FlowEntry<u32>>(),
            8 + core::mem::size_of::<FlowState>()
        );
    }
}
