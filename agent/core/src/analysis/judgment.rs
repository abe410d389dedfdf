//! Turning the running tests of a step into verdicts with evidence: one [`CheckResult`] per
//! enabled check and an overall [`Verdict`]. Every number a decision rests on is in the evidence.

use serde::Serialize;

use super::{StepAnalysis, latency};

/// A check's answer; the rollout status records the same type.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub enum Verdict {
    Pass,
    Fail,
    NotEnoughData,
}

/// The numbers behind one check. `statistic` is compared with `threshold`: for the sequential
/// tests it is the mixture likelihood ratio against 1/alpha; for the rank test, the lower
/// confidence bound of the probability index against ½.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub canary_requests: u64,
    pub baseline_requests: u64,
    pub canary: f64,
    pub baseline: f64,
    pub statistic: f64,
    pub threshold: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub check: &'static str,
    pub verdict: Verdict,
    /// One line a person reads: what was compared, the values, and why the verdict.
    pub summary: String,
    pub evidence: Evidence,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgment {
    pub verdict: Verdict,
    pub elapsed_secs: f64,
    pub checks: Vec<CheckResult>,
}

impl Judgment {
    /// The checks that failed, as "check: summary" lines.
    pub fn reasons(&self, verdict: Verdict) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.verdict == verdict)
            .map(|c| format!("{}: {}", c.check, c.summary))
            .collect()
    }
}

/// A likelihood ratio for reading: small ones with decimals, large ones in scientific notation.
fn num(x: f64) -> String {
    if x < 1000.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.2e}")
    }
}

fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

