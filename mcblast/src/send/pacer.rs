//! Pacing on an absolute schedule.
//!
//! Datagram `i` of a worker is due at `start + i / rate`; a batch is due when
//! its first datagram is, so with full batches batch `k` is due at
//! `start + k × batch / rate`. The schedule is computed, never accumulated
//! from sleeps, so wake-up latency does not drift the average rate. A worker
//! never sends a batch before it is due, and a batch is at most one quantum;
//! a worker that fell behind (descheduled, or asked for more than it can do)
//! sends its late batches back to back, one per call, until it is on time
//! again, so the run's average rate is the one asked for.

/// Longest stretch of datagrams a paced batch may carry: at low rates a
/// batch holds at most this much time's worth, so pacing stays smooth (one
/// datagram per wake-up below 5,000 datagrams/s).
pub const QUANTUM_NS: f64 = 200_000.0;

/// The longest single sleep, so a sleeping worker notices Ctrl-C and its
/// deadline promptly even at very low rates.
pub const MAX_SLEEP_NS: u64 = 50_000_000;

/// Datagrams per batch for a worker sending `pps` datagrams/s (None: flat
/// out) with engine batches of at most `max_batch`.
pub fn quantum(pps: Option<f64>, max_batch: usize) -> usize {
    match pps {
        None => max_batch,
        Some(p) => ((p * QUANTUM_NS / 1e9).floor() as usize).clamp(1, max_batch),
    }
}

/// The size of the next batch: a quantum, or what is left of the flow's count.
pub fn batch_len(quantum: usize, sent: u64, count: Option<u64>) -> usize {
    match count {
        Some(c) => (c.saturating_sub(sent)).min(quantum as u64) as usize,
        None => quantum,
    }
}

/// One worker's schedule.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start_ns: u64,
    ns_per_datagram: f64,
}

/// What a worker does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the next batch now.
    Send,
    /// Sleep until this CLOCK_MONOTONIC time (already capped at [`MAX_SLEEP_NS`]), then ask again.
    Sleep(u64),
}

impl Pacer {
    /// A schedule of `pps` datagrams/s starting at `start_ns` (CLOCK_MONOTONIC).
    pub fn new(start_ns: u64, pps: f64) -> Pacer {
        assert!(pps > 0.0 && pps.is_finite());
        Pacer { start_ns, ns_per_datagram: 1e9 / pps }
    }

    /// When the worker's datagram number `i` (counting from 0) is due.
    #[inline]
    pub fn due_ns(&self, i: u64) -> u64 {
        self.start_ns + (i as f64 * self.ns_per_datagram) as u64
    }

