//! The judge: keeps one [`StepAnalysis`] per rollout step and feeds it, second by second, the
//! canary's and the baseline's windows, then looks at every analysis interval. The caller asks
//! what is [`Due`], copies those few windows out of the store ([`Settled::copy`]) under its lock,
//! and feeds and looks without it. Which series are compared: the canary subset's (live, or shadow during a
//! shadow stage) against the stable subset's live traffic on the same host (see [`Arms::new`]).
//!
//! A second is fed once it is `SETTLE_SECS` old, so reports from every filter (sent each second)
//! have arrived; a later straggler is still merged into the store but not into this analysis.

use jiff::Timestamp;

use crate::analysis::{AnalysisSpec, Judgment, StepAnalysis, Verdict};
use crate::rollout::{AnalysisOutcome, AnalysisWindow};
use crate::windows::{Second, SeriesKey, Side, Traffic, Windows};

/// A second `s` (the window [s, s + 1)) is analysed once `now - s >= SETTLE_SECS`, i.e. a
/// second after it ended.
pub const SETTLE_SECS: i64 = 2;

/// What a judge compares: one host's canary against its stable subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arms {
    pub canary: SeriesKey,
    pub baseline: SeriesKey,
}

impl Arms {
    /// Live canary traffic is compared as the callers saw it (client-side filters); mirrored
    /// copies, which only the callee's filter sees, against the stable's live traffic measured
    /// at the same place (server-side), so both arms include the same hops.
    pub fn new(host: &str, stable: &str, canary: &str, canary_traffic: Traffic) -> Self {
        let side = match canary_traffic {
            Traffic::Live => Side::Client,
            Traffic::Shadow => Side::Server,
        };
        Self {
            canary: SeriesKey::new(host, canary, canary_traffic).on(side),
            baseline: SeriesKey::new(host, stable, Traffic::Live).on(side),
        }
    }
}

#[derive(Debug)]
struct Running {
    step: u32,
    since: Timestamp,
    arms: Arms,
    analysis: StepAnalysis,
    /// The next second to feed.
    next: i64,
    last_look: i64,
}

/// The analysis of one rollout across its steps.
#[derive(Debug, Default)]
pub struct Judge {
    running: Option<Running>,
}

/// The seconds a judge wants next: `seconds` (half-open) of the `arms`' series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub arms: Arms,
    pub seconds: std::ops::Range<i64>,
}

/// The windows of the seconds a judge wants, copied out of the store so the analysis runs
/// without holding it: (canary, baseline) per second, in order; a second without traffic is empty.
#[derive(Clone, Debug, Default)]
pub struct Settled {
    seconds: Vec<(Option<Second>, Option<Second>)>,
}

impl Settled {
    /// Copies what `due` names out of `store`: a few windows, cheap enough to do under a lock.
    pub fn copy(store: &Windows, due: &Due) -> Self {
        let seconds = due
            .seconds
            .clone()
            .map(|s| {
                (
                    store.second(&due.arms.canary, s).cloned(),
                    store.second(&due.arms.baseline, s).cloned(),
                )
            })
            .collect();
        Self { seconds }
    }

    /// [`Settled::copy`], and notes in `store` that these seconds were read, so data arriving
    /// for them later is counted as late rather than silently left out of the analysis.
    pub fn take(store: &mut Windows, due: &Due) -> Self {
        let settled = Self::copy(store, due);
        store.read_before(&due.arms.canary, due.seconds.end);
        store.read_before(&due.arms.baseline, due.seconds.end);
        settled
    }
}

impl Judge {
    /// Starts a fresh analysis when the step (or what it compares) changed, and says which
    /// settled seconds it has not been fed yet. None when there are none.
    pub fn due(
        &mut self,
        window: &AnalysisWindow,
        arms: Arms,
        spec: &AnalysisSpec,
        now: Timestamp,
    ) -> Option<Due> {
        let fresh = match &self.running {
            Some(r) => r.step != window.step || r.since != window.since || r.arms != arms,
            None => true,
        };
        if fresh {
            let start = window.since.as_second();
            self.running = Some(Running {
                step: window.step,
                since: window.since,
                arms,
                analysis: StepAnalysis::new(spec.clone()),
                next: start,
                last_look: start,
            });
        }
        let running = self.running.as_ref()?;
        let settled = now.as_second() - SETTLE_SECS + 1;
        (running.next < settled).then(|| Due {
            arms: running.arms.clone(),
            seconds: running.next..settled,
        })
    }

