//! Rollouts: the `Rollout` object a person writes (`spec`), its checks (`validate`), its status
//! (`status`), the strategies compiled into one plan of stages (`plan`), and the state machine
//! that walks a Rollout through its plan one tick at a time (`machine`).
//!
//! All pure: values in, values out. What it is not: it does not read telemetry, judge canaries
//! (`analysis` does), write routes (`routes` builds them, `store` writes them) or keep a clock.

pub mod machine;
pub mod plan;
pub mod spec;
pub mod status;
pub mod validate;

pub use machine::{
    Action, AnalysisOutcome, AnalysisWindow, Event, EventKind, analysis_window, routing, step,
};
pub use plan::{Plan, RoutingIntent, Shape, StickyKey};
pub use spec::{
    AbTestStrategy, BlueGreenStrategy, CanaryStep, CanaryStrategy, CohortRule, CookieRule,
    HeaderRule, Pause, Rollout, RolloutSpec, ShadowStrategy, Sticky, Strategy, Then,
    VirtualServiceRef,
};
pub use status::{AnalysisRecord, Decision, Phase, RolloutStatus, Verdict};
pub use validate::{InvalidRollout, Problem};

#[cfg(test)]
mod tests;
