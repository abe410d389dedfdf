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

    /// Why the step may not take more traffic yet, in the `advance` check's words; None when it
    /// may (or when this judgment has no such check).
    pub fn hold(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| c.check == ADVANCE_CHECK && c.verdict != Verdict::Pass)
            .map(|c| c.summary.clone())
    }
}

/// A count for reading: `12,345`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A likelihood ratio for reading: `3.2×`, `1,000×`, `more than 1,000,000×`.
fn times(x: f64) -> String {
    if !x.is_finite() || x >= 1e6 {
        "more than 1,000,000×".into()
    } else if x < 10.0 {
        format!("{x:.1}×")
    } else {
        format!("{}×", count(x.round() as u64))
    }
}

fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// What one statistical check found: the evidence on each side of its boundary and whether its
/// point estimate is worse than the tolerance.
struct Sides {
    /// Likelihood ratio for "worse than allowed" against "within".
    fail: f64,
    /// Likelihood ratio for "within what is allowed" against "worse".
    pass: f64,
    /// The point estimate is worse than allowed.
    leaning: bool,
}

/// The check's verdict and the end of its summary: what the evidence says, how strongly, and what
/// was needed, in words.
fn decide(a: &StepAnalysis, name: &str, sides: &Sides, pass_bar: f64) -> (Verdict, String) {
    let bar = 1.0 / a.alpha;
    let (c, b) = (&a.canary, &a.baseline);
    let min = a.spec.min_samples;
    let enough = c.requests >= min && b.requests >= min;
    if sides.fail >= bar {
        return (
            Verdict::Fail,
            format!(
                "failing: this is {} more likely if the canary is worse than allowed than if it is not (needed: {})",
                times(sides.fail),
                times(bar)
            ),
        );
    }
    let crossed = sides.pass >= pass_bar || a.passed.contains(&name);
    if crossed && enough {
        let how = if sides.pass >= pass_bar {
            format!(
                "this is {} more likely if the canary is within what is allowed than if it is worse (needed: {})",
                times(sides.pass),
                times(pass_bar)
            )
        } else {
            format!(
                "the evidence for it reached {} at an earlier look (now {})",
                times(pass_bar),
                times(sides.pass)
            )
        };
        return (Verdict::Pass, format!("passing: {how}"));
    }
    let lean = if sides.leaning {
        "leaning toward failure, not yet conclusive"
    } else {
        "not yet conclusive"
    };
    let short = if crossed && !enough {
        format!(
            "; within what is allowed, but a pass needs {} requests on each side",
            count(min)
        )
    } else {
        String::new()
    };
    (
        Verdict::NotEnoughData,
        format!(
            "{lean}: {} toward worse than allowed, {} toward within (needed: {}){short}",
            times(sides.fail),
            times(sides.pass),
            times(bar)
        ),
    )
}

