//! Pacing on an absolute schedule.
//!
//! Datagram `i` of a worker is due at `start + i / rate`; a batch is due when
//! its first datagram is, so with full batches batch `k` is due at
//! `start + k × batch / rate`. The schedule is computed, never accumulated
//! from sleeps, so wake-up latency does not drift the average rate. A worker
//! never sends a batch before it is due, and a batch is at most one quantum.
//!
//! Pacing never bursts more than one batch. A worker that is late (woken
//! late, descheduled) catches up, but never back to back: consecutive
//! batches are at least half a batch interval apart, so it catches up at
//! most at twice the rate, one batch at a time. Only a worker more than
//! [`CATCH_UP_NS`] behind (a long stall, or asked for more than it can do)
//! gives the time up: its schedule is rebased to now, and that is counted as
//! a *slip* with the datagrams' worth of time given up (the *deficit*). So
//! the average rate is exact whenever the sender can keep up, and when it
//! cannot, the report says by how much.
/// Longest stretch of datagrams a paced batch may carry: at low rates a
/// batch holds at most this much time's worth, so pacing stays smooth (one
/// datagram per wake-up below 5,000 datagrams/s).
pub const QUANTUM_NS: f64 = 200_000.0;

/// How far behind its schedule a worker may fall and still catch up; past
/// this it slips (rebases) instead.
pub const CATCH_UP_NS: u64 = 100_000_000;

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
#[derive(Debug, Clone)]
pub struct Pacer {
    /// When datagram `base` is due (CLOCK_MONOTONIC ns): the start, or the
    /// time of the last slip.
    start_ns: u64,
    base: u64,
    ns_per_datagram: f64,
    /// One full batch's worth of time.
    batch_ns: f64,
    stats: PaceStats,
    last_send_ns: Option<u64>,
}

/// How a worker kept to its schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PaceStats {
    /// Times the worker was more than [`CATCH_UP_NS`] late and its schedule was rebased.
    pub slips: u64,
    /// The time given up at those slips, in datagrams' worth.
    pub deficit: f64,
    /// Shortest and longest time between two batches (ns); None before the second batch.
    pub gap_min_ns: Option<u64>,
    pub gap_max_ns: Option<u64>,
}

impl PaceStats {
    /// Combines two workers' stats.
    pub fn merge(self, o: PaceStats) -> PaceStats {
        let pick = |a: Option<u64>, b: Option<u64>, f: fn(u64, u64) -> u64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        PaceStats {
            slips: self.slips + o.slips,
            deficit: self.deficit + o.deficit,
            gap_min_ns: pick(self.gap_min_ns, o.gap_min_ns, u64::min),
            gap_max_ns: pick(self.gap_max_ns, o.gap_max_ns, u64::max),
        }
    }
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
    /// A schedule of `pps` datagrams/s in batches of `quantum` (see
    /// [`quantum`]) starting at `start_ns` (CLOCK_MONOTONIC). The plan
    /// keeps `pps` finite and positive.
    pub fn new(start_ns: u64, pps: f64, quantum: usize) -> Pacer {
        assert!(pps > 0.0 && pps.is_finite() && quantum > 0);
        let ns_per_datagram = 1e9 / pps;
        Pacer {
            start_ns,
            base: 0,
            ns_per_datagram,
            batch_ns: quantum as f64 * ns_per_datagram,
            stats: PaceStats::default(),
            last_send_ns: None,
        }
    }

    /// When the worker's datagram number `i` (counting from 0, at least the
    /// number sent at the last slip) is due on the current schedule.
    #[inline]
    pub fn due_ns(&self, i: u64) -> u64 {
        // f64 → u64 saturates, and so does the sum: a schedule beyond the
        // end of time is never due.
        self.start_ns.saturating_add((i.saturating_sub(self.base) as f64 * self.ns_per_datagram) as u64)
    }

    /// One full batch's worth of time, in ns.
    pub fn batch_ns(&self) -> f64 {
        self.batch_ns
    }

    /// Given the time and how many datagrams the worker has sent, whether to
    /// send the next batch or sleep. A `Send` answer means the batch goes
    /// out now: it rebases the schedule first when the worker slipped.
    #[inline]
    pub fn step(&mut self, now_ns: u64, sent: u64) -> Step {
        let due = self.due_ns(sent);
        if due > now_ns {
            return Step::Sleep(due.min(now_ns.saturating_add(MAX_SLEEP_NS)));
        }
        let late = now_ns - due;
        if late > CATCH_UP_NS {
            self.stats.slips += 1;
            self.stats.deficit += late as f64 / self.ns_per_datagram;
            self.start_ns = now_ns;
            self.base = sent;
        } else if let Some(prev) = self.last_send_ns {
            // Catching up: at most twice the rate, never back to back.
            let earliest = prev.saturating_add((self.batch_ns / 2.0) as u64);
            if now_ns < earliest {
                return Step::Sleep(earliest);
            }
        }
        if let Some(prev) = self.last_send_ns {
            let gap = now_ns - prev;
            self.stats.gap_min_ns = Some(self.stats.gap_min_ns.map_or(gap, |g| g.min(gap)));
            self.stats.gap_max_ns = Some(self.stats.gap_max_ns.map_or(gap, |g| g.max(gap)));
        }
        self.last_send_ns = Some(now_ns);
        Step::Send
    }

