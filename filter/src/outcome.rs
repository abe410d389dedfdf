//! What a finished request did, told from the properties Envoy gives at `on_log`: its latency,
//! status class, gRPC status, and whether it ended in a reset or a timeout (Envoy's legacy
//! response flag bits), and which version served it (the routing decision, the subset in the
//! upstream cluster name, or the workload's own label).
//!
//! This module only interprets values; the plugin adapter reads them from the host.

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

/// The facts about one finished request, as read from the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// `request.duration` in nanoseconds, when the host had it.
    pub duration_ns: Option<u64>,
    /// `response.code`; `None` (or 0) when no response was sent.
    pub response_code: Option<u16>,
    /// `response.flags`.
    pub response_flags: u64,
    /// `response.grpc_status`, read only for gRPC requests ([`is_grpc`]): Envoy answers it for
    /// every request, inferring a status from the HTTP code when there is no `grpc-status`
    /// (200 becomes Unknown), so for plain HTTP it would count every request as a gRPC error.
    pub grpc_status: Option<i32>,
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
            latency_us: facts.duration_ns.map_or(0, |ns| ns / 1000),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_requests_are_told_by_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-web+proto",
            "Application/GRPC",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(yes.as_bytes()), "{yes}");
        }
        for no in [
            "",
            "application/json",
            "application/grpcx",
            "application/gr",
            "text/application/grpc",
        ] {
            assert!(!is_grpc(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn outcomes_are_classified_from_code_grpc_status_and_flags() {
        let cases = [
            // (code, grpc, flags, 5xx, 4xx, grpc_err, reset, timeout)
            (Some(200), None, 0, false, false, false, false, false),
            (
                Some(503),
                None,
                flags::UPSTREAM_CONNECTION_FAILURE,
                true,
                false,
                false,
                true,
                false,
            ),
            (
                Some(504),
                None,
                flags::UPSTREAM_REQUEST_TIMEOUT,
                true,
                false,
                false,
                false,
                true,
            ),
            (Some(404), None, 0, false, true, false, false, false),
            (Some(200), Some(14), 0, false, false, true, false, false),
            (Some(200), Some(0), 0, false, false, false, false, false),
            (
                None,
                None,
                flags::UPSTREAM_REMOTE_RESET,
                false,
                false,
                false,
                true,
                false,
            ),
            (
                Some(0),
                None,
                flags::DURATION_TIMEOUT,
                false,
                false,
                false,
                false,
                true,
            ),
            (
                Some(499),
                None,
                flags::STREAM_IDLE_TIMEOUT,
                false,
                true,
                false,
                false,
                true,
            ),
            (
                Some(200),
                None,
                0x100, /* NR: not ours */
                false,
                false,
                false,
                false,
                false,
            ),
        ];
        for (code, grpc, fl, e5, e4, ge, reset, timeout) in cases {
            let o = Outcome::of(&Facts {
                duration_ns: Some(2_500_000),
                response_code: code,
                response_flags: fl,
                grpc_status: grpc,
            });
            let got = (o.error_5xx, o.error_4xx, o.grpc_error, o.reset, o.timeout);
            assert_eq!(
                got,
                (e5, e4, ge, reset, timeout),
                "{code:?} {grpc:?} {fl:#x}"
            );
            assert_eq!(o.latency_us, 2500);
        }
    }

    #[test]
    fn version_comes_from_decision_then_cluster_then_label() {
        let cases = [
            (Some("v3"), Some("outbound|80|v2|reviews"), Some("v1"), "v3"),
            (
                None,
                Some("outbound|80|v2|reviews.shop.svc.cluster.local"),
                Some("v1"),
                "v2",
            ),
            (None, Some("outbound|80||reviews"), Some("v1"), "v1"),
            (None, Some("inbound|9080||"), Some("v1"), "v1"),
            (None, Some("PassthroughCluster"), None, "unknown"),
            (None, None, None, "unknown"),
            (None, None, Some(""), "unknown"),
        ];
        for (decided, cluster, label, expected) in cases {
            assert_eq!(
                version_of(decided, cluster, label),
                expected,
                "{decided:?} {cluster:?}"
            );
        }
    }
}
