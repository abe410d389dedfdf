//! A person's command to one rollout (`promote`, `abort`, `pause`, `resume`, `retry`): the
//! vocabulary the CLIs, the HTTP API, the Rollout's command annotation and the state machine share. Parsing only; what a command does is the
//! machine's business (`machine`), how it arrives is the adapters'.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A person's command to one rollout, as typed on the CLI or posted to the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserCommand {
    /// Pass the current gate (a pause "until promoted", or the whole rollout when it is done).
    Promote,
    /// Stop now and send every request back to stable.
    Abort,
    /// Hold the current step: no analysis verdict moves it forward until resumed.
    Pause,
    /// Undo a pause.
    Resume,
    /// After an abort or a rollback: start again from the first step.
    Retry,
}

impl UserCommand {
    pub const ALL: [UserCommand; 5] = [
        Self::Promote,
        Self::Abort,
        Self::Pause,
        Self::Resume,
        Self::Retry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Abort => "abort",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Retry => "retry",
        }
    }
}

impl fmt::Display for UserCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not one of the commands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown command {0:?}: expected one of promote, abort, pause, resume, retry")]
pub struct UnknownCommand(pub String);

impl FromStr for UserCommand {
    type Err = UnknownCommand;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCommand(s.to_string()))
    }
}
