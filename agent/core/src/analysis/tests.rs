//! The analysis judged by simulation (fixed seeds, asserted rates) and by hand-made buckets.

use std::time::Duration;

use super::simulate::{Arm, Scenario};
use super::*;

fn arm(rps: f64, error_rate: f64, scale: f64) -> Arm {
    Arm {
        rps,
        error_rate,
        median_ms: 50.0 * scale,
        p99_ms: 200.0 * scale,
    }
}

fn scenario(canary: Arm, baseline: Arm, minutes: u64, runs: usize) -> Scenario {
    Scenario {
        baseline,
        canary,
        step: Duration::from_secs(minutes * 60),
        runs,
        seed: 20261123,
        spec: AnalysisSpec::default(),
    }
}

#[test]
fn healthy_canary_is_rarely_rolled_back() {
    // 1,000 ten-minute steps at 20 canary rps (180 baseline rps), a look every 2 s.
    let s = scenario(arm(20.0, 0.005, 1.0), arm(180.0, 0.005, 1.0), 10, 1000);
    let out = s.run();
    assert!(
        out.rollback_rate() <= 0.01,
        "false rollbacks {} of 1000: {:?}",
        out.rollbacks,
        out.failed_checks
    );
    // The rest stay inconclusive (NotEnoughData): a point estimate above tolerance by chance,
    // without the evidence to fail it.
    assert!(
        out.passed >= 950,
        "a healthy canary should mostly pass with this much data: {out:?}"
    );
}

#[test]
fn error_jump_is_caught_within_seconds() {
    let s = scenario(arm(20.0, 0.05, 1.0), arm(180.0, 0.005, 1.0), 2, 400);
    let out = s.run();
    let median = out.detection_quantile(0.5).expect("detected in most runs");
    let p95 = out
        .detection_quantile(0.95)
        .expect("detected in 95 % of runs");
    assert!(median <= 10.0, "median detection {median} s");
    assert!(p95 <= 20.0, "p95 detection {p95} s");
}

#[test]
fn latency_shift_is_caught() {
    // Canary ×1.5: median and p99 both +50 %.
    let s = scenario(arm(20.0, 0.005, 1.5), arm(180.0, 0.005, 1.0), 3, 400);
    let out = s.run();
    let median = out.detection_quantile(0.5).expect("detected in most runs");
    assert!(median <= 30.0, "median detection {median} s: {out:?}");
}

#[test]
fn trickle_of_traffic_is_not_enough_data() {
    let s = scenario(arm(0.2, 0.005, 1.0), arm(1.8, 0.005, 1.0), 10, 400);
    let out = s.run();
    assert_eq!(out.rollbacks, 0, "{out:?}");
    assert_eq!(out.not_enough_data, 400, "{out:?}");
}

/// A bucket made by hand: requests, failures, latencies.
struct Hand(u64, u64, Vec<u64>);

impl Bucket for Hand {
    fn requests(&self) -> u64 {
        self.0
    }
    fn failures(&self) -> u64 {
        self.1
    }
    fn count_above(&self, us: u64) -> u64 {
        self.2.iter().filter(|v| **v > us).count() as u64
    }
    fn add_latencies_to(&self, into: &mut Histogram<u64>) {
        for v in &self.2 {
            into.record(*v).unwrap();
        }
    }
}

#[test]
fn a_silent_canary_fails_on_its_own_reason() {
    let mut a = StepAnalysis::new(AnalysisSpec::default());
    let busy = Hand(10, 0, vec![1000; 10]);
    let empty = Hand(0, 0, vec![]);
    for second in 1..=61 {
        a.observe(Duration::from_secs(1), &empty, &busy);
        let j = a.look();
        let traffic = j.checks.iter().find(|c| c.check == "traffic").unwrap();
        if second < 60 {
            assert_eq!(traffic.verdict, Verdict::NotEnoughData, "at {second}s");
            assert_ne!(j.verdict, Verdict::Fail);
        } else {
            assert_eq!(j.verdict, Verdict::Fail, "at {second}s");
            let expected = format!(
                "no requests for {second}s while baseline received {}",
                second * 10
            );
            assert!(traffic.summary.contains(&expected), "{}", traffic.summary);
        }
    }
}

/// A measured bucket plus requests the proxy could not measure.
struct Partly(Hand, u64);

impl Bucket for Partly {
    fn requests(&self) -> u64 {
        self.0.requests()
    }
    fn failures(&self) -> u64 {
        self.0.failures()
    }
    fn unmeasured(&self) -> u64 {
        self.1
    }
    fn count_above(&self, us: u64) -> u64 {
        self.0.count_above(us)
    }
    fn add_latencies_to(&self, into: &mut Histogram<u64>) {
        self.0.add_latencies_to(into)
    }
}

