//! `mcblast preflight`: what on this host would spoil a test, each finding
//! ok / warn / fail with the measured value and the command that fixes it.
//! `mcblast run` runs it on every lab node before each case.
//!
//! Each check is a pure function of what was measured (unit-tested);
//! [`gather`] measures (sysctls of this network namespace, /proc/net/udp,
//! adjtimex, chronyc, the probes of [`crate::check::probe`]).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::iface::Iface;
use crate::output::Printer;

/// Which side this host plays (`preflight --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightRole {
    Send,
    Recv,
    Both,
}

/// A finding's verdict (ordered: the worst wins).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    /// What was measured.
    pub value: String,
    /// Why it matters.
    pub detail: String,
    /// The command (or flag) that fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn finding(check: &'static str, level: Level, value: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Finding {
    Finding { check, level, value: value.into(), detail: detail.into(), fix }
}

/// How long a reader may stall (scheduling, a busy CPU) without loss: the
/// socket buffer must hold this much of the stream.
pub const BURST_S: f64 = 0.1;
/// `mcblast recv`'s default `--rcvbuf`.
pub const DEFAULT_RCVBUF: u64 = 4 << 20;
/// One-way delays finer than this need a better clock than the one measured.
pub const MAX_CLOCK_ERROR_US: f64 = 100.0;

/// Payload vs MTU: a datagram over the MTU leaves in fragments, which AWS
/// TGW drops, and of which one lost loses the whole datagram.
pub fn check_mtu(iface: &str, mtu: u32, length: usize, sends: bool) -> Finding {
    let packet = length + crate::mcast::IP_UDP_OVERHEAD;
    let value = format!("{length}-byte datagrams = {packet}-byte IP packets, MTU {mtu} on {iface}");
    if packet <= mtu as usize {
        return finding("mtu", Level::Ok, value, "every datagram fits the MTU: no fragments", None);
    }
    // Fragment payloads are multiples of 8 bytes; the UDP header rides in the first.
    let per = (mtu as usize).saturating_sub(20) / 8 * 8;
    let frags = (length + 8).div_ceil(per.max(8));
    let max = (mtu as usize).saturating_sub(crate::mcast::IP_UDP_OVERHEAD);
    finding(
        "mtu",
        if sends { Level::Fail } else { Level::Warn },
        format!("{value}: {frags} fragments per datagram"),
        format!(
            "datagrams over the MTU fragment: AWS TGW drops fragmented multicast, one lost fragment loses the datagram, \
             and every fragment is one more packet for the path and the receiver{}",
            if sends { "; mcblast send refuses this without --allow-fragments" } else { "" }
        ),
        Some(format!("-l {max} (or raise the MTU: ip link set dev {iface} mtu {packet})")),
    )
}

/// The IGMP version the kernel uses on `iface`, from `force_igmp_version`
/// of the interface and of `all` (either forcing 1 or 2 wins; 0 = auto).
pub fn effective_igmp(dev: Option<i64>, all: Option<i64>) -> i64 {
    let (d, a) = (dev.unwrap_or(0), all.unwrap_or(0));
    if d == 1 || a == 1 {
        1
    } else if d == 2 || a == 2 {
        2
    } else {
        0
    }
}

/// `force_igmp_version` when the path only speaks IGMPv2 (`--igmp-version 2`, AWS TGW).
pub fn check_igmp(iface: &str, want: Option<u8>, dev: Option<i64>, all: Option<i64>) -> Finding {
    let eff = effective_igmp(dev, all);
    let show = |v: Option<i64>| v.map_or("?".into(), |v| v.to_string());
    let value = format!(
        "net.ipv4.conf.{iface}.force_igmp_version = {}, net.ipv4.conf.all.force_igmp_version = {} ({})",
        show(dev),
        show(all),
        match eff {
            0 => "IGMPv3, falling back when a v1/v2 querier is heard".to_string(),
            v => format!("IGMPv{v} forced"),
        }
    );
    match want {
        None | Some(3) => finding("igmp_version", Level::Ok, value, "no IGMP version asked (--igmp-version 2 for AWS TGW)", None),
        Some(w) if i64::from(w) == eff => finding("igmp_version", Level::Ok, value, format!("joins are IGMPv{w}, as the path needs"), None),
        Some(w) => finding(
            "igmp_version",
            Level::Fail,
            value,
            format!("the path only speaks IGMPv{w} (AWS TGW): IGMPv3 reports are ignored until a v{w} query arrives, so joins can be missed for minutes"),
            Some(format!("sysctl -w net.ipv4.conf.{iface}.force_igmp_version={w}")),
        ),
    }
}

