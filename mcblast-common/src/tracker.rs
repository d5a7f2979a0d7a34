//! The per-flow sequence tracker: loss, reordering, duplicates, RFC 3550
//! jitter and one-way delay. One algorithm, used by the eBPF counter (on a
//! map value, under `bpf_spin_lock`) and by every userspace sink.
//!
//! # How sequence numbers are classified
//! `next_seq` is one past the highest sequence number seen. A ring bitmap
//! remembers which of the last [`WINDOW`] sequence numbers below `next_seq`
//! have arrived. For a data datagram with sequence `s`:
//! * `s >= next_seq`: the `s - next_seq` numbers skipped are counted lost
//!   (for now), `next_seq` becomes `s + 1`;
//! * `s` inside the window and not yet seen: it arrived late; `lost` goes
//!   down by one and `reordered` up by one;
//! * `s` inside the window and already seen: a duplicate;
//! * `s` older than the window: `stale`; it cannot be told from a duplicate,
//!   so it leaves `lost` as it was.
//!
//! An end-of-flow marker carrying the flow's datagram count `c` counts the
//! tail `next_seq..c` as lost. Counts are exact as long as no datagram
//! arrives more than [`WINDOW`] sequence numbers behind the highest one
//! (otherwise it shows up in `stale`).
//!
//! The all-zero state is the fresh state, so the kernel can create entries
//! from zeroed memory.

/// Words in the reorder window bitmap.
pub const WINDOW_WORDS: usize = 16;
/// Sequence numbers the reorder window covers.
pub const WINDOW: u64 = (WINDOW_WORDS * 64) as u64;
/// Buckets of the one-way delay and IPDV histograms ([`crate::hist`]).
pub const DELAY_BUCKETS: usize = crate::hist::BUCKETS;

/// Flag in [`FlowState::flags`]: the sender reported a synchronised clock.
pub const STATE_SENDER_SYNCED: u32 = 1;
/// Bits 8..15 of [`FlowState::flags`]: the sender's TAI−UTC offset in
/// seconds, from the last datagram's header (see
/// [`crate::wire::FLAG_TAI_SHIFT`]); read it with [`FlowState::sender_tai_offset`].
pub const STATE_SENDER_TAI_MASK: u32 = 0xff << 8;

/// What one datagram did to the set of lost sequence numbers, so a
/// consumer can keep that set exactly: the union of every [`Gap`](LossEvent::Gap)
/// minus every [`Fill`](LossEvent::Fill) is the set of sequence numbers
/// below `next_seq` that have not arrived (those `lost` counts). Gaps never
/// overlap, and a fill always lies in an earlier gap, so the order in which
/// a consumer applies them does not matter. A stale datagram (more than
/// [`WINDOW`] behind) is no fill: it stays lost, as in `lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossEvent {
    /// Nothing changed in the lost set.
    None,
    /// Sequence numbers `from..to` (`to` exclusive, `from < to`) were
    /// skipped: a gap opened, or the end marker counted the tail lost.
    Gap { from: u64, to: u64 },
    /// Sequence number `seq`, counted lost before, arrived late.
    Fill { seq: u64 },
}

/// [`Change::kind`] of no change, of a gap and of a fill.
pub const LOSS_NONE: u32 = 0;
pub const LOSS_GAP: u32 = 1;
pub const LOSS_FILL: u32 = 2;

/// A [`LossEvent`] as plain numbers, every field written on every path:
/// what the kernel counter keeps. (An enum's unused payload is undefined;
/// LLVM may spill it to the stack on one path and reload it on another,
/// and verifiers before Linux 6.3 reject that read of an unwritten stack
/// slot.) A gap is `from..to`, a fill `from` with `to == from + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// [`LOSS_NONE`], [`LOSS_GAP`] or [`LOSS_FILL`].
    pub kind: u32,
    pub from: u64,
    pub to: u64,
}

impl Change {
    pub const NONE: Change = Change { kind: LOSS_NONE, from: 0, to: 0 };

    /// The gap `from..to`, if it is not empty.
    #[inline(always)]
    fn gap(from: u64, to: u64) -> Change {
        if to > from { Change { kind: LOSS_GAP, from, to } } else { Change::NONE }
    }

