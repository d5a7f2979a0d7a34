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

/// A flow's UDP 4-tuple, as it sits in the headers (network byte order):
/// mcblast sends each flow from its own socket, so one tuple carries one
/// flow. The counter notes each new flow under its tuple
/// (`TUPLES`), so the drop tracer can name the flow of a dropped datagram
/// whose mcblast header it cannot read (outside the skb's linear part).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TupleKey {
    pub sender: u32,
    pub group: u32,
    pub sport: u16,
    pub dport: u16,
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
    /// Data datagrams of the flow that arrived fragmented: counted in
    /// `state` by their first fragment (offset 0, MF set), which carries
    /// the UDP and mcblast headers. Changed under the lock with `state`.
    pub fragmented: u64,
}

/// Receiver configuration, element 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// UDP destination port to count, host byte order.
    pub port: u16,
    /// What the datagrams on the port are: [`FORMAT_MCBLAST`] or [`FORMAT_IPERF2`].
    pub format: u16,
    /// Non-zero: only this run id is counted; others are foreign (mcblast format).
    pub run_filter: u32,
    /// Non-zero: drop counted mcblast datagrams (XDP_DROP) instead of passing them.
    pub sink: u32,
    /// Clock identity of this receiver (same hash as the header's `clock`).
    pub clock: u32,
    /// CLOCK_TAI − CLOCK_MONOTONIC in ns (two's complement), measured by
    /// userspace at attach: on kernels without `bpf_ktime_get_tai_ns`
    /// (before 6.1) the counter adds it to `bpf_ktime_get_ns`. The two
    /// clocks run at one rate; only a step of the system clock moves it.
    pub mono_to_tai_ns: u64,
    /// How iperf2 datagrams are read ([`FORMAT_IPERF2`]).
    pub iperf2: crate::iperf2::Reading,
}

/// [`Config::format`]: mcblast's own datagrams ([`crate::wire`]).
pub const FORMAT_MCBLAST: u16 = 0;
/// [`Config::format`]: iperf2's UDP datagrams ([`crate::iperf2`]), one flow
/// per (sender, source port, group, port).
pub const FORMAT_IPERF2: u16 = 1;

/// Indices into the per-CPU `GLOBAL` counter array.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalCounter {
    /// UDP datagrams to the port that are not valid mcblast datagrams
    /// (short, bad magic, bad version, wrong length) or of a filtered run.
    Foreign = 0,
    /// Valid datagrams that found no room in the flow map.
    MapFull = 1,
    /// First IPv4 fragments (offset 0, MF set) of mcblast datagrams counted
    /// in their flows (each flow's entry has its own `fragmented` count).
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
    /// Later IPv4 fragments (offset not 0) of datagrams whose first
    /// fragment was counted in a flow, matched through the `FRAGS` map by
    /// (source, group, IP id, protocol). With the sink on they are dropped
    /// too, so a sink drops whole datagrams.
    LaterFragments = 6,
    /// Later UDP fragments (to a joined group, or any group without a
    /// group filter) that match no counted first fragment: they arrived
    /// before their first fragment, after their datagram's last fragment,
    /// or belong to a datagram that is not mcblast's. Passed untouched.
    UnmatchedFragments = 7,
    /// Drops of datagrams to the port the drop tracer could not count: its
    /// `DROPS` map had no room for another (reason, class, location, flow).
    DropKeysFull = 8,
    /// Packets that carried several datagrams behind one UDP header (a
    /// GSO batch that crossed veth and a bridge whole, or datagrams merged
    /// by UDP GRO): each datagram in them was counted on its own.
    Coalesced = 9,
    /// Datagrams in coalesced packets past the most the counter walks
    /// ([`crate::wire::MAX_WALKED`]): in no flow, so their flow shows
    /// them as lost. Non-zero means the counts are not exact.
    Unwalked = 10,
    /// Data datagrams counted in their flows that the sink then dropped
    /// (with their packet): the layers' `sunk`. Counted by the kernel, as
    /// `--sink auto` can turn the sink off in the middle of a run.
    Sunk = 11,
}

/// Number of entries in the `GLOBAL` array.
pub const GLOBAL_COUNTERS: u32 = 12;

/// Most flows one receiver tracks in the kernel.
pub const MAX_FLOWS: u32 = 4096;