    /// Given the time and how many datagrams the worker has sent, whether to
    /// send the next batch or sleep.
    #[inline]
    pub fn step(&self, now_ns: u64, sent: u64) -> Step {
        let due = self.due_ns(sent);
        if due <= now_ns { Step::Send } else { Step::Sleep(due.min(now_ns + MAX_SLEEP_NS)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_absolute() {
        let p = Pacer::new(1_000, 1_000_000.0 / 32.0 * 32.0); // 1 Mpps
        assert_eq!(p.due_ns(0), 1_000);
        assert_eq!(p.due_ns(32), 1_000 + 32_000);
        // Batch k of 32 is due at start + k × 32 / rate, exactly, even an hour in.
        let k = 3_600_000_000u64 / 32;
        assert_eq!(p.due_ns(k * 32), 1_000 + 3_600_000_000_000);
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        // 3 flows sharing 20,000 pps split as 6666.67 each: after a simulated
        // hour the schedule is within a microsecond of the ideal.
        let p = Pacer::new(0, 20_000.0 / 3.0);
        let i = (20_000.0f64 / 3.0 * 3600.0) as u64;
        let ideal = i as f64 * 3.0 / 20_000.0 * 1e9;
        assert!((p.due_ns(i) as f64 - ideal).abs() < 1_000.0);
        // Monotonic.
        assert!((0..10_000).all(|i| p.due_ns(i) <= p.due_ns(i + 1)));
    }

    #[test]
    fn quantum_follows_rate_and_batch() {
        assert_eq!(quantum(None, 32), 32);
        assert_eq!(quantum(Some(1.0), 32), 1);
        assert_eq!(quantum(Some(4_999.0), 32), 1);
        assert_eq!(quantum(Some(20_000.0), 32), 4);
        assert_eq!(quantum(Some(1e6), 32), 32);
        assert_eq!(quantum(Some(1e9), 1), 1);
    }

    #[test]
    fn batch_len_stops_at_count() {
        assert_eq!(batch_len(32, 0, None), 32);
        assert_eq!(batch_len(32, 0, Some(2000)), 32);
        assert_eq!(batch_len(32, 1984, Some(2000)), 16);
        assert_eq!(batch_len(32, 2000, Some(2000)), 0);
        // Batches of a 2000-datagram flow sum to exactly 2000.
        let (mut sent, mut batches) = (0u64, 0);
        loop {
            let n = batch_len(32, sent, Some(2000));
            if n == 0 {
                break;
            }
            sent += n as u64;
            batches += 1;
        }
        assert_eq!((sent, batches), (2000, 63));
    }

    #[test]
    fn step_waits_then_sends_and_caps_long_sleeps() {
        let p = Pacer::new(1_000_000, 1_000.0); // one per ms
        assert_eq!(p.step(999_999, 0), Step::Sleep(1_000_000));
        assert_eq!(p.step(1_000_000, 0), Step::Send);
        assert_eq!(p.step(1_000_000, 1), Step::Sleep(2_000_000));
        let slow = Pacer::new(0, 0.5); // one per 2 s
        assert_eq!(slow.step(1, 1), Step::Sleep(1 + MAX_SLEEP_NS));
    }

    /// Drives the pacer the way a worker does, with a fake clock whose
    /// wake-ups are late by a varying amount, and checks: no batch before it
    /// is due, no batch larger than a quantum, and the average rate exact.
    #[test]
    fn simulated_worker_is_exact_on_average_and_never_early() {
        let pps = 20_000.0;
        let q = quantum(Some(pps), 32);
        let p = Pacer::new(0, pps);
        let (mut now, mut sent, mut lateness) = (0u64, 0u64, 0u64);
        let total = 200_000u64; // ten simulated seconds
        while sent < total {
            match p.step(now, sent) {
                Step::Sleep(t) => {
                    assert!(t > now);
                    lateness = (lateness * 7 + 13_001) % 90_000; // 0..90 µs of wake-up latency
                    now = t + lateness;
                }
                Step::Send => {
                    assert!(p.due_ns(sent) <= now, "sent before due");
                    let n = batch_len(q, sent, Some(total));
                    assert!(n >= 1 && n <= q);
                    sent += n as u64;
                    now += 2_000; // the send takes 2 µs
                }
            }
        }
        // The last batch went out within one wake-up latency (+ send) of its due time.
        let last_due = p.due_ns(total - q as u64);
        assert!(now <= last_due + 90_000 + 2 * 2_000, "now {now} last due {last_due}");
        let rate = total as f64 / (p.due_ns(total) as f64 / 1e9);
        assert!((rate - pps).abs() < 1e-6 * pps);
    }

    /// A worker descheduled for 10 ms catches up batch by batch (each at most
    /// a quantum), then is back on the schedule.
    #[test]
    fn late_worker_catches_up_in_quanta() {
        let pps = 100_000.0;
        let q = quantum(Some(pps), 32); // 20
        let p = Pacer::new(0, pps);
        let mut now = 10_000_000; // woke 10 ms late: 1,000 datagrams behind
        let mut sent = 0u64;
        let mut sends = 0;
        while p.step(now, sent) == Step::Send {
            sent += q as u64;
            sends += 1;
            now += 1_000;
        }
        assert!(sent >= 1_000 && sends == sent / q as u64);
        assert!(matches!(p.step(now, sent), Step::Sleep(_)));
    }
}
