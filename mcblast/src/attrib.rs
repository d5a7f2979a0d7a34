//! Loss attribution: where every data datagram of the run went, layer by
//! layer, from what the receiver measured:
//!
//! ```text
//! expected (the senders' counts, from end markers)
//!   - lost on the path            sequence gaps at the driver (XDP counter)
//!   + duplicates                  (the path delivered some twice)
//! = reached the driver            XDP counter's received
//!   - sunk                        --sink: dropped by the counter itself, by design (not loss)
//!   - dropped in the kernel       drop tracer (kfree_skb), by reason
//!   - freed without a reason      drop tracer, NOT_SPECIFIED
//!   - no listener                 drop tracer, NO_SOCKET (not loss: nobody bound the port)
//! = delivered to the socket
//!   - dropped at the socket       drop tracer, SOCKET_RCVBUFF / PROTO_MEM (cross-check: SO_RXQ_OVFL)
//!   - unread at close             drop tracer, SOCKET_CLOSE / QUEUE_PURGE
//!   - read by the application     socket counter's received
//! = unaccounted                   0 when it adds up
//! ```
//! Reason names come from the running kernel's `enum skb_drop_reason`
//! (BTF); the layer of a reason is decided by its name.

use std::collections::BTreeMap;

use anyhow::Result;
use mcblast_common::maps::{DropClass, DropKey};
use serde::Serialize;

use crate::btf::Btf;

/// `SKB_DROP_REASON_SUBSYS_MASK`: reasons of a subsystem carry its number in the high bits.
const SUBSYS_SHIFT: u32 = 16;

/// The names of the running kernel's drop reasons.
#[derive(Debug, Clone, Default)]
pub struct ReasonNames {
    names: BTreeMap<u32, String>,
    subsystems: BTreeMap<u32, String>,
}

impl ReasonNames {
    /// From `enum skb_drop_reason` (and `enum skb_drop_reason_subsys`, when
    /// present) of the kernel's BTF.
    pub fn from_btf(btf: &Btf) -> Result<ReasonNames> {
        let short = |n: &str| n.strip_prefix("SKB_DROP_REASON_").or_else(|| n.strip_prefix("SKB_")).unwrap_or(n).to_string();
        let names = btf.enum_values("skb_drop_reason")?.into_iter().map(|(v, n)| (v as u32, short(&n))).collect();
        let subsystems = btf
            .enum_values("skb_drop_reason_subsys")
            .unwrap_or_default()
            .into_iter()
            .map(|(v, n)| (v as u32, n.strip_prefix("SKB_DROP_REASON_SUBSYS_").unwrap_or(&n).to_string()))
            .collect();
        Ok(ReasonNames { names, subsystems })
    }

    #[cfg(test)]
    fn from_pairs(pairs: &[(u32, &str)]) -> ReasonNames {
        ReasonNames { names: pairs.iter().map(|(v, n)| (*v, n.to_string())).collect(), subsystems: BTreeMap::new() }
    }

    /// The value of a reason, by its short name.
    pub fn value(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }

    /// The reason's name without the `SKB_DROP_REASON_` prefix, e.g. `NETFILTER_DROP`.
    pub fn name(&self, reason: u32) -> String {
        if let Some(n) = self.names.get(&reason) {
            return n.clone();
        }
        let sub = reason >> SUBSYS_SHIFT;
        if sub != 0 {
            let s = self.subsystems.get(&sub).cloned().unwrap_or_else(|| format!("SUBSYS_{sub}"));
            return format!("{s}:{}", reason & 0xffff);
        }
        format!("REASON_{reason}")
    }
}

/// The layer a dropped datagram is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The host's network stack (netfilter, IP, UDP checks, backlog, ...).
    Kernel,
    /// Freed with `kfree_skb` and no reason (`NOT_SPECIFIED`).
    Unspecified,
    /// No socket bound to the port (not loss).
    NoListener,
    /// The socket's receive buffer or the UDP memory limit.
    Socket,
    /// Queued in the socket but still unread when it closed.
    Unread,
}