/// Reverse-path filtering: strict mode drops multicast from sources the
/// host would not route back through `iface`.
pub fn check_rp_filter(iface: &str, dev: Option<i64>, all: Option<i64>) -> Finding {
    let eff = dev.unwrap_or(0).max(all.unwrap_or(0));
    let value = format!(
        "net.ipv4.conf.{iface}.rp_filter = {}, net.ipv4.conf.all.rp_filter = {} (effective {eff})",
        dev.map_or("?".into(), |v| v.to_string()),
        all.map_or("?".into(), |v| v.to_string())
    );
    if eff == 1 {
        finding(
            "rp_filter",
            Level::Warn,
            value,
            format!("strict reverse-path filtering drops datagrams from senders not routed back through {iface} (kernel drops, reason IP_RPFILTER); loose mode (2) or off (0) does not"),
            Some(format!("sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{iface}.rp_filter=2")),
        )
    } else {
        finding("rp_filter", Level::Ok, value, if eff == 2 { "loose mode: any route back will do" } else { "off" }, None)
    }
}

/// Other sockets on the port: with IP_MULTICAST_ALL on (the Linux default)
/// each gets a copy of every group joined on the host; mcblast turns it
/// off on its own socket (`mcblast_off`, read back from a socket it made).
pub fn check_multicast_all(port: u16, mcblast_off: Option<bool>, others: Option<usize>) -> Finding {
    let own = match mcblast_off {
        Some(true) => "mcblast's receive socket has IP_MULTICAST_ALL off",
        Some(false) => "mcblast's receive socket has IP_MULTICAST_ALL ON",
        None => "mcblast's receive socket could not be checked",
    };
    let value = format!("{own}; other UDP sockets on port {port}: {}", others.map_or("?".into(), |n| n.to_string()));
    match (mcblast_off, others) {
        (Some(false), _) => finding(
            "ip_multicast_all",
            Level::Fail,
            value,
            "the socket counter would count groups other programs joined",
            Some("report a bug: mcblast sets IP_MULTICAST_ALL=0 on its receive socket".into()),
        ),
        (_, Some(n)) if n > 0 => finding(
            "ip_multicast_all",
            Level::Warn,
            value,
            format!("{n} other socket(s) on the port each take a copy of every datagram to groups joined on this host while their IP_MULTICAST_ALL is on (the default), costing CPU and buffer memory beside the test"),
            Some(format!("ss -ulpn 'sport = :{port}' shows them: stop them, or test on another port (-p)")),
        ),
        _ => finding("ip_multicast_all", Level::Ok, value, "no other socket shares the port", None),
    }
}

/// The socket buffer a `rate_bps` stream needs to ride out a [`BURST_S`] stall.
pub fn buffer_for(rate_bps: f64) -> u64 {
    ((rate_bps / 8.0 * BURST_S).ceil() as u64).div_ceil(1 << 20) << 20
}

/// Receive buffer: at `rate_bps`, a [`BURST_S`] stall of the reader must
/// fit. As root mcblast forces its buffer past `rmem_max`.
pub fn check_rcvbuf(rate_bps: Option<f64>, rmem_max: Option<u64>, privileged: bool) -> Finding {
    let need = rate_bps.map(buffer_for);
    let want = need.unwrap_or(0).max(DEFAULT_RCVBUF);
    let value = format!(
        "net.core.rmem_max = {}{}; {}",
        rmem_max.map_or("?".into(), |v| v.to_string()),
        need.map_or(String::new(), |n| format!(", {} s at {} needs {n} bytes", BURST_S, crate::output::fmt_bps(rate_bps.unwrap_or(0.0)))),
        if privileged { "privileged: mcblast forces its buffer past rmem_max" } else { "not privileged: rmem_max caps the buffer" }
    );
    let mut fixes = Vec::new();
    if need.is_some_and(|n| n > DEFAULT_RCVBUF) {
        fixes.push(format!("mcblast recv --rcvbuf {want}"));
    }
    if !privileged && rmem_max.is_none_or(|m| m < want) {
        fixes.push(format!("sysctl -w net.core.rmem_max={want}"));
    }
    if fixes.is_empty() {
        finding("rcvbuf", Level::Ok, value, "the socket counter's buffer holds a stall of the reader", None)
    } else {
        finding(
            "rcvbuf",
            Level::Warn,
            value,
            format!("a smaller buffer overflows when the reader stalls {} ms: socket drops that are not path loss", BURST_S * 1e3),
            Some(fixes.join("; ")),
        )
    }
}

