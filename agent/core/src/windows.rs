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

/// One series' traffic in one second, as stored: its counts and the non-zero latency counters,
/// varint-encoded. A second of a series with a few hundred requests takes a few hundred bytes
/// (a full-range histogram takes 26 KiB). A report's counters are appended as they come (O(its
/// counters)) and folded into the compact form in batches, and once the second has settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Second {
    pub counts: Counts,
    latency: Counters,
    /// Counters added since the last fold: (lowest value of fledge's counter, count).
    pending: Vec<(u64, u64)>,
}

/// Pending counters folded at once: bounds both the fold's share of an add and the memory.
const FOLD_AT: usize = 1024;

impl Second {
    /// Adds one report's delta.
    pub fn add(&mut self, delta: &SeriesDelta) {
        self.counts.add(&delta.counts);
        let layout = layout();
        self.pending.extend(
            delta
                .latency
                .iter()
                .filter(|&&(_, c)| c > 0)
                .map(|&(v, c)| (layout.lowest_equivalent(v), c)),
        );
        if self.pending.len() >= FOLD_AT {
            self.fold();
        }
    }

    /// Folds the pending counters into the compact form.
    fn fold(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.pending.sort_unstable_by_key(|&(v, _)| v);
        self.latency.add(&self.pending);
        self.pending = Vec::new();
    }

    /// The latency counters: (the lowest value of fledge's counter, count), in no particular
    /// order, a value possibly more than once.
    pub fn latencies(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.latency.iter().chain(self.pending.iter().copied())
    }

    /// Bytes held on the heap for the latencies.
    pub fn heap_bytes(&self) -> usize {
        self.latency.0.capacity() + self.pending.capacity() * 16
    }
}

impl Bucket for Second {
    fn requests(&self) -> u64 {
        self.counts.measured()
    }
    fn failures(&self) -> u64 {
        self.counts.failures
    }
    fn unmeasured(&self) -> u64 {
        self.counts.unmeasured
    }
    /// The same answer as [`latency::count_above`] on a histogram holding these counters:
    /// a counter is above `us` when its median-equivalent value is.
    fn count_above(&self, us: u64) -> u64 {
        let layout = layout();
        self.latencies()
            .filter(|&(v, _)| layout.median_equivalent(v) > us)
            .map(|(_, c)| c)
            .fold(0u64, u64::saturating_add)
    }
    fn add_latencies_to(&self, into: &mut Histogram<u64>) {
        for (value, count) in self.latencies() {
            into.saturating_record_n(value, count);
        }
    }
}

/// fledge's histogram layout, to quantize values and find a counter's median value. Allocated
/// once per process.
fn layout() -> &'static Histogram<u64> {
    static LAYOUT: std::sync::LazyLock<Histogram<u64>> =
        std::sync::LazyLock::new(latency::new_histogram);
    &LAYOUT
}

/// Non-zero latency counters as varint pairs (value minus the previous value, count), by
/// increasing value; each value is the lowest of its counter in fledge's layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counters(Vec<u8>);

impl Counters {
    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut at = 0;
        let mut value = 0u64;
        std::iter::from_fn(move || {
            let gap = read_varint(&self.0, &mut at)?;
            let count = read_varint(&self.0, &mut at)?;
            value = value.saturating_add(gap);
            Some((value, count))
        })
    }

    /// Adds counters given by increasing value, each the lowest of its counter in fledge's
    /// layout (a value may repeat).
    fn add(&mut self, incoming: &[(u64, u64)]) {
        if incoming.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + incoming.len() * 3);
        let mut previous = 0u64;
        let mut push = |value: u64, count: u64| {
            write_varint(&mut out, value - previous);
            write_varint(&mut out, count);
            previous = value;
        };
        let mut mine = self.iter().peekable();
        let mut theirs = incoming.iter().copied().peekable();
        let mut pending: Option<(u64, u64)> = None;
        loop {
            let next = match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) if a.0 <= b.0 => mine.next(),
                (Some(_), Some(_)) | (None, Some(_)) => theirs.next(),
                (Some(_), None) => mine.next(),
                (None, None) => None,
            };
            match (pending, next) {
                (Some((v, c)), Some((w, d))) if v == w => pending = Some((v, c.saturating_add(d))),
                (Some((v, c)), next) => {
                    push(v, c);
                    pending = next;
                }
                (None, Some(n)) => pending = Some(n),
                (None, None) => {}
            }
            if pending.is_none() {
                break;
            }
        }
        drop(mine);
        out.shrink_to_fit();
        self.0 = out;
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
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
}

