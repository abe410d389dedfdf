//! The demo's scenarios as plain data: the Rollout and VirtualService files each one writes,
//! how the two backends behave, which share of the load carries the A/B header, and the phase
//! the rollout is expected to end in. Pure: no files, sockets or clocks.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fledge_sandbox::latency::{Behaviour, Latency};

/// The service every scenario rolls out.
pub const HOST: &str = "reviews.shop.svc.cluster.local";
pub const NAMESPACE: &str = "shop";
pub const NAME: &str = "reviews";
pub const STABLE: &str = "v1";
pub const CANARY: &str = "v2";
/// The A/B cohort header and the value that puts a request in the cohort.
pub const BETA_HEADER: &str = "x-beta";
pub const BETA_VALUE: &str = "1";
/// The sticky key the load sends (the Rollout's default sticky header).
pub const USER_HEADER: &str = "x-user-id";

/// The metric the `cpu-gate` scenario's exporter reports per version (cores in use), and the
/// gate's bound on the canary's.
pub const CPU_METRIC: &str = "demo_cpu_usage_cores";
const CPU_MAX: f64 = 0.7;

/// What the `cpu-gate` scenario's exporter reports: the stable's CPU, and the canary's at
/// first and from `climbs_after` on (the canary serving its share for a while first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuStory {
    pub stable: f64,
    pub canary: f64,
    pub canary_later: f64,
    pub climbs_after: Duration,
}

/// Both versions' error rate, and the erroring canary's.
const BASE_ERROR_RATE: f64 = 0.005;
const BAD_ERROR_RATE: f64 = 0.05;
/// How much slower the slow canary is, everywhere in its distribution.
const SLOW_FACTOR: f64 = 1.5;