/// Send buffer: mcblast asks for [`crate::send::SNDBUF`] (forced as root);
/// a smaller one only costs speed (the sender blocks), so at most a warning.
pub fn check_sndbuf(wmem_max: Option<u64>, privileged: bool) -> Finding {
    let want = crate::send::SNDBUF as u64;
    let value = format!("net.core.wmem_max = {}", wmem_max.map_or("?".into(), |v| v.to_string()));
    if privileged || wmem_max.is_some_and(|m| m >= want) {
        finding("sndbuf", Level::Ok, value, format!("the sender gets its {want}-byte send buffer"), None)
    } else {
        finding(
            "sndbuf",
            Level::Warn,
            value,
            "not privileged and wmem_max caps the send buffer: the sender blocks more often and bursts less",
            Some(format!("sysctl -w net.core.wmem_max={want}")),
        )
    }
}

/// Groups one socket may join (`net.ipv4.igmp_max_memberships`).
pub fn check_memberships(groups: usize, max: Option<i64>) -> Finding {
    let value = format!("{groups} group(s), net.ipv4.igmp_max_memberships = {}", max.map_or("?".into(), |v| v.to_string()));
    match max {
        Some(m) if (groups as i64) > m => finding(
            "igmp_max_memberships",
            Level::Fail,
            value,
            "the join beyond the limit fails (ENOBUFS)",
            Some(format!("sysctl -w net.ipv4.igmp_max_memberships={groups}")),
        ),
        _ => finding("igmp_max_memberships", Level::Ok, value, "every group can be joined", None),
    }
}

/// Whether one-way delays between hosts can be trusted: the kernel clock
/// synchronised, with an error (chrony's offset, else adjtimex's estimate)
/// under [`MAX_CLOCK_ERROR_US`].
pub fn check_clock(synced: bool, esterror_us: Option<i64>, chrony_offset_s: Option<f64>) -> Finding {
    let err_us = chrony_offset_s.map(|o| o.abs() * 1e6).or(esterror_us.map(|e| e as f64));
    let value = format!(
        "kernel clock {}{}{}",
        if synced { "synchronised" } else { "NOT synchronised (adjtimex STA_UNSYNC or TIME_ERROR)" },
        esterror_us.map_or(String::new(), |e| format!(", estimated error {e} µs")),
        chrony_offset_s.map_or(String::new(), |o| format!(", chrony offset {:.1} µs", o * 1e6))
    );
    let fix = "apt-get install chrony && systemctl enable --now chrony (or ptp4l + phc2sys; on AWS the Time Sync Service), then chronyc tracking";
    if !synced {
        return finding(
            "clock",
            Level::Warn,
            value,
            "one-way delay between hosts is not trusted (it is within one host, and in the lab, where every node shares the clock)",
            Some(fix.into()),
        );
    }
    match err_us {
        Some(e) if e > MAX_CLOCK_ERROR_US => finding(
            "clock",
            Level::Warn,
            value,
            format!("the clock is off by about {e:.0} µs: one-way delays below that are noise"),
            Some(format!("wait for chrony to converge, or use PTP: {fix}")),
        ),
        _ => finding("clock", Level::Ok, value, "one-way delay between synchronised hosts is trusted", None),
    }
}

