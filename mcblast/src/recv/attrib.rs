//! Loss attribution: where every data datagram of the run went, layer by
//! layer, from what the receiver measured:
//!
//! ```text
//! expected (the senders' counts, from end markers)
//!   - lost on the path            sequence gaps at the driver (XDP counter)
//!       receiver NIC/driver       ethtool -S drop counters (whole interface; not in the sum)
//!   + duplicates                  (the path delivered some twice)
//! = reached the driver            XDP counter's received (fragmented datagrams: their first fragment)
//!   - sunk                        --sink: dropped by the counter itself, by design (not loss)
//!   - dropped in the kernel       drop tracer (kfree_skb), by reason
//!   - never reassembled           drop tracer, FRAG_REASM_TIMEOUT / FRAG_TOO_FAR / DUP_FRAG
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
//!
//! Fragmented datagrams: the XDP counter counts a datagram's first
//! fragment (it carries the UDP and mcblast headers) in the datagram's
//! flow, like a whole datagram, and matches its later fragments to it, so
//! every number here, per flow too, includes fragmented datagrams. A
//! datagram one of whose later fragments was lost reaches the driver but
//! never reassembles: a lost fragment loses the whole datagram. The kernel
//! frees its first fragment with a reassembly reason when the reassembly
//! queue times out (`net.ipv4.ipfrag_time`), which the tracer counts in
//! the "never reassembled" row.
//!
//! Per flow ([`flow_layers`]): the kernel counter and the socket counter
//! key every datagram by flow, the drop tracer does not (its map is keyed
//! by reason and class), so a flow's row splits its loss into "on the
//! path" and "after the driver" only; the per-layer split exists for all
//! flows together.

use std::collections::BTreeMap;

use anyhow::Result;
use mcblast_common::maps::{DropClass, DropKey, NO_DROP_REASON};
use mcblast_common::{FlowKey, FlowState};
use serde::Serialize;

use crate::sys::btf::Btf;

/// `SKB_DROP_REASON_SUBSYS_MASK`: reasons of a subsystem carry its number in the high bits.
const SUBSYS_SHIFT: u32 = 16;

/// The reason name of drops in a kernel without drop reasons (before
/// 5.17): they are told apart by the function that freed them.
pub const NO_REASON: &str = "NO_REASON_IN_KERNEL";

/// The names of the running kernel's drop reasons.
#[derive(Debug, Clone, Default)]
pub struct ReasonNames {
    names: BTreeMap<u32, String>,
    subsystems: BTreeMap<u32, String>,
}