    #[inline(always)]
    fn fill(seq: u64) -> Change {
        Change { kind: LOSS_FILL, from: seq, to: seq.wrapping_add(1) }
    }

    /// The event it stands for (None for an unknown kind).
    pub fn event(self) -> Option<LossEvent> {
        match self.kind {
            LOSS_NONE => Some(LossEvent::None),
            LOSS_GAP => Some(LossEvent::Gap { from: self.from, to: self.to }),
            LOSS_FILL => Some(LossEvent::Fill { seq: self.from }),
            _ => None,
        }
    }
}

impl From<LossEvent> for Change {
    #[inline(always)]
    fn from(e: LossEvent) -> Change {
        match e {
            LossEvent::None => Change::NONE,
            LossEvent::Gap { from, to } => Change { kind: LOSS_GAP, from, to },
            LossEvent::Fill { seq } => Change::fill(seq),
        }
    }
}

impl From<Change> for LossEvent {
    fn from(c: Change) -> LossEvent {
        c.event().unwrap_or(LossEvent::None)
    }
}

/// Everything a receiver knows about one flow.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowState {
    /// Data datagrams received, duplicates and stale ones included.
    pub received: u64,
    /// Bytes of those datagrams (UDP payload).
    pub bytes: u64,
    /// Sequence numbers below `next_seq` that have not arrived.
    pub lost: u64,
    /// Datagrams that arrived after a higher sequence number (filled a gap).
    pub reordered: u64,
    /// Datagrams whose sequence number had already arrived.
    pub duplicates: u64,
    /// Datagrams more than [`WINDOW`] behind the highest: unclassifiable.
    pub stale: u64,
    /// One past the highest sequence number seen (or the end marker's count).
    pub next_seq: u64,
    /// The datagram count the end-of-flow marker announced.
    pub end_count: u64,
    /// Non-zero once an end-of-flow marker arrived.
    pub ended: u32,
    /// `STATE_*` flags; bits 8..15 hold the sender's TAI−UTC offset.
    pub flags: u32,
    /// The sender's clock identity from the header.
    pub sender_clock: u32,
    /// Length of the last data datagram.
    pub last_len: u32,
    /// Receive time (ns, CLOCK_TAI) of the first and the last datagram.
    pub first_rx_ns: u64,
    pub last_rx_ns: u64,
    /// RFC 3550 inter-arrival jitter in ns, times 16.
    pub jitter_q4_ns: u64,
    /// Transit time (rx - tx) of the previous datagram, ns.
    pub last_transit_ns: i64,
    /// One-way delay samples (rx - tx): count, sum, min, max (ns).
    pub delay_count: u64,
    pub delay_sum_ns: i64,
    pub delay_min_ns: i64,
    pub delay_max_ns: i64,
    /// Histogram of one-way delay ([`crate::hist`]).
    pub delay_hist: [u64; DELAY_BUCKETS],
    /// Delay samples below zero (clocks not synchronised), also in bucket 0.
    pub delay_negative: u64,
    /// Inter-packet delay variation (RFC 3393 IPDV): |transit(i) −
    /// transit(i−1)| of consecutive arrivals, in ns: count, max, histogram.
    /// Needs no clock synchronisation.
    pub ipdv_count: u64,
    pub ipdv_sum_ns: u64,
    pub ipdv_max_ns: u64,
    pub ipdv_hist: [u64; DELAY_BUCKETS],
    /// Which of the last [`WINDOW`] sequence numbers arrived.
    pub window: [u64; WINDOW_WORDS],
}

impl Default for FlowState {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowState {
    /// The fresh state (all zero).
    pub const fn new() -> Self {
        FlowState {
            received: 0,
            bytes: 0,
            lost: 0,
            reordered: 0,
            duplicates: 0,
            stale: 0,
            next_seq: 0,
            end_count: 0,
            ended: 0,
            flags: 0,
            sender_clock: 0,
            last_len: 0,
            first_rx_ns: 0,
            last_rx_ns: 0,
            jitter_q4_ns: 0,
            last_transit_ns: 0,
            delay_count: 0,
            delay_sum_ns: 0,
            delay_min_ns: 0,
            delay_max_ns: 0,
            delay_hist: [0; DELAY_BUCKETS],
            delay_negative: 0,
            ipdv_count: 0,
            ipdv_sum_ns: 0,
            ipdv_max_ns: 0,
            ipdv_hist: [0; DELAY_BUCKETS],
            window: [0; WINDOW_WORDS],
        }
    }

