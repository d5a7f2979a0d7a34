//! The log-linear histogram of nanosecond values the tracker keeps for
//! one-way delay and for inter-packet delay variation (IPDV), in the kernel
//! and in userspace alike.
//!
//! Bucket 0 holds values below 1024 ns (about 1 µs), negative ones included
//! (one-way delays between unsynchronised clocks; the tracker counts those
//! apart as well). Then each power of two from 2^10 ns to 2^35 ns (34 s) is
//! cut into 16 equal buckets, so a bucket is at most 1/16 of its lower
//! bound wide: a value read back from its bucket is off by at most 6.25 %.
//! The last bucket holds 2^36 ns (68.7 s) and above.
//!
//! Cost per value: a leading-zero count (eBPF has no such instruction; LLVM
//! expands it to about 20 shift-and-compare instructions), two shifts, a
//! mask and an add, with no loop and two branches; then one increment.

/// Sub-buckets per power of two: 2^4 = 16.
pub const SUB_BITS: u32 = 4;
/// The first power of two cut into sub-buckets: 2^10 ns = 1024 ns.
pub const MIN_SHIFT: u32 = 10;
/// The last one: [2^35, 2^36) ns = [34.4 s, 68.7 s).
pub const MAX_SHIFT: u32 = 35;
/// Buckets: underflow, 26 powers of two × 16, overflow.
pub const BUCKETS: usize = 2 + (((MAX_SHIFT - MIN_SHIFT + 1) as usize) << SUB_BITS);

/// The bucket of a value in ns.
#[inline(always)]
pub fn bucket(ns: i64) -> usize {
    if ns < (1 << MIN_SHIFT) {
        return 0;
    }
    let v = ns as u64;
    let msb = 63 - v.leading_zeros();
    if msb > MAX_SHIFT {
        return BUCKETS - 1;
    }
    let sub = ((v >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1)) as usize;
    1 + (((msb - MIN_SHIFT) as usize) << SUB_BITS) + sub
}

/// Powers of two a bucket can lie in: below 2^10 ns, each of 2^10 … 2^35,
/// and 2^36 ns and up.
pub const OCTAVES: usize = 2 + (MAX_SHIFT - MIN_SHIFT + 1) as usize;

/// The power of two bucket `b` lies in: 0 below 2^10 ns, `k` for
/// [2^(9+k), 2^(10+k)) ns, `OCTAVES − 1` from 2^36 ns on. Every value of
/// `b` is below [`octave_upper_ns`] of it: coarse buckets that the fine
/// ones nest in exactly.
pub fn octave(b: usize) -> usize {
    match b {
        0 => 0,
        b if b >= BUCKETS - 1 => OCTAVES - 1,
        b => 1 + ((b - 1) >> SUB_BITS),
    }
}

/// One past the largest value (ns) of an octave; None for the last (open-ended).
pub fn octave_upper_ns(o: usize) -> Option<i64> {
    (o + 1 < OCTAVES).then(|| 1i64 << (MIN_SHIFT as usize + o))
}

/// Counts `ns` in `hist`.
///
/// The eBPF verifier must see the index bounded before it touches the map
/// value. LLVM proves [`bucket`] below [`BUCKETS`] and drops a plain bounds
/// check, which the verifier cannot prove (it loses the range in the
/// leading-zero count), so the index goes through `black_box` (a stack
/// store and load) and the check stays.
#[inline(always)]
pub fn bump(hist: &mut [u64; BUCKETS], ns: i64) {
    let b = core::hint::black_box(bucket(ns));
    if b < BUCKETS {
        hist[b] += 1;
    }
}

/// The smallest value (ns) of a bucket; `i64::MIN` for the underflow bucket.
pub fn lower_ns(b: usize) -> i64 {
    if b == 0 {
        return i64::MIN;
    }
    if b >= BUCKETS - 1 {
        return 1 << (MAX_SHIFT + 1);
    }
    let k = b - 1;
    let shift = MIN_SHIFT + (k >> SUB_BITS) as u32;
    let sub = (k & ((1 << SUB_BITS) - 1)) as i64;
    (1i64 << shift) + (sub << (shift - SUB_BITS))
}

/// One past the largest value (ns) of a bucket; `i64::MAX` for the overflow bucket.
pub fn upper_ns(b: usize) -> i64 {
    if b == 0 {
        return 1 << MIN_SHIFT;
    }
    if b >= BUCKETS - 1 {
        return i64::MAX;
    }
    lower_ns(b + 1)
}