impl Held {
    fn add(&mut self, second: i64, delta: &SeriesDelta) {
        match self.seconds.back_mut() {
            Some((s, w)) if *s == second => return w.add(delta),
            Some((s, _)) if *s > second => {}
            _ => {
                let mut w = Second::default();
                w.add(delta);
                return self.seconds.push_back((second, w));
            }
        }
        let at = self.seconds.partition_point(|(s, _)| *s < second);
        match self.seconds.get_mut(at) {
            Some((s, w)) if *s == second => w.add(delta),
            _ => {
                let mut w = Second::default();
                w.add(delta);
                self.seconds.insert(at, (second, w));
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
                held.seconds.pop_front();
            }
            // Seconds that ended a second ago or more take few reports now: fold them.
            for (_, second) in held
                .seconds
                .iter_mut()
                .rev()
                .skip_while(|(s, _)| *s >= now_secs - 1)
                .take(4)
            {
                second.fold();
            }
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

    #[test]
    fn a_sparse_second_reads_as_a_histogram_would() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut second = Second::default();
            let mut window = Window::default();
            for _ in 0..rng.random_range(1..5) {
                let latency: Vec<(u64, u64)> = (0..rng.random_range(0..40))
                    .map(|_| {
                        let v = 10f64.powf(rng.random_range(0.0..9.5)) as u64;
                        (
                            v.clamp(1, fledge_proto::HISTOGRAM_MAX_US),
                            rng.random_range(1..1000),
                        )
                    })
                    .collect();
                let requests = latency.iter().map(|(_, c)| c).sum();
                let delta = SeriesDelta {
                    counts: Counts {
                        requests,
                        ..Counts::default()
                    },
                    latency,
                };
                second.add(&delta);
                window.add(&delta);
            }
            let mut from_second = latency::new_histogram();
            second.add_latencies_to(&mut from_second);
            assert_eq!(from_second, window.latency);
            for us in [0, 1, 99, 1000, 20_000, 123_456, 5_000_000, u64::MAX] {
                assert_eq!(second.count_above(us), window.count_above(us), "above {us}");
            }
            assert_eq!(second.counts, window.counts);
        }
    }

    #[test]
    fn only_the_series_a_rollout_needs_are_kept_the_rest_counted() {
        // One Rollout on host-7: its stable and canary, live on the callers' side.
        let needed: HashSet<SeriesKey> = ["v1", "v2"]
            .iter()
            .map(|v| SeriesKey::new("host-7", v, Traffic::Live))
            .collect();
        let mut store = Windows::new(60, 16);
        store.keep_only(needed.clone());
        for s in 100..110 {
            let deltas = (0..500)
                .flat_map(|h| {
                    ["v1", "v2", "v3"].map(|v| {
                        let key = SeriesKey::new(&format!("host-{h}"), v, Traffic::Live);
                        (key, delta(10, 0, 1000))
                    })
                })
                .collect();
            let merged = store.merge(s, deltas, 0, s);
            assert_eq!(merged.ignored.len(), 500 * 3 - 2);
        }
        let mut kept = store.series();
        kept.sort();
        let mut expected: Vec<_> = needed.into_iter().collect();
        expected.sort();
        assert_eq!(kept, expected);
        let (series, seconds, _) = store.footprint();
        assert_eq!((series, seconds), (2, 20));
        assert_eq!(store.ignored().len(), 500);
        assert_eq!(
            store.ignored()["host-3"],
            Uncounted {
                series: 30,
                requests: 300
            }
        );
        assert_eq!(store.ignored()["host-7"].requests, 100, "host-7's v3");
        assert_eq!(
            store.overflow_requests(),
            0,
            "the cap does not apply to needed series"
        );
        // A Rollout that ends: its series go, and new data for them is counted as ignored.
        store.keep_only(HashSet::new());
        assert!(store.series().is_empty());
    }

    #[test]
    fn the_hosts_counted_by_name_are_bounded() {
        let mut store = Windows::new(60, 16);
        store.keep_only(HashSet::new());
        let deltas = (0..COUNTED_HOSTS + 10)
            .map(|h| {
                (
                    SeriesKey::new(&format!("h{h}"), "v1", Traffic::Live),
                    delta(1, 0, 5),
                )
            })
            .collect();
        let merged = store.merge(100, deltas, 0, 100);
        assert_eq!(store.ignored().len(), COUNTED_HOSTS + 1);
        assert_eq!(store.ignored()[OTHER_HOSTS].requests, 10);
        assert_eq!(
            merged.ignored.last().map(|(h, _)| h.as_str()),
            Some(OTHER_HOSTS)
        );
    }

    #[test]
    fn data_for_a_second_already_read_is_counted_late_not_stored() {
        let key = SeriesKey::new("h", "v2", Traffic::Live);
        let mut store = Windows::new(60, 16);
        store.keep_only([key.clone()].into());
        store.merge(100, vec![(key.clone(), delta(5, 0, 10))], 0, 101);
        store.read_before(&key, 101);
        let merged = store.merge(100, vec![(key.clone(), delta(3, 0, 10))], 0, 102);
        assert_eq!(merged.late, vec![("h".to_string(), 3)]);
        assert_eq!(store.second(&key, 100).map(|s| s.counts.requests), Some(5));
        // Older than the retention is late too.
        store.merge(10, vec![(key.clone(), delta(4, 0, 10))], 0, 102);
        assert_eq!(
            store.late()["h"],
            Uncounted {
                series: 2,
                requests: 7
            }
        );
        // A second not yet read still merges, in order.
        store.merge(102, vec![(key.clone(), delta(1, 0, 10))], 0, 102);
        store.merge(101, vec![(key.clone(), delta(2, 0, 10))], 0, 102);
        assert_eq!(store.window(&key, 0, 200).counts.requests, 8);
    }

