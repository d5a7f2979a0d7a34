//! `mcblast lab impair`: a tc program (`mcblast_impair`, attached through a
//! tcx egress link to a lab bridge port) that drops, duplicates or reorders
//! mcblast data datagrams on their way to one receiver, and counts what it
//! did. This kernel has no netem; this is the lab's replacement for it.
//!
//! Only mcblast datagrams are touched: Ethernet (one optional 802.1Q tag),
//! IPv4, UDP (any port), a valid 40-byte mcblast header. End-of-flow
//! markers always pass (they only release, as lost, a datagram still held
//! for reordering); non-first fragments pass; a first fragment counts as
//! its datagram and can only be dropped.
//!
//! The decisions (every Nth, bursts, the seeded PRNG) are
//! [`ImpairState::on_data`] of `mcblast-common`, run on the one `IMPAIR`
//! entry under its `bpf_spin_lock`, so the same configuration and the same
//! datagram sequence give the same decisions on any CPU.
//!
//! * Drop: `TC_ACT_SHOT`.
//! * Duplicate: `bpf_clone_redirect` to the same device's egress sends an
//!   exact copy first, then the datagram goes on.
//! * Reorder (no delay queue here): a chosen datagram is held — its header
//!   kept in the map, the datagram dropped. The next datagram of the same
//!   flow (and length) releases it: that datagram is first cloned out as it
//!   is, then rewritten to carry the held header (UDP checksum adjusted)
//!   and sent. The receiver sees S+1 before S: one late arrival per held
//!   datagram. The filler bytes after the header are those of S+1.
//!
//! The clone passes this program again on the same CPU, inside the helper
//! call; the per-CPU `IMPAIR_BUSY` flag lets it through untouched.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_RECOMPUTE_CSUM, TC_ACT_SHOT, TC_ACT_UNSPEC, bpf_spin_lock},
    btf_maps::{Array, PerCpuArray},
    helpers::generated::{bpf_csum_diff, bpf_spin_lock as spin_lock, bpf_spin_unlock as spin_unlock},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use mcblast_common::{
    maps::{FlowKey, ImpairAction, ImpairEntry, ImpairStats},
    wire::{HEADER_LEN, Header, Kind, Packet},
};

use super::{IP_MF, IP_OFFSET, TcFrame, UDP_HLEN, ipv4_udp};

/// The map value: configuration, state and counters behind the lock.
type Entry = ImpairEntry<bpf_spin_lock>;

/// Element 0: written by userspace before attach; pinned next to the link
/// so `mcblast lab impair LINK --stats` can read it later.
#[btf_map]
static IMPAIR: Array<Entry, 1> = Array::new();

/// Non-zero on this CPU while the program sends a clone (which passes the
/// program again): that clone is let through.
#[btf_map]
static IMPAIR_BUSY: PerCpuArray<u32, 1> = PerCpuArray::new();

/// Offset of the checksum in the UDP header.
const UDP_CSUM_OFF: usize = 6;

/// Let the packet go on (`TCX_NEXT`).
const PASS: i32 = TC_ACT_UNSPEC;
/// Drop it (`TCX_DROP`).
const DROP: i32 = TC_ACT_SHOT as i32;

/// A header copy aligned for `bpf_csum_diff` (which reads 32-bit words).
#[repr(C, align(4))]
#[derive(Clone, Copy)]
struct Hdr([u8; HEADER_LEN]);

#[classifier]
pub fn mcblast_impair(ctx: TcContext) -> i32 {
    impair(&ctx)
}

