//! Webhooks: the spec's checks, which hooks are due at which change of status, which gate
//! during which step, the bodies and keys sent, and what answers mean.

use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::rollout::gates::GateState;
use crate::rollout::plan::{Plan, StageKind};
use crate::rollout::spec::{Pause, Rollout};
use crate::rollout::status::{Phase, RolloutStatus};

fn hook(name: &str, on: HookType) -> Webhook {
    Webhook {
        name: name.into(),
        url: format!("http://hooks.example/{name}"),
        on,
        timeout: None,
        retries: None,
        on_failure: None,
        interval: None,
        format: None,
    }
}

fn every_kind() -> Vec<Webhook> {
    vec![
        hook("pre", HookType::PreRollout),
        hook("each-step", HookType::Step),
        hook("approve", HookType::ConfirmPromotion),
        hook("post", HookType::PostRollout),
        hook("undo", HookType::Rollback),
        hook("chat", HookType::Notify),
    ]
}

/// `shop/reviews` with two steps (10 %, 50 %) and `hooks`.
fn rollout(hooks: Vec<Webhook>) -> Rollout {
    let mut r = Rollout::test().with_steps(&[
        (10, Pause::until_analysis_passes()),
        (50, Pause::until_analysis_passes()),
    ]);
    r.spec.webhooks = hooks;
    r.metadata.uid = Some("u-1".into());
    r
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("a valid time")
}

fn status(phase: Phase, step: Option<u32>, started: i64, weight: u32) -> RolloutStatus {
    RolloutStatus {
        phase,
        reason: format!("{phase} reason"),
        current_step: step,
        total_steps: Some(3),
        canary_weight: weight,
        step_started_at: step.map(|_| at(started)),
        stable_subset: (phase != Phase::Pending).then(|| "v1".into()),
        canary_subset: (phase != Phase::Pending).then(|| "v2".into()),
        ..Default::default()
    }
}

#[test]
fn bad_hooks_are_refused_naming_the_field() {
    type Edit = fn(&mut Webhook);
    let cases: [(Edit, &str, &str); 9] = [
        (|h| h.name = String::new(), "spec.webhooks[1].name", "empty"),
        (|h| h.name = "pre".into(), "spec.webhooks[1].name", "unique"),
        (
            |h| h.url = "ftp://x/y".into(),
            "spec.webhooks[1].url",
            "http://",
        ),
        (
            |h| h.url = "http://".into(),
            "spec.webhooks[1].url",
            "with a host",
        ),
        (
            |h| h.timeout = Some(Duration::ZERO),
            "spec.webhooks[1].timeout",
            "is not in (0s, 300s]",
        ),
        (
            |h| h.interval = Some(Duration::from_secs(301)),
            "spec.webhooks[1].interval",
            "is not in",
        ),
        (
            |h| h.retries = Some(11),
            "spec.webhooks[1].retries",
            "11 is over 10",
        ),
        (
            |h| h.format = Some(Format::Slack),
            "spec.webhooks[1].format",
            "always gets fledge's JSON",
        ),
        (
            |h| {
                h.on = HookType::Notify;
                h.on_failure = Some(OnFailure::Abort);
            },
            "spec.webhooks[1].onFailure",
            "never holds the rollout",
        ),
    ];
    for (edit, field, words) in cases {
        let mut second = hook("approve", HookType::ConfirmPromotion);
        edit(&mut second);
        let mut r = rollout(vec![hook("pre", HookType::PreRollout), second]);
        let e = r.validate().expect_err(field).to_string();
        assert!(e.starts_with("Rollout shop/reviews: "), "{e}");
        assert!(
            e.contains(field) && e.contains(words),
            "{field} {words}: {e}"
        );
        r.spec.webhooks.truncate(1);
        r.validate().expect("the first hook alone is valid");
    }
    rollout(every_kind())
        .validate()
        .expect("every kind is valid");
}