pub(super) fn judge(a: &StepAnalysis) -> Judgment {
    let (c, b) = (&a.canary, &a.baseline);
    let bar = 1.0 / a.alpha;
    let enough = c.requests >= a.spec.min_samples && b.requests >= a.spec.min_samples;
    let evidence = |canary, baseline, statistic, threshold| Evidence {
        canary_requests: c.requests,
        baseline_requests: b.requests,
        canary,
        baseline,
        statistic,
        threshold,
    };
    // Pass needs enough samples and a point estimate within tolerance; Fail needs the test.
    let verdict = |failed: bool, within: bool| match (failed, enough && within) {
        (true, _) => Verdict::Fail,
        (false, true) => Verdict::Pass,
        (false, false) => Verdict::NotEnoughData,
    };
    let samples = format!("{} canary / {} baseline requests", c.requests, b.requests);
    let mut checks = Vec::new();

    if a.spec.errors.enabled {
        let (cr, br) = (c.error_rate(), b.error_rate());
        let relative = a.errors_relative.evidence();
        let floor = a
            .errors_floor
            .as_ref()
            .map_or(f64::INFINITY, |t| t.evidence());
        let statistic = relative.min(floor);
        let limit = (br * (1.0 + a.spec.errors.tolerance)).max(a.spec.errors.floor);
        let v = verdict(statistic >= bar, cr <= limit);
        let summary = format!(
            "canary {} vs baseline {} (fails above {} with tolerance {} and floor {}); evidence {} against {:.0}; {samples}",
            pct(cr),
            pct(br),
            pct(limit),
            a.spec.errors.tolerance,
            pct(a.spec.errors.floor),
            num(statistic),
            bar
        );
        checks.push(CheckResult {
            check: "error-rate",
            verdict: v,
            summary,
            evidence: evidence(cr, br, statistic, bar),
        });
        if let (Some(test), Some(max)) = (&a.errors_max, a.spec.errors.max_rate) {
            let statistic = test.evidence();
            let v = verdict(statistic >= bar, cr <= max);
            let summary = format!(
                "canary {} against the bound {}; evidence {} against {:.0}; {samples}",
                pct(cr),
                pct(max),
                statistic,
                bar
            );
            checks.push(CheckResult {
                check: "error-rate-max",
                verdict: v,
                summary,
                evidence: evidence(cr, max, statistic, bar),
            });
        }
    }

    if a.spec.latency.enabled {
        let q = a.spec.latency.quantile;
        let tol = a.spec.latency.tolerance;
        let qname = format!("p{}", (q * 1000.0).round() / 10.0);
        let cq = latency::quantile_ms(&c.latency, q).unwrap_or(0.0);
        let bq = latency::quantile_ms(&b.latency, q).unwrap_or(0.0);
        let statistic = a.tail.evidence();
        let (c_share, b_share) = match a.tail_threshold_us {
            Some(t) if c.requests > 0 && b.requests > 0 => (
                latency::count_above(&c.latency, (t as f64 * (1.0 + tol)) as u64) as f64
                    / c.requests as f64,
                latency::count_above(&b.latency, t) as f64 / b.requests as f64,
            ),
            _ => (0.0, 0.0),
        };
        let v = verdict(
            statistic >= bar,
            a.tail_threshold_us.is_some() && c_share <= b_share.max(1.0 - q),
        );
        let summary = format!(
            "{qname} canary {cq:.1} ms vs baseline {bq:.1} ms; canary share beyond baseline {qname} × {:.2} is {} vs baseline's {} beyond its {qname}; evidence {} against {:.0}; {samples}",
            1.0 + tol,
            pct(c_share),
            pct(b_share),
            num(statistic),
            bar
        );
        checks.push(CheckResult {
            check: "latency-tail",
            verdict: v,
            summary,
            evidence: evidence(cq, bq, statistic, bar),
        });

        if a.spec.latency.rank {
            let (v, summary, ev) = match latency::rank_index(&c.latency, &b.latency, tol) {
                Some((theta, variance)) => {
                    let radius =
                        super::sequential::normal_mixture_radius(variance, RANK_TAU2, a.alpha);
                    let lower = theta - radius;
                    let v = verdict(lower > 0.5, theta <= 0.5);
                    let summary = format!(
                        "P(canary slower than baseline × {:.2}) = {theta:.3} (lower bound {lower:.3}, fails above 0.5); median canary {:.1} ms vs baseline {:.1} ms; {samples}",
                        1.0 + tol,
                        latency::quantile_ms(&c.latency, 0.5).unwrap_or(0.0),
                        latency::quantile_ms(&b.latency, 0.5).unwrap_or(0.0),
                    );
                    (v, summary, evidence(theta, 0.5, lower, 0.5))
                }
                None => (
                    Verdict::NotEnoughData,
                    format!("no latencies yet; {samples}"),
                    evidence(0.0, 0.5, 0.0, 0.5),
                ),
            };
            checks.push(CheckResult {
                check: "latency-rank",
                verdict: v,
                summary,
                evidence: ev,
            });
        }

        if let (Some(test), Some(max_ms)) = (&a.latency_max, a.spec.latency.max_ms) {
            let statistic = test.evidence();
            let v = verdict(statistic >= bar, cq <= max_ms);
            let summary = format!(
                "{qname} canary {cq:.1} ms against the bound {max_ms} ms; evidence {} against {:.0}; {samples}",
                num(statistic),
                bar
            );
            checks.push(CheckResult {
                check: "latency-max",
                verdict: v,
                summary,
                evidence: evidence(cq, max_ms, statistic, bar),
            });
        }
    }

    let timeout = a.spec.no_traffic_timeout;
    // A canary that had traffic before must miss clearly more than chance allows at its own
    // share of requests: at least STARVED_EXPECTED requests (P(0) < 1e-8 for Poisson arrivals).
    let before = (b.requests - a.baseline_during_silence).max(1) as f64;
    let expected = a.baseline_during_silence as f64 * c.requests as f64 / before;
    let starved = a.canary_silent >= timeout
        && a.baseline_during_silence > 0
        && (c.requests == 0 || expected >= STARVED_EXPECTED);
    let traffic = if starved {
        Verdict::Fail
    } else if c.requests > 0 {
        Verdict::Pass
    } else {
        Verdict::NotEnoughData
    };
    let summary = if starved {
        format!(
            "canary received no requests for {}s while baseline received {}",
            a.canary_silent.as_secs(),
            a.baseline_during_silence
        )
    } else {
        format!(
            "canary received {} requests; last gap {}s",
            c.requests,
            a.canary_silent.as_secs()
        )
    };
    let silent = a.canary_silent.as_secs_f64();
    checks.push(CheckResult {
        check: "traffic",
        verdict: traffic,
        summary,
        evidence: evidence(
            c.requests as f64,
            b.requests as f64,
            silent,
            timeout.as_secs_f64(),
        ),
    });

    // Requests the proxy could not measure are counted, never guessed; a canary with more of
    // them than the bound cannot pass, whatever its measured requests say.
    if c.unmeasured > 0 {
        let seen = c.requests + c.unmeasured;
        let share = c.unmeasured as f64 / seen as f64;
        let within = share <= MAX_UNMEASURED_SHARE;
        let summary = format!(
            "{} of {seen} canary requests ({}) could not be measured by the proxy (latency or status unreadable){}",
            c.unmeasured,
            pct(share),
            if within {
                String::new()
            } else {
                format!(
                    "; more than {} unmeasured: the canary cannot pass on what fledge cannot see",
                    pct(MAX_UNMEASURED_SHARE)
                )
            }
        );
        checks.push(CheckResult {
            check: "measured",
            verdict: if within {
                Verdict::Pass
            } else {
                Verdict::NotEnoughData
            },
            summary,
            evidence: evidence(share, 0.0, share, MAX_UNMEASURED_SHARE),
        });
    }

    let overall = if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.iter().all(|c| c.verdict == Verdict::Pass) {
        Verdict::Pass
    } else {
        Verdict::NotEnoughData
    };
    Judgment {
        verdict: overall,
        elapsed_secs: a.elapsed.as_secs_f64(),
        checks,
    }
}

/// The largest share of the canary's requests that may go unmeasured for it to pass.
pub const MAX_UNMEASURED_SHARE: f64 = 0.01;

/// Requests a silent canary should have had, at its share so far, before silence fails it.
const STARVED_EXPECTED: f64 = 20.0;

/// Mixture variance of the rank test's boundary: tightest for a probability-index effect ≈ 0.1.
const RANK_TAU2: f64 = 0.01;
