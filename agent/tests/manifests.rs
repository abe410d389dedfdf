//! manifests/install/base/agent.yaml works as shipped: every document parses, the Deployment's
//! args are a valid `fledge-agent kube` command line whose listen ports are the container's
//! ports, the Service and the probes point at those ports, the pod runs as non-root on a
//! read-only root file system behind an Istio sidecar that mesh-policy.yaml selects (STRICT
//! mTLS, telemetry from mesh identities, HTTP reads only), and every filter install's agent
//! cluster names this Service; two replicas elect a leader (Role for the Lease, rolling update
//! that keeps two ready, PodDisruptionBudget, anti-affinity), and every object passes
//! `kubernetes-validate`. The ClusterRole's rules are checked against the calls the store makes in tests/kube (`the_cluster_role_…`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use fledge_agent::config::{Cli, Command};
use serde::Deserialize;
use serde_json::{Value, json};

fn docs(name: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, d)| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{name} document {}: {e}", i + 1))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))
}

#[test]
fn the_agent_manifest_matches_the_cli_and_its_service() {
    let docs = docs("install/base/agent.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| text(&d["kind"])).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "PodDisruptionBudget"
        ]
    );
    let ns = text(&one(&docs, "Namespace")["metadata"]["name"]);
    assert_eq!(ns, "fledge-system");
    for d in &docs {
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
        if !cluster_scoped.contains(&text(&d["kind"])) {
            assert_eq!(d["metadata"]["namespace"], ns, "{}", d["kind"]);
        }
    }

    // The binding gives the role to the pod's ServiceAccount.
    let account = one(&docs, "ServiceAccount");
    let binding = one(&docs, "ClusterRoleBinding");
    let role = one(&docs, "ClusterRole");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], ns);

    // The Lease is the agent's own namespace's business: a Role there, bound to the same account.
    let lease_role = one(&docs, "Role");
    let lease_binding = one(&docs, "RoleBinding");
    assert_eq!(lease_binding["roleRef"]["kind"], "Role");
    assert_eq!(
        lease_binding["roleRef"]["name"],
        lease_role["metadata"]["name"]
    );
    assert_eq!(
        lease_binding["subjects"][0]["name"],
        account["metadata"]["name"]
    );
    assert_eq!(lease_binding["subjects"][0]["namespace"], ns);

    // Two agents, one leader; rolled one at a time, never fewer than two ready.
    let deployment = one(&docs, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], 1);
    let budget = one(&docs, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(budget["spec"]["selector"], spec["selector"]);
    // Apart where there are nodes to spare, together on a single node rather than not at all.
    let anti = &spec["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert!(anti["requiredDuringSchedulingIgnoredDuringExecution"].is_null());
    let preferred = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(preferred["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(preferred["labelSelector"], spec["selector"]);
    // The longest graceful stop (the write in flight, the Lease, the streams) fits the grace.
    let grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let stop = fledge_agent::serve::SHUTDOWN_WRITES + fledge_agent::serve::STOP_GRACE;
    assert!(stop.as_secs() * 2 <= grace, "{stop:?} within {grace} s");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    let labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Deployment's selector matches its pods");
    }
    let [container] = pod["containers"].as_array().unwrap().as_slice() else {
        panic!("one container expected")
    };
    assert_eq!(container["image"], "ghcr.io/fledge-dev/fledge-agent:0.1.0");

    // The args are a `fledge-agent kube` command line; its ports are the container's.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("fledge-agent").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("args {args:?}: {e}"));
    let Command::Kube(kube) = cli.command else {
        panic!("args {args:?} do not run `kube`")
    };
    assert_eq!(kube.namespace, None, "a ClusterRole: every namespace");
    assert!(
        !kube.http_reads,
        "rollouts and metrics are read from the pod itself only"
    );
    assert!(kube.grpc.ip().is_unspecified() && kube.http.ip().is_unspecified());
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (text(&p["name"]), p["containerPort"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            ("grpc", u64::from(kube.grpc.port())),
            ("http", u64::from(kube.http.port()))
        ])
    );
    let env: Vec<&Value> = container["env"].as_array().unwrap().iter().collect();
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"),
        "Events and the Lease name the pod"
    );
    kube.election.timing().validate().unwrap();
    // Telemetry streams must carry a mesh identity, which the pod's sidecar makes evidence.
    assert!(
        env.iter()
            .any(|e| e["name"] == "FLEDGE_REQUIRE_PEER_IDENTITY" && e["value"] == "true"),
        "the agent requires a mesh identity"
    );
    assert_eq!(labels["sidecar.istio.io/inject"], "true");
    let policy = self::docs("install/base/mesh-policy.yaml");
    let peer = one(&policy, "PeerAuthentication");
    assert_eq!(peer["spec"]["mtls"]["mode"], "STRICT");
    let allow = one(&policy, "AuthorizationPolicy");
    for object in [peer, allow] {
        assert_eq!(object["metadata"]["namespace"], ns);
        for (k, v) in object["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&labels[k], v, "{} selects the agent's pods", object["kind"]);
        }
    }
    let rules = allow["spec"]["rules"].as_array().unwrap();
    let port_rule = |port: u16| {
        rules
            .iter()
            .find(|r| r["to"][0]["operation"]["ports"][0].as_str() == Some(&*port.to_string()))
            .unwrap_or_else(|| panic!("no rule for port {port}"))
    };
    assert_eq!(
        port_rule(kube.grpc.port())["from"][0]["source"]["principals"][0],
        "*"
    );
    assert_eq!(
        port_rule(kube.http.port())["to"][0]["operation"]["methods"],
        json!(["GET"]),
        "no commands over HTTP in a cluster"
    );

    // Probes on the HTTP API's health and readiness.
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe}");
    }
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert!(security["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true);

    // The Service selects the pods and exposes the two ports by name.
    let service = one(&docs, "Service");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the agent's pods");
    }
    let by_target: BTreeMap<&str, &Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (text(&p["targetPort"]), p))
        .collect();
    assert_eq!(
        by_target.keys().copied().collect::<Vec<_>>(),
        ["grpc", "http"]
    );
    let grpc = by_target["grpc"];
    assert_eq!(grpc["port"].as_u64(), Some(ports["grpc"]));
    assert_eq!(grpc["appProtocol"], "grpc");
    assert!(
        text(&grpc["name"]).starts_with("grpc-"),
        "Istio reads the protocol from the name"
    );
    assert_eq!(by_target["http"]["port"].as_u64(), Some(ports["http"]));
    assert!(text(&by_target["http"]["name"]).starts_with("http"));

    // Every filter of every install sends its telemetry to this Service's gRPC port.
    let host = format!(
        "{}.{ns}.svc.cluster.local",
        text(&service["metadata"]["name"])
    );
    let cluster = format!("outbound|{}||{host}", grpc["port"]);
    // Every object as Kubernetes' own schemas say it must be.
    let objects: Vec<&Value> = docs.iter().collect();
    if let Err(said) = fledge_testkit::kubernetes::validate(&objects) {
        panic!("install/base/agent.yaml against Kubernetes' schemas:\n{said}");
    }

    let configs = filter_configs();
    assert!(configs.len() >= 5, "{configs:?}");
    for (origin, config) in configs {
        assert_eq!(config["agent"]["cluster"], cluster.as_str(), "{origin}");
        assert_eq!(config["agent"]["authority"], host.as_str(), "{origin}");
    }
}