pub(super) fn judge(a: &StepAnalysis) -> Judgment {
    let (c, b) = (&a.canary, &a.baseline);
    let bar = 1.0 / a.alpha;
    let evidence = |canary, baseline, statistic, threshold| Evidence {
        canary_requests: c.requests,
        baseline_requests: b.requests,
        canary,
        baseline,
        statistic,
        threshold,
    };
    let requests = format!("({} vs {} requests)", count(c.requests), count(b.requests));
    let mut checks = Vec::new();
    // What holds the step, in a few words per check whose estimate is worse than allowed.
    let mut holds: Vec<String> = Vec::new();

    if a.spec.errors.enabled {
        let (cr, br) = (c.error_rate(), b.error_rate());
        let floor = a.spec.errors.floor;
        let relative = &a.errors_relative;
        // Failing needs both: above the ratio and above the floor. Passing needs either: the
        // data rule out the ratio, or rule out the floor; each at half the level.
        let fail = match &a.errors_floor {
            Some(f) => relative.fail.evidence().min(f.fail.evidence()),
            None => relative.fail.evidence(),
        };
        let (pass, pass_bar) = match &a.errors_floor {
            Some(f) => (relative.pass.evidence().max(f.pass.evidence()), 2.0 * bar),
            None => (relative.pass.evidence(), bar),
        };
        let limit = (br * (1.0 + a.spec.errors.tolerance)).max(floor);
        let sides = Sides {
            fail,
            pass,
            leaning: cr > limit,
        };
        let (v, why) = decide(a, "error-rate", &sides, pass_bar);
        let pass_limit = (br * (1.0 + a.spec.errors.pass_margin)).max(floor);
        let allowed = if floor > 0.0 {
            format!(
                "fails above {} (baseline × {:.2}, at least {}), passes once above {} is ruled out",
                pct(limit),
                1.0 + a.spec.errors.tolerance,
                pct(floor),
                pct(pass_limit)
            )
        } else {
            format!(
                "fails above {} (baseline × {:.2}), passes once above {} is ruled out",
                pct(limit),
                1.0 + a.spec.errors.tolerance,
                pct(pass_limit)
            )
        };
        let summary = format!(
            "canary {} vs baseline {} errors {requests}; {allowed}; {why}",
            pct(cr),
            pct(br),
        );
        if sides.leaning && v != Verdict::Pass {
            holds.push(format!(
                "canary errors {} vs baseline {} (allowed up to {})",
                pct(cr),
                pct(br),
                pct(limit)
            ));
        }
        checks.push(CheckResult {
            check: "error-rate",
            verdict: v,
            summary,
            evidence: evidence(cr, br, fail, bar),
        });
        if let (Some(test), Some(max)) = (&a.errors_max, a.spec.errors.max_rate) {
            let sides = Sides {
                fail: test.fail.evidence(),
                pass: test.pass.evidence(),
                leaning: cr > max,
            };
            let (v, why) = decide(a, "error-rate-max", &sides, bar);
            let summary = format!(
                "canary {} errors against the bound {} {requests}; {why}",
                pct(cr),
                pct(max),
            );
            if sides.leaning && v != Verdict::Pass {
                holds.push(format!(
                    "canary errors {} above the bound {}",
                    pct(cr),
                    pct(max)
                ));
            }
            checks.push(CheckResult {
                check: "error-rate-max",
                verdict: v,
                summary,
                evidence: evidence(cr, max, sides.fail, bar),
            });
        }
    }

    if a.spec.latency.enabled {
        let q = a.spec.latency.quantile;
        let tol = a.spec.latency.tolerance;
        let qname = format!("p{}", (q * 1000.0).round() / 10.0);
        let cq = latency::quantile_ms(&c.latency, q).unwrap_or(0.0);
        let bq = latency::quantile_ms(&b.latency, q).unwrap_or(0.0);
        let (c_share, b_share) = match a.tail_threshold_us {
            Some(t) if c.requests > 0 && b.requests > 0 => (
                latency::count_above(&c.latency, (t as f64 * (1.0 + tol)) as u64) as f64
                    / c.requests as f64,
                latency::count_above(&b.latency, t) as f64 / b.requests as f64,
            ),
            _ => (0.0, 0.0),
        };
        let allowed_share = b_share.max(1.0 - q);
        let sides = Sides {
            fail: a.tail.fail.evidence(),
            // Allowed: within TAIL_PASS_RATIO × the baseline's share or × the quantile's own
            // share, whichever is larger. Under "worse than both" each test's evidence is
            // valid, so their mean is too.
            pass: (a.tail.pass.evidence() + a.tail_within.evidence()) / 2.0,
            leaning: a.tail_threshold_us.is_some() && c_share > allowed_share,
        };
        let (v, why) = decide(a, "latency-tail", &sides, bar);
        let summary = if a.tail_threshold_us.is_some() {
            format!(
                "{qname} canary {cq:.1} ms vs baseline {bq:.1} ms {requests}; {} of canary requests are slower than baseline {qname} × {:.2}, {} of baseline's beyond its {qname} (fails above as many, passes once above {:.1} times as many, or {}, is ruled out); {why}",
                pct(c_share),
                1.0 + tol,
                pct(b_share),
                super::TAIL_PASS_RATIO,
                pct((1.0 - q) * super::TAIL_PASS_RATIO),
            )
        } else {
            format!(
                "{qname} canary {cq:.1} ms vs baseline {bq:.1} ms {requests}; the baseline {qname} is not known yet (it needs {:.0} baseline requests)",
                10.0 / (1.0 - q)
            )
        };
        if sides.leaning && v != Verdict::Pass {
            holds.push(format!(
                "canary {qname} {cq:.1} ms vs baseline {bq:.1} ms ({} of canary requests slower than baseline {qname} × {:.2}, allowed {})",
                pct(c_share),
                1.0 + tol,
                pct(allowed_share)
            ));
        }
        checks.push(CheckResult {
            check: "latency-tail",
            verdict: v,
            summary,
            evidence: evidence(cq, bq, sides.fail, bar),
        });

        if a.spec.latency.rank {
            let (v, summary, ev) = match latency::rank_index(&c.latency, &b.latency, tol) {
                Some((theta, variance)) => {
                    let radius =
                        super::sequential::normal_mixture_radius(variance, RANK_TAU2, a.alpha);
                    let (lower, upper) = (theta - radius, theta + radius);
                    let passed = a.passed.contains(&"latency-rank");
                    let enough =
                        c.requests >= a.spec.min_samples && b.requests >= a.spec.min_samples;
                    let (v, why) = if lower > 0.5 {
                        (
                            Verdict::Fail,
                            format!(
                                "failing: even the most favourable reading at the configured confidence, {}, is above the 50% allowed",
                                pct(lower)
                            ),
                        )
                    } else if (upper < 0.5 || passed) && enough {
                        (
                            Verdict::Pass,
                            format!(
                                "passing: even the least favourable reading at the configured confidence, {}, is within the 50% allowed{}",
                                pct(upper),
                                if upper < 0.5 {
                                    ""
                                } else {
                                    " (at an earlier look)"
                                }
                            ),
                        )
                    } else {
                        let lean = if theta > 0.5 {
                            "leaning toward failure, not yet conclusive"
                        } else {
                            "not yet conclusive"
                        };
                        (
                            Verdict::NotEnoughData,
                            format!(
                                "{lean}: somewhere between {} and {} at the configured confidence",
                                pct(lower.max(0.0)),
                                pct(upper.min(1.0))
                            ),
                        )
                    };
                    if theta > 0.5 && v != Verdict::Pass {
                        holds.push(format!(
                            "canary slower than baseline × {:.2} in {} of request pairs (allowed 50%)",
                            1.0 + tol,
                            pct(theta)
                        ));
                    }
                    let summary = format!(
                        "median canary {:.1} ms vs baseline {:.1} ms {requests}; a canary request is slower than a baseline one × {:.2} in {} of pairs (allowed: 50%); {why}",
                        latency::quantile_ms(&c.latency, 0.5).unwrap_or(0.0),
                        latency::quantile_ms(&b.latency, 0.5).unwrap_or(0.0),
                        1.0 + tol,
                        pct(theta),
                    );
                    (v, summary, evidence(theta, 0.5, lower, 0.5))
                }
                None => (
                    Verdict::NotEnoughData,
                    format!("no latencies yet {requests}"),
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
            let sides = Sides {
                fail: test.fail.evidence(),
                pass: test.pass.evidence(),
                leaning: cq > max_ms,
            };
            let (v, why) = decide(a, "latency-max", &sides, bar);
            let summary = format!(
                "{qname} canary {cq:.1} ms against the bound {max_ms} ms {requests}; {why}"
            );
            if sides.leaning && v != Verdict::Pass {
                holds.push(format!(
                    "canary {qname} {cq:.1} ms above the bound {max_ms} ms"
                ));
            }
            checks.push(CheckResult {
                check: "latency-max",
                verdict: v,
                summary,
                evidence: evidence(cq, max_ms, sides.fail, bar),
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
        if !within {
            holds.push(format!(
                "{} of canary requests could not be measured (allowed {})",
                pct(share),
                pct(MAX_UNMEASURED_SHARE)
            ));
        }
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

    // Whether the step may send the canary more traffic: not while an estimate is worse than
    // allowed (unless its check passed), and not on too few canary requests.
    let min = a.spec.min_samples;
    if c.requests < min {
        holds.push(if c.requests == 0 {
            "no canary requests yet".into()
        } else {
            format!(
                "only {} canary requests, a step needs {} before more traffic",
                count(c.requests),
                count(min)
            )
        });
    }
    let (verdict, summary) = if holds.is_empty() {
        (
            Verdict::Pass,
            format!(
                "no estimate is worse than allowed and the canary had {} requests (at least {}): the step may take more traffic",
                count(c.requests),
                count(min)
            ),
        )
    } else {
        (
            Verdict::NotEnoughData,
            format!("{}; not yet conclusive", holds.join("; ")),
        )
    };
    checks.push(CheckResult {
        check: ADVANCE_CHECK,
        verdict,
        summary,
        evidence: evidence(
            c.requests as f64,
            b.requests as f64,
            holds.len() as f64,
            0.0,
        ),
    });

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

/// The check that says whether the step may send the canary more traffic. Pass: nothing leans
/// toward failure and the canary had enough requests. NotEnoughData: the step holds; its summary
/// says why in words (the rollout status repeats it).
pub const ADVANCE_CHECK: &str = "advance";

/// The largest share of the canary's requests that may go unmeasured for it to pass.
pub const MAX_UNMEASURED_SHARE: f64 = 0.01;

/// Requests a silent canary should have had, at its share so far, before silence fails it.
const STARVED_EXPECTED: f64 = 20.0;

/// Mixture variance of the rank test's boundary: tightest for a probability-index effect ≈ 0.1.
const RANK_TAU2: f64 = 0.01;