    /// Slips, deficit and batch gaps so far.
    pub fn stats(&self) -> PaceStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_absolute() {
        let p = Pacer::new(1_000, 1_000_000.0 / 32.0 * 32.0, 32); // 1 Mpps
        assert_eq!(p.due_ns(0), 1_000);
        assert_eq!(p.due_ns(32), 1_000 + 32_000);
        // Batch k of 32 is due at start + k × 32 / rate, exactly, even an hour in.
        let k = 3_600_000_000u64 / 32;
        assert_eq!(p.due_ns(k * 32), 1_000 + 3_600_000_000_000);
        // The slowest rate the plan allows, far past any run: no overflow.
        let slow = Pacer::new(u64::MAX - 10, 1e-3 / 65_535.0, 1);
        assert_eq!(slow.due_ns(1_000_000), u64::MAX);
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        // 3 flows sharing 20,000 pps split as 6666.67 each: after a simulated
        // hour the schedule is within a microsecond of the ideal.
        let p = Pacer::new(0, 20_000.0 / 3.0, 1);
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
        let mut p = Pacer::new(1_000_000, 1_000.0, 1); // one per ms
        assert_eq!(p.step(999_999, 0), Step::Sleep(1_000_000));
        assert_eq!(p.step(1_000_000, 0), Step::Send);
        assert_eq!(p.step(1_000_000, 1), Step::Sleep(2_000_000));
        // Late by exactly one batch interval: on schedule still, no slip.
        assert_eq!(p.step(3_000_000, 2), Step::Send);
        assert_eq!(p.stats().slips, 0);
        assert_eq!(p.due_ns(3), 4_000_000);
        let mut slow = Pacer::new(0, 0.5, 1); // one per 2 s
        assert_eq!(slow.step(1, 1), Step::Sleep(1 + MAX_SLEEP_NS));
    }

    /// Drives a pacer the way a worker does, with a fake clock: `wake(now)`
    /// is when a sleep until `now` really ends, `send_ns` what a batch
    /// costs. Returns (send time, due time on the schedule in force) of
    /// every batch, and the time at the end.
    fn drive(
        p: &mut Pacer,
        q: usize,
        total: u64,
        mut wake: impl FnMut(u64) -> u64,
        mut send_ns: impl FnMut(u64) -> u64,
    ) -> (Vec<(u64, u64)>, u64) {
        let (mut now, mut sent, mut batches) = (0u64, 0u64, Vec::new());
        while sent < total {
            match p.step(now, sent) {
                Step::Sleep(t) => {
                    assert!(t > now);
                    now = wake(t);
                }
                Step::Send => {
                    let due = p.due_ns(sent);
                    assert!(due <= now, "sent before due");
                    batches.push((now, due));
                    let n = batch_len(q, sent, Some(total));
                    assert!(n >= 1 && n <= q);
                    sent += n as u64;
                    now += send_ns(now);
                }
            }
        }
        (batches, now)
    }

    /// Wake-ups late by a varying amount, always less than a batch interval:
    /// no slip, no batch before it is due, and the average rate exact.
    #[test]
    fn simulated_worker_is_exact_on_average_and_never_early() {
        let pps = 20_000.0;
        let q = quantum(Some(pps), 32); // 4: a batch interval of 200 µs
        let mut p = Pacer::new(0, pps, q);
        let total = 200_000u64; // ten simulated seconds
        let mut lateness = 0u64;
        let (batches, now) = drive(
            &mut p,
            q,
            total,
            |t| {
                lateness = (lateness * 7 + 13_001) % 90_000; // 0..90 µs of wake-up latency
                t + lateness
            },
            |_| 2_000, // the send takes 2 µs
        );
        assert_eq!(p.stats().slips, 0);
        assert_eq!(p.stats().deficit, 0.0);
        // Every batch on the one schedule: batch k due at k × 200 µs.
        assert!(batches.iter().enumerate().all(|(k, &(_, due))| due == k as u64 * 200_000));
        // The last batch went out within one wake-up latency (+ send) of its due time.
        let last_due = p.due_ns(total - q as u64);
        assert!(now <= last_due + 90_000 + 2 * 2_000, "now {now} last due {last_due}");
        let rate = total as f64 / (p.due_ns(total) as f64 / 1e9);
        assert!((rate - pps).abs() < 1e-6 * pps);
        let s = p.stats();
        assert!(s.gap_min_ns.unwrap() > 0 && s.gap_max_ns.unwrap() < 200_000 + 90_000 + 2_000, "{s:?}");
    }

