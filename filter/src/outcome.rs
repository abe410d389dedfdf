//! What a finished request did, told from the properties the proxy gives at `on_log`: its
//! latency, status class, gRPC status, and whether it ended in a reset or a timeout (Envoy's
//! legacy response flag bits), and which version served it (the routing decision, the subset in
//! the upstream cluster name, or the workload's own label).
//!
//! A request is measured only when every fact it needs was there and readable ([`Facts::read`]);
//! otherwise it is [`Unmeasured`], and counted as such: never recorded as a latency of 0 or as a
//! success.
//!
//! This module only interprets values; the plugin adapter reads them from the host through
//! [`Properties`].

use crate::property;

#[cfg(test)]
mod tests;

/// Envoy's legacy response flag bits (`StreamInfo::ResponseFlag`) the filter looks at.
pub mod flags {
    /// UT: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// LR: local codec-level reset.
    pub const LOCAL_RESET: u64 = 0x8;
    /// UR: upstream remote reset.
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    /// UF: upstream connection failure.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// UC: upstream connection termination.
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// SI: stream idle timeout.
    pub const STREAM_IDLE_TIMEOUT: u64 = 0x10000;
    /// UMSDR: upstream max stream duration reached.
    pub const UPSTREAM_MAX_STREAM_DURATION: u64 = 0x80000;
    /// DT: request exceeded the downstream duration timeout.
    pub const DURATION_TIMEOUT: u64 = 0x40_0000;
    /// UPE: upstream protocol error.
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;

    /// Flags that mean the request ended in a reset or found no upstream connection.
    pub const RESETS: u64 = LOCAL_RESET
        | UPSTREAM_REMOTE_RESET
        | UPSTREAM_CONNECTION_FAILURE
        | UPSTREAM_CONNECTION_TERMINATION
        | UPSTREAM_PROTOCOL_ERROR;
    /// Flags that mean the request timed out.
    pub const TIMEOUTS: u64 = UPSTREAM_REQUEST_TIMEOUT
        | STREAM_IDLE_TIMEOUT
        | UPSTREAM_MAX_STREAM_DURATION
        | DURATION_TIMEOUT;
}

/// The property paths read at `on_log` (tokens joined by NUL).
pub mod paths {
    pub const DURATION: &[u8] = b"request\0duration";
    pub const START_TIME: &[u8] = b"request\0time";
    pub const RESPONSE_CODE: &[u8] = b"response\0code";
    pub const RESPONSE_FLAGS: &[u8] = b"response\0flags";
    pub const GRPC_STATUS: &[u8] = b"response\0grpc_status";
}

/// The properties a finished request is told from, as the host answers them.
pub trait Properties {
    /// The value of the property at `path` (one of [`paths`]); `None` when the host has none.
    fn get(&self, path: &[u8]) -> Option<Vec<u8>>;
    /// The host's clock in nanoseconds since the epoch; `None` when it does not answer.
    fn now_ns(&self) -> Option<u64>;
}

/// Why a finished request could not be measured: what was missing or unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmeasured {
    /// Neither `request.duration`, nor `request.time` with the host's clock, gave a latency.
    Latency,
    /// `response.code` was unreadable, or absent with no response flag saying why.
    ResponseCode,
    /// `response.flags` was unreadable.
    ResponseFlags,
    /// A gRPC request's `response.grpc_status` was unreadable, or absent after a response.
    GrpcStatus,
}

/// The facts about one finished request, as read from the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// `request.duration` in nanoseconds (or the time since `request.time`).
    pub duration_ns: u64,
    /// `response.code`; `None` when no response was sent (then a flag says why).
    pub response_code: Option<u16>,
    /// `response.flags`; 0 when the host has no such property.
    pub response_flags: u64,
    /// `response.grpc_status`, read only for gRPC requests ([`is_grpc`]): Envoy answers it for
    /// every request, inferring a status from the HTTP code when there is no `grpc-status`
    /// (200 becomes Unknown), so for plain HTTP it would count every request as a gRPC error.
    pub grpc_status: Option<i32>,
}

