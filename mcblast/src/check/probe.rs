//! `mcblast probe`: what this machine and interface support, asked cheaply
//! and without side effects — the send engines (their probes are
//! [`crate::send::support`]'s), XDP and the kernel counter's features — each
//! check with how it was determined.

use std::io;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::output::{Printer, Record};
use crate::send::support::{Verdict, choose, engine_support, gso_iface, gso_kernel, io_uring_disabled_note};

/// One line of `mcblast probe`.
#[derive(Serialize, Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    /// Supported (true/false), or null when it could not be told.
    pub ok: Option<bool>,
    /// What was found.
    pub value: String,
    /// How it was determined.
    pub how: String,
}

fn check_line(name: &'static str, ok: Option<bool>, value: impl Into<String>, how: impl Into<String>) -> Check {
    Check { name, ok, value: value.into(), how: how.into() }
}

#[derive(Serialize, Debug)]
struct ProbeOut {
    role: &'static str,
    version: &'static str,
    kernel: String,
    interface: Option<String>,
    checks: Vec<Check>,
    auto_engine: String,
    auto_reason: String,
}

fn verdict(name: &'static str, v: &Verdict, how: &str) -> Check {
    match v {
        Ok(h) => check_line(name, Some(true), "yes", h.clone()),
        Err(e) => check_line(name, Some(false), "no", if how.is_empty() { e.clone() } else { format!("{how}: {e}") }),
    }
}

