//! Properties of the state machine over random plans and random tick sequences from a seeded
//! generator: weights never exceed the current step's, any Fail ends at 0 % canary, and an agent
//! that persists and reloads its status at every tick (or loses ticks in a crash) behaves the
//! same and never moves backward.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::rollout::plan::Plan;

const SEED: u64 = 0x00f1_ed9e;
const RUNS: usize = 400;
const TICKS: usize = 80;

fn random_steps(rng: &mut StdRng) -> Vec<CanaryStep> {
    (0..rng.random_range(1..=6))
        .map(|_| {
            let mut p = pause(None, false, false);
            while p == pause(None, false, false) {
                p.duration = rng
                    .random_bool(0.6)
                    .then(|| Duration::from_secs(rng.random_range(0..120)));
                p.until_analysis_passes = rng.random_bool(0.4);
                p.until_promoted = rng.random_bool(0.15);
            }
            CanaryStep {
                weight: rng.random_range(0..=100),
                pause: p,
            }
        })
        .collect()
}

fn random_then(rng: &mut StdRng) -> (Then, Vec<CanaryStep>) {
    match rng.random_range(0..3) {
        0 => (Then::Promote, vec![]),
        1 => (Then::Stop, vec![]),
        _ => (Then::HandOverToCanary, random_steps(rng)),
    }
}

fn random_strategy(rng: &mut StdRng) -> Strategy {
    let secs = |rng: &mut StdRng| Duration::from_secs(rng.random_range(0..300));
    match rng.random_range(0..5) {
        0 => {
            let (then, steps) = random_then(rng);
            let mut s = ab_test(then, steps);
            s.ab_test.as_mut().unwrap().duration = secs(rng);
            s
        }
        1 => {
            let (then, steps) = random_then(rng);
            let mut s = shadow(then);
            let sh = s.shadow.as_mut().unwrap();
            (sh.duration, sh.steps, sh.mirror_percent) =
                (secs(rng), steps, rng.random_range(1..=100) as f64);
            s
        }
        2 => {
            let mirror = rng
                .random_bool(0.5)
                .then(|| rng.random_range(1..=100) as f64);
            let mut s = blue_green(rng.random_bool(0.5), mirror);
            s.blue_green.as_mut().unwrap().duration = secs(rng);
            s
        }
        _ => Strategy {
            canary: Some(CanaryStrategy {
                steps: random_steps(rng),
            }),
            ..Default::default()
        },
    }
}

struct TickInput {
    dt: u64,
    verdict: Option<Verdict>,
    commands: Vec<UserCommand>,
}

fn random_tick(rng: &mut StdRng) -> TickInput {
    let verdict = match rng.random_range(0..100) {
        0..20 => None,
        20..60 => Some(Verdict::Pass),
        60..97 => Some(Verdict::NotEnoughData),
        _ => Some(Verdict::Fail),
    };
    let mut commands = Vec::new();
    if rng.random_bool(0.12) {
        commands.push(match rng.random_range(0..10) {
            0 => Abort,
            1..4 => Hold,
            4..7 => Resume,
            _ => Promote,
        });
    }
    TickInput {
        dt: rng.random_range(0..=40),
        verdict,
        commands,
    }
}

fn stage_weight(r: &Rollout, status: &RolloutStatus) -> u32 {
    let plan = Plan::of(&r.spec).unwrap();
    plan.stages[status.current_step.unwrap() as usize].weight
}

/// Persists a status the way the stores do, and reads it back.
/// Persists a status as the stores do (JSON for Kubernetes, YAML for the local store), and reads
/// it back.
fn reload(status: &RolloutStatus, yaml: bool) -> RolloutStatus {
    if yaml {
        serde_norway::from_str(&serde_norway::to_string(status).unwrap()).unwrap()
    } else {
        serde_json::from_str(&serde_json::to_string(status).unwrap()).unwrap()
    }
}