impl Layer {
    /// The layer of a drop reason, by its (short) name, and for
    /// NOT_SPECIFIED the function that freed the datagram.
    pub fn of(reason: &str, function: Option<&str>) -> Layer {
        match reason {
            // A multicast datagram no socket wants is freed with plain
            // kfree_skb() in __udp4_lib_mcast_deliver (inlined into
            // __udp4_lib_rcv); Udp IgnoredMulti counts it as well.
            "NOT_SPECIFIED" if matches!(function, Some("__udp4_lib_mcast_deliver" | "__udp4_lib_rcv")) => {
                Layer::NoListener
            }
            "NOT_SPECIFIED" => Layer::Unspecified,
            "NO_SOCKET" => Layer::NoListener,
            "SOCKET_RCVBUFF" | "PROTO_MEM" => Layer::Socket,
            "SOCKET_CLOSE" | "QUEUE_PURGE" => Layer::Unread,
            _ => Layer::Kernel,
        }
    }
}

/// One drop reason's counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReasonCount {
    pub reason: String,
    /// For NOT_SPECIFIED: the kernel function that freed the datagrams (from /proc/kallsyms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub layer: Layer,
    /// mcblast data datagrams of the counted flows.
    pub data: u64,
    /// Their end-of-flow markers.
    pub end: u64,
    /// Other datagrams to the port (not mcblast, other runs or groups, unreadable).
    pub other: u64,
    /// First IPv4 fragments to the port.
    pub fragments: u64,
}

/// Totals of the run the waterfall is computed from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    /// Σ expected over the kernel counter's flows.
    pub expected: u64,
    /// Σ received (kernel counter).
    pub at_driver: u64,
    /// Σ lost (kernel counter).
    pub path_lost: u64,
    /// Σ duplicates + stale (kernel counter).
    pub path_duplicates: u64,
    /// Σ received (socket counter).
    pub read: u64,
    /// The socket's SO_RXQ_OVFL count at the end.
    pub so_rxq_ovfl: u64,
    /// First IPv4 fragments of datagrams to the port seen at the driver.
    pub fragments: u64,
    /// `--sink`: data datagrams the kernel counter dropped after counting them.
    pub sunk: u64,
}

/// The waterfall of one receiver's run (JSON: the `layers` summary line).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Layers {
    pub expected: u64,
    pub path_lost: u64,
    pub path_duplicates: u64,
    pub reached_driver: u64,
    /// `--sink`: data datagrams the kernel counter dropped itself after
    /// counting them (XDP_DROP), by design: not loss. 0 without --sink.
    pub sunk: u64,
    pub kernel_dropped: u64,
    pub unspecified: u64,
    pub no_listener: u64,
    pub delivered_to_socket: i64,
    pub socket_dropped: u64,
    pub unread_at_close: u64,
    pub read: u64,
    /// delivered_to_socket − socket_dropped − unread_at_close − read: 0 when it adds up.
    pub unaccounted: i64,
    pub adds_up: bool,
    /// The socket's own drop counter (SO_RXQ_OVFL), every datagram to the port included.
    pub so_rxq_ovfl: u64,
    /// Datagrams that arrived fragmented (first fragments at the driver):
    /// the XDP counter cannot follow them, so they look lost on the path and
    /// the waterfall cannot add up (`adds_up` is false).
    pub fragments: u64,
    /// Every reason the drop tracer saw for datagrams to the port.
    pub reasons: Vec<ReasonCount>,
    /// Kernel counters read at start and end (deltas); null when unreadable.
    pub host: crate::attrib::HostDeltas,
    /// Where the kernel counter ran, for the human table ("XDP" or "tc ingress").
    #[serde(skip)]
    pub counted_at: &'static str,
}

/// Groups the tracer's counts by reason (and, where the tracer recorded
/// it, the function that freed the datagram, resolved by `symbol`).
pub fn reason_counts(
    drops: &BTreeMap<DropKey, u64>,
    names: &ReasonNames,
    symbol: impl Fn(u64) -> Option<String>,
) -> Vec<ReasonCount> {
    let mut by: BTreeMap<(u32, Option<String>), ReasonCount> = BTreeMap::new();
    for (k, &n) in drops {
        let function = if k.location == 0 { None } else { Some(symbol(k.location).unwrap_or_else(|| format!("{:#x}", k.location))) };
        let e = by.entry((k.reason, function.clone())).or_insert_with(|| {
            let reason = names.name(k.reason);
            ReasonCount { layer: Layer::of(&reason, function.as_deref()), reason, function, data: 0, end: 0, other: 0, fragments: 0 }
        });
        match DropClass::from_u32(k.class) {
            Some(DropClass::Data) => e.data += n,
            Some(DropClass::End) => e.end += n,
            Some(DropClass::Fragment) => e.fragments += n,
            Some(DropClass::Other) | None => e.other += n,
        }
    }
    let mut v: Vec<_> = by.into_values().collect();
    v.sort_by(|a, b| (a.layer, std::cmp::Reverse(a.data), &a.reason).cmp(&(b.layer, std::cmp::Reverse(b.data), &b.reason)));
    v
}

