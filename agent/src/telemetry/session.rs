//! The agent's side of one `fledge.v1.Telemetry/Connect` stream, as a state machine the gRPC
//! adapter drives with what arrives: the filter's messages, and each routing table the hub
//! publishes. It answers with what to do; it performs no I/O and knows no clock but the one it
//! is handed.
//!
//! The protocol: the first message must be a Hello. The Hello's role says which side of a
//! request the stream's series were measured on (`ROLE_SERVER` the callee's, any other the
//! caller's), and its table revision is the one the filter holds. Every Report after it is
//! validated whole; a valid one is merged, an invalid one (or one before Hello, or a message
//! with neither, or a Hello whose strings are too long) refuses the stream with a message a
//! person can act on. A report's `seq` must grow on a stream: a replay, or a report older than
//! one already merged, is refused (`seq`) rather than counted twice. A later Hello changes
//! nothing. A routing table goes out only when it is newer than the newest the filter holds.
//! With the stream's mesh identity known (`peer`), a Hello for another namespace is refused, and
//! so is a server-role series for a host of another namespace; with one required, a stream
//! without it is refused.
//! The filter's side of the same stream is `fledge_filter::stream`.

use fledge_proto::v1;

use super::peer::{Identity, host_namespace};
use super::validate::{Rejection, ValidReport, quote, validate, validate_hello};
use fledge_core::windows::{Merged, Side, Windows};

#[cfg(test)]
mod tests;

/// Reports whose window ends further than this from the agent's clock are refused.
pub const DEFAULT_MAX_SKEW_MS: i64 = 120_000;

/// What the adapter should do with a message from the filter.
#[derive(Debug)]
pub enum Action {
    /// The stream said Hello: register it, then offer it the current table with
    /// [`Session::offer`].
    Register(v1::Hello),
    /// A report passed every check: record its hosts, count it as received, and merge it.
    Merge(Merge),
    /// Nothing to do (a Hello after the first).
    Nothing,
    /// Count the rejection under its reason and close the stream with `invalid_argument` and
    /// its message. Feed the session nothing more.
    Refuse(Rejection),
}

/// A validated report, its series keyed on the stream's side, ready to merge.
#[derive(Debug)]
pub struct Merge {
    pub report: ValidReport,
    /// The agent's clock in unix seconds: windows older than the retention before it expire.
    pub now_secs: i64,
}

impl Merge {
    /// The hosts the report has traffic for (one per series; a host may repeat).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.report.series.iter().map(|(key, _)| key.host.as_str())
    }

    /// Adds the report to `windows` at the second its window ends in; says what was not stored.
    pub fn into_windows(self, windows: &mut Windows) -> Merged {
        let ValidReport {
            second,
            series,
            dropped,
        } = self.report;
        windows.merge(second, series, dropped, self.now_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing has arrived but, perhaps, tables; they wait for the Hello.
    AwaitingHello,
    /// Hello came: where the filter measures, the newest table revision it holds, and the
    /// `seq` of the last report merged.
    Open {
        side: Side,
        held: u64,
        seq: Option<u64>,
    },
}

/// Requests one stream may report per second, on average (bursts of [`RATE_BURST_SECS`]): more
/// than one proxy serves, and so the most one stream (one proxy, or a client that lies) can weigh
/// in a comparison. A stream that claims more has its report refused and is closed. A gateway
/// that truly serves more raises it (`--max-stream-requests-per-second`).
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: u64 = 200_000;
/// How many seconds of the rate a stream may report at once (after an outage, filters send
/// what they kept in one report).
pub const RATE_BURST_SECS: u64 = 30;

/// One filter stream, as the agent sees it.
#[derive(Debug, Clone)]
pub struct Session {
    max_skew_ms: i64,
    state: State,
    peer: Peer,
    budget: Budget,
}

/// The requests a stream may still report: refilled at its rate, at most a burst's worth.
#[derive(Debug, Clone, Copy)]
struct Budget {
    per_second: u64,
    left: u64,
    /// When `left` was last refilled (unix ms); None until the Hello.
    at_ms: Option<i64>,
}

impl Budget {
    fn new(per_second: u64) -> Self {
        Self {
            per_second,
            left: 0,
            at_ms: None,
        }
    }

    fn burst(&self) -> u64 {
        self.per_second.saturating_mul(RATE_BURST_SECS)
    }

    /// Takes `requests` at `now_ms`, or says how many the stream may report now.
    fn take(&mut self, requests: u64, now_ms: i64) -> Result<(), u64> {
        let refill = match self.at_ms {
            None => self.burst(),
            Some(at) => {
                let ms = u64::try_from(now_ms.saturating_sub(at)).unwrap_or(0);
                (u128::from(self.per_second) * u128::from(ms) / 1000)
                    .try_into()
                    .unwrap_or(u64::MAX)
            }
        };
        self.left = self.left.saturating_add(refill).min(self.burst());
        self.at_ms = Some(self.at_ms.map_or(now_ms, |at| at.max(now_ms)));
        if requests > self.left {
            return Err(self.left);
        }
        self.left -= requests;
        Ok(())
    }
}

/// The stream's mesh identity, and whether one is required.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub identity: Option<Identity>,
    /// Refuse a stream without an identity (the install runs the agent behind a sidecar).
    pub required: bool,
}

impl Session {
    /// A stream that has said nothing yet; reports whose window ends more than `max_skew_ms`
    /// from the agent's clock will be refused.
    pub fn new(max_skew_ms: i64) -> Session {
        Self::with_peer(max_skew_ms, Peer::default())
    }