/// The plugin configuration of every filter in `manifests/filter/*/` (WasmPlugin and
/// TrafficExtension `pluginConfig`, EnvoyFilter `configuration` JSON), with where it is.
fn filter_configs() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/filter");
    let mut configs = Vec::new();
    for way in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
        let way = way.unwrap().path();
        for file in std::fs::read_dir(&way).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if name == "kustomization.yaml" {
                continue;
            }
            let way = way.file_name().unwrap().to_string_lossy();
            for doc in docs(&format!("filter/{way}/{name}")) {
                let origin = format!("{way}/{name}: {}/{}", doc["kind"], doc["metadata"]["name"]);
                let spec = &doc["spec"];
                match text(&doc["kind"]) {
                    "WasmPlugin" => configs.push((origin, spec["pluginConfig"].clone())),
                    "TrafficExtension" => {
                        configs.push((origin, spec["wasm"]["pluginConfig"].clone()))
                    }
                    "EnvoyFilter" => {
                        for patch in spec["configPatches"].as_array().unwrap() {
                            let config = &patch["patch"]["value"]["typed_config"]["config"];
                            let value = &config["configuration"]["value"];
                            if let Some(json) = value.as_str() {
                                configs.push((origin.clone(), serde_json::from_str(json).unwrap()));
                            }
                        }
                    }
                    other => panic!("{origin}: a {other} in a filter install"),
                }
            }
        }
    }
    configs
}