#[test]
fn a_canary_with_too_many_unmeasured_requests_never_passes() {
    // Identical healthy arms for ten minutes: only the canary's unmeasured share differs.
    // (unmeasured per 100 measured each second, the verdict at the end, the check's verdict)
    for (unmeasured, verdict, check) in [
        (0, Verdict::Pass, None),
        (1, Verdict::Pass, Some(Verdict::Pass)),
        (2, Verdict::NotEnoughData, Some(Verdict::NotEnoughData)),
        (50, Verdict::NotEnoughData, Some(Verdict::NotEnoughData)),
    ] {
        let mut a = StepAnalysis::new(AnalysisSpec::default());
        let latencies: Vec<u64> = (0..100).map(|i| 20_000 + i * 100).collect();
        for _ in 0..600 {
            let canary = Partly(Hand(100, 0, latencies.clone()), unmeasured);
            let baseline = Hand(100, 0, latencies.clone());
            a.observe(Duration::from_secs(1), &canary, &baseline);
            a.look();
        }
        let j = a.look();
        assert_eq!(j.verdict, verdict, "{unmeasured} unmeasured: {j:#?}");
        let measured = j.checks.iter().find(|c| c.check == "measured");
        assert_eq!(
            measured.map(|c| c.verdict),
            check,
            "{unmeasured} unmeasured"
        );
        if let Some(c) = measured.filter(|c| c.verdict != Verdict::Pass) {
            assert!(
                c.summary.contains("could not be measured")
                    && c.summary.contains("more than 1.00% unmeasured"),
                "{}",
                c.summary
            );
        }
    }
}

#[test]
fn both_arms_silent_is_not_a_failure() {
    let mut a = StepAnalysis::new(AnalysisSpec::default());
    let empty = Hand(0, 0, vec![]);
    for _ in 0..300 {
        a.observe(Duration::from_secs(1), &empty, &empty);
    }
    assert_eq!(a.look().verdict, Verdict::NotEnoughData);
}

#[test]
fn evidence_names_the_numbers() {
    let mut a = StepAnalysis::new(AnalysisSpec::default());
    for _ in 0..30 {
        a.observe(
            Duration::from_secs(1),
            &Hand(20, 10, vec![1000; 20]),
            &Hand(180, 1, vec![1000; 180]),
        );
    }
    let j = a.look();
    assert_eq!(j.verdict, Verdict::Fail);
    let errors = j.checks.iter().find(|c| c.check == "error-rate").unwrap();
    assert_eq!(errors.verdict, Verdict::Fail);
    assert_eq!(
        (
            errors.evidence.canary_requests,
            errors.evidence.baseline_requests
        ),
        (600, 5400)
    );
    assert!((errors.evidence.canary - 0.5).abs() < 1e-9);
    assert!(errors.evidence.statistic >= errors.evidence.threshold);
    assert!(
        errors
            .summary
            .starts_with("canary 50.00% vs baseline 0.56%"),
        "{}",
        errors.summary
    );
    assert_eq!(
        j.reasons(Verdict::Fail).len(),
        1,
        "{:?}",
        j.reasons(Verdict::Fail)
    );
}

#[test]
fn absolute_bounds_fail_a_canary_that_matches_a_bad_baseline() {
    let spec = AnalysisSpec {
        errors: ErrorCheck {
            max_rate: Some(0.01),
            ..ErrorCheck::default()
        },
        latency: LatencyCheck {
            max_ms: Some(5.0),
            ..LatencyCheck::default()
        },
        ..AnalysisSpec::default()
    };
    let mut a = StepAnalysis::new(spec);
    for _ in 0..60 {
        // Both arms 10 % errors and 10 ms: equal, but over both bounds.
        a.observe(
            Duration::from_secs(1),
            &Hand(20, 2, vec![10_000; 20]),
            &Hand(20, 2, vec![10_000; 20]),
        );
    }
    let j = a.look();
    let failed: Vec<_> = j
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.check)
        .collect();
    assert_eq!(failed, ["error-rate-max", "latency-max"], "{j:#?}");
}

