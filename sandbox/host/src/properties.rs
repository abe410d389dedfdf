//! Answers `proxy_get_property` as Envoy does for the paths fledge reads: request and response
//! attributes, the upstream cluster, the listener direction, the node (under both `xds.node` and
//! the older top-level `node`), and the plugin's names. Integers are 8-byte little endian,
//! timestamps and durations nanoseconds, strings their bytes; [`Value::encode`] also writes
//! numbers as other hosts do ([`PropertyForm`]).
//!
//! Pure: takes what the host knows about the node and the request as values. Unknown paths are
//! `None` (the host answers NotFound), never an empty success.

use std::io::Write;

use crate::abi::map_get;
use crate::quirks::PropertyForm;
use crate::{ListenerDirection, LogInfo, NodeInfo};

/// The plugin's name, root id and VM id (`plugin_name`, `plugin_root_id`, `plugin_vm_id`).
pub(crate) const PLUGIN_NAME: &str = "fledge";

/// What is known about the proxy, for every context.
pub(crate) struct ProxyFacts<'a> {
    pub node: &'a NodeInfo,
    pub direction: ListenerDirection,
}

/// What is known about one request, for HTTP contexts.
pub(crate) struct RequestFacts<'a> {
    pub start_unix_ns: i64,
    pub request_headers: &'a [(String, String)],
    pub response_headers: &'a [(String, String)],
    /// Set from `on_log` on.
    pub log: Option<&'a LogInfo>,
}

/// A property's value: numbers stay on the stack, strings are copied once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// An integer: `response.code`, `response.grpc_status`, `listener_direction`.
    Int(i64),
    /// Bits: `response.flags`.
    Bits(u64),
    /// A duration in nanoseconds: `request.duration`.
    Duration(i64),
    /// A point in time in nanoseconds since the epoch: `request.time`.
    Time(i64),
    Bytes(Vec<u8>),
}

/// Room for any number [`Value::encode`] writes (20 digits, a sign and a fraction).
pub(crate) type NumberBuffer = [u8; 32];

impl Value {
    /// The bytes the host writes for this value in `form`; numbers are written into `buffer`.
    /// [`PropertyForm::Mixed`] is resolved by the caller ([`PropertyForm::nth`]); here it is
    /// Envoy's form.
    pub(crate) fn encode<'a>(
        &'a self,
        form: PropertyForm,
        buffer: &'a mut NumberBuffer,
    ) -> &'a [u8] {
        let bits = match *self {
            Value::Bytes(ref bytes) => return bytes,
            Value::Int(n) | Value::Duration(n) | Value::Time(n) => n as u64,
            Value::Bits(bits) => bits,
        };
        let len = match form {
            PropertyForm::Envoy | PropertyForm::Mixed => {
                buffer[..8].copy_from_slice(&bits.to_le_bytes());
                8
            }
            PropertyForm::WrongSize => {
                buffer[..4].copy_from_slice(&bits.to_le_bytes()[..4]);
                4
            }
            PropertyForm::Text => {
                let capacity = buffer.len();
                let mut out = &mut buffer[..];
                let written = match *self {
                    Value::Int(n) => write!(out, "{n}"),
                    Value::Bits(bits) => write!(out, "{bits}"),
                    // Seconds with milliseconds, as nginx writes `$request_time` and `$msec`.
                    Value::Duration(ns) | Value::Time(ns) => {
                        let sign = if ns < 0 { "-" } else { "" };
                        let ns = ns.unsigned_abs();
                        let (seconds, ms) = (ns / 1_000_000_000, ns % 1_000_000_000 / 1_000_000);
                        write!(out, "{sign}{seconds}.{ms:03}")
                    }
                    Value::Bytes(_) => Ok(()),
                };
                debug_assert!(written.is_ok(), "32 bytes hold any number written here");
                capacity - out.len()
            }
        };
        &buffer[..len]
    }
}

/// The longest path any property here has (`xds.node.metadata.LABELS.<label>`).
const MAX_TOKENS: usize = 5;

/// The value of the property at `path` (tokens joined by NUL), or `None` when there is none.
pub(crate) fn lookup(
    path: &[u8],
    proxy: &ProxyFacts,
    request: Option<&RequestFacts>,
) -> Option<Value> {
    let mut tokens = [""; MAX_TOKENS];
    let mut count = 0;
    for token in path.split(|&b| b == 0) {
        *tokens.get_mut(count)? = std::str::from_utf8(token).ok()?;
        count += 1;
    }
    let tokens = tokens.get(..count)?;
    match tokens {
        ["xds", "node", rest @ ..] | ["node", rest @ ..] => node(proxy.node, rest),
        ["listener_direction"] => Some(Value::Int(proxy.direction.envoy_code())),
        ["plugin_name"] | ["plugin_root_id"] | ["plugin_vm_id"] => {
            Some(Value::Bytes(PLUGIN_NAME.into()))
        }
        _ => request_property(tokens, request?),
    }
}

