//! What the demo shows each second, read from the agent's view of the rollout (its status, and
//! the evidence of the last analysis) and from what the clients saw: phase, step, canary
//! weight, answers per version, canary against baseline error rate and p99, the client-side
//! p50/p99 of the last second, the verdict. And at the end, the outcome with its reason and the
//! failing check's summary. Pure: it formats values it is given.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::Value;

use fledge_sandbox::load::LoadReport;

/// Phases after which a rollout never moves again.
pub const FINAL_PHASES: [&str; 4] = ["Succeeded", "RolledBack", "Aborted", "Failed"];

/// One line of progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub elapsed: Duration,
    /// None while the agent does not answer.
    pub phase: Option<String>,
    /// Current step (1-based) and the number of steps.
    pub step: Option<(u32, u32)>,
    pub canary_weight: u32,
    /// Answers per version since the start (what clients saw).
    pub answered: BTreeMap<String, u64>,
    /// Mirrored requests the canary backend received.
    pub shadow: u64,
    /// Canary and baseline error rates of the last analysis.
    pub errors: Option<(f64, f64)>,
    /// Canary and baseline p99 of the last analysis, in ms.
    pub p99_ms: Option<(f64, f64)>,
    /// Clients' p50 and p99 over the last second.
    pub client: Option<(Duration, Duration)>,
    pub verdict: Option<String>,
}

/// The rollout's phase as its status says.
pub fn phase(rollout: &Value) -> Option<&str> {
    rollout["status"]["phase"].as_str()
}

/// Whether the rollout's phase is final.
pub fn is_final(rollout: &Value) -> bool {
    phase(rollout).is_some_and(|p| FINAL_PHASES.contains(&p))
}

/// The summaries of the checks that failed in the last analysis.
pub fn failing_checks(rollout: &Value) -> Vec<String> {
    checks(rollout)
        .filter(|c| {
            c["verdict"]
                .as_str()
                .is_some_and(|v| v.eq_ignore_ascii_case("fail"))
        })
        .map(|c| format!("{}: {}", text(&c["check"]), text(&c["summary"])))
        .collect()
}

fn checks(rollout: &Value) -> impl Iterator<Item = &Value> {
    rollout["status"]["lastAnalysis"]["evidence"]["checks"]
        .as_array()
        .into_iter()
        .flatten()
}

fn check<'v>(rollout: &'v Value, name: &str) -> Option<&'v Value> {
    checks(rollout).find(|c| c["check"] == name)
}

fn pair(check: Option<&Value>) -> Option<(f64, f64)> {
    let e = &check?["evidence"];
    // Rates and quantiles of no requests say nothing.
    if e["canaryRequests"].as_u64()? == 0 || e["baselineRequests"].as_u64()? == 0 {
        return None;
    }
    Some((e["canary"].as_f64()?, e["baseline"].as_f64()?))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

impl Progress {
    /// Reads a progress line from the rollout (None: the agent did not answer), the answers
    /// so far, the canary's shadow count, and the last second's load reports.
    pub fn read(
        elapsed: Duration,
        rollout: Option<&Value>,
        answered: &BTreeMap<String, u64>,
        shadow: u64,
        last_second: &[&LoadReport],
    ) -> Progress {
        let status = rollout.map(|r| &r["status"]);
        let step = status.and_then(|s| {
            let at = s["currentStep"].as_u64()?;
            let total = s["totalSteps"].as_u64().unwrap_or(at + 1);
            Some((at as u32 + 1, total as u32))
        });
        let client = last_second
            .iter()
            .max_by_key(|r| r.answered())
            .filter(|r| r.answered() > 0)
            .map(|r| (r.p50, r.p99));
        Progress {
            elapsed,
            phase: rollout.and_then(phase).map(str::to_owned),
            step,
            canary_weight: status.and_then(|s| s["canaryWeight"].as_u64()).unwrap_or(0) as u32,
            answered: answered.clone(),
            shadow,
            errors: rollout.and_then(|r| pair(check(r, "error-rate"))),
            p99_ms: rollout.and_then(|r| pair(check(r, "latency-tail"))),
            client,
            verdict: status
                .and_then(|s| s["lastAnalysis"]["verdict"].as_str())
                .map(str::to_owned),
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>4.0}s ", self.elapsed.as_secs_f64())?;
        let Some(phase) = &self.phase else {
            return write!(f, "agent not answering; clients keep being served");
        };
        write!(f, "{phase:<11}")?;
        match self.step {
            Some((at, total)) => write!(f, " step {at}/{total}")?,
            None => write!(f, " step -/-")?,
        }
        write!(f, "  canary {:>3}%", self.canary_weight)?;
        let answers: Vec<_> = self
            .answered
            .iter()
            .filter(|(v, _)| v.as_str() != "none")
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        write!(f, "  answers {}", answers.join(" "))?;
        if self.shadow > 0 {
            write!(f, " (+{} shadow)", self.shadow)?;
        }
        if let Some((canary, baseline)) = self.errors {
            write!(
                f,
                "  errors {:.2}% vs {:.2}%",
                canary * 100.0,
                baseline * 100.0
            )?;
        }
        if let Some((canary, baseline)) = self.p99_ms {
            write!(f, "  p99 {canary:.0} vs {baseline:.0} ms")?;
        }
        if let Some((p50, p99)) = self.client {
            write!(
                f,
                "  clients p50/p99 {:.0}/{:.0} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            )?;
        }
        if let Some(verdict) = &self.verdict {
            write!(f, "  verdict {verdict}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(phase: &str, verdict: &str) -> Value {
        json!({"status": {
            "phase": phase, "currentStep": 0, "totalSteps": 2, "canaryWeight": 10,
            "lastAnalysis": {"verdict": verdict, "evidence": {"checks": [
                {"check": "error-rate", "verdict": verdict, "summary": "canary 5.10% vs baseline 0.40%",
                 "evidence": {"canary": 0.051, "baseline": 0.004, "canaryRequests": 100, "baselineRequests": 900}},
                {"check": "latency-tail", "verdict": "NotEnoughData", "summary": "p99 …",
                 "evidence": {"canary": 81.0, "baseline": 79.5, "canaryRequests": 100, "baselineRequests": 900}}
            ]}}
        }})
    }

    #[test]
    fn a_line_names_phase_step_weight_answers_rates_and_verdict() {
        let answered = BTreeMap::from([("v1".to_owned(), 900), ("v2".to_owned(), 100)]);
        let report = LoadReport {
            statuses: BTreeMap::from([(200, 10)]),
            p50: Duration::from_millis(21),
            p99: Duration::from_millis(83),
            ..LoadReport::default()
        };
        let r = rollout("Progressing", "Fail");
        let p = Progress::read(Duration::from_secs(7), Some(&r), &answered, 0, &[&report]);
        assert_eq!(
            p.to_string(),
            "   7s Progressing step 1/2  canary  10%  answers v1 900 v2 100  errors 5.10% vs 0.40%  p99 81 vs 80 ms  clients p50/p99 21/83 ms  verdict Fail"
        );
        assert_eq!(
            failing_checks(&r),
            ["error-rate: canary 5.10% vs baseline 0.40%"]
        );
        assert!(!is_final(&r));
        assert!(is_final(&rollout("RolledBack", "Fail")));
    }

    #[test]
    fn an_agent_that_does_not_answer_is_said_so() {
        let p = Progress::read(Duration::from_secs(3), None, &BTreeMap::new(), 0, &[]);
        assert_eq!(
            p.to_string(),
            "   3s agent not answering; clients keep being served"
        );
    }
}