/// Data datagrams the drop tracer charged to each layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerDrops {
    pub kernel: u64,
    pub unspecified: u64,
    pub no_listener: u64,
    pub socket: u64,
    pub unread: u64,
}

impl LayerDrops {
    pub fn of(reasons: &[ReasonCount]) -> LayerDrops {
        let data = |l: Layer| reasons.iter().filter(|r| r.layer == l).map(|r| r.data).sum::<u64>();
        LayerDrops {
            kernel: data(Layer::Kernel),
            unspecified: data(Layer::Unspecified),
            no_listener: data(Layer::NoListener),
            socket: data(Layer::Socket),
            unread: data(Layer::Unread),
        }
    }

    /// The change since `prev` (counts only grow).
    pub fn since(&self, prev: &LayerDrops) -> LayerDrops {
        LayerDrops {
            kernel: self.kernel.saturating_sub(prev.kernel),
            unspecified: self.unspecified.saturating_sub(prev.unspecified),
            no_listener: self.no_listener.saturating_sub(prev.no_listener),
            socket: self.socket.saturating_sub(prev.socket),
            unread: self.unread.saturating_sub(prev.unread),
        }
    }
}

/// Computes the waterfall.
pub fn layers(m: &Measured, reasons: Vec<ReasonCount>, host: HostDeltas) -> Layers {
    let LayerDrops { kernel, unspecified, no_listener, socket, unread } = LayerDrops::of(&reasons);
    let delivered = m.at_driver as i64 - (m.sunk + kernel + unspecified + no_listener) as i64;
    let unaccounted = delivered - (socket + unread + m.read) as i64;
    Layers {
        expected: m.expected,
        path_lost: m.path_lost,
        path_duplicates: m.path_duplicates,
        reached_driver: m.at_driver,
        sunk: m.sunk,
        kernel_dropped: kernel,
        unspecified,
        no_listener,
        delivered_to_socket: delivered,
        socket_dropped: socket,
        unread_at_close: unread,
        read: m.read,
        unaccounted,
        adds_up: unaccounted == 0
            && m.fragments == 0
            && m.expected + m.path_duplicates == m.at_driver + m.path_lost,
        so_rxq_ovfl: m.so_rxq_ovfl,
        fragments: m.fragments,
        reasons,
        host,
        counted_at: "XDP",
    }
}