    /// RFC 3550 jitter estimate in ns.
    pub fn jitter_ns(&self) -> u64 {
        self.jitter_q4_ns >> 4
    }

    /// Datagrams the flow is known to have sent (the highest sequence seen
    /// plus one, or the end marker's count).
    pub fn expected(&self) -> u64 {
        self.next_seq
    }

    /// Mean one-way delay in ns, if any sample exists.
    pub fn delay_mean_ns(&self) -> Option<i64> {
        if self.delay_count == 0 { None } else { Some(self.delay_sum_ns / self.delay_count as i64) }
    }

    #[inline(always)]
    fn bit(&self, s: u64) -> bool {
        let w = ((s >> 6) as usize) & (WINDOW_WORDS - 1);
        self.window[w] & (1u64 << (s & 63)) != 0
    }

    #[inline(always)]
    fn set_bit(&mut self, s: u64) {
        let w = ((s >> 6) as usize) & (WINDOW_WORDS - 1);
        self.window[w] |= 1u64 << (s & 63);
    }

    /// Marks sequence numbers `from..=to` (`from <= to`) as not arrived
    /// (bounded loop).
    #[inline(always)]
    fn clear_range(&mut self, from: u64, to: u64) {
        // The last WINDOW numbers of a longer range cover every bit of the
        // ring once, so clearing them clears the whole window. (Done with
        // the masked loop rather than a loop of zero stores: LLVM turns that
        // into a `memset` call, and the kernel counter runs this while
        // holding a bpf_spin_lock, where older verifiers allow no calls.)
        let from = if to.wrapping_sub(from) >= WINDOW - 1 { to - (WINDOW - 1) } else { from };
        let mut cur = from;
        let mut i = 0;
        while i < WINDOW_WORDS + 1 {
            if cur > to {
                break;
            }
            let word_end = cur | 63;
            let end = if word_end < to { word_end } else { to };
            let n = end - cur + 1;
            let mask = if n >= 64 { u64::MAX } else { ((1u64 << n) - 1) << (cur & 63) };
            let w = ((cur >> 6) as usize) & (WINDOW_WORDS - 1);
            self.window[w] &= !mask;
            if end == u64::MAX {
                break;
            }
            cur = end + 1;
            i += 1;
        }
    }

    /// Moves `next_seq` up to `new_next`, counting the skipped numbers lost.
    #[inline(always)]
    fn advance(&mut self, new_next: u64) {
        if new_next > self.next_seq {
            self.lost = self.lost.wrapping_add(new_next - self.next_seq);
            self.clear_range(self.next_seq, new_next - 1);
            self.next_seq = new_next;
        }
    }

    #[inline(always)]
    fn timing(&mut self, tx_ns: u64, rx_ns: u64) {
        let transit = rx_ns.wrapping_sub(tx_ns) as i64;
        // RFC 3550 6.4.1: J += (|D| - J) / 16, kept in ns * 16.
        if self.delay_count > 0 {
            let d = transit.wrapping_sub(self.last_transit_ns);
            let ad = d.unsigned_abs();
            self.jitter_q4_ns = self
                .jitter_q4_ns
                .wrapping_add(ad)
                .wrapping_sub((self.jitter_q4_ns.wrapping_add(8)) >> 4);
            self.ipdv(ad);
        }
        self.last_transit_ns = transit;
        if self.delay_count == 0 || transit < self.delay_min_ns {
            self.delay_min_ns = transit;
        }
        if self.delay_count == 0 || transit > self.delay_max_ns {
            self.delay_max_ns = transit;
        }
        self.delay_count += 1;
        self.delay_sum_ns = self.delay_sum_ns.wrapping_add(transit);
        if transit < 0 {
            self.delay_negative += 1;
        }
        crate::hist::bump(&mut self.delay_hist, transit);
    }

    /// Counts one inter-packet delay variation of `ad` ns.
    #[inline(always)]
    fn ipdv(&mut self, ad: u64) {
        self.ipdv_count += 1;
        self.ipdv_sum_ns = self.ipdv_sum_ns.wrapping_add(ad);
        if ad > self.ipdv_max_ns {
            self.ipdv_max_ns = ad;
        }
        let v = if ad > i64::MAX as u64 { i64::MAX } else { ad as i64 };
        crate::hist::bump(&mut self.ipdv_hist, v);
    }

