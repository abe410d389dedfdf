//! The merged telemetry: every filter's reports summed into per-(host, version, traffic, side)
//! windows, one per second, so any recent interval reads as one histogram plus counts. Memory is bounded:
//! buckets older than the retention are dropped and the number of series is capped, with what
//! does not fit counted as overflow rather than silently lost. Pure data; no clock, no I/O.

use std::collections::{BTreeMap, HashMap};

use fledge_proto::v1::Counts;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::analysis::{Bucket, latency};

/// Live requests or mirrored (shadow) copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Traffic {
    Live,
    Shadow,
}

/// Where a request was measured. Every request in a mesh passes two filters — the caller's
/// sidecar (client role) and the callee's (server role) — so the two are kept apart, never
/// summed: live traffic is judged from the callers' view, mirrored copies (which only the
/// callee's filter sees) from the callees'.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    Client,
    Server,
}

/// Which series a window belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeriesKey {
    pub host: String,
    pub version: String,
    pub traffic: Traffic,
    pub side: Side,
}

impl SeriesKey {
    /// A series as the callers' filters (client role) report it.
    pub fn new(host: &str, version: &str, traffic: Traffic) -> Self {
        Self {
            host: host.to_string(),
            version: version.to_string(),
            traffic,
            side: Side::Client,
        }
    }

    /// The same series as measured on the other `side`.
    pub fn on(mut self, side: Side) -> Self {
        self.side = side;
        self
    }
}

impl std::fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let traffic = match self.traffic {
            Traffic::Live => "live",
            Traffic::Shadow => "shadow",
        };
        let side = match self.side {
            Side::Client => "client",
            Side::Server => "server",
        };
        write!(f, "{} {} ({traffic}, {side} side)", self.host, self.version)
    }
}

/// Counts and latencies of one series over some interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub counts: Counts,
    /// Latency of the measured requests, in microseconds.
    pub latency: Histogram<u64>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            latency: latency::new_histogram(),
        }
    }
}

/// One series' share of one validated report: its counts, and its latency histogram as the
/// non-zero counters (value in microseconds, count), each value within fledge's range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesDelta {
    pub counts: Counts,
    pub latency: Vec<(u64, u64)>,
}

#[cfg(any(test, feature = "testkit"))]
impl SeriesDelta {
    /// For tests: `requests` requests, `failures` of them 5xx, each taking `latency_us`.
    pub fn test(requests: u64, failures: u64, latency_us: u64) -> Self {
        Self {
            counts: Counts {
                requests,
                failures,
                errors_5xx: failures,
                ..Counts::default()
            },
            latency: vec![(latency_us, requests)],
        }
    }
}

impl Window {
    /// Adds one report's delta: O(its non-zero counters), not O(the histogram's range).
    pub fn add(&mut self, delta: &SeriesDelta) {
        self.counts.add(&delta.counts);
        for &(value, count) in &delta.latency {
            // Validation keeps values within fledge's range; anything beyond would be clamped
            // to the range's end, still counted.
            self.latency.saturating_record_n(value, count);
        }
    }

    pub fn merge(&mut self, other: &Window) {
        self.counts.add(&other.counts);
        // Both histograms span fledge's full range, so adding cannot run out of range.
        let _ = self.latency.add(&other.latency);
    }

    /// Failures among the measured requests (0 when none was measured).
    pub fn error_rate(&self) -> f64 {
        match self.counts.measured() {
            0 => 0.0,
            measured => self.counts.failures as f64 / measured as f64,
        }
    }

    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        latency::quantile_ms(&self.latency, q)
    }
}

impl Bucket for Window {
    fn requests(&self) -> u64 {
        self.counts.measured()
    }
    fn failures(&self) -> u64 {
        self.counts.failures
    }
    fn unmeasured(&self) -> u64 {
        self.counts.unmeasured
    }
    fn count_above(&self, us: u64) -> u64 {
        latency::count_above(&self.latency, us)
    }
    fn add_latencies_to(&self, into: &mut Histogram<u64>) {
        let _ = into.add(&self.latency);
    }
}

/// Per-second windows for every series, bounded in time and in series count.
#[derive(Debug)]
pub struct Windows {
    retention_secs: i64,
    max_series: usize,
    buckets: BTreeMap<i64, HashMap<SeriesKey, Window>>,
    /// The newest second each series was seen in, to know which series still hold memory.
    series: HashMap<SeriesKey, i64>,
    /// Requests that arrived for series beyond the cap.
    overflow_requests: u64,
    /// Requests the filters themselves could not place in a series (their `dropped` count).
    filter_dropped: u64,
}

impl Windows {
    pub fn new(retention_secs: i64, max_series: usize) -> Self {
        Self {
            retention_secs: retention_secs.max(1),
            max_series,
            buckets: BTreeMap::new(),
            series: HashMap::new(),
            overflow_requests: 0,
            filter_dropped: 0,
        }
    }

