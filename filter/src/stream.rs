//! The filter's side of the `fledge.v1.Telemetry/Connect` stream, as a state machine the plugin
//! drives from its tick and gRPC callbacks: connect lazily on a tick, send Hello first, then a
//! Report every interval; when the stream fails or closes, reconnect with exponential backoff
//! (1 s doubling, capped at 30 s; at once after a stream that had been healthy, and at the next
//! tick after an agent replica's refusal, [`fledge_proto::is_replica_refusal`]). Routing tables
//! from the agent replace the held one only when their revision is newer.
//!
//! It builds and reads message bytes but performs no I/O: the plugin opens, sends and closes.

use prost::Message;

use fledge_proto::v1;

use crate::config::Agent;
use crate::routing::{RouteDefaults, Table};
use crate::{Error, FILTER_BUILD, Result};

#[cfg(test)]
mod tests;

/// First reconnect delay after a failure; it doubles with each failure in a row.
pub const BACKOFF_BASE_MS: u64 = 1000;
/// Longest reconnect delay.
pub const BACKOFF_CAP_MS: u64 = 30_000;
/// A stream open this long counts as healthy even if the agent has said nothing on it.
pub const HEALTHY_AFTER_MS: u64 = 30_000;

/// The gRPC service and method of the stream.
pub const SERVICE: &str = "fledge.v1.Telemetry";
pub const METHOD: &str = "Connect";

/// What the plugin should do on this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Open a stream, then report it with [`Link::opened`] or [`Link::failed`], and send Hello.
    Connect,
    /// Send a Report on the open stream (token), then call [`Link::reported`] or
    /// [`Link::closed`] if sending failed.
    Report(u32),
    /// Nothing is due.
    Wait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Down {
        retry_at_ms: u64,
    },
    Up {
        token: u32,
        opened_ms: u64,
        heard: bool,
        last_report_ms: u64,
    },
}

/// The connection to the agent.
#[derive(Debug, Clone)]
pub struct Link {
    interval_ms: u64,
    state: State,
    failures: u32,
    seq: u64,
}

impl Link {
    /// A link that connects on its first tick and reports every `interval_ms`.
    pub fn new(interval_ms: u64) -> Link {
        Link {
            interval_ms,
            state: State::Down { retry_at_ms: 0 },
            failures: 0,
            seq: 0,
        }
    }

    /// Starts over with a new interval (a new configuration): the next tick connects afresh.
    /// Report numbers go on, so the agent sees no restart.
    pub fn restart(&mut self, interval_ms: u64) {
        self.interval_ms = interval_ms;
        self.state = State::Down { retry_at_ms: 0 };
        self.failures = 0;
    }

    /// What is due at `now_ms`. A report is due once an interval has passed since the last one
    /// (less a tenth, so ticks that come a little early still report).
    pub fn poll(&self, now_ms: u64) -> Step {
        match self.state {
            State::Down { retry_at_ms } if now_ms >= retry_at_ms => Step::Connect,
            State::Down { .. } => Step::Wait,
            State::Up {
                token,
                last_report_ms,
                ..
            } => {
                let due = last_report_ms.saturating_add(self.interval_ms - self.interval_ms / 10);
                if now_ms >= due {
                    Step::Report(token)
                } else {
                    Step::Wait
                }
            }
        }
    }

    /// A stream opened with this token (and Hello went out on it).
    pub fn opened(&mut self, token: u32, now_ms: u64) {
        self.state = State::Up {
            token,
            opened_ms: now_ms,
            heard: false,
            last_report_ms: now_ms,
        };
    }

    /// Opening a stream failed: try again after the backoff.
    pub fn failed(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        self.state = State::Down {
            retry_at_ms: now_ms.saturating_add(backoff_ms(self.failures)),
        };
    }

    /// The agent said something (metadata or a message) on stream `token`: it is healthy.
    pub fn heard(&mut self, token: u32) {
        if let State::Up {
            token: t, heard, ..
        } = &mut self.state
            && *t == token
        {
            *heard = true;
            self.failures = 0;
        }
    }

    /// A Report went out.
    pub fn reported(&mut self, now_ms: u64) {
        if let State::Up { last_report_ms, .. } = &mut self.state {
            *last_report_ms = now_ms;
        }
    }

    /// Stream `token` closed (by the agent, the proxy, or a failed send). Returns whether it was
    /// the open stream; a close of an older stream changes nothing.
    pub fn closed(&mut self, token: u32, now_ms: u64) -> bool {
        let State::Up {
            token: t,
            opened_ms,
            heard,
            ..
        } = self.state
        else {
            return false;
        };
        if t != token {
            return false;
        }
        if heard || now_ms.saturating_sub(opened_ms) >= HEALTHY_AFTER_MS {
            self.failures = 0;
            self.state = State::Down {
                retry_at_ms: now_ms,
            };
        } else {
            self.failed(now_ms);
        }
        true
    }

