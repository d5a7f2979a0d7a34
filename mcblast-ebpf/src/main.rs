//! The in-kernel per-flow counter: an XDP program (`mcblast_counter`), or
//! the same counter at tc ingress (`mcblast_tc`, for frames native XDP
//! cannot take whole, e.g. above the ENA driver's ~3.5 KB XDP MTU), that finds mcblast
//! datagrams (Ethernet, optional 802.1Q tag, IPv4, UDP to the configured
//! port) and runs the shared sequence tracker of `mcblast-common` on the
//! flow's map entry under `bpf_spin_lock`, so the counts stay exact when
//! one flow is processed on several CPUs at once.
//!
//! When userspace lists the joined groups (`GROUPS`, `GROUP_COUNT`), only
//! datagrams to those groups (from the listed source, for a source-specific
//! join) are counted: a bridge that floods unjoined groups to every port
//! delivers others to the interface, but the receiver's socket never sees
//! them, so neither does the counter.
//!
//! Fragmented datagrams (larger than the MTU) are counted in their flows
//! too: the first fragment (offset 0, MF set) carries the UDP and mcblast
//! headers and runs the tracker like a whole datagram (with the UDP
//! payload length of the whole datagram); it records the datagram in the
//! `FRAGS` LRU map, by which its later fragments (no UDP header) are
//! matched and counted. Later fragments that match nothing (they came
//! before their first fragment, or are not of a counted datagram) are
//! counted as unmatched and passed: nothing is guessed.
//!
//! A second program, `mcblast_drops`, runs on the `skb:kfree_skb`
//! tracepoint (tp_btf) and counts, per drop reason, the datagrams to the
//! port that the kernel freed without delivering them, in the receiver's
//! network namespace only (see [`drops`]).
#![no_std]
#![no_main]

mod drops;
mod impair;
mod tgw;

use aya_ebpf::{
    bindings::{BPF_F_RDONLY_PROG, BPF_NOEXIST, TC_ACT_SHOT, TC_ACT_UNSPEC, bpf_spin_lock, xdp_action},
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
    helpers::generated::{
        bpf_ktime_get_ns, bpf_ktime_get_tai_ns, bpf_spin_lock as spin_lock, bpf_spin_unlock as spin_unlock,
        bpf_xdp_load_bytes,
    },
    macros::{btf_map, btf_tracepoint, classifier, xdp},
    programs::{BtfTracePointContext, TcContext, XdpContext},
};
use mcblast_common::{
    iperf2,
    maps::{
        Config, DropConfig, DropKey, FORMAT_IPERF2, FlowEntry, FlowKey, FragKey, GLOBAL_COUNTERS, GROUP_COUNT_INDEX,
        GROUP_COUNT_LEN, GROUP_GENERATION_INDEX, GlobalCounter, LOSS_RING_BYTES, LossRecord, MAX_DROP_KEYS, MAX_FLOWS,
        MAX_FRAGS, MAX_GROUPS, TupleKey,
    },
    tracker::Change,
    wire::{HEADER_LEN, Header, Kind, Packet, WALK_PER_STEP, WireError, datagrams, stride},
};

/// The map value: tracker state behind the kernel's spin lock. The lock
/// field's BTF type must be the struct named `bpf_spin_lock`.
type Entry = FlowEntry<bpf_spin_lock>;

/// Bytes of one entry; the zero source below must be at least this big,
/// and as big as the TGW member cap's slots (`tgw.rs`), which start from it too.
const ENTRY_LEN: usize = core::mem::size_of::<Entry>();
const SLOTS_LEN: usize = core::mem::size_of::<mcblast_common::maps::TgwSlots>();
const ZERO_WORDS: usize = if ENTRY_LEN > SLOTS_LEN { ENTRY_LEN } else { SLOTS_LEN }.div_ceil(8);

/// Per-flow state, keyed by sender, group, run and flow.
#[btf_map]
static FLOWS: HashMap<FlowKey, Entry, { MAX_FLOWS as usize }> = HashMap::new();

/// Per-CPU counters indexed by [`GlobalCounter`].
#[btf_map]
static GLOBAL: PerCpuArray<u64, { GLOBAL_COUNTERS as usize }> = PerCpuArray::new();

/// Element 0: the receiver's [`Config`], written by userspace before attach.
#[btf_map]
static CONFIG: Array<Config, 1> = Array::new();

/// The joined groups: destination group (network byte order, as in the IP
/// header) to the one source joined for it (network byte order), or 0 for
/// any source. Only consulted when `GROUP_COUNT` is non-zero.
#[btf_map]
static GROUPS: HashMap<u32, u32, { MAX_GROUPS as usize }> = HashMap::new();

/// Element 0: how many entries userspace wrote to `GROUPS`; 0 means no group
/// filter (every group is counted). Written after the entries. Element 1:
/// the list's generation, bumped by userspace after every change (it
/// retires the verdicts of [`JOIN_CACHE`]).
#[btf_map]
static GROUP_COUNT: Array<u32, { GROUP_COUNT_LEN as usize }> = Array::new();