impl Facts {
    /// Reads the facts of a finished request from `properties`; `grpc` says whether it was a
    /// gRPC request. Numbers may come as Envoy's 8-byte integers or as ASCII decimal
    /// ([`crate::property`]). `request.time` is read only when `request.duration` gives nothing,
    /// `response.grpc_status` only for gRPC requests.
    pub fn read(properties: &impl Properties, grpc: bool) -> Result<Facts, Unmeasured> {
        let duration_ns = properties
            .get(paths::DURATION)
            .and_then(|bytes| property::duration_ns(&bytes))
            .or_else(|| {
                let start = property::timestamp_ns(&properties.get(paths::START_TIME)?)?;
                let now = i64::try_from(properties.now_ns()?).ok()?;
                u64::try_from(now.checked_sub(start)?).ok()
            })
            .ok_or(Unmeasured::Latency)?;
        let response_flags = match properties.get(paths::RESPONSE_FLAGS) {
            Some(bytes) => property::unsigned(&bytes).ok_or(Unmeasured::ResponseFlags)?,
            None => 0,
        };
        let response_code = match properties.get(paths::RESPONSE_CODE) {
            Some(bytes) => {
                let code = property::integer(&bytes).ok_or(Unmeasured::ResponseCode)?;
                let code = u16::try_from(code).map_err(|_| Unmeasured::ResponseCode)?;
                (code != 0).then_some(code)
            }
            None => None,
        };
        // Without a response, only a flag can say how the request ended.
        if response_code.is_none() && response_flags & (flags::RESETS | flags::TIMEOUTS) == 0 {
            return Err(Unmeasured::ResponseCode);
        }
        let grpc_status = if grpc {
            match properties.get(paths::GRPC_STATUS) {
                Some(bytes) => {
                    let status = property::integer(&bytes).ok_or(Unmeasured::GrpcStatus)?;
                    Some(i32::try_from(status).map_err(|_| Unmeasured::GrpcStatus)?)
                }
                None if response_code.is_some() => return Err(Unmeasured::GrpcStatus),
                None => None,
            }
        } else {
            None
        };
        Ok(Facts {
            duration_ns,
            response_code,
            response_flags,
            grpc_status,
        })
    }
}

/// The classes one request counts in; several may hold at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub latency_us: u64,
    pub error_5xx: bool,
    pub error_4xx: bool,
    pub grpc_error: bool,
    pub reset: bool,
    pub timeout: bool,
}

impl Outcome {
    /// Failed by any measure but 4xx (a client's mistake is not the version's failure).
    pub fn failed(&self) -> bool {
        self.error_5xx || self.grpc_error || self.reset || self.timeout
    }

    pub fn of(facts: &Facts) -> Outcome {
        let code = facts.response_code.unwrap_or(0);
        Outcome {
            latency_us: facts.duration_ns / 1000,
            error_5xx: (500..=599).contains(&code),
            error_4xx: (400..=499).contains(&code),
            grpc_error: facts.grpc_status.is_some_and(|s| s != 0),
            reset: facts.response_flags & flags::RESETS != 0,
            timeout: facts.response_flags & flags::TIMEOUTS != 0,
        }
    }
}

/// Whether a request is gRPC, from its `content-type` (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web…`), as Envoy's own gRPC checks tell.
pub fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type
        .get(..GRPC.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(GRPC))
        && matches!(
            content_type.get(GRPC.len()),
            None | Some(b'+' | b'-' | b';')
        )
}

/// The subset of an Envoy cluster name `outbound|80|v2|reviews.shop.svc.cluster.local`: `v2`.
/// `None` for clusters without one (`inbound|9080||`, `outbound|80||host`, `PassthroughCluster`).
pub fn cluster_subset(cluster_name: &str) -> Option<&str> {
    let mut parts = cluster_name.split('|');
    let direction = parts.next()?;
    if direction != "outbound" && direction != "inbound" {
        return None;
    }
    let _port = parts.next()?;
    let subset = parts.next()?;
    (!subset.is_empty()).then_some(subset)
}

/// The version a finished request is counted under, from the best source available: the
/// routing decision, then the subset of the upstream cluster, then (server role) the workload's
/// own `version` label, else `"unknown"`.
pub fn version_of<'a>(
    decided: Option<&'a str>,
    cluster_name: Option<&'a str>,
    own_label: Option<&'a str>,
) -> &'a str {
    decided
        .or_else(|| cluster_name.and_then(cluster_subset))
        .or(own_label)
        .filter(|v| !v.is_empty())
        .unwrap_or("unknown")
}
