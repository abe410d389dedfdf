//! Checks a Rollout before anything acts on it, and says every problem with the object and the
//! field: `Rollout shop/reviews: spec.strategy.canary.steps[2].weight 120 is over 100`.
//!
//! Pure; it reads a spec and returns problems. Serde already refuses unknown fields and wrong
//! types when the object is read; this module checks what the types cannot.

use super::spec::{
    CanaryStep, CohortRule, Rollout, RolloutSpec, StrategyKind, Then, VirtualServiceRef,
};

/// One problem: the field path from the object's root and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct Problem {
    pub field: String,
    pub problem: String,
}

/// Every problem of one Rollout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Rollout {key}: {}", join(.problems))]
pub struct InvalidRollout {
    /// `namespace/name`.
    pub key: String,
    pub problems: Vec<Problem>,
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Rollout {
    /// Checks the whole object; the error lists every problem found.
    pub fn validate(&self) -> Result<(), InvalidRollout> {
        let mut problems = Vec::new();
        if let Err(e) = crate::key::ObjectKey::of(self).check() {
            problems.push(Problem {
                field: format!("metadata.{}", e.field),
                problem: format!("{:?} {}", e.value, e.problem),
            });
        }
        problems.extend(self.spec.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidRollout {
                key: self.key(),
                problems,
            })
        }
    }
}

/// Collects problems under field paths.
struct Checker(Vec<Problem>);

impl Checker {
    fn bad(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn name(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.bad(field, "is empty");
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.bad(field, format!("{value:?} contains whitespace"));
        }
    }

    fn header_name(&mut self, field: &str, value: &str) {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if value.is_empty() {
            self.bad(field, "is empty");
        } else if !value.chars().all(token) {
            self.bad(field, format!("{value:?} is not a valid header name"));
        }
    }

    fn percent(&mut self, field: &str, value: f64) {
        if !(value.is_finite() && value > 0.0 && value <= 100.0) {
            self.bad(field, format!("{value} is not in (0, 100]"));
        }
    }

    fn steps(&mut self, field: &str, steps: &[CanaryStep]) {
        if steps.is_empty() {
            self.bad(field, "is empty: give at least one step");
        }
        for (i, step) in steps.iter().enumerate() {
            if step.weight > 100 {
                self.bad(
                    format!("{field}[{i}].weight"),
                    format!("{} is over 100", step.weight),
                );
            }
            let p = &step.pause;
            if p.duration.is_none() && !p.until_analysis_passes && !p.until_promoted {
                self.bad(
                    format!("{field}[{i}].pause"),
                    "sets none of duration, untilAnalysisPasses, untilPromoted",
                );
            }
        }
    }

    fn then(&mut self, field: &str, then: Then, steps: &[CanaryStep]) {
        match then {
            Then::HandOverToCanary => self.steps(&format!("{field}.steps"), steps),
            Then::Promote | Then::Stop if !steps.is_empty() => self.bad(
                format!("{field}.steps"),
                "are only used when `then` is handOverToCanary",
            ),
            _ => {}
        }
    }

    fn rule(&mut self, field: &str, rule: &CohortRule) {
        match (&rule.header, &rule.cookie) {
            (Some(h), None) => {
                self.header_name(&format!("{field}.header.name"), &h.name);
                let set = [h.exact.is_some(), h.prefix.is_some(), h.present.is_some()];
                if set.iter().filter(|s| **s).count() != 1 {
                    self.bad(
                        format!("{field}.header"),
                        "must set exactly one of exact, prefix, present",
                    );
                }
            }
            (None, Some(c)) => self.name(&format!("{field}.cookie.name"), &c.name),
            _ => self.bad(field, "must set exactly one of header, cookie"),
        }
    }
}

impl RolloutSpec {
    /// Every problem of the spec, with field paths from the object's root (`spec.…`).
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker(Vec::new());
        let host = &self.host;
        if host.is_empty() {
            c.bad("spec.host", "is empty");
        } else if host.contains(['/', ':', ' ']) || host.to_lowercase() != *host {
            c.bad(
                "spec.host",
                format!("{host:?} is not a lower-case host name without scheme, port or path"),
            );
        }
        c.name("spec.stable", &self.stable);
        c.name("spec.canary", &self.canary);
        if !self.stable.is_empty() && self.stable == self.canary {
            c.bad(
                "spec.canary",
                format!("{:?} is the same subset as spec.stable", self.canary),
            );
        }
        let VirtualServiceRef { name, namespace } = &self.virtual_service;
        c.name("spec.virtualService.name", name);
        if let Some(ns) = namespace {
            c.name("spec.virtualService.namespace", ns);
        }
        if let Some(h) = &self.version_header {
            c.header_name("spec.versionHeader", h);
        }
        let s = &self.sticky;
        if s.header.is_some() && s.cookie.is_some() {
            c.bad(
                "spec.sticky",
                "sets both header and cookie; set at most one",
            );
        }
        if let Some(h) = &s.header {
            c.header_name("spec.sticky.header", h);
        }
        if let Some(k) = &s.cookie {
            c.name("spec.sticky.cookie", k);
        }
        self.strategy_problems(&mut c);
        if let Err(e) = self.analysis.validate() {
            c.bad(format!("spec.analysis.{}", e.field), e.problem);
        }
        c.0.extend(super::webhooks::problems(&self.webhooks));
        for (field, problem) in crate::metric::problems(&self.analysis.metrics) {
            c.bad(format!("spec.analysis.{field}"), problem);
        }
        if let Some(w) = &self.workloads {
            c.0.extend(w.problems());
        }
        c.0
    }

    fn strategy_problems(&self, c: &mut Checker) {
        let kinds = self.strategy.kinds();
        let kind = match kinds.as_slice() {
            [one] => *one,
            [] => {
                c.bad(
                    "spec.strategy",
                    "sets none of canary, abTest, shadow, blueGreen; set exactly one",
                );
                return;
            }
            many => {
                let names: Vec<_> = many.iter().map(StrategyKind::field).collect();
                c.bad(
                    "spec.strategy",
                    format!("sets {}; set exactly one", names.join(" and ")),
                );
                return;
            }
        };
        match kind {
            StrategyKind::Canary(s) => c.steps("spec.strategy.canary.steps", &s.steps),
            StrategyKind::AbTest(s) => {
                if s.rules.is_empty() {
                    c.bad(
                        "spec.strategy.abTest.rules",
                        "is empty: give at least one rule",
                    );
                }
                for (i, rule) in s.rules.iter().enumerate() {
                    c.rule(&format!("spec.strategy.abTest.rules[{i}]"), rule);
                }
                c.then("spec.strategy.abTest", s.then, &s.steps);
            }
            StrategyKind::Shadow(s) => {
                c.percent("spec.strategy.shadow.mirrorPercent", s.mirror_percent);
                c.then("spec.strategy.shadow", s.then, &s.steps);
            }
            StrategyKind::BlueGreen(s) => {
                if let Some(p) = s.preview_mirror_percent {
                    c.percent("spec.strategy.blueGreen.previewMirrorPercent", p);
                }
            }
        }
    }
}