/// The last group verdict of this CPU's counter: a packet to the same group
/// from the same source under the same generation of the list skips the
/// `GROUPS` lookup (a hash of the group and a bucket walk, about a fifth of
/// the counter's run time a packet, by `BPF_PROG_TEST_RUN`). Used only by
/// the XDP and tc programs, which never run nested on one CPU.
#[btf_map]
static JOIN_CACHE: PerCpuArray<JoinVerdict, 1> = PerCpuArray::new();

/// One all-zero value, the source new flow entries (and the TGW member cap's
/// slots) are copied from (both are larger than the 512-byte BPF stack). Read-only for the
/// program; userspace never writes it.
#[btf_map]
static ZERO: Array<[u64; ZERO_WORDS], 1, { BPF_F_RDONLY_PROG as usize }> = Array::new();

/// Every change of a flow's lost set (a gap opened, a late datagram filled
/// one), for userspace to keep the exact lost sequence numbers. Records that
/// find it full are counted in [`GlobalCounter::LossEventsLost`].
#[btf_map]
static LOSS_EVENTS: RingBuf<LossRecord, { LOSS_RING_BYTES as usize }> = RingBuf::new();

/// Fragmented datagrams whose first fragment was counted in a flow, by
/// (source, group, IP id, protocol), to the datagram's IP payload length
/// (UDP header included): a later fragment matches when it starts inside
/// it. The datagram's last fragment (MF clear) removes the entry.
#[btf_map]
static FRAGS: LruHashMap<FragKey, u32, { MAX_FRAGS as usize }> = LruHashMap::new();

/// Each flow's UDP tuple (noted when its entry is made), for the drop
/// tracer: a tuple seen with two flows holds the all-zero key (unknown).
#[btf_map]
static TUPLES: LruHashMap<TupleKey, FlowKey, { MAX_FLOWS as usize }> = LruHashMap::new();

/// Element 0: the drop tracer's [`DropConfig`], written by userspace
/// before the tracer is attached.
#[btf_map]
static DROP_CONFIG: Array<DropConfig, 1> = Array::new();

/// Datagrams to the port freed by the kernel, per (reason, class), per CPU.
#[btf_map]
static DROPS: PerCpuHashMap<DropKey, u64, { MAX_DROP_KEYS as usize }> = PerCpuHashMap::new();

/// The drop tracer: `trace_kfree_skb(skb, location, reason, rx_sk)` (6.11 and later).
#[btf_tracepoint(function = "kfree_skb")]
pub fn mcblast_drops(ctx: BtfTracePointContext) -> i32 {
    drops::on_kfree_skb(&ctx, drops::Args::WithSocket);
    0
}

/// The drop tracer for kernels whose tracepoint has no receiving socket
/// (5.17 to 6.10): `trace_kfree_skb(skb, location, reason)`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn mcblast_drops_nosk(ctx: BtfTracePointContext) -> i32 {
    drops::on_kfree_skb(&ctx, drops::Args::WithReason);
    0
}

/// The drop tracer for kernels whose tracepoint has no drop reason (before
/// 5.17): `trace_kfree_skb(skb, location)`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn mcblast_drops_noreason(ctx: BtfTracePointContext) -> i32 {
    drops::on_kfree_skb(&ctx, drops::Args::NoReason);
    0
}

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const VLAN_HLEN: usize = 4;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;
/// IPv4 flags/fragment offset field: MF bit and offset bits.
const IP_MF_OR_OFFSET: u16 = 0x3fff;
/// The MF (more fragments) bit, and the offset bits (in 8-byte units).
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

#[xdp(frags)]
pub fn mcblast_counter(ctx: XdpContext) -> u32 {
    xdp_count(&XdpFrame(&ctx))
}

/// The counter for kernels without XDP multi-buffer (before 5.18: no
/// `frags` programs, no `bpf_xdp_load_bytes`): the frame is one buffer,
/// read directly. Drivers of those kernels give XDP only frames that fit.
#[xdp]
pub fn mcblast_counter_linear(ctx: XdpContext) -> u32 {
    xdp_count(&XdpLinearFrame(&ctx))
}

