//! Istio's CustomResourceDefinitions, for tests that check what fledge writes or ships against
//! Istio's own schemas (VirtualService, WasmPlugin, …).
//!
//! The bundle is Istio's generated `kubernetes/customresourcedefinitions.gen.yaml` at a pinned
//! commit. Tests find it through one environment variable, `FLEDGE_ISTIO_CRDS`; `./dev test`
//! sets it (fetching and checking the pinned file when needed). Without it a test fails with a
//! message saying how to provide it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::Deserialize;
use serde_json::Value;

/// The environment variable naming the bundle.
pub const ENV: &str = "FLEDGE_ISTIO_CRDS";

/// The pinned bundle `./dev test` provides.
pub const PINNED_URL: &str = "https://raw.githubusercontent.com/istio/api/b8f8791d9653b2edc77a071d48887e582cfe84bf/kubernetes/customresourcedefinitions.gen.yaml";

/// The sha256 of [`PINNED_URL`]'s file.
pub const PINNED_SHA256: &str = "c98c49e3435f7ca04938cc710f929bbfe952472b177c3a7384b31e383c6b6c7a";

fn how_to_provide() -> String {
    format!(
        "run the tests through `./dev test`, which provides Istio's CRDs, or set {ENV} to Istio's \
         customresourcedefinitions.gen.yaml at the pinned commit ({PINNED_URL}, sha256 \
         {PINNED_SHA256})"
    )
}

/// Where Istio's CRD bundle is: the path in `FLEDGE_ISTIO_CRDS`. Panics, saying how to provide
/// it, when the variable is unset or empty.
pub fn crds_path() -> PathBuf {
    match std::env::var_os(ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!("{ENV} is not set: {}", how_to_provide()),
    }
}

/// Every document of the bundle, parsed once per process. Panics, saying how to provide the
/// bundle, when it cannot be read.
pub fn crds() -> &'static [Value] {
    static CRDS: OnceLock<Vec<Value>> = OnceLock::new();
    CRDS.get_or_init(|| {
        let path = crds_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {ENV}={}: {e}; {}",
                path.display(),
                how_to_provide()
            )
        });
        serde_norway::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).expect("a YAML document"))
            .collect()
    })
}

/// The `openAPIV3Schema` of CRD `name` (`virtualservices.networking.istio.io`) at `version`.
pub fn openapi_schema(name: &str, version: &str) -> Value {
    let crd = crds()
        .iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no CRD {name} in {}", crds_path().display()));
    let versions = crd["spec"]["versions"].as_array().map(Vec::as_slice);
    let served = versions
        .unwrap_or_default()
        .iter()
        .find(|v| v["name"] == version);
    let served = served.unwrap_or_else(|| panic!("CRD {name} has no version {version}"));
    let schema = &served["schema"]["openAPIV3Schema"];
    assert!(
        schema.is_object(),
        "CRD {name} {version} has no openAPIV3Schema"
    );
    schema.clone()
}

/// [`openapi_schema`], compiled into a validator once per process.
pub fn schema(name: &str, version: &str) -> &'static jsonschema::Validator {
    type Compiled = HashMap<(String, String), &'static jsonschema::Validator>;
    static COMPILED: OnceLock<Mutex<Compiled>> = OnceLock::new();
    // A test that panicked here (no bundle) leaves nothing half-written: keep going.
    let mut compiled = COMPILED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    compiled
        .entry((name.to_owned(), version.to_owned()))
        .or_insert_with(|| {
            let validator = jsonschema::validator_for(&openapi_schema(name, version))
                .unwrap_or_else(|e| panic!("CRD {name} {version}: an unusable schema: {e}"));
            Box::leak(Box::new(validator))
        })
}

/// The schema of VirtualService `networking.istio.io/v1`.
pub fn virtual_service() -> &'static jsonschema::Validator {
    schema("virtualservices.networking.istio.io", "v1")
}

/// The schema of WasmPlugin `extensions.istio.io/v1alpha1`.
pub fn wasm_plugin() -> &'static jsonschema::Validator {
    schema("wasmplugins.extensions.istio.io", "v1alpha1")
}
