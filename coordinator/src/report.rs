//! An experiment's report: the SLIs it observed before, during and after
//! its faults, and how long each took to come back. Pure arithmetic over
//! samples; the engine fetches them (Prometheus's query_range) and the
//! timeline from the store.

use std::time::{Duration, SystemTime};

use faultd_proto::coordinator::v1 as pb;

/// The three windows of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub start: SystemTime,
    /// When the faults went on.
    pub fault_start: SystemTime,
    /// When they ended (or now, for a running experiment).
    pub fault_end: SystemTime,
    pub end: SystemTime,
}

/// Mean, min and max of the samples in [from, to).
pub fn stats(samples: &[(SystemTime, f64)], from: SystemTime, to: SystemTime) -> pb::WindowStats {
    let values: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, v)| *v)
        .collect();
    if values.is_empty() {
        return pb::WindowStats::default();
    }
    #[expect(clippy::cast_precision_loss, reason = "a mean of few samples")]
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    pb::WindowStats {
        samples: u32::try_from(values.len()).unwrap_or(u32::MAX),
        mean,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// The baseline band: [before.min, before.max] widened on each side by
/// its own width, or by a tenth of the baseline's mean if that is more. A
/// baseline is a handful of samples of a noisy signal: its exact range is
/// too narrow a test of "back to normal" (a latency that settles 0.2 ms
/// under the lowest of four baseline samples has recovered). A baseline of
/// exact zeros (an error ratio) keeps a band of exactly zero.
pub fn band(before: &pb::WindowStats) -> (f64, f64) {
    let margin = (before.max - before.min).max(0.1 * before.mean.abs());
    (before.min - margin, before.max + margin)
}

/// From the faults' end to the first sample from which every later
/// sample up to the window's end lies within the baseline band; None
/// without a baseline, or when the SLI never settles back.
pub fn recovery(
    samples: &[(SystemTime, f64)],
    before: &pb::WindowStats,
    w: &Windows,
) -> Option<Duration> {
    if before.samples == 0 {
        return None;
    }
    let (low, high) = band(before);
    let inside = |v: f64| v >= low && v <= high;
    let after: Vec<&(SystemTime, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= w.fault_end && *t <= w.end)
        .collect();
    // The earliest index from which all samples are inside.
    let first_settled = after
        .iter()
        .rposition(|(_, v)| !inside(*v))
        .map_or(0, |i| i + 1);
    let (t, _) = after.get(first_settled)?;
    Some(t.duration_since(w.fault_end).unwrap_or_default())
}

/// One SLI's report from its samples over the windows.
pub fn sli(name: &str, query: &str, samples: &[(SystemTime, f64)], w: &Windows) -> pb::SliReport {
    let before = stats(samples, w.start, w.fault_start);
    let during = stats(samples, w.fault_start, w.fault_end);
    let after = stats(samples, w.fault_end, w.end + Duration::from_nanos(1));
    let recovery =
        recovery(samples, &before, w).and_then(|d| prost_types::Duration::try_from(d).ok());
    let (band_low, band_high) = if before.samples == 0 {
        (0.0, 0.0)
    } else {
        band(&before)
    };
    pb::SliReport {
        band_low,
        band_high,
        name: name.to_owned(),
        query: query.to_owned(),
        before: Some(before),
        during: Some(during),
        after: Some(after),
        recovery,
        samples: samples
            .iter()
            .map(|(t, v)| pb::Sample {
                time: Some((*t).into()),
                value: *v,
            })
            .collect(),
        error: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn windows_and_recovery() {
        // Baseline 0.01..0.02 for 10 s (band 0.0..0.03), 0.3 while the
        // fault is on (10..20), 0.2 and 0.05 after it, back in the band
        // from 24 s on.
        let mut samples: Vec<(SystemTime, f64)> = (0..10)
            .map(|s| (at(s), if s % 2 == 0 { 0.01 } else { 0.02 }))
            .collect();
        samples.extend((10..20).map(|s| (at(s), 0.3)));
        samples.extend([
            (at(20), 0.2),
            (at(21), 0.05),
            (at(22), 0.015),
            (at(23), 0.04),
        ]);
        samples.extend((24..30).map(|s| (at(s), 0.012)));
        let w = Windows {
            start: at(0),
            fault_start: at(10),
            fault_end: at(20),
            end: at(29),
        };
        let r = sli("errors", "q", &samples, &w);
        let before = r.before.expect("before");
        assert_eq!((before.samples, before.min, before.max), (10, 0.01, 0.02));
        assert!((before.mean - 0.015).abs() < 1e-12);
        let during = r.during.expect("during");
        assert_eq!(during.samples, 10);
        assert!((during.mean - 0.3).abs() < 1e-12, "{during:?}");
        assert_eq!(r.after.expect("after").samples, 10);
        // 22 s is inside but 23 s is not: settled from 24 s, 4 s after.
        assert_eq!(r.recovery.map(|d| d.seconds), Some(4));
        assert_eq!((r.band_low, r.band_high), (0.0, 0.03));
        // Settling a little below the baseline's lowest sample is back in
        // the band; a baseline of zeros is a band of zero.
        let mut lower = samples.clone();
        for s in &mut lower[24..] {
            s.1 = 0.008;
        }
        assert_eq!(
            sli("e", "q", &lower, &w).recovery.map(|d| d.seconds),
            Some(4)
        );
        let zeros = pb::WindowStats {
            samples: 5,
            ..Default::default()
        };
        assert_eq!(band(&zeros), (0.0, 0.0));
        // Never settling back: no recovery.
        let mut bad = samples.clone();
        bad.push((at(29), 0.5));
        assert_eq!(sli("e", "q", &bad, &w).recovery, None);
        // No baseline: no recovery either.
        let w2 = Windows { start: at(10), ..w };
        assert_eq!(sli("e", "q", &samples[10..], &w2).recovery, None);
    }
}
