use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::rollout::GateState;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("a valid time")
}

fn cpu() -> MetricGate {
    MetricGate {
        query: Some("avg(cpu{ns=\"{{namespace}}\",version=\"{{version}}\"})".into()),
        max: Some(0.7),
        fail_after: Duration::from_secs(30),
        ..MetricGate::named("cpu")
    }
}

const NAMES: Names<'static> = Names {
    namespace: "shop",
    canary: "v2",
    stable: "v1",
};

#[test]
fn placeholders_are_filled_per_arm() {
    let relative = MetricGate {
        max_ratio_to_stable: Some(1.2),
        ..cpu()
    };
    let per_arm = MetricGate {
        query: None,
        canary_query: Some("a{v=\"{{canary}}\"} / b{v=\"{{stable}}\"}".into()),
        stable_query: Some("a{v=\"{{stable}}\",ns=\"{{ namespace }}\"}".into()),
        min_ratio_to_stable: Some(0.98),
        ..MetricGate::named("kpi")
    };
    let cases = [
        (cpu(), "avg(cpu{ns=\"shop\",version=\"v2\"})", None),
        (
            relative,
            "avg(cpu{ns=\"shop\",version=\"v2\"})",
            Some("avg(cpu{ns=\"shop\",version=\"v1\"})"),
        ),
        (
            per_arm,
            "a{v=\"v2\"} / b{v=\"v1\"}",
            Some("a{v=\"v1\",ns=\"shop\"}"),
        ),
    ];
    for (gate, canary, stable) in cases {
        let q = Queries::of(&gate, &NAMES);
        assert_eq!(q.canary, canary, "{}", gate.name);
        assert_eq!(q.stable.as_deref(), stable, "{}", gate.name);
    }
}

#[test]
fn each_answer_gives_its_state_and_words() {
    let relative = MetricGate {
        max: None,
        max_ratio_to_stable: Some(1.2),
        ..cpu()
    };
    let kpi = MetricGate {
        max: None,
        min: Some(0.99),
        max_below_stable: Some(0.005),
        ..cpu()
    };
    let cpu = cpu();
    let q = |g: &MetricGate| Queries::of(g, &NAMES);
    let v = Sample::Value;
    // (gate, canary, stable, state, words in the reason)
    let cases: Vec<(&MetricGate, Sample, Option<Sample>, &str, &str)> = vec![
        (&cpu, v(0.3), None, "Pass", ""),
        (&cpu, v(0.7), None, "Pass", ""),
        (
            &cpu,
            v(0.85),
            None,
            "Fail",
            "canary 0.85 is above max 0.7; query: avg(cpu{ns=\"shop\",version=\"v2\"})",
        ),
        (
            &cpu,
            Sample::Empty,
            None,
            "Hold",
            "not enough data: the canary query answered no series",
        ),
        (
            &cpu,
            v(f64::NAN),
            None,
            "Hold",
            "not enough data: the canary query answered NaN",
        ),
        (
            &cpu,
            v(f64::INFINITY),
            None,
            "Hold",
            "the canary query answered inf",
        ),
        (&relative, v(0.36), Some(v(0.3)), "Pass", ""),
        (
            &relative,
            v(0.37),
            Some(v(0.3)),
            "Fail",
            "canary 0.37 is above maxRatioToStable 0.36 (stable 0.3 × 1.2)",
        ),
        (
            &relative,
            v(0.37),
            Some(Sample::Empty),
            "Hold",
            "the stable query answered no series",
        ),
        (&kpi, v(0.995), Some(v(0.999)), "Pass", ""),
        (
            &kpi,
            v(0.985),
            Some(v(0.999)),
            "Fail",
            "canary 0.985 is below min 0.99;",
        ),
        (
            &kpi,
            v(0.993),
            Some(v(0.999)),
            "Fail",
            "canary 0.993 is below maxBelowStable 0.994 (stable 0.999 - 0.005)",
        ),
    ];
    for (gate, canary, stable, state, words) in cases {
        let queries = q(gate);
        let look = Look {
            queries: &queries,
            canary: canary.clone(),
            stable: stable.clone(),
        };
        let run = ErrorRun::default().after(&look, at(0));
        let (got, evidence) = decide(gate, &look, &run, at(0));
        assert_eq!(got.label(), state, "{canary:?} {stable:?}: {got:?}");
        assert!(
            got.reason().unwrap_or_default().contains(words),
            "{canary:?} {stable:?}: {got:?}"
        );
        assert_eq!(evidence["canary"]["query"], queries.canary.as_str());
        if let Sample::Value(x) = canary
            && x.is_finite()
        {
            assert_eq!(evidence["canary"]["value"], x);
        }
    }
}