    /// A stream from `peer`: its Hello must name the identity's namespace, and its server-role
    /// series only hosts of that namespace.
    pub fn with_peer(max_skew_ms: i64, peer: Peer) -> Session {
        Session {
            max_skew_ms,
            state: State::AwaitingHello,
            peer,
            budget: Budget::new(DEFAULT_MAX_REQUESTS_PER_SECOND),
        }
    }

    /// At most `per_second` requests a second on average from this stream (see
    /// [`DEFAULT_MAX_REQUESTS_PER_SECOND`]).
    pub fn with_rate(mut self, per_second: u64) -> Session {
        self.budget = Budget::new(per_second);
        self
    }

    /// Whether the stream may report `report`'s requests now.
    fn within_rate(
        &mut self,
        report: &ValidReport,
        seq: u64,
        now_ms: i64,
    ) -> Result<(), Rejection> {
        let requests = report
            .series
            .iter()
            .fold(0u64, |sum, (_, d)| sum.saturating_add(d.counts.requests));
        self.budget.take(requests, now_ms).map_err(|left| {
            Rejection::new(
                "rate",
                format!(
                    "report {seq} carries {requests} requests but this stream may report {left} now                      (at most {} a second, bursts of {RATE_BURST_SECS} s): more than one proxy                      serves; raise --max-stream-requests-per-second for a proxy that truly does",
                    self.budget.per_second
                ),
            )
        })
    }

    /// Whether this peer may say `hello`.
    fn admit(&self, hello: &v1::Hello) -> Result<(), Rejection> {
        match &self.peer.identity {
            None if self.peer.required => Err(Rejection::new(
                "peer_identity",
                "the stream carries no mesh identity (x-forwarded-client-cert): this agent takes \
                 telemetry only over the mesh's mutual TLS; check that the proxy has a sidecar and \
                 that the agent's namespace has the PeerAuthentication of the install",
            )),
            Some(id) if !hello.namespace.is_empty() && hello.namespace != id.namespace => {
                Err(Rejection::new(
                    "peer_namespace",
                    format!(
                        "Hello says namespace {:?} but the stream's mesh identity is {id}; a proxy \
                         reports only for its own namespace",
                        quote(&hello.namespace)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether this peer may report `report`'s series measured on `side`.
    fn may_report(&self, side: Side, report: &ValidReport) -> Result<(), Rejection> {
        let (Side::Server, Some(id)) = (side, &self.peer.identity) else {
            return Ok(());
        };
        let foreign = report.series.iter().find_map(|(key, _)| {
            host_namespace(&key.host)
                .filter(|ns| *ns != id.namespace)
                .map(|_| key.host.as_str())
        });
        match foreign {
            None => Ok(()),
            Some(host) => Err(Rejection::new(
                "peer_namespace",
                format!(
                    "a server-role series for host {:?} comes from {id}: a workload measures only \
                     its own inbound traffic, in its own namespace",
                    quote(host)
                ),
            )),
        }
    }

    /// A message from the filter arrived; the agent's clock reads `now_ms` (unix milliseconds).
    pub fn received(&mut self, message: v1::FilterMessage, now_ms: i64) -> Action {
        let report_seq = match &message.msg {
            Some(v1::filter_message::Msg::Report(r)) => r.seq,
            _ => 0,
        };
        match (message.msg, self.state) {
            (Some(v1::filter_message::Msg::Hello(hello)), State::AwaitingHello) => {
                if let Err(rejection) = validate_hello(&hello).and_then(|()| self.admit(&hello)) {
                    return Action::Refuse(rejection);
                }
                // A filter in the server role measures the callee's side.
                let side = if hello.role == v1::Role::Server as i32 {
                    Side::Server
                } else {
                    Side::Client
                };
                self.state = State::Open {
                    side,
                    held: hello.table_revision,
                    seq: None,
                };
                Action::Register(hello)
            }
            (Some(v1::filter_message::Msg::Hello(_)), State::Open { .. }) => Action::Nothing,
            (Some(v1::filter_message::Msg::Report(report)), State::AwaitingHello) => {
                Action::Refuse(Rejection::new(
                    "before_hello",
                    format!("report {} came before Hello; send Hello first", report.seq),
                ))
            }
            (
                Some(v1::filter_message::Msg::Report(report)),
                State::Open {
                    seq: Some(last), ..
                },
            ) if report.seq <= last => Action::Refuse(Rejection::new(
                "seq",
                format!(
                    "report {} does not follow report {last} on this stream; seq must grow (a replayed or reordered report is not merged twice)",
                    report.seq
                ),
            )),
            (Some(v1::filter_message::Msg::Report(report)), State::Open { side, .. }) => {
                let valid = validate(&report, now_ms, self.max_skew_ms)
                    .and_then(|r| self.may_report(side, &r).map(|()| r))
                    .and_then(|r| self.within_rate(&r, report_seq, now_ms).map(|()| r));
                match valid {
                    Ok(mut report) => {
                        if let State::Open { seq, .. } = &mut self.state {
                            *seq = Some(report_seq);
                        }
                        for (key, _) in &mut report.series {
                            key.side = side;
                        }
                        Action::Merge(Merge {
                            report,
                            now_secs: now_ms.div_euclid(1000),
                        })
                    }
                    Err(rejection) => Action::Refuse(rejection),
                }
            }
            (None, _) => Action::Refuse(Rejection::new(
                "empty",
                "message carries neither Hello nor Report",
            )),
        }
    }

    /// `table` is the newest routing table. Returns the message to send when the filter has
    /// said Hello and holds an older revision; the filter is then taken to hold this one.
    pub fn offer(&mut self, table: &v1::RoutingTable) -> Option<v1::AgentMessage> {
        let State::Open { held, .. } = &mut self.state else {
            return None;
        };
        if table.revision <= *held {
            return None;
        }
        *held = table.revision;
        Some(v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::RoutingTable(table.clone())),
        })
    }
}