/// The human table of a waterfall.
pub fn human(l: &Layers) -> String {
    let mut t = String::from("--- where the data datagrams went (all flows) ---\n");
    let row = |t: &mut String, label: &str, n: String, note: &str| {
        t.push_str(&format!("{label:<34} {n:>10}{}{note}\n", if note.is_empty() { "" } else { "  " }));
    };
    let by = |t: &mut String, layer: Layer| {
        for r in l.reasons.iter().filter(|r| r.layer == layer && r.data > 0) {
            let f = r.function.as_ref().map(|f| format!("in {f}")).unwrap_or_default();
            row(t, &format!("      {}", r.reason), r.data.to_string(), &f);
        }
    };
    row(&mut t, "sent (senders' end markers)", l.expected.to_string(), "");
    row(&mut t, "  - lost on the path", l.path_lost.to_string(), "sequence gaps at the driver");
    if l.path_duplicates > 0 {
        row(&mut t, "  + duplicated on the path", l.path_duplicates.to_string(), "");
    }
    row(&mut t, &format!("reached the driver ({})", l.counted_at), l.reached_driver.to_string(), "");
    if l.sunk > 0 {
        row(&mut t, "  - sunk (--sink)", l.sunk.to_string(), "dropped by design after counting, not loss");
    }
    row(&mut t, "  - dropped in the kernel", l.kernel_dropped.to_string(), if l.kernel_dropped > 0 { "by reason (kfree_skb):" } else { "" });
    by(&mut t, Layer::Kernel);
    if l.unspecified > 0 {
        row(&mut t, "  - freed without a reason", l.unspecified.to_string(), "NOT_SPECIFIED:");
        by(&mut t, Layer::Unspecified);
    }
    if l.no_listener > 0 {
        row(&mut t, "  - no listener on the port", l.no_listener.to_string(), "not loss: no socket was bound to the port");
    }
    row(&mut t, "delivered to the socket", l.delivered_to_socket.to_string(), "");
    row(
        &mut t,
        "  - dropped at the socket",
        l.socket_dropped.to_string(),
        &format!("the socket's own drop count: {}", l.so_rxq_ovfl),
    );
    by(&mut t, Layer::Socket);
    if l.unread_at_close > 0 {
        row(&mut t, "  - unread when the socket closed", l.unread_at_close.to_string(), "");
    }
    row(&mut t, "read by the application", l.read.to_string(), "");
    if l.fragments > 0 {
        t.push_str(&format!(
            "{} datagrams arrived fragmented: the XDP counter cannot follow them, so they show as path loss and the \
             waterfall does not add up; send datagrams that fit the MTU",
            l.fragments
        ));
    } else if l.adds_up {
        t.push_str("every datagram is accounted for");
    } else {
        t.push_str(&format!(
            "does not add up: {} datagram(s) unaccounted (in flight when the run stopped, or dropped where the tracer cannot see)",
            l.unaccounted
        ));
    }
    let h = &l.host;
    let pairs = [
        ("rx_dropped", h.rx_dropped),
        ("rx_missed_errors", h.rx_missed_errors),
        ("rx_fifo_errors", h.rx_fifo_errors),
        ("softnet dropped", h.softnet_dropped),
        ("Udp RcvbufErrors", h.udp_rcvbuf_errors),
        ("Udp InErrors", h.udp_in_errors),
        ("Udp IgnoredMulti", h.udp_ignored_multi),
        ("Ip ReasmFails", h.ip_reasm_fails),
    ];
    let shown: Vec<String> = pairs.iter().filter_map(|(n, v)| v.map(|v| format!("{n} {v}"))).collect();
    if !shown.is_empty() {
        t.push_str(&format!("\nhost counters during the run (whole interface / namespace): {}", shown.join(", ")));
    }
    t
}

/// Kernel text symbols from `/proc/kallsyms` (real addresses need root),
/// to name the function a located drop happened in.
#[derive(Debug, Default)]
pub struct Symbols(Vec<(u64, String)>);

impl Symbols {
    /// Parses `/proc/kallsyms`; empty when unreadable or when addresses are hidden.
    pub fn load() -> Symbols {
        Symbols::parse(&std::fs::read_to_string("/proc/kallsyms").unwrap_or_default())
    }

    pub fn parse(text: &str) -> Symbols {
        let mut v: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok().filter(|&a| a != 0)?;
                let kind = it.next()?;
                let name = it.next()?;
                matches!(kind, "t" | "T").then(|| (addr, name.to_string()))
            })
            .collect();
        v.sort();
        Symbols(v)
    }

    /// The function containing `addr`: the nearest text symbol at or below it.
    pub fn lookup(&self, addr: u64) -> Option<String> {
        let i = self.0.partition_point(|(a, _)| *a <= addr);
        i.checked_sub(1).map(|i| self.0[i].1.clone())
    }
}

/// Kernel counters of the interface and the namespace, read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounters {
    pub rx_dropped: Option<u64>,
    pub rx_missed_errors: Option<u64>,
    pub rx_fifo_errors: Option<u64>,
    pub softnet_dropped: Option<u64>,
    pub udp_rcvbuf_errors: Option<u64>,
    pub udp_in_errors: Option<u64>,
    pub udp_ignored_multi: Option<u64>,
    pub ip_reasm_fails: Option<u64>,
}

