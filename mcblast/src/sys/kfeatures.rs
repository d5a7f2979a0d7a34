//! What the running kernel offers the kernel counter, found by probing its
//! own type information (BTF), never by version number:
//!
//! | feature | probe | since | without it |
//! |---|---|---|---|
//! | `bpf_ktime_get_tai_ns` | `BPF_FUNC_ktime_get_tai_ns` in `enum bpf_func_id` | 6.1 | monotonic clock + offset measured at attach |
//! | XDP multi-buffer | `BPF_FUNC_xdp_load_bytes` in `enum bpf_func_id` (it came with `frags` programs) | 5.18 | a one-buffer XDP program; frames that do not fit one buffer need tc |
//! | tcx links | `BPF_TCX_INGRESS` in `enum bpf_attach_type` | 6.6 | a classic clsact qdisc + BPF filter ([`crate::ebpf::tc_classic`]) |
//!
//! `MCBLAST_PRETEND_MISSING=tai,tcx,frags` (a test aid) makes this kernel look as
//! if it lacked them, so the fallbacks run on any kernel.

#![deny(unsafe_code)]

use crate::sys::btf::Btf;

/// The environment variable of the test aid.
pub const PRETEND_MISSING: &str = "MCBLAST_PRETEND_MISSING";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `bpf_ktime_get_tai_ns` exists.
    pub tai_helper: bool,
    /// tc programs attach through tcx links.
    pub tcx: bool,
    /// XDP programs may see multi-buffer frames (`frags`, `bpf_xdp_load_bytes`).
    pub xdp_frags: bool,
}

impl KernelFeatures {
    /// Probes the running kernel's BTF. Without BTF every feature reads as
    /// missing (the counter's maps need BTF anyway, and say so on load).
    pub fn probe() -> KernelFeatures {
        Self::probe_hiding(&std::env::var(PRETEND_MISSING).unwrap_or_default())
    }

    /// As [`probe`](Self::probe), with the features named in `pretend`
    /// (comma-separated: `tai`, `tcx`, `frags`) read as missing.
    pub fn probe_hiding(pretend: &str) -> KernelFeatures {
        let btf = Btf::from_kernel().ok();
        let missing = |name: &str| pretend.split(',').any(|p| p.trim() == name);
        let has = |enum_name: &str, value: &str| {
            btf.as_ref()
                .and_then(|b| b.enum_values(enum_name).ok())
                .is_some_and(|values| values.iter().any(|(_, n)| n == value))
        };
        KernelFeatures {
            tai_helper: !missing("tai") && has("bpf_func_id", "BPF_FUNC_ktime_get_tai_ns"),
            tcx: !missing("tcx") && has("bpf_attach_type", "BPF_TCX_INGRESS"),
            xdp_frags: !missing("frags") && has("bpf_func_id", "BPF_FUNC_xdp_load_bytes"),
        }
    }
}

/// virtio_net without XDP multi-buffer takes native XDP only while a frame
/// fits one page: MTU below 4064 bytes (its message in dmesg).
pub const VIRTIO_NET_XDP_MTU: u32 = 4064;

/// Whether the running kernel's virtio_net driver builds multi-buffer XDP
/// frames (its `virtnet_build_xdp_buff_mrg` function, in /proc/kallsyms).
pub fn virtio_net_xdp_frags() -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .is_ok_and(|s| s.lines().any(|l| l.split_whitespace().nth(2) == Some("virtnet_build_xdp_buff_mrg")))
}

/// Why native XDP refuses `ifname` at `mtu`, where the driver's limit is
/// known and explains it; None otherwise. The kernel only says "Invalid
/// argument" (the driver's reason goes to dmesg).
pub fn native_xdp_mtu_refusal(ifname: &str, mtu: u32) -> Option<String> {
    match crate::sys::ethtool::driver(ifname).ok()?.as_str() {
        "virtio_net" if mtu >= VIRTIO_NET_XDP_MTU && !virtio_net_xdp_frags() => Some(format!(
            "virtio_net in this kernel takes native XDP only below MTU {VIRTIO_NET_XDP_MTU} (no XDP multi-buffer \
             in the driver) and {ifname} has MTU {mtu}"
        )),
        "ena" if mtu > ENA_XDP_MTU => Some(format!(
            "ENA takes native XDP only up to MTU {ENA_XDP_MTU} (no XDP multi-buffer) and {ifname} has MTU {mtu}"
        )),
        _ => None,
    }
}

/// ENA's native XDP MTU limit: a page less the Ethernet, FCS and VLAN
/// headers, XDP headroom and `skb_shared_info` (`ENA_XDP_MAX_MTU`).
pub const ENA_XDP_MTU: u32 = 3498;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_is_probed_and_the_test_aid_hides_features() {
        let Ok(btf) = Btf::from_kernel() else { return }; // no BTF: nothing to probe
        let real = KernelFeatures::probe();
        let has_tai = btf.enum_values("bpf_func_id").unwrap().iter().any(|(_, n)| n == "BPF_FUNC_ktime_get_tai_ns");
        assert_eq!(real.tai_helper, has_tai);
        let frags = btf.enum_values("bpf_func_id").unwrap().iter().any(|(_, n)| n == "BPF_FUNC_xdp_load_bytes");
        assert_eq!(real.xdp_frags, frags);
        let old = KernelFeatures::probe_hiding("tai, tcx,frags");
        assert_eq!(old, KernelFeatures { tai_helper: false, tcx: false, xdp_frags: false });
    }
}