/// The receiver's kernel counter: native XDP where the driver has it, the
/// datagram within the native MTU limit, BTF for the drop tracer.
pub fn check_xdp(driver: Result<&str, &str>, length: usize, btf: bool) -> Finding {
    let value = format!("driver {}; kernel BTF {}", driver.unwrap_or_else(|e| e), if btf { "present" } else { "absent" });
    if !btf {
        return finding(
            "xdp",
            Level::Warn,
            value,
            "without /sys/kernel/btf/vmlinux there is no drop tracer: no loss attribution (the counters still run)",
            Some("use a kernel built with CONFIG_DEBUG_INFO_BTF=y".into()),
        );
    }
    match driver {
        Ok("veth") => finding("xdp", Level::Ok, value, "native XDP (veth), multi-buffer up to ~73 KB frames", None),
        Ok("ena") if length + 42 > 3498 => finding(
            "xdp",
            Level::Warn,
            value,
            format!("ENA's native XDP has no multi-buffer: {length}-byte datagrams do not fit (~3.5 KB); the counter falls back to generic XDP"),
            Some("mcblast recv --xdp-mode tc (or generic), or -l 3456".into()),
        ),
        Ok("ena") => finding("xdp", Level::Ok, value, "native XDP (ENA)", None),
        _ => finding(
            "xdp",
            Level::Warn,
            value,
            "native XDP support of this driver is not known: recv --xdp-mode auto says which attach point it got",
            Some("mcblast probe -I IF; mcblast recv --xdp-mode tc works on any device (Linux 6.6+)".into()),
        ),
    }
}

/// AF_XDP for `send --engine xdp` (only that engine needs it).
pub fn check_af_xdp(result: Result<(), String>) -> Finding {
    match result {
        Ok(()) => finding("af_xdp", Level::Ok, "socket(AF_XDP) works", "send --engine xdp can run", None),
        Err(e) => finding(
            "af_xdp",
            Level::Warn,
            format!("socket(AF_XDP) failed: {e}"),
            "send --engine xdp cannot run here (the other engines can)",
            Some("run as root on a kernel with CONFIG_XDP_SOCKETS=y".into()),
        ),
    }
}

/// The whole report.
#[derive(Serialize, Debug)]
pub struct PreflightReport {
    pub role: &'static str,
    pub interface: String,
    pub findings: Vec<Finding>,
    pub worst: Level,
}

fn sysctl_int(key: &str) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))).ok()?.trim().parse().ok()
}

/// chrony's current offset in seconds (`chronyc -c tracking`, field 5), when chrony runs.
fn chrony_offset() -> Option<f64> {
    let o = std::process::Command::new("chronyc").args(["-c", "tracking"]).output().ok()?;
    if !o.status.success() {
        return None;
    }
    String::from_utf8_lossy(&o.stdout).split(',').nth(4)?.trim().parse().ok()
}

/// IP_MULTICAST_ALL of the receive socket mcblast makes (on an ephemeral port).
fn mcblast_socket_multicast_all_off() -> Option<bool> {
    let (fd, _) = crate::sys::net::recv_socket(&crate::sys::net::RecvSocketOpts { port: 0, rcvbuf: 4096 }).ok()?;
    crate::sys::getsockopt_int(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL).ok().map(|v| v == 0)
}

/// What `mcblast preflight` checks (resolved from its flags in `commands/check.rs`).
#[derive(Debug, Clone)]
pub struct PreflightPlan {
    /// The interface checked.
    pub iface: Iface,
    /// The test's multicast groups (non-empty).
    pub groups: Vec<std::net::Ipv4Addr>,
    /// The UDP port the test uses.
    pub port: u16,
    /// The datagram length the test sends.
    pub length: usize,
    /// The test's rate in bit/s, for the socket buffer sizes.
    pub rate: Option<f64>,
    pub role: PreflightRole,
    /// The IGMP version the path speaks, if given.
    pub igmp_version: Option<u8>,
}