    /// Feeds the seconds copied for the last [`Due`], in order.
    pub fn feed(&mut self, settled: &Settled) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let empty = Second::default();
        for (canary, baseline) in &settled.seconds {
            running.analysis.observe(
                std::time::Duration::from_secs(1),
                canary.as_ref().unwrap_or(&empty),
                baseline.as_ref().unwrap_or(&empty),
            );
            running.next += 1;
        }
    }

    /// Judges when the interval has passed since the last look; None between looks.
    pub fn look(&mut self, spec: &AnalysisSpec, now: Timestamp) -> Option<Judgment> {
        let running = self.running.as_mut()?;
        let now_s = now.as_second();
        let interval = (spec.interval.as_secs_f64().ceil() as i64).max(1);
        if now_s - running.last_look < interval {
            return None;
        }
        running.last_look = now_s;
        Some(running.analysis.look())
    }

    /// `due`, `feed` and `look` in one, reading `store` directly: for callers that hold it
    /// anyway (simulations, benchmarks, tests).
    pub fn tick(
        &mut self,
        window: &AnalysisWindow,
        arms: Arms,
        spec: &AnalysisSpec,
        store: &Windows,
        now: Timestamp,
    ) -> Option<Judgment> {
        if let Some(due) = self.due(window, arms, spec, now) {
            self.feed(&Settled::copy(store, &due));
        }
        self.look(spec, now)
    }

    /// Forgets the running analysis (the rollout ended or was removed).
    pub fn reset(&mut self) {
        self.running = None;
    }
}

/// The state machine's view of a judgment: verdict, one line of reasons, and the evidence.
pub fn outcome(judgment: &Judgment) -> AnalysisOutcome {
    let verdict = judgment.verdict;
    let reasons = judgment.reasons(judgment.verdict);
    let reason = match judgment.verdict {
        Verdict::Pass => format!("all checks pass after {:.0}s", judgment.elapsed_secs),
        _ if reasons.is_empty() => {
            format!("{:?} after {:.0}s", judgment.verdict, judgment.elapsed_secs)
        }
        _ => reasons.join("; "),
    };
    AnalysisOutcome {
        verdict,
        reason,
        evidence: serde_json::to_value(judgment).unwrap_or_default(),
        hold: judgment.hold(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::SeriesDelta;

    fn window(requests: u64, failures: u64) -> SeriesDelta {
        SeriesDelta::test(requests, failures, 20_000)
    }

    #[test]
    fn feeds_settled_seconds_and_looks_at_the_interval() {
        let arms = Arms::new("reviews", "v1", "v2", Traffic::Live);
        let mut store = Windows::new(600, 16);
        let since: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let t0 = since.as_second();
        for s in t0..t0 + 30 {
            store.merge(
                s,
                vec![
                    (arms.canary.clone(), window(20, 10)),
                    (arms.baseline.clone(), window(180, 1)),
                ],
                0,
                t0 + 30,
            );
        }
        let spec = AnalysisSpec::default();
        let step = AnalysisWindow {
            step: 0,
            since,
            canary_traffic: Traffic::Live,
        };
        let mut judge = Judge::default();
        let at = |s: i64| Timestamp::from_second(t0 + s).unwrap();
        assert_eq!(
            judge.tick(&step, arms.clone(), &spec, &store, at(1)),
            None,
            "no look before the interval"
        );
        let judgment = judge
            .tick(&step, arms.clone(), &spec, &store, at(12))
            .expect("a look at 12 s");
        // At 12 s, seconds 0..=10 (each ended a second or more ago) are settled.
        assert_eq!(judgment.elapsed_secs, 11.0);
        assert_eq!(judgment.verdict, Verdict::Fail);
        let o = outcome(&judgment);
        assert_eq!(o.verdict, Verdict::Fail);
        assert!(
            o.reason
                .starts_with("error-rate: canary 50.00% vs baseline 0.56%"),
            "{}",
            o.reason
        );
        assert_eq!(o.evidence["checks"][0]["check"], "error-rate");
        // A new step starts a fresh analysis.
        let next = AnalysisWindow {
            step: 1,
            since: at(20),
            canary_traffic: Traffic::Live,
        };
        let j = judge
            .tick(&next, arms, &spec, &store, at(23))
            .expect("look");
        assert_eq!(j.elapsed_secs, 2.0);
    }
}