#[test]
fn the_evidence_names_the_query_the_value_and_each_bound() {
    let gate = MetricGate {
        max_above_stable: Some(0.5),
        ..cpu()
    };
    let queries = Queries::of(&gate, &NAMES);
    let look = Look {
        queries: &queries,
        canary: Sample::Value(0.85),
        stable: Some(Sample::Value(0.3)),
    };
    let (state, evidence) = decide(&gate, &look, &ErrorRun::default(), at(0));
    assert_eq!(state.label(), "Fail");
    assert_eq!(
        evidence,
        serde_json::json!({
            "canary": {"query": "avg(cpu{ns=\"shop\",version=\"v2\"})", "value": 0.85},
            "stable": {"query": "avg(cpu{ns=\"shop\",version=\"v1\"})", "value": 0.3},
            "bounds": [
                {"bound": "max", "limit": 0.7, "kept": false},
                {"bound": "maxAboveStable", "limit": 0.8, "kept": false},
            ],
        })
    );
}

#[test]
fn query_errors_hold_until_they_have_lasted_fail_after() {
    let gate = cpu();
    let queries = Queries::of(&gate, &NAMES);
    let bad = Look {
        queries: &queries,
        canary: Sample::Error("bad_data: parse error".into()),
        stable: None,
    };
    let good = Look {
        canary: Sample::Value(0.2),
        ..bad.clone()
    };
    // (look, made at, state, errors since, looks in the run, next look after)
    let script = [
        (&bad, 0, "Hold", Some(0), 1, 1),
        (&bad, 1, "Hold", Some(0), 2, 2),
        (&bad, 3, "Hold", Some(0), 3, 4),
        (&good, 7, "Pass", None, 0, 10),
        (&bad, 17, "Hold", Some(17), 1, 1),
        (&bad, 18, "Hold", Some(17), 2, 2),
        (&bad, 20, "Hold", Some(17), 3, 4),
        (&bad, 24, "Hold", Some(17), 4, 8),
        (&bad, 32, "Hold", Some(17), 5, 10),
        (&bad, 42, "Hold", Some(17), 6, 10),
        (&bad, 47, "Fail", Some(17), 7, 10),
    ];
    let mut run = ErrorRun::default();
    for (look, t, state, since, looks, next) in script {
        run = run.after(look, at(t));
        let (got, evidence) = decide(&gate, look, &run, at(t));
        assert_eq!(got.label(), state, "at {t}: {got:?}");
        assert_eq!(run.since, since.map(at), "at {t}");
        assert_eq!(run.looks, looks, "at {t}");
        assert_eq!(
            next_look_after(&gate, &run),
            Duration::from_secs(next),
            "at {t}"
        );
        if look.error().is_some() {
            assert_eq!(evidence["error"], "bad_data: parse error", "at {t}");
            assert!(
                got.reason()
                    .unwrap_or_default()
                    .contains("bad_data: parse error")
            );
        }
    }
    let (last, _) = decide(&gate, &bad, &run, at(47));
    assert_eq!(
        last,
        GateState::Fail(
            "queries have failed for 30s (failAfter 30s): bad_data: parse error".into()
        )
    );
}

