//! Canary analysis: compares the canary's requests with the baseline's, bucket by bucket, and at
//! every look says for each check Pass, Fail or NotEnoughData, with the evidence a person can read.
//!
//! Pure: values in, values out. The agent feeds it the per-second windows it merged from the
//! filters; `fledge-agent simulate` feeds it simulated traffic through the very same code. What it
//! is not: it does not read telemetry, decide rollout steps, or keep state across agent restarts
//! (a restarted agent starts the step's analysis afresh from the data that arrives after).

mod judgment;
pub mod latency;
pub mod sequential;
pub mod simulate;
mod spec;

use std::time::Duration;

use hdrhistogram::Histogram;

pub use judgment::{ADVANCE_CHECK, CheckResult, Evidence, Judgment, MAX_UNMEASURED_SHARE, Verdict};
pub use spec::{AnalysisSpec, ErrorCheck, InvalidSetting, LatencyCheck};

use sequential::{RateTest, RatioTest, Side};

/// The latency tail passes once the data rule out a canary share beyond baseline's quantile ×
/// (1 + tolerance) larger than this many times the baseline's share beyond its quantile. A healthy
/// canary has about half the baseline's share there, a ×1.5 canary about 2.5 times it; with 1.0
/// a healthy canary at 20 requests/s needed about 3 minutes to pass, with 1.5 about 1.
pub const TAIL_PASS_RATIO: f64 = 1.5;

/// One time bucket of one arm's traffic: what the analysis needs to read from it.
pub trait Bucket {
    /// Requests measured (latency and outcome known).
    fn requests(&self) -> u64;
    /// Requests that failed (5xx, gRPC error, reset or timeout), each counted once.
    fn failures(&self) -> u64;
    /// Requests the proxy could not measure (not in `requests`, `failures` or the latencies).
    fn unmeasured(&self) -> u64 {
        0
    }
    /// Requests slower than `us` microseconds.
    fn count_above(&self, us: u64) -> u64;
    /// Adds this bucket's latencies to a running histogram.
    fn add_latencies_to(&self, into: &mut Histogram<u64>);
}

/// Running totals for one arm.
#[derive(Clone, Debug)]
pub(crate) struct Totals {
    pub requests: u64,
    pub failures: u64,
    pub unmeasured: u64,
    pub latency: Histogram<u64>,
}

impl Totals {
    fn new() -> Self {
        Self {
            requests: 0,
            failures: 0,
            unmeasured: 0,
            latency: latency::new_histogram(),
        }
    }

    fn add(&mut self, bucket: &impl Bucket) {
        self.requests += bucket.requests();
        self.failures += bucket.failures().min(bucket.requests());
        self.unmeasured += bucket.unmeasured();
        bucket.add_latencies_to(&mut self.latency);
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failures as f64 / self.requests as f64
        }
    }
}

/// A sequential test on both sides of one boundary: `fail` gathers evidence of a regression
/// beyond it, `pass` evidence that there is none.
#[derive(Clone, Debug)]
pub(crate) struct TwoSided<T> {
    pub fail: T,
    pub pass: T,
}

impl TwoSided<RatioTest> {
    /// Fails above `fail_at`, passes below `pass_at` (≥ `fail_at`; equal for one boundary).
    fn ratio(fail_at: f64, pass_at: f64) -> Self {
        Self {
            fail: RatioTest::on(Side::Above, fail_at),
            pass: RatioTest::on(Side::Below, pass_at),
        }
    }

    fn observe(&mut self, x: u64, n: u64, y: u64, m: u64) {
        self.fail.observe(x, n, y, m);
        self.pass.observe(x, n, y, m);
    }
}

impl TwoSided<RateTest> {
    fn rate(p0: f64) -> Self {
        Self {
            fail: RateTest::on(Side::Above, p0),
            pass: RateTest::on(Side::Below, p0),
        }
    }

    fn observe(&mut self, x: u64, n: u64) {
        self.fail.observe(x, n);
        self.pass.observe(x, n);
    }
}