    /// The judge's running totals, fed second by second as seconds settle from reports that
    /// arrive out of order (and some too late), equal a from-scratch analysis of the same
    /// seconds merged as full histograms.
    #[test]
    fn incremental_analysis_equals_a_from_scratch_merge() {
        use crate::analysis::{AnalysisSpec, StepAnalysis};
        use crate::judge::{Arms, Judge, SETTLE_SECS, Settled};
        use crate::rollout::AnalysisWindow;
        use jiff::Timestamp;
        use rand::{Rng, SeedableRng, rngs::StdRng};

        for seed in 0..12 {
            let mut rng = StdRng::seed_from_u64(seed);
            let arms = Arms::new("reviews", "v1", "v2", Traffic::Live);
            let t0 = 1_800_000_000i64;
            let len = 40;
            // (arrival second, data second, is canary, delta)
            let mut reports = Vec::new();
            for s in t0..t0 + len {
                for _ in 0..rng.random_range(0..4) {
                    let canary = rng.random_bool(0.4);
                    let requests = rng.random_range(0..60u64);
                    let failures = rng.random_range(0..=requests / 4);
                    let latency = (0..requests)
                        .map(|_| (rng.random_range(500..200_000u64), 1))
                        .collect();
                    let delta = SeriesDelta {
                        counts: Counts {
                            requests,
                            failures,
                            errors_5xx: failures,
                            ..Counts::default()
                        },
                        latency,
                    };
                    // Most arrive within the settle delay, in any order; a few much later.
                    let arrival = if rng.random_bool(0.05) {
                        s + SETTLE_SECS + 3
                    } else {
                        s + rng.random_range(0..SETTLE_SECS)
                    };
                    reports.push((arrival, s, canary, delta));
                }
            }
            reports.sort_by_key(|r| r.0);
            let spec = AnalysisSpec::default();
            let step = AnalysisWindow {
                step: 0,
                since: Timestamp::from_second(t0).unwrap(),
                canary_traffic: Traffic::Live,
            };
            let mut store = Windows::new(30, 16);
            store.keep_only([arms.canary.clone(), arms.baseline.clone()].into());
            let mut judge = Judge::default();
            let mut incremental = Vec::new();
            let mut next = reports.iter().peekable();
            for now in t0..t0 + len + 5 {
                while let Some((_, s, canary, delta)) = next.next_if(|r| r.0 <= now) {
                    let key = if *canary {
                        &arms.canary
                    } else {
                        &arms.baseline
                    };
                    store.merge(*s, vec![(key.clone(), delta.clone())], 0, now);
                }
                let at = Timestamp::from_second(now).unwrap();
                if let Some(due) = judge.due(&step, arms.clone(), &spec, at) {
                    judge.feed(&Settled::take(&mut store, &due));
                }
                incremental.extend(judge.look(&spec, at));
            }

            // From scratch: every report that arrived before its second was read.
            let read_at = |s: i64| s + SETTLE_SECS;
            let mut scratch = StepAnalysis::new(spec.clone());
            let mut from_scratch = Vec::new();
            let mut last_look = t0;
            let mut late = 0;
            let mut fed = t0;
            for now in t0..t0 + len + 5 {
                while fed <= now - SETTLE_SECS {
                    let (mut c, mut b) = (Window::default(), Window::default());
                    for (arrival, s, canary, delta) in &reports {
                        if *s != fed {
                            continue;
                        }
                        if *arrival >= read_at(fed) {
                            late += 1;
                            continue;
                        }
                        if *canary { c.add(delta) } else { b.add(delta) }
                    }
                    scratch.observe(std::time::Duration::from_secs(1), &c, &b);
                    fed += 1;
                }
                if now - last_look >= spec.interval.as_secs().max(1) as i64 {
                    last_look = now;
                    from_scratch.push(scratch.look());
                }
            }
            assert!(!incremental.is_empty());
            assert_eq!(incremental.len(), from_scratch.len(), "seed {seed}");
            for (i, (a, b)) in incremental.iter().zip(&from_scratch).enumerate() {
                assert!(
                    a == b,
                    "seed {seed}, look {i}: {:?} != {:?}",
                    a.checks.first(),
                    b.checks.first()
                );
            }
            let counted_late: u64 = store.late().values().map(|u| u.series).sum();
            assert_eq!(counted_late, late, "seed {seed}");
        }
    }
}
