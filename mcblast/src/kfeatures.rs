//! What the running kernel offers the kernel counter, found by probing its
//! own type information (BTF), never by version number:
//!
//! | feature | probe | since | without it |
//! |---|---|---|---|
//! | `bpf_ktime_get_tai_ns` | `BPF_FUNC_ktime_get_tai_ns` in `enum bpf_func_id` | 6.1 | monotonic clock + offset measured at attach |
//! | tcx links | `BPF_TCX_INGRESS` in `enum bpf_attach_type` | 6.6 | a classic clsact qdisc + BPF filter ([`crate::tc_classic`]) |
//!
//! `MCBLAST_PRETEND_MISSING=tai,tcx` (a test aid) makes this kernel look as
//! if it lacked them, so the fallbacks run on any kernel.

use crate::btf::Btf;

/// The environment variable of the test aid.
pub const PRETEND_MISSING: &str = "MCBLAST_PRETEND_MISSING";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `bpf_ktime_get_tai_ns` exists.
    pub tai_helper: bool,
    /// tc programs attach through tcx links.
    pub tcx: bool,
}

impl KernelFeatures {
    /// Probes the running kernel's BTF. Without BTF every feature reads as
    /// missing (the counter's maps need BTF anyway, and say so on load).
    pub fn probe() -> KernelFeatures {
        Self::probe_hiding(&std::env::var(PRETEND_MISSING).unwrap_or_default())
    }

    /// As [`probe`](Self::probe), with the features named in `pretend`
    /// (comma-separated: `tai`, `tcx`) read as missing.
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_is_probed_and_the_test_aid_hides_features() {
        let Ok(btf) = Btf::from_kernel() else { return }; // no BTF: nothing to probe
        let real = KernelFeatures::probe();
        let has_tai = btf.enum_values("bpf_func_id").unwrap().iter().any(|(_, n)| n == "BPF_FUNC_ktime_get_tai_ns");
        assert_eq!(real.tai_helper, has_tai);
        let old = KernelFeatures::probe_hiding("tai, tcx");
        assert_eq!(old, KernelFeatures { tai_helper: false, tcx: false });
    }
}