impl ReasonNames {
    /// From `enum skb_drop_reason` (and `enum skb_drop_reason_subsys`, when
    /// present) of the kernel's BTF; none in a kernel without drop reasons.
    pub fn from_btf(btf: &Btf) -> Result<ReasonNames> {
        let short = |n: &str| n.strip_prefix("SKB_DROP_REASON_").or_else(|| n.strip_prefix("SKB_")).unwrap_or(n).to_string();
        let Ok(reasons) = btf.enum_values("skb_drop_reason") else { return Ok(ReasonNames::default()) };
        let names = reasons.into_iter().map(|(v, n)| (v as u32, short(&n))).collect();
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

    /// Whether the kernel has drop reasons.
    pub fn available(&self) -> bool {
        !self.names.is_empty()
    }

    /// The reason the drop tracer keys by location: NOT_SPECIFIED, or the
    /// tracer's own [`NO_DROP_REASON`] in a kernel without reasons.
    pub fn locate_reason(&self) -> Result<u32> {
        if !self.available() {
            return Ok(NO_DROP_REASON);
        }
        self.value("NOT_SPECIFIED").ok_or_else(|| anyhow::anyhow!("the kernel has no drop reason NOT_SPECIFIED"))
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
        if reason == NO_DROP_REASON {
            return NO_REASON.to_string();
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
    /// IP reassembly gave up on the datagram (a fragment was lost, or came
    /// too late): the whole datagram is lost.
    Reassembly,
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
            NO_REASON => Layer::of_function(function),
            "NO_SOCKET" => Layer::NoListener,
            "SOCKET_RCVBUFF" | "PROTO_MEM" => Layer::Socket,
            "SOCKET_CLOSE" | "QUEUE_PURGE" => Layer::Unread,
            "FRAG_REASM_TIMEOUT" | "FRAG_TOO_FAR" | "DUP_FRAG" => Layer::Reassembly,
            _ => Layer::Kernel,
        }
    }
}

impl Layer {
    /// The layer of a drop in a kernel without drop reasons, by the function
    /// that freed it, where that function drops for one cause only (Linux
    /// 5.10's IPv4 and UDP receive paths); any other is "freed without a
    /// reason" under its function's name, never guessed.
    fn of_function(function: Option<&str>) -> Layer {
        match function {
            // NF_DROP from a netfilter hook (nftables, iptables).
            Some("nf_hook_slow") => Layer::Kernel,
            // A multicast datagram no socket wants.
            Some("__udp4_lib_mcast_deliver" | "__udp4_lib_rcv") => Layer::NoListener,
            // The socket's receive path: __udp_enqueue_schedule_skb refused
            // it (receive buffer or UDP memory), in __udp_queue_rcv_skb, which
            // 5.10 inlines into udp_queue_rcv_one_skb; that one also frees
            // datagrams failing the socket's checksum or filter checks. Both
            // count in the socket's own drop counter (sk_drops, SO_RXQ_OVFL),
            // which the waterfall shows beside this row.
            Some("__udp_queue_rcv_skb" | "udp_queue_rcv_one_skb") => Layer::Socket,
            // The socket's queues purged at close.
            Some("inet_sock_destruct" | "udp_destruct_sock" | "skb_queue_purge") => Layer::Unread,
            _ => Layer::Unspecified,
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
    /// Data datagrams that arrived fragmented (Σ the kernel counter's
    /// per-flow `fragmented`), included in `at_driver`.
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
    /// Flows' received (XDP counter; a fragmented datagram by its first fragment).
    pub reached_driver: u64,
    /// `--sink`: data datagrams the kernel counter dropped itself after
    /// counting them (XDP_DROP), by design: not loss. 0 without --sink.
    pub sunk: u64,
    pub kernel_dropped: u64,
    /// Datagrams whose first fragment reached the driver but which never
    /// reassembled (drop tracer, reassembly reasons): a lost fragment loses
    /// the whole datagram.
    pub reassembly_failed: u64,
    /// Of `reassembly_failed`, the datagrams the drop tracer did not see
    /// time out, charged from the namespace's own `Ip ReasmTimeout`
    /// (bounded by the loss nothing else explains). 0 when the tracer saw
    /// every timeout.
    pub reassembly_untraced: u64,
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
    /// Data datagrams that arrived fragmented (their first fragment at the
    /// driver), included in `reached_driver`.
    pub fragments: u64,
    /// Every reason the drop tracer saw for datagrams to the port.
    pub reasons: Vec<ReasonCount>,
    /// Whether the kernel gives drop reasons (5.17 and later); without them
    /// every drop's reason is [`NO_REASON`] and its layer comes from the
    /// function that freed it ([`Layer::of`]).
    pub drop_reasons: bool,
    /// Drops to the port the tracer could not count (its map was full):
    /// the waterfall misses them when non-zero.
    pub tracer_keys_full: u64,
    /// Kernel counters read at start and end (deltas); null when unreadable.
    pub host: crate::recv::attrib::HostDeltas,
    /// The receiver NIC/driver layer: the driver's drop counters
    /// (`ethtool -S`) that changed during the run; null when the driver's
    /// statistics could not be read. Whole interface, every packet: shown
    /// beside the path loss, not part of the sum.
    pub driver: Option<DriverLayer>,
    /// Every other driver statistic that changed during the run (`ethtool -S`
    /// name: change); null when unreadable.
    pub ethtool: Option<BTreeMap<String, u64>>,
    /// Per flow (sender, group, run, flow), where it is exactly attributable.
    pub flows: Vec<FlowLayers>,
    /// Where the kernel counter ran, for the human table ("XDP" or "tc ingress").
    #[serde(skip)]
    pub counted_at: &'static str,
    /// Who read the socket: "socket counter" (mcblast's), or "iperf2"
    /// (`recv --iperf2-server`: its socket's own drop count is not known).
    pub reader: &'static str,
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

/// Data datagrams the drop tracer charged to each layer (a dropped first
/// fragment is a data datagram lost: its datagram can no longer reassemble).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerDrops {
    pub kernel: u64,
    pub reassembly: u64,
    pub unspecified: u64,
    pub no_listener: u64,
    pub socket: u64,
    pub unread: u64,
    /// The driver's drop counters (`ethtool -S`), when read: not from the
    /// tracer, set by the receiver per interval.
    pub driver: Option<u64>,
}

impl LayerDrops {
    pub fn of(reasons: &[ReasonCount]) -> LayerDrops {
        let data = |l: Layer| reasons.iter().filter(|r| r.layer == l).map(|r| r.data + r.fragments).sum::<u64>();
        LayerDrops {
            kernel: data(Layer::Kernel),
            reassembly: data(Layer::Reassembly),
            unspecified: data(Layer::Unspecified),
            no_listener: data(Layer::NoListener),
            socket: data(Layer::Socket),
            unread: data(Layer::Unread),
            driver: None,
        }
    }

    /// The change since `prev` (counts only grow).
    pub fn since(&self, prev: &LayerDrops) -> LayerDrops {
        LayerDrops {
            kernel: self.kernel.saturating_sub(prev.kernel),
            reassembly: self.reassembly.saturating_sub(prev.reassembly),
            unspecified: self.unspecified.saturating_sub(prev.unspecified),
            no_listener: self.no_listener.saturating_sub(prev.no_listener),
            socket: self.socket.saturating_sub(prev.socket),
            unread: self.unread.saturating_sub(prev.unread),
            driver: None,
        }
    }
}

/// Computes the waterfall.
/// The driver layer and the other changed statistics are left empty
/// (`driver`, `ethtool`: null; `flows`: none): see [`driver_layer`] and
/// [`flow_layers`].
pub fn layers(m: &Measured, reasons: Vec<ReasonCount>, host: HostDeltas) -> Layers {
    let LayerDrops { kernel, reassembly: traced, unspecified, no_listener, socket, unread, .. } = LayerDrops::of(&reasons);
    let reached = m.at_driver;
    // (delivered to the socket, unaccounted) with `reassembly` datagrams never reassembled.
    let account = |reassembly: u64| {
        let delivered = reached as i64 - (m.sunk + kernel + reassembly + unspecified + no_listener) as i64;
        (delivered, delivered - (socket + unread + m.read) as i64)
    };
    let (_, unexplained) = account(traced);
    // The drop tracer can miss frees the kernel made: on this project's lab a
    // whole timer batch of reassembly timeouts, run in a softirq that
    // interrupted one particular process, never reached the BPF program
    // while ftrace recorded every one (docs/attribution.md, "Fragmented datagrams"). The kernel
    // counts timed-out reassemblies itself, per namespace: what it counted
    // beyond the tracer is charged to reassembly, but never more than the
    // loss after the driver that nothing else explains (the counter also
    // holds other traffic's fragments).
    let timeouts_traced: u64 =
        reasons.iter().filter(|r| r.reason == "FRAG_REASM_TIMEOUT").map(|r| r.data + r.fragments).sum();
    let untraced = if m.fragments > 0 && unexplained > 0 {
        host.ip_reasm_timeout.unwrap_or(0).saturating_sub(timeouts_traced).min(unexplained as u64)
    } else {
        0
    };
    let reassembly = traced + untraced;
    let (delivered, unaccounted) = account(reassembly);
    Layers {
        expected: m.expected,
        path_lost: m.path_lost,
        path_duplicates: m.path_duplicates,
        reached_driver: reached,
        sunk: m.sunk,
        kernel_dropped: kernel,
        reassembly_failed: reassembly,
        reassembly_untraced: untraced,
        unspecified,
        no_listener,
        delivered_to_socket: delivered,
        socket_dropped: socket,
        unread_at_close: unread,
        read: m.read,
        unaccounted,
        adds_up: unaccounted == 0
            && m.expected + m.path_duplicates == m.at_driver + m.path_lost,
        so_rxq_ovfl: m.so_rxq_ovfl,
        fragments: m.fragments,
        drop_reasons: !reasons.iter().any(|r| r.reason == NO_REASON),
        reasons,
        tracer_keys_full: 0,
        host,
        driver: None,
        ethtool: None,
        flows: Vec::new(),
        counted_at: "XDP",
        reader: "socket counter",
    }
}

/// The human table of a waterfall.
pub fn human(l: &Layers) -> String {
    let mut t = String::from("--- where the data datagrams went (all flows) ---\n");
    human_path(&mut t, l);
    human_kernel(&mut t, l);
    human_socket(&mut t, l);
    human_verdict(&mut t, l);
    human_host(&mut t, l);
    if l.flows.len() > 1 {
        t.push('\n');
        t.push_str(&human_flows(&l.flows));
    }
    t
}

/// Appends one line of the waterfall to `t`: label, count and an optional note.
fn row(t: &mut String, label: &str, n: String, note: &str) {
    t.push_str(&format!("{label:<34} {n:>10}{}{note}\n", if note.is_empty() { "" } else { "  " }));
}

/// Appends a line to `t` for each reason of `layer` that dropped data datagrams or fragments.
fn by_reason(t: &mut String, l: &Layers, layer: Layer) {
    for r in l.reasons.iter().filter(|r| r.layer == layer && r.data + r.fragments > 0) {
        let f = r.function.as_ref().map(|f| format!("in {f}")).unwrap_or_default();
        row(t, &format!("      {}", r.reason), (r.data + r.fragments).to_string(), &f);
    }
}

/// Appends the lines up to the driver to `t`: sent, lost (and the NIC's drops) or duplicated on the path, reached the
/// driver, sunk.
fn human_path(t: &mut String, l: &Layers) {
    row(t, "sent (senders' end markers)", l.expected.to_string(), "");
    row(t, "  - lost on the path", l.path_lost.to_string(), "sequence gaps at the driver");
    match &l.driver {
        Some(d) if !d.counters.is_empty() => {
            row(t, "      receiver NIC/driver drops", d.dropped.to_string(), "ethtool -S, whole interface:");
            for c in &d.counters {
                row(t, &format!("        {}", c.name), c.delta.to_string(), c.why);
            }
        }
        Some(_) => row(t, "      receiver NIC/driver drops", "0".into(), "ethtool -S, whole interface"),
        None => {}
    }
    if l.path_duplicates > 0 {
        row(t, "  + duplicated on the path", l.path_duplicates.to_string(), "");
    }
    let frag_note = if l.fragments > 0 {
        format!("{} of them fragmented (counted by their first fragment)", l.fragments)
    } else {
        String::new()
    };
    row(t, &format!("reached the driver ({})", l.counted_at), l.reached_driver.to_string(), &frag_note);
    if l.sunk > 0 {
        row(t, "  - sunk (--sink)", l.sunk.to_string(), "dropped by design after counting, not loss");
    }
}

/// Appends the kernel's lines to `t`: dropped (by reason), never reassembled, freed without a reason, no listener.
fn human_kernel(t: &mut String, l: &Layers) {
    let how = if l.drop_reasons { "by reason (kfree_skb):" } else { "by the function that freed them (kfree_skb):" };
    row(t, "  - dropped in the kernel", l.kernel_dropped.to_string(), if l.kernel_dropped > 0 { how } else { "" });
    by_reason(t, l, Layer::Kernel);
    if l.fragments > 0 || l.reassembly_failed > 0 {
        let lost = l
            .reasons
            .iter()
            .filter(|r| matches!(r.reason.as_str(), "FRAG_REASM_TIMEOUT" | "FRAG_TOO_FAR"))
            .map(|r| r.data + r.fragments)
            .sum::<u64>();
        let note = if l.reassembly_failed > 0 {
            format!("a lost fragment loses the whole datagram ({lost} datagrams: fragments lost on the path)")
        } else {
            "a lost fragment would lose the whole datagram".to_string()
        };
        row(t, "  - never reassembled", l.reassembly_failed.to_string(), &note);
        by_reason(t, l, Layer::Reassembly);
        if l.reassembly_untraced > 0 {
            row(
                t,
                "      Ip ReasmTimeout, untraced",
                l.reassembly_untraced.to_string(),
                "timed out in the kernel's count, not seen by the drop tracer",
            );
        }
    }
    if l.unspecified > 0 {
        let how = if l.drop_reasons { "NOT_SPECIFIED:" } else { "by a function that drops for more than one cause:" };
        row(t, "  - freed without a reason", l.unspecified.to_string(), how);
        by_reason(t, l, Layer::Unspecified);
    }
    if l.no_listener > 0 {
        row(t, "  - no listener on the port", l.no_listener.to_string(), "not loss: no socket was bound to the port");
    }
}

/// Appends the socket's lines to `t`: delivered, dropped at the socket, unread at close, read.
fn human_socket(t: &mut String, l: &Layers) {
    row(t, "delivered to the socket", l.delivered_to_socket.to_string(), "");
    let own = match l.reader {
        "iperf2" => "iperf2's socket".to_string(),
        _ => format!("the socket's own drop count: {}", l.so_rxq_ovfl),
    };
    row(t, "  - dropped at the socket", l.socket_dropped.to_string(), &own);
    by_reason(t, l, Layer::Socket);
    if l.unread_at_close > 0 {
        row(t, "  - unread when the socket closed", l.unread_at_close.to_string(), "");
    }
    let reader = if l.reader == "iperf2" { "read by iperf2" } else { "read by the application" };
    row(t, reader, l.read.to_string(), "");
}

/// Appends the tracer's and the kernel's caveats to `t`, and whether every datagram is accounted for.
fn human_verdict(t: &mut String, l: &Layers) {
    if l.tracer_keys_full > 0 {
        t.push_str(&format!(
            "warning: the drop tracer's map was full: {} drop(s) to the port were not counted by reason or flow\n",
            l.tracer_keys_full
        ));
    }
    if !l.drop_reasons {
        t.push_str("this kernel gives no drop reasons (before Linux 5.17): layers come from the functions that freed the datagrams\n");
    }
    if l.adds_up {
        t.push_str("every datagram is accounted for");
    } else {
        t.push_str(&format!(
            "does not add up: {} datagram(s) unaccounted (in flight when the run stopped, dropped where the tracer \
             cannot see, or a reassembly that timed out after the run)",
            l.unaccounted
        ));
    }
}

/// Appends the host counters that could be read during the run to `t`, if any.
fn human_host(t: &mut String, l: &Layers) {
    let h = &l.host;
    let pairs = [
        ("rx_dropped", h.rx_dropped),
        ("rx_missed_errors", h.rx_missed_errors),
        ("rx_fifo_errors", h.rx_fifo_errors),
        ("softnet dropped", h.softnet_dropped),
        ("Udp RcvbufErrors", h.udp_rcvbuf_errors),
        ("Udp InErrors", h.udp_in_errors),
        ("Udp IgnoredMulti", h.udp_ignored_multi),
        ("Ip ReasmOKs", h.ip_reasm_oks),
        ("Ip ReasmFails", h.ip_reasm_fails),
        ("Ip ReasmTimeout", h.ip_reasm_timeout),
    ];
    let shown: Vec<String> = pairs.iter().filter_map(|(n, v)| v.map(|v| format!("{n} {v}"))).collect();
    if !shown.is_empty() {
        t.push_str(&format!("\nhost counters during the run (whole interface / namespace): {}", shown.join(", ")));
    }
}

/// The compact per-flow table (when there is more than one flow).
pub fn human_flows(flows: &[FlowLayers]) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let frag = flows.iter().any(|f| f.fragmented.is_some_and(|n| n > 0));
    let traced = flows.iter().any(|f| f.kernel_dropped.is_some());
    let mut t = String::from(if traced {
        "--- per flow (after the driver: kernel, reassembly and socket drops by the drop tracer) ---\n"
    } else {
        "--- per flow (no drop tracer: the loss after the driver is not split by layer) ---\n"
    });
    let tail = |k: String, r: String, s: String, u: String| {
        if traced { format!(" {k:>8} {r:>8} {s:>8} {u:>8}") } else { String::new() }
    };
    t.push_str(&format!(
        "{:<15} {:<15} {:>8} {:>4} {:>10} {:>10} {:>10} {:>12}{} {:>10}{}\n",
        "sender",
        "group",
        "run",
        "flow",
        "sent",
        "path_lost",
        "at_driver",
        "after_driver",
        tail("kernel".into(), "reasm".into(), "socket".into(), "unacc".into()),
        "read",
        if frag { format!(" {:>10}", "fragmented") } else { String::new() }
    ));
    for f in flows {
        t.push_str(&format!(
            "{:<15} {:<15} {:>8x} {:>4} {:>10} {:>10} {:>10} {:>12}{} {:>10}{}\n",
            f.sender,
            f.group,
            f.run,
            f.flow,
            f.expected,
            opt(f.path_lost),
            opt(f.reached_driver),
            f.lost_after_driver.map_or("-".to_string(), |v| v.to_string()),
            tail(
                opt(f.kernel_dropped),
                opt(f.reassembly_failed),
                opt(f.socket_dropped),
                f.unaccounted.map_or("-".to_string(), |v| v.to_string())
            ),
            opt(f.read),
            if frag { format!(" {:>10}", opt(f.fragmented)) } else { String::new() },
        ));
    }
    t.pop();
    t
}

/// A driver statistic (`ethtool -S`) that counts received packets the
/// NIC or its driver dropped, with what it means; None for other statistics.
pub fn driver_drop_counter(name: &str) -> Option<&'static str> {
    // `rx_queue_<N>_<rest>` (veth, virtio_net): the part after the queue number.
    let per_queue = name
        .strip_prefix("rx_queue_")
        .and_then(|r| r.split_once('_'))
        .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, rest)| rest);
    Some(match (name, per_queue) {
        ("bw_in_allowance_exceeded", _) => {
            "ENA: inbound bandwidth above the instance's allowance; the instance shaper dropped them before the driver"
        }
        ("pps_allowance_exceeded", _) => {
            "ENA: packets per second above the instance's allowance; the instance shaper dropped them before the driver"
        }
        ("conntrack_allowance_exceeded", _) => "ENA: the instance's connection-tracking allowance was exceeded",
        ("linklocal_allowance_exceeded", _) => "ENA: packets to link-local services above their allowance",
        ("rx_discards_phy", _) => "mlx5: the port discarded them (no receive buffer in the NIC)",
        ("rx_out_of_buffer", _) => "mlx5: no receive descriptor (the host did not refill the ring in time)",
        ("rx_drops", _) => "virtio: the driver dropped received packets",
        (_, Some("xdp_drops")) => "XDP_DROP by an XDP program (with --sink: the counter's own, by design)",
        (_, Some("drops")) => "the receive queue dropped them (ring full or bad packet)",
        _ => return None,
    })
}