#[test]
fn random_rollouts_keep_their_promises() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let (mut fails_seen, mut ends) = (0, std::collections::HashMap::new());
    for run_no in 0..RUNS {
        let r = rollout(random_strategy(&mut rng));
        r.validate()
            .unwrap_or_else(|e| panic!("run {run_no}: generator made {e}"));
        let ticks: Vec<_> = (0..TICKS).map(|_| random_tick(&mut rng)).collect();
        let mut plain = Run::new(r.clone());
        let mut persisted = Run::new(r);
        let mut now = 0;
        for (i, t) in ticks.iter().enumerate() {
            now += t.dt;
            let before = plain.rollout.status.clone().unwrap_or_default();
            plain.tick(now, t.verdict, &t.commands);
            let s = plain.status().clone();
            let ctx = || format!("run {run_no} tick {i}: {before:?} -> {s:?}");

            // Weights never exceed the current step's.
            if matches!(s.phase, Progressing | Paused) {
                assert!(
                    s.canary_weight <= stage_weight(&plain.rollout, &s),
                    "{}",
                    ctx()
                );
            }
            for a in &plain.actions {
                if let (Action::SetRouting(intent), Progressing | Paused) = (a, s.phase) {
                    assert!(
                        intent.canary_weight() <= stage_weight(&plain.rollout, &s),
                        "{}",
                        ctx()
                    );
                }
            }
            // Any Fail of a running step ends at 0 % canary, with the routes saying so.
            if t.verdict == Some(Verdict::Fail) && matches!(before.phase, Progressing | Paused) {
                fails_seen += 1;
                assert_eq!((s.phase, s.canary_weight), (RolledBack, 0), "{}", ctx());
                assert_eq!(
                    plain.routing().map(|r| r.canary_weight()),
                    Some(0),
                    "{}",
                    ctx()
                );
            }
            // Never backward: final phases stay, the step index only grows.
            if before.phase.is_final() {
                assert_eq!(s.phase, before.phase, "{}", ctx());
            }
            assert!(s.current_step >= before.current_step, "{}", ctx());
            // A routing change always comes with a new revision.
            let set = plain.routing().is_some();
            assert_eq!(
                s.routing_revision,
                before.routing_revision + u64::from(set),
                "{}",
                ctx()
            );

            // The same tick from a status that went through storage gives the same result.
            persisted.rollout.status = persisted
                .rollout
                .status
                .as_ref()
                .map(|s| reload(s, i % 8 == 0));
            persisted.tick(now, t.verdict, &t.commands);
            assert_eq!(persisted.status(), plain.status(), "{}", ctx());
            assert_eq!(persisted.actions, plain.actions, "{}", ctx());
        }
        *ends.entry(plain.status().phase).or_insert(0) += 1;
    }
    // The generator reaches every ending, and fails often enough to mean something.
    for phase in [Succeeded, RolledBack, Aborted] {
        assert!(ends.get(&phase).copied().unwrap_or(0) >= 20, "{ends:?}");
    }
    assert!(fails_seen >= 100, "{fails_seen}");
}

#[test]
fn a_crash_between_deciding_and_persisting_never_moves_backward() {
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    for run_no in 0..RUNS {
        let mut run = Run::new(rollout(random_strategy(&mut rng)));
        let mut stored = RolloutStatus::default();
        let mut now = 0;
        for i in 0..TICKS {
            let t = random_tick(&mut rng);
            now += t.dt;
            run.rollout.status = Some(reload(&stored, i % 8 == 0));
            run.tick(now, t.verdict, &t.commands);
            let s = run.status().clone();
            assert!(
                s.current_step >= stored.current_step,
                "run {run_no} tick {i}"
            );
            if stored.phase.is_final() {
                assert_eq!(s.phase, stored.phase, "run {run_no} tick {i}");
            }
            assert!(s.routing_revision >= stored.routing_revision);
            // One tick in five is lost: the agent died before the status was written.
            if rng.random_range(0..5) != 0 {
                stored = s;
            }
        }
    }
}