/// Identifies one fragmented IPv4 datagram (the fields IP reassembly keys
/// it by): key of the kernel counter's `FRAGS` LRU map, which first
/// fragments of counted datagrams fill so their later fragments can be
/// matched.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    /// Source IPv4 address, network byte order.
    pub sender: u32,
    /// Destination (group) IPv4 address, network byte order.
    pub group: u32,
    /// The IP identification field, as in the header (network byte order).
    pub id: u16,
    /// IP protocol (17, UDP).
    pub proto: u8,
    pub _pad: u8,
}

/// Most fragmented datagrams the `FRAGS` map follows at once (the least
/// recently used entry makes room for a new one).
pub const MAX_FRAGS: u32 = 8192;

/// Most joined groups the kernel counter's `GROUPS` map holds.
pub const MAX_GROUPS: u32 = 256;

/// Elements of the kernel counter's `GROUP_COUNT` array: the number of
/// groups in `GROUPS` ([`GROUP_COUNT_INDEX`]) and the list's generation
/// ([`GROUP_GENERATION_INDEX`]), which userspace bumps after every change.
pub const GROUP_COUNT_LEN: u32 = 2;
pub const GROUP_COUNT_INDEX: u32 = 0;
pub const GROUP_GENERATION_INDEX: u32 = 1;

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
    /// The value of `SKB_DROP_REASON_NOT_SPECIFIED` in this kernel
    /// ([`NO_DROP_REASON`] in one without reasons): drops with this reason
    /// are also keyed by where they happened (`location`).
    pub locate_reason: u32,
    /// Byte offset of `__sk_common.skc_cookie` in `struct sock`.
    pub sk_cookie: u32,
    /// Non-zero: a drop by a socket (`rx_sk`) counts only when it is this
    /// socket (its SO_COOKIE), so other sockets on the port are not charged.
    pub cookie: u64,
    /// Byte offset of `end` in `struct sk_buff` (an offset from `head` on
    /// 64-bit kernels: where `struct skb_shared_info` starts).
    pub skb_end: u32,
    /// Byte offset of `gso_size` in `struct skb_shared_info`: a GSO or GRO
    /// skb's datagram length, when its mcblast header is not linear.
    pub shinfo_gso_size: u32,
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
    /// source not joined, or a datagram the tracer could not name (its
    /// header outside the skb's linear part, and its tuple not noted by the
    /// counter or carrying two flows).
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
/// The reason the drop tracer records in a kernel whose `kfree_skb`
/// tracepoint has none (before 5.17): such drops are told apart by where
/// they happened (`location`).
pub const NO_DROP_REASON: u32 = u32::MAX;

/// [`DropClass`] of the datagram; for [`DropConfig::locate_reason`] also
/// the kernel address that freed it (the tracepoint's `location`), else 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DropKey {
    pub reason: u32,
    pub class: u32,
    pub location: u64,
    /// The datagram's flow, when the tracer read its mcblast header (a
    /// data datagram, an end marker, or a first fragment whose header lies
    /// in the linear part); all zero otherwise.
    pub flow: FlowKey,
}

/// Most (reason, class, location, flow) keys the `DROPS` map holds: a few
/// reasons for each of [`MAX_FLOWS`] flows.
pub const MAX_DROP_KEYS: u32 = 8192;

/// `mcblast lab impair`: what the impairment program (tc egress of a lab
/// link) does to the mcblast data datagrams it sees. Zero turns a part off.
/// Written by userspace into [`ImpairEntry::cfg`] before the program is
/// attached; never changed afterwards.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairConfig {
    /// Drop every Nth data datagram (the Nth, 2Nth, ...; counted from 1).
    pub every: u32,
    /// Each drop event drops this many consecutive data datagrams (at
    /// least 1; 0 is read as 1).
    pub burst: u32,
    /// Drop event probability per data datagram, parts per million.
    pub loss_ppm: u32,
    /// Duplicate probability per data datagram, parts per million.
    pub duplicate_ppm: u32,
    /// Reorder probability per data datagram, parts per million.
    pub reorder_ppm: u32,
    pub _pad: u32,
    /// Seed of the deterministic PRNG (splitmix64) behind the random parts.
    pub seed: u64,
}

/// The impairment program's counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairStats {
    /// mcblast data datagrams (whole, or first fragments) seen.
    pub seen: u64,
    /// Data datagrams dropped by the loss parts (`every`, `burst`, `loss`).
    pub dropped: u64,
    /// Data datagrams sent twice.
    pub duplicated: u64,
    /// Held data datagrams delivered late: after the next datagram of
    /// their flow (each is exactly one late arrival for the receiver).
    pub reordered: u64,
    /// Held data datagrams that could not be released (their flow ended,
    /// or its next datagram had another length): lost, not reordered.
    pub reorder_lost: u64,
    /// First fragments of fragmented datagrams seen: only the loss parts
    /// act on them (a duplicated or rewritten first fragment does not
    /// reassemble into a second datagram).
    pub fragments: u64,
    /// Datagrams that passed untouched inside GSO packets (a UDP GSO sender's
    /// batch crosses the bridge as one packet; only its first header is
    /// visible here, so none of its datagrams is impaired).
    pub gso_passed: u64,
}