#[test]
fn defaults_are_stated_and_backoff_doubles_to_a_cap() {
    let h = hook("chat", HookType::Notify);
    assert_eq!(h.timeout(), Duration::from_secs(10));
    assert_eq!(h.retries(), 2);
    assert_eq!(h.on_failure(), OnFailure::Hold);
    assert_eq!(h.interval(), Duration::from_secs(10));
    let cases = [
        (HookType::Notify, Format::Slack),
        (HookType::Step, Format::Json),
        (HookType::ConfirmPromotion, Format::Json),
    ];
    for (on, format) in cases {
        assert_eq!(hook("h", on).format(), format, "{on:?}");
    }
    let waits: Vec<u64> = (1..=7)
        .map(|n| Webhook::backoff(n).as_millis() as u64)
        .collect();
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
}

#[test]
fn a_pre_rollout_hook_puts_a_preparation_before_any_traffic() {
    let cases = [
        (vec![], vec![StageKind::Step, StageKind::Step]),
        (
            vec![hook("chat", HookType::Notify)],
            vec![StageKind::Step, StageKind::Step],
        ),
        (
            vec![hook("pre", HookType::PreRollout)],
            vec![StageKind::Prepare, StageKind::Step, StageKind::Step],
        ),
    ];
    for (hooks, kinds) in cases {
        let r = rollout(hooks);
        let plan = Plan::of(&r.spec).expect("a plan");
        let got: Vec<_> = plan.stages.iter().map(|s| s.kind).collect();
        assert_eq!(got, kinds);
    }
}

#[test]
fn moments_follow_the_change_of_status() {
    use Moment::{Aborted as Abort, Promoted, RolledBack as Back, Started, Step, Stopped};
    use Phase::*;
    let plan = Plan::of(&rollout(every_kind()).spec);
    let cases = [
        // (before, after, moments)
        (
            status(Pending, None, 0, 0),
            status(Progressing, Some(0), 0, 0),
            vec![Started],
        ),
        (
            status(Progressing, Some(0), 0, 0),
            status(Progressing, Some(1), 5, 10),
            vec![Step],
        ),
        (
            status(Progressing, Some(1), 5, 10),
            status(Progressing, Some(1), 5, 10),
            vec![],
        ),
        // A resume moves the step's start, not the step.
        (
            status(Paused, Some(1), 5, 10),
            status(Progressing, Some(1), 9, 10),
            vec![],
        ),
        (
            status(Progressing, Some(2), 5, 50),
            status(Promoting, Some(2), 5, 100),
            vec![],
        ),
        (
            status(Promoting, Some(2), 5, 100),
            status(Succeeded, Some(2), 5, 100),
            vec![Promoted],
        ),
        (
            status(Progressing, Some(2), 5, 0),
            status(Succeeded, Some(2), 5, 0),
            vec![Stopped],
        ),
        (
            status(Progressing, Some(1), 5, 10),
            status(RolledBack, Some(1), 5, 0),
            vec![Back],
        ),
        (
            status(Paused, Some(1), 5, 10),
            status(Aborted, Some(1), 5, 0),
            vec![Abort],
        ),
        (
            status(RolledBack, Some(1), 5, 0),
            status(RolledBack, Some(1), 5, 0),
            vec![],
        ),
        // Started again after a rollback: the first step of the new run.
        (
            status(RolledBack, Some(1), 5, 0),
            status(Progressing, Some(0), 20, 0),
            vec![Started],
        ),
    ];
    for (i, (before, after, wanted)) in cases.into_iter().enumerate() {
        assert_eq!(moments(plan.as_ref(), &before, &after), wanted, "case {i}");
    }
    // Without a preparation, the first step is a step too.
    let plain = Plan::of(&rollout(vec![]).spec);
    assert_eq!(
        moments(
            plain.as_ref(),
            &status(Pending, None, 0, 0),
            &status(Progressing, Some(0), 0, 10)
        ),
        vec![Started, Step]
    );
}

