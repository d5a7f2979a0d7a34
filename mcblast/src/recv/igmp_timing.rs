//! IGMP timing of one receiver: join → first datagram, leave → last
//! datagram (with `recv --leave-window`), the IGMP queries that reached the
//! host, and dropouts (gaps in arrival while the sender was active) each
//! lined up with the query before it.
//!
//! Every time is CLOCK_TAI nanoseconds, the clock of the counters' receive
//! times (`first_rx_ns`, `last_rx_ns`: the kernel counter's
//! `bpf_ktime_get_tai_ns`, the socket counter's `clock_gettime`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use mcblast_common::{FlowKey, FlowState};
use serde::Serialize;

use crate::mcast::{IgmpQuery, parse_igmp_query};

/// A gap is a dropout when it is this many expected inter-arrival times long…
pub const DROPOUT_FACTOR: u64 = 10;
/// …and at least this long (scheduling hiccups on a busy host are shorter).
pub const MIN_DROPOUT_NS: u64 = 100_000_000;
/// Datagrams a flow needs before its inter-arrival time is trusted.
const MIN_SAMPLES: u64 = 10;

/// A query as the host saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenQuery {
    pub at_ns: u64,
    pub query: IgmpQuery,
}

/// A raw IGMP socket read on a thread: every query the host receives, timestamped.
pub struct QueryWatch {
    seen: Arc<Mutex<Vec<SeenQuery>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl QueryWatch {
    /// Starts watching (needs CAP_NET_RAW).
    pub fn start() -> std::io::Result<QueryWatch> {
        let sock = UdpSocket::from(crate::sys::raw_ipv4_socket(libc::IPPROTO_IGMP)?);
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (v, s) = (seen.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("mcblast-igmp".into()).spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                // Timeouts and errors: look at the stop flag again.
                if let Ok(n) = sock.recv(&mut buf)
                    && let Some(query) = parse_igmp_query(&buf[..n])
                {
                    let at_ns = crate::clock::tai_ns();
                    v.lock().unwrap_or_else(PoisonError::into_inner).push(SeenQuery { at_ns, query });
                }
            }
        })?;
        Ok(QueryWatch { seen, stop, thread: Some(thread) })
    }

    /// Stops the thread; the queries seen.
    pub fn finish(mut self) -> Vec<SeenQuery> {
        self.halt();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for QueryWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A gap in one flow's arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub key: FlowKey,
    /// The last datagram before the gap.
    pub start_ns: u64,
    /// The first datagram after it (from the next sample: its last arrival
    /// minus the expected spacing of the datagrams that came since).
    pub end_ns: u64,
    /// The flow's mean inter-arrival time before the gap.
    pub spacing_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    received: u64,
    first_rx: u64,
    last_rx: u64,
}

/// Finds dropouts from repeated samples of the flows' counters.
#[derive(Debug, Default)]
pub struct GapTracker {
    flows: HashMap<FlowKey, Seen>,
    pub gaps: Vec<Gap>,
}

impl GapTracker {
    /// Takes one sample of every flow.
    pub fn observe(&mut self, flows: &[(FlowKey, FlowState)]) {
        for (k, s) in flows {
            let now = Seen { received: s.received, first_rx: s.first_rx_ns, last_rx: s.last_rx_ns };
            if let Some(prev) = self.flows.insert(*k, now)
                && let Some(g) = gap(k, &prev, &now)
            {
                self.gaps.push(g);
            }
        }
    }
}

/// The dropout between two samples of one flow, if any.
fn gap(key: &FlowKey, prev: &Seen, now: &Seen) -> Option<Gap> {
    if prev.received < MIN_SAMPLES || now.received <= prev.received || now.last_rx <= prev.last_rx {
        return None;
    }
    let spacing = prev.last_rx.saturating_sub(prev.first_rx) / (prev.received - 1);
    let end = now.last_rx.saturating_sub((now.received - prev.received - 1) * spacing).max(prev.last_rx);
    let len = end - prev.last_rx;
    (len > (DROPOUT_FACTOR * spacing).max(MIN_DROPOUT_NS)).then_some(Gap { key: *key, start_ns: prev.last_rx, end_ns: end, spacing_ns: spacing })
}

/// The latest query at or before `t` (general or group-specific).
pub fn query_before(queries: &[SeenQuery], t: u64) -> Option<&SeenQuery> {
    queries.iter().filter(|q| q.at_ns <= t).max_by_key(|q| q.at_ns)
}

