//! What one VM recorded since its last report: per (host, version, traffic) series, the request,
//! error, reset and timeout counts and an HDR histogram of latency in microseconds (2 significant
//! digits), and the requests that could not be measured, counted apart. The number of series is
//! bounded; samples beyond the bound go to a `dropped` count that is reported, never silently
//! lost.
//!
//! [`Stats::take`] hands out everything since the last take as a [`Delta`], which becomes a
//! `fledge.v1.Report` with the histograms in hdrhistogram's V2 format (no deflate). A delta that
//! could not be sent goes back with [`Stats::restore`], so while the agent is unreachable deltas
//! keep merging and the counts stay exact. No I/O happens here.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};

use fledge_proto::v1::{self, Traffic};
use fledge_proto::{HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG};

use crate::outcome::Outcome;

#[cfg(test)]
mod tests;

/// A latency histogram as the wire wants it: 1 µs to one hour, 2 significant digits.
pub fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG).ok()
}

/// The counts and latencies of one (host, version, traffic).
#[derive(Debug, Clone)]
pub struct Series {
    pub host: String,
    pub version: String,
    pub traffic: Traffic,
    pub counts: v1::Counts,
    pub latency_us: Histogram<u64>,
}

impl Series {
    fn is(&self, host: &str, version: &str, traffic: Traffic) -> bool {
        // The version first: series of one host differ there, and it is short.
        self.traffic == traffic
            && self.version == version
            && crate::routing::same(self.host.as_bytes(), host.as_bytes())
    }

    fn empty(host: &str, version: &str, traffic: Traffic) -> Option<Series> {
        Some(Series {
            host: host.to_owned(),
            version: version.to_owned(),
            traffic,
            counts: v1::Counts::default(),
            latency_us: new_histogram()?,
        })
    }

    fn add(&mut self, outcome: &Outcome) {
        let c = &mut self.counts;
        c.requests += 1;
        c.errors_5xx += u64::from(outcome.error_5xx);
        c.errors_4xx += u64::from(outcome.error_4xx);
        c.grpc_errors += u64::from(outcome.grpc_error);
        c.resets += u64::from(outcome.reset);
        c.timeouts += u64::from(outcome.timeout);
        c.failures += u64::from(outcome.failed());
        // Clamped into 1 µs ..= one hour, so it cannot fail.
        self.latency_us.saturating_record(outcome.latency_us);
    }

    /// Adds `other`'s counts; `false` (and nothing changed) if the histograms do not combine.
    fn merge(&mut self, other: &Series) -> bool {
        if self.latency_us.add(&other.latency_us).is_err() {
            return false;
        }
        self.counts.add(&other.counts);
        true
    }

    fn to_proto(&self) -> v1::Series {
        let mut latency_us_hdr = Vec::new();
        if self.counts.measured() > 0
            && V2Serializer::new()
                .serialize(&self.latency_us, &mut latency_us_hdr)
                .is_err()
        {
            // Only a count beyond i64::MAX fails; the series then goes without a histogram.
            latency_us_hdr.clear();
        }
        v1::Series {
            host: self.host.clone(),
            version: self.version.clone(),
            traffic: self.traffic.into(),
            counts: Some(self.counts),
            latency_us_hdr,
        }
    }
}

/// Everything recorded in one VM since the last [`Stats::take`].
#[derive(Debug)]
pub struct Stats {
    series: Vec<Series>,
    max_series: usize,
    dropped: u64,
    window_start_ms: i64,
}

impl Stats {
    pub fn new(max_series: usize, now_ms: i64) -> Stats {
        Stats {
            series: Vec::new(),
            max_series,
            dropped: 0,
            window_start_ms: now_ms,
        }
    }

    /// Counts one finished request. Beyond the series limit it only counts as dropped.
    pub fn record(&mut self, host: &str, version: &str, traffic: Traffic, outcome: &Outcome) {
        match self.series_of(host, version, traffic) {
            Some(series) => series.add(outcome),
            None => self.dropped += 1,
        }
    }

    /// Counts one finished request whose latency or outcome could not be read: in `requests`
    /// and `unmeasured` only, not in the histogram. Beyond the series limit it counts as dropped.
    pub fn record_unmeasured(&mut self, host: &str, version: &str, traffic: Traffic) {
        match self.series_of(host, version, traffic) {
            Some(series) => {
                series.counts.requests += 1;
                series.counts.unmeasured += 1;
            }
            None => self.dropped += 1,
        }
    }

    /// The series of (host, version, traffic), opened if the limit admits it.
    fn series_of(&mut self, host: &str, version: &str, traffic: Traffic) -> Option<&mut Series> {
        let held = self
            .series
            .iter()
            .position(|s| s.is(host, version, traffic));
        match held {
            Some(i) => self.series.get_mut(i),
            None => self.open(host, version, traffic),
        }
    }

    fn open(&mut self, host: &str, version: &str, traffic: Traffic) -> Option<&mut Series> {
        if self.series.len() >= self.max_series {
            return None;
        }
        self.series.push(Series::empty(host, version, traffic)?);
        self.series.last_mut()
    }

    /// Series currently held.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Samples dropped since the last take.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Hands out everything since the last take; the next window starts at `now_ms`.
    pub fn take(&mut self, now_ms: i64) -> Delta {
        let delta = Delta {
            window_start_ms: self.window_start_ms,
            window_end_ms: now_ms.max(self.window_start_ms),
            series: std::mem::take(&mut self.series),
            dropped: std::mem::take(&mut self.dropped),
        };
        self.window_start_ms = delta.window_end_ms;
        delta
    }

    /// Puts back a delta that could not be sent; its window and counts merge with what was
    /// recorded since. Series the limit no longer admits count as dropped.
    pub fn restore(&mut self, delta: Delta) {
        self.window_start_ms = self.window_start_ms.min(delta.window_start_ms);
        self.dropped += delta.dropped;
        for series in delta.series {
            let held = self
                .series
                .iter()
                .position(|s| s.is(&series.host, &series.version, series.traffic));
            let merged = match held {
                Some(i) => self
                    .series
                    .get_mut(i)
                    .is_some_and(|held| held.merge(&series)),
                None if self.series.len() < self.max_series => {
                    self.series.push(series);
                    continue;
                }
                None => false,
            };
            if !merged {
                self.dropped += series.counts.requests;
            }
        }
    }
}

/// A taken window: what becomes one Report.
#[derive(Debug)]
pub struct Delta {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub series: Vec<Series>,
    pub dropped: u64,
}

impl Delta {
    /// The Report for this delta, numbered `seq`. The delta stays, to be restored if sending fails.
    pub fn to_report(&self, seq: u64) -> v1::Report {
        v1::Report {
            seq,
            window_start_unix_ms: self.window_start_ms,
            window_end_unix_ms: self.window_end_ms,
            series: self.series.iter().map(Series::to_proto).collect(),
            dropped: self.dropped,
        }
    }
}
