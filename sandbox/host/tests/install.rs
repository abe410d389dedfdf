//! The filter installs in `manifests/filter/` work as shipped, each of them: the EnvoyFilter
//! (module downloaded by the Istio agent, or read from a mounted file), the WasmPlugin, and the
//! TrafficExtension (sidecars and gateways, or an ambient waypoint).
//!
//! For each: every object is valid against Istio's own CRD schema (and the TrafficExtension's
//! CEL rules, which a JSON schema cannot express); every EnvoyFilter patch value is a valid
//! message of Envoy's v3 API (checked by `envoy_api.py` with the envoy-data-plane package's
//! types, through python3); each kind of listener runs the filter exactly once, fail-open, in the
//! role its direction needs; and the real filter module, loaded in the sandbox host, accepts every
//! plugin configuration taken out of the manifest.
//!
//! The install entry points (`kubectl apply -k manifests/install/<way>`) are rendered with
//! `kubectl kustomize` (offline): each holds the CRD, the agent, its mesh policy
//! (PeerAuthentication and AuthorizationPolicy) and exactly one filter install
//! with the image names of `manifests/install/images`; Istio's objects pass Istio's schemas and
//! every other object passes Kubernetes' own (`kubernetes-validate --strict`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::filter_wasm;
use fledge_sandbox_host::{FilterHost, HostConfig};
use serde::Deserialize;
use serde_json::{Value, json};

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))
}

/// The places Istio can put the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Listener {
    /// A sidecar's outbound listeners.
    Outbound,
    /// A sidecar's inbound listeners.
    Inbound,
    /// An ingress gateway (labels `istio: ingressgateway`).
    Gateway,
    /// An ambient-mode waypoint (the Gateway `waypoint` of its namespace).
    Waypoint,
}

use Listener::*;

impl Listener {
    /// The role the filter must take there: the side that picks versions, or the callee's.
    fn role(self) -> &'static str {
        match self {
            Inbound => "server",
            Outbound | Gateway | Waypoint => "client",
        }
    }

    fn labels(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Outbound | Inbound => &[("app", "reviews")],
            Gateway => &[("istio", "ingressgateway")],
            Waypoint => &[("gateway.networking.k8s.io/gateway-name", "waypoint")],
        }
    }
}

/// One filter the install puts into Envoy: where it runs and the configuration it gets.
#[derive(Debug)]
struct Instance {
    /// `Kind/name` and, for an EnvoyFilter, the patch.
    origin: String,
    listeners: Vec<Listener>,
    /// The plugin configuration as the filter receives it (JSON text).
    config: String,
    fail_open: bool,
}

/// The filter installs: folder under `manifests/filter/`, and the listeners each must cover.
const INSTALLS: &[(&str, &[Listener])] = &[
    ("envoyfilter", &[Outbound, Inbound, Gateway]),
    ("envoyfilter-local", &[Outbound, Inbound, Gateway]),
    ("wasmplugin", &[Outbound, Inbound, Gateway]),
    ("trafficextension", &[Outbound, Inbound, Gateway]),
    ("waypoint", &[Waypoint]),
];

fn install_objects(folder: &str) -> Vec<Value> {
    let dir = manifests().join("filter").join(folder);
    let mut objects = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            objects.extend(documents(&path));
        }
    }
    assert!(!objects.is_empty(), "{dir:?}: no objects");
    objects
}

/// Whether a WasmPlugin or TrafficExtension spec selects `listener` (installed in the root
/// namespace): `targetRefs` reach only what they name (here: the waypoint), a selector or none
/// reaches sidecars and gateways whose labels match, and `match` modes pick directions (none:
/// all; CLIENT also selects gateways, Istio's WorkloadMode).
fn selects(spec: &Value, listener: Listener) -> bool {
    if let Some(refs) = spec["targetRefs"].as_array() {
        return listener == Waypoint
            && refs.iter().any(|r| {
                r["kind"] == "Gateway"
                    && r["group"] == "gateway.networking.k8s.io"
                    && r["name"] == "waypoint"
            });
    }
    if listener == Waypoint {
        return false;
    }
    let labelled = match spec["selector"]["matchLabels"].as_object() {
        None => true,
        Some(wanted) => wanted.iter().all(|(k, v)| {
            listener
                .labels()
                .iter()
                .any(|(label, value)| label == k && v.as_str() == Some(value))
        }),
    };
    let modes: Vec<&str> = spec["match"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["mode"].as_str().unwrap_or("UNDEFINED"))
                .collect()
        })
        .unwrap_or_default();
    let mode_selects = |mode: &str| match mode {
        "UNDEFINED" | "CLIENT_AND_SERVER" => true,
        "CLIENT" => listener != Inbound,
        "SERVER" => listener == Inbound,
        other => panic!("unknown match mode {other}"),
    };
    labelled && (modes.is_empty() || modes.into_iter().any(mode_selects))
}