/// One driver drop counter's change over the run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DriverCounter {
    pub name: String,
    pub delta: u64,
    /// What the counter means.
    pub why: &'static str,
}

/// The receiver NIC/driver layer (JSON `driver`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct DriverLayer {
    /// Σ of the drop counters below.
    pub dropped: u64,
    /// The drop counters that changed (non-zero changes only).
    pub counters: Vec<DriverCounter>,
}

/// The changes of the driver's statistics between two readings
/// (`ethtool -S` name, value): the known drop counters as the driver layer,
/// every other non-zero change by name. A statistic that went down is a
/// gauge, not a counter, and is left out.
pub fn driver_layer(start: &[(String, u64)], end: &[(String, u64)]) -> (DriverLayer, BTreeMap<String, u64>) {
    let before: BTreeMap<&str, u64> = start.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let mut layer = DriverLayer::default();
    let mut other = BTreeMap::new();
    for (name, v) in end {
        let Some(delta) = before.get(name.as_str()).and_then(|b| v.checked_sub(*b)).filter(|d| *d > 0) else {
            continue;
        };
        match driver_drop_counter(name) {
            Some(why) => {
                layer.dropped += delta;
                layer.counters.push(DriverCounter { name: name.clone(), delta, why });
            }
            None => {
                other.insert(name.clone(), delta);
            }
        }
    }
    (layer, other)
}

