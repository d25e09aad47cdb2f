//! Latency recording: an HDR histogram in microseconds, one per client
//! task, merged at the end so the hot path takes no lock.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency recorded exactly; anything slower is clamped to it.
const MAX_TRACKED_US: u64 = 120 * 1_000_000;

/// Latencies of one client (or, after [`Latency::merge`], of many).
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Latency {
            // 1 µs .. 120 s with 3 significant figures: ~0.1 % error.
            hist: Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_TRACKED_US);
        self.hist.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so this cannot fail.
        self.hist
            .add(&other.hist)
            .expect("histograms share their bounds");
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Latency at quantile `q` (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.max() as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.mean() / 1000.0
    }

    /// The p50 / p99 / max summary a report row shows.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            p50_ms: self.quantile_ms(0.50),
            p99_ms: self.quantile_ms(0.99),
            max_ms: self.max_ms(),
            mean_ms: self.mean_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_histogram_reports_zeroes() {
        let l = Latency::new();
        assert_eq!(l.count(), 0);
        assert_eq!(l.summary(), LatencySummary::default());
    }

    #[test]
    fn quantiles_of_one_to_a_hundred_ms() {
        let mut l = Latency::new();
        for i in 1..=100 {
            l.record(ms(i));
        }
        let s = l.summary();
        assert_eq!(l.count(), 100);
        // 3 significant figures: within 0.1 %.
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.mean_ms - 50.5).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_max() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record(ms(1));
        a.record(ms(2));
        b.record(ms(500));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!((a.max_ms() - 500.0).abs() < 0.5);
        assert!((a.quantile_ms(0.5) - 2.0).abs() < 0.01);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut l = Latency::new();
        l.record(Duration::from_nanos(10)); // below 1 µs
        l.record(Duration::from_secs(3600)); // above the tracked max
        assert_eq!(l.count(), 2);
        assert!((l.max_ms() - 120_000.0).abs() / 120_000.0 < 0.001);
        assert!((l.quantile_ms(0.0) - 0.001).abs() < 1e-9);
    }
}