    /// Adds the deltas of windows ending in second `second` (unix seconds), then drops what is
    /// older than the retention counted back from `now_secs`. A window is allocated only for a
    /// (second, series) not held yet.
    pub fn merge(
        &mut self,
        second: i64,
        deltas: Vec<(SeriesKey, SeriesDelta)>,
        filter_dropped: u64,
        now_secs: i64,
    ) {
        self.filter_dropped += filter_dropped;
        for (key, delta) in deltas {
            if let Some(newest) = self.series.get_mut(&key) {
                *newest = (*newest).max(second);
            } else if self.series.len() >= self.max_series {
                self.overflow_requests += delta.counts.requests;
                continue;
            } else {
                self.series.insert(key.clone(), second);
            }
            self.buckets
                .entry(second)
                .or_default()
                .entry(key)
                .or_default()
                .add(&delta);
        }
        self.expire(now_secs);
    }

    /// Drops buckets older than the retention and forgets series that no longer hold any.
    pub fn expire(&mut self, now_secs: i64) {
        let oldest = now_secs - self.retention_secs;
        // A series' newest second always has its bucket, so when no bucket is older than the
        // retention, no series is either.
        if self
            .buckets
            .first_key_value()
            .is_none_or(|(s, _)| *s >= oldest)
        {
            return;
        }
        self.buckets = self.buckets.split_off(&oldest);
        self.series.retain(|_, newest| *newest >= oldest);
    }

    /// One series' window for a single second.
    pub fn second(&self, key: &SeriesKey, second: i64) -> Option<&Window> {
        self.buckets.get(&second).and_then(|b| b.get(key))
    }

    /// One series merged over the seconds `from..to` (half-open).
    pub fn window(&self, key: &SeriesKey, from: i64, to: i64) -> Window {
        let mut merged = Window::default();
        for (_, bucket) in self.buckets.range(from..to) {
            if let Some(w) = bucket.get(key) {
                merged.merge(w);
            }
        }
        merged
    }

    /// Every series seen within the retention, sorted.
    pub fn series(&self) -> Vec<SeriesKey> {
        let mut keys: Vec<_> = self.series.keys().cloned().collect();
        keys.sort();
        keys
    }

    pub fn overflow_requests(&self) -> u64 {
        self.overflow_requests
    }

    pub fn filter_dropped(&self) -> u64 {
        self.filter_dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(requests: u64, failures: u64, latency_us: u64) -> SeriesDelta {
        SeriesDelta::test(requests, failures, latency_us)
    }

    #[test]
    fn merges_per_second_and_reads_intervals() {
        let v2 = SeriesKey::new("reviews", "v2", Traffic::Live);
        let mut store = Windows::new(60, 16);
        store.merge(100, vec![(v2.clone(), delta(10, 1, 1000))], 0, 100);
        store.merge(100, vec![(v2.clone(), delta(5, 0, 3000))], 0, 100);
        store.merge(101, vec![(v2.clone(), delta(7, 2, 2000))], 0, 101);
        assert_eq!(store.second(&v2, 100).map(|w| w.counts.requests), Some(15));
        let all = store.window(&v2, 100, 102);
        assert_eq!(
            (all.counts.requests, all.counts.failures, all.latency.len()),
            (22, 3, 22)
        );
        assert_eq!(store.window(&v2, 101, 102).counts.requests, 7);
        assert_eq!(
            store
                .window(&SeriesKey::new("reviews", "v1", Traffic::Live), 0, 200)
                .counts
                .requests,
            0
        );
    }

    #[test]
    fn old_buckets_and_their_series_are_dropped() {
        let (a, b) = (
            SeriesKey::new("h", "a", Traffic::Live),
            SeriesKey::new("h", "b", Traffic::Shadow),
        );
        let mut store = Windows::new(10, 16);
        store.merge(100, vec![(a.clone(), delta(1, 0, 10))], 0, 100);
        store.merge(105, vec![(b.clone(), delta(1, 0, 10))], 0, 105);
        store.expire(112);
        assert_eq!(store.window(&a, 0, 200).counts.requests, 0);
        assert_eq!(store.window(&b, 0, 200).counts.requests, 1);
        assert_eq!(store.series(), vec![b]);
    }

    #[test]
    fn series_beyond_the_cap_are_counted_not_lost_silently() {
        let mut store = Windows::new(60, 2);
        let keys: Vec<_> = (0..4)
            .map(|i| SeriesKey::new("h", &format!("v{i}"), Traffic::Live))
            .collect();
        let windows = keys.iter().map(|k| (k.clone(), delta(3, 0, 10))).collect();
        store.merge(100, windows, 5, 100);
        assert_eq!(store.series().len(), 2);
        assert_eq!(store.overflow_requests(), 6);
        assert_eq!(store.filter_dropped(), 5);
        // A series already held keeps merging at the cap.
        store.merge(101, vec![(keys[0].clone(), delta(1, 0, 10))], 0, 101);
        assert_eq!(store.window(&keys[0], 0, 200).counts.requests, 4);
    }
}
