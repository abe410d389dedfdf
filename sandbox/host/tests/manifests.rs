//! The install manifest `manifests/filter/wasmplugin/wasmplugin.yaml` works as shipped: every
//! WasmPlugin in it is valid against Istio's own WasmPlugin CRD schema (the pinned bundle in
//! `FLEDGE_ISTIO_CRDS`), and the real filter module, loaded in the host, accepts its
//! `pluginConfig` (Istio hands it to the filter as JSON). A manifest the filter would refuse
//! would leave every sidecar unfiltered. Each kind of listener (a sidecar's outbound and
//! inbound, the ingress gateway) runs exactly one.

mod common;

use std::path::PathBuf;

use common::filter_wasm;
use fledge_sandbox_host::{FilterHost, HostConfig, HostError};
use serde::Deserialize;
use serde_json::Value;

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .collect()
}

/// Where Istio puts a WasmPlugin: a sidecar's outbound and inbound listeners, and a gateway's.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Outbound,
    Inbound,
    Gateway,
}

/// A listener the install must cover, with its workload's labels.
struct Listener {
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    direction: Direction,
}

const LISTENERS: &[Listener] = &[
    Listener {
        name: "a sidecar's outbound",
        labels: &[("app", "reviews")],
        direction: Direction::Outbound,
    },
    Listener {
        name: "a sidecar's inbound",
        labels: &[("app", "reviews")],
        direction: Direction::Inbound,
    },
    Listener {
        name: "the ingress gateway",
        labels: &[("istio", "ingressgateway")],
        direction: Direction::Gateway,
    },
];

/// Whether Istio applies `plugin` (installed in the root namespace) to a listener: its selector
/// matches the workload's labels (no selector: every workload), and one of its `match` modes
/// selects the direction (none: all). CLIENT also selects gateways (Istio's WorkloadMode).
fn applies(plugin: &Value, labels: &[(&str, &str)], direction: Direction) -> bool {
    let selected = match plugin["spec"]["selector"]["matchLabels"].as_object() {
        None => true,
        Some(wanted) => wanted.iter().all(|(k, v)| {
            labels
                .iter()
                .any(|(label, value)| label == k && v.as_str() == Some(value))
        }),
    };
    let modes: Vec<&str> = match plugin["spec"]["match"].as_array() {
        None => vec![],
        Some(m) => m
            .iter()
            .map(|m| m["mode"].as_str().unwrap_or("UNDEFINED"))
            .collect(),
    };
    let mode_selects = |mode: &str| match mode {
        "UNDEFINED" | "CLIENT_AND_SERVER" => true,
        "CLIENT" => direction != Direction::Inbound,
        "SERVER" => direction == Direction::Inbound,
        other => panic!("unknown match mode {other}"),
    };
    selected && (modes.is_empty() || modes.into_iter().any(mode_selects))
}

#[test]
fn the_listener_coverage_check_can_fail() {
    let plugin = |selector: Value, modes: Value| serde_json::json!({"spec": {"selector": selector, "match": modes}});
    let gateway_only = plugin(
        serde_json::json!({"matchLabels": {"istio": "ingressgateway"}}),
        Value::Null,
    );
    let client = plugin(Value::Null, serde_json::json!([{"mode": "CLIENT"}]));
    let gateway = LISTENERS[2].labels;
    let sidecar = LISTENERS[0].labels;
    // The layout this manifest used to ship: a gateway plugin beside a mesh-wide CLIENT one.
    assert!(applies(&gateway_only, gateway, Direction::Gateway));
    assert!(applies(&client, gateway, Direction::Gateway));
    assert!(!applies(&gateway_only, sidecar, Direction::Outbound));
    assert!(!applies(&client, sidecar, Direction::Inbound));
}

#[tokio::test]
async fn every_wasmplugin_in_the_install_manifest_is_valid_and_accepted_by_the_filter() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../manifests/filter/wasmplugin/wasmplugin.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let plugins: Vec<Value> = yaml_documents(&text)
        .into_iter()
        .filter(|d| d["kind"] == "WasmPlugin")
        .collect();
    assert!(
        plugins.len() >= 2,
        "{path:?}: {} WasmPlugins",
        plugins.len()
    );
    // Every kind of listener runs the filter exactly once: twice would route and count each
    // request twice, never would leave that traffic unmeasured.
    for listener in LISTENERS {
        let applying: Vec<&str> = plugins
            .iter()
            .filter(|p| applies(p, listener.labels, listener.direction))
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(applying.len(), 1, "{}: plugins {applying:?}", listener.name);
    }
    let schema = fledge_testkit::istio::wasm_plugin();
    for plugin in &plugins {
        let name = plugin["metadata"]["name"].as_str().unwrap_or("?");
        let errors: Vec<String> = schema.iter_errors(plugin).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        // Each plugin declares its role: the agent keeps caller-side and callee-side series apart
        // by the role a stream declares, and one CLIENT_AND_SERVER plugin with `role: auto` may
        // share a root context (and so a stream) between both directions in Envoy.
        let role = plugin["spec"]["pluginConfig"]["role"]
            .as_str()
            .unwrap_or("auto");
        let modes: Vec<&str> = plugin["spec"]["match"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["mode"].as_str()).collect())
            .unwrap_or_default();
        let expected = match modes.as_slice() {
            ["SERVER"] => "server",
            ["CLIENT"] | [] => "client",
            other => panic!("{name}: match modes {other:?}: one direction per plugin"),
        };
        assert_eq!(role, expected, "{name}: role for match {modes:?}");
        let config = serde_json::to_string(&plugin["spec"]["pluginConfig"]).unwrap();
        let host = FilterHost::start(HostConfig::new(filter_wasm(), config))
            .await
            .unwrap_or_else(|e| panic!("{name}: the filter refused its pluginConfig: {e}"));
        host.shutdown().await;
    }
    // The check can fail: the same manifest with a misspelt field is refused by the filter, and a
    // bad phase by Istio's schema.
    let mut misspelt = plugins[0]["spec"]["pluginConfig"].clone();
    misspelt["report_intervall_ms"] = Value::from(1000);
    let refused = FilterHost::start(HostConfig::new(
        filter_wasm(),
        serde_json::to_string(&misspelt).unwrap(),
    ))
    .await;
    assert!(
        matches!(&refused, Err(HostError::Refused { log, .. }) if log.contains("report_intervall_ms")),
        "{:?}",
        refused.err()
    );
    let mut bad_phase = plugins[0].clone();
    bad_phase["spec"]["phase"] = Value::from("SOMEWHERE");
    assert!(!schema.is_valid(&bad_phase));
}