/// Measures and checks.
pub fn gather(a: &PreflightPlan) -> Result<PreflightReport> {
    let iface = &a.iface;
    let (sends, recvs) = match a.role {
        PreflightRole::Send => (true, false),
        PreflightRole::Recv => (false, true),
        PreflightRole::Both => (true, true),
    };
    let privileged = crate::sys::has_capability(12);
    let n = &iface.name;
    let mut f = vec![check_mtu(n, iface.mtu, a.length, sends)];
    if recvs {
        f.push(check_igmp(
            n,
            a.igmp_version,
            sysctl_int(&format!("net.ipv4.conf.{n}.force_igmp_version")),
            sysctl_int("net.ipv4.conf.all.force_igmp_version"),
        ));
        f.push(check_rp_filter(n, sysctl_int(&format!("net.ipv4.conf.{n}.rp_filter")), sysctl_int("net.ipv4.conf.all.rp_filter")));
        f.push(check_multicast_all(a.port, mcblast_socket_multicast_all_off(), crate::sys::net::udp_sockets_on(a.port)));
        f.push(check_memberships(a.groups.len(), sysctl_int("net.ipv4.igmp_max_memberships")));
        f.push(check_rcvbuf(a.rate, sysctl_int("net.core.rmem_max").map(|v| v.max(0) as u64), privileged));
    }
    if sends {
        f.push(check_sndbuf(sysctl_int("net.core.wmem_max").map(|v| v.max(0) as u64), privileged));
    }
    f.push(check_clock(
        crate::clock::synchronized(),
        crate::sys::clock_error_us().ok().map(|(e, _)| e),
        chrony_offset(),
    ));
    if recvs {
        let drv = crate::sys::ethtool::driver(n).map_err(|e| format!("unknown (ETHTOOL_GDRVINFO: {e})"));
        f.push(check_xdp(drv.as_deref().map_err(String::as_str), a.length, Path::new("/sys/kernel/btf/vmlinux").exists()));
    }
    if sends {
        f.push(check_af_xdp(crate::sys::probe::af_xdp_socket().map_err(|e| e.to_string())));
    }
    let worst = f.iter().map(|x| x.level).max().unwrap_or(Level::Ok);
    Ok(PreflightReport {
        role: match a.role {
            PreflightRole::Send => "send",
            PreflightRole::Recv => "recv",
            PreflightRole::Both => "both",
        },
        interface: iface.name.clone(),
        findings: f,
        worst,
    })
}

/// The human text.
impl crate::output::Record for PreflightReport {
    const TYPE: &'static str = "preflight";
    fn human(&self) -> String {
        human(self)
    }
}

pub fn human(r: &PreflightReport) -> String {
    let mut t = format!("mcblast preflight on {} (role {}): {}\n", r.interface, r.role, r.worst.name());
    for f in &r.findings {
        t.push_str(&format!("{:<5} {:<20} {}\n      {}\n", f.level.name(), f.check, f.value, f.detail));
        if let Some(fix) = &f.fix {
            t.push_str(&format!("      fix: {fix}\n"));
        }
    }
    t.pop();
    t
}