#[test]
fn settings_are_validated_with_their_field() {
    let cases: Vec<(AnalysisSpec, &str)> = vec![
        (
            AnalysisSpec {
                false_alarm: 0.0,
                ..Default::default()
            },
            "spec.analysis.falseAlarm 0 is not in (0, 0.5]",
        ),
        (
            AnalysisSpec {
                interval: Duration::from_millis(10),
                ..Default::default()
            },
            "spec.analysis.interval 10ms is under 100ms",
        ),
        (
            AnalysisSpec {
                errors: ErrorCheck {
                    floor: 1.5,
                    ..Default::default()
                },
                ..Default::default()
            },
            "spec.analysis.errors.floor 1.5 is not in [0, 1)",
        ),
        (
            AnalysisSpec {
                latency: LatencyCheck {
                    quantile: 1.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            "spec.analysis.latency.quantile 1 is not in (0, 1)",
        ),
        (
            AnalysisSpec {
                latency: LatencyCheck {
                    max_ms: Some(-1.0),
                    ..Default::default()
                },
                ..Default::default()
            },
            "spec.analysis.latency.maxMs -1 is not a positive number of milliseconds",
        ),
        (
            AnalysisSpec {
                errors: ErrorCheck {
                    enabled: false,
                    ..Default::default()
                },
                latency: LatencyCheck {
                    enabled: false,
                    ..Default::default()
                },
                ..Default::default()
            },
            "spec.analysis.errors.enabled and latency.enabled are both false: nothing to judge",
        ),
    ];
    for (spec, message) in cases {
        assert_eq!(spec.validate().unwrap_err().to_string(), message);
    }
    AnalysisSpec::default().validate().unwrap();
}

#[test]
fn settings_read_from_yaml_with_defaults() {
    let spec: AnalysisSpec = serde_norway::from_str(
        "interval: 5s\nerrors:\n  tolerance: 1.0\nlatency:\n  quantile: 0.95\n",
    )
    .unwrap();
    assert_eq!(spec.interval, Duration::from_secs(5));
    assert_eq!(spec.errors.tolerance, 1.0);
    assert_eq!(spec.errors.floor, 0.001);
    assert_eq!(spec.latency.quantile, 0.95);
    assert_eq!(spec.min_samples, 200);
    let err = serde_norway::from_str::<AnalysisSpec>("latency:\n  quantil: 0.9\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `quantil`"), "{err}");
}

#[test]
fn a_gap_in_a_trickle_is_not_starvation_but_a_cut_off_canary_is() {
    let mut a = StepAnalysis::new(AnalysisSpec::default());
    // 0.2 canary rps against 1.8 baseline rps, then a 90 s gap: expected ~18 canary requests.
    for s in 0..100 {
        let canary = if s % 5 == 0 {
            Hand(1, 0, vec![1000])
        } else {
            Hand(0, 0, vec![])
        };
        a.observe(Duration::from_secs(1), &canary, &Hand(2, 0, vec![1000; 2]));
    }
    for _ in 0..90 {
        a.observe(
            Duration::from_secs(1),
            &Hand(0, 0, vec![]),
            &Hand(2, 0, vec![1000; 2]),
        );
    }
    assert_ne!(
        a.look().verdict,
        Verdict::Fail,
        "a 90 s gap at 0.2 rps is chance"
    );
    // At 20 canary rps the same gap is a canary cut off from its traffic.
    let mut a = StepAnalysis::new(AnalysisSpec::default());
    for _ in 0..100 {
        a.observe(
            Duration::from_secs(1),
            &Hand(20, 0, vec![1000; 20]),
            &Hand(180, 0, vec![1000; 180]),
        );
    }
    for _ in 0..60 {
        a.observe(
            Duration::from_secs(1),
            &Hand(0, 0, vec![]),
            &Hand(180, 0, vec![1000; 180]),
        );
    }
    let j = a.look();
    assert_eq!(j.verdict, Verdict::Fail);
    assert_eq!(
        j.reasons(Verdict::Fail),
        ["traffic: canary received no requests for 60s while baseline received 10800"]
    );
}

/// Pass is evidence, not a point estimate: at 20 canary requests/s a healthy canary passes
/// within 5 minutes, and canaries with 3× the errors or ×1.5 the latency do not pass.
/// (canary error rate, latency scale, least and most share of runs that pass within 5 minutes)
#[test]
fn pass_means_the_data_rule_out_a_regression() {
    for (errors, scale, least, most) in [
        (0.005, 1.0, 0.95, 1.0),
        (0.015, 1.0, 0.0, 0.01),
        (0.005, 1.5, 0.0, 0.01),
    ] {
        let s = scenario(arm(20.0, errors, scale), arm(180.0, 0.005, 1.0), 5, 100);
        let out = s.run();
        let rate = out.pass_rate();
        assert!(
            (least..=most).contains(&rate),
            "errors {errors}, latency ×{scale}: passed in {rate} of runs: {out:?}"
        );
    }
}

/// Counts are judged given each second's totals: a weight change inside the step (10 % → 50 %)
/// and traffic swinging between 40 and 400 requests/s fake no evidence against a healthy canary.
#[test]
fn traffic_swings_and_weight_changes_fake_no_evidence() {
    let runs = 200;
    let mut rollbacks = 0;
    for run in 0..runs {
        let mut traffic = simulate::Seconds::new(
            &arm(20.0, 0.005, 1.0),
            &arm(180.0, 0.005, 1.0),
            30_000 + run,
        );
        let mut a = StepAnalysis::new(AnalysisSpec::default());
        for second in 1..=180u64 {
            let total = if (second / 20) % 2 == 0 { 40.0 } else { 400.0 };
            let weight = if second < 90 { 0.1 } else { 0.5 };
            traffic.set_arms(
                &arm(total * weight, 0.005, 1.0),
                &arm(total * (1.0 - weight), 0.005, 1.0),
            );
            traffic.feed(&mut a);
            if second % 2 == 0 && a.look().verdict == Verdict::Fail {
                rollbacks += 1;
                break;
            }
        }
    }
    assert!(
        rollbacks as f64 <= 0.01 * runs as f64,
        "{rollbacks} of {runs} healthy canaries rolled back"
    );
}

#[test]
fn verdicts_read_in_words() {
    // A clearly failing canary, then a healthy one that has passed.
    let mut a = StepAnalysis::new(AnalysisSpec::default());
    for _ in 0..30 {
        a.observe(
            Duration::from_secs(1),
            &Hand(40, 2, vec![1000; 40]),
            &Hand(360, 2, vec![1000; 360]),
        );
    }
    let j = a.look();
    let errors = j.checks.iter().find(|c| c.check == "error-rate").unwrap();
    assert_eq!(errors.verdict, Verdict::Fail, "{}", errors.summary);
    assert!(
        errors.summary.starts_with(
            "canary 5.00% vs baseline 0.56% errors (1,200 vs 10,800 requests); fails above 0.69% (baseline × 1.25, at least 0.10%)"
        ) && errors
            .summary
            .contains("; failing: this is ")
            && errors
                .summary
                .contains(" more likely if the canary is worse than allowed than if it is not (needed: 300×)"),
        "{}",
        errors.summary
    );
    let advance = j.checks.iter().find(|c| c.check == ADVANCE_CHECK).unwrap();
    assert_eq!(advance.verdict, Verdict::NotEnoughData);
    assert!(
        advance
            .summary
            .starts_with("canary errors 5.00% vs baseline 0.56% (allowed up to 0.69%)"),
        "{}",
        advance.summary
    );

    let mut a = StepAnalysis::new(AnalysisSpec::default());
    let latencies: Vec<u64> = (0..100).map(|i| 20_000 + i * 100).collect();
    let mut first = None;
    for second in 1..=600 {
        a.observe(
            Duration::from_secs(1),
            &Hand(100, 0, latencies.clone()),
            &Hand(100, 1, latencies.clone()),
        );
        if second % 2 == 0 && first.is_none() && a.look().verdict == Verdict::Pass {
            first = Some(second);
        }
    }
    assert!(first.is_some(), "never passed");
    let j = a.look();
    assert_eq!(j.verdict, Verdict::Pass, "{j:#?}");
    let errors = j.checks.iter().find(|c| c.check == "error-rate").unwrap();
    assert!(errors.summary.contains("; passing: "), "{}", errors.summary);
    let advance = j.checks.iter().find(|c| c.check == ADVANCE_CHECK).unwrap();
    assert_eq!(
        advance.summary,
        "no estimate is worse than allowed and the canary had 60,000 requests (at least 200): the step may take more traffic"
    );
}

#[test]
fn a_tail_with_nothing_beyond_the_quantile_still_passes() {
    // Latencies that take three values (8, 20 and 60 ms): nothing lies beyond the baseline's
    // p99, so the ratio of tail shares never concludes; the share against the quantile's own
    // does. Identical arms, 100 and 300 requests a second, five minutes.
    let shape = |n: u64| -> Vec<u64> {
        (0..n)
            .map(|i| match i * 10 / n {
                0..=4 => 8_000,
                5..=8 => 20_000,
                _ => 60_000,
            })
            .collect()
    };
    let mut a = StepAnalysis::new(AnalysisSpec::default());
    let mut tail = None;
    for _ in 0..300 {
        a.observe(
            Duration::from_secs(1),
            &Hand(100, 1, shape(100)),
            &Hand(300, 3, shape(300)),
        );
        let j = a.look();
        tail = j.checks.iter().find(|c| c.check == "latency-tail").cloned();
    }
    let tail = tail.expect("a latency-tail check");
    assert_eq!(tail.verdict, Verdict::Pass, "{}", tail.summary);
    // A canary whose tail is 30 % of its requests at 90 ms never passes it.
    let mut slow = StepAnalysis::new(AnalysisSpec::default());
    for _ in 0..300 {
        let mut canary = shape(100);
        canary.iter_mut().take(30).for_each(|v| *v = 90_000);
        slow.observe(
            Duration::from_secs(1),
            &Hand(100, 1, canary),
            &Hand(300, 3, shape(300)),
        );
        let j = slow.look();
        let t = j.checks.iter().find(|c| c.check == "latency-tail").unwrap();
        assert_ne!(t.verdict, Verdict::Pass, "{}", t.summary);
    }
}
