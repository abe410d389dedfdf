//! The merged telemetry: every filter's reports summed into per-(host, version, traffic, side)
//! seconds, stored sparsely (counts plus the non-zero latency counters, varint-encoded), so a
//! second costs what arrived in it, not a full-range histogram. The analysis reads each second
//! once, as it settles, into a step's running totals (`judge`), so seconds are kept only for a
//! short retention. Memory is bounded by what the Rollouts need: once told which series they
//! read ([`Windows::keep_only`]), every other series is counted per host as ignored and never
//! stored; data for a second the analysis already read is counted per host as late. Without that
//! list (tests, benchmarks) every series is kept up to a cap, the rest counted as overflow.
//! Pure data; no clock, no I/O.

use std::collections::{HashMap, HashSet, VecDeque};

use fledge_proto::v1::Counts;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::analysis::{Bucket, latency};

mod second;

pub use second::Second;

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

/// Requests (and series deltas) of one host that were not stored, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uncounted {
    /// Series deltas (one series of one report).
    pub series: u64,
    pub requests: u64,
}

impl Uncounted {
    fn add(&mut self, requests: u64) {
        self.series = self.series.saturating_add(1);
        self.requests = self.requests.saturating_add(requests);
    }
}

/// What one [`Windows::merge`] did not store, per host, for the agent's metrics. Hosts beyond
/// [`COUNTED_HOSTS`] are named [`OTHER_HOSTS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Series no Rollout needs.
    pub ignored: Vec<(String, u64)>,
    /// Series deltas for a second the analysis had already read, or older than the retention.
    pub late: Vec<(String, u64)>,
    /// Requests of series beyond the series cap (only when every series is kept).
    pub over_cap_requests: u64,
}

/// Hosts counted by name in the ignored and late tallies; the rest are counted together.
pub const COUNTED_HOSTS: usize = 1024;
/// The name under which hosts beyond [`COUNTED_HOSTS`] are counted.
pub const OTHER_HOSTS: &str = "(other hosts)";

/// One series' seconds, oldest first.
#[derive(Debug, Default)]
struct Held {
    seconds: VecDeque<(i64, Second)>,
    /// Seconds before this one were read by the analysis; data for them comes too late.
    read_before: i64,
    /// How many of `seconds` are open (hold counters not yet folded), at most [`MAX_OPEN`].
    open: usize,
}

/// Open seconds one series keeps: reports for a second arrive within a second or two of its
/// end, so a few suffice; a report opening one more folds the oldest open one at once. This
/// bounds an accumulator's memory per series whatever the seconds a filter reports.
const MAX_OPEN: usize = 4;

impl Held {
    fn add(&mut self, second: i64, delta: &SeriesDelta) {
        let at = match self.seconds.back() {
            Some((s, _)) if *s == second => self.seconds.len() - 1,
            Some((s, _)) if *s > second => {
                let at = self.seconds.partition_point(|(s, _)| *s < second);
                if self.seconds.get(at).is_none_or(|(s, _)| *s != second) {
                    self.seconds.insert(at, (second, Second::default()));
                }
                at
            }
            _ => {
                self.seconds.push_back((second, Second::default()));
                self.seconds.len() - 1
            }
        };
        let held = &mut self.seconds[at].1;
        let was_open = held.is_open();
        held.add(delta);
        if !was_open && held.is_open() {
            self.open += 1;
            if self.open > MAX_OPEN
                && let Some((_, oldest)) = self.seconds.iter_mut().find(|(_, s)| s.is_open())
            {
                oldest.fold();
                self.open -= 1;
            }
        }
    }

    /// Folds the open seconds before `second`.
    fn fold_before(&mut self, second: i64) {
        let mut left = self.open;
        for (s, held) in self.seconds.iter_mut().rev() {
            if left == 0 {
                break;
            }
            if held.is_open() {
                left -= 1;
                if *s < second {
                    held.fold();
                    self.open -= 1;
                }
            }
        }
    }

    fn get(&self, second: i64) -> Option<&Second> {
        let at = self.seconds.partition_point(|(s, _)| *s < second);
        self.seconds
            .get(at)
            .filter(|(s, _)| *s == second)
            .map(|(_, w)| w)
    }
}

/// Per-second windows per series, bounded in time and in series. Either every series is kept up
/// to a cap (tests, benchmarks), or — once [`Windows::keep_only`] names them — only the series
/// the Rollouts need; everything else is counted per host as ignored and never stored.
#[derive(Debug)]
pub struct Windows {
    retention_secs: i64,
    max_series: usize,
    /// None: every series is kept, up to `max_series`.
    needed: Option<HashSet<SeriesKey>>,
    series: HashMap<SeriesKey, Held>,
    /// The clock of the last expiry, so it runs once per second however many reports arrive.
    expired_at: i64,
    /// Requests that arrived for series beyond the cap.
    overflow_requests: u64,
    /// Requests the filters themselves could not place in a series (their `dropped` count).
    filter_dropped: u64,
    ignored: HashMap<String, Uncounted>,
    late: HashMap<String, Uncounted>,
}

impl Windows {
    /// Keeps every series, up to `max_series`, for `retention_secs`.
    pub fn new(retention_secs: i64, max_series: usize) -> Self {
        Self {
            retention_secs: retention_secs.max(1),
            max_series,
            needed: None,
            series: HashMap::new(),
            expired_at: i64::MIN,
            overflow_requests: 0,
            filter_dropped: 0,
            ignored: HashMap::new(),
            late: HashMap::new(),
        }
    }