#[inline(always)]
fn impair(ctx: &TcContext) -> i32 {
    let Some(busy) = IMPAIR_BUSY.get_ptr_mut(0) else { return PASS };
    // SAFETY: this CPU's slot of a per-CPU array; tc runs with bottom
    // halves off, so only the nested run from our own clone reads it.
    if unsafe { *busy } != 0 {
        return PASS;
    }

    let Some((l3, ihl, ip)) = ipv4_udp(&TcFrame(ctx)) else { return PASS };
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & IP_OFFSET != 0 {
        return PASS;
    }
    let fragment = frag & IP_MF != 0;
    let l4 = l3 + ihl;
    let Ok(udp) = ctx.load::<[u8; UDP_HLEN]>(l4) else { return PASS };
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if udp_len < UDP_HLEN + HEADER_LEN {
        return PASS;
    }
    let Ok(cur) = ctx.load::<Hdr>(l4 + UDP_HLEN) else { return PASS };
    // SAFETY: `skb` is the program's context pointer, valid for this run;
    // gso_segs is a readable field of __sk_buff.
    let segs = unsafe { (*ctx.skb.skb).gso_segs };
    if segs > 1 {
        // A GSO batch: several datagrams behind one header. Impairing it
        // would touch them all at once; count them as passed, untouched.
        if let Some(entry) = IMPAIR.get_ptr_mut(0) {
            adjust(entry, |s| s.gso_passed += segs as u64);
        }
        return PASS;
    }
    let Ok(h) = Header::parse(&Packet::new_unchecked(&cur.0[..]), udp_len - UDP_HLEN) else { return PASS };
    let key = FlowKey {
        sender: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        group: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        run: h.run,
        flow: h.flow,
    };
    let Some(entry) = IMPAIR.get_ptr_mut(0) else { return PASS };

    let mut held = Hdr([0; HEADER_LEN]);
    let action;
    // SAFETY: `entry` points to the live element 0 of IMPAIR; its lock
    // field is the value's bpf_spin_lock, and it is unlocked below before
    // any helper call.
    unsafe {
        spin_lock(&raw mut (*entry).lock);
        let e = &mut *entry;
        action = match h.kind {
            Kind::End => {
                e.state.on_end(&mut e.stats, &key);
                ImpairAction::Pass
            }
            Kind::Data => e.state.on_data(&e.cfg, &mut e.stats, &key, h.len, fragment),
        };
        match action {
            ImpairAction::Hold => e.state.held_hdr = cur.0,
            ImpairAction::Release => held.0 = e.state.held_hdr,
            _ => {}
        }
        spin_unlock(&raw mut (*entry).lock);
    }

    match action {
        ImpairAction::Pass => PASS,
        ImpairAction::Drop | ImpairAction::Hold => DROP,
        ImpairAction::Duplicate => {
            if !send_clone(ctx, busy) {
                // No copy went out: not a duplicate.
                adjust(entry, |s| s.duplicated -= 1);
            }
            PASS
        }
        ImpairAction::Release => {
            if !send_clone(ctx, busy) {
                // This datagram goes out unchanged; the held one is lost.
                adjust(entry, |s| {
                    s.reordered -= 1;
                    s.reorder_lost += 1;
                });
                return PASS;
            }
            if rewrite(ctx, l4, &cur, &held) {
                PASS
            } else {
                // The clone already delivered this datagram; the held one
                // cannot be sent (this skb may be half rewritten): lost.
                adjust(entry, |s| {
                    s.reordered -= 1;
                    s.reorder_lost += 1;
                });
                DROP
            }
        }
    }
}

/// Sends a copy of the packet out of the same device now (it passes this
/// program again, marked busy). True when the copy went out.
#[inline(always)]
fn send_clone(ctx: &TcContext, busy: *mut u32) -> bool {
    // SAFETY: `ctx.skb.skb` is the program's context pointer; `ifindex` is
    // a readable field of `struct __sk_buff`.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: this CPU's slot of IMPAIR_BUSY (see `impair`).
    unsafe { *busy = 1 };
    let ok = ctx.clone_redirect(ifindex, 0).is_ok();
    // SAFETY: as above.
    unsafe { *busy = 0 };
    ok
}

/// Replaces the mcblast header at `l4 + 8` (`cur`) with `new` and adjusts
/// the UDP checksum (left 0 when it is 0; `skb->csum` is updated for
/// CHECKSUM_COMPLETE, and nothing is needed for CHECKSUM_PARTIAL, which the
/// kernel helpers handle).
#[inline(always)]
fn rewrite(ctx: &TcContext, l4: usize, cur: &Hdr, new: &Hdr) -> bool {
    let mut from = *cur;
    let mut to = *new;
    // SAFETY: both are 40-byte, 4-aligned stack buffers the helper only reads.
    let diff = unsafe {
        bpf_csum_diff(
            from.0.as_mut_ptr().cast(),
            HEADER_LEN as u32,
            to.0.as_mut_ptr().cast(),
            HEADER_LEN as u32,
            0,
        )
    };
    if diff < 0 {
        return false;
    }
    if ctx.store(l4 + UDP_HLEN, &to, BPF_F_RECOMPUTE_CSUM as u64).is_err() {
        return false;
    }
    ctx.l4_csum_replace(l4 + UDP_CSUM_OFF, 0, diff as u64, BPF_F_MARK_MANGLED_0 as u64).is_ok()
}

/// Corrects the counters after a helper failed.
#[inline(always)]
fn adjust(entry: *mut Entry, f: impl FnOnce(&mut ImpairStats)) {
    // SAFETY: as in `impair`: the live element 0, locked around a plain update.
    unsafe {
        spin_lock(&raw mut (*entry).lock);
        f(&mut (*entry).stats);
        spin_unlock(&raw mut (*entry).lock);
    }
}