/// Σ of the known drop counters in one reading.
pub fn driver_drops(stats: &[(String, u64)]) -> u64 {
    stats.iter().filter(|(n, _)| driver_drop_counter(n).is_some()).map(|(_, v)| *v).sum()
}

/// One flow's waterfall (JSON `flows[]` of the `layers` line). Counts the
/// receiver cannot split by flow (without a counter or the tracer) are null.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlowLayers {
    pub sender: String,
    pub group: String,
    pub run: u32,
    pub flow: u32,
    /// The flow's sender count (end marker), or highest sequence + 1.
    pub expected: u64,
    /// Sequence gaps at the driver (kernel counter); null without it.
    pub path_lost: Option<u64>,
    pub path_duplicates: Option<u64>,
    /// The kernel counter's received (fragmented datagrams included); null without it.
    pub reached_driver: Option<u64>,
    /// Of `reached_driver`, the datagrams that arrived fragmented (their
    /// first fragment); null without the kernel counter.
    pub fragmented: Option<u64>,
    /// reached_driver − read: lost in this host's kernel or socket; null
    /// without both counters.
    pub lost_after_driver: Option<i64>,
    /// The flow's data datagrams the kernel dropped after the driver
    /// (kernel reasons, NOT_SPECIFIED, no listener), by the drop tracer,
    /// which reads the flow from each dropped datagram's mcblast header;
    /// null without the tracer.
    pub kernel_dropped: Option<u64>,
    /// The flow's datagrams that never reassembled, as the tracer saw them
    /// (the all-flows row may add `reassembly_untraced`, not split by flow).
    pub reassembly_failed: Option<u64>,
    /// The flow's data datagrams dropped at (or left unread in) the socket.
    pub socket_dropped: Option<u64>,
    /// The socket counter's received; null without the socket counter.
    pub read: Option<u64>,
    /// lost_after_driver − kernel − reassembly − socket drops: 0 when the
    /// flow's row adds up; null without both counters and the tracer.
    pub unaccounted: Option<i64>,
}

