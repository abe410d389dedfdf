//! Commands recorded on the Rollout object itself: the annotation `fledge.dev/command` holds the
//! latest one as JSON, `{"command":"promote","id":7,"by":"alice","at":"2026-12-01T12:00:00Z"}`.
//! Whoever may patch the Rollout may command it, so Kubernetes RBAC decides who may; the agent
//! sees the annotation through its watch; and since the answer is kept in the status
//! (`status.lastCommand`), an agent restart neither loses a command nor applies one twice.
//!
//! The rules, all here: ids only grow; a command whose id is at most `status.lastCommand.id` has
//! been taken and is never applied again; the next id is one more than both the annotation's and
//! the status's. An annotation is a metadata change, so it does not bump `metadata.generation`
//! (which would restart an ended rollout). What it is not: the state machine decides what a
//! command does (`machine`), the adapters read and write the annotation.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::UserCommand;
use super::spec::Rollout;

/// The annotation that carries a person's latest command.
pub const COMMAND_ANNOTATION: &str = "fledge.dev/command";

/// A command as written in the annotation. `command` stays a word so that an unknown one can be
/// answered in the status, naming its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCommand {
    pub command: String,
    /// Grows by one with each command given to this Rollout.
    pub id: u64,
    /// Who gave it, as the Kubernetes API knows them (e.g. `alice@example.com`).
    #[serde(default)]
    pub by: String,
    /// When it was given.
    pub at: Timestamp,
}

/// How the agent answered a recorded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CommandOutcome {
    /// It took effect.
    Applied,
    /// It made no sense in the rollout's phase (e.g. `promote` after it ended); nothing changed.
    Ignored,
    /// It is not a command fledge knows; nothing changed.
    Refused,
}

/// `status.lastCommand`: the latest recorded command the agent took, and its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecord {
    pub command: String,
    pub id: u64,
    pub by: String,
    #[schemars(with = "String")]
    pub at: Timestamp,
    pub outcome: CommandOutcome,
    /// What it did, or why it did nothing, for a person.
    pub reason: String,
}

/// What the annotation asks of the agent now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// A command not taken yet.
    Command(RecordedCommand),
    /// An annotation that does not read as a command (the words say why).
    Unreadable(String),
}

impl RecordedCommand {
    /// The annotation's command, read.
    pub fn of(rollout: &Rollout) -> Option<Result<Self, String>> {
        let text = rollout
            .metadata
            .annotations
            .as_ref()?
            .get(COMMAND_ANNOTATION)?;
        Some(serde_json::from_str(text).map_err(|e| {
            format!(
                "annotation {COMMAND_ANNOTATION} is not a command ({e}); expected \
                 {{\"command\":\"promote\",\"id\":1,\"by\":\"NAME\",\"at\":\"RFC 3339 time\"}}"
            )
        }))
    }

    /// The command word, when it is one.
    pub fn user_command(&self) -> Result<UserCommand, String> {
        self.command
            .parse()
            .map_err(|e: super::UnknownCommand| e.to_string())
    }

    /// The annotation's text.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The command to record next on `rollout`: its id one more than any the rollout has seen.
    pub fn next(rollout: &Rollout, command: UserCommand, by: &str, at: Timestamp) -> Self {
        let annotated = Self::of(rollout).and_then(Result::ok).map_or(0, |c| c.id);
        let taken = last_taken(rollout);
        Self {
            command: command.as_str().to_owned(),
            id: annotated.max(taken) + 1,
            by: by.to_owned(),
            at,
        }
    }
}

/// The id of the last command the agent took (0 when none).
pub fn last_taken(rollout: &Rollout) -> u64 {
    rollout
        .status
        .as_ref()
        .and_then(|s| s.last_command.as_ref())
        .map_or(0, |c| c.id)
}

/// The annotation's command when the agent has not taken it yet, or why it cannot be read.
pub fn pending(rollout: &Rollout) -> Option<Pending> {
    match RecordedCommand::of(rollout)? {
        Ok(command) if command.id > last_taken(rollout) => Some(Pending::Command(command)),
        Ok(_) => None,
        Err(problem) => Some(Pending::Unreadable(problem)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::RolloutStatus;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn with(annotation: Option<&str>, taken: Option<u64>) -> Rollout {
        let mut rollout = Rollout::test();
        if let Some(text) = annotation {
            rollout.metadata.annotations =
                Some([(COMMAND_ANNOTATION.to_owned(), text.to_owned())].into());
        }
        rollout.status = taken.map(|id| RolloutStatus {
            last_command: Some(CommandRecord {
                command: "pause".into(),
                id,
                by: "bob".into(),
                at: at(0),
                outcome: CommandOutcome::Applied,
                reason: "paused".into(),
            }),
            ..RolloutStatus::default()
        });
        rollout
    }

    const PROMOTE_3: &str =
        r#"{"command":"promote","id":3,"by":"alice","at":"2027-01-15T08:00:00Z"}"#;

    #[test]
    fn a_command_is_pending_until_its_id_is_taken() {
        for (annotation, taken, expected) in [
            (None, None, None),
            (Some(PROMOTE_3), None, Some(3)),
            (Some(PROMOTE_3), Some(2), Some(3)),
            (Some(PROMOTE_3), Some(3), None),
            (Some(PROMOTE_3), Some(9), None),
        ] {
            let pending = pending(&with(annotation, taken));
            let id = pending.map(|p| match p {
                Pending::Command(c) => c.id,
                Pending::Unreadable(why) => panic!("{why}"),
            });
            assert_eq!(id, expected, "{annotation:?} with {taken:?} taken");
        }
    }

    #[test]
    fn an_unreadable_annotation_says_what_is_expected() {
        for text in ["promote", r#"{"command":"promote"}"#, r#"{"id":"3"}"#] {
            let Some(Pending::Unreadable(why)) = pending(&with(Some(text), None)) else {
                panic!("{text} read as a command");
            };
            assert!(
                why.starts_with("annotation fledge.dev/command is not a command (")
                    && why.ends_with(
                        r#"expected {"command":"promote","id":1,"by":"NAME","at":"RFC 3339 time"}"#
                    ),
                "{why}"
            );
        }
    }

    #[test]
    fn the_next_id_is_past_both_the_annotation_and_the_status() {
        for (annotation, taken, expected) in [
            (None, None, 1),
            (Some(PROMOTE_3), None, 4),
            (Some(PROMOTE_3), Some(7), 8),
            (None, Some(2), 3),
            (Some("garbage"), Some(5), 6),
        ] {
            let next =
                RecordedCommand::next(&with(annotation, taken), UserCommand::Abort, "carol", at(5));
            assert_eq!(next.id, expected, "{annotation:?} with {taken:?} taken");
            assert_eq!(
                (next.command.as_str(), next.by.as_str()),
                ("abort", "carol")
            );
            let round: RecordedCommand = serde_json::from_str(&next.to_annotation()).unwrap();
            assert_eq!(round, next);
        }
    }

    #[test]
    fn only_known_words_are_commands() {
        let mut c: RecordedCommand = serde_json::from_str(PROMOTE_3).unwrap();
        assert_eq!(c.user_command(), Ok(UserCommand::Promote));
        c.command = "restart".into();
        assert_eq!(
            c.user_command().unwrap_err(),
            "unknown command \"restart\": expected one of promote, abort, pause, resume, retry"
        );
    }
}
