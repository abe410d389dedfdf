//! Webhooks (`spec.webhooks[]`): HTTP calls from a rollout to the rest of a pipeline. Two kinds:
//! gates, whose answer a step waits for (`preRollout`: before the canary gets any request;
//! `confirmPromotion`: before the last step ends, so before the promotion), and notifications,
//! which tell and never hold anything (`step`: each step's start; `postRollout`: the rollout
//! succeeded; `rollback`: it was rolled back or aborted; `notify`: a chat message on start,
//! promotion and rollback, Slack-compatible `{"text": …}` by default).
//!
//! Plain data and its checks here; which hooks are due when, the bodies sent and what an answer
//! means are in `calls`. What it is not: nothing here calls out (the agent's `webhooks` does).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::Problem;

mod calls;
#[cfg(test)]
mod tests;

pub use calls::{
    Answer, HookCall, Meaning, Moment, due, gating, meaning, moments, pending, state_after,
};

/// A call's time limit when `timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts after the first when `retries` is not given.
pub const DEFAULT_RETRIES: u32 = 2;
/// How often a gate is asked again when `interval` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The longest `timeout` or `interval` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// The most `retries` accepted.
pub const MAX_RETRIES: u32 = 10;

/// One hook: where to call, at which moment, and how patiently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// Unique among the Rollout's hooks; names the hook in the status and in logs.
    pub name: String,
    /// `http://` or `https://` URL the hook POSTs its JSON body to.
    pub url: String,
    /// When it is called.
    #[serde(rename = "type")]
    pub on: HookType,
    /// How long one attempt may take (default 10s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Attempts after the first when a call cannot be made, times out or answers 5xx, 408 or
    /// 429, with a backoff doubling from 500 ms (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// `preRollout` and `confirmPromotion` only: what a hook that still fails after its retries
    /// does (default `hold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// `preRollout` and `confirmPromotion` only: how often the hook is asked again while it has
    /// not said yes (default 10s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub interval: Option<Duration>,
    /// Notifications only: fledge's JSON body, or a chat message `{"text": …}` (`slack`). The
    /// default is `slack` for `notify`, `json` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
}

/// The moment a hook is called at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HookType {
    /// A gate before any traffic: the canary gets no request until the hook answers 2xx.
    PreRollout,
    /// A notification at the start of each step.
    Step,
    /// A gate on the last step: the promotion waits, without a deadline, for a 2xx answer.
    ConfirmPromotion,
    /// A notification once the rollout succeeded.
    PostRollout,
    /// A notification once the rollout was rolled back or aborted.
    Rollback,
    /// A chat message on start, promotion and rollback.
    Notify,
}

impl HookType {
    /// The name as the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreRollout => "preRollout",
            Self::Step => "step",
            Self::ConfirmPromotion => "confirmPromotion",
            Self::PostRollout => "postRollout",
            Self::Rollback => "rollback",
            Self::Notify => "notify",
        }
    }

    /// Whether a step waits for this hook's answer.
    pub fn is_gate(self) -> bool {
        matches!(self, Self::PreRollout | Self::ConfirmPromotion)
    }
}

/// What a gating hook that still fails after its retries does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// Keep the step, asking again every `interval`: a `preRollout` hook until the progress
    /// deadline rolls back, a `confirmPromotion` hook without a deadline.
    #[default]
    Hold,
    /// Abort the rollout, as a person's abort would.
    Abort,
}

/// A notification's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// fledge's JSON: the rollout, the event, phase, step, weights and evidence.
    Json,
    /// A chat message, `{"text": …}`, as Slack's incoming webhooks (and compatible chats) take.
    Slack,
}

impl Webhook {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(DEFAULT_RETRIES)
    }

    pub fn on_failure(&self) -> OnFailure {
        self.on_failure.unwrap_or_default()
    }

    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }

    pub fn format(&self) -> Format {
        self.format.unwrap_or(match self.on {
            HookType::Notify => Format::Slack,
            _ => Format::Json,
        })
    }

    /// The wait before attempt `attempt` (1 for the first retry): 500 ms doubling, at most 8 s.
    pub fn backoff(attempt: u32) -> Duration {
        Duration::from_millis(500 << attempt.saturating_sub(1).min(4))
    }
}

/// Every problem of `spec.webhooks`, with field paths from the object's root.
pub fn problems(hooks: &[Webhook]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |field: String, problem: String| out.push(Problem { field, problem });
    for (i, hook) in hooks.iter().enumerate() {
        let at = format!("spec.webhooks[{i}]");
        if hook.name.is_empty() || hook.name.chars().any(|c| c.is_whitespace()) {
            bad(
                format!("{at}.name"),
                format!("{:?} is empty or contains whitespace", hook.name),
            );
        } else if hooks[..i].iter().any(|h| h.name == hook.name) {
            bad(
                format!("{at}.name"),
                format!(
                    "{:?} names another hook too; names must be unique",
                    hook.name
                ),
            );
        }
        let scheme_ok = ["http://", "https://"]
            .iter()
            .any(|s| hook.url.len() > s.len() && hook.url.starts_with(s));
        if !scheme_ok || hook.url.chars().any(|c| c.is_whitespace()) {
            bad(
                format!("{at}.url"),
                format!(
                    "{:?} is not an http:// or https:// URL with a host",
                    hook.url
                ),
            );
        }
        for (field, value) in [("timeout", hook.timeout), ("interval", hook.interval)] {
            if let Some(d) = value.filter(|d| d.is_zero() || *d > MAX_WAIT) {
                bad(
                    format!("{at}.{field}"),
                    format!("{d:?} is not in (0s, {}s]", MAX_WAIT.as_secs()),
                );
            }
        }
        if let Some(n) = hook.retries.filter(|n| *n > MAX_RETRIES) {
            bad(
                format!("{at}.retries"),
                format!("{n} is over {MAX_RETRIES}"),
            );
        }
        let kind = hook.on.as_str();
        if hook.on.is_gate() {
            if hook.format.is_some() {
                bad(
                    format!("{at}.format"),
                    format!("is for notifications; a {kind} hook always gets fledge's JSON"),
                );
            }
        } else {
            for (field, set) in [
                ("onFailure", hook.on_failure.is_some()),
                ("interval", hook.interval.is_some()),
            ] {
                if set {
                    bad(
                        format!("{at}.{field}"),
                        format!(
                            "is for preRollout and confirmPromotion hooks; a {kind} hook never holds the rollout"
                        ),
                    );
                }
            }
        }
    }
    out
}