#[inline(always)]
fn xdp_count<F: Frame>(f: &F) -> u32 {
    count(GlobalCounter::Packets);
    // The configuration is read once per packet, here.
    let Some(&cfg) = CONFIG.get(0) else { return xdp_action::XDP_PASS };
    if sinks(try_count(f, &cfg), &cfg) { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// Whether the packet is dropped: with the sink on, when it was counted (its data datagrams are then
/// counted as sunk) or is a later fragment of a counted datagram.
#[inline(always)]
fn sinks(v: Verdict, cfg: &Config) -> bool {
    if cfg.sink == 0 {
        return false;
    }
    match v {
        Verdict::Pass => false,
        Verdict::Counted(data) => {
            count_n(GlobalCounter::Sunk, data as u64);
            true
        }
        Verdict::LaterFragment => true,
    }
}

/// The same counter at tc ingress (attached through a tcx link), for when
/// XDP cannot see whole frames. It reads the skb's linear part directly and
/// the rest with `bpf_skb_load_bytes`, which works on non-linear skbs. Passing returns `TCX_NEXT` (the next
/// tcx program, then the stack); with the sink on, a counted datagram is
/// dropped (`TCX_DROP`).
#[classifier]
pub fn mcblast_tc(ctx: TcContext) -> i32 {
    count(GlobalCounter::Packets);
    let Some(&cfg) = CONFIG.get(0) else { return TC_ACT_UNSPEC };
    if sinks(try_count(&TcFrame(&ctx), &cfg), &cfg) { TC_ACT_SHOT as i32 } else { TC_ACT_UNSPEC }
}

/// The walk's next step over a coalesced packet in XDP (see [`walk_step`]).
#[xdp(frags)]
pub fn mcblast_counter_step(ctx: XdpContext) -> u32 {
    xdp_step(&XdpFrame(&ctx))
}

/// The walk's next step of [`mcblast_counter_linear`].
#[xdp]
pub fn mcblast_counter_linear_step(ctx: XdpContext) -> u32 {
    xdp_step(&XdpLinearFrame(&ctx))
}

#[inline(always)]
fn xdp_step<F: Frame>(f: &F) -> u32 {
    let Some(&cfg) = CONFIG.get(0) else { return xdp_action::XDP_PASS };
    if sinks(walk_step(f), &cfg) { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// The walk's next step at tc ingress.
#[classifier]
pub fn mcblast_tc_step(ctx: TcContext) -> i32 {
    let Some(&cfg) = CONFIG.get(0) else { return TC_ACT_UNSPEC };
    if sinks(walk_step(&TcFrame(&ctx)), &cfg) { TC_ACT_SHOT as i32 } else { TC_ACT_UNSPEC }
}

/// Where the counter reads a frame from, offsets from the Ethernet header.
trait Frame {
    /// Datagrams a walk step counts (at most `WALK_PER_STEP`).
    const STEP: usize = WALK_PER_STEP;
    /// `N` bytes at `offset`, copied out; None past the end of the frame.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
    /// Goes on with the walk in the step program of this program type (a
    /// tail call: returns only when it failed).
    fn walk_on(&self);
    /// The UDP payload bytes of each segment of a GSO (or UDP GRO) skb, 0 for anything else (and in XDP).
    #[inline(always)]
    fn gso_size(&self) -> usize {
        0
    }
}

/// An XDP frame: the linear part directly, the rest (multi-buffer frames)
/// with `bpf_xdp_load_bytes`.
struct XdpFrame<'a>(&'a XdpContext);

impl Frame for XdpFrame<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if let Some(p) = ptr_at::<[u8; N]>(self.0, offset, MAX_LINEAR_OFFSET) {
            // SAFETY: `ptr_at` checked the N bytes lie inside the linear frame.
            return Some(unsafe { *p });
        }
        let mut buf = [0u8; N];
        // SAFETY: `buf` is a writable stack buffer of N bytes; the helper
        // checks the range against the frame.
        let rc = unsafe { bpf_xdp_load_bytes(self.0.ctx, offset as u32, buf.as_mut_ptr().cast(), N as u32) };
        (rc == 0).then_some(buf)
    }

    #[inline(always)]
    fn walk_on(&self) {
        // SAFETY: a tail call into an XDP program of the same kind (frags).
        unsafe { XDP_STEPS.tail_call(self.0, 0) };
    }
}

/// An XDP frame of one buffer, read directly (no helper).
struct XdpLinearFrame<'a>(&'a XdpContext);

impl Frame for XdpLinearFrame<'_> {
    /// Two: the verifiers of the kernels this program is for (before 5.18)
    /// run out of budget on a step of four.
    const STEP: usize = 2;

    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // SAFETY: `ptr_at` checked the N bytes lie inside the frame.
        ptr_at::<[u8; N]>(self.0, offset, MAX_ONE_BUFFER_OFFSET).map(|p| unsafe { *p })
    }

    #[inline(always)]
    fn walk_on(&self) {
        // SAFETY: a tail call into an XDP program of the same kind (one buffer).
        unsafe { XDP_LINEAR_STEPS.tail_call(self.0, 0) };
    }
}

/// An skb at tc ingress (data starts at the Ethernet header there): its
/// linear part read directly, the rest (the pages of a non-linear skb, e.g.
/// every datagram but the first of a GSO packet) with `bpf_skb_load_bytes`.
/// Reading the headers directly costs about 30 % less a packet than the
/// helper calls did (`BPF_PROG_TEST_RUN`, see docs/performance.md).
struct TcFrame<'a>(&'a TcContext);

impl Frame for TcFrame<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if let Some(p) = ptr_in::<[u8; N]>(self.0.data(), self.0.data_end(), offset, MAX_LINEAR_OFFSET) {
            // SAFETY: `ptr_in` checked the N bytes lie inside the skb's linear data.
            return Some(unsafe { *p });
        }
        self.0.load::<[u8; N]>(offset).ok()
    }

    #[inline(always)]
    fn walk_on(&self) {
        // SAFETY: a tail call into a tc program.
        unsafe { TC_STEPS.tail_call(self.0, 0) };
    }

    #[inline(always)]
    fn gso_size(&self) -> usize {
        // SAFETY: the program's context, a valid `__sk_buff` for its run; `gso_size` is a readable field.
        unsafe { (*self.0.skb.skb).gso_size as usize }
    }
}

enum Verdict {
    /// Not ours, or not counted in a flow: let it through.
    Pass,
    /// Accounted in a flow, with this many data datagrams (not end markers).
    Counted(u32),
    /// A later fragment of a datagram counted in a flow: passed, or
    /// dropped with the sink (so the sink drops the whole datagram).
    LaterFragment,
}