#[test]
fn each_moment_calls_its_hooks_with_one_key_per_moment() {
    use Phase::*;
    let cases = [
        (
            status(Pending, None, 0, 0),
            status(Progressing, Some(0), 0, 0),
            vec![("chat", "started")],
        ),
        (
            status(Progressing, Some(0), 0, 0),
            status(Progressing, Some(1), 5, 10),
            vec![("each-step", "step")],
        ),
        (
            status(Promoting, Some(2), 5, 100),
            status(Succeeded, Some(2), 5, 100),
            vec![("post", "promoted"), ("chat", "promoted")],
        ),
        (
            status(Progressing, Some(1), 5, 10),
            status(RolledBack, Some(1), 5, 0),
            vec![("undo", "rolledBack"), ("chat", "rolledBack")],
        ),
    ];
    for (before, after, wanted) in cases {
        let r = rollout(every_kind()).with_status(before);
        let calls = due(&r, &after);
        let got: Vec<_> = calls
            .iter()
            .map(|c| (c.hook.name.as_str(), c.event))
            .collect();
        assert_eq!(got, wanted);
        for c in &calls {
            assert!(c.key.starts_with("shop/reviews/u-1/"), "{}", c.key);
            assert!(c.key.contains(c.event), "{}", c.key);
            assert_eq!(
                due(&r, &after),
                calls,
                "the same change gives the same calls"
            );
        }
    }
}

#[test]
fn json_bodies_carry_the_rollout_step_weights_and_evidence() {
    let mut after = status(Phase::Progressing, Some(1), 5, 10);
    after.reason = "step 2/3: 10% of requests to the canary".into();
    let r = rollout(every_kind()).with_status(status(Phase::Progressing, Some(0), 0, 0));
    let calls = due(&r, &after);
    let body = &calls[0].body;
    assert_eq!(body["rollout"]["namespace"], "shop");
    assert_eq!(body["rollout"]["name"], "reviews");
    assert_eq!(body["hook"]["type"], "step");
    assert_eq!(body["event"], "step");
    assert_eq!(body["phase"], "Progressing");
    assert_eq!(body["step"]["index"], 1);
    assert_eq!(body["step"]["of"], 3);
    assert_eq!(body["weights"]["canary"]["percent"], 10);
    assert_eq!(body["weights"]["stable"]["percent"], 90);
    assert_eq!(body["weights"]["canary"]["subset"], "v2");
    assert_eq!(body["idempotencyKey"], calls[0].key.as_str());
    assert!(body["evidence"]["gates"].is_array(), "{body}");
}

#[test]
fn chat_messages_say_what_happened_in_words() {
    use Phase::*;
    let cases = [
        (
            status(Pending, None, 0, 0),
            status(Progressing, Some(0), 0, 0),
            "fledge: shop/reviews started rolling out v2 (stable v1): Progressing reason",
        ),
        (
            status(Promoting, Some(2), 5, 100),
            status(Succeeded, Some(2), 5, 100),
            "fledge: shop/reviews promoted v2: Succeeded reason",
        ),
        (
            status(Progressing, Some(1), 5, 10),
            status(RolledBack, Some(1), 5, 0),
            "fledge: shop/reviews rolled back v2 to v1: RolledBack reason",
        ),
        (
            status(Progressing, Some(1), 5, 10),
            status(Aborted, Some(1), 5, 0),
            "fledge: shop/reviews aborted v2, back on v1: Aborted reason",
        ),
    ];
    for (before, after, text) in cases {
        let r = rollout(vec![hook("chat", HookType::Notify)]).with_status(before);
        let calls = due(&r, &after);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].body, serde_json::json!({ "text": text }));
    }
}

#[test]
fn gates_answer_about_the_preparation_and_the_last_step_only() {
    use Phase::*;
    // Stages: 0 prepare, 1 at 10 %, 2 at 50 % (the last).
    let cases = [
        (status(Progressing, Some(0), 0, 0), vec!["pre"]),
        (status(Progressing, Some(1), 0, 10), vec![]),
        (status(Progressing, Some(2), 0, 50), vec!["approve"]),
        (status(Paused, Some(2), 0, 50), vec!["approve"]),
        (status(Promoting, Some(2), 0, 100), vec![]),
        (status(Succeeded, Some(2), 0, 100), vec![]),
        (status(Pending, None, 0, 0), vec![]),
    ];
    for (s, wanted) in cases {
        let phase = s.phase;
        let r = rollout(every_kind()).with_status(s);
        let got: Vec<_> = gating(&r).iter().map(|c| c.hook.name.clone()).collect();
        assert_eq!(got, wanted, "{phase:?}");
        for c in gating(&r) {
            assert_eq!(c.event, c.hook.on.as_str());
            assert_eq!(c.body["event"], c.event);
        }
    }
}