    #[inline(always)]
    fn arrival(&mut self, rx_ns: u64, flags: u16, clock: u32) {
        if self.first_rx_ns == 0 {
            self.first_rx_ns = rx_ns;
        }
        self.last_rx_ns = rx_ns;
        self.sender_clock = clock;
        if flags & crate::wire::FLAG_CLOCK_SYNCED != 0 {
            self.flags |= STATE_SENDER_SYNCED;
        } else {
            self.flags &= !STATE_SENDER_SYNCED;
        }
        // The header's bits 8..15 (TAI−UTC offset) land in the same bits here.
        let tai = ((flags >> crate::wire::FLAG_TAI_SHIFT) & 0xff) as u32;
        self.flags = (self.flags & !STATE_SENDER_TAI_MASK) | (tai << 8);
    }

    /// The sender's TAI−UTC offset in seconds, as its last datagram carried
    /// it (0: unknown, or nothing arrived).
    pub fn sender_tai_offset(&self) -> u8 {
        ((self.flags & STATE_SENDER_TAI_MASK) >> 8) as u8
    }

    /// Accounts one data datagram; says what it did to the lost set.
    #[inline(always)]
    pub fn on_data(&mut self, seq: u64, len: u32, tx_ns: u64, rx_ns: u64, flags: u16, clock: u32) -> Change {
        self.received += 1;
        self.bytes += len as u64;
        self.last_len = len;
        self.arrival(rx_ns, flags, clock);
        let ev;
        if seq >= self.next_seq {
            ev = Change::gap(self.next_seq, seq);
            self.advance(seq.wrapping_add(1));
            // `advance` counted `seq` itself lost; it arrived.
            self.lost = self.lost.wrapping_sub(1);
            self.set_bit(seq);
        } else if self.next_seq - seq <= WINDOW {
            if self.bit(seq) {
                self.duplicates += 1;
                return Change::NONE;
            }
            self.set_bit(seq);
            self.lost = self.lost.wrapping_sub(1);
            self.reordered += 1;
            ev = Change::fill(seq);
        } else {
            self.stale += 1;
            return Change::NONE;
        }
        self.timing(tx_ns, rx_ns);
        ev
    }

    /// Accounts an end-of-flow marker announcing `count` data datagrams;
    /// the first one may count the tail lost (a gap).
    #[inline(always)]
    pub fn on_end(&mut self, count: u64, rx_ns: u64, flags: u16, clock: u32) -> Change {
        self.arrival(rx_ns, flags, clock);
        if self.ended != 0 {
            return Change::NONE;
        }
        self.ended = 1;
        self.end_count = count;
        let ev = Change::gap(self.next_seq, count);
        self.advance(count);
        ev
    }