fn node(node: &NodeInfo, rest: &[&str]) -> Option<Value> {
    let text = match rest {
        ["id"] => node.id.as_str(),
        ["metadata", "WORKLOAD_NAME"] => node.workload.as_str(),
        ["metadata", "NAMESPACE"] => node.namespace.as_str(),
        ["metadata", "LABELS", label] => node.labels.get(*label)?.as_str(),
        _ => return None,
    };
    Some(Value::Bytes(text.as_bytes().to_vec()))
}

fn request_property(tokens: &[&str], req: &RequestFacts) -> Option<Value> {
    let header =
        |name: &str| map_get(req.request_headers, name).map(|v| Value::Bytes(v.as_bytes().into()));
    match tokens {
        ["request", "time"] => Some(Value::Time(req.start_unix_ns)),
        ["request", "duration"] => Some(Value::Duration(nanos(req.log?.duration))),
        ["request", "path"] => header(":path"),
        ["request", "host"] => header(":authority"),
        ["request", "method"] => header(":method"),
        ["request", "scheme"] => header(":scheme"),
        ["request", "id"] => header("x-request-id"),
        ["request", "headers", name] => header(name),
        ["response", "code"] => match req.log {
            Some(log) => Some(Value::Int(i64::from(log.response_code?))),
            None => Some(Value::Int(
                map_get(req.response_headers, ":status")?.parse().ok()?,
            )),
        },
        ["response", "flags"] => Some(Value::Bits(req.log?.response_flags)),
        ["response", "grpc_status"] => {
            // As Envoy: the `grpc-status` of trailers or headers, else one inferred from the
            // HTTP status for any request, gRPC or not (so 200 without one is Unknown).
            let log = req.log?;
            let status = log
                .grpc_status
                .or_else(|| log.response_code.map(http_to_grpc_status))?;
            Some(Value::Int(i64::from(status)))
        }
        ["response", "headers", name] => {
            map_get(req.response_headers, name).map(|v| Value::Bytes(v.as_bytes().into()))
        }
        ["xds", "cluster_name"] => {
            let log = req.log?;
            (!log.cluster_name.is_empty()).then(|| Value::Bytes(log.cluster_name.as_bytes().into()))
        }
        _ => None,
    }
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus` (gRPC's HTTP-to-status mapping).
fn http_to_grpc_status(code: u16) -> i32 {
    match code {
        400 => 13,                   // Internal
        401 => 16,                   // Unauthenticated
        403 => 7,                    // PermissionDenied
        404 => 12,                   // Unimplemented
        429 | 502 | 503 | 504 => 14, // Unavailable
        _ => 2,                      // Unknown
    }
}

fn nanos(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn path(tokens: &[&str]) -> Vec<u8> {
        tokens.join("\0").into_bytes()
    }

    #[test]
    fn answers_envoy_paths() {
        let node = NodeInfo {
            id: "sidecar~1~reviews-v1.shop~shop".into(),
            workload: "reviews-v1".into(),
            namespace: "shop".into(),
            labels: [("version".to_string(), "v1".to_string())].into(),
        };
        let proxy = ProxyFacts {
            node: &node,
            direction: ListenerDirection::Inbound,
        };
        let request_headers = vec![(":authority".to_string(), "reviews".to_string())];
        let response_headers = vec![(":status".to_string(), "503".to_string())];
        let log = LogInfo {
            duration: Duration::from_micros(1500),
            response_code: Some(200),
            response_flags: 0x24,
            grpc_status: Some(14),
            cluster_name: "outbound|80|v2|reviews".into(),
        };
        let before_log = RequestFacts {
            start_unix_ns: 7,
            request_headers: &request_headers,
            response_headers: &response_headers,
            log: None,
        };
        let at_log = RequestFacts {
            log: Some(&log),
            ..before_log
        };
        let before_log = RequestFacts {
            log: None,
            ..at_log
        };
        let s = |v: &str| Some(v.as_bytes().to_vec());
        let i = |v: i64| Some(v.to_le_bytes().to_vec());
        type Case<'a> = (&'a [&'a str], Option<&'a RequestFacts<'a>>, Option<Vec<u8>>);
        let cases: Vec<Case> = vec![
            (
                &["xds", "node", "id"],
                None,
                s("sidecar~1~reviews-v1.shop~shop"),
            ),
            (&["node", "id"], None, s("sidecar~1~reviews-v1.shop~shop")),
            (
                &["xds", "node", "metadata", "WORKLOAD_NAME"],
                None,
                s("reviews-v1"),
            ),
            (&["node", "metadata", "NAMESPACE"], None, s("shop")),
            (
                &["xds", "node", "metadata", "LABELS", "version"],
                None,
                s("v1"),
            ),
            (&["node", "metadata", "LABELS", "app"], None, None),
            (&["listener_direction"], None, i(1)),
            (&["plugin_vm_id"], None, s(PLUGIN_NAME)),
            (&["request", "time"], None, None),
            (&["request", "time"], Some(&before_log), i(7)),
            (&["request", "host"], Some(&before_log), s("reviews")),
            (&["request", "duration"], Some(&before_log), None),
            (&["request", "duration"], Some(&at_log), i(1_500_000)),
            (&["response", "code"], Some(&before_log), i(503)),
            (&["response", "code"], Some(&at_log), i(200)),
            (
                &["response", "flags"],
                Some(&at_log),
                Some(0x24u64.to_le_bytes().to_vec()),
            ),
            (&["response", "grpc_status"], Some(&at_log), i(14)),
            (
                &["xds", "cluster_name"],
                Some(&at_log),
                s("outbound|80|v2|reviews"),
            ),
            (&["xds", "cluster_name"], Some(&before_log), None),
            (&["no", "such"], Some(&at_log), None),
        ];
        let envoy = |v: Value| v.encode(PropertyForm::Envoy, &mut [0; 32]).to_vec();
        for (tokens, request, expected) in cases {
            assert_eq!(
                lookup(&path(tokens), &proxy, request).map(envoy),
                expected,
                "{tokens:?}"
            );
        }
        let no_response = LogInfo {
            response_code: None,
            grpc_status: None,
            ..log.clone()
        };
        let reset = RequestFacts {
            log: Some(&no_response),
            ..before_log
        };
        assert_eq!(
            lookup(&path(&["response", "code"]), &proxy, Some(&reset)),
            None
        );
        assert_eq!(
            lookup(&path(&["response", "grpc_status"]), &proxy, Some(&reset)),
            None
        );
        // Without a grpc-status, Envoy infers one from the HTTP status, for any request.
        for (code, inferred) in [(200, 2), (404, 12), (503, 14), (400, 13)] {
            let plain = LogInfo {
                response_code: Some(code),
                grpc_status: None,
                ..log.clone()
            };
            let facts = RequestFacts {
                log: Some(&plain),
                ..before_log
            };
            assert_eq!(
                lookup(&path(&["response", "grpc_status"]), &proxy, Some(&facts)).map(envoy),
                i(inferred),
                "{code}"
            );
        }
    }

    #[test]
    fn numbers_are_written_in_each_hosts_form() {
        use PropertyForm::*;
        let cases = [
            (Value::Int(503), Envoy, 503i64.to_le_bytes().to_vec()),
            (Value::Int(503), Text, b"503".to_vec()),
            (Value::Int(503), WrongSize, vec![0xf7, 0x01, 0, 0]),
            (Value::Bits(0x24), Text, b"36".to_vec()),
            (Value::Bits(u64::MAX), Envoy, vec![0xff; 8]),
            (Value::Duration(254_000_000), Text, b"0.254".to_vec()),
            (Value::Duration(1_500_000), Text, b"0.001".to_vec()),
            (Value::Duration(90_500_000_000), Text, b"90.500".to_vec()),
            (
                Value::Duration(254_000_000),
                Envoy,
                254_000_000i64.to_le_bytes().to_vec(),
            ),
            (
                Value::Time(1_718_000_000_123_456_789),
                Text,
                b"1718000000.123".to_vec(),
            ),
            (Value::Time(-1_500_000_000), Text, b"-1.500".to_vec()),
            (
                Value::Int(i64::MIN),
                Text,
                i64::MIN.to_string().into_bytes(),
            ),
            (Value::Bytes(b"v2".to_vec()), Text, b"v2".to_vec()),
            (Value::Bytes(b"v2".to_vec()), WrongSize, b"v2".to_vec()),
        ];
        for (value, form, expected) in cases {
            let mut buffer = [0; 32];
            assert_eq!(
                value.encode(form, &mut buffer),
                expected,
                "{value:?} {form:?}"
            );
        }
    }
}
