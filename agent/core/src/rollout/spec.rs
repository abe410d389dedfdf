//! The `Rollout` object a person writes (`fledge.dev/v1alpha1`, kind `Rollout`, namespaced): the
//! host to roll out, its stable and canary subsets, the VirtualService fledge manages, the sticky
//! key, one strategy and the analysis settings. The same schema serves the Kubernetes resource
//! and the local store's YAML files, so one file works in both places.
//!
//! Plain data with serde and a JSON schema. What it is not: validation lives in `validate`, the
//! status in `status`, and nothing here decides a step.

use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::RolloutStatus;
pub use super::webhooks::{Format, HookType, OnFailure, Webhook};
use crate::analysis::AnalysisSpec;

/// The header the filter sets to the chosen version when `spec.versionHeader` is not given.
pub const DEFAULT_VERSION_HEADER: &str = "x-fledge-version";
/// The sticky key when `spec.sticky` names neither a header nor a cookie.
pub const DEFAULT_STICKY_HEADER: &str = "x-user-id";

/// What to roll out and how. The Kubernetes object is [`Rollout`].
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "fro",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Canary%","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.lastAnalysis.verdict"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason","priority":1}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// Destination host as callers address it, without port, e.g. `reviews.shop.svc.cluster.local`.
    pub host: String,
    /// The subset (DestinationRule subset, and the `version` the filter reports) serving now.
    pub stable: String,
    /// The subset being rolled out.
    pub canary: String,
    /// The VirtualService whose `fledge-…` routes this Rollout owns.
    pub virtual_service: VirtualServiceRef,
    /// Header the filter sets to the chosen version (default `x-fledge-version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_header: Option<String>,
    /// What keeps a user on one version while the weight changes. On by default.
    #[serde(default)]
    pub sticky: Sticky,
    /// Exactly one strategy.
    pub strategy: Strategy,
    /// How canary is judged against baseline (every field has a default).
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// HTTP calls to the rest of the pipeline: gates before any traffic and before the
    /// promotion, notifications at each step, at the end and on a rollback, chat messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// The Deployments of the two subsets, for fledge to scale; none: the user scales them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<super::workloads::Workloads>,
}

/// A VirtualService by name; the namespace defaults to the Rollout's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Sticky cohorts: the key hashed into the canary's buckets, a header or a cookie (at most one).
/// With neither, the header `x-user-id`. Requests without the key are assigned at random.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sticky {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for Sticky {
    fn default() -> Self {
        Self {
            enabled: true,
            header: None,
            cookie: None,
        }
    }
}

/// Exactly one of the four strategies is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_test: Option<AbTestStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
}

/// Which strategy a valid spec chose, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StrategyKind<'a> {
    Canary(&'a CanaryStrategy),
    AbTest(&'a AbTestStrategy),
    Shadow(&'a ShadowStrategy),
    BlueGreen(&'a BlueGreenStrategy),
}

impl Strategy {
    /// Every strategy that is set, in field order (a valid spec has exactly one).
    pub fn kinds(&self) -> Vec<StrategyKind<'_>> {
        let mut out = Vec::with_capacity(1);
        out.extend(self.canary.as_ref().map(StrategyKind::Canary));
        out.extend(self.ab_test.as_ref().map(StrategyKind::AbTest));
        out.extend(self.shadow.as_ref().map(StrategyKind::Shadow));
        out.extend(self.blue_green.as_ref().map(StrategyKind::BlueGreen));
        out
    }

    /// The one strategy, or None when none or several are set.
    pub fn kind(&self) -> Option<StrategyKind<'_>> {
        match self.kinds().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

impl StrategyKind<'_> {
    /// The field name under `spec.strategy`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Canary(_) => "canary",
            Self::AbTest(_) => "abTest",
            Self::Shadow(_) => "shadow",
            Self::BlueGreen(_) => "blueGreen",
        }
    }
}

/// Steps of weight, each held by a pause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStrategy {
    pub steps: Vec<CanaryStep>,
}

/// Send `weight` percent of the requests (0-100) to the canary, then hold until `pause` is over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStep {
    pub weight: u32,
    pub pause: Pause,
}

/// What ends a step. At least one is set; when several are, all must hold. An analysis Fail ends
/// the rollout at any time, whatever the pause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    /// Hold at least this long (e.g. `30s`, `5m`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub duration: Option<Duration>,
    /// Hold until the analysis passes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub until_analysis_passes: bool,
    /// Hold until a person promotes (`kubectl fledge promote`, or `fledge-agent promote`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub until_promoted: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What follows a strategy's first phase (A/B cohort, shadow, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Then {
    /// Send everything to the canary and make it the new stable.
    #[default]
    Promote,
    /// Continue with `steps`, as the canary strategy would.
    HandOverToCanary,
    /// End without promoting: every request stays on stable.
    Stop,
}

/// Cohorts matched by header or cookie go to the canary; the rest stay on stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbTestStrategy {
    /// A request matching any rule goes to the canary.
    pub rules: Vec<CohortRule>,
    /// Analyse the cohort at least this long; the phase ends when it has passed after that.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duration: Duration,
    #[serde(default)]
    pub then: Then,
    /// The canary steps that follow when `then` is `handOverToCanary`. The cohort stays on the
    /// canary during them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
}

/// Mirror a share of the requests to the canary (its responses are discarded) and judge it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowStrategy {
    /// Share of requests copied to the canary, in percent (0-100].
    pub mirror_percent: f64,
    /// Analyse the shadow traffic at least this long; the phase ends when it has passed after that.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duration: Duration,
    #[serde(default)]
    pub then: Then,
    /// The canary steps that follow when `then` is `handOverToCanary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
}

/// Preview the canary with no live traffic (optionally mirrored), judge it, then switch at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// Share of requests mirrored to the preview, in percent (0-100]; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_mirror_percent: Option<f64>,
    /// Analyse the preview at least this long; the switch follows once it has passed after that.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duration: Duration,
    /// Switch by itself once the analysis passed (default), or wait for a person to promote.
    #[serde(default = "yes")]
    pub auto_switch: bool,
}

/// One A/B rule: a header match or a cookie match (exactly one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CohortRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieRule>,
}

/// A header by name (case-insensitive) and exactly one of: its exact value, a prefix, presence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// True: the header is present, whatever its value. False: it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A cookie by name with an exact value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieRule {
    pub name: String,
    pub value: String,
}

impl RolloutSpec {
    /// Whether something must be ready before the canary gets any request, so the plan begins
    /// with a stage of no traffic that only the checks outside the proxy end. A part of the spec
    /// that needs one (workloads to scale, hooks to call first) answers here.
    pub fn prepares(&self) -> bool {
        self.workloads.is_some() || self.webhooks.iter().any(|h| h.on == HookType::PreRollout)
    }

    /// The version header in effect.
    pub fn version_header(&self) -> &str {
        self.version_header
            .as_deref()
            .unwrap_or(DEFAULT_VERSION_HEADER)
    }
}

impl Rollout {
    /// `namespace/name`, as error messages and logs name the object.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or("")
        )
    }
}