    /// Stream `token` was refused or ended by an agent replica that cannot take it (a standby,
    /// or one that is stopping): the agent is up and another replica leads, so the next tick
    /// connects again, without backing off and without counting a failure. Returns whether it
    /// was the open stream.
    pub fn refused(&mut self, token: u32, now_ms: u64) -> bool {
        match self.state {
            State::Up { token: t, .. } if t == token => {
                self.state = State::Down {
                    retry_at_ms: now_ms,
                };
                true
            }
            _ => false,
        }
    }

    /// The open stream's token.
    pub fn token(&self) -> Option<u32> {
        match self.state {
            State::Up { token, .. } => Some(token),
            State::Down { .. } => None,
        }
    }

    /// The number of the next Report: 1, 2, 3, … for the life of the VM.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Gives back a number whose Report was never sent, so the agent sees no gap.
    pub fn unsent_seq(&mut self) {
        self.seq = self.seq.saturating_sub(1);
    }
}

/// The reconnect delay after `failures` failures in a row (1 s, 2 s, 4 s, … capped at 30 s).
pub fn backoff_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE_MS
        .saturating_mul(1u64 << doublings)
        .min(BACKOFF_CAP_MS)
}

// === messages ===

/// Who this VM is, for Hello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub proxy_id: String,
    pub workload: String,
    pub namespace: String,
    pub version_label: String,
}

/// The Hello that opens every stream, encoded.
pub fn hello(node: &Node, role: v1::Role, worker: u32, table_revision: u64) -> Vec<u8> {
    v1::FilterMessage {
        msg: Some(v1::filter_message::Msg::Hello(v1::Hello {
            proxy_id: node.proxy_id.clone(),
            workload: node.workload.clone(),
            namespace: node.namespace.clone(),
            version_label: node.version_label.clone(),
            role: role.into(),
            worker,
            filter_build: FILTER_BUILD.to_owned(),
            table_revision,
        })),
    }
    .encode_to_vec()
}

/// A Report, encoded as a FilterMessage.
pub fn report(report: v1::Report) -> Vec<u8> {
    v1::FilterMessage {
        msg: Some(v1::filter_message::Msg::Report(report)),
    }
    .encode_to_vec()
}

/// What an AgentMessage means for the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A newer routing table: replace the held one with it.
    Table(Table),
    /// A table whose revision is not newer than the held one: ignored.
    Stale { revision: u64 },
    /// A message with nothing the filter knows (a newer agent may send more kinds).
    Nothing,
}

/// Reads one AgentMessage. A malformed message or a table the filter refuses is an error; the
/// held table stays.
pub fn receive(bytes: &[u8], held_revision: u64, defaults: &RouteDefaults) -> Result<Received> {
    let message = v1::AgentMessage::decode(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    match message.msg {
        Some(v1::agent_message::Msg::RoutingTable(table)) => {
            let revision = table.revision;
            if revision <= held_revision {
                return Ok(Received::Stale { revision });
            }
            Table::from_proto(table, defaults)
                .map(Received::Table)
                .map_err(|i| Error::Table {
                    revision,
                    field: i.field,
                    reason: i.reason,
                })
        }
        None => Ok(Received::Nothing),
    }
}

/// The `upstream` argument of `proxy_grpc_stream`. Envoy takes either a cluster name or a
/// serialized `envoy.config.core.v3.GrpcService`; the plain name is used unless the
/// configuration sets an authority or a stream deadline, which only the proto can carry. The
/// proto is not text (a deadline with a fraction of a second, one of 128 s or more, or a cluster
/// and authority over 123 bytes put non-ASCII bytes in it), so it goes to the host as bytes.
pub fn upstream(agent: &Agent) -> Vec<u8> {
    if agent.authority.is_none() && agent.timeout_ms == 0 {
        return agent.cluster.clone().into_bytes();
    }
    let timeout = (agent.timeout_ms > 0).then(|| GrpcDuration {
        seconds: i64::try_from(agent.timeout_ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((agent.timeout_ms % 1000) * 1_000_000).unwrap_or(0),
    });
    GrpcService {
        envoy_grpc: Some(EnvoyGrpc {
            cluster_name: agent.cluster.clone(),
            authority: agent.authority.clone().unwrap_or_default(),
        }),
        timeout,
    }
    .encode_to_vec()
}

/// The fields of `envoy.config.core.v3.GrpcService` the filter sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GrpcService {
    #[prost(message, optional, tag = "1")]
    pub envoy_grpc: Option<EnvoyGrpc>,
    #[prost(message, optional, tag = "3")]
    pub timeout: Option<GrpcDuration>,
}

/// `envoy.config.core.v3.GrpcService.EnvoyGrpc`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    pub cluster_name: String,
    #[prost(string, tag = "2")]
    pub authority: String,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GrpcDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}
