//! Answers `proxy_get_property` as Envoy does for the paths fledge reads: request and response
//! attributes, the upstream cluster, the listener direction, the node (under both `xds.node` and
//! the older top-level `node`), and the plugin's names. Integers are 8-byte little endian,
//! timestamps and durations nanoseconds, strings their bytes.
//!
//! Pure: takes what the host knows about the node and the request as values. Unknown paths are
//! `None` (the host answers NotFound), never an empty success.

use crate::abi::map_get;
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

/// The value of the property at `path` (tokens joined by NUL), or `None` when there is none.
pub(crate) fn lookup(
    path: &[u8],
    proxy: &ProxyFacts,
    request: Option<&RequestFacts>,
) -> Option<Vec<u8>> {
    let path = std::str::from_utf8(path).ok()?;
    let tokens: Vec<&str> = path.split('\0').collect();
    match tokens.as_slice() {
        ["xds", "node", rest @ ..] | ["node", rest @ ..] => node(proxy.node, rest),
        ["listener_direction"] => Some(int(proxy.direction.envoy_code())),
        ["plugin_name"] | ["plugin_root_id"] | ["plugin_vm_id"] => Some(PLUGIN_NAME.into()),
        _ => request_property(&tokens, request?),
    }
}

fn node(node: &NodeInfo, rest: &[&str]) -> Option<Vec<u8>> {
    let text = match rest {
        ["id"] => node.id.as_str(),
        ["metadata", "WORKLOAD_NAME"] => node.workload.as_str(),
        ["metadata", "NAMESPACE"] => node.namespace.as_str(),
        ["metadata", "LABELS", label] => node.labels.get(*label)?.as_str(),
        _ => return None,
    };
    Some(text.as_bytes().to_vec())
}

fn request_property(tokens: &[&str], req: &RequestFacts) -> Option<Vec<u8>> {
    let header = |name: &str| map_get(req.request_headers, name).map(|v| v.as_bytes().to_vec());
    match tokens {
        ["request", "time"] => Some(int(req.start_unix_ns)),
        ["request", "duration"] => Some(int(nanos(req.log?.duration))),
        ["request", "path"] => header(":path"),
        ["request", "host"] => header(":authority"),
        ["request", "method"] => header(":method"),
        ["request", "scheme"] => header(":scheme"),
        ["request", "id"] => header("x-request-id"),
        ["request", "headers", name] => header(name),
        ["response", "code"] => match req.log {
            Some(log) => Some(int(i64::from(log.response_code?))),
            None => Some(int(map_get(req.response_headers, ":status")?
                .parse()
                .ok()?)),
        },
        ["response", "flags"] => Some(req.log?.response_flags.to_le_bytes().to_vec()),
        ["response", "grpc_status"] => Some(int(i64::from(req.log?.grpc_status?))),
        ["response", "headers", name] => {
            map_get(req.response_headers, name).map(|v| v.as_bytes().to_vec())
        }
        ["xds", "cluster_name"] => {
            let log = req.log?;
            (!log.cluster_name.is_empty()).then(|| log.cluster_name.as_bytes().to_vec())
        }
        _ => None,
    }
}

fn int(value: i64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
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
        for (tokens, request, expected) in cases {
            assert_eq!(
                lookup(&path(tokens), &proxy, request),
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
    }
}