#[test]
fn answers_mean_yes_not_yet_retry_or_no() {
    let confirm = hook("approve", HookType::ConfirmPromotion);
    let pre = hook("pre", HookType::PreRollout);
    let none = Answer::NoAnswer("did not answer within 1s".into());
    let cases = [
        (&pre, Answer::Status(200), Meaning::Yes),
        (&pre, Answer::Status(204), Meaning::Yes),
        (
            &pre,
            Answer::Status(403),
            Meaning::No("answered 403".into()),
        ),
        (
            &pre,
            Answer::Status(503),
            Meaning::Retry("answered 503".into()),
        ),
        (
            &pre,
            Answer::Status(429),
            Meaning::Retry("answered 429".into()),
        ),
        (
            &pre,
            none.clone(),
            Meaning::Retry("did not answer within 1s".into()),
        ),
        (&confirm, Answer::Status(200), Meaning::Yes),
        (
            &confirm,
            Answer::Status(409),
            Meaning::NotYet("answered 409: not confirmed yet".into()),
        ),
        (
            &confirm,
            Answer::Status(500),
            Meaning::Retry("answered 500".into()),
        ),
    ];
    for (h, answer, wanted) in cases {
        assert_eq!(meaning(h, &answer), wanted, "{} {answer:?}", h.name);
    }
}

#[test]
fn gate_states_hold_wait_or_abort_as_configured() {
    let mut pre = hook("pre", HookType::PreRollout);
    pre.interval = Some(Duration::from_secs(2));
    let mut pre_abort = pre.clone();
    pre_abort.on_failure = Some(OnFailure::Abort);
    let confirm = hook("approve", HookType::ConfirmPromotion);
    let mut confirm_abort = confirm.clone();
    confirm_abort.on_failure = Some(OnFailure::Abort);
    let no = Meaning::No("answered 403".into());
    let retry = Meaning::Retry("answered 503".into());
    let not_yet = Meaning::NotYet("answered 409: not confirmed yet".into());
    let u = |n: &str| format!("http://hooks.example/{n}");
    let cases = [
        (&pre, Meaning::Yes, GateState::Pass),
        (
            &pre,
            no.clone(),
            GateState::Hold(format!("{} answered 403; asked again in 2s", u("pre"))),
        ),
        (
            &pre,
            retry.clone(),
            GateState::Hold(format!(
                "{} failed after 2 retries: answered 503; asked again in 2s",
                u("pre")
            )),
        ),
        (
            &pre_abort,
            no.clone(),
            GateState::Abort(format!("{} answered 403", u("pre"))),
        ),
        (
            &confirm,
            not_yet.clone(),
            GateState::Wait(format!(
                "{} answered 409: not confirmed yet; asked again in 10s",
                u("approve")
            )),
        ),
        // Not confirmed yet is no failure: even `abort` waits.
        (
            &confirm_abort,
            not_yet,
            GateState::Wait(format!(
                "{} answered 409: not confirmed yet; asked again in 10s",
                u("approve")
            )),
        ),
        (
            &confirm,
            retry.clone(),
            GateState::Wait(format!(
                "{} failed after 2 retries: answered 503; asked again in 10s",
                u("approve")
            )),
        ),
        (
            &confirm_abort,
            retry,
            GateState::Abort(format!(
                "{} failed after 2 retries: answered 503",
                u("approve")
            )),
        ),
    ];
    for (h, m, wanted) in cases {
        assert_eq!(state_after(h, &m), wanted, "{} {m:?}", h.name);
    }
    assert!(matches!(pending(&pre), GateState::Hold(_)));
    assert!(matches!(pending(&confirm), GateState::Wait(_)));
}
