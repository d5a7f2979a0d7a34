//! Per-worker counters: one writer (its worker) and one reader (the
//! reporter). Each worker's block sits on its own pair of cache lines, so
//! workers never share a line; the worker keeps the counts in plain local
//! variables and publishes them with Relaxed stores once per batch (no
//! read-modify-write, no lock), and the reporter reads them with Relaxed loads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Data datagrams the kernel took.
    pub sent: u64,
    /// Their bytes (UDP payload).
    pub bytes: u64,
    pub enobufs: u64,
    pub eagain: u64,
    pub other: u64,
    /// End markers the kernel took.
    pub end_markers: u64,
    /// Pacing: schedule slips, and the datagrams' worth of time they gave up
    /// (see `pacer`).
    pub slips: u64,
    pub deficit: u64,
}

impl Counts {
    pub fn errors(&self) -> u64 {
        self.enobufs + self.eagain + self.other
    }

    pub fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.bytes += o.bytes;
        self.enobufs += o.enobufs;
        self.eagain += o.eagain;
        self.other += o.other;
        self.end_markers += o.end_markers;
        self.slips += o.slips;
        self.deficit += o.deficit;
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            sent: self.sent - earlier.sent,
            bytes: self.bytes - earlier.bytes,
            enobufs: self.enobufs - earlier.enobufs,
            eagain: self.eagain - earlier.eagain,
            other: self.other - earlier.other,
            end_markers: self.end_markers - earlier.end_markers,
            slips: self.slips - earlier.slips,
            deficit: self.deficit - earlier.deficit,
        }
    }
}

/// One worker's published counters. 128-byte aligned: adjacent-line
/// prefetch on x86 pulls pairs of 64-byte lines, so 64 is not enough.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct WorkerCounters {
    sent: AtomicU64,
    bytes: AtomicU64,
    enobufs: AtomicU64,
    eagain: AtomicU64,
    other: AtomicU64,
    end_markers: AtomicU64,
    slips: AtomicU64,
    deficit: AtomicU64,
}

impl WorkerCounters {
    /// Publishes the worker's counts (only the owning worker calls this).
    #[inline]
    pub fn publish(&self, c: &Counts) {
        self.sent.store(c.sent, Relaxed);
        self.bytes.store(c.bytes, Relaxed);
        self.enobufs.store(c.enobufs, Relaxed);
        self.eagain.store(c.eagain, Relaxed);
        self.other.store(c.other, Relaxed);
        self.end_markers.store(c.end_markers, Relaxed);
        self.slips.store(c.slips, Relaxed);
        self.deficit.store(c.deficit, Relaxed);
    }

    pub fn read(&self) -> Counts {
        Counts {
            sent: self.sent.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            enobufs: self.enobufs.load(Relaxed),
            eagain: self.eagain.load(Relaxed),
            other: self.other.load(Relaxed),
            end_markers: self.end_markers.load(Relaxed),
            slips: self.slips.load(Relaxed),
            deficit: self.deficit.load(Relaxed),
        }
    }
}

/// One flow's published count of data datagrams the kernel took (the
/// flow's next sequence number): one writer (the flow's worker, once per
/// send call) and one reader (the Prometheus page). On its own pair of
/// cache lines, as [`WorkerCounters`], so workers never share a line.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct FlowCounter {
    sent: AtomicU64,
}

impl FlowCounter {
    #[inline]
    pub fn publish(&self, sent: u64) {
        self.sent.store(sent, Relaxed);
    }

    pub fn read(&self) -> u64 {
        self.sent.load(Relaxed)
    }
}

/// Sum over all workers.
pub fn merge(all: &[WorkerCounters]) -> Counts {
    let mut t = Counts::default();
    for w in all {
        t.add(&w.read());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_to_separate_lines() {
        assert_eq!(std::mem::align_of::<WorkerCounters>(), 128);
        assert_eq!(std::mem::size_of::<WorkerCounters>(), 128);
        let v: Vec<WorkerCounters> = (0..2).map(|_| WorkerCounters::default()).collect();
        let (a, b) = (&v[0] as *const _ as usize, &v[1] as *const _ as usize);
        assert_eq!(b - a, 128);
    }

    #[test]
    fn publish_merge_and_difference() {
        let w: Vec<WorkerCounters> = (0..3).map(|_| WorkerCounters::default()).collect();
        w[0].publish(&Counts { sent: 10, bytes: 100, enobufs: 1, ..Default::default() });
        w[2].publish(&Counts { sent: 5, bytes: 50, eagain: 2, other: 3, end_markers: 6, slips: 4, deficit: 7, ..Default::default() });
        let t = merge(&w);
        assert_eq!(
            t,
            Counts { sent: 15, bytes: 150, enobufs: 1, eagain: 2, other: 3, end_markers: 6, slips: 4, deficit: 7 }
        );
        assert_eq!(t.errors(), 6);
        let later = Counts { sent: 20, bytes: 210, slips: 5, ..t };
        assert_eq!(later.since(&t), Counts { sent: 5, bytes: 60, slips: 1, ..Default::default() });
    }

    #[test]
    fn concurrent_writers_are_merged_exactly() {
        let w: std::sync::Arc<Vec<WorkerCounters>> =
            std::sync::Arc::new((0..2).map(|_| WorkerCounters::default()).collect());
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let w = w.clone();
                std::thread::spawn(move || {
                    let mut c = Counts::default();
                    for _ in 0..100_000 {
                        c.sent += 1;
                        c.bytes += 8;
                        w[i].publish(&c);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let t = merge(&w);
        assert_eq!((t.sent, t.bytes), (200_000, 1_600_000));
    }
}