fn origin(object: &Value) -> String {
    format!(
        "{}/{}",
        text(&object["kind"]),
        text(&object["metadata"]["name"])
    )
}

/// What Istio makes of one WasmPlugin or TrafficExtension.
fn plugin_instance(object: &Value) -> Instance {
    let spec = &object["spec"];
    let wasm = if object["kind"] == "TrafficExtension" {
        &spec["wasm"]
    } else {
        spec
    };
    Instance {
        origin: origin(object),
        listeners: [Outbound, Inbound, Gateway, Waypoint]
            .into_iter()
            .filter(|l| selects(spec, *l))
            .collect(),
        config: serde_json::to_string(&wasm["pluginConfig"]).unwrap(),
        fail_open: wasm["failStrategy"] == "FAIL_OPEN",
    }
}

/// The Wasm filter config (`envoy.extensions.filters.http.wasm.v3.Wasm`'s `config`) an HTTP
/// filter patch runs: inline, or the EXTENSION_CONFIG of its name when discovered.
fn wasm_config<'a>(object: &'a Value, filter: &'a Value) -> &'a Value {
    if filter["typed_config"].is_object() {
        return &filter["typed_config"]["config"];
    }
    let name = text(&filter["name"]);
    let types = filter["config_discovery"]["type_urls"]
        .as_array()
        .expect("an HTTP filter with typed_config or config_discovery");
    for needed in ["wasm.v3.Wasm", "rbac.v3.RBAC"] {
        // RBAC: the Istio agent's stand-in when a fail-open module cannot be fetched.
        assert!(
            types.iter().any(|t| text(t).ends_with(needed)),
            "{}: {name} discovers no {needed}",
            origin(object)
        );
    }
    let found: Vec<&Value> = patches(object)
        .filter(|p| p["applyTo"] == "EXTENSION_CONFIG" && p["patch"]["value"]["name"] == name)
        .map(|p| &p["patch"]["value"]["typed_config"]["config"])
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{}: extension config {name}",
        origin(object)
    );
    found[0]
}

fn patches(object: &Value) -> impl Iterator<Item = &Value> {
    object["spec"]["configPatches"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
}

/// What Istio makes of one EnvoyFilter: one instance per HTTP_FILTER patch.
fn envoy_filter_instances(object: &Value) -> Vec<Instance> {
    let mut instances = Vec::new();
    for (i, patch) in patches(object).enumerate() {
        match text(&patch["applyTo"]) {
            "EXTENSION_CONFIG" => {
                assert_eq!(patch["patch"]["operation"], "ADD", "patch {i}");
                continue;
            }
            "HTTP_FILTER" => {}
            other => panic!("{}: patch {i} applies to {other}", origin(object)),
        }
        // Before the router, in the HTTP connection manager: the version header must be set
        // before a route is picked.
        let at = &patch["match"]["listener"]["filterChain"]["filter"];
        assert_eq!(
            at["name"], "envoy.filters.network.http_connection_manager",
            "patch {i}"
        );
        assert_eq!(
            at["subFilter"]["name"], "envoy.filters.http.router",
            "patch {i}"
        );
        assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE", "patch {i}");
        let listeners = match patch["match"]["context"].as_str().unwrap_or("ANY") {
            "SIDECAR_OUTBOUND" => vec![Outbound],
            "SIDECAR_INBOUND" => vec![Inbound],
            "GATEWAY" => vec![Gateway],
            "ANY" => vec![Outbound, Inbound, Gateway],
            other => panic!("patch {i}: context {other}"),
        };
        let config = wasm_config(object, &patch["patch"]["value"]);
        let code = &config["vm_config"]["code"];
        // Envoy's own field rules, which the Python types do not carry.
        if let Some(remote) = code.get("remote") {
            let sha = text(&remote["sha256"]);
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "patch {i}: sha256 {sha:?}"
            );
            let uri = &remote["http_uri"];
            assert!(text(&uri["uri"]).starts_with("https://"), "patch {i}");
            assert!(!text(&uri["cluster"]).is_empty(), "patch {i}");
            assert!(
                uri["timeout"].is_string(),
                "patch {i}: http_uri.timeout is required"
            );
        } else {
            let file = text(&code["local"]["filename"]);
            assert!(
                file.starts_with('/') && file.ends_with(".wasm"),
                "patch {i}: {file}"
            );
        }
        assert_eq!(
            config["configuration"]["@type"], "type.googleapis.com/google.protobuf.StringValue",
            "patch {i}: Istio passes a plugin configuration as a StringValue"
        );
        instances.push(Instance {
            origin: format!("{} patch {i}", origin(object)),
            listeners,
            config: text(&config["configuration"]["value"]).to_owned(),
            fail_open: config["failure_policy"] == "FAIL_OPEN" && config["fail_open"] == true,
        });
    }
    instances
}