/// What the drop tracer charged to each flow's layers: its raw counts split
/// by the flow it read from each datagram's header, each part classified as
/// the all-flows waterfall is ([`reason_counts`], [`LayerDrops::of`]).
/// Drops with no flow (header not read) are in no flow's row.
pub fn flow_drops(
    drops: &BTreeMap<DropKey, u64>,
    names: &ReasonNames,
    symbol: impl Fn(u64) -> Option<String>,
) -> Vec<(FlowKey, LayerDrops)> {
    let mut by: BTreeMap<FlowKey, BTreeMap<DropKey, u64>> = BTreeMap::new();
    for (k, &n) in drops.iter().filter(|(k, _)| k.flow != FlowKey::default()) {
        by.entry(k.flow).or_default().insert(*k, n);
    }
    by.into_iter().map(|(flow, own)| (flow, LayerDrops::of(&reason_counts(&own, names, &symbol)))).collect()
}

/// Per-flow rows from the two counters' final flows: every flow either
/// counter saw. `fragmented`: the kernel counter's per-flow count of data
/// datagrams that arrived fragmented (flows not listed have none).
pub fn flow_layers(
    kernel: Option<&[(FlowKey, FlowState)]>,
    socket: Option<&[(FlowKey, FlowState)]>,
    fragmented: Option<&[(FlowKey, u64)]>,
    drops: Option<&[(FlowKey, LayerDrops)]>,
) -> Vec<FlowLayers> {
    let mut keys: Vec<FlowKey> =
        kernel.into_iter().chain(socket).flat_map(|f| f.iter().map(|(k, _)| *k)).collect();
    keys.sort();
    keys.dedup();
    let find = |flows: Option<&[(FlowKey, FlowState)]>, k: &FlowKey| -> Option<Option<FlowState>> {
        flows.map(|f| f.iter().find(|(fk, _)| fk == k).map(|(_, s)| *s))
    };
    let ip = |v: u32| std::net::Ipv4Addr::from(v.to_ne_bytes()).to_string();
    keys.iter()
        .map(|k| {
            let ks = find(kernel, k);
            let ss = find(socket, k);
            let kernel_exp = kernel.and_then(|_| find(kernel, k)).flatten().map(|s| s.expected());
            let socket_exp = ss.flatten().map(|s| s.expected());
            let reached = ks.map(|s| s.map_or(0, |s| s.received));
            let read = ss.map(|s| s.map_or(0, |s| s.received));
            let d = drops.map(|d| d.iter().find(|(fk, _)| fk == k).map(|(_, l)| *l).unwrap_or_default());
            let lost_after_driver = reached.zip(read).map(|(r, d)| r as i64 - d as i64);
            let kernel_dropped = d.map(|d| d.kernel + d.unspecified + d.no_listener);
            let reassembly_failed = d.map(|d| d.reassembly);
            let socket_dropped = d.map(|d| d.socket + d.unread);
            FlowLayers {
                sender: ip(k.sender),
                group: ip(k.group),
                run: k.run,
                flow: k.flow,
                expected: kernel_exp.into_iter().chain(socket_exp).max().unwrap_or(0),
                path_lost: ks.map(|s| s.map_or(0, |s| s.lost)),
                path_duplicates: ks.map(|s| s.map_or(0, |s| s.duplicates + s.stale)),
                reached_driver: reached,
                fragmented: ks.map(|_| {
                    fragmented.unwrap_or_default().iter().find(|(fk, _)| fk == k).map_or(0, |(_, n)| *n)
                }),
                lost_after_driver,
                kernel_dropped,
                reassembly_failed,
                socket_dropped,
                read,
                unaccounted: match (lost_after_driver, kernel_dropped, reassembly_failed, socket_dropped) {
                    (Some(l), Some(k), Some(r), Some(s)) => Some(l - (k + r + s) as i64),
                    _ => None,
                },
            }
        })
        .collect()
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

/// Kernel counters of the interface and the namespace, read at one moment
/// ([`HostCounters::read`]) or their change over the run
/// ([`HostCounters::since`], JSON object `host`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostCounters {
    pub rx_dropped: Option<u64>,
    pub rx_missed_errors: Option<u64>,
    pub rx_fifo_errors: Option<u64>,
    pub softnet_dropped: Option<u64>,
    pub udp_rcvbuf_errors: Option<u64>,
    pub udp_in_errors: Option<u64>,
    /// Multicast datagrams no socket wanted (no listener).
    pub udp_ignored_multi: Option<u64>,
    pub ip_reasm_fails: Option<u64>,
    /// Datagrams reassembled from fragments.
    pub ip_reasm_oks: Option<u64>,
    /// Reassembly queues that timed out (`net.ipv4.ipfrag_time`).
    pub ip_reasm_timeout: Option<u64>,
}