/// What the canary does, and so how the rollout should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// As good as stable: promoted after the steps.
    Healthy,
    /// 5 % errors against stable's 0.5 %: rolled back.
    Erroring,
    /// Every latency × 1.5: rolled back.
    Slow,
    /// Requests with `x-beta: 1` (and only those) reach the canary; promoted.
    Ab,
    /// A copy of the traffic reaches the canary, whose answers are discarded; promoted.
    Shadow,
    /// A healthy canary at 20 % whose promotion waits for an approval service (webhooks);
    /// promoted once it says yes. A chat hook hears the start and the promotion.
    Approval,
    /// As good as stable in the mesh, but its CPU (from a local Prometheus) is over the gate's
    /// bound: rolled back.
    CpuGate,
    /// The rolling update: the Deployments' replicas follow the weight; promoted.
    Rolling,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Healthy,
        Scenario::Erroring,
        Scenario::Slow,
        Scenario::Ab,
        Scenario::Shadow,
        Scenario::Approval,
        Scenario::CpuGate,
        Scenario::Rolling,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "healthy",
            Scenario::Erroring => "erroring",
            Scenario::Slow => "slow",
            Scenario::Ab => "ab",
            Scenario::Shadow => "shadow",
            Scenario::Approval => "approval",
            Scenario::CpuGate => "cpu-gate",
            Scenario::Rolling => "rolling",
        }
    }

    /// What this scenario shows, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Healthy => {
                "a healthy canary at 10% then 50% until the analysis passes: it should be promoted"
            }
            Scenario::Erroring => {
                "a canary failing 5% of requests (stable 0.5%): it should be rolled back"
            }
            Scenario::Slow => "a canary 1.5x slower than stable: it should be rolled back",
            Scenario::Ab => {
                "an A/B test: only requests with x-beta: 1 reach the canary, which should be promoted"
            }
            Scenario::Shadow => {
                "a shadow: half the requests are copied to the canary and judged, no client sees it; it should be promoted"
            }
            Scenario::Approval => {
                "a healthy canary at 20% whose promotion waits for an approval service (a webhook) that says yes 15s after the step's pause; a chat hook hears the start and the promotion"
            }
            Scenario::CpuGate => {
                "a canary as good as stable in the mesh whose CPU, as a local Prometheus reads it from its exporter, climbs from 0.4 to 0.85 cores after 6s (stable 0.3) against a gate of 0.7: it should be rolled back"
            }
            Scenario::Rolling => {
                "a rolling update: v2's pods follow its weight (25%, 50%, 75% of 4), each step waits until they are ready, v1 goes to zero 5s after the promotion"
            }
        }
    }

    /// The phase the rollout should end in.
    pub fn expected_phase(self) -> &'static str {
        match self {
            Scenario::Erroring | Scenario::Slow | Scenario::CpuGate => "RolledBack",
            Scenario::Healthy
            | Scenario::Ab
            | Scenario::Shadow
            | Scenario::Approval
            | Scenario::Rolling => "Succeeded",
        }
    }

    /// The stable backend's behaviour: lognormal latency (median 20 ms, p99 80 ms), 0.5 % errors
    /// (none in the approval scenario).
    pub fn stable_behaviour(self) -> Behaviour {
        match self {
            // No errors on either side, so the approval, not the analysis, is what the
            // promotion visibly waits for.
            Scenario::Approval => Behaviour::new(base_latency(), 0.0),
            _ => base_behaviour(),
        }
    }

    /// The canary backend's behaviour for this scenario.
    pub fn canary_behaviour(self) -> Behaviour {
        match self {
            Scenario::Erroring => Behaviour::new(base_latency(), BAD_ERROR_RATE),
            Scenario::Slow => Behaviour::new(
                Latency::lognormal(
                    base_latency().median().mul_f64(SLOW_FACTOR),
                    base_latency().p99().mul_f64(SLOW_FACTOR),
                ),
                BASE_ERROR_RATE,
            ),
            Scenario::Approval => Behaviour::new(base_latency(), 0.0),
            Scenario::Healthy
            | Scenario::Ab
            | Scenario::Shadow
            | Scenario::CpuGate
            | Scenario::Rolling => base_behaviour(),
        }
    }

    /// The CPU (cores) the versions' exporter reports, for a scenario with a CPU gate.
    pub fn cpu(self) -> Option<CpuStory> {
        match self {
            Scenario::CpuGate => Some(CpuStory {
                stable: 0.3,
                canary: 0.4,
                canary_later: 0.85,
                climbs_after: Duration::from_secs(6),
            }),
            _ => None,
        }
    }

    /// The share of requests sent with the A/B header.
    pub fn beta_share(self) -> f64 {
        match self {
            Scenario::Ab => 0.3,
            _ => 0.0,
        }
    }

    /// The Rollout file: each stage held for `hold`, looked at every `interval`.
    pub fn rollout_yaml(self, hold: Duration, interval: Duration) -> String {
        let hold = format!("{}ms", hold.as_millis());
        let strategy = match self {
            Scenario::Healthy | Scenario::Erroring | Scenario::Slow | Scenario::CpuGate => format!(
                "    canary:\n      steps:\n        - weight: 10\n          pause: {{duration: {hold}}}\n        - weight: 50\n          pause: {{duration: {hold}, untilAnalysisPasses: true}}\n"
            ),
            Scenario::Approval => format!(
                "    canary:\n      steps:\n        - weight: 20\n          pause: {{duration: {hold}}}\n"
            ),
            Scenario::Ab => format!(
                "    abTest:\n      rules:\n        - header: {{name: {BETA_HEADER}, exact: \"{BETA_VALUE}\"}}\n      duration: {hold}\n      then: promote\n"
            ),
            Scenario::Shadow => format!(
                "    shadow:\n      mirrorPercent: 50\n      duration: {hold}\n      then: promote\n"
            ),
            Scenario::Rolling => {
                let step =
                    |w| format!("        - weight: {w}\n          pause: {{duration: {hold}}}\n");
                format!(
                    "    canary:\n      steps:\n{}{}{}",
                    step(25),
                    step(50),
                    step(75)
                )
            }
        };
        let workloads = match self {
            Scenario::Rolling => format!(
                "  workloads:\n    stable: {NAME}-{STABLE}\n    canary: {NAME}-{CANARY}\n    scaleWithWeight: true\n    scaleDownDelay: 5s\n"
            ),
            _ => String::new(),
        };
        let metrics = match self.cpu() {
            Some(_) => format!(
                "    metrics:\n      - name: cpu\n        query: '{CPU_METRIC}{{version=\"{{{{version}}}}\"}}'\n        max: {CPU_MAX}\n        interval: 1s\n"
            ),
            None => String::new(),
        };
        format!(
            "apiVersion: fledge.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: {NAME}\n  namespace: {NAMESPACE}\nspec:\n  host: {HOST}\n  stable: {STABLE}\n  canary: {CANARY}\n  virtualService:\n    name: {NAME}\n  sticky:\n    header: {USER_HEADER}\n{workloads}  strategy:\n{strategy}  analysis:\n    interval: {}ms\n{metrics}",
            interval.as_millis()
        )
    }
}

impl Scenario {
    /// How long the approval service waits after it is first asked before it says yes, for
    /// scenarios that have one: the step's pause (`hold`), then 15 s more, so the promotion
    /// visibly waits for it once the pause is over and the analysis has passed.
    pub fn approval_after(self, hold: Duration) -> Option<Duration> {
        (self == Scenario::Approval).then_some(hold + Duration::from_secs(15))
    }

    /// The `spec.webhooks` lines to append to the Rollout file of a scenario with an approval
    /// service at `approve` and a chat at `chat` (empty for the others).
    pub fn webhooks_yaml(self, approve: &str, chat: &str) -> String {
        if self != Scenario::Approval {
            return String::new();
        }
        format!(
            "  webhooks:\n    - name: release-approval\n      type: confirmPromotion\n      url: {approve}\n      interval: 2s\n    - name: chat\n      type: notify\n      url: {chat}\n"
        )
    }
}

