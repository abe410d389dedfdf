use super::*;

const CONFIG: &str = r#"
listen: 127.0.0.1:15001
virtualService: vs.yaml
agent: 127.0.0.1:50051
filter:
  module: filter.wasm
  config: {agent: {cluster: "outbound|9090||fledge-agent"}, role: auto}
  node: {workload: productpage, labels: {app: productpage}}
destinations:
- host: reviews.shop.svc.cluster.local
  port: 9080
  subsets:
    v1: 127.0.0.1:9001
    v2: {address: 127.0.0.1:9002, inbound: 127.0.0.1:0}
- host: ratings
  subsets:
    only: 127.0.0.1:9100
"#;

fn target(host: &str, subset: Option<&str>, port: Option<u16>) -> Target {
    Target {
        host: host.to_owned(),
        subset: subset.map(str::to_owned),
        port,
    }
}

#[test]
fn a_full_config_parses() {
    let config = SandboxConfig::parse("sandbox.yaml", CONFIG).unwrap();
    assert_eq!(config.listen, "127.0.0.1:15001".parse().unwrap());
    assert_eq!(config.reload_interval_ms, 100);
    assert_eq!(
        config.agent_cluster().as_deref(),
        Some("outbound|9090||fledge-agent")
    );
    let plugin: serde_json::Value = serde_json::from_str(&config.plugin_config()).unwrap();
    assert_eq!(plugin["role"], "auto");
    let filter = config.filter.as_ref().unwrap();
    assert_eq!(filter.workers, 2);
    assert_eq!(filter.node.labels["app"], "productpage");
    let v2 = config.destinations[0].subsets["v2"];
    assert_eq!(v2.address(), "127.0.0.1:9002".parse().unwrap());
    assert_eq!(v2.inbound(), Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(config.destinations[0].subsets["v1"].inbound(), None);
}

#[test]
fn targets_resolve_to_backends_and_istio_cluster_names() {
    let config = SandboxConfig::parse("sandbox.yaml", CONFIG).unwrap();
    let cases = [
        (
            target("reviews.shop.svc.cluster.local", Some("v1"), None),
            Some((
                "127.0.0.1:9001",
                "outbound|9080|v1|reviews.shop.svc.cluster.local",
            )),
        ),
        (
            target("reviews", Some("v2"), Some(8080)),
            Some((
                "127.0.0.1:9002",
                "outbound|8080|v2|reviews.shop.svc.cluster.local",
            )),
        ),
        (
            target("ratings", None, None),
            Some(("127.0.0.1:9100", "outbound|80||ratings")),
        ),
        (target("reviews", None, None), None),
        (target("reviews", Some("v3"), None), None),
        (target("details", Some("v1"), None), None),
    ];
    for (target, expected) in cases {
        let got = config
            .resolve(&target)
            .map(|r| (r.address.to_string(), r.cluster_name));
        let expected = expected.map(|(a, c)| (a.to_owned(), c.to_owned()));
        assert_eq!(got, expected, "{target:?}");
    }
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            "listen: 127.0.0.1:15001",
            "listen: nowhere",
            "listen: invalid socket address",
        ),
        (
            "virtualService: vs.yaml",
            "virtualServce: vs.yaml",
            "unknown field `virtualServce`",
        ),
        (
            "v1: 127.0.0.1:9001",
            "v1: here",
            "destinations[0].subsets.v1: destinations[0].subsets: an address like",
        ),
        (
            "  port: 9080",
            "  port: 90800",
            "destinations[0].port: invalid value",
        ),
        (
            "- host: ratings",
            "- host: \"\"",
            "destinations[1].host: is empty",
        ),
        (
            "  module: filter.wasm",
            "  module: filter.wasm\n  workers: 0",
            "filter.workers: must be at least 1",
        ),
        (
            "config: {agent: {cluster: \"outbound|9090||fledge-agent\"}, role: auto}",
            "config: [1]",
            "filter.config: is neither a JSON object nor a string",
        ),
    ];
    for (from, to, expected) in cases {
        let text = CONFIG.replacen(from, to, 1);
        assert_ne!(text, CONFIG, "{to}");
        let err = SandboxConfig::parse("sandbox.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("sandbox config sandbox.yaml: "), "{err}");
        assert!(err.contains(expected), "case {to:?}: {err}");
    }
}