/// The change of [`HostCounters`] over the run.
pub type HostDeltas = HostCounters;

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
            ip_reasm_oks: snmp_field("Ip", "ReasmOKs"),
            ip_reasm_timeout: snmp_field("Ip", "ReasmTimeout"),
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
            ip_reasm_oks: d(self.ip_reasm_oks, start.ip_reasm_oks),
            ip_reasm_timeout: d(self.ip_reasm_timeout, start.ip_reasm_timeout),
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

/// The receiver's loss attribution (`"counter":"layers"` summary line):
/// where every data datagram of the run went, see this module.
#[derive(Serialize, Debug, Clone)]
pub struct LayersSummary {
    pub role: &'static str,
    pub counter: &'static str,
    pub duration_s: f64,
    #[serde(flatten)]
    pub layers: Layers,
}

impl crate::output::Record for LayersSummary {
    const TYPE: &'static str = "summary";
    fn human(&self) -> String {
        human(&self.layers)
    }
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
        DropKey { reason, class: class as u32, location: 0, flow: FlowKey::default() }
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

    /// A kernel without drop reasons: the same run's drops keyed by the
    /// function that freed them add up to the same waterfall, a function
    /// that drops for several causes stays "freed without a reason", and the
    /// table says why there are no reasons.
    #[test]
    fn without_drop_reasons_layers_come_from_the_freeing_function() {
        let none = ReasonNames::default();
        assert!(!none.available());
        assert_eq!(none.locate_reason().unwrap(), NO_DROP_REASON);
        assert_eq!(names().locate_reason().unwrap(), 2);
        let at = |location, class: DropClass| DropKey { reason: NO_DROP_REASON, class: class as u32, location, flow: FlowKey::default() };
        let drops = BTreeMap::from([
            (at(0x10, DropClass::Data), 100),
            (at(0x20, DropClass::Data), 40),
            (at(0x30, DropClass::Data), 2),
            (at(0x40, DropClass::Data), 3),
        ]);
        let sym = |a: u64| {
            Some(match a { 0x10 => "nf_hook_slow", 0x20 => "udp_queue_rcv_one_skb", 0x30 => "inet_sock_destruct", _ => "ip_rcv_core" }.to_string())
        };
        let r = reason_counts(&drops, &none, sym);
        assert!(r.iter().all(|c| c.reason == NO_REASON), "{r:?}");
        let m = Measured { expected: 1000, at_driver: 990, path_lost: 10, path_duplicates: 0, read: 845, so_rxq_ovfl: 40, fragments: 0, sunk: 0 };
        let l = layers(&m, r, HostDeltas::default());
        assert_eq!((l.kernel_dropped, l.socket_dropped, l.unread_at_close, l.unspecified), (100, 40, 2, 3));
        assert!(l.adds_up && !l.drop_reasons, "{l:?}");
        let text = human(&l);
        assert!(text.contains("by the function that freed them") && text.contains("in nf_hook_slow"), "{text}");
        assert!(text.contains("no drop reasons (before Linux 5.17)") && text.contains("in ip_rcv_core"), "{text}");
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
    }

    /// The fragment reasons the fragmentation tests name.
    fn frag_names() -> ReasonNames {
        ReasonNames::from_pairs(&[(70, "FRAG_REASM_TIMEOUT"), (71, "DUP_FRAG")])
    }

    /// 37 reassembly timeouts and one duplicate first fragment, as the tracer saw them.
    fn frag_drops() -> BTreeMap<DropKey, u64> {
        BTreeMap::from([(key(70, DropClass::Fragment), 37), (key(71, DropClass::Fragment), 1)])
    }

