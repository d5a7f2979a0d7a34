//! The receiver's live page (`recv --prometheus`): its flows, counters and drops in the exposition format of
//! [`crate::prom`], from the same snapshots the interval lines use.

use crate::prom::{Page, build_info, le_buckets};

/// What `mcblast recv` publishes for a scrape: the counters' snapshots,
/// the socket's own drop counter and the drop tracer's counts by reason.
#[derive(Clone, Default)]
pub struct RecvLive {
    pub snaps: Vec<(&'static str, super::Snapshot)>,
    /// SO_RXQ_OVFL of the socket counter's socket.
    pub socket_drops: Option<u64>,
    /// The drop tracer's counts (None: no tracer).
    pub reasons: Option<Vec<super::attrib::ReasonCount>>,
}

/// The receiver's page. Flow values come from [`crate::output::flow_report`],
/// as in the JSON summary. The `counter` label says which counter (kernel,
/// socket) saw the datagrams: both count the same traffic, so sums over
/// receivers are taken per counter (`sum by (counter)`).
pub fn recv_page(v: &RecvLive, local: &crate::clock::LocalClock) -> String {
    let mut p = Page::default();
    build_info(&mut p);
    for (counter, snap) in &v.snaps {
        for (key, st) in &snap.flows {
            recv_flow(&mut p, counter, key, st, local);
        }
        recv_counter_totals(&mut p, counter, snap);
    }
    if let Some(d) = v.socket_drops {
        p.counter("mcblast_recv_socket_buffer_dropped_datagrams_total", "Datagrams the socket counter's full receive buffer dropped (SO_RXQ_OVFL).", &[], d);
    }
    if let Some(reasons) = &v.reasons {
        recv_drops(&mut p, reasons);
    }
    p.render()
}

/// One flow's series as seen by `counter`.
fn recv_flow(
    p: &mut Page,
    counter: &str,
    key: &mcblast_common::FlowKey,
    st: &mcblast_common::tracker::FlowState,
    local: &crate::clock::LocalClock,
) {
    let f = crate::output::flow_report(key, st, local);
    let (run, flow) = (f.run.to_string(), f.flow.to_string());
    let l: &[(&str, &str)] = &[("sender", &f.sender), ("group", &f.group), ("run", &run), ("flow", &flow), ("counter", counter)];
    p.counter("mcblast_recv_datagrams_total", "Data datagrams received (duplicates and stale ones included).", l, f.received);
    p.counter("mcblast_recv_bytes_total", "UDP payload bytes of the received datagrams.", l, f.bytes);
    p.gauge(
        "mcblast_recv_lost_datagrams",
        "Sequence numbers below the highest seen that have not arrived (a gauge, not a counter: a late datagram takes one back).",
        l,
        f.lost as f64,
    );
    p.gauge("mcblast_recv_expected_datagrams", "Datagrams the flow is known to have sent (highest sequence + 1, or the end marker's count).", l, f.expected as f64);
    p.counter("mcblast_recv_reordered_datagrams_total", "Datagrams that arrived after a higher sequence number.", l, f.reordered);
    p.counter("mcblast_recv_duplicate_datagrams_total", "Datagrams whose sequence number had already arrived.", l, f.duplicates);
    p.counter("mcblast_recv_stale_datagrams_total", "Datagrams too far behind the highest sequence number to classify.", l, f.stale);
    p.gauge("mcblast_recv_jitter_seconds", "RFC 3550 inter-arrival jitter.", l, f.jitter_us / 1e6);
    p.gauge("mcblast_recv_flow_ended", "1 once the flow's end marker arrived.", l, f64::from(u8::from(f.ended)));
    if let Some(d) = &f.delay {
        p.histogram(
            "mcblast_recv_delay_seconds",
            "One-way delay (receive minus send time) of the datagrams timed (le bounds: see docs/prometheus.md).",
            l,
            &le_buckets(&st.delay_hist),
            st.delay_sum_ns as f64 / 1e9,
        );
        p.gauge("mcblast_recv_delay_min_seconds", "Smallest one-way delay.", l, d.min_us / 1e6);
        p.gauge("mcblast_recv_delay_max_seconds", "Largest one-way delay.", l, d.max_us / 1e6);
        p.gauge(
            "mcblast_recv_delay_trusted",
            "1 when sender and receiver share a clock or both are synchronised (else the delay is not a one-way delay).",
            l,
            f64::from(u8::from(d.trusted)),
        );
    }
    if st.ipdv_count > 0 {
        p.histogram(
            "mcblast_recv_ipdv_seconds",
            "Inter-packet delay variation (RFC 3393: |transit(i) - transit(i-1)| of consecutive arrivals; needs no clock sync).",
            l,
            &le_buckets(&st.ipdv_hist),
            st.ipdv_sum_ns as f64 / 1e9,
        );
    }
}

/// A counter's datagrams that belong to no tracked flow.
fn recv_counter_totals(p: &mut Page, counter: &str, snap: &super::Snapshot) {
    let c: &[(&str, &str)] = &[("counter", counter)];
    p.counter("mcblast_recv_foreign_datagrams_total", "Datagrams to the port that are not mcblast datagrams of a counted run.", c, snap.foreign);
    if let Some(m) = snap.map_full {
        p.counter("mcblast_recv_map_full_datagrams_total", "Valid datagrams with no room in the kernel flow map (not tracked).", c, m);
    }
    if let Some(f) = snap.fragments {
        p.counter("mcblast_recv_fragmented_datagrams_total", "Datagrams that arrived as IPv4 fragments (counted in their flows by their first fragment).", c, f);
    }
    if let Some(o) = snap.other_group {
        p.counter("mcblast_recv_other_group_datagrams_total", "Datagrams to the port for groups or sources not joined.", c, o);
    }
}

/// The drop tracer's counts: by layer, and by kernel drop reason.
fn recv_drops(p: &mut Page, reasons: &[super::attrib::ReasonCount]) {
    use super::attrib::Layer;
    let drops = super::attrib::LayerDrops::of(reasons);
    for (layer, n) in [
        ("kernel", drops.kernel),
        ("reassembly", drops.reassembly),
        ("unspecified", drops.unspecified),
        ("no_listener", drops.no_listener),
        ("socket", drops.socket),
        ("unread", drops.unread),
    ] {
        p.counter("mcblast_recv_layer_dropped_datagrams_total", "Data datagrams the drop tracer charged to each layer of this host.", &[("layer", layer)], n);
    }
    for r in reasons {
        let layer = match r.layer {
            Layer::Kernel => "kernel",
            Layer::Unspecified => "unspecified",
            Layer::NoListener => "no_listener",
            Layer::Socket => "socket",
            Layer::Unread => "unread",
            Layer::Reassembly => "reassembly",
        };
        let l: &[(&str, &str)] = &[("reason", &r.reason), ("function", r.function.as_deref().unwrap_or("")), ("layer", layer)];
        p.counter("mcblast_recv_drop_reason_datagrams_total", "Data datagrams the kernel dropped, by drop reason (the same drops as the layer counts, finer).", l, r.data);
    }
}
