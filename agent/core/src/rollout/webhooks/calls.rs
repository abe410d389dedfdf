//! Which hooks are due when, what they are sent, and what their answers mean.
//!
//! Notifications follow a change of status ([`due`]: the one a tick's plan wrote, compared with
//! the one before); gates follow the step the status is in ([`gating`]). Each call carries an
//! idempotency key made from the rollout and the moment (its step and that step's start), so a
//! call made twice — retried, or again after an agent restart — is known as the same call.
//! Pure: the agent's `webhooks` makes the calls and feeds the answers back through [`meaning`]
//! and [`state_after`].

use serde_json::{Value, json};

use super::{Format, HookType, OnFailure, Webhook};
use crate::rollout::gates::GateState;
use crate::rollout::plan::{Plan, StageKind};
use crate::rollout::spec::Rollout;
use crate::rollout::status::{Phase, RolloutStatus};

/// Something that happened to a rollout that a notification tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// The rollout began (its first step, or its preparation, started).
    Started,
    /// A step began (not the preparation before any traffic).
    Step,
    /// The canary became the new stable.
    Promoted,
    /// The strategy ended without promoting, as it asked.
    Stopped,
    /// The canary failed a check; every request went back to stable.
    RolledBack,
    /// A person (or a hook) aborted.
    Aborted,
}

impl Moment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Step => "step",
            Self::Promoted => "promoted",
            Self::Stopped => "stopped",
            Self::RolledBack => "rolledBack",
            Self::Aborted => "aborted",
        }
    }

    /// Whether hooks of type `on` are called at this moment.
    fn calls(self, on: HookType) -> bool {
        match on {
            HookType::Step => self == Self::Step,
            HookType::PostRollout => matches!(self, Self::Promoted | Self::Stopped),
            HookType::Rollback => matches!(self, Self::RolledBack | Self::Aborted),
            HookType::Notify => !matches!(self, Self::Step),
            HookType::PreRollout | HookType::ConfirmPromotion => false,
        }
    }
}

/// One call to make.
#[derive(Clone, Debug, PartialEq)]
pub struct HookCall<'a> {
    pub hook: &'a Webhook,
    /// What the call is about: a [`Moment`]'s name, or the gate's type.
    pub event: &'static str,
    /// The same for every attempt of the same call, also after a restart (sent as the header
    /// `Idempotency-Key` and in the JSON body).
    pub key: String,
    pub body: Value,
}

fn running(s: &RolloutStatus) -> bool {
    matches!(s.phase, Phase::Progressing | Phase::Paused)
}

/// What happened between two consecutive statuses of a rollout with plan `plan`, in order.
pub fn moments(plan: Option<&Plan>, before: &RolloutStatus, after: &RolloutStatus) -> Vec<Moment> {
    let mut out = Vec::new();
    // A resume moves `stepStartedAt` forward without a new step: the index tells steps apart,
    // and a new pair of subsets tells a rollout started anew.
    let new_step = running(after)
        && after.current_step.is_some()
        && (!running(before)
            || before.current_step != after.current_step
            || (before.stable_subset.as_ref(), before.canary_subset.as_ref())
                != (after.stable_subset.as_ref(), after.canary_subset.as_ref()));
    if new_step {
        if after.current_step == Some(0) {
            out.push(Moment::Started);
        }
        let stage = after
            .current_step
            .and_then(|at| plan?.stages.get(at as usize));
        if stage.is_none_or(|s| s.kind != StageKind::Prepare) {
            out.push(Moment::Step);
        }
    }
    if after.phase != before.phase {
        out.extend(match after.phase {
            Phase::Succeeded if after.canary_weight == 100 => Some(Moment::Promoted),
            Phase::Succeeded => Some(Moment::Stopped),
            Phase::RolledBack => Some(Moment::RolledBack),
            Phase::Aborted => Some(Moment::Aborted),
            _ => None,
        });
    }
    out
}

/// The notifications due now that `rollout`'s status (its own, the one before) became `after`.
pub fn due<'a>(rollout: &'a Rollout, after: &RolloutStatus) -> Vec<HookCall<'a>> {
    let before = rollout.status.clone().unwrap_or_default();
    let plan = Plan::of(&rollout.spec);
    let mut out = Vec::new();
    for moment in moments(plan.as_ref(), &before, after) {
        for hook in rollout.spec.webhooks.iter().filter(|h| moment.calls(h.on)) {
            out.push(call(rollout, after, hook, moment.as_str(), moment));
        }
    }
    out
}

/// The gating hooks that answer about the step `rollout`'s status is in: `preRollout` hooks
/// during the preparation before any traffic, `confirmPromotion` hooks during the last step.
pub fn gating(rollout: &Rollout) -> Vec<HookCall<'_>> {
    let Some(status) = rollout.status.as_ref().filter(|s| running(s)) else {
        return Vec::new();
    };
    let (Some(at), Some(plan)) = (status.current_step, Plan::of(&rollout.spec)) else {
        return Vec::new();
    };
    let Some(stage) = plan.stages.get(at as usize) else {
        return Vec::new();
    };
    let last = at as usize + 1 == plan.stages.len();
    let wanted = |on: HookType| match on {
        HookType::PreRollout => stage.kind == StageKind::Prepare,
        HookType::ConfirmPromotion => last && stage.kind != StageKind::Prepare,
        _ => false,
    };
    rollout
        .spec
        .webhooks
        .iter()
        .filter(|h| wanted(h.on))
        .map(|h| call(rollout, status, h, h.on.as_str(), Moment::Step))
        .collect()
}