/// Changes of [`HostCounters`] over the run (JSON object `host`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostDeltas {
    pub rx_dropped: Option<u64>,
    pub rx_missed_errors: Option<u64>,
    pub rx_fifo_errors: Option<u64>,
    pub softnet_dropped: Option<u64>,
    pub udp_rcvbuf_errors: Option<u64>,
    pub udp_in_errors: Option<u64>,
    /// Multicast datagrams no socket wanted (no listener).
    pub udp_ignored_multi: Option<u64>,
    pub ip_reasm_fails: Option<u64>,
}

impl HostCounters {
    /// Reads the counters of `iface` (sysfs) and of this namespace (/proc/net).
    pub fn read(iface: &str) -> HostCounters {
        let stat = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{f}")).ok().and_then(|s| s.trim().parse().ok())
        };
        let snmp = std::fs::read_to_string("/proc/net/snmp").ok();
        let snmp_field = |proto: &str, field: &str| snmp.as_deref().and_then(|s| snmp_value(s, proto, field));
        HostCounters {
            rx_dropped: stat("rx_dropped"),
            rx_missed_errors: stat("rx_missed_errors"),
            rx_fifo_errors: stat("rx_fifo_errors"),
            softnet_dropped: std::fs::read_to_string("/proc/net/softnet_stat").ok().and_then(|s| softnet_dropped(&s)),
            udp_rcvbuf_errors: snmp_field("Udp", "RcvbufErrors"),
            udp_in_errors: snmp_field("Udp", "InErrors"),
            udp_ignored_multi: snmp_field("Udp", "IgnoredMulti"),
            ip_reasm_fails: snmp_field("Ip", "ReasmFails"),
        }
    }

    /// The change from `start` to `self`.
    pub fn since(&self, start: &HostCounters) -> HostDeltas {
        let d = |a: Option<u64>, b: Option<u64>| Some(a?.wrapping_sub(b?));
        HostDeltas {
            rx_dropped: d(self.rx_dropped, start.rx_dropped),
            rx_missed_errors: d(self.rx_missed_errors, start.rx_missed_errors),
            rx_fifo_errors: d(self.rx_fifo_errors, start.rx_fifo_errors),
            softnet_dropped: d(self.softnet_dropped, start.softnet_dropped),
            udp_rcvbuf_errors: d(self.udp_rcvbuf_errors, start.udp_rcvbuf_errors),
            udp_in_errors: d(self.udp_in_errors, start.udp_in_errors),
            udp_ignored_multi: d(self.udp_ignored_multi, start.udp_ignored_multi),
            ip_reasm_fails: d(self.ip_reasm_fails, start.ip_reasm_fails),
        }
    }
}

