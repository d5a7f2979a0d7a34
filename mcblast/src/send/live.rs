//! The sender's live page (`send --prometheus`): datagrams per worker and per flow, and the interface's own
//! counters, in the exposition format of [`crate::prom`].

use std::sync::Arc;

use crate::prom::{Page, build_info};

/// What the sender's page reads: the run, its flows, the workers' and the
/// flows' published counters (the same the interval lines and summary read).
pub struct SendLive {
    pub run: u32,
    pub flows: Vec<super::plan::FlowPlan>,
    /// Datagram length (every data datagram has it).
    pub length: u64,
    pub workers: Arc<[super::counters::WorkerCounters]>,
    /// By flow id.
    pub flow_sent: Arc<[super::counters::FlowCounter]>,
}

/// The sender's page: per flow what was sent (labels as on the receivers'
/// pages: run, flow, group; and the worker), per worker the attempts,
/// refusals and pacing; the ledger's interface counters as deltas since the
/// start. No total series: `sum()` adds the flows or workers up.
pub fn send_page(v: &SendLive, ledger: Option<(&str, &super::ledger::TxCounters)>) -> String {
    let mut p = Page::default();
    build_info(&mut p);
    let run = v.run.to_string();
    for f in &v.flows {
        let (flow, group, worker) = (f.id.to_string(), f.group.to_string(), f.worker.to_string());
        let l: &[(&str, &str)] = &[("run", &run), ("flow", &flow), ("group", &group), ("worker", &worker)];
        let sent = v.flow_sent.get(f.id as usize).map_or(0, |c| c.read());
        p.counter("mcblast_send_datagrams_total", "Data datagrams the kernel took.", l, sent);
        p.counter("mcblast_send_bytes_total", "UDP payload bytes of the data datagrams sent.", l, sent * v.length);
    }
    for (i, w) in v.workers.iter().enumerate() {
        send_worker(&mut p, &run, &i.to_string(), &w.read());
    }
    if let Some((iface, start)) = ledger {
        send_ledger(&mut p, &run, iface, start);
    }
    p.render()
}

/// One worker's attempts, refusals and pacing.
fn send_worker(p: &mut Page, run: &str, worker: &str, c: &super::counters::Counts) {
    let l: &[(&str, &str)] = &[("run", run), ("worker", worker)];
    p.counter("mcblast_send_attempts_total", "Send attempts: datagrams and end markers handed to the kernel + refused.", l, c.sent + c.end_markers + c.errors());
    p.counter("mcblast_send_end_markers_total", "End-of-flow markers the kernel took.", l, c.end_markers);
    for (reason, n) in [("enobufs", c.enobufs), ("eagain", c.eagain), ("other", c.other)] {
        let lr: &[(&str, &str)] = &[("run", run), ("worker", worker), ("reason", reason)];
        p.counter("mcblast_send_refused_attempts_total", "Send attempts the kernel refused (each is asked again).", lr, n);
    }
    p.counter("mcblast_send_pacing_slips_total", "Times the pacer fell behind its schedule.", l, c.slips);
    p.counter("mcblast_send_pacing_deficit_datagrams_total", "Datagrams' worth of time the pacer gave up after slips.", l, c.deficit);
}

/// The interface's transmit counters since the start.
fn send_ledger(p: &mut Page, run: &str, iface: &str, start: &super::ledger::TxCounters) {
    let now = super::ledger::TxCounters::read(iface);
    let l: &[(&str, &str)] = &[("run", run), ("interface", iface)];
    let d = |a: Option<u64>, b: Option<u64>| Some(a?.wrapping_sub(b?));
    for (name, help, v) in [
        ("mcblast_send_interface_tx_packets_total", "Packets the interface sent since the start (all its traffic).", d(now.tx_packets, start.tx_packets)),
        ("mcblast_send_qdisc_dropped_packets_total", "Root qdisc drops since the start (sent again after ENOBUFS).", d(now.qdisc_drops, start.qdisc_drops)),
        ("mcblast_send_tx_dropped_packets_total", "Packets the driver dropped after taking them since the start.", d(now.tx_dropped, start.tx_dropped)),
        ("mcblast_send_tx_error_packets_total", "Packets the driver failed to send since the start.", d(now.tx_errors, start.tx_errors)),
    ] {
        if let Some(v) = v {
            p.counter(name, help, l, v);
        }
    }
}
