//! Each case's one-way delay histograms as an HdrHistogram interval log
//! (`DIR/cCCC-delay.hlog`), the format the HdrHistogram tools read
//! (HistogramLogProcessor, HdrHistogramVisualizer, hdr-plot): one interval
//! per repeat and receiver, tagged with the receiver's name, values in ns.
//!
//! The receivers keep delays in a log-linear histogram
//! ([`mcblast_common::hist`]); each bucket's count is recorded at the
//! bucket's largest value, clamped to the exact min and max (so within
//! 6.25 %, as the summaries' percentiles): the first bucket (below 1024 ns,
//! delays below zero from clocks apart included) at 1023 ns, or the max if
//! smaller, and never below 0.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use super::stats::Dist;

/// One interval of the log: repeat (from 1), receiver, its delays.
pub struct Entry<'a> {
    pub repeat: u32,
    pub node: &'a str,
    pub delay: &'a Dist,
}

/// The HdrHistogram of a distribution (ns, 3 significant digits).
pub fn histogram(d: &Dist) -> Result<Histogram<u64>> {
    use mcblast_common::hist::upper_ns;
    let mut h = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).context("an HdrHistogram")?;
    for (b, &n) in d.hist.iter().enumerate().filter(|(_, n)| **n > 0) {
        let v = (upper_ns(b).saturating_sub(1)).clamp(d.min_ns, d.max_ns).max(0) as u64;
        h.record_n(v.min(1 << 40), n).context("recording into an HdrHistogram")?;
    }
    Ok(h)
}

/// Writes the log; interval k of repeat r starts (r − 1) × `duration` after
/// the log's start, as the repeats ran one after another.
pub fn write(path: &Path, entries: &[Entry<'_>], duration: Duration) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let mut ser = V2DeflateSerializer::new();
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment("mcblast one-way delay, ns; one interval per repeat and receiver (tag)")
        .with_max_value_divisor(1e3)
        .begin_log_with(&mut file, &mut ser)
        .with_context(|| format!("writing {}", path.display()))?;
    for e in entries {
        let start = duration * e.repeat.saturating_sub(1);
        let tag = Tag::new(e.node).with_context(|| format!("receiver name {:?} as an interval log tag", e.node))?;
        w.write_histogram(&histogram(e.delay)?, start, duration, Some(tag))
            .map_err(|err| anyhow::anyhow!("writing {}: {err:?}", path.display()))?;
    }
    drop(w);
    use std::io::Write;
    file.flush().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    /// The log reads back with the HdrHistogram crate's own reader: each
    /// interval's count and tag, and each quantile within a bucket.
    #[test]
    fn the_log_reads_back() {
        let d = |values: &[(i64, u64)]| {
            let mut hist = vec![0u64; mcblast_common::hist::BUCKETS];
            for &(v, n) in values {
                hist[mcblast_common::hist::bucket(v)] += n;
            }
            let min = values.iter().map(|v| v.0).min().unwrap();
            Dist { hist, min_ns: min, max_ns: values.iter().map(|v| v.0).max().unwrap() }
        };
        let (a, b) = (d(&[(20_000, 990), (3_000_000, 10)]), d(&[(-50, 5), (7_000, 95)]));
        let dir = std::env::temp_dir().join(format!("mcblast-hlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c001-delay.hlog");
        let entries = [Entry { repeat: 1, node: "r1", delay: &a }, Entry { repeat: 2, node: "r2", delay: &b }];
        write(&path, &entries, Duration::from_secs(5)).unwrap();
        let text = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut de = Deserializer::new();
        let mut got = Vec::new();
        for e in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(i) = e.unwrap() {
                use base64::Engine as _;
                let raw = base64::engine::general_purpose::STANDARD.decode(i.encoded_histogram()).unwrap();
                let h: Histogram<u64> = de.deserialize(&mut raw.as_slice()).unwrap();
                got.push((i.tag().map(|t| t.as_str().to_string()), i.start_timestamp(), h));
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.as_deref(), got[0].1, got[0].2.len()), (Some("r1"), Duration::ZERO, 1000));
        assert_eq!((got[1].0.as_deref(), got[1].1, got[1].2.len()), (Some("r2"), Duration::from_secs(5), 100));
        let p50 = got[0].2.value_at_quantile(0.5) as f64;
        assert!((p50 - 20_000.0).abs() <= 20_000.0 * 0.0625 + 20.0, "p50 {p50}");
        assert_eq!(got[0].2.max(), got[0].2.highest_equivalent(3_000_000));
        assert_eq!(got[1].2.count_between(0, 1023), 5, "negative delays in the first bucket, at 1023 ns");
    }
}
