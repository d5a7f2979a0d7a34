//! The eBPF object mcblast embeds (`build.rs` builds it from `mcblast-ebpf`): the receiver's counter and drop
//! tracer, the lab's impairment program and TGW member cap; and attaching a tc program where the kernel has no
//! tcx links ([`tc_classic`]). Below the domains that load it (recv, lab).

pub mod tc_classic;

/// The eBPF object built by `build.rs` (empty when built with `AYA_BUILD_SKIP`).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcblast"));

/// Name of the kernel counter as a tc (`sched_cls`) program.
pub const TC_PROGRAM: &str = "mcblast_tc";