/// The bucket holding the `q`-quantile (0 < q ≤ 1) of the values counted in
/// `hist`: the first bucket at which the running count reaches
/// ⌈q·total⌉ (the nearest-rank definition). None when `hist` is empty.
pub fn quantile_bucket(hist: &[u64], q: f64) -> Option<usize> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let x = q * total as f64;
    let rank = if (x as u64) as f64 >= x { x as u64 } else { x as u64 + 1 }.clamp(1, total);
    let mut seen = 0u64;
    for (b, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(b);
        }
    }
    None
}

/// The `q`-quantile of the values counted in `hist`, in ns, as the largest
/// value its bucket can hold, clamped to `[min, max]` (the exact smallest
/// and largest values, which the tracker keeps). Within 6.25 % of the true
/// value (its bucket's width), and never outside the values seen.
pub fn quantile_ns(hist: &[u64], q: f64, min: i64, max: i64) -> Option<i64> {
    let b = quantile_bucket(hist, q)?;
    Some((upper_ns(b).saturating_sub(1)).clamp(min, max))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    #[test]
    fn buckets_cover_the_range_in_order_and_are_narrow() {
        assert_eq!(BUCKETS, 418);
        assert_eq!(bucket(i64::MIN), 0);
        assert_eq!(bucket(-5), 0);
        assert_eq!(bucket(1023), 0);
        assert_eq!(bucket(1024), 1);
        assert_eq!(bucket(1024 + 63), 1);
        assert_eq!(bucket(1024 + 64), 2);
        assert!((BUCKETS - 17..BUCKETS - 1).contains(&bucket(60_000_000_000)), "60 s is in the last cut power of two");
        assert_eq!(bucket(1 << 36), BUCKETS - 1);
        assert_eq!(bucket(i64::MAX), BUCKETS - 1);
        for b in 1..BUCKETS - 1 {
            let (lo, hi) = (lower_ns(b), upper_ns(b));
            assert!(hi > lo && (hi - lo) * 16 <= lo, "bucket {b}: {lo}..{hi}");
            assert_eq!((bucket(lo), bucket(hi - 1), bucket(hi)), (b, b, b + 1));
        }
    }

    #[test]
    fn octaves_hold_their_buckets() {
        assert_eq!(OCTAVES, 28);
        assert_eq!((octave_upper_ns(0), octave_upper_ns(26), octave_upper_ns(27)), (Some(1024), Some(1 << 36), None));
        for b in 0..BUCKETS {
            let o = octave(b);
            assert!(octave_upper_ns(o).is_none_or(|up| upper_ns(b) <= up), "bucket {b} above octave {o}");
            assert!(o == 0 || octave_upper_ns(o - 1).is_some_and(|up| lower_ns(b) >= up), "bucket {b} below octave {o}");
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut h = [0u64; BUCKETS];
        assert_eq!(quantile_bucket(&h, 0.5), None);
        h[bucket(2000)] = 90;
        h[bucket(1_000_000)] = 10;
        assert_eq!(quantile_bucket(&h, 0.5), Some(bucket(2000)));
        assert_eq!(quantile_bucket(&h, 0.9), Some(bucket(2000)));
        assert_eq!(quantile_bucket(&h, 0.91), Some(bucket(1_000_000)));
        assert_eq!(quantile_ns(&h, 1.0, 1500, 1_000_010), Some(1_000_010), "clamped to the exact max");
    }

    proptest! {
        /// Against a sorted array of the same values: every quantile lies in
        /// the true value's bucket (within 6.25 %), between the exact min
        /// and max; merging two histograms is the
        /// histogram of the concatenated values.
        #[test]
        fn quantiles_match_a_sorted_reference(
            a in proptest::collection::vec(-2_000i64..80_000_000_000, 1..300),
            b in proptest::collection::vec(0i64..5_000_000, 0..300),
        ) {
            let count = |v: &[i64]| {
                let mut h = [0u64; BUCKETS];
                for &x in v { h[bucket(x)] += 1; }
                h
            };
            let (ha, hb) = (count(&a), count(&b));
            let all: Vec<i64> = a.iter().chain(b.iter()).copied().collect();
            let merged: Vec<u64> = ha.iter().zip(hb.iter()).map(|(x, y)| x + y).collect();
            prop_assert_eq!(&merged[..], &count(&all)[..]);
            let mut sorted = all.clone();
            sorted.sort();
            let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
            for q in [0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
                let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
                let truth = sorted[rank - 1];
                let got = quantile_ns(&merged, q, min, max).unwrap();
                prop_assert_eq!(bucket(got), bucket(truth), "q {} got {} true {}", q, got, truth);
                prop_assert!(got >= min && got <= max);
            }
        }
    }
}