/// The impairment program's working state.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpairState {
    /// Data datagrams seen so far (the index of the last one, from 1).
    pub n: u64,
    /// PRNG state (splitmix64), starts at the seed.
    pub rng: u64,
    /// Datagrams still to drop in the current burst.
    pub burst_left: u32,
    /// 1 while a datagram is held for reordering.
    pub held: u32,
    /// Flow of the held datagram.
    pub held_key: FlowKey,
    /// UDP payload length of the held datagram.
    pub held_len: u32,
    pub _pad: u32,
    /// The held datagram's mcblast header, as on the wire.
    pub held_hdr: [u8; crate::wire::HEADER_LEN],
}

/// Element 0 of the `IMPAIR` array map: configuration, state and counters
/// behind one lock (`L` as in [`FlowEntry`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ImpairEntry<L: Copy> {
    pub lock: L,
    pub _pad: u32,
    pub cfg: ImpairConfig,
    pub state: ImpairState,
    pub stats: ImpairStats,
}

/// What the impairment program does with one data datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImpairAction {
    /// Let it through unchanged.
    Pass,
    /// Drop it (a loss).
    Drop,
    /// Send an exact copy first, then the datagram.
    Duplicate,
    /// Keep its header in the state and drop it; the next datagram of the
    /// flow releases it.
    Hold,
    /// Send this datagram as it is first, then again carrying the held
    /// datagram's header: the held datagram arrives one place late.
    Release,
}

/// One million: the denominator of the `*_ppm` fields.
pub const PPM: u32 = 1_000_000;

impl Default for ImpairState {
    fn default() -> Self {
        ImpairState {
            n: 0,
            rng: 0,
            burst_left: 0,
            held: 0,
            held_key: FlowKey::default(),
            held_len: 0,
            _pad: 0,
            held_hdr: [0; crate::wire::HEADER_LEN],
        }
    }
}

impl ImpairState {
    /// The state a run with this configuration starts from.
    pub fn new(cfg: &ImpairConfig) -> ImpairState {
        ImpairState { rng: cfg.seed, ..ImpairState::default() }
    }

    /// The next PRNG output (splitmix64).
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `ppm` / 1e6; draws from the PRNG only when
    /// `ppm` is not zero.
    #[inline(always)]
    fn chance(&mut self, ppm: u32) -> bool {
        ppm != 0 && (self.next() % PPM as u64) < ppm as u64
    }

    /// Decides about one mcblast data datagram of flow `key` with UDP
    /// payload length `len`; `fragment`: it is the first fragment of a
    /// fragmented datagram. Updates the counters. The same configuration
    /// and the same sequence of calls give the same decisions.
    ///
    /// Order: a held datagram of the same flow is released first (the
    /// releasing datagram is not impaired otherwise); then loss (a burst in
    /// progress, every Nth, random), then duplicate, then reorder (only
    /// while nothing is held).
    #[inline(always)]
    pub fn on_data(&mut self, cfg: &ImpairConfig, st: &mut ImpairStats, key: &FlowKey, len: u32, fragment: bool) -> ImpairAction {
        st.seen += 1;
        self.n += 1;
        if fragment {
            st.fragments += 1;
        }
        if self.held != 0 && self.held_key == *key {
            self.held = 0;
            if len == self.held_len && !fragment {
                st.reordered += 1;
                return ImpairAction::Release;
            }
            st.reorder_lost += 1;
        }
        let burst = if cfg.burst == 0 { 1 } else { cfg.burst };
        let drop = if self.burst_left > 0 {
            self.burst_left -= 1;
            true
        } else if (cfg.every != 0 && self.n.is_multiple_of(cfg.every as u64)) || self.chance(cfg.loss_ppm) {
            self.burst_left = burst - 1;
            true
        } else {
            false
        };
        if drop {
            st.dropped += 1;
            return ImpairAction::Drop;
        }
        if fragment {
            return ImpairAction::Pass;
        }
        if self.chance(cfg.duplicate_ppm) {
            st.duplicated += 1;
            return ImpairAction::Duplicate;
        }
        if self.held == 0 && self.chance(cfg.reorder_ppm) {
            self.held = 1;
            self.held_key = *key;
            self.held_len = len;
            return ImpairAction::Hold;
        }
        ImpairAction::Pass
    }

