//! Planning by simulation: how fast is a bad canary caught at a given traffic, and how often is a
//! good one rolled back? Simulated requests (Poisson arrivals, lognormal latencies, Bernoulli
//! failures) go through the same [`StepAnalysis`] the agent runs, one-second buckets, a look
//! every `spec.interval`. Deterministic for a seed: run `i` uses seed `seed + i`.

use std::time::Duration;

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, LogNormal, Poisson};
use serde::Serialize;

use super::{AnalysisSpec, Bucket, StepAnalysis, Verdict};

/// z of the 99th percentile of the standard normal, to turn (median, p99) into a lognormal.
const Z99: f64 = 2.326_347_874;

/// One arm's simulated traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct Arm {
    pub rps: f64,
    pub error_rate: f64,
    pub median_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub baseline: Arm,
    pub canary: Arm,
    pub step: Duration,
    pub runs: usize,
    pub seed: u64,
    pub spec: AnalysisSpec,
}

/// What the runs found.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub runs: usize,
    /// Runs that ended in Fail (a rollback).
    pub rollbacks: usize,
    /// Runs whose last look was Pass / NotEnoughData (never failed).
    pub passed: usize,
    pub not_enough_data: usize,
    /// Seconds from step start to the Fail, for the runs that failed, ascending.
    pub detection_secs: Vec<f64>,
    /// Which check failed first, per failing run (first failing check named).
    pub failed_checks: Vec<(String, usize)>,
    /// Seconds from step start to the first look that passed, for the runs that passed at some
    /// look (before any Fail), ascending: when an `untilAnalysisPasses` step would have ended.
    pub pass_secs: Vec<f64>,
}

impl Outcome {
    pub fn rollback_rate(&self) -> f64 {
        self.rollbacks as f64 / self.runs.max(1) as f64
    }

    /// Detection-time quantile over ALL runs: a run that never failed counts as never detected,
    /// so the answer is None when fewer than `q` of the runs failed.
    pub fn detection_quantile(&self, q: f64) -> Option<f64> {
        let rank = ((q * self.runs as f64).ceil() as usize).max(1);
        self.detection_secs.get(rank - 1).copied()
    }

    /// Share of the runs that passed at some look before any Fail.
    pub fn pass_rate(&self) -> f64 {
        self.pass_secs.len() as f64 / self.runs.max(1) as f64
    }

    /// Time-to-pass quantile over ALL runs (None when fewer than `q` of them passed).
    pub fn pass_quantile(&self, q: f64) -> Option<f64> {
        let rank = ((q * self.runs as f64).ceil() as usize).max(1);
        self.pass_secs.get(rank - 1).copied()
    }
}

/// Simulated requests of one arm in one second.
struct Samples {
    latencies_us: Vec<u64>,
    failures: u64,
}

impl Bucket for Samples {
    fn requests(&self) -> u64 {
        self.latencies_us.len() as u64
    }
    fn failures(&self) -> u64 {
        self.failures
    }
    fn count_above(&self, us: u64) -> u64 {
        self.latencies_us.iter().filter(|v| **v > us).count() as u64
    }
    fn add_latencies_to(&self, into: &mut Histogram<u64>) {
        for v in &self.latencies_us {
            into.saturating_record(*v);
        }
    }
}

struct Generator {
    arrivals: Option<Poisson<f64>>,
    latency: LogNormal<f64>,
    error_rate: f64,
}

impl Generator {
    fn new(arm: &Arm) -> Self {
        let sigma = ((arm.p99_ms / arm.median_ms).ln() / Z99).max(1e-6);
        let mu = (arm.median_ms * 1000.0).ln();
        Self {
            arrivals: Poisson::new(arm.rps).ok(),
            // Valid for any finite mu and positive sigma, which `Scenario::validate` ensures.
            latency: LogNormal::new(mu, sigma)
                .unwrap_or_else(|_| LogNormal::new(0.0, 1.0).expect("standard lognormal")),
            error_rate: arm.error_rate.clamp(0.0, 1.0),
        }
    }

    fn second(&self, rng: &mut StdRng, out: &mut Samples) {
        out.latencies_us.clear();
        out.failures = 0;
        let count = self.arrivals.as_ref().map_or(0, |p| p.sample(rng) as usize);
        for _ in 0..count {
            out.latencies_us
                .push((self.latency.sample(rng).round() as u64).max(1));
            out.failures += u64::from(rng.random_bool(self.error_rate));
        }
    }
}