    /// 1000 datagrams sent as fragments: every first fragment reached the
    /// driver and was counted in its flow, one twice (a duplicate); 37
    /// lost a later fragment and timed out in reassembly, the duplicate
    /// first fragment was dropped as such.
    fn fragmented() -> Measured {
        Measured {
            expected: 1000,
            at_driver: 1001,
            path_lost: 0,
            path_duplicates: 1,
            fragments: 1001,
            read: 963,
            ..Measured::default()
        }
    }

    #[test]
    fn waterfall_charges_lost_fragments_to_reassembly() {
        let (frag, fdrops, fragmented) = (frag_names(), frag_drops(), fragmented());
        let l = layers(&fragmented, reason_counts(&fdrops, &frag, |_| None), HostDeltas::default());
        assert_eq!((l.reached_driver, l.path_lost, l.path_duplicates), (1001, 0, 1));
        assert_eq!((l.reassembly_failed, l.delivered_to_socket), (38, 963));
        assert_eq!(l.unaccounted, 0);
        assert!(l.adds_up, "{l:?}");
        let text = human(&l);
        assert!(text.contains("a lost fragment loses the whole datagram (37 datagrams: fragments lost on the path)"), "{text}");
        assert!(text.contains("1001 of them fragmented"), "{text}");
        // Fragments lost on the path before the driver took the first
        // fragment with them: sequence gaps, as for whole datagrams.
        let l = layers(
            &Measured { at_driver: 990, path_lost: 10, path_duplicates: 0, fragments: 990, read: 990, ..fragmented },
            Vec::new(),
            HostDeltas::default(),
        );
        assert_eq!((l.reached_driver, l.path_lost, l.reassembly_failed, l.unaccounted), (990, 10, 0, 0));
        assert!(l.adds_up, "{l:?}");
        assert!(human(&l).contains("a lost fragment would lose the whole datagram"), "{}", human(&l));
        // A fragment the tracker did not see time out (the run stopped first).
        let l = layers(&Measured { read: 962, ..fragmented }, reason_counts(&fdrops, &frag, |_| None), HostDeltas::default());
        assert_eq!(l.unaccounted, 1);
        assert!(!l.adds_up);
    }

    #[test]
    fn waterfall_charges_untraced_reassembly_timeouts() {
        let (frag, fdrops, fragmented) = (frag_names(), frag_drops(), fragmented());
        // The tracer missed 5 of the 37 timeouts the namespace counted: they
        // are charged to reassembly from Ip ReasmTimeout, named as such.
        let missed = BTreeMap::from([(key(70, DropClass::Fragment), 32), (key(71, DropClass::Fragment), 1)]);
        let counted = HostDeltas { ip_reasm_timeout: Some(37), ..HostDeltas::default() };
        let l = layers(&fragmented, reason_counts(&missed, &frag, |_| None), counted);
        assert_eq!((l.reassembly_failed, l.reassembly_untraced, l.unaccounted), (38, 5, 0), "{l:?}");
        assert!(l.adds_up, "{l:?}");
        assert!(human(&l).contains("Ip ReasmTimeout, untraced"), "{}", human(&l));
        assert!(human(&Layers { tracer_keys_full: 3, ..l.clone() }).contains("map was full: 3 drop(s)"));
        // Never more than the loss nothing else explains: 20 other timeouts
        // in the namespace (other traffic's fragments) are not charged.
        let l = layers(
            &fragmented,
            reason_counts(&missed, &frag, |_| None),
            HostDeltas { ip_reasm_timeout: Some(57), ..HostDeltas::default() },
        );
        assert_eq!((l.reassembly_failed, l.reassembly_untraced, l.unaccounted), (38, 5, 0), "{l:?}");
        // Nor when the tracer saw them all, nor without fragments.
        let l = layers(&fragmented, reason_counts(&fdrops, &frag, |_| None), counted);
        assert_eq!((l.reassembly_untraced, l.unaccounted), (0, 0));
        let l = layers(&Measured { fragments: 0, ..fragmented }, reason_counts(&missed, &frag, |_| None), counted);
        assert_eq!((l.reassembly_untraced, l.unaccounted), (0, 5));
    }

    #[test]
    fn waterfall_counts_sunk_datagrams_under_sink() {
        // --sink: everything that reached the driver was dropped by design.
        let sunk = Measured { expected: 1000, at_driver: 990, path_lost: 10, sunk: 990, ..Measured::default() };
        let l = layers(&sunk, Vec::new(), HostDeltas::default());
        assert_eq!((l.sunk, l.delivered_to_socket, l.read, l.unaccounted), (990, 0, 0, 0));
        assert!(l.adds_up);
        assert!(human(&l).contains("sunk (--sink)"), "{}", human(&l));
        let short = Measured { sunk: 980, ..sunk };
        assert!(!layers(&short, Vec::new(), HostDeltas::default()).adds_up, "10 neither sunk nor delivered");
    }