    /// Accounts one parsed datagram.
    #[inline(always)]
    pub fn on_header(&mut self, h: &crate::wire::Header, rx_ns: u64) -> Change {
        match h.kind {
            crate::wire::Kind::Data => self.on_data(h.seq, h.len, h.tx_ns, rx_ns, h.flags, h.clock),
            crate::wire::Kind::End => self.on_end(h.seq, rx_ns, h.flags, h.clock),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    /// The simple model the tracker must agree with.
    #[derive(Default, Debug, PartialEq, Eq)]
    struct Model {
        received: u64,
        lost: u64,
        reordered: u64,
        duplicates: u64,
        stale: u64,
        next: u64,
    }

    enum Ev {
        Data(u64),
        End(u64),
    }

    fn model(events: &[Ev]) -> Model {
        let mut seen = BTreeSet::new();
        let mut m = Model::default();
        let mut ended = false;
        for e in events {
            match *e {
                Ev::Data(s) => {
                    m.received += 1;
                    if s >= m.next {
                        m.next = s + 1;
                        seen.insert(s);
                    } else if m.next - s > WINDOW {
                        m.stale += 1;
                    } else if !seen.insert(s) {
                        m.duplicates += 1;
                    } else {
                        m.reordered += 1;
                    }
                }
                Ev::End(c) => {
                    if !ended {
                        ended = true;
                        m.next = m.next.max(c);
                    }
                }
            }
        }
        m.lost = m.next - seen.len() as u64;
        m
    }

    /// The sequence numbers the model says are lost.
    fn model_lost(events: &[Ev]) -> BTreeSet<u64> {
        let mut seen = BTreeSet::new();
        let mut next = 0u64;
        let mut ended = false;
        for e in events {
            match *e {
                Ev::Data(s) if s >= next => {
                    next = s + 1;
                    seen.insert(s);
                }
                Ev::Data(s) if next - s <= WINDOW => {
                    seen.insert(s);
                }
                Ev::Data(_) => {}
                Ev::End(c) => {
                    if !ended {
                        ended = true;
                        next = next.max(c);
                    }
                }
            }
        }
        (0..next).filter(|s| !seen.contains(s)).collect()
    }

    /// The tracker's events, as the eBPF counter emits them.
    fn events_of(events: &[Ev]) -> Vec<LossEvent> {
        let mut st = FlowState::new();
        events
            .iter()
            .map(|e| match *e {
                Ev::Data(s) => st.on_data(s, 100, 0, 1, 0, 0).into(),
                Ev::End(c) => st.on_end(c, 1, 0, 0).into(),
            })
            .collect()
    }

    /// Union of the gaps minus the fills. Every gap is new (no overlap) and
    /// every fill removes a number an earlier gap added.
    fn event_lost(evs: &[LossEvent]) -> BTreeSet<u64> {
        let mut lost = BTreeSet::new();
        for e in evs {
            match *e {
                LossEvent::None => {}
                LossEvent::Gap { from, to } => {
                    assert!(from < to, "empty gap {e:?}");
                    for s in from..to {
                        assert!(lost.insert(s), "gap {e:?} overlaps an earlier one at {s}");
                    }
                }
                LossEvent::Fill { seq } => assert!(lost.remove(&seq), "fill of {seq}, which no gap holds"),
            }
        }
        lost
    }

    fn run(events: &[Ev]) -> FlowState {
        let mut st = FlowState::new();
        for (i, e) in events.iter().enumerate() {
            let rx = 1_000_000 + i as u64 * 1000;
            match *e {
                Ev::Data(s) => st.on_data(s, 100, rx - 500, rx, 0, 0),
                Ev::End(c) => st.on_end(c, rx, 0, 0),
            };
        }
        st
    }

    fn check(events: &[Ev]) {
        let m = model(events);
        let st = run(events);
        let got = Model {
            received: st.received,
            lost: st.lost,
            reordered: st.reordered,
            duplicates: st.duplicates,
            stale: st.stale,
            next: st.next_seq,
        };
        assert_eq!(got, m);
        // The events describe exactly the model's lost set.
        let lost = event_lost(&events_of(events));
        assert_eq!(lost.len() as u64, st.lost);
        assert_eq!(lost, model_lost(events));
    }

    #[test]
    fn in_order_no_loss() {
        let ev: Vec<_> = (0..5000).map(Ev::Data).chain([Ev::End(5000)]).collect();
        let st = run(&ev);
        assert_eq!((st.received, st.lost, st.reordered, st.duplicates), (5000, 0, 0, 0));
        assert_eq!(st.ended, 1);
        assert_eq!(st.bytes, 500_000);
        // constant transit: zero jitter, delay 500 ns
        assert_eq!(st.jitter_ns(), 0);
        assert_eq!((st.delay_min_ns, st.delay_max_ns, st.delay_mean_ns()), (500, 500, Some(500)));
        assert_eq!(st.delay_hist[0], 5000);
    }

    #[test]
    fn gaps_reorder_dup_tail() {
        // 0 1 _ 3 2 3 5 ... end(10): lost 4,6,7,8,9
        let ev = [0, 1, 3, 2, 3, 5].map(Ev::Data);
        let mut ev: Vec<_> = ev.into_iter().collect();
        ev.push(Ev::End(10));
        ev.push(Ev::End(10));
        let st = run(&ev);
        assert_eq!(st.received, 6);
        assert_eq!(st.lost, 5);
        assert_eq!(st.reordered, 1);
        assert_eq!(st.duplicates, 1);
        assert_eq!(st.next_seq, 10);
        check(&ev);
    }

    #[test]
    fn events_name_gaps_fills_and_the_tail() {
        let ev = [Ev::Data(0), Ev::Data(3), Ev::Data(1), Ev::Data(1), Ev::End(6), Ev::End(6), Ev::Data(4)];
        assert_eq!(
            events_of(&ev),
            [
                LossEvent::None,
                LossEvent::Gap { from: 1, to: 3 },
                LossEvent::Fill { seq: 1 },
                LossEvent::None,
                LossEvent::Gap { from: 4, to: 6 },
                LossEvent::None,
                LossEvent::Fill { seq: 4 },
            ]
        );
        // Stale datagrams fill nothing: they stay lost.
        let ev = [Ev::Data(0), Ev::Data(5000), Ev::Data(2)];
        assert_eq!(events_of(&ev)[2], LossEvent::None);
        assert_eq!(event_lost(&events_of(&ev)), model_lost(&ev));
        check(&ev);
    }

    #[test]
    fn everything_lost_but_end_marker() {
        let st = run(&[Ev::End(777)]);
        assert_eq!((st.received, st.lost, st.ended), (0, 777, 1));
    }

    #[test]
    fn late_after_end_marker_is_reordered() {
        let ev = [Ev::Data(0), Ev::End(3), Ev::Data(2), Ev::Data(1)];
        let st = run(&ev);
        assert_eq!((st.lost, st.reordered), (0, 2));
        check(&ev);
    }

    #[test]
    fn huge_jump_and_stale() {
        let ev = [Ev::Data(5), Ev::Data(100_000), Ev::Data(6), Ev::Data(99_000), Ev::Data(99_000)];
        let st = run(&ev);
        assert_eq!(st.stale, 1);
        assert_eq!(st.reordered, 1);
        assert_eq!(st.duplicates, 1);
        check(&ev);
    }

    #[test]
    fn extreme_sequence_numbers_do_not_panic() {
        let mut st = FlowState::new();
        st.on_data(u64::MAX - 1, 40, 0, 1, 0, 0);
        st.on_data(u64::MAX - 3, 40, 0, 1, 0, 0);
        st.on_end(u64::MAX, 2, 0, 0);
        assert_eq!(st.reordered, 1);
    }

    #[test]
    fn sender_flags_follow_the_last_datagram() {
        use crate::wire::{FLAG_CLOCK_SYNCED, FLAG_TAI_SHIFT};
        let mut st = FlowState::new();
        assert_eq!((st.sender_tai_offset(), st.flags), (0, 0));
        st.on_data(0, 40, 0, 1, FLAG_CLOCK_SYNCED | (37 << FLAG_TAI_SHIFT), 0);
        assert_eq!(st.sender_tai_offset(), 37);
        assert_eq!(st.flags, STATE_SENDER_SYNCED | (37 << 8));
        // Unknown flag bits (1..7) are not kept; the offset is replaced, not or-ed.
        st.on_data(1, 40, 0, 2, 0xfe | (0x90 << FLAG_TAI_SHIFT), 0);
        assert_eq!(st.sender_tai_offset(), 0x90);
        assert_eq!(st.flags, 0x90 << 8);
        // The end marker's flags count too, and the largest offset fits.
        st.on_end(2, 3, FLAG_CLOCK_SYNCED | (0xff << FLAG_TAI_SHIFT), 0);
        assert_eq!(st.sender_tai_offset(), 0xff);
        assert_eq!(st.flags, STATE_SENDER_SYNCED | 0xff00);
        st.on_data(2, 40, 0, 4, FLAG_CLOCK_SYNCED, 0);
        assert_eq!((st.sender_tai_offset(), st.flags), (0, STATE_SENDER_SYNCED));
    }

    #[test]
    fn jitter_follows_rfc3550() {
        // transit alternates 0 and 1600 ns: |D| = 1600 every step after the first.
        let mut st = FlowState::new();
        let mut j: f64 = 0.0;
        for i in 0..200u64 {
            let transit = if i % 2 == 0 { 0 } else { 1600 };
            st.on_data(i, 40, 10_000 * i, 10_000 * i + transit, 0, 0);
            if i > 0 {
                j += (1600.0 - j) / 16.0;
            }
        }
        let got = st.jitter_ns() as f64;
        assert!((got - j).abs() <= 2.0, "jitter {got} vs {j}");
    }

    /// One-way delays (one negative: clocks apart) and the IPDV of
    /// consecutive arrivals land in their log-linear buckets.
    #[test]
    fn delay_and_ipdv_histograms() {
        use crate::hist::bucket;
        let mut st = FlowState::new();
        let transits = [5000i64, 5000, 2_000_000, -300, 5300];
        for (i, &t) in transits.iter().enumerate() {
            let tx = 1_000_000_000u64;
            st.on_data(i as u64, 100, tx, (tx as i64 + t) as u64, 0, 0);
        }
        assert_eq!(st.delay_hist.iter().sum::<u64>(), 5);
        assert_eq!((st.delay_hist[bucket(5000)], st.delay_hist[bucket(2_000_000)], st.delay_hist[0]), (2, 1, 1));
        assert_eq!(st.delay_hist[bucket(5300)], 1);
        assert_eq!(st.delay_negative, 1);
        // |Δtransit|: 0, 1 995 000, 2 000 300, 5 600.
        assert_eq!((st.ipdv_count, st.ipdv_max_ns, st.ipdv_sum_ns), (4, 2_000_300, 4_000_900));
        assert_eq!(bucket(1_995_000), bucket(2_000_300));
        assert_eq!((st.ipdv_hist[0], st.ipdv_hist[bucket(2_000_300)], st.ipdv_hist[bucket(5600)]), (1, 2, 1));
        assert_eq!(st.ipdv_hist.iter().sum::<u64>(), st.ipdv_count);
    }

    /// Builds an arrival order from `n` datagrams: drop some, displace some
    /// by up to `disp` positions, duplicate some, optionally send end markers.
    fn scenario(
        n: u64,
        drop: &[bool],
        disp: &[u16],
        dup: &[bool],
        tail_drop: u64,
        end: bool,
    ) -> Vec<Ev> {
        let sent = n;
        let kept = n.saturating_sub(tail_drop);
        let mut keyed: Vec<(u64, u64)> = Vec::new();
        for s in 0..kept {
            let i = s as usize;
            if drop[i % drop.len()] && (s * 7919) % 3 == 0 {
                continue;
            }
            let k = s * 4 + disp[i % disp.len()] as u64;
            keyed.push((k, s));
            if dup[i % dup.len()] && s % 5 == 0 {
                keyed.push((k + disp[(i + 1) % disp.len()] as u64 + 1, s));
            }
        }
        keyed.sort();
        let mut ev: Vec<Ev> = keyed.into_iter().map(|(_, s)| Ev::Data(s)).collect();
        if end {
            ev.push(Ev::End(sent));
            ev.push(Ev::End(sent));
        }
        ev
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn agrees_with_model(
            n in 0u64..4000,
            drop in prop::collection::vec(any::<bool>(), 1..64),
            disp in prop::collection::vec(0u16..6000, 1..64),
            dup in prop::collection::vec(any::<bool>(), 1..64),
            tail_drop in 0u64..50,
            end in any::<bool>(),
        ) {
            let ev = scenario(n, &drop, &disp, &dup, tail_drop, end);
            check(&ev);
        }

        #[test]
        fn exact_within_window(
            n in 1u64..3000,
            drop in prop::collection::vec(any::<bool>(), 1..64),
            disp in prop::collection::vec(0u16..(WINDOW as u16), 1..64),
            dup in prop::collection::vec(any::<bool>(), 1..64),
            tail_drop in 0u64..50,
        ) {
            // Displacement stays within the window: no datagram is stale and
            // the counts equal the ground truth of what was dropped.
            let ev = scenario(n, &drop, &disp, &dup, tail_drop, true);
            let st = run(&ev);
            prop_assert_eq!(st.stale, 0);
            let delivered: BTreeSet<u64> = ev.iter().filter_map(|e| match e { Ev::Data(s) => Some(*s), _ => None }).collect();
            prop_assert_eq!(st.lost, n - delivered.len() as u64);
            prop_assert_eq!(st.received - st.duplicates, delivered.len() as u64);
        }

        #[test]
        fn arbitrary_events_never_panic(seqs in prop::collection::vec(any::<u64>(), 0..200), end in any::<Option<u64>>()) {
            let mut ev: Vec<Ev> = seqs.into_iter().map(Ev::Data).collect();
            if let Some(c) = end { ev.push(Ev::End(c)); }
            let _ = run(&ev);
        }
    }
}