/// Simulated seconds of both arms, for callers that run their own loop around the analysis (a
/// whole rollout through the state machine). The arms may change between seconds, as a weight
/// change or a traffic swing does.
pub struct Seconds {
    rng: StdRng,
    canary: Generator,
    baseline: Generator,
    c: Samples,
    b: Samples,
}

impl Seconds {
    pub fn new(canary: &Arm, baseline: &Arm, seed: u64) -> Self {
        let empty = || Samples {
            latencies_us: Vec::new(),
            failures: 0,
        };
        Self {
            rng: StdRng::seed_from_u64(seed),
            canary: Generator::new(canary),
            baseline: Generator::new(baseline),
            c: empty(),
            b: empty(),
        }
    }

    /// From the next second on, traffic follows these arms.
    pub fn set_arms(&mut self, canary: &Arm, baseline: &Arm) {
        self.canary = Generator::new(canary);
        self.baseline = Generator::new(baseline);
    }

    /// One more second into `analysis`.
    pub fn feed(&mut self, analysis: &mut StepAnalysis) {
        self.canary.second(&mut self.rng, &mut self.c);
        self.baseline.second(&mut self.rng, &mut self.b);
        analysis.observe(Duration::from_secs(1), &self.c, &self.b);
    }
}

impl Scenario {
    /// Refuses settings the simulation cannot mean: names the flag.
    pub fn validate(&self) -> Result<(), String> {
        for (name, arm) in [("baseline", &self.baseline), ("canary", &self.canary)] {
            if !(arm.rps.is_finite() && arm.rps >= 0.0) {
                return Err(format!(
                    "{name} rate {} is not a non-negative number of requests/s",
                    arm.rps
                ));
            }
            if !(0.0..=1.0).contains(&arm.error_rate) {
                return Err(format!(
                    "{name} error rate {} is not in [0, 1]",
                    arm.error_rate
                ));
            }
            if !(arm.median_ms > 0.0 && arm.p99_ms >= arm.median_ms && arm.p99_ms.is_finite()) {
                return Err(format!(
                    "{name} latency needs 0 < median ({}) ≤ p99 ({})",
                    arm.median_ms, arm.p99_ms
                ));
            }
        }
        if self.runs == 0 || self.step < Duration::from_secs(1) {
            return Err("need at least one run and a step of at least 1s".into());
        }
        self.spec.validate().map_err(|e| e.to_string())
    }

    /// Runs the scenario on all cores; same result for the same seed on any machine.
    pub fn run(&self) -> Outcome {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(self.runs);
        let results: Vec<Run> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t..self.runs)
                            .step_by(threads)
                            .map(|i| (i, self.one(i)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<_> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect();
            all.sort_by_key(|(i, _)| *i);
            all.into_iter().map(|(_, r)| r).collect()
        });
        let mut outcome = Outcome {
            runs: self.runs,
            rollbacks: 0,
            passed: 0,
            not_enough_data: 0,
            detection_secs: Vec::new(),
            failed_checks: Vec::new(),
            pass_secs: Vec::new(),
        };
        for (detected, last, check, passed) in results {
            outcome.pass_secs.extend(passed);
            match (detected, last) {
                (Some(t), _) => {
                    outcome.rollbacks += 1;
                    outcome.detection_secs.push(t);
                    let name = check.unwrap_or("?").to_string();
                    match outcome.failed_checks.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, count)) => *count += 1,
                        None => outcome.failed_checks.push((name, 1)),
                    }
                }
                (None, Verdict::Pass) => outcome.passed += 1,
                (None, _) => outcome.not_enough_data += 1,
            }
        }
        outcome.detection_secs.sort_by(f64::total_cmp);
        outcome.pass_secs.sort_by(f64::total_cmp);
        outcome
    }

    /// One simulated step: (seconds to Fail, last verdict, first failing check, first pass).
    fn one(&self, run: usize) -> Run {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(run as u64));
        let (canary, baseline) = (Generator::new(&self.canary), Generator::new(&self.baseline));
        let mut analysis = StepAnalysis::new(self.spec.clone());
        let look_every = self.spec.interval.as_secs().max(1);
        let mut c = Samples {
            latencies_us: Vec::new(),
            failures: 0,
        };
        let mut b = Samples {
            latencies_us: Vec::new(),
            failures: 0,
        };
        let mut last = Verdict::NotEnoughData;
        let mut passed = None;
        for second in 1..=self.step.as_secs() {
            canary.second(&mut rng, &mut c);
            baseline.second(&mut rng, &mut b);
            analysis.observe(Duration::from_secs(1), &c, &b);
            if second % look_every == 0 || second == self.step.as_secs() {
                let judgment = analysis.look();
                last = judgment.verdict;
                if last == Verdict::Pass && passed.is_none() {
                    passed = Some(second as f64);
                }
                if last == Verdict::Fail {
                    let check = judgment
                        .checks
                        .iter()
                        .find(|c| c.verdict == Verdict::Fail)
                        .map(|c| c.check);
                    return (Some(second as f64), last, check, passed);
                }
            }
        }
        (None, last, None, passed)
    }
}