/// Runs `mcblast preflight`: exit 0 with only ok/warn, 1 with a fail.
pub fn run(a: &PreflightPlan, json: bool) -> Result<ExitCode> {
    let r = gather(a)?;
    let mut out = Printer::new(json);
    out.print(&r)?;
    Ok(if r.worst == Level::Fail { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `mcblast run`'s check before each case: `mcblast preflight --json` with
/// `args` on the sender (role send) and each receiver (role recv); each
/// node's JSON goes to `raw/{base}-preflight-{node}.json`, warnings are
/// printed once, and a fail stops the case with its fix.
pub fn before_case(lab: &crate::lab::Lab, receivers: &[String], args: &[String], raw: &Path, base: &str) -> Result<()> {
    let node = |name: &str, role: &'static str| {
        let name = name.to_string();
        let n = name.clone();
        CheckNode {
            name,
            role,
            interface: Some(crate::lab::NODE_IF.to_string()),
            command: Box::new(move |a: &[String]| {
                let argv: Vec<String> = std::iter::once("mcblast".to_string()).chain(a.iter().cloned()).collect();
                lab.exec_cmd(&n, &argv)
            }),
        }
    };
    let nodes: Vec<CheckNode> =
        std::iter::once(node(crate::lab::SENDER, "send")).chain(receivers.iter().map(|r| node(r, "recv"))).collect();
    before_case_on(&nodes, args, raw, base)
}

/// A node `mcblast run` checks before a case: its name, role, the interface
/// to check (None: the route's), and how to run `mcblast ARGS` there (the
/// lab's `ip netns exec` or ssh).
pub struct CheckNode<'a> {
    pub name: String,
    pub role: &'static str,
    pub interface: Option<String>,
    pub command: Box<dyn Fn(&[String]) -> std::process::Command + 'a>,
}

/// [`before_case`] on any nodes: runs `mcblast preflight --json` on each,
/// keeps every report as `raw/BASE-preflight-NODE.json`, prints each warning
/// once (with the nodes that reported it), and fails on a fail.
pub fn before_case_on(nodes: &[CheckNode], args: &[String], raw: &Path, base: &str) -> Result<()> {
    // (level, check, value, fix) -> the nodes that reported it: one line per finding, not per node.
    type Key = (String, String, String, String);
    let mut seen: Vec<(Key, Vec<String>)> = Vec::new();
    for n in nodes {
        let node = &n.name;
        let mut argv: Vec<String> = ["preflight", "--json", "--role", n.role].iter().map(|s| s.to_string()).collect();
        if let Some(i) = &n.interface {
            argv.extend(["-I".to_string(), i.clone()]);
        }
        argv.extend(args.iter().cloned());
        let o = (n.command)(&argv).output().with_context(|| format!("{node}: running mcblast preflight"))?;
        let text = String::from_utf8_lossy(&o.stdout);
        std::fs::write(raw.join(format!("{base}-preflight-{node}.json")), text.as_bytes())?;
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .ok()
            .filter(|v: &serde_json::Value| v["type"] == "preflight")
            .ok_or_else(|| {
                let why = if o.stderr.is_empty() { text.trim().to_string() } else { String::from_utf8_lossy(&o.stderr).trim().to_string() };
                anyhow!("{node}: mcblast preflight failed: {why}")
            })?;
        for f in v["findings"].as_array().into_iter().flatten() {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            if s("level") == "ok" {
                continue;
            }
            let key = (s("level"), s("check"), s("value"), s("fix"));
            match seen.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => n.push(node.clone()),
                None => seen.push((key, vec![node.clone()])),
            }
        }
    }
    let line = |(level, check, value, fix): &Key, nodes: &[String]| {
        let fix = if fix.is_empty() { String::new() } else { format!(" (fix: {fix})") };
        format!("preflight {level} on {}: {check}: {value}{fix}", nodes.join(","))
    };
    for (k, n) in seen.iter().filter(|(k, _)| k.0 == "warn") {
        eprintln!("\n{}", line(k, n));
    }
    let fails: Vec<String> = seen.iter().filter(|(k, _)| k.0 == "fail").map(|(k, n)| line(k, n)).collect();
    if !fails.is_empty() {
        bail!("{}", fails.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_counts_fragments_and_fails_only_for_senders() {
        assert_eq!(check_mtu("eth0", 9000, 8972, true).level, Level::Ok);
        let f = check_mtu("eth0", 1500, 8192, true);
        // 8200 bytes of UDP in 1480-byte fragment payloads: 6 fragments.
        assert_eq!(f.level, Level::Fail);
        assert!(f.value.contains("6 fragments"), "{}", f.value);
        assert!(f.fix.as_deref().unwrap().starts_with("-l 1472"), "{:?}", f.fix);
        assert_eq!(check_mtu("eth0", 1500, 8192, false).level, Level::Warn);
        assert!(check_mtu("eth0", 8500, 8473, true).value.contains("2 fragments"));
        assert_eq!(check_mtu("eth0", 8500, 8472, true).level, Level::Ok);
    }

    #[test]
    fn igmp_version_forced_on_the_device_or_all() {
        assert_eq!(effective_igmp(Some(0), Some(0)), 0);
        assert_eq!(effective_igmp(Some(2), Some(0)), 2);
        assert_eq!(effective_igmp(Some(0), Some(2)), 2);
        assert_eq!(effective_igmp(Some(2), Some(1)), 1);
        let f = check_igmp("eth0", Some(2), Some(0), Some(0));
        assert_eq!(f.level, Level::Fail);
        assert_eq!(f.fix.as_deref(), Some("sysctl -w net.ipv4.conf.eth0.force_igmp_version=2"));
        assert_eq!(check_igmp("eth0", Some(2), Some(0), Some(2)).level, Level::Ok);
        assert_eq!(check_igmp("eth0", Some(2), Some(1), Some(0)).level, Level::Fail);
        assert_eq!(check_igmp("eth0", None, Some(0), Some(0)).level, Level::Ok);
    }

    #[test]
    fn rp_filter_strict_warns() {
        let f = check_rp_filter("eth0", Some(1), Some(0));
        assert_eq!(f.level, Level::Warn);
        assert!(f.fix.unwrap().contains("net.ipv4.conf.eth0.rp_filter=2"));
        assert_eq!(check_rp_filter("eth0", Some(0), Some(1)).level, Level::Warn);
        assert_eq!(check_rp_filter("eth0", Some(2), Some(0)).level, Level::Ok);
        assert_eq!(check_rp_filter("eth0", Some(0), Some(0)).level, Level::Ok);
    }

    #[test]
    fn other_sockets_on_the_port() {
        assert_eq!(check_multicast_all(5001, Some(true), Some(0)).level, Level::Ok);
        let f = check_multicast_all(5001, Some(true), Some(2));
        assert_eq!(f.level, Level::Warn);
        assert!(f.fix.unwrap().contains("sport = :5001"));
        assert_eq!(check_multicast_all(5001, Some(false), Some(0)).level, Level::Fail);
    }

    #[test]
    fn buffers_from_rate_times_burst() {
        // 1 Gbit/s for 100 ms: 12.5 MB, rounded up to whole MiB.
        assert_eq!(buffer_for(1e9), 12 << 20);
        assert_eq!(buffer_for(1e9 + 1e8), 14 << 20);
        let f = check_rcvbuf(Some(1e9), Some(4 << 20), false);
        assert_eq!(f.level, Level::Warn);
        assert_eq!(
            f.fix.as_deref(),
            Some("mcblast recv --rcvbuf 12582912; sysctl -w net.core.rmem_max=12582912")
        );
        assert_eq!(check_rcvbuf(Some(1e9), Some(4 << 20), true).fix.as_deref(), Some("mcblast recv --rcvbuf 12582912"));
        assert_eq!(check_rcvbuf(Some(100e6), Some(4 << 20), false).level, Level::Ok);
        let f = check_rcvbuf(None, Some(212_992), false);
        assert_eq!(f.fix.as_deref(), Some("sysctl -w net.core.rmem_max=4194304"));
        assert_eq!(check_rcvbuf(None, Some(212_992), true).level, Level::Ok);
        assert_eq!(check_sndbuf(Some(212_992), false).level, Level::Warn);
        assert_eq!(check_sndbuf(Some(212_992), true).level, Level::Ok);
    }

    #[test]
    fn memberships() {
        assert_eq!(check_memberships(20, Some(20)).level, Level::Ok);
        let f = check_memberships(21, Some(20));
        assert_eq!(f.level, Level::Fail);
        assert_eq!(f.fix.as_deref(), Some("sysctl -w net.ipv4.igmp_max_memberships=21"));
    }

    #[test]
    fn clock_sync_and_error() {
        assert_eq!(check_clock(false, Some(16_000_000), None).level, Level::Warn);
        assert_eq!(check_clock(true, Some(20), None).level, Level::Ok);
        assert_eq!(check_clock(true, Some(500), None).level, Level::Warn);
        // chrony's offset is preferred to the kernel's estimate.
        assert_eq!(check_clock(true, Some(500), Some(-0.000_012)).level, Level::Ok);
        assert_eq!(check_clock(true, Some(5), Some(0.002)).level, Level::Warn);
    }

    #[test]
    fn xdp_by_driver_and_length() {
        assert_eq!(check_xdp(Ok("veth"), 8192, true).level, Level::Ok);
        assert_eq!(check_xdp(Ok("ena"), 1400, true).level, Level::Ok);
        assert!(check_xdp(Ok("ena"), 8192, true).fix.unwrap().contains("--xdp-mode tc"));
        assert_eq!(check_xdp(Ok("mlx5_core"), 1400, true).level, Level::Warn);
        assert_eq!(check_xdp(Ok("veth"), 1400, false).level, Level::Warn);
        assert_eq!(check_af_xdp(Err("EPERM".into())).level, Level::Warn);
        assert_eq!(check_af_xdp(Ok(())).level, Level::Ok);
    }
}