    /// An end-of-flow marker of flow `key` passes: a datagram of that flow
    /// still held can no longer be released, and counts as lost.
    #[inline(always)]
    pub fn on_end(&mut self, st: &mut ImpairStats, key: &FlowKey) {
        if self.held != 0 && self.held_key == *key {
            self.held = 0;
            st.reorder_lost += 1;
        }
    }
}

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
pub use crate::tracker::{LOSS_FILL, LOSS_GAP};

/// Bytes of the `LOSS_EVENTS` ring buffer (a power of two, a multiple of
/// the page size): 4 MiB, some 70 000 records between two reads.
pub const LOSS_RING_BYTES: u32 = 4 << 20;

impl LossRecord {
    /// The record for a tracker change, None for no change.
    #[inline(always)]
    pub fn of(key: FlowKey, c: impl Into<crate::tracker::Change>, rx_ns: u64) -> Option<LossRecord> {
        let c = c.into();
        if c.kind == crate::tracker::LOSS_NONE {
            return None;
        }
        Some(LossRecord { key, kind: c.kind, _pad: 0, from: c.from, to: c.to, rx_ns })
    }

    /// The tracker event it carries (None for an unknown kind or no change).
    pub fn event(&self) -> Option<crate::tracker::LossEvent> {
        match self.kind {
            LOSS_GAP | LOSS_FILL => crate::tracker::Change { kind: self.kind, from: self.from, to: self.to }.event(),
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

/// The lab's TGW member cap (`lab up --tgw-max-members`): groups it tracks
/// (allocated as reports for them arrive), and member slots per group: every
/// lab receiver fits (`MAX_RECEIVERS` is 243), so a cap above it caps nothing.
pub const MAX_TGW_GROUPS: u32 = 1024;
pub const TGW_SLOTS: usize = 256;

/// One group of the TGW member cap (`L` as in [`FlowEntry`]); its lock also
/// guards the group's [`TgwSlots`] (a map of their own: a value holding a
/// spin lock cannot be copied in from a template, and the slots are too large
/// for the program's stack).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TgwGroup<L: Copy> {
    pub lock: L,
    pub _pad: u32,
    /// Reports refused because every slot within the cap held a live member.
    pub refused: u64,
    /// Slots taken over from members that had aged out.
    pub aged_out: u64,
}

/// The member slots of one group. Slot `i` holds a member (its address in
/// network byte order, 0: free) and when its last IGMPv1/v2 report passed
/// (`bpf_ktime_get_ns`, CLOCK_MONOTONIC). A member silent for longer than the
/// config's `age_ns` has aged out: its slot goes to the next new member, as
/// TGW drops a member after 3 missed queries.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TgwSlots {
    pub member: [u32; TGW_SLOTS],
    pub seen_ns: [u64; TGW_SLOTS],
}

/// Element 0 of the member cap's config array: the most members a group may
/// have, and how long a member stays without reporting (the lab's IGMP
/// membership interval).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TgwMemberConfig {
    pub cap: u32,
    pub _pad: u32,
    pub age_ns: u64,
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
    // SAFETY: as above; two u32, a u16 and two u8 fields, no padding.
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: as above; u32 fields only.
    unsafe impl aya::Pod for DropConfig {}
    // SAFETY: as above; two u32 fields and a u64, no padding.
    unsafe impl aya::Pod for DropKey {}
    // SAFETY: as above; u32/u64 fields, FlowKey and a byte array, laid out
    // without padding (checked in the tests below).
    unsafe impl aya::Pod for ImpairEntry<u32> {}
    // SAFETY: as above; two u32 fields and two u64s, no padding.
    unsafe impl aya::Pod for TgwGroup<u32> {}
    // SAFETY: as above; a u32 array of even length and a u64 array, no padding.
    unsafe impl aya::Pod for TgwSlots {}
    // SAFETY: as above; two u32 fields and a u64.
    unsafe impl aya::Pod for TgwMemberConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes_have_no_padding() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 16);
        assert_eq!(core::mem::size_of::<Config>(), 40);
        assert_eq!(core::mem::size_of::<DropConfig>(), 72);
        assert_eq!(core::mem::size_of::<TupleKey>(), 12);
        assert_eq!(core::mem::size_of::<DropKey>(), 32);
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
        assert_eq!(GlobalCounter::Sunk as u32 + 1, GLOBAL_COUNTERS);
        assert_eq!(core::mem::size_of::<LossRecord>(), 48);
        assert_eq!(
            core::mem::size_of::<FlowEntry<u32>>(),
            8 + core::mem::size_of::<FlowState>() + 8
        );
        assert_eq!(core::mem::size_of::<FragKey>(), 12);
        assert_eq!(core::mem::size_of::<ImpairConfig>(), 32);
        assert_eq!(core::mem::size_of::<ImpairStats>(), 56);
        assert_eq!(core::mem::size_of::<ImpairState>(), 8 + 8 + 4 + 4 + 16 + 4 + 4 + 40);
        assert_eq!(core::mem::size_of::<ImpairEntry<u32>>(), 8 + 32 + 88 + 56);
    }

    fn key(flow: u32) -> FlowKey {
        FlowKey { sender: 1, group: 2, run: 3, flow }
    }

    /// Runs `count` data datagrams of one flow, then its end marker.
    fn run(cfg: ImpairConfig, count: u64) -> (ImpairStats, [u64; 5]) {
        let mut s = ImpairState::new(&cfg);
        let mut st = ImpairStats::default();
        let mut actions = [0u64; 5];
        for _ in 0..count {
            let a = s.on_data(&cfg, &mut st, &key(0), 1000, false);
            actions[a as usize] += 1;
        }
        s.on_end(&mut st, &key(0));
        (st, actions)
    }

    #[test]
    fn every_nth_and_bursts() {
        let (st, a) = run(ImpairConfig { every: 100, ..Default::default() }, 1000);
        assert_eq!((st.seen, st.dropped, a[ImpairAction::Drop as usize]), (1000, 10, 10));
        // every 10, bursts of 3: 10,11,12, 20,21,22, ... 990,991,992, and
        // 1000 is the last datagram: 99 * 3 + 1
        let (st, _) = run(ImpairConfig { every: 10, burst: 3, ..Default::default() }, 1000);
        assert_eq!(st.dropped, 298);
        // a burst cut short by the end of the flow: 10,11 of 11 datagrams
        let (st, _) = run(ImpairConfig { every: 10, burst: 3, ..Default::default() }, 11);
        assert_eq!(st.dropped, 2);
    }

    #[test]
    fn random_parts_are_seeded_and_near_their_rate() {
        let cfg = ImpairConfig { loss_ppm: 20_000, seed: 7, ..Default::default() };
        let (a, _) = run(cfg, 100_000);
        assert_eq!(run(cfg, 100_000).0, a, "same seed, same decisions");
        assert!((1_700..2_300).contains(&a.dropped), "2% of 100000: {}", a.dropped);
        let (b, _) = run(ImpairConfig { seed: 8, ..cfg }, 100_000);
        assert_ne!(a.dropped, b.dropped, "another seed, other decisions");
        let (d, _) = run(ImpairConfig { duplicate_ppm: PPM, ..Default::default() }, 50);
        assert_eq!((d.duplicated, d.dropped), (50, 0));
    }

    #[test]
    fn reorder_holds_then_releases_and_counts_a_stranded_hold() {
        // 100%: hold 1, release with 2, hold 3, release with 4, ...
        let cfg = ImpairConfig { reorder_ppm: PPM, ..Default::default() };
        let (st, a) = run(cfg, 10);
        assert_eq!((st.reordered, st.reorder_lost), (5, 0));
        assert_eq!((a[ImpairAction::Hold as usize], a[ImpairAction::Release as usize]), (5, 5));
        // odd count: the last one is held when the flow ends
        let (st, _) = run(cfg, 11);
        assert_eq!((st.reordered, st.reorder_lost), (5, 1));
        // another flow does not release it; another length cannot
        let mut s = ImpairState::new(&cfg);
        let mut st = ImpairStats::default();
        assert_eq!(s.on_data(&cfg, &mut st, &key(0), 1000, false), ImpairAction::Hold);
        assert_eq!(s.on_data(&cfg, &mut st, &key(1), 1000, false), ImpairAction::Pass);
        assert_eq!(s.on_data(&cfg, &mut st, &key(0), 999, false), ImpairAction::Hold);
        assert_eq!((st.reordered, st.reorder_lost), (0, 1));
        // fragments are only ever dropped
        assert_eq!(s.on_data(&cfg, &mut st, &key(2), 9000, true), ImpairAction::Pass);
        assert_eq!(st.fragments, 1);
    }
}
