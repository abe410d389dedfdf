//! Rollouts for tests: `Rollout::test()` is `shop/reviews` on `reviews.shop.svc.cluster.local`,
//! stable `v1`, canary `v2`, generation 1, one canary step at 10 % until the analysis passes;
//! the builder methods change one thing each.
//!
//! Compiled for this crate's tests and, behind the `testkit` feature, for other crates' tests
//! (through `fledge-testkit`); never part of the agent.

use std::time::Duration;

use super::spec::{
    CanaryStep, CanaryStrategy, Pause, Rollout, RolloutSpec, Sticky, Strategy, VirtualServiceRef,
};
use super::status::RolloutStatus;

impl Rollout {
    /// `shop/reviews`, v1 → v2, one step at 10 % until the analysis passes.
    pub fn test() -> Self {
        let mut r = Rollout::new(
            "reviews",
            RolloutSpec {
                host: "reviews.shop.svc.cluster.local".into(),
                stable: "v1".into(),
                canary: "v2".into(),
                virtual_service: VirtualServiceRef {
                    name: "reviews".into(),
                    namespace: None,
                },
                version_header: None,
                sticky: Sticky::default(),
                strategy: Strategy::default(),
                analysis: Default::default(),
                webhooks: Vec::new(),
                workloads: None,
            },
        );
        r.metadata.namespace = Some("shop".into());
        r.metadata.generation = Some(1);
        r.canary(10)
    }

    /// A canary strategy with one step at `weight` % until the analysis passes.
    pub fn canary(self, weight: u32) -> Self {
        self.with_steps(&[(weight, Pause::until_analysis_passes())])
    }

    /// A canary strategy with these steps (weight %, pause).
    pub fn with_steps(mut self, steps: &[(u32, Pause)]) -> Self {
        self.spec.strategy = Strategy::canary_steps(steps);
        self
    }

    /// Any strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.spec.strategy = strategy;
        self
    }

    pub fn with_status(mut self, status: RolloutStatus) -> Self {
        self.status = Some(status);
        self
    }
}

impl Strategy {
    /// A canary strategy with these steps (weight %, pause).
    pub fn canary_steps(steps: &[(u32, Pause)]) -> Self {
        Strategy {
            canary: Some(CanaryStrategy {
                steps: steps
                    .iter()
                    .map(|(weight, pause)| CanaryStep {
                        weight: *weight,
                        pause: pause.clone(),
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    }
}

impl Pause {
    pub fn until_analysis_passes() -> Self {
        Self {
            until_analysis_passes: true,
            ..Self::default()
        }
    }

    pub fn until_promoted() -> Self {
        Self {
            until_promoted: true,
            ..Self::default()
        }
    }

    pub fn for_secs(secs: u64) -> Self {
        Self {
            duration: Some(Duration::from_secs(secs)),
            ..Self::default()
        }
    }
}