fn instances(objects: &[Value]) -> Vec<Instance> {
    objects
        .iter()
        .flat_map(|object| match text(&object["kind"]) {
            "WasmPlugin" | "TrafficExtension" => vec![plugin_instance(object)],
            "EnvoyFilter" => envoy_filter_instances(object),
            other => panic!("a filter install holds a {other}"),
        })
        .collect()
}

/// The schema of an Istio object, by its kind.
fn istio_schema(object: &Value) -> &'static jsonschema::Validator {
    let (crd, version) = match (text(&object["kind"]), text(&object["apiVersion"])) {
        ("EnvoyFilter", "networking.istio.io/v1alpha3") => {
            ("envoyfilters.networking.istio.io", "v1alpha3")
        }
        ("WasmPlugin", "extensions.istio.io/v1alpha1") => {
            ("wasmplugins.extensions.istio.io", "v1alpha1")
        }
        ("TrafficExtension", "extensions.istio.io/v1alpha1") => {
            ("trafficextensions.extensions.istio.io", "v1alpha1")
        }
        ("PeerAuthentication", "security.istio.io/v1") => {
            ("peerauthentications.security.istio.io", "v1")
        }
        ("AuthorizationPolicy", "security.istio.io/v1") => {
            ("authorizationpolicies.security.istio.io", "v1")
        }
        (kind, api) => panic!("not an Istio object this install uses: {api} {kind}"),
    };
    fledge_testkit::istio::schema(crd, version)
}

/// The TrafficExtension rules Istio's CRD states in CEL (`x-kubernetes-validations`), which
/// the JSON schema check does not run.
fn traffic_extension_rules(spec: &Value) -> Vec<String> {
    let mut broken = Vec::new();
    let has = |field: &str| spec.get(field).is_some();
    if has("selector") && has("targetRefs") {
        broken.push("only one of targetRefs or selector can be set".to_owned());
    }
    if has("wasm") == has("lua") {
        broken.push("exactly one of wasm or lua must be set".to_owned());
    }
    for r in spec["targetRefs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if r["namespace"].as_str().is_some_and(|ns| !ns.is_empty()) {
            broken.push("cross namespace referencing is not currently supported".to_owned());
        }
    }
    if let Some(url) = spec["wasm"]["url"].as_str() {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if !["", "http", "https", "file", "oci"].contains(&scheme) {
            broken.push(format!(
                "url must have schema one of [http, https, file, oci]: {url}"
            ));
        }
    }
    broken
}

fn istio_errors(object: &Value) -> Vec<String> {
    let mut errors: Vec<String> = istio_schema(object)
        .iter_errors(object)
        .map(|e| e.to_string())
        .collect();
    if object["kind"] == "TrafficExtension" {
        errors.extend(traffic_extension_rules(&object["spec"]));
    }
    errors
}

#[test]
fn every_filter_install_is_valid_against_istio_schemas() {
    for (folder, _) in INSTALLS {
        for object in install_objects(folder) {
            let errors = istio_errors(&object);
            assert!(
                errors.is_empty(),
                "{folder}: {}: {errors:?}",
                origin(&object)
            );
        }
    }
    // The checks can fail: a phase Istio does not know, a TrafficExtension with both a
    // selector and targetRefs, an EnvoyFilter patch at a place that does not exist.
    let mut plugin = install_objects("trafficextension").remove(0);
    plugin["spec"]["phase"] = json!("SOMEWHERE");
    assert!(!istio_errors(&plugin).is_empty());
    let mut waypoint = install_objects("waypoint").remove(0);
    waypoint["spec"]["selector"] = json!({"matchLabels": {"app": "reviews"}});
    assert_eq!(
        istio_errors(&waypoint),
        ["only one of targetRefs or selector can be set"]
    );
    let mut envoy_filter = install_objects("envoyfilter").remove(0);
    envoy_filter["spec"]["configPatches"][2]["applyTo"] = json!("HTTP_FILTERS");
    assert!(!istio_errors(&envoy_filter).is_empty());
}