#[inline(always)]
pub(crate) fn count(c: GlobalCounter) {
    count_n(c, 1);
}

#[inline(always)]
pub(crate) fn count_n(c: GlobalCounter, n: u64) {
    if let Some(p) = GLOBAL.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU array slot of this CPU; XDP runs with preemption
        // disabled, so nothing else writes it concurrently.
        unsafe { *p += n };
    }
}

/// Offsets past these are never read directly (see [`ptr_at`]): in a
/// multi-buffer frame the linear part is at most a page; a one-buffer frame
/// (generic XDP linearises a GSO batch) may hold up to 64 KiB.
const MAX_LINEAR_OFFSET: usize = 0x3fff;
const MAX_ONE_BUFFER_OFFSET: usize = 0xff00;

/// A pointer to `T` at `offset` in the linear part of the frame, if it fits.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize, max: usize) -> Option<*const T> {
    ptr_in(ctx.data(), ctx.data_end(), offset, max)
}

/// A pointer to `T` at `offset` from packet pointer `start`, if it ends by `end`.
#[inline(always)]
fn ptr_in<T>(start: usize, end: usize, offset: usize, max: usize) -> Option<*const T> {
    // The verifier takes a variable packet offset only when offset and
    // size stay below 64 KiB. (Through `black_box`, so LLVM checks the
    // offset itself, not a sum it was computed from, whose bound the
    // verifier cannot carry back to it.)
    let offset = core::hint::black_box(offset);
    if offset > max {
        return None;
    }
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn be16_at<F: Frame>(f: &F, offset: usize) -> Option<u16> {
    f.bytes::<2>(offset).map(u16::from_be_bytes)
}

/// Whether a datagram from `source` to `group` (both network byte order)
/// belongs to a group the receiver joined. True for every group when
/// userspace listed none.
#[inline(always)]
fn joined(group: u32, source: u32) -> bool {
    if GROUP_COUNT.get(GROUP_COUNT_INDEX).is_none_or(|&n| n == 0) {
        return true;
    }
    in_groups(group, source)
}

/// [`joined`] for the counter: the verdict of the last packet of this CPU
/// when it was for the same group, source and list (see [`JOIN_CACHE`]).
#[inline(always)]
fn joined_cached(group: u32, source: u32) -> bool {
    if GROUP_COUNT.get(GROUP_COUNT_INDEX).is_none_or(|&n| n == 0) {
        return true;
    }
    let generation = GROUP_COUNT.get(GROUP_GENERATION_INDEX).copied().unwrap_or(0);
    let Some(cache) = JOIN_CACHE.get_ptr_mut(0) else { return in_groups(group, source) };
    // SAFETY: this CPU's slot of a per-CPU array; the XDP and tc programs
    // never run nested on one CPU, and nothing else uses the map.
    let cache = unsafe { &mut *cache };
    if cache.verdict != 0 && cache.group == group && cache.source == source && cache.generation == generation {
        return cache.verdict == JoinVerdict::JOINED;
    }
    let yes = in_groups(group, source);
    let verdict = if yes { JoinVerdict::JOINED } else { JoinVerdict::NOT_JOINED };
    *cache = JoinVerdict { group, source, generation, verdict };
    yes
}

/// A verdict of [`joined_cached`], kept per CPU.
#[repr(C)]
#[derive(Clone, Copy)]
struct JoinVerdict {
    group: u32,
    source: u32,
    generation: u32,
    /// 0: none yet; else [`Self::JOINED`] or [`Self::NOT_JOINED`].
    verdict: u32,
}

impl JoinVerdict {
    const JOINED: u32 = 1;
    const NOT_JOINED: u32 = 2;
}

/// Whether `GROUPS` lists `group` for any source or for `source`.
#[inline(always)]
fn in_groups(group: u32, source: u32) -> bool {
    let Some(p) = GROUPS.get_ptr(group) else { return false };
    // SAFETY: `p` points to a live u32 value of GROUPS (hash map values stay
    // valid for the program's run, RCU); an aligned 4-byte read.
    let want = unsafe { *p };
    want == 0 || want == source
}

/// An Ethernet frame (at most one 802.1Q tag) carrying IPv4 with protocol
/// UDP: the offset of its IPv4 header, the header's length and its first
/// 20 bytes. None for anything else (or a frame too short to tell).
#[inline(always)]
fn ipv4_udp<F: Frame>(f: &F) -> Option<(usize, usize, [u8; 20])> {
    let mut proto = be16_at(f, 12)?;
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q {
        proto = be16_at(f, ETH_HLEN + 2)?;
        l3 += VLAN_HLEN;
    }
    if proto != ETH_P_IP {
        return None;
    }
    let ip = f.bytes::<20>(l3)?;
    if ip[0] >> 4 != 4 || ip[9] != IPPROTO_UDP {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    Some((l3, ihl, ip))
}

#[inline(always)]
fn try_count<F: Frame>(ctx: &F, cfg: &Config) -> Verdict {
    let port = cfg.port;
    let run_filter = cfg.run_filter;
    if port == 0 {
        return Verdict::Pass;
    }

    let Some((l3, ihl, ip)) = ipv4_udp(ctx) else { return Verdict::Pass };
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let saddr = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let daddr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    if frag & IP_OFFSET != 0 {
        // A later fragment carries no UDP header: it is ours when its
        // datagram's first fragment was counted.
        return later_fragment(saddr, daddr, [ip[4], ip[5]], frag);
    }

    // UDP.
    let l4 = l3 + ihl;
    let Some(udp) = ctx.bytes::<UDP_HLEN>(l4) else { return Verdict::Pass };
    if u16::from_be_bytes([udp[2], udp[3]]) != port {
        return Verdict::Pass;
    }
    if !joined_cached(daddr, saddr) {
        // Flooded to this interface, but not a group (or source) the
        // receiver joined: not ours, whatever it carries.
        count(GlobalCounter::OtherGroup);
        return Verdict::Pass;
    }
    // The first fragment of a fragmented datagram (MF set, offset 0): the
    // UDP header holds the whole datagram's length and the datagram's header
    // follows it (a first fragment too short to hold it, below an MTU of
    // about 100 bytes, fails to read below and is foreign), so it is
    // counted as the datagram.
    let first_fragment = frag & IP_MF_OR_OFFSET != 0;
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    let iperf2 = cfg.format == FORMAT_IPERF2;
    let min_len = if iperf2 { iperf2::MIN_LEN } else { HEADER_LEN };
    if udp_len < UDP_HLEN + min_len {
        count(GlobalCounter::Foreign);
        return Verdict::Pass;
    }
    let payload_len = udp_len - UDP_HLEN;
    let mut pkt = Carrier {
        saddr,
        daddr,
        ip_id: u16::from_ne_bytes([ip[4], ip[5]]),
        first_fragment: first_fragment as u8,
        run_filter,
        l4: l4 as u32,
        payload_len: payload_len as u32,
        stride: payload_len as u32,
        rx_ns: rx_ns(cfg),
        pieces: 1,
        next: 0,
        counted: 0,
        data: 0,
        pending: 0,
        _pad: 0,
        sport: u16::from_ne_bytes([udp[0], udp[1]]),
        dport: u16::from_ne_bytes([udp[2], udp[3]]),
    };
    if iperf2 {
        // One datagram a packet: iperf2 sends no GSO batches.
        return iperf2_datagram(ctx, &pkt, &cfg.iperf2);
    }

    // The first mcblast header, copied out (from a later buffer of a
    // multi-buffer frame or a non-linear skb too).
    let Some(first) = ctx.bytes::<HEADER_LEN>(l4 + UDP_HLEN) else {
        count(GlobalCounter::Foreign);
        return Verdict::Pass;
    };
    // A GSO or GRO packet carries several datagrams back to back behind
    // one UDP header (see `wire::stride`): each is counted on its own.
    let mut stride = stride(Packet::new_unchecked(&first[..]).len_field(), payload_len);
    // (A GSO skb cut at the same stride is datagrams back to back by the kernel's own word.)
    if stride < payload_len && ctx.gso_size() != stride && !last_piece_parses(ctx, l4, payload_len, stride) {
        // Not datagrams back to back: one whose length field is wrong.
        stride = payload_len;
    }
    let pieces = datagrams(payload_len, stride);
    pkt.stride = stride as u32;
    pkt.pieces = pieces as u16;
    if pieces == 1 {
        return datagram(&pkt, &first, stride);
    }
    // Every datagram of a coalesced packet, the first too, is counted by the
    // walk, so the first shares its flow's lookup and lock with the next.
    count(GlobalCounter::Coalesced);
    // The first datagram's header, read above, waits in the batch: the walk does not read it again.
    let Some(batch) = BATCH.get_ptr_mut(0) else { return Verdict::Pass };
    if let Some(h) = valid(&pkt, &first, stride) {
        // SAFETY: this CPU's slot of a per-CPU array, used by one walk at a time (see `WALK`).
        unsafe { (*batch).headers[0] = h };
        pkt.pending = 1;
    }
    pkt.next = 1;
    let Some(walk) = WALK.get_ptr_mut(0) else { return Verdict::Pass };
    // SAFETY: this CPU's slot of a per-CPU array; the counter does not run
    // nested on one CPU, so nothing else uses it until the walk is done.
    unsafe { *walk = pkt };
    ctx.walk_on();
    // The tail call failed (no step program loaded): nothing is walked (a foreign first datagram was counted).
    count_n(GlobalCounter::Unwalked, (pieces - 1) as u64 + pkt.pending as u64);
    Verdict::Pass
}

/// The walk of a coalesced packet: datagram `next` on, `F::STEP` at a
/// time, then the next step by a tail call: a program of its own, so the
/// tracker in it is verified once. In a loop (bounded, or `bpf_loop`) the
/// verifier checks the tracker once per pass and runs out of budget. The
/// kernel allows 33 tail calls a packet (`wire::MAX_WALKED` datagrams);
/// the rest are `Unwalked`. The datagrams of a step that belong to one
/// flow are counted together, with one lookup of the flow and one hold of
/// its lock (see [`account_batch`]); one of another flow ends the step and
/// starts the next. Returns the packet's verdict.
#[inline(always)]
fn walk_step<F: Frame>(ctx: &F) -> Verdict {
    let Some(walk) = WALK.get_ptr_mut(0) else { return Verdict::Pass };
    // SAFETY: this CPU's slot, handed over by the program that tail-called
    // this one (see `try_count`).
    let mut pkt = unsafe { *walk };
    let Some(batch) = BATCH.get_ptr_mut(0) else { return Verdict::Pass };
    // SAFETY: this CPU's slot of a per-CPU array, used by one step at a time.
    let batch = unsafe { &mut *batch };
    let (payload_len, stride) = (pkt.payload_len as usize, pkt.stride as usize);
    // The packet's first datagram, when valid, is in the batch already (see `try_count`).
    let mut n = if pkt.pending != 0 { 1 } else { 0 };
    pkt.pending = 0;
    let mut k = n;
    while k < F::STEP && pkt.next < pkt.pieces {
        let off = pkt.next as usize * stride;
        if off >= payload_len {
            break;
        }
        let rest = payload_len - off;
        let len = if rest < stride { rest } else { stride };
        match ctx.bytes::<HEADER_LEN>(pkt.l4 as usize + UDP_HLEN + off) {
            Some(raw) => match valid(&pkt, &raw, len) {
                // Another flow: the next step starts with it.
                Some(h) if n > 0 && (h.run, h.flow) != (batch.headers[0].run, batch.headers[0].flow) => break,
                // (Always below: the verifier wants the index bounded.)
                Some(h) if n < WALK_PER_STEP => {
                    batch.headers[n] = h;
                    n += 1;
                }
                // Foreign (counted by `valid`).
                _ => {}
            },
            None => count(GlobalCounter::Foreign),
        }
        pkt.next += 1;
        k += 1;
    }
    if n > 0
        && let Verdict::Counted(data) = account_batch::<F>(&pkt, batch, n)
    {
        pkt.counted = 1;
        pkt.data += data as u16;
    }
    if pkt.next < pkt.pieces {
        // SAFETY: as above.
        unsafe { *walk = pkt };
        ctx.walk_on();
        // Past the kernel's tail-call limit.
        count_n(GlobalCounter::Unwalked, (pkt.pieces - pkt.next) as u64);
    }
    if pkt.counted != 0 { Verdict::Counted(pkt.data as u32) } else { Verdict::Pass }
}

/// The datagrams of one flow counted together, and what each did to the
/// flow's lost set: kept in a per-CPU map, as the BPF stack has no room.
#[repr(C)]
#[derive(Clone, Copy)]
struct Batch {
    headers: [Header; WALK_PER_STEP],
    changes: [Change; WALK_PER_STEP],
}

/// This CPU's [`Batch`] (the counter does not run nested on one CPU).
#[btf_map]
static BATCH: PerCpuArray<Batch, 1> = PerCpuArray::new();

/// Whether the last piece of a payload cut at `stride` holds a valid
/// mcblast header of its own length: checked before any piece is counted,
/// so a single datagram with a wrong length field is never taken apart.
#[inline(always)]
fn last_piece_parses<F: Frame>(ctx: &F, l4: usize, payload_len: usize, stride: usize) -> bool {
    if stride == 0 || payload_len == 0 {
        return false; // (and no division by zero, whose panic path the verifier refuses)
    }
    let off = (payload_len - 1) / stride * stride;
    match ctx.bytes::<HEADER_LEN>(l4 + UDP_HLEN + off) {
        Some(h) => Header::parse(&Packet::new_unchecked(&h[..]), payload_len - off).is_ok(),
        None => false,
    }
}

/// What the counter knows of the packet around its datagrams; handed from
/// one walk step to the next in the per-CPU `WALK` map.
#[repr(C)]
#[derive(Clone, Copy)]
struct Carrier {
    /// Source and destination (group) address, network byte order.
    saddr: u32,
    daddr: u32,
    /// Only datagrams of this run count (0: any run).
    run_filter: u32,
    /// Offset of the UDP header in the frame.
    l4: u32,
    payload_len: u32,
    /// Bytes from one datagram to the next.
    stride: u32,
    /// The receive time, read once for the packet, before any flow lock
    /// is taken (no helper calls while it is held).
    rx_ns: u64,
    /// The IP id, as in the header.
    ip_id: u16,
    /// Datagrams in the packet (at most 64 KiB / `HEADER_LEN`), and the next one to count.
    pieces: u16,
    next: u16,
    /// How many data datagrams of the packet were counted in their flows.
    data: u16,
    /// The UDP ports, as in the header.
    sport: u16,
    dport: u16,
    /// 1: the datagram is the first fragment of a fragmented one.
    first_fragment: u8,
    /// 1 once a datagram of the packet was counted in its flow.
    counted: u8,
    /// 1 when the first step starts with the packet's first datagram in the batch already.
    pending: u8,
    /// (Explicit, so the stack copy is fully initialised for older verifiers.)
    _pad: u8,
}

/// The coalesced packet being walked on this CPU (the counter does not run
/// nested on one CPU).
#[btf_map]
static WALK: PerCpuArray<Carrier, 1> = PerCpuArray::new();

/// The walk's step programs, slot 0: one map per program kind (a program
/// array holds programs of one type, and XDP ones of one frags-ness).
#[btf_map]
static XDP_STEPS: ProgramArray<1> = ProgramArray::new();
#[btf_map]
static TC_STEPS: ProgramArray<1> = ProgramArray::new();
#[btf_map]
static XDP_LINEAR_STEPS: ProgramArray<1> = ProgramArray::new();

/// 1 where the kernel has `bpf_ktime_get_tai_ns` (6.1 and later); userspace
/// writes 0 before loading where it is missing. A read-only global: the
/// verifier knows its value and drops the branch not taken, so the helper
/// call is never checked on a kernel without it.
#[unsafe(no_mangle)]
static TAI_HELPER: u8 = 1;

/// The receive time in CLOCK_TAI ns: read before any flow lock is taken (no
/// helper calls while it is held), once per packet. Without the TAI helper,
/// the monotonic clock plus the offset userspace measured at attach.
#[inline(always)]
fn rx_ns(cfg: &Config) -> u64 {
    // SAFETY: a read of a global the loader set; volatile so the compiler
    // keeps the read (its value is known only at load time).
    if unsafe { core::ptr::read_volatile(&raw const TAI_HELPER) } != 0 {
        // SAFETY: a helper without arguments.
        unsafe { bpf_ktime_get_tai_ns() }
    } else {
        // SAFETY: as above.
        unsafe { bpf_ktime_get_ns() }.wrapping_add(cfg.mono_to_tai_ns)
    }
}

/// Counts one datagram of `len` bytes whose mcblast header is `hdr` in its
/// flow: [`Verdict::Counted`], or `Pass` (and the reason counted) when it is
/// not a valid datagram of a counted run or its flow found no room.
#[inline(always)]
fn datagram(pkt: &Carrier, hdr: &[u8; HEADER_LEN], len: usize) -> Verdict {
    match valid(pkt, hdr, len) {
        Some(h) => account(pkt, &h),
        None => Verdict::Pass,
    }
}

/// The header of a valid datagram of `len` bytes of a counted run; None
/// (and the datagram counted as foreign) for anything else.
#[inline(always)]
fn valid(pkt: &Carrier, hdr: &[u8; HEADER_LEN], len: usize) -> Option<Header> {
    match Header::parse(&Packet::new_unchecked(&hdr[..]), len) {
        Ok(h) if pkt.run_filter == 0 || h.run == pkt.run_filter => Some(h),
        _ => {
            count(GlobalCounter::Foreign);
            None
        }
    }
}

/// Counts the packet's iperf2 datagram in its flow (see
/// `mcblast_common::iperf2`): the flow is the sender's UDP port pair.
#[inline(always)]
fn iperf2_datagram<F: Frame>(ctx: &F, pkt: &Carrier, r: &iperf2::Reading) -> Verdict {
    let parsed = match ctx.bytes::<{ iperf2::PEEK_LEN }>(pkt.l4 as usize + UDP_HLEN) {
        Some(b) => iperf2::parse(&b, pkt.payload_len as usize, u16::from_be(pkt.sport), u16::from_be(pkt.dport), r),
        None => Err(WireError::Truncated),
    };
    match parsed {
        Ok(h) => account(pkt, &h),
        Err(_) => {
            count(GlobalCounter::Foreign);
            Verdict::Pass
        }
    }
}

/// Runs the tracker of `h`'s flow on it: [`Verdict::Counted`], or `Pass`
/// when the flow found no room.
#[inline(always)]
fn account(pkt: &Carrier, h: &Header) -> Verdict {
    let Some((key, entry)) = flow_of(pkt, h, 1) else { return Verdict::Pass };
    if pkt.first_fragment != 0 {
        count(GlobalCounter::Fragments);
        // Its later fragments are matched by this entry, noted before the
        // tracker runs so a later fragment on another CPU rarely comes
        // first. A full LRU map evicts the oldest datagram; the insert
        // cannot fail otherwise.
        let fk = FragKey { sender: pkt.saddr, group: pkt.daddr, id: pkt.ip_id, proto: IPPROTO_UDP, _pad: 0 };
        let _ = FRAGS.insert(&fk, &((h.len as usize + UDP_HLEN) as u32), 0);
    }
    // SAFETY: `entry` points to a live value of FLOWS (hash map values stay
    // valid for the program's run, RCU); the lock field is the value's
    // bpf_spin_lock, and every path below unlocks it before returning.
    let ev = unsafe {
        spin_lock(&raw mut (*entry).lock);
        let ev = (*entry).state.on_header(h, pkt.rx_ns);
        if pkt.first_fragment != 0 && matches!(h.kind, Kind::Data) {
            (*entry).fragmented += 1;
        }
        spin_unlock(&raw mut (*entry).lock);
        ev
    };
    report(key, ev, pkt.rx_ns);
    Verdict::Counted(matches!(h.kind, Kind::Data) as u32)
}

/// Runs the tracker of one flow on the first `n` of the batch's datagrams
/// (of one run and flow id, in their order in a coalesced packet, which
/// holds no fragment), with one lookup of the flow and one hold of its
/// lock: [`Verdict::Counted`], or `Pass` when the flow found no room.
#[inline(always)]
fn account_batch<F: Frame>(pkt: &Carrier, batch: &mut Batch, n: usize) -> Verdict {
    let Some((key, entry)) = flow_of(pkt, &batch.headers[0], n) else { return Verdict::Pass };
    // SAFETY: as in `account`.
    unsafe {
        spin_lock(&raw mut (*entry).lock);
        let st = &mut (*entry).state;
        let mut i = 0;
        while i < F::STEP {
            batch.changes[i] = if i < n { st.on_header(&batch.headers[i], pkt.rx_ns) } else { Change::NONE };
            i += 1;
        }
        spin_unlock(&raw mut (*entry).lock);
    }
    let mut data = 0;
    for (i, ev) in batch.changes.iter().take(F::STEP).enumerate() {
        report(key, *ev, pkt.rx_ns);
        data += (i < n && matches!(batch.headers[i].kind, Kind::Data)) as u32;
    }
    Verdict::Counted(data)
}

/// The key and entry of `h`'s flow; None (and `n` datagrams counted as
/// finding no room) when the flow map is full.
#[inline(always)]
fn flow_of(pkt: &Carrier, h: &Header, n: usize) -> Option<(FlowKey, *mut Entry)> {
    let key = FlowKey { sender: pkt.saddr, group: pkt.daddr, run: h.run, flow: h.flow };
    let tuple = TupleKey { sender: pkt.saddr, group: pkt.daddr, sport: pkt.sport, dport: pkt.dport };
    match flow_entry(&key, &tuple) {
        Some(entry) => Some((key, entry)),
        None => {
            count_n(GlobalCounter::MapFull, n as u64);
            None
        }
    }
}

/// Tells userspace that the lost set changed (called with no lock held).
#[inline(always)]
fn report(key: FlowKey, ev: Change, rx_ns: u64) {
    if let Some(rec) = LossRecord::of(key, ev, rx_ns)
        && LOSS_EVENTS.output(&rec, 0).is_err()
    {
        count(GlobalCounter::LossEventsLost);
    }
}

/// A later fragment (offset not 0) of a UDP datagram from `saddr` to
/// `daddr` with IP id `id` (as in the header) and flags/offset `frag`:
/// counted when its datagram's first fragment was counted in a flow (and
/// it starts inside that datagram), else counted as unmatched when the
/// group is one the receiver joined (or no group filter is set).
#[inline(always)]
fn later_fragment(saddr: u32, daddr: u32, id: [u8; 2], frag: u16) -> Verdict {
    let fk = FragKey { sender: saddr, group: daddr, id: u16::from_ne_bytes(id), proto: IPPROTO_UDP, _pad: 0 };
    let start = ((frag & IP_OFFSET) as u32) * 8;
    let matched = match FRAGS.get_ptr(&fk) {
        // SAFETY: `p` points to a live u32 value of FRAGS (valid for the
        // program's run, RCU); an aligned 4-byte read.
        Some(p) => start < unsafe { *p },
        None => false,
    };
    if !matched {
        if joined(daddr, saddr) {
            count(GlobalCounter::UnmatchedFragments);
        }
        return Verdict::Pass;
    }
    count(GlobalCounter::LaterFragments);
    if frag & IP_MF == 0 {
        // The datagram's last fragment: the entry is done (a later fragment
        // still to come, reordered after it, is counted as unmatched).
        let _ = FRAGS.remove(&fk);
    }
    Verdict::LaterFragment
}

/// The flow's entry, created from the all-zero (fresh) state if missing
/// (and its tuple noted). None when the map is full.
#[inline(always)]
fn flow_entry(key: &FlowKey, tuple: &TupleKey) -> Option<*mut Entry> {
    if let Some(p) = FLOWS.get_ptr_mut(key) {
        return Some(p);
    }
    let zero = ZERO.get_ptr(0)?;
    // SAFETY: ZERO's value is ZERO_WORDS*8 >= size_of::<Entry>() bytes,
    // 8-aligned, all zero; all-zero is a valid Entry (unlocked lock, fresh
    // tracker state).
    let zero: &Entry = unsafe { &*zero.cast::<Entry>() };
    // NOEXIST: another CPU may have created it meanwhile; then this fails
    // harmlessly and the lookup below finds that entry.
    if FLOWS.insert(key, zero, BPF_NOEXIST as u64).is_ok() {
        note_tuple(tuple, key);
    }
    FLOWS.get_ptr_mut(key)
}

/// Notes a new flow under its tuple; a tuple already noted with another
/// flow becomes unknown (the all-zero key) for good.
#[inline(always)]
fn note_tuple(tuple: &TupleKey, key: &FlowKey) {
    // SAFETY: `p` points to a live FlowKey value of TUPLES (valid for the
    // program's run, RCU); a plain 16-byte read.
    let value = match TUPLES.get_ptr(tuple).map(|p| unsafe { *p }) {
        None => key,
        Some(seen) if seen == *key => return,
        // The all-zero key from ZERO: a `FlowKey::default()` here is a call to a memset subprogram, whose
        // frame takes the step program past 5.10's combined stack limit (512 bytes).
        Some(_) => match ZERO.get_ptr(0) {
            // SAFETY: ZERO's value is at least 16 bytes, 8-aligned, all zero: a valid FlowKey.
            Some(z) => unsafe { &*z.cast::<FlowKey>() },
            None => return,
        },
    };
    let _ = TUPLES.insert(tuple, value, 0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