    fn stats(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn driver_drop_counters_are_named_and_the_rest_listed() {
        for n in [
            "bw_in_allowance_exceeded",
            "pps_allowance_exceeded",
            "conntrack_allowance_exceeded",
            "linklocal_allowance_exceeded",
            "rx_discards_phy",
            "rx_out_of_buffer",
            "rx_queue_0_xdp_drops",
            "rx_queue_12_drops",
            "rx_drops",
        ] {
            assert!(driver_drop_counter(n).is_some(), "{n}");
        }
        for n in ["peer_ifindex", "rx_queue_0_xdp_packets", "rx_queue_x_drops", "tx_queue_0_xdp_xmit_errors", "bw_out_allowance_exceeded"] {
            assert!(driver_drop_counter(n).is_none(), "{n}");
        }
        assert!(driver_drop_counter("pps_allowance_exceeded").unwrap().contains("shaper"));
        // An ENA receiver: the shaper dropped 120 packets during the run.
        let start = stats(&[("queue_0_rx_cnt", 5), ("bw_in_allowance_exceeded", 7), ("pps_allowance_exceeded", 0), ("gauge", 9)]);
        let end = stats(&[
            ("queue_0_rx_cnt", 1005),
            ("bw_in_allowance_exceeded", 7),
            ("pps_allowance_exceeded", 120),
            ("gauge", 3),
            ("new_stat", 4),
        ]);
        let (d, other) = driver_layer(&start, &end);
        assert_eq!(d.dropped, 120);
        assert_eq!(d.counters.len(), 1, "unchanged counters are left out: {d:?}");
        assert_eq!((d.counters[0].name.as_str(), d.counters[0].delta), ("pps_allowance_exceeded", 120));
        assert_eq!(other, BTreeMap::from([("queue_0_rx_cnt".to_string(), 1000)]), "no gauges, nothing without a start");
        assert_eq!(driver_drops(&end), 127);
        let mut l = layers(&Measured { expected: 10, at_driver: 10, read: 10, ..Measured::default() }, Vec::new(), HostDeltas::default());
        l.driver = Some(d);
        let text = human(&l);
        assert!(text.contains("receiver NIC/driver drops") && text.contains("pps_allowance_exceeded"), "{text}");
    }

    #[test]
    fn flows_are_split_where_both_counters_key_by_flow() {
        let k = |flow| FlowKey { sender: u32::from_ne_bytes([10, 0, 0, 1]), group: u32::from_ne_bytes([239, 0, 0, 1]), run: 7, flow };
        let st = |received, lost, next_seq| FlowState { received, lost, next_seq, ..FlowState::default() };
        let kernel = vec![(k(0), st(100, 0, 100)), (k(1), st(90, 10, 100))];
        let socket = vec![(k(0), st(98, 2, 100)), (k(1), st(90, 10, 100))];
        let f = flow_layers(Some(&kernel), Some(&socket), None, None);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].sender.as_str(), f[0].group.as_str(), f[0].flow), ("10.0.0.1", "239.0.0.1", 0));
        assert_eq!((f[0].expected, f[0].path_lost, f[0].reached_driver, f[0].lost_after_driver, f[0].read), (100, Some(0), Some(100), Some(2), Some(98)));
        assert_eq!((f[1].path_lost, f[1].lost_after_driver, f[1].read), (Some(10), Some(0), Some(90)));
        assert_eq!((f[0].kernel_dropped, f[0].socket_dropped, f[0].unaccounted), (None, None, None), "without the tracer");
        // Kernel counter alone; a flow only the socket saw.
        let f = flow_layers(Some(&kernel[..1]), None, None, None);
        assert_eq!((f[0].reached_driver, f[0].read, f[0].lost_after_driver), (Some(100), None, None));
        let f = flow_layers(Some(&kernel[..1]), Some(&socket), None, None);
        assert_eq!((f[1].flow, f[1].reached_driver, f[1].read, f[1].fragmented), (1, Some(0), Some(90), Some(0)));
        // Fragmented datagrams are in the flows: exact per-flow numbers,
        // with how many arrived fragmented.
        let f = flow_layers(Some(&kernel), Some(&socket), Some(&[(k(1), 90)]), None);
        assert_eq!((f[0].path_lost, f[0].reached_driver, f[0].read, f[0].fragmented), (Some(0), Some(100), Some(98), Some(0)));
        assert_eq!((f[1].path_lost, f[1].reached_driver, f[1].lost_after_driver, f[1].fragmented), (Some(10), Some(90), Some(0), Some(90)));
        let f2 = flow_layers(None, Some(&socket), None, None);
        assert_eq!((f2[0].reached_driver, f2[0].fragmented), (None, None));
        let text = human_flows(&f);
        assert!(text.lines().count() == 4 && text.contains("no drop tracer") && text.contains("fragmented"), "{text}");
        assert!(!human_flows(&flow_layers(Some(&kernel), Some(&socket), None, None)).contains("fragmented"));

        // With the tracer: the raw counts keyed by flow land in each
        // flow's layers; drops whose header was not read (zero flow), end
        // markers and other datagrams are in no flow.
        let names = ReasonNames::from_pairs(&[(2, "NOT_SPECIFIED"), (6, "SOCKET_RCVBUFF"), (12, "NETFILTER_DROP"), (95, "FRAG_REASM_TIMEOUT")]);
        let fk = |reason, class: DropClass, flow| DropKey { reason, class: class as u32, location: 0, flow };
        let raw = BTreeMap::from([
            (fk(12, DropClass::Data, k(0)), 1),
            (fk(6, DropClass::Data, k(0)), 1),
            (fk(95, DropClass::Fragment, k(1)), 0),
            (fk(12, DropClass::End, k(1)), 5),
            (fk(12, DropClass::Data, FlowKey::default()), 9),
            (fk(12, DropClass::Other, k(1)), 3),
        ]);
        let d = flow_drops(&raw, &names, |_| None);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].0, d[0].1.kernel, d[0].1.socket), (k(0), 1, 1));
        let f = flow_layers(Some(&kernel), Some(&socket), None, Some(&d));
        assert_eq!((f[0].lost_after_driver, f[0].kernel_dropped, f[0].reassembly_failed, f[0].socket_dropped), (Some(2), Some(1), Some(0), Some(1)));
        assert_eq!(f[0].unaccounted, Some(0));
        assert_eq!((f[1].kernel_dropped, f[1].socket_dropped, f[1].unaccounted), (Some(0), Some(0), Some(0)));
        let text = human_flows(&f);
        assert!(text.contains("by the drop tracer") && text.contains("socket") && text.contains("unacc"), "{text}");
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