    /// Keeps only `needed` from now on (and drops what is held of any other series): the series
    /// the Rollouts' analyses read. Every other series is counted per host and dropped at merge.
    pub fn keep_only(&mut self, needed: HashSet<SeriesKey>) {
        if self.needed.as_ref() == Some(&needed) {
            return;
        }
        self.series.retain(|k, _| needed.contains(k));
        self.needed = Some(needed);
    }

    /// Adds the deltas of windows ending in second `second` (unix seconds), then drops what is
    /// older than the retention counted back from `now_secs`. Says what it did not store.
    pub fn merge(
        &mut self,
        second: i64,
        deltas: Vec<(SeriesKey, SeriesDelta)>,
        filter_dropped: u64,
        now_secs: i64,
    ) -> Merged {
        self.filter_dropped = self.filter_dropped.saturating_add(filter_dropped);
        let mut merged = Merged::default();
        let too_old = second < now_secs - self.retention_secs;
        for (key, delta) in deltas {
            let requests = delta.counts.requests;
            if let Some(needed) = &self.needed
                && !needed.contains(&key)
            {
                let host = tally(&mut self.ignored, &key.host, requests);
                merged.ignored.push((host, requests));
                continue;
            }
            let full = self.needed.is_none() && self.series.len() >= self.max_series;
            let held = match self.series.get_mut(&key) {
                Some(held) => held,
                None if full => {
                    self.overflow_requests = self.overflow_requests.saturating_add(requests);
                    merged.over_cap_requests = merged.over_cap_requests.saturating_add(requests);
                    continue;
                }
                None => self.series.entry(key.clone()).or_default(),
            };
            if too_old || second < held.read_before {
                let host = tally(&mut self.late, &key.host, requests);
                merged.late.push((host, requests));
                continue;
            }
            held.add(second, &delta);
        }
        self.expire(now_secs);
        merged
    }

    /// Drops seconds older than the retention and forgets series that no longer hold any. Runs
    /// once per second of `now_secs`.
    pub fn expire(&mut self, now_secs: i64) {
        if now_secs <= self.expired_at {
            return;
        }
        self.expired_at = now_secs;
        let oldest = now_secs - self.retention_secs;
        self.series.retain(|_, held| {
            while held.seconds.front().is_some_and(|(s, _)| *s < oldest) {
                if let Some((_, gone)) = held.seconds.pop_front()
                    && gone.is_open()
                {
                    held.open -= 1;
                }
            }
            // Seconds that ended a second ago or more take few reports now: fold them.
            held.fold_before(now_secs - 1);
            !held.seconds.is_empty() || held.read_before > oldest
        });
    }

    /// One series' traffic in a single second.
    pub fn second(&self, key: &SeriesKey, second: i64) -> Option<&Second> {
        self.series.get(key).and_then(|h| h.get(second))
    }

    /// Notes that the analysis has read `key` up to (not including) `second`: data for earlier
    /// seconds arriving later is counted as late, not stored.
    pub fn read_before(&mut self, key: &SeriesKey, second: i64) {
        if self.needed.as_ref().is_some_and(|n| !n.contains(key)) {
            return;
        }
        let held = match self.series.get_mut(key) {
            Some(held) => held,
            None => self.series.entry(key.clone()).or_default(),
        };
        held.read_before = held.read_before.max(second);
    }

    /// One series merged over the seconds `from..to` (half-open).
    pub fn window(&self, key: &SeriesKey, from: i64, to: i64) -> Window {
        let mut merged = Window::default();
        let Some(held) = self.series.get(key) else {
            return merged;
        };
        for (_, second) in held.seconds.iter().filter(|(s, _)| (from..to).contains(s)) {
            merged.counts.add(&second.counts);
            second.add_latencies_to(&mut merged.latency);
        }
        merged
    }

    /// Every series holding data, sorted.
    pub fn series(&self) -> Vec<SeriesKey> {
        let mut keys: Vec<_> = self
            .series
            .iter()
            .filter(|(_, h)| !h.seconds.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Series the store holds (with data or a note of what the analysis read).
    pub fn series_held(&self) -> usize {
        self.series.len()
    }

    /// (series held, seconds held, bytes of latency counters held): what the store costs now.
    pub fn footprint(&self) -> (usize, usize, usize) {
        let seconds = self.series.values().map(|h| h.seconds.len()).sum();
        let bytes = self
            .series
            .values()
            .flat_map(|h| h.seconds.iter())
            .map(|(_, s)| s.heap_bytes())
            .sum();
        (self.series.len(), seconds, bytes)
    }

    pub fn overflow_requests(&self) -> u64 {
        self.overflow_requests
    }

    pub fn filter_dropped(&self) -> u64 {
        self.filter_dropped
    }

    /// Per host: series deltas and requests no Rollout needed, since start.
    pub fn ignored(&self) -> &HashMap<String, Uncounted> {
        &self.ignored
    }

    /// Per host: series deltas and requests that came after the analysis read their second.
    pub fn late(&self) -> &HashMap<String, Uncounted> {
        &self.late
    }
}

/// Counts `requests` for `host` in a tally bounded to [`COUNTED_HOSTS`] names; returns the name
/// it was counted under.
fn tally(tally: &mut HashMap<String, Uncounted>, host: &str, requests: u64) -> String {
    let name = if tally.contains_key(host) || tally.len() < COUNTED_HOSTS {
        host
    } else {
        OTHER_HOSTS
    };
    match tally.get_mut(name) {
        Some(u) => u.add(requests),
        None => tally.entry(name.to_string()).or_default().add(requests),
    }
    name.to_string()
}

#[cfg(test)]
mod tests;