/// A field of `/proc/net/snmp` (a header line and a value line per protocol).
pub fn snmp_value(text: &str, proto: &str, field: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The dropped column (the second, hex) of `/proc/net/softnet_stat`, summed over CPUs.
pub fn softnet_dropped(text: &str) -> Option<u64> {
    let mut sum = 0u64;
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        sum += u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok()?;
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ReasonNames {
        ReasonNames::from_pairs(&[
            (2, "NOT_SPECIFIED"),
            (3, "NO_SOCKET"),
            (6, "SOCKET_RCVBUFF"),
            (12, "NETFILTER_DROP"),
            (4, "SOCKET_CLOSE"),
        ])
    }

    fn key(reason: u32, class: DropClass) -> DropKey {
        DropKey { reason, class: class as u32, location: 0 }
    }

    #[test]
    fn names_come_from_the_table_or_say_they_are_unknown() {
        let n = names();
        assert_eq!(n.name(12), "NETFILTER_DROP");
        assert_eq!(n.name(999), "REASON_999");
        assert_eq!(n.name(3 << 16 | 5), "SUBSYS_3:5");
        assert_eq!(Layer::of("SOCKET_RCVBUFF", None), Layer::Socket);
        assert_eq!(Layer::of("IP_RPFILTER", None), Layer::Kernel);
        assert_eq!(Layer::of("NO_SOCKET", None), Layer::NoListener);
        assert_eq!(Layer::of("NOT_SPECIFIED", Some("__udp4_lib_rcv")), Layer::NoListener);
        assert_eq!(Layer::of("NOT_SPECIFIED", Some("ip_rcv_finish")), Layer::Unspecified);
        assert_eq!(Layer::of("NOT_SPECIFIED", None), Layer::Unspecified);
        assert_eq!(n.value("NETFILTER_DROP"), Some(12));
        let syms = Symbols::parse("ffff0010 T a_func\nffff0000 t first\n0000000000000000 T hidden\nffff0020 D data\n");
        assert_eq!(syms.lookup(0xffff0004).as_deref(), Some("first"));
        assert_eq!(syms.lookup(0xffff0030).as_deref(), Some("a_func"));
        assert_eq!(syms.lookup(0x10), None);
    }

    #[test]
    fn waterfall_adds_up_and_charges_each_layer() {
        let drops = BTreeMap::from([
            (key(12, DropClass::Data), 100),
            (key(12, DropClass::End), 1),
            (key(6, DropClass::Data), 40),
            (key(4, DropClass::Data), 2),
            (key(2, DropClass::Other), 7),
        ]);
        let r = reason_counts(&drops, &names(), |_| None);
        assert_eq!(r[0].reason, "NETFILTER_DROP");
        assert_eq!((r[0].data, r[0].end), (100, 1));
        let m = Measured {
            expected: 1000,
            at_driver: 990,
            path_lost: 10,
            path_duplicates: 0,
            read: 848,
            so_rxq_ovfl: 40,
            fragments: 0,
            sunk: 0,
        };
        let l = layers(&m, r, HostDeltas::default());
        assert_eq!(l.kernel_dropped, 100);
        assert_eq!(l.unspecified, 0, "other datagrams are not charged");
        assert_eq!(l.delivered_to_socket, 890);
        assert_eq!((l.socket_dropped, l.unread_at_close), (40, 2));
        assert_eq!(l.unaccounted, 0);
        assert!(l.adds_up);
        let text = human(&l);
        assert!(text.contains("NETFILTER_DROP"), "{text}");
        assert!(text.contains("every datagram is accounted for"), "{text}");

        let short = Measured { read: 840, ..m };
        let l = layers(&short, reason_counts(&drops, &names(), |_| None), HostDeltas::default());
        assert_eq!(l.unaccounted, 8);
        assert!(!l.adds_up);

        let fragmented = Measured { fragments: 3, ..m };
        let l = layers(&fragmented, reason_counts(&drops, &names(), |_| None), HostDeltas::default());
        assert_eq!(l.unaccounted, 0);
        assert!(!l.adds_up, "fragmented datagrams cannot be followed");
        assert!(human(&l).contains("3 datagrams arrived fragmented"));

        // --sink: everything that reached the driver was dropped by design.
        let sunk = Measured { expected: 1000, at_driver: 990, path_lost: 10, sunk: 990, ..Measured::default() };
        let l = layers(&sunk, Vec::new(), HostDeltas::default());
        assert_eq!((l.sunk, l.delivered_to_socket, l.read, l.unaccounted), (990, 0, 0, 0));
        assert!(l.adds_up);
        assert!(human(&l).contains("sunk (--sink)"), "{}", human(&l));
        let short = Measured { sunk: 980, ..sunk };
        assert!(!layers(&short, Vec::new(), HostDeltas::default()).adds_up, "10 neither sunk nor delivered");
    }

    #[test]
    fn proc_parsers() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives ReasmFails\nIp: 2 64 100 3\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 10 1 5 9 4\n";
        assert_eq!(snmp_value(snmp, "Udp", "RcvbufErrors"), Some(4));
        assert_eq!(snmp_value(snmp, "Udp", "InErrors"), Some(5));
        assert_eq!(snmp_value(snmp, "Ip", "ReasmFails"), Some(3));
        assert_eq!(snmp_value(snmp, "Tcp", "InErrors"), None);
        let softnet = "0000abcd 00000002 00000000\n00000001 00000010 00000000\n";
        assert_eq!(softnet_dropped(softnet), Some(0x12));
        let a = HostCounters { rx_dropped: Some(5), udp_in_errors: Some(1), ..Default::default() };
        let b = HostCounters { rx_dropped: Some(9), udp_in_errors: None, ..Default::default() };
        let d = b.since(&a);
        assert_eq!(d.rx_dropped, Some(4));
        assert_eq!(d.udp_in_errors, None);
    }
}