/// Runs `mcblast probe` (on interface `interface`, if given; one JSON line with `json`).
pub fn run(interface: Option<&str>, json: bool) -> Result<ExitCode> {
    let iface = match interface {
        Some(n) => Some(crate::iface::lookup(n)?),
        None => None,
    };
    let name = iface.as_ref().map(|i| i.name.clone());
    let s = engine_support(name.as_deref());
    let mut checks = uring_checks();
    checks.push(verdict("UDP GSO (kernel)", &gso_kernel(), ""));
    checks.push(gso_loopback());
    match &name {
        Some(n) => checks.push(verdict("UDP GSO (device checksum offload)", &gso_iface(n), "")),
        None => {
            checks.push(check_line("UDP GSO (device checksum offload)", None, "not checked", "no --interface given"))
        }
    }
    checks.push(match crate::sys::probe::af_xdp_socket() {
        Ok(()) => {
            check_line("AF_XDP socket", Some(true), "yes", "socket(AF_XDP, SOCK_RAW, 0) succeeded (and was closed)")
        }
        Err(e) => check_line("AF_XDP socket", Some(false), "no", format!("socket(AF_XDP, SOCK_RAW, 0) failed: {e}")),
    });
    if let Some(i) = &iface {
        checks.extend(xdp_checks(i));
    } else {
        checks.push(check_line("XDP native", None, "not checked", "no --interface given"));
    }
    checks.push(btf_check());
    checks.extend(counter_feature_checks());
    checks.push(kfree_skb_check());
    let mtu = iface.as_ref().map(|i| i.mtu);
    let (engine, reason) = choose(&s, 8192.min(mtu.map_or(8192, |m| m as usize - crate::mcast::IP_UDP_OVERHEAD)), mtu, false);
    let out = ProbeOut {
        role: "probe",
        version: env!("CARGO_PKG_VERSION"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        interface: name,
        checks,
        auto_engine: engine.name().to_string(),
        auto_reason: reason,
    };
    Printer::new(json).print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The io_uring checks: whether a ring can be set up, and the operations and features the uring engine uses.
fn uring_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    match crate::sys::uring::probe() {
        Ok(p) => {
            checks.push(check_line("io_uring", Some(true), "yes", "io_uring_setup(8 entries) succeeded"));
            for (n, ok, op) in [
                ("io_uring IORING_OP_SENDMSG", p.sendmsg, "IORING_OP_SENDMSG"),
                ("io_uring IORING_OP_SEND_ZC", p.send_zc, "IORING_OP_SEND_ZC"),
                ("io_uring IORING_OP_SENDMSG_ZC", p.sendmsg_zc, "IORING_OP_SENDMSG_ZC"),
            ] {
                checks.push(check_line(
                    n,
                    Some(ok),
                    if ok { "yes" } else { "no" },
                    format!("IORING_REGISTER_PROBE lists {op} as {}", if ok { "supported" } else { "unsupported" }),
                ));
            }
            checks.push(check_line(
                "io_uring IORING_FEAT_EXT_ARG",
                Some(p.ext_arg),
                if p.ext_arg { "yes" } else { "no" },
                "io_uring_setup's feature flags (the uring engine needs bounded waits)",
            ));
        }
        Err(e) => checks.push(check_line(
            "io_uring",
            Some(false),
            "no",
            format!("io_uring_setup failed: {e}{}", io_uring_disabled_note()),
        )),
    }
    checks
}

impl Record for ProbeOut {
    const TYPE: &'static str = "probe";
    /// The probe's table as text: one line a check, then what `--engine auto` would use.
    fn human(&self) -> String {
        let mut t = format!(
            "mcblast probe: kernel {}, interface {}\n{:<36} {:<12} how\n",
            self.kernel,
            self.interface.as_deref().unwrap_or("(none: give --interface IF for the interface checks)"),
            "check",
            "result"
        );
        for c in &self.checks {
            t.push_str(&format!("{:<36} {:<12} {}\n", c.name, c.value, c.how));
        }
        t.push_str(&format!("{:<36} {:<12} {}", "send --engine auto would use", self.auto_engine, self.auto_reason));
        t
    }
}

/// A real two-segment GSO send over loopback, when loopback is up.
fn gso_loopback() -> Check {
    const NAME: &str = "UDP GSO (2-segment send on lo)";
    let up = std::fs::read_to_string("/sys/class/net/lo/operstate").map(|s| s.trim() != "down").unwrap_or(false);
    if !up {
        return check_line(NAME, None, "not tried", "loopback is down in this network namespace");
    }
    match gso_loopback_send() {
        Ok(()) => check_line(
            NAME,
            Some(true),
            "yes",
            "one sendmsg with a UDP_SEGMENT cmsg to 127.0.0.1 arrived as 2 datagrams",
        ),
        Err(e) => check_line(NAME, Some(false), "no", format!("sendmsg with a UDP_SEGMENT cmsg to 127.0.0.1: {e}")),
    }
}

fn gso_loopback_send() -> io::Result<()> {
    use std::net::UdpSocket;
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    rx.set_read_timeout(Some(std::time::Duration::from_millis(500)))?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(rx.local_addr()?)?;
    let mut b = crate::sys::gso::GsoBuf::new(&[0x42u8; 100], 2);
    b.send(&tx, 2)?;
    let mut buf = [0u8; 400];
    for _ in 0..2 {
        let n = rx.recv(&mut buf)?;
        if n != 100 {
            return Err(io::Error::other(format!("got a {n}-byte datagram, not 100")));
        }
    }
    Ok(())
}

/// What can be said about XDP on `i` without attaching anything.
fn xdp_checks(i: &crate::iface::Iface) -> Vec<Check> {
    let mut v = Vec::new();
    let drv = crate::sys::ethtool::driver(&i.name);
    let how_drv = match &drv {
        Ok(d) => format!("driver {d} (ETHTOOL_GDRVINFO)"),
        Err(e) => format!("ETHTOOL_GDRVINFO failed: {e}"),
    };
    v.push(check_line("interface driver", None, drv.as_deref().unwrap_or("unknown").to_string(), how_drv.clone()));
    v.push(check_line("interface MTU", None, i.mtu.to_string(), format!("/sys/class/net/{}/mtu", i.name)));
    let (native, limit, limit_how, how) = match drv.as_deref() {
        Ok("veth") => (
            Some(true),
            "~73 KB",
            "veth: one page less headroom (about 3.5 KB) for a single-buffer program, plus 17 pages for a \
             multi-buffer (frags) program such as mcblast's counter; from the driver name",
            "veth implements native XDP (since Linux 4.19); known from the driver name, nothing attached",
        ),
        Ok("virtio_net") if crate::sys::kfeatures::virtio_net_xdp_frags() => (
            Some(true),
            "~64 KB",
            "virtio_net builds multi-buffer XDP frames in this kernel (virtnet_build_xdp_buff_mrg in /proc/kallsyms)",
            "virtio_net implements native XDP; known from the driver name, nothing attached",
        ),
        Ok("virtio_net") => (
            Some(true),
            "< 4064 B",
            "virtio_net has no XDP multi-buffer in this kernel (no virtnet_build_xdp_buff_mrg in /proc/kallsyms): \
             a frame must fit one page, so native XDP needs an MTU below 4064; above it the counter uses tc ingress",
            "virtio_net implements native XDP; known from the driver name, nothing attached",
        ),
        Ok("ena") => (
            Some(true),
            "~3.5 KB",
            "ENA has no XDP multi-buffer: 8220-byte packets need generic XDP; from the driver name",
            "ENA implements native XDP; known from the driver name, nothing attached",
        ),
        _ => (
            None,
            "unknown",
            "known only for veth, virtio_net and ENA; nothing attached",
            "not attached (probe attaches nothing); `mcblast recv --xdp-mode native` tells",
        ),
    };
    v.push(check_line(
        "XDP native",
        native,
        match native {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        },
        how,
    ));
    v.push(check_line("XDP native MTU limit", None, limit, format!("{limit_how} ({how_drv})")));
    let bpf = std::path::Path::new("/sys/fs/bpf").exists() || std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    v.push(check_line(
        "XDP generic",
        Some(bpf),
        if bpf { "yes" } else { "unknown" },
        "generic XDP works on every interface of a kernel with BPF (/sys/fs/bpf or BTF present)",
    ));
    v
}

/// What the kernel counter uses where the kernel has it, and its fallback
/// (see `kfeatures`), as the counter itself probes them.
fn counter_feature_checks() -> Vec<Check> {
    let f = crate::sys::kfeatures::KernelFeatures::probe();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    vec![
        check_line(
            "tcx links (tc ingress)",
            Some(f.tcx),
            yes_no(f.tcx),
            if f.tcx {
                "BPF_TCX_INGRESS in the kernel's enum bpf_attach_type"
            } else {
                "no BPF_TCX_INGRESS in the kernel's BTF: the counter uses a classic clsact filter at tc ingress"
            },
        ),
        check_line(
            "XDP multi-buffer (frags)",
            Some(f.xdp_frags),
            yes_no(f.xdp_frags),
            if f.xdp_frags {
                "BPF_FUNC_xdp_load_bytes in the kernel's enum bpf_func_id"
            } else {
                "not in the kernel's BTF: the counter's XDP program sees one-buffer frames only (jumbo frames at tc)"
            },
        ),
        check_line(
            "bpf_ktime_get_tai_ns",
            Some(f.tai_helper),
            yes_no(f.tai_helper),
            if f.tai_helper {
                "BPF_FUNC_ktime_get_tai_ns in the kernel's enum bpf_func_id"
            } else {
                "not in the kernel's BTF: the counter reads the monotonic clock plus the TAI offset measured at attach"
            },
        ),
    ]
}

fn btf_check() -> Check {
    match std::fs::metadata("/sys/kernel/btf/vmlinux") {
        Ok(m) => check_line("BTF", Some(true), "yes", format!("/sys/kernel/btf/vmlinux exists ({} bytes)", m.len())),
        Err(e) => check_line("BTF", Some(false), "no", format!("/sys/kernel/btf/vmlinux: {e}")),
    }
}

/// The `skb:kfree_skb` tracepoint's format, from tracefs or debugfs.
fn kfree_skb_check() -> Check {
    const NAME: &str = "tracepoint skb:kfree_skb reason";
    for p in
        ["/sys/kernel/tracing/events/skb/kfree_skb/format", "/sys/kernel/debug/tracing/events/skb/kfree_skb/format"]
    {
        if let Ok(f) = std::fs::read_to_string(p) {
            let has = f.lines().any(|l| l.trim_start().starts_with("field:") && l.contains(" reason;"));
            return check_line(
                NAME,
                Some(has),
                if has { "yes" } else { "no" },
                if has {
                    format!("{p} has a `reason` field")
                } else {
                    format!("{p} has no `reason` field: the drop tracer names drops by the function that freed them")
                },
            );
        }
    }
    if std::path::Path::new("/sys/kernel/tracing/events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return check_line(NAME, Some(false), "no", "tracefs is mounted but has no skb/kfree_skb");
    }
    // No tracefs: the kernel's BTF has the tracepoint's typedef (what
    // tp_btf programs attach to) and the enum its `reason` field has.
    let no_tracefs = "tracefs is not mounted (/sys/kernel/tracing, /sys/kernel/debug/tracing)";
    match crate::sys::btf::Btf::from_kernel() {
        Ok(btf) => {
            let tp = btf.tracepoint_args("kfree_skb").is_ok();
            let reason = btf.enum_values("skb_drop_reason").is_ok();
            let ok = tp && reason;
            check_line(
                NAME,
                Some(ok),
                if ok { "yes" } else { "no" },
                format!(
                    "{no_tracefs}; kernel BTF {} typedef btf_trace_kfree_skb and {} enum skb_drop_reason",
                    if tp { "has" } else { "lacks" },
                    if reason { "has" } else { "lacks" }
                ),
            )
        }
        Err(e) => check_line(NAME, None, "unknown", format!("{no_tracefs}, and the kernel's BTF cannot be read: {e}")),
    }
}
