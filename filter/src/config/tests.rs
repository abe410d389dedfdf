use super::*;
use crate::routing::{Match, Split};

const AGENT: &str =
    r#""agent": {"cluster": "outbound|9090||fledge-agent.fledge-system.svc.cluster.local"}"#;

/// A configuration with every field (the table in config.rs's documentation).
const FULL: &str = r#"{
  "agent": {
    "cluster": "outbound|9090||fledge-agent.fledge-system.svc.cluster.local",
    "authority": "fledge-agent.fledge-system.svc.cluster.local",
    "timeout_ms": 0
  },
  "report_interval_ms": 1000,
  "version_header": "x-fledge-version",
  "role": "auto",
  "sticky_key": {"header": "x-user-id"},
  "routes": [
    {
      "host": "reviews.shop.svc.cluster.local",
      "version_header": "x-fledge-version",
      "rules": [
        {"header": {"name": "x-beta", "exact": "1"}, "version": "v2"},
        {"header": {"name": "x-group", "prefix": "beta-"}, "version": "v2"},
        {"header": {"name": "x-canary", "present": true}, "version": "v2"},
        {"cookie": {"name": "beta", "value": "yes"}, "version": "v2"}
      ],
      "split": {"stable": "v1", "canary": "v2", "canary_basis_points": 1000},
      "sticky_key": {"cookie": "session"}
    }
  ],
  "limits": {"max_series": 256},
  "clear_route_cache": false
}"#;

#[test]
fn the_documented_example_parses() {
    let c = Config::parse(FULL.as_bytes()).unwrap();
    assert_eq!(
        c.agent.cluster,
        "outbound|9090||fledge-agent.fledge-system.svc.cluster.local"
    );
    assert_eq!(
        c.agent.authority.as_deref(),
        Some("fledge-agent.fledge-system.svc.cluster.local")
    );
    assert_eq!(
        (c.report_interval_ms, c.role, c.max_series),
        (1000, Role::Auto, 256)
    );
    assert!(!c.clear_route_cache);
    assert_eq!(
        c.defaults.sticky_key,
        Some(StickyKey::Header("x-user-id".into()))
    );
    assert_eq!(c.table.revision, 0);
    let route = &c.table.routes[0];
    assert_eq!(route.sticky_key, Some(StickyKey::Cookie("session".into())));
    assert_eq!(route.rules.len(), 4);
    assert_eq!(
        route.rules[2].matcher,
        Match::HeaderPresent {
            name: "x-canary".into(),
            present: true
        }
    );
    assert_eq!(
        route.split,
        Some(Split {
            stable: "v1".into(),
            canary: "v2".into(),
            canary_basis_points: 1000
        })
    );
}