fn call<'a>(
    rollout: &Rollout,
    status: &RolloutStatus,
    hook: &'a Webhook,
    event: &'static str,
    moment: Moment,
) -> HookCall<'a> {
    let ns = rollout.metadata.namespace.as_deref().unwrap_or("default");
    let name = rollout.metadata.name.as_deref().unwrap_or("");
    let uid = rollout.metadata.uid.as_deref().unwrap_or("-");
    let started = status
        .step_started_at
        .map_or_else(|| "-".to_owned(), |t| t.to_string());
    let step = status.current_step.map_or(-1, i64::from);
    let key = format!("{ns}/{name}/{uid}/{}/{event}/{step}/{started}", hook.name);
    let body = match hook.format() {
        Format::Slack => json!({ "text": text(rollout, status, moment) }),
        Format::Json => json!({
            "rollout": { "namespace": ns, "name": name, "uid": rollout.metadata.uid },
            "hook": { "name": hook.name, "type": hook.on.as_str() },
            "event": event,
            "idempotencyKey": key,
            "phase": status.phase.as_str(),
            "reason": status.reason,
            "step": {
                "index": status.current_step,
                "of": status.total_steps,
                "startedAt": status.step_started_at.map(|t| t.to_string()),
            },
            "weights": {
                "stable": { "subset": status.stable_subset, "percent": 100 - status.canary_weight.min(100) },
                "canary": { "subset": status.canary_subset, "percent": status.canary_weight },
            },
            "evidence": {
                "lastAnalysis": status.last_analysis,
                "gates": status.gates,
            },
        }),
    };
    HookCall {
        hook,
        event,
        key,
        body,
    }
}

/// A chat message about `moment`, for a person: `fledge: shop/reviews promoted v2: …`.
fn text(rollout: &Rollout, status: &RolloutStatus, moment: Moment) -> String {
    let canary = status
        .canary_subset
        .as_deref()
        .unwrap_or(&rollout.spec.canary);
    let stable = status
        .stable_subset
        .as_deref()
        .unwrap_or(&rollout.spec.stable);
    let what = match moment {
        Moment::Started => format!("started rolling out {canary} (stable {stable})"),
        Moment::Step => format!("is rolling out {canary}"),
        Moment::Promoted => format!("promoted {canary}"),
        Moment::Stopped => format!("ended without promoting {canary}"),
        Moment::RolledBack => format!("rolled back {canary} to {stable}"),
        Moment::Aborted => format!("aborted {canary}, back on {stable}"),
    };
    format!("fledge: {} {what}: {}", rollout.key(), status.reason)
}

/// One attempt's answer: a status code, or why there was none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// Unreachable, timed out, unusable URL: the words of the error.
    NoAnswer(String),
}

/// What an answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// 2xx: done (a gate passes).
    Yes,
    /// A `confirmPromotion` hook's other 1xx–4xx answer: not confirmed yet; ask again later.
    NotYet(String),
    /// Worth another attempt at once: no answer, 5xx, 408 or 429.
    Retry(String),
    /// Any other answer: the hook said no.
    No(String),
}

/// What `answer` from `hook` means.
pub fn meaning(hook: &Webhook, answer: &Answer) -> Meaning {
    match answer {
        Answer::Status(code) if (200..300).contains(code) => Meaning::Yes,
        Answer::Status(code) if *code >= 500 || matches!(code, 408 | 429) => {
            Meaning::Retry(format!("answered {code}"))
        }
        Answer::Status(code) if hook.on == HookType::ConfirmPromotion => {
            Meaning::NotYet(format!("answered {code}: not confirmed yet"))
        }
        Answer::Status(code) => Meaning::No(format!("answered {code}")),
        Answer::NoAnswer(why) => Meaning::Retry(why.clone()),
    }
}

/// What a gating hook says before its first answer.
pub fn pending(hook: &Webhook) -> GateState {
    let why = format!("waiting for {}'s answer", hook.url);
    match hook.on {
        HookType::ConfirmPromotion => GateState::Wait(why),
        _ => GateState::Hold(why),
    }
}

/// What a gating hook says after an attempt (and its retries) ended in `meaning`.
pub fn state_after(hook: &Webhook, meaning: &Meaning) -> GateState {
    let again = format!("asked again in {}s", hook.interval().as_secs_f64());
    let failed = |why: &str| {
        let why = format!("{} {why}", hook.url);
        match (hook.on_failure(), hook.on) {
            (OnFailure::Abort, _) => GateState::Abort(why),
            (OnFailure::Hold, HookType::ConfirmPromotion) => {
                GateState::Wait(format!("{why}; {again}"))
            }
            (OnFailure::Hold, _) => GateState::Hold(format!("{why}; {again}")),
        }
    };
    match meaning {
        Meaning::Yes => GateState::Pass,
        Meaning::NotYet(why) => GateState::Wait(format!("{} {why}; {again}", hook.url)),
        Meaning::Retry(why) => failed(&format!("failed after {} retries: {why}", hook.retries())),
        Meaning::No(why) => failed(why),
    }
}