#[test]
fn every_wrong_field_is_named() {
    let ok = cpu();
    let cases: Vec<(MetricGate, &str, &str)> = vec![
        (
            MetricGate {
                name: "".into(),
                ..ok.clone()
            },
            "metrics[0].name",
            "is empty",
        ),
        (
            MetricGate {
                query: None,
                ..ok.clone()
            },
            "metrics[0].query",
            "give query or canaryQuery",
        ),
        (
            MetricGate {
                canary_query: Some("x".into()),
                ..ok.clone()
            },
            "metrics[0].canaryQuery",
            "beside query",
        ),
        (
            MetricGate {
                stable_query: Some("x".into()),
                ..ok.clone()
            },
            "metrics[0].stableQuery",
            "beside query",
        ),
        (
            MetricGate {
                query: Some("cpu{v=\"{{canery}}\"}".into()),
                ..ok.clone()
            },
            "metrics[0].query",
            "unknown placeholder {{canery}}",
        ),
        (
            MetricGate {
                query: Some("cpu{v=\"{{canary\"}".into()),
                ..ok.clone()
            },
            "metrics[0].query",
            "never closes it",
        ),
        (
            MetricGate {
                query: Some(" ".into()),
                ..ok.clone()
            },
            "metrics[0].query",
            "is empty",
        ),
        (
            MetricGate {
                max: None,
                ..ok.clone()
            },
            "metrics[0].max",
            "give at least one of",
        ),
        (
            MetricGate {
                max: Some(f64::NAN),
                ..ok.clone()
            },
            "metrics[0].max",
            "NaN is not a finite",
        ),
        (
            MetricGate {
                min: Some(0.9),
                ..ok.clone()
            },
            "metrics[0].min",
            "0.9 is over max 0.7",
        ),
        (
            MetricGate {
                max_ratio_to_stable: Some(-1.0),
                ..ok.clone()
            },
            "metrics[0].maxRatioToStable",
            "-1 is not a non-negative number",
        ),
        (
            MetricGate {
                query: None,
                canary_query: Some("x".into()),
                max_above_stable: Some(0.1),
                ..ok.clone()
            },
            "metrics[0].stableQuery",
            "needs the stable's value",
        ),
        (
            MetricGate {
                query: Some("avg(cpu{v=\"{{canary}}\"})".into()),
                max_ratio_to_stable: Some(1.2),
                ..ok.clone()
            },
            "metrics[0].query",
            "has no {{version}}",
        ),
        (
            MetricGate {
                interval: Duration::from_millis(500),
                ..ok.clone()
            },
            "metrics[0].interval",
            "500ms is under 1s",
        ),
        (
            MetricGate {
                address: Some("prometheus:9090".into()),
                ..ok.clone()
            },
            "metrics[0].address",
            "is not an http:// or https:// URL",
        ),
    ];
    assert_eq!(problems(std::slice::from_ref(&ok)), vec![]);
    for (gate, field, words) in cases {
        let found = problems(std::slice::from_ref(&gate));
        assert!(
            found.iter().any(|(f, p)| f == field && p.contains(words)),
            "{gate:?}: {found:?}"
        );
    }
    let twice = problems(&[ok.clone(), ok]);
    assert_eq!(
        twice,
        vec![(
            "metrics[1].name".to_string(),
            "\"cpu\" is given twice".to_string()
        )]
    );
}

#[test]
fn the_query_may_take_the_interval_at_most_thirty_seconds() {
    for (interval, timeout) in [(5, 5), (30, 30), (60, 30)] {
        let gate = MetricGate {
            interval: Duration::from_secs(interval),
            ..cpu()
        };
        assert_eq!(gate.query_timeout(), Duration::from_secs(timeout));
    }
}

#[test]
fn a_gate_reads_from_yaml_with_its_defaults() {
    let gate: MetricGate =
        serde_norway::from_str("name: cpu\nquery: avg(cpu{version=\"{{version}}\"})\nmax: 0.7\n")
            .expect("reads");
    assert_eq!(gate.interval, DEFAULT_INTERVAL);
    assert_eq!(gate.fail_after, DEFAULT_FAIL_AFTER);
    assert_eq!(gate.max, Some(0.7));
    let e = serde_norway::from_str::<MetricGate>("name: cpu\nquery: x\nmaximum: 1\n")
        .expect_err("an unknown field");
    assert!(e.to_string().contains("maximum"), "{e}");
}