/// The median time between consecutive general queries, seconds.
pub fn query_interval_s(queries: &[SeenQuery]) -> Option<f64> {
    let t: Vec<u64> = queries.iter().filter(|q| q.query.group.is_unspecified()).map(|q| q.at_ns).collect();
    let mut d: Vec<u64> = t.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    if d.is_empty() {
        return None;
    }
    d.sort_unstable();
    Some(d[d.len() / 2] as f64 / 1e9)
}

/// What happened after the receiver left: the kernel counter's flows at
/// the leave and at the end of the window.
pub struct Leave<'a> {
    pub at_ns: u64,
    pub window_end_ns: u64,
    pub before: &'a [(FlowKey, FlowState)],
    pub after: &'a [(FlowKey, FlowState)],
}

/// The `{"type":"igmp"}` line.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct IgmpReport {
    pub role: &'static str,
    /// Which counter's receive times were used (`kernel` when it runs).
    pub counter: &'static str,
    pub groups: Vec<GroupTiming>,
    /// Queries seen, in order; `at_s` is seconds since the (first) join.
    pub queries: Vec<QueryLine>,
    /// Median seconds between general queries (null with fewer than 2).
    pub query_interval_s: Option<f64>,
    pub dropouts: Vec<Dropout>,
    /// Why queries could not be watched (no CAP_NET_RAW), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queries_unavailable: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct GroupTiming {
    pub group: String,
    /// Join (IP_ADD_MEMBERSHIP) to the group's first datagram, ms (null: none arrived).
    pub join_to_first_ms: Option<f64>,
    /// With --leave-window: datagrams of the group the kernel counter saw after the leave.
    pub after_leave: Option<u64>,
    /// Leave to the last of those datagrams, ms (null: none after the leave).
    pub leave_to_last_ms: Option<f64>,
    /// Whether traffic had stopped before the window ended (the last datagram
    /// more than a dropout's length before its end).
    pub stopped_after_leave: Option<bool>,
    pub leave_window_s: Option<f64>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct QueryLine {
    pub at_s: f64,
    pub version: u8,
    pub group: String,
    pub source: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Dropout {
    pub sender: String,
    pub group: String,
    pub run: u32,
    pub flow: u32,
    /// Seconds since the join of the last datagram before the gap.
    pub start_s: f64,
    pub duration_ms: f64,
    /// The flow's expected inter-arrival time, ms.
    pub spacing_ms: f64,
    /// The query before the gap: seconds since the join, and ms from it to the gap.
    pub query_at_s: Option<f64>,
    pub query_to_gap_ms: Option<f64>,
}

fn ip(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}

/// Builds the report. `flows`: the counter's final flows; `join_ns`: when
/// the first join was asked.
pub fn report(
    counter: &'static str,
    groups: &[Ipv4Addr],
    join_ns: u64,
    flows: &[(FlowKey, FlowState)],
    queries: &[SeenQuery],
    gaps: &[Gap],
    leave: Option<&Leave<'_>>,
) -> IgmpReport {
    let since_join = |t: u64| (t as i64 - join_ns as i64) as f64 / 1e9;
    let of = |g: &Ipv4Addr, f: &[(FlowKey, FlowState)]| -> Vec<FlowState> {
        f.iter().filter(|(k, _)| ip(k.group) == *g).map(|(_, s)| *s).collect()
    };
    let groups = groups
        .iter()
        .map(|g| {
            let first = of(g, flows).iter().filter(|s| s.received > 0).map(|s| s.first_rx_ns).min();
            let mut t = GroupTiming {
                group: g.to_string(),
                join_to_first_ms: first.map(|f| (f as i64 - join_ns as i64) as f64 / 1e6),
                after_leave: None,
                leave_to_last_ms: None,
                stopped_after_leave: None,
                leave_window_s: None,
            };
            if let Some(l) = leave {
                let total = |f: &[(FlowKey, FlowState)]| of(g, f).iter().map(|s| s.received).sum::<u64>();
                let after = total(l.after).saturating_sub(total(l.before));
                let last = of(g, l.after).iter().map(|s| s.last_rx_ns).max().unwrap_or(0);
                t.after_leave = Some(after);
                t.leave_to_last_ms = (after > 0 && last > l.at_ns).then(|| (last - l.at_ns) as f64 / 1e6);
                t.stopped_after_leave = Some(last + MIN_DROPOUT_NS < l.window_end_ns);
                t.leave_window_s = Some((l.window_end_ns - l.at_ns) as f64 / 1e9);
            }
            t
        })
        .collect();
    let dropouts = gaps
        .iter()
        .map(|g| {
            let q = query_before(queries, g.start_ns);
            Dropout {
                sender: ip(g.key.sender).to_string(),
                group: ip(g.key.group).to_string(),
                run: g.key.run,
                flow: g.key.flow,
                start_s: since_join(g.start_ns),
                duration_ms: (g.end_ns - g.start_ns) as f64 / 1e6,
                spacing_ms: g.spacing_ns as f64 / 1e6,
                query_at_s: q.map(|q| since_join(q.at_ns)),
                query_to_gap_ms: q.map(|q| (g.start_ns - q.at_ns) as f64 / 1e6),
            }
        })
        .collect();
    IgmpReport {
        role: "recv",
        counter,
        groups,
        queries: queries
            .iter()
            .map(|q| QueryLine {
                at_s: since_join(q.at_ns),
                version: q.query.version,
                group: q.query.group.to_string(),
                source: q.query.source.to_string(),
            })
            .collect(),
        query_interval_s: query_interval_s(queries),
        dropouts,
        queries_unavailable: None,
    }
}

/// The human line(s).
impl crate::output::Record for IgmpReport {
    const TYPE: &'static str = "igmp";
    fn human(&self) -> String {
        human(self)
    }
}

pub fn human(r: &IgmpReport) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let mut t = String::from("igmp:");
    for g in &r.groups {
        t.push_str(&format!(" {} join->first {}", g.group, ms(g.join_to_first_ms)));
        if let Some(n) = g.after_leave {
            t.push_str(&format!(
                ", leave->last {} ({n} datagrams after the leave, {} within the {:.1} s window)",
                ms(g.leave_to_last_ms),
                if g.stopped_after_leave == Some(true) { "stopped" } else { "still arriving" },
                g.leave_window_s.unwrap_or(0.0)
            ));
        }
        t.push(';');
    }
    match (&r.queries_unavailable, r.query_interval_s) {
        (Some(why), _) => t.push_str(&format!(" queries not watched ({why});")),
        (None, Some(iv)) => t.push_str(&format!(" {} queries seen, every {iv:.1} s;", r.queries.len())),
        (None, None) => t.push_str(&format!(" {} queries seen;", r.queries.len())),
    }
    t.push_str(&format!(" {} dropout(s)", r.dropouts.len()));
    for d in &r.dropouts {
        t.push_str(&format!(
            "\n  dropout flow {} of {}: {:.1} ms from {:.3} s{}",
            d.flow,
            d.sender,
            d.duration_ms,
            d.start_s,
            match (d.query_at_s, d.query_to_gap_ms) {
                (Some(q), Some(gap)) => format!(", {gap:.0} ms after the query at {q:.3} s"),
                _ => ", no query before it".to_string(),
            }
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey { sender: u32::from_ne_bytes([10, 0, 0, 1]), group: u32::from_ne_bytes([239, 0, 0, 1]), run: 7, flow: 0 }
    }

    fn st(received: u64, first: u64, last: u64) -> FlowState {
        FlowState { received, first_rx_ns: first, last_rx_ns: last, ..FlowState::default() }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn steady_flow_has_no_gaps_and_a_stall_is_one() {
        let mut t = GapTracker::default();
        // 1000 datagrams/s from t = 1 s, sampled every 50 ms.
        for i in 1..=20u64 {
            let n = i * 50;
            t.observe(&[(key(), st(n, 1000 * MS, 1000 * MS + (n - 1) * MS))]);
        }
        assert!(t.gaps.is_empty(), "{:?}", t.gaps);
        // Nothing arrives for 2 s, then traffic resumes: 30 datagrams by the next sample.
        let before = st(1000, 1000 * MS, 1999 * MS);
        t.observe(&[(key(), before)]);
        t.observe(&[(key(), before)]);
        t.observe(&[(key(), st(1030, 1000 * MS, 4029 * MS))]);
        assert_eq!(t.gaps.len(), 1);
        let g = t.gaps[0];
        assert_eq!((g.start_ns, g.end_ns, g.spacing_ns), (1999 * MS, 4000 * MS, MS));
        // 99 ms at a 1 ms spacing is below the floor; 10 x spacing rules for slow flows.
        assert!(gap(&key(), &Seen { received: 100, first_rx: 0, last_rx: 99 * MS }, &Seen { received: 101, first_rx: 0, last_rx: 198 * MS }).is_none());
        let slow = Seen { received: 11, first_rx: 0, last_rx: 10_000 * MS };
        assert!(gap(&key(), &slow, &Seen { received: 12, first_rx: 0, last_rx: 19_000 * MS }).is_none());
        assert!(gap(&key(), &slow, &Seen { received: 12, first_rx: 0, last_rx: 21_000 * MS }).is_some());
        // Too few datagrams to know the spacing.
        assert!(gap(&key(), &Seen { received: 3, first_rx: 0, last_rx: 2 * MS }, &Seen { received: 4, first_rx: 0, last_rx: 900 * MS }).is_none());
    }

    fn q(at_ms: u64, group: Ipv4Addr) -> SeenQuery {
        SeenQuery { at_ns: at_ms * MS, query: IgmpQuery { source: Ipv4Addr::new(10, 0, 0, 254), version: 3, group } }
    }

    #[test]
    fn queries_line_up_with_gaps() {
        let any = Ipv4Addr::UNSPECIFIED;
        let qs = [q(1000, any), q(3000, any), q(3500, Ipv4Addr::new(239, 0, 0, 1)), q(5000, any), q(7100, any)];
        assert_eq!(query_before(&qs, 3400 * MS).unwrap().at_ns, 3000 * MS);
        assert_eq!(query_before(&qs, 3500 * MS).unwrap().at_ns, 3500 * MS);
        assert!(query_before(&qs, 999 * MS).is_none());
        // General queries only: 2.0, 2.0, 2.1 s apart.
        assert_eq!(query_interval_s(&qs), Some(2.0));
        assert_eq!(query_interval_s(&qs[..1]), None);

        let gaps = [Gap { key: key(), start_ns: 3600 * MS, end_ns: 5600 * MS, spacing_ns: MS }];
        let flows = [(key(), st(5000, 900 * MS, 9000 * MS))];
        let r = report("kernel", &[Ipv4Addr::new(239, 0, 0, 1)], 500 * MS, &flows, &qs, &gaps, None);
        assert_eq!(r.groups[0].join_to_first_ms, Some(400.0));
        assert_eq!(r.groups[0].after_leave, None);
        let d = &r.dropouts[0];
        assert_eq!((d.start_s, d.duration_ms, d.query_at_s, d.query_to_gap_ms), (3.1, 2000.0, Some(3.0), Some(100.0)));
        assert!(human(&r).contains("2000.0 ms from 3.100 s, 100 ms after the query at 3.000 s"), "{}", human(&r));
    }

    #[test]
    fn leave_counts_what_came_after() {
        let g = Ipv4Addr::new(239, 0, 0, 1);
        let before = [(key(), st(5000, 1000 * MS, 6000 * MS))];
        let after = [(key(), st(7000, 1000 * MS, 8000 * MS))];
        let l = Leave { at_ns: 6000 * MS, window_end_ns: 10_000 * MS, before: &before, after: &after };
        let r = report("kernel", &[g], 900 * MS, &after, &[], &[], Some(&l));
        let t = &r.groups[0];
        assert_eq!((t.after_leave, t.leave_to_last_ms, t.stopped_after_leave, t.leave_window_s), (Some(2000), Some(2000.0), Some(true), Some(4.0)));
        // Still arriving at the end of the window.
        let after = [(key(), st(9000, 1000 * MS, 9990 * MS))];
        let l = Leave { at_ns: 6000 * MS, window_end_ns: 10_000 * MS, before: &before, after: &after };
        assert_eq!(report("kernel", &[g], 0, &after, &[], &[], Some(&l)).groups[0].stopped_after_leave, Some(false));
        // Nothing after the leave.
        let l = Leave { at_ns: 6000 * MS, window_end_ns: 10_000 * MS, before: &before, after: &before };
        let t = report("kernel", &[g], 0, &before, &[], &[], Some(&l)).groups[0].clone();
        assert_eq!((t.after_leave, t.leave_to_last_ms), (Some(0), None));
    }
}