/// One run: (seconds to Fail, last verdict, first failing check, seconds to the first pass).
type Run = (Option<f64>, Verdict, Option<&'static str>, Option<f64>);

/// The printed answer of `fledge-agent simulate`.
pub fn table(s: &Scenario, out: &Outcome) -> String {
    let arm = |a: &Arm| {
        format!(
            "{} rps, errors {:.2}%, latency median {} ms, p99 {} ms",
            a.rps,
            a.error_rate * 100.0,
            a.median_ms,
            a.p99_ms
        )
    };
    let secs = |v: Option<f64>| v.map_or("not reached".to_string(), |t| format!("{t:.0} s"));
    let failed: Vec<String> = out
        .failed_checks
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    format!(
        "canary    {}\nbaseline  {}\nstep {:?}, a look every {:?}, {} runs, seed {}, false-alarm level {}\n\
         rollbacks            {} of {} ({:.2}%)\n\
         detection time       median {}, p95 {} (over all runs)\n\
         first failing check  {}\n\
         never failed         {} passed, {} not enough data\n",
        arm(&s.canary),
        arm(&s.baseline),
        s.step,
        s.spec.interval,
        out.runs,
        s.seed,
        s.spec.false_alarm,
        out.rollbacks,
        out.runs,
        out.rollback_rate() * 100.0,
        secs(out.detection_quantile(0.5)),
        secs(out.detection_quantile(0.95)),
        if failed.is_empty() {
            "-".to_string()
        } else {
            failed.join(", ")
        },
        out.passed,
        out.not_enough_data
    )
}

/// The published table (`fledge-agent simulate --table`): for each canary (healthy, error
/// increases, latency shifts) at each canary traffic, rollbacks with their detection time and
/// passes with their time to pass, over `runs` steps of `step` with the default analysis.
/// Baseline: 9× the canary's traffic, 0.5 % errors, latency median 50 ms, p99 200 ms.
pub fn published_table(runs: usize, step: Duration, seed: u64) -> String {
    let base = |rps: f64| Arm {
        rps,
        error_rate: 0.005,
        median_ms: 50.0,
        p99_ms: 200.0,
    };
    let rows: [(&str, f64, f64); 9] = [
        ("healthy (same as baseline)", 0.0, 1.0),
        ("errors ×1.25 (+0.125 points)", 0.00125, 1.0),
        ("errors +0.5 points (×2)", 0.005, 1.0),
        ("errors +1 point (×3)", 0.01, 1.0),
        ("errors +5 points (×11)", 0.05, 1.0),
        ("latency ×1.1", 0.0, 1.1),
        ("latency ×1.25", 0.0, 1.25),
        ("latency ×1.5", 0.0, 1.5),
        ("latency ×2", 0.0, 2.0),
    ];
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |t| format!("{t:.0} s"));
    let mut out = format!(
        "{runs} runs per cell, steps of {step:?}, a look every 2 s, default analysis (false-alarm level 0.01), seed {seed}\n\n\
         | canary | canary rps | rolled back | detection median | detection p95 | passed | time to pass median | p95 |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for (name, extra_errors, scale) in rows {
        for rps in [2.0, 20.0, 200.0] {
            let baseline = base(rps * 9.0);
            let canary = Arm {
                rps,
                error_rate: 0.005 + extra_errors,
                median_ms: 50.0 * scale,
                p99_ms: 200.0 * scale,
            };
            let o = Scenario {
                baseline,
                canary,
                step,
                runs,
                seed,
                spec: AnalysisSpec::default(),
            }
            .run();
            out.push_str(&format!(
                "| {name} | {rps} | {:.1}% | {} | {} | {:.1}% | {} | {} |\n",
                o.rollback_rate() * 100.0,
                secs(o.detection_quantile(0.5)),
                secs(o.detection_quantile(0.95)),
                o.pass_rate() * 100.0,
                secs(o.pass_quantile(0.5)),
                secs(o.pass_quantile(0.95)),
            ));
        }
    }
    out
}