#[test]
fn every_listener_runs_the_filter_once_fail_open_in_its_role() {
    for (folder, covered) in INSTALLS {
        let instances = instances(&install_objects(folder));
        for listener in [Outbound, Inbound, Gateway, Waypoint] {
            let running: Vec<&Instance> = instances
                .iter()
                .filter(|i| i.listeners.contains(&listener))
                .collect();
            // Twice would route and count each request twice; never would leave it unmeasured.
            let expected = usize::from(covered.contains(&listener));
            let origins: Vec<&str> = running.iter().map(|i| i.origin.as_str()).collect();
            assert_eq!(
                running.len(),
                expected,
                "{folder}: {listener:?}: {origins:?}"
            );
            for instance in running {
                let config: Value = serde_json::from_str(&instance.config)
                    .unwrap_or_else(|e| panic!("{}: {e}", instance.origin));
                assert_eq!(
                    config["role"],
                    listener.role(),
                    "{}: on {listener:?}",
                    instance.origin
                );
            }
        }
        for instance in &instances {
            assert!(instance.fail_open, "{}: not fail-open", instance.origin);
        }
    }
}

#[tokio::test]
async fn the_real_filter_accepts_every_plugin_configuration_of_every_install() {
    // One host per distinct configuration: the installs repeat the same two or three.
    let mut configs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (folder, _) in INSTALLS {
        for instance in instances(&install_objects(folder)) {
            configs
                .entry(instance.config)
                .or_default()
                .push(format!("{folder}: {}", instance.origin));
        }
    }
    for (config, origins) in configs {
        let host = FilterHost::start(HostConfig::new(filter_wasm(), config))
            .await
            .unwrap_or_else(|e| panic!("{origins:?}: the filter refused its configuration: {e}"));
        host.shutdown().await;
    }
}

/// Runs `envoy_api.py` over `(name, message type, value)` and returns its line per value.
fn envoy_api(values: &[(String, &str, &Value)]) -> BTreeMap<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/envoy_api.py");
    let input: Vec<Value> = values
        .iter()
        .map(|(name, kind, value)| json!({"name": name, "type": kind, "value": value}))
        .collect();
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 {script:?}: {e} (./dev test installs what it needs)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(out.status.code(), Some(2), "{stdout}");
    let mut lines = BTreeMap::new();
    for line in stdout.lines() {
        let name = line
            .strip_prefix("ok ")
            .or_else(|| line.strip_prefix("error "))
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_else(|| panic!("envoy_api.py said {line:?}"));
        lines.insert(name.to_owned(), line.to_owned());
    }
    assert_eq!(lines.len(), values.len(), "{stdout}");
    lines
}

#[test]
fn every_envoy_filter_patch_is_valid_in_envoys_api() {
    let mut objects = install_objects("envoyfilter");
    objects.extend(install_objects("envoyfilter-local"));
    let mut values: Vec<(String, &str, &Value)> = Vec::new();
    for (n, object) in objects.iter().enumerate() {
        for (i, patch) in patches(object).enumerate() {
            let kind = match text(&patch["applyTo"]) {
                "EXTENSION_CONFIG" => "envoy.config.core.v3.TypedExtensionConfig",
                "HTTP_FILTER" => {
                    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter"
                }
                other => panic!("no Envoy type known for {other}"),
            };
            values.push((format!("file{n}-patch{i}"), kind, &patch["patch"]["value"]));
        }
    }
    // The check can fail: a misspelt field, a string where a bool belongs, a type Envoy lacks.
    let mut misspelt = objects[0]["spec"]["configPatches"][0]["patch"]["value"].clone();
    misspelt["typed_config"]["config"]["vm_config"]["vmid"] = json!("fledge");
    let mut not_a_bool = objects[0]["spec"]["configPatches"][0]["patch"]["value"].clone();
    not_a_bool["typed_config"]["config"]["fail_open"] = json!("yes");
    let mut no_such_type = objects[0]["spec"]["configPatches"][2]["patch"]["value"].clone();
    no_such_type["config_discovery"]["type_urls"][0] =
        json!("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wsam");
    let broken = [
        ("misspelt", &misspelt),
        ("not-a-bool", &not_a_bool),
        ("no-such-type", &no_such_type),
    ];
    let wasm_filter = "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter";
    let typed = "envoy.config.core.v3.TypedExtensionConfig";
    for (name, value) in broken {
        let kind = if name == "no-such-type" {
            wasm_filter
        } else {
            typed
        };
        values.push((name.to_owned(), kind, value));
    }
    let lines = envoy_api(&values);
    for (name, line) in &lines {
        let refused = broken.iter().any(|(b, _)| b == name);
        assert_eq!(line.starts_with("error "), refused, "{line}");
    }
    assert!(lines["misspelt"].contains("vmid"), "{}", lines["misspelt"]);
}

