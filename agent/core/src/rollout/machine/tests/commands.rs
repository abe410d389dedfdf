//! Commands: `retry` starts an aborted or rolled-back rollout again from its first step and is
//! ignored in any other phase; a command recorded on the Rollout is taken once, whatever the
//! number of ticks or restarts, and its answer names who gave it.

use super::*;
use crate::rollout::UserCommand::Retry;
use crate::rollout::recorded::{COMMAND_ANNOTATION, CommandOutcome, RecordedCommand};

#[test]
fn retry_starts_again_from_the_first_step_only_after_an_abort_or_a_rollback() {
    let rows: &[Row] = &[
        (0, None, &[], Progressing, Some(0), 10),
        (1, None, &[Retry], Progressing, Some(0), 10),
        (60, Some(Pass), &[], Progressing, Some(1), 25),
        (61, Some(Fail), &[], RolledBack, Some(1), 0),
        (62, None, &[Retry], Progressing, Some(0), 10),
        (63, None, &[Abort], Aborted, Some(0), 0),
        (64, None, &[Retry, Hold], Paused, Some(0), 10),
        (65, None, &[Resume], Progressing, Some(0), 10),
        // The minute of step 1 counts from the retry, less the second paused: 64 + 1 + 60.
        (124, Some(Pass), &[], Progressing, Some(0), 10),
        (125, Some(Pass), &[], Progressing, Some(1), 25),
    ];
    let run = play("retry", Run::new(rollout(three_steps())), rows);
    let s = run.status();
    assert!(s.last_analysis.as_ref().is_some_and(|a| a.step == 0));
    let retried: Vec<_> = s
        .history
        .iter()
        .filter(|d| d.reason.starts_with("retried by a person after it was "))
        .map(|d| (d.phase, d.step, d.canary_weight))
        .collect();
    assert_eq!(
        retried,
        [(Progressing, Some(0), 10), (Progressing, Some(0), 10)]
    );

    // Anything but Aborted or RolledBack ignores it, saying so.
    for (phase, commands) in [
        (Succeeded, &[Promote, Promote, Promote][..]),
        (Progressing, &[][..]),
    ] {
        let mut run = Run::new(rollout(three_steps()));
        run.tick(0, None, commands);
        run.tick(1, None, &[]);
        run.tick(2, None, &[Retry]);
        assert_eq!(run.status().phase, phase);
        assert_eq!(run.events(), ["CommandIgnored"], "retry when {phase}");
    }
}

fn recorded(run: &mut Run, command: &str, id: u64, by: &str) {
    let text = serde_json::json!({
        "command": command, "id": id, "by": by, "at": "2027-01-15T08:00:00Z",
    });
    run.rollout.metadata.annotations =
        Some([(COMMAND_ANNOTATION.to_owned(), text.to_string())].into());
}

#[test]
fn a_recorded_command_is_taken_once_and_answered_in_the_status() {
    let mut run = Run::new(rollout(three_steps()));
    run.tick(0, None, &[]);
    recorded(&mut run, "pause", 1, "alice@example.com");
    run.tick(1, None, &[]);
    let s = run.status();
    assert_eq!(s.phase, Paused);
    assert_eq!(
        s.reason,
        "paused by alice@example.com (command 1) at step 1/3; `resume` or `promote` continues"
    );
    let last = s.last_command.clone().unwrap();
    assert_eq!(
        (
            last.id,
            last.command.as_str(),
            last.by.as_str(),
            last.outcome
        ),
        (1, "pause", "alice@example.com", CommandOutcome::Applied)
    );
    assert_eq!(last.reason, s.reason);
    assert_eq!(run.events(), ["Paused"]);

    // The annotation stays; later ticks, and a new agent reading the persisted status, do not
    // take it again.
    for secs in 2..5 {
        run.tick(secs, None, &[Resume]);
        run.tick(secs, None, &[Hold]);
    }
    assert_eq!(run.status().phase, Paused);
    let mut restarted = Run::new(run.rollout.clone());
    restarted.tick(6, None, &[]);
    assert_eq!(restarted.status().phase, Paused);
    assert!(restarted.events().is_empty(), "{:?}", restarted.events());

    // The next id is taken; an older one is not.
    let next = RecordedCommand::next(&run.rollout, Promote, "bob", at(7));
    assert_eq!(next.id, 2);
    recorded(&mut run, "promote", 2, "bob");
    run.tick(7, None, &[]);
    assert_eq!(
        (run.status().phase, run.status().current_step),
        (Progressing, Some(1))
    );
    assert!(
        run.status()
            .history
            .last()
            .unwrap()
            .reason
            .starts_with("step 1/3 done (promoted by bob (command 2)): step 2/3"),
        "{:?}",
        run.status().history.last()
    );
    recorded(&mut run, "abort", 1, "mallory");
    run.tick(8, None, &[]);
    assert_eq!(run.status().phase, Progressing, "an old id is not applied");
    assert_eq!(run.status().last_command.as_ref().unwrap().id, 2);
}