/// The Deployments the scenario's Rollout names, as (file name, YAML): v1 with all the
/// replicas, v2 with none yet.
pub fn deployments(scenario: Scenario) -> Vec<(String, String)> {
    if scenario != Scenario::Rolling {
        return Vec::new();
    }
    [(STABLE, ROLLING_REPLICAS), (CANARY, 0)]
        .into_iter()
        .map(|(version, replicas)| {
            let name = format!("{NAME}-{version}");
            let yaml = format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {NAME}, version: {version}}}\nstatus:\n  observedGeneration: 1\n  replicas: {replicas}\n  readyReplicas: {replicas}\n  availableReplicas: {replicas}\n"
            );
            (format!("{name}.yaml"), yaml)
        })
        .collect()
}

/// The stable's replicas at the start of the rolling scenario.
pub const ROLLING_REPLICAS: u32 = 4;

/// The user's VirtualService: every request to stable. fledge adds its routes above this one.
pub fn virtual_service_yaml() -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {NAME}\n  namespace: {NAMESPACE}\nspec:\n  hosts:\n    - {HOST}\n  http:\n    - name: default\n      route:\n        - destination:\n            host: {HOST}\n            subset: {STABLE}\n"
    )
}

fn base_latency() -> Latency {
    Latency::lognormal(Duration::from_millis(20), Duration::from_millis(80))
}

fn base_behaviour() -> Behaviour {
    Behaviour::new(base_latency(), BASE_ERROR_RATE)
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown scenario {text:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_files_carry_the_strategy_and_the_analysis_settings() {
        let hold = Duration::from_secs(15);
        let table = [
            (Scenario::Healthy, "canary:"),
            (
                Scenario::Slow,
                "- weight: 50\n          pause: {duration: 15000ms, untilAnalysisPasses: true}",
            ),
            (Scenario::Ab, "header: {name: x-beta, exact: \"1\"}"),
            (Scenario::Shadow, "mirrorPercent: 50"),
            (Scenario::Rolling, "scaleWithWeight: true"),
        ];
        for (s, wanted) in table {
            let text = s.rollout_yaml(hold, Duration::from_secs(1));
            assert!(text.contains(wanted), "{s}: {text}");
            assert!(
                text.ends_with("analysis:\n    interval: 1000ms\n"),
                "{s}: {text}"
            );
        }
    }

    #[test]
    fn only_the_approval_scenario_has_webhooks() {
        let hold = Duration::from_secs(15);
        for s in Scenario::ALL {
            let hooks = s.webhooks_yaml("http://127.0.0.1:1/approve", "http://127.0.0.1:1/chat");
            let after = s.approval_after(hold);
            if s == Scenario::Approval {
                assert_eq!(after, Some(Duration::from_secs(30)));
                assert!(
                    hooks.contains("type: confirmPromotion\n      url: http://127.0.0.1:1/approve")
                );
                assert!(hooks.contains("type: notify\n      url: http://127.0.0.1:1/chat"));
            } else {
                assert_eq!((after, hooks.as_str()), (None, ""), "{s}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_listed() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        let err = "fast".parse::<Scenario>().unwrap_err();
        assert!(
            err.contains("\"fast\"")
                && err.contains("healthy, erroring, slow, ab, shadow, approval, cpu-gate, rolling")
        );
    }

    #[test]
    fn canary_behaviour_differs_from_stable_only_where_the_scenario_says() {
        let table = [
            (Scenario::Healthy, 0.005, 20.0, 80.0),
            (Scenario::Erroring, 0.05, 20.0, 80.0),
            (Scenario::Slow, 0.005, 30.0, 120.0),
            (Scenario::Ab, 0.005, 20.0, 80.0),
            (Scenario::Shadow, 0.005, 20.0, 80.0),
            (Scenario::Approval, 0.0, 20.0, 80.0),
            (Scenario::CpuGate, 0.005, 20.0, 80.0),
            (Scenario::Rolling, 0.005, 20.0, 80.0),
        ];
        for (s, errors, median_ms, p99_ms) in table {
            let b = s.canary_behaviour();
            assert_eq!(b.error_rate, errors, "{s}");
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            assert!((ms(b.latency.median()) - median_ms).abs() < 0.01, "{s}");
            assert!((ms(b.latency.p99()) - p99_ms).abs() < 0.01, "{s}");
            if s == Scenario::Approval {
                assert_eq!(s.stable_behaviour(), b, "errors on neither side");
            } else {
                assert_eq!(s.stable_behaviour(), base_behaviour(), "{s}");
            }
        }
    }

    #[test]
    fn the_cpu_gate_scenario_gates_on_the_exported_cpu() {
        let text = Scenario::CpuGate.rollout_yaml(Duration::from_secs(15), Duration::from_secs(1));
        assert!(
            text.ends_with(
                "analysis:\n    interval: 1000ms\n    metrics:\n      - name: cpu\n        query: 'demo_cpu_usage_cores{version=\"{{version}}\"}'\n        max: 0.7\n        interval: 1s\n"
            ),
            "{text}"
        );
        let story = Scenario::CpuGate.cpu().expect("a CPU story");
        assert!(story.canary < 0.7 && story.canary_later > 0.7, "{story:?}");
        assert_eq!(Scenario::Healthy.cpu(), None);
    }
}
