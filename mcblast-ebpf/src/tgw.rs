//! The lab's TGW member cap (`lab up --preset tgw`): a tc program
//! (`mcblast_tgw_members`, tcx **ingress** of each receiver's access port,
//! before the bridge snoops) that admits at most `cap` members per group,
//! across the whole lab: every port's program shares these maps. An IGMPv1/v2
//! report of a member already admitted passes; of a new member, it passes and
//! the member is admitted while the group has room, else it is dropped (the
//! bridge never learns the member, so the fabric sends it nothing) and counted.
//! An IGMPv2 leave frees the member's place. IGMPv3 reports pass untouched (the
//! TGW fabric drops them anyway, see the nftables side).

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_SHOT, TC_ACT_UNSPEC, bpf_spin_lock},
    btf_maps::{Array, HashMap},
    helpers::generated::{bpf_spin_lock as spin_lock, bpf_spin_unlock as spin_unlock},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use mcblast_common::maps::{MAX_TGW_GROUPS, MAX_TGW_MEMBERS, TgwGroup, TgwMemberConfig, TgwMemberKey};

use super::{ETH_HLEN, ETH_P_IP};

type Group = TgwGroup<bpf_spin_lock>;

/// Element 0: the cap, written by userspace before attach.
#[btf_map]
static TGW_CONFIG: Array<TgwMemberConfig, 1> = Array::new();

#[btf_map]
static TGW_GROUPS: HashMap<u32, Group, { MAX_TGW_GROUPS as usize }> = HashMap::new();

#[btf_map]
static TGW_MEMBERS: HashMap<TgwMemberKey, u32, { MAX_TGW_MEMBERS as usize }> = HashMap::new();

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
    let key = TgwMemberKey {
        group: u32::from_ne_bytes([igmp[4], igmp[5], igmp[6], igmp[7]]),
        member: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
    };
    match igmp[0] {
        IGMPV1_REPORT | IGMPV2_REPORT => report(&key),
        IGMPV2_LEAVE => {
            if TGW_MEMBERS.remove(&key).is_ok()
                && let Some(g) = TGW_GROUPS.get_ptr_mut(&key.group)
            {
                // SAFETY: `g` points to a live TGW_GROUPS value; its lock field
                // is the value's bpf_spin_lock; no helper call while it is held.
                unsafe {
                    spin_lock(&raw mut (*g).lock);
                    (*g).members = (*g).members.saturating_sub(1);
                    spin_unlock(&raw mut (*g).lock);
                }
            }
            PASS
        }
        _ => PASS,
    }
}

#[inline(always)]
fn report(key: &TgwMemberKey) -> i32 {
    if TGW_MEMBERS.get_ptr(key).is_some() {
        return PASS;
    }
    let Some(cfg) = TGW_CONFIG.get_ptr(0) else { return PASS };
    // SAFETY: element 0 of an array map, valid for the program's run.
    let cap = unsafe { (*cfg).cap };
    if TGW_GROUPS.get_ptr_mut(&key.group).is_none() {
        let fresh = Group { lock: bpf_spin_lock { val: 0 }, members: 0, refused: 0 };
        // NOEXIST: another CPU may have created it meanwhile.
        let _ = TGW_GROUPS.insert(&key.group, &fresh, BPF_NOEXIST as u64);
    }
    let Some(g) = TGW_GROUPS.get_ptr_mut(&key.group) else { return PASS };
    let admit;
    // SAFETY: as in the leave above.
    unsafe {
        spin_lock(&raw mut (*g).lock);
        admit = (*g).members < cap;
        if admit {
            (*g).members += 1;
        } else {
            (*g).refused += 1;
        }
        spin_unlock(&raw mut (*g).lock);
    }
    if !admit {
        return DROP;
    }
    let _ = TGW_MEMBERS.insert(key, &1, 0);
    PASS
}