#[test]
fn recorded_commands_that_do_nothing_are_answered_too() {
    // (command, outcome, event, the answer's reason)
    let cases = [
        (
            "resume",
            CommandOutcome::Ignored,
            "CommandIgnored",
            "resume by alice (command 1) ignored: the rollout is Progressing",
        ),
        (
            "restart",
            CommandOutcome::Refused,
            "CommandRefused",
            "unknown command \"restart\": expected one of promote, abort, pause, resume, retry; given by alice (command 1)",
        ),
        (
            "retry",
            CommandOutcome::Ignored,
            "CommandIgnored",
            "retry by alice (command 1) ignored: the rollout is Progressing; retry starts again only after Aborted or RolledBack",
        ),
    ];
    for (command, outcome, event, reason) in cases {
        let mut run = Run::new(rollout(three_steps()));
        run.tick(0, None, &[]);
        recorded(&mut run, command, 1, "alice");
        run.tick(1, None, &[]);
        let last = run.status().last_command.clone().unwrap();
        assert_eq!((last.outcome, last.reason.as_str()), (outcome, reason));
        assert_eq!(run.events(), [event], "{command}");
        assert_eq!(run.status().phase, Progressing);
    }

    // An annotation that is not a command is said once, and forgotten once fixed.
    let mut run = Run::new(rollout(three_steps()));
    run.tick(0, None, &[]);
    run.rollout.metadata.annotations =
        Some([(COMMAND_ANNOTATION.to_owned(), "promote please".to_owned())].into());
    run.tick(1, None, &[]);
    assert_eq!(run.events(), ["CommandUnreadable"]);
    let problem = run.status().command_problem.clone().unwrap();
    assert!(
        problem.starts_with("annotation fledge.dev/command is not a command"),
        "{problem}"
    );
    run.tick(2, None, &[]);
    assert!(run.events().is_empty());
    recorded(&mut run, "abort", 1, "alice");
    run.tick(3, None, &[]);
    assert_eq!(run.status().command_problem, None);
    assert_eq!(run.status().phase, Aborted);
    assert_eq!(
        run.status().reason,
        "aborted by alice (command 1): every request goes back to v1"
    );
}

#[test]
fn a_recorded_retry_starts_an_aborted_rollout_again() {
    let mut run = Run::new(rollout(three_steps()));
    run.tick(0, None, &[]);
    recorded(&mut run, "abort", 1, "alice");
    run.tick(1, None, &[]);
    assert_eq!(run.status().phase, Aborted);
    recorded(&mut run, "retry", 2, "bob");
    run.tick(2, None, &[]);
    let s = run.status();
    assert_eq!(
        (s.phase, s.current_step, s.canary_weight),
        (Progressing, Some(0), 10)
    );
    assert_eq!(run.events(), ["Retried"]);
    assert_eq!(run.routing().unwrap().canary_weight(), 10);
    assert!(
        s.reason
            .starts_with("step 1/3: 10% of requests to the canary"),
        "{}",
        s.reason
    );
    assert_eq!(
        s.history.last().unwrap().reason,
        format!(
            "retried by bob (command 2) after it was Aborted: {}",
            s.reason
        )
    );
}
