//! The lab's TGW member cap (`lab up --preset tgw`): a tc program
//! (`mcblast_tgw_members`, tcx **ingress** of each receiver's access port,
//! before the bridge snoops) that admits at most `cap` members per group,
//! across the whole lab: every port's program shares these maps. An IGMPv1/v2
//! report of a member already holding a slot passes and renews it; of a new
//! member, it passes and the member takes a free slot, or the slot of a member
//! silent for longer than the membership interval (aged out, as TGW drops a
//! member after 3 missed queries), while the group has one within the cap;
//! else it is dropped (the bridge never learns the member, so the fabric sends
//! it nothing) and counted. An IGMPv2 leave frees the member's slot. IGMPv3
//! reports pass untouched (the TGW fabric drops them anyway, see the nftables
//! side).

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, TC_ACT_SHOT, TC_ACT_UNSPEC, bpf_spin_lock},
    btf_maps::{Array, HashMap},
    helpers::generated::{bpf_ktime_get_ns, bpf_spin_lock as spin_lock, bpf_spin_unlock as spin_unlock},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use mcblast_common::maps::{MAX_TGW_GROUPS, TGW_SLOTS, TgwGroup, TgwMemberConfig, TgwSlots};

use super::{ETH_HLEN, ETH_P_IP};

type Group = TgwGroup<bpf_spin_lock>;

/// Element 0: the cap and the membership interval, written by userspace before attach.
#[btf_map]
static TGW_CONFIG: Array<TgwMemberConfig, 1> = Array::new();

#[btf_map]
static TGW_GROUPS: HashMap<u32, Group, { MAX_TGW_GROUPS as usize }> = HashMap::new();

/// Each group's member slots, under its TGW_GROUPS lock. Allocated as groups
/// appear (3 KiB each; most labs use a few groups).
#[btf_map]
static TGW_SLOTS_MAP: HashMap<u32, TgwSlots, { MAX_TGW_GROUPS as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

const PASS: i32 = TC_ACT_UNSPEC;
const DROP: i32 = TC_ACT_SHOT as i32;
const IPPROTO_IGMP: u8 = 2;
const IGMPV1_REPORT: u8 = 0x12;
const IGMPV2_REPORT: u8 = 0x16;
const IGMPV2_LEAVE: u8 = 0x17;

#[classifier]
pub fn mcblast_tgw_members(ctx: TcContext) -> i32 {
    members(&ctx)
}

#[inline(always)]
fn members(ctx: &TcContext) -> i32 {
    let Ok(eth_type) = ctx.load::<[u8; 2]>(12) else { return PASS };
    if u16::from_be_bytes(eth_type) != ETH_P_IP {
        return PASS;
    }
    let Ok(ip) = ctx.load::<[u8; 20]>(ETH_HLEN) else { return PASS };
    if ip[0] >> 4 != 4 || ip[9] != IPPROTO_IGMP {
        return PASS;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return PASS;
    }
    let Ok(igmp) = ctx.load::<[u8; 8]>(ETH_HLEN + ihl) else { return PASS };
    let group = u32::from_ne_bytes([igmp[4], igmp[5], igmp[6], igmp[7]]);
    let member = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    if member == 0 {
        return PASS; // no address to hold a slot by
    }
    match igmp[0] {
        IGMPV1_REPORT | IGMPV2_REPORT => report(group, member),
        IGMPV2_LEAVE => {
            if let (Some(g), Some(slots)) = (TGW_GROUPS.get_ptr_mut(&group), TGW_SLOTS_MAP.get_ptr_mut(&group)) {
                // SAFETY: `g` and `slots` point to live map values; `g`'s lock
                // field is its bpf_spin_lock, which guards both; no helper call
                // while it is held.
                unsafe {
                    spin_lock(&raw mut (*g).lock);
                    leave_locked(&mut *slots, member);
                    spin_unlock(&raw mut (*g).lock);
                }
            }
            PASS
        }
        _ => PASS,
    }
}

#[inline(always)]
fn report(group: u32, member: u32) -> i32 {
    let Some(cfg) = TGW_CONFIG.get_ptr(0) else { return PASS };
    // SAFETY: element 0 of an array map, valid for the program's run.
    let (cap, age_ns) = unsafe { ((*cfg).cap, (*cfg).age_ns) };
    if TGW_SLOTS_MAP.get_ptr_mut(&group).is_none() {
        let Some(zero) = super::ZERO.get_ptr(0) else { return PASS };
        // SAFETY: ZERO's value is at least size_of::<TgwSlots>() bytes,
        // 8-aligned, all zero, valid for the program's run; all-zero slots
        // are all free. NOEXIST: another CPU may have created them meanwhile.
        let empty: &TgwSlots = unsafe { &*zero.cast::<TgwSlots>() };
        let _ = TGW_SLOTS_MAP.insert(&group, empty, BPF_NOEXIST as u64);
    }
    if TGW_GROUPS.get_ptr_mut(&group).is_none() {
        let fresh = Group { lock: bpf_spin_lock { val: 0 }, _pad: 0, refused: 0, aged_out: 0 };
        let _ = TGW_GROUPS.insert(&group, &fresh, BPF_NOEXIST as u64);
    }
    let (Some(g), Some(slots)) = (TGW_GROUPS.get_ptr_mut(&group), TGW_SLOTS_MAP.get_ptr_mut(&group)) else {
        return PASS;
    };
    // SAFETY: a helper without arguments; read before the lock (no calls under it).
    let now = unsafe { bpf_ktime_get_ns() };
    let admit;
    // SAFETY: as in the leave above.
    unsafe {
        spin_lock(&raw mut (*g).lock);
        admit = admit_locked(&mut *g, &mut *slots, member, cap as usize, age_ns, now);
        spin_unlock(&raw mut (*g).lock);
    }
    if admit { PASS } else { DROP }
}

/// With the group's lock held (no helper calls): renews `member`'s slot, or
/// gives it a free or aged-out one within the first `cap`; false when every
/// one of those holds a live member.
#[inline(always)]
fn admit_locked(g: &mut Group, s: &mut TgwSlots, member: u32, cap: usize, age_ns: u64, now: u64) -> bool {
    for i in 0..TGW_SLOTS {
        if i >= cap {
            break;
        }
        if s.member[i] == member {
            s.seen_ns[i] = now;
            return true;
        }
    }
    for i in 0..TGW_SLOTS {
        if i >= cap {
            break;
        }
        if s.member[i] == 0 || now.wrapping_sub(s.seen_ns[i]) > age_ns {
            if s.member[i] != 0 {
                g.aged_out += 1;
            }
            s.member[i] = member;
            s.seen_ns[i] = now;
            return true;
        }
    }
    g.refused += 1;
    false
}

/// With the group's lock held: frees `member`'s slot.
#[inline(always)]
fn leave_locked(s: &mut TgwSlots, member: u32) {
    for i in 0..TGW_SLOTS {
        if s.member[i] == member {
            s.member[i] = 0;
            s.seen_ns[i] = 0;
            return;
        }
    }
}