    /// A worker descheduled for 10 ms catches up without a burst: batches
    /// stay at least half a batch interval apart, nothing is given up, and
    /// the schedule (so the average rate) is the original one.
    #[test]
    fn late_worker_catches_up_spaced() {
        let pps = 100_000.0;
        let q = quantum(Some(pps), 32); // 20: a batch interval of 200 µs
        let mut p = Pacer::new(0, pps, q);
        assert_eq!(p.batch_ns(), 200_000.0);
        let mut stalled = false;
        let total = 100_000u64;
        let (batches, now) = drive(
            &mut p,
            q,
            total,
            |t| {
                // Exact wake-ups, except once, 100 ms in.
                if t >= 100_000_000 && !stalled {
                    stalled = true;
                    t + 10_000_000
                } else {
                    t
                }
            },
            |_| 1_000,
        );
        let s = p.stats();
        assert_eq!((s.slips, s.deficit), (0, 0.0), "{s:?}");
        assert!(batches.windows(2).all(|w| w[1].0 - w[0].0 >= 100_000), "a burst");
        // One schedule throughout: batch k due at k × 200 µs; back on it after the catch-up.
        assert!(batches.iter().enumerate().all(|(k, &(_, due))| due == k as u64 * 200_000));
        let last_due = p.due_ns(total - q as u64);
        assert!(now <= last_due + 1_000, "caught up by the end: now {now}, last due {last_due}");
        let behind_after = batches.iter().filter(|&&(t, due)| t >= 130_000_000 && t != due).count();
        assert_eq!(behind_after, 0, "caught up within 2 × the stall");
    }

    /// A stall longer than CATCH_UP_NS is given up, not caught up: one slip,
    /// 200 ms = 20,000 datagrams' worth, batches still a batch interval apart.
    #[test]
    fn long_stall_slips_instead_of_catching_up() {
        let pps = 100_000.0;
        let q = quantum(Some(pps), 32);
        let mut p = Pacer::new(0, pps, q);
        let mut stalled = false;
        let (batches, _) = drive(
            &mut p,
            q,
            100_000,
            |t| {
                if t >= 100_000_000 && !stalled {
                    stalled = true;
                    t + 200_000_000
                } else {
                    t
                }
            },
            |_| 1_000,
        );
        let s = p.stats();
        assert_eq!(s.slips, 1);
        assert!((s.deficit - 20_000.0).abs() < 1e-6, "{s:?}");
        assert!(batches.windows(2).all(|w| w[1].0 - w[0].0 >= 200_000), "a burst");
        let after = batches.iter().position(|&(t, _)| t >= 300_000_000).unwrap();
        assert_eq!(batches[after].0, batches[after].1, "rebased to the wake-up");
        assert_eq!(batches[after + 1].1, batches[after].1 + 200_000);
    }

    /// A sender whose batch costs 1.5 batch intervals cannot keep up: it
    /// never bursts, falls behind until it slips, and what it sent plus what
    /// it gave up accounts for the whole time at the target rate, to within
    /// what it may still owe (CATCH_UP_NS).
    #[test]
    fn a_sender_that_cannot_keep_up_says_so() {
        let pps = 100_000.0;
        let q = quantum(Some(pps), 32); // 20, 200 µs
        let mut p = Pacer::new(0, pps, q);
        let total = 50_000u64;
        let (batches, now) = drive(&mut p, q, total, |t| t, |_| 300_000);
        let s = p.stats();
        assert!(s.slips >= 1 && s.deficit > 0.0, "{s:?}");
        assert!(batches.windows(2).all(|w| w[1].0 - w[0].0 >= 200_000), "a burst");
        let owed = now as f64 / 1e9 * pps - (total as f64 + s.deficit);
        let max_owed = CATCH_UP_NS as f64 / 1e9 * pps + 2.0 * q as f64;
        assert!((0.0..=max_owed).contains(&owed), "owed {owed} {s:?}");
        // Achieved: a batch per 300 µs, two thirds of the target.
        let achieved = total as f64 / (now as f64 / 1e9);
        assert!((achieved / pps - 2.0 / 3.0).abs() < 0.01, "{achieved}");
    }

    #[test]
    fn stats_merge_over_workers() {
        let a = PaceStats { slips: 1, deficit: 2.5, gap_min_ns: Some(10), gap_max_ns: Some(90) };
        let b = PaceStats { slips: 2, deficit: 1.0, gap_min_ns: Some(5), gap_max_ns: Some(50) };
        assert_eq!(
            a.merge(b),
            PaceStats { slips: 3, deficit: 3.5, gap_min_ns: Some(5), gap_max_ns: Some(90) }
        );
        assert_eq!(PaceStats::default().merge(a), a);
    }
}