// === the kustomize entry points ===

/// Every object `kubectl kustomize manifests/install/<way>` renders.
fn kustomize(way: &str) -> Vec<Value> {
    let dir = manifests().join("install").join(way);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("kubectl: {e} (./dev test installs it)"));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Runs `kubernetes-validate --strict` on `objects`; its output when any fails.
fn kubernetes_errors(objects: &[&Value]) -> Result<(), String> {
    fledge_testkit::kubernetes::validate(objects)
}

fn kind_name(object: &Value) -> (String, String) {
    (
        text(&object["kind"]).to_owned(),
        text(&object["metadata"]["name"]).to_owned(),
    )
}

#[test]
fn every_install_entry_point_renders_valid_objects() {
    let base: Vec<(String, String)> = documents(&manifests().join("install/base/crd.yaml"))
        .iter()
        .chain(&documents(&manifests().join("install/base/agent.yaml")))
        .chain(&documents(
            &manifests().join("install/base/mesh-policy.yaml"),
        ))
        .chain(&documents(&manifests().join("install/base/operator.yaml")))
        .map(kind_name)
        .collect();
    let images = documents(&manifests().join("install/images/kustomization.yaml"));
    let agent_image = &images[0]["images"][0];
    let agent_image = format!(
        "{}:{}",
        text(&agent_image["newName"]),
        text(&agent_image["newTag"])
    );
    for (way, _) in INSTALLS {
        let rendered = kustomize(way);
        let mut expected: Vec<(String, String)> = base.clone();
        expected.extend(install_objects(way).iter().map(kind_name));
        let mut got: Vec<(String, String)> = rendered.iter().map(kind_name).collect();
        expected.sort();
        got.sort();
        assert_eq!(
            got, expected,
            "{way}: the CRD, the agent, the operator role and one filter install"
        );

        let (istio, kubernetes): (Vec<&Value>, Vec<&Value>) = rendered
            .iter()
            .partition(|o| text(&o["apiVersion"]).contains(".istio.io/"));
        for object in &istio {
            let errors = istio_errors(object);
            assert!(errors.is_empty(), "{way}: {}: {errors:?}", origin(object));
        }
        if let Err(said) = kubernetes_errors(&kubernetes) {
            panic!("{way}: kubernetes-validate --strict: {said}");
        }

        // The names come from the one images component.
        let deployment = rendered.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let image = &deployment["spec"]["template"]["spec"]["containers"][0]["image"];
        assert_eq!(image, agent_image.as_str(), "{way}");
        for object in &istio {
            let spec = &object["spec"];
            let url = spec["url"].as_str().or(spec["wasm"]["url"].as_str());
            if let Some(url) = url {
                assert!(url.starts_with("oci://"), "{way}: {url}");
            }
        }
        // The instances the cluster would run are the ones checked above, names replaced.
        let filters: Vec<Value> = istio
            .into_iter()
            .filter(|o| !text(&o["apiVersion"]).starts_with("security.istio.io/"))
            .cloned()
            .collect();
        assert_eq!(
            instances(&filters).len(),
            instances(&install_objects(way)).len(),
            "{way}"
        );
    }
    // The Kubernetes check can fail: a misspelt field of a Deployment.
    let mut deployment = kustomize("wasmplugin")
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    deployment["spec"]["replica"] = json!(1);
    let said = kubernetes_errors(&[&deployment]).expect_err("a misspelt field passed");
    assert!(said.contains("replica"), "{said}");
}