/// The analysis of one rollout step, fed one bucket at a time and judged at every look.
#[derive(Clone, Debug)]
pub struct StepAnalysis {
    pub(crate) spec: AnalysisSpec,
    pub(crate) alpha: f64,
    pub(crate) elapsed: Duration,
    pub(crate) canary: Totals,
    pub(crate) baseline: Totals,
    /// Canary error rate above (1 + tolerance) × baseline's, below (1 + passMargin) × baseline's.
    pub(crate) errors_relative: TwoSided<RatioTest>,
    /// Canary error rate vs the floor (None when the floor is 0).
    pub(crate) errors_floor: Option<TwoSided<RateTest>>,
    pub(crate) errors_max: Option<TwoSided<RateTest>>,
    /// Canary share beyond (1 + tolerance) × baseline's quantile vs baseline share beyond it.
    pub(crate) tail: TwoSided<RatioTest>,
    /// The same canary share against the quantile's own share × [`TAIL_PASS_RATIO`]: evidence
    /// for a pass where the baseline has (almost) nothing beyond its quantile, as with latencies
    /// that take a few values, and the ratio test alone could never conclude.
    pub(crate) tail_within: RateTest,
    /// The baseline quantile the next buckets are compared at, fixed before they are seen.
    pub(crate) tail_threshold_us: Option<u64>,
    pub(crate) latency_max: Option<TwoSided<RateTest>>,
    /// Checks that passed at an earlier look. A pass is final within a step (its evidence was
    /// valid when it crossed), unless the failure side later fails the check.
    pub(crate) passed: Vec<&'static str>,
    /// How long the canary has gone without a request, and the baseline's requests meanwhile.
    pub(crate) canary_silent: Duration,
    pub(crate) baseline_during_silence: u64,
}

impl StepAnalysis {
    /// Starts a step. The spec should have passed [`AnalysisSpec::validate`].
    pub fn new(spec: AnalysisSpec) -> Self {
        let alpha = spec.alpha_per_check();
        let errors_floor = (spec.errors.floor > 0.0).then(|| TwoSided::rate(spec.errors.floor));
        let errors_max = spec.errors.max_rate.map(TwoSided::rate);
        let latency_max = spec
            .latency
            .max_ms
            .map(|_| TwoSided::rate(1.0 - spec.latency.quantile));
        Self {
            errors_relative: TwoSided::ratio(
                1.0 + spec.errors.tolerance,
                1.0 + spec.errors.pass_margin,
            ),
            tail: TwoSided::ratio(1.0, TAIL_PASS_RATIO),
            tail_within: RateTest::on(Side::Below, (1.0 - spec.latency.quantile) * TAIL_PASS_RATIO),
            passed: Vec::new(),
            spec,
            alpha,
            elapsed: Duration::ZERO,
            canary: Totals::new(),
            baseline: Totals::new(),
            errors_floor,
            errors_max,
            tail_threshold_us: None,
            latency_max,
            canary_silent: Duration::ZERO,
            baseline_during_silence: 0,
        }
    }

    pub fn spec(&self) -> &AnalysisSpec {
        &self.spec
    }

    /// Time covered by the buckets seen so far.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Adds one bucket of `len` for each arm. Buckets must be given in time order, once each.
    pub fn observe(&mut self, len: Duration, canary: &impl Bucket, baseline: &impl Bucket) {
        let (n, m) = (canary.requests(), baseline.requests());
        let (x, y) = (canary.failures().min(n), baseline.failures().min(m));
        self.errors_relative.observe(x, n, y, m);
        if let Some(test) = &mut self.errors_floor {
            test.observe(x, n);
        }
        if let Some(test) = &mut self.errors_max {
            test.observe(x, n);
        }
        if let Some(threshold) = self.tail_threshold_us {
            let scaled = (threshold as f64 * (1.0 + self.spec.latency.tolerance)) as u64;
            let beyond = canary.count_above(scaled);
            self.tail
                .observe(beyond, n, baseline.count_above(threshold), m);
            self.tail_within.observe(beyond, n);
        }
        if let (Some(test), Some(max_ms)) = (&mut self.latency_max, self.spec.latency.max_ms) {
            test.observe(canary.count_above((max_ms * 1000.0) as u64), n);
        }
        self.canary.add(canary);
        self.baseline.add(baseline);
        self.elapsed += len;
        if n == 0 {
            self.canary_silent += len;
            self.baseline_during_silence += m;
        } else {
            self.canary_silent = Duration::ZERO;
            self.baseline_during_silence = 0;
        }
    }

    /// Judges everything seen so far. Also fixes the tail threshold for the buckets that follow
    /// (from the baseline seen up to now), which is why it takes `&mut self`.
    pub fn look(&mut self) -> Judgment {
        let q = self.spec.latency.quantile;
        // The quantile is trusted once the baseline has ~10 requests beyond it.
        if self.baseline.requests as f64 * (1.0 - q) >= 10.0 {
            self.tail_threshold_us = Some(self.baseline.latency.value_at_quantile(q));
        }
        let judgment = judgment::judge(self);
        for check in &judgment.checks {
            if check.verdict == Verdict::Pass && !self.passed.contains(&check.check) {
                self.passed.push(check.check);
            }
        }
        judgment
    }
}

#[cfg(test)]
mod tests;