#[test]
fn only_the_agent_cluster_is_required() {
    let c = Config::parse(format!("{{{AGENT}}}").as_bytes()).unwrap();
    assert_eq!(
        (c.report_interval_ms, c.role, c.max_series),
        (1000, Role::Auto, 256)
    );
    assert_eq!(c.defaults.version_header, "x-fledge-version");
    assert_eq!(c.agent.timeout_ms, 0);
    assert!(c.table.routes.is_empty());
    assert!(c.clear_route_cache);
    // Header names are taken in any case and kept lower case.
    let c = Config::parse(
        format!(r#"{{{AGENT}, "version_header": "X-Version", "role": "server"}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(
        (c.defaults.version_header.as_str(), c.role),
        ("x-version", Role::Server)
    );
}

/// Each rejected field, with the message an operator sees.
#[test]
fn every_rejected_field_is_named_with_its_reason() {
    let route = |body: &str| format!(r#"{{{AGENT}, "routes": [{{"host": "a"}}, {body}]}}"#);
    let cases: Vec<(String, &str)> = vec![
        (
            "".into(),
            "configuration: is empty; at least agent.cluster is required",
        ),
        (
            "{}".into(),
            "configuration: missing field `agent` at line 1 column 2",
        ),
        (
            "1".into(),
            "configuration: invalid type: integer `1`, expected a JSON object with the fledge filter configuration at line 1 column 1",
        ),
        ("{\"agent\": {}}".into(), "agent: missing field `cluster`"),
        (
            format!("{{{AGENT}}} x"),
            "configuration: trailing characters at line 1 column 87",
        ),
        (
            format!(r#"{{{AGENT}, "colour": 1}}"#),
            "colour: unknown field `colour`, expected one of `agent`, `report_interval_ms`, `version_header`, `role`, `sticky_key`, `routes`, `limits`, `clear_route_cache`",
        ),
        (
            r#"{"agent": {"cluster": "c", "port": 1}}"#.into(),
            "agent.port: unknown field `port`, expected one of `cluster`, `authority`, `timeout_ms`",
        ),
        (
            r#"{"agent": {"cluster": ""}}"#.into(),
            "agent.cluster: is empty",
        ),
        (
            r#"{"agent": {"cluster": "a b"}}"#.into(),
            "agent.cluster: \"a b\" is not an Envoy cluster name",
        ),
        (
            r#"{"agent": {"cluster": "c", "authority": ""}}"#.into(),
            "agent.authority: is empty",
        ),
        (
            r#"{"agent": {"cluster": "c", "authority": "x y"}}"#.into(),
            "agent.authority: \"x y\" is not an authority",
        ),
        (
            r#"{"agent": {"cluster": "c", "timeout_ms": -1}}"#.into(),
            "agent.timeout_ms: invalid value: integer `-1`, expected u64",
        ),
        (
            r#"{"agent": {"cluster": "c", "timeout_ms": 315576000000001}}"#.into(),
            "agent.timeout_ms: 315576000000001 is over 315576000000000 (10,000 years)",
        ),
        (
            format!(r#"{{{AGENT}, "clear_route_cache": "no"}}"#),
            "clear_route_cache: invalid type: string \"no\", expected a boolean",
        ),
        (
            format!(r#"{{{AGENT}, "report_interval_ms": 50}}"#),
            "report_interval_ms: 50 is under 100",
        ),
        (
            format!(r#"{{{AGENT}, "report_interval_ms": 60001}}"#),
            "report_interval_ms: 60001 is over 60000",
        ),
        (
            format!(r#"{{{AGENT}, "report_interval_ms": "1s"}}"#),
            "report_interval_ms: invalid type: string \"1s\", expected u64",
        ),
        (
            format!(r#"{{{AGENT}, "version_header": ""}}"#),
            "version_header: is empty",
        ),
        (
            format!(r#"{{{AGENT}, "version_header": ":path"}}"#),
            "version_header: \":path\" is not a header name",
        ),
        (
            format!(r#"{{{AGENT}, "role": "both"}}"#),
            "role: unknown variant `both`, expected one of `auto`, `client`, `server`",
        ),
        (
            format!(r#"{{{AGENT}, "sticky_key": {{}}}}"#),
            "sticky_key: needs exactly one of header or cookie",
        ),
        (
            format!(r#"{{{AGENT}, "sticky_key": {{"header": "a", "cookie": "b"}}}}"#),
            "sticky_key: needs exactly one of header or cookie",
        ),
        (
            format!(r#"{{{AGENT}, "sticky_key": {{"header": "a b"}}}}"#),
            "sticky_key.header: \"a b\" is not a header name",
        ),
        (
            format!(r#"{{{AGENT}, "sticky_key": {{"cookie": ""}}}}"#),
            "sticky_key.cookie: is empty",
        ),
        (
            format!(r#"{{{AGENT}, "sticky_key": {{"query": "u"}}}}"#),
            "sticky_key.query: unknown field `query`, expected `header` or `cookie`",
        ),
        (
            format!(r#"{{{AGENT}, "limits": {{"max_series": 0}}}}"#),
            "limits.max_series: 0 is under 1",
        ),
        (
            format!(r#"{{{AGENT}, "limits": {{"max_series": 5000}}}}"#),
            "limits.max_series: 5000 is over 4096",
        ),
        (
            format!(r#"{{{AGENT}, "limits": {{"max_hosts": 5}}}}"#),
            "limits.max_hosts: unknown field `max_hosts`, expected `max_series`",
        ),
        (route(r#"{"host": ""}"#), "routes[1].host: is empty"),
        (
            route(r#"{"host": "a"}"#),
            "routes[1].host: \"a\" is also routes[0].host",
        ),
        (
            route(r#"{"host": "A"}"#),
            "routes[1].host: \"a\" is also routes[0].host",
        ),
        (
            route(r#"{"host": "b:80"}"#),
            "routes[1].host: \"b:80\" must not include a port",
        ),
        (
            route(r#"{"host": "b/c"}"#),
            "routes[1].host: \"b/c\" is not a host name",
        ),
        (
            route(r#"{"hosts": "b"}"#),
            "routes[1].hosts: unknown field `hosts`, expected one of `host`, `version_header`, `rules`, `split`, `sticky_key`",
        ),
        (
            route(r#"{"host": "b", "version_header": ""}"#),
            "routes[1].version_header: is empty",
        ),
        (
            route(r#"{"host": "b", "version_header": "x y"}"#),
            "routes[1].version_header: \"x y\" is not a header name",
        ),
        (
            route(r#"{"host": "b", "sticky_key": {"header": "h", "cookie": "c"}}"#),
            "routes[1].sticky_key: needs exactly one of header or cookie",
        ),
        (
            route(r#"{"host": "b", "rules": [{"version": "v2"}]}"#),
            "routes[1].rules[0]: needs exactly one of header or cookie",
        ),
        (
            route(
                r#"{"host": "b", "rules": [{"header": {"name": "h", "exact": "1"}, "cookie": {"name": "c", "value": "1"}, "version": "v2"}]}"#,
            ),
            "routes[1].rules[0]: needs exactly one of header or cookie",
        ),
        (
            route(r#"{"host": "b", "rules": [{"header": {"name": "h"}, "version": "v2"}]}"#),
            "routes[1].rules[0].header: needs exactly one of exact, prefix or present",
        ),
        (
            route(
                r#"{"host": "b", "rules": [{"header": {"name": "h", "exact": "1", "prefix": "2"}, "version": "v2"}]}"#,
            ),
            "routes[1].rules[0].header: needs exactly one of exact, prefix or present",
        ),
        (
            route(
                r#"{"host": "b", "rules": [{"header": {"name": "", "exact": "1"}, "version": "v2"}]}"#,
            ),
            "routes[1].rules[0].header.name: is empty",
        ),
        (
            route(
                r#"{"host": "b", "rules": [{"header": {"name": "h", "regex": "1"}, "version": "v2"}]}"#,
            ),
            "routes[1].rules[0].header.regex: unknown field `regex`, expected one of `name`, `exact`, `prefix`, `present`",
        ),
        (
            route(
                r#"{"host": "b", "rules": [{"cookie": {"name": "", "value": "1"}, "version": "v2"}]}"#,
            ),
            "routes[1].rules[0].cookie.name: is empty",
        ),
        (
            route(r#"{"host": "b", "rules": [{"cookie": {"name": "c"}, "version": "v2"}]}"#),
            "routes[1].rules[0].cookie: missing field `value`",
        ),
        (
            route(
                r#"{"host": "b", "rules": [{"cookie": {"name": "c", "value": "1"}, "version": ""}]}"#,
            ),
            "routes[1].rules[0].version: is empty",
        ),
        (
            route(
                r#"{"host": "b", "rules": [{"cookie": {"name": "c", "value": "1"}, "version": "v 2"}]}"#,
            ),
            "routes[1].rules[0].version: \"v 2\" is not a version name",
        ),
        (
            route(
                r#"{"host": "b", "split": {"stable": "v1", "canary": "v2", "canary_basis_points": 12000}}"#,
            ),
            "routes[1].split.canary_basis_points: 12000 is over 10000",
        ),
        (
            route(
                r#"{"host": "b", "split": {"stable": "v1", "canary": "v2", "canary_basis_points": -1}}"#,
            ),
            "routes[1].split.canary_basis_points: invalid value: integer `-1`, expected u32",
        ),
        (
            route(
                r#"{"host": "b", "split": {"stable": "", "canary": "v2", "canary_basis_points": 1}}"#,
            ),
            "routes[1].split.stable: is empty",
        ),
        (
            route(
                r#"{"host": "b", "split": {"stable": "v1", "canary": "", "canary_basis_points": 1}}"#,
            ),
            "routes[1].split.canary: is empty",
        ),
        (
            route(r#"{"host": "b", "split": {"stable": "v1", "canary": "v2"}}"#),
            "routes[1].split: missing field `canary_basis_points`",
        ),
    ];
    let mut wrong = Vec::new();
    for (json, expected) in &cases {
        match Config::parse(json.as_bytes()) {
            Err(err @ Error::Config { .. }) if err.to_string() == *expected => {}
            other => wrong.push(format!(
                "{json}\n  expected {expected}\n  got      {other:?}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = crate::routing::Rng::new(2024);
    let valid = FULL.as_bytes();
    for i in 0..20_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = (rng.next_u64() % 300) as usize;
            (0..len).map(|_| rng.next_u64() as u8).collect()
        } else {
            // Mutate the valid document so parsing gets deep before failing.
            let mut b = valid.to_vec();
            for _ in 0..(1 + rng.next_u64() % 4) {
                let at = (rng.next_u64() as usize) % b.len();
                b[at] = rng.next_u64() as u8;
            }
            b
        };
        if let Err(e) = Config::parse(&bytes) {
            assert!(!e.to_string().is_empty());
        }
    }
}
