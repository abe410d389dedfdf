//! A sandbox for the tests: stable (v1) and canary (v2) backends of one service, a
//! VirtualService file in a fresh folder, and the mesh in front of them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fledge_sandbox::config::{DestinationSpec, FilterSpec, SubsetSpec};
use fledge_sandbox::{Backend, BackendConfig, Behaviour, Filters, LoadConfig, Mesh, SandboxConfig};

pub const HOST: &str = "reviews.shop.svc.cluster.local";

/// A VirtualService for [`HOST`] with these `http:` routes (YAML, indented by two).
pub fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: shop}}\nspec:\n  hosts: [{HOST}]\n  http:\n{http}"
    )
}

/// `http:` routes sending everything to `subset`.
pub fn all_to(subset: &str) -> String {
    format!("  - name: all\n    route:\n    - destination: {{host: {HOST}, subset: {subset}}}\n")
}

/// A fresh folder under the system temp dir.
pub fn fresh_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fledge-sandbox-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Replaces `path` by writing a sibling and renaming it over (as editors and kubectl do).
pub fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).expect("write temp");
    std::fs::rename(&temp, path).expect("rename");
}

/// An address nothing listens on.
pub fn closed_port() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr")
}

pub struct Sandbox {
    pub dir: PathBuf,
    pub vs_path: PathBuf,
    pub stable: Backend,
    pub canary: Backend,
    pub config: SandboxConfig,
}

impl Sandbox {
    /// Backends v1 and v2 (answering at once) and a config routing by `http`; with
    /// `canary_inbound`, v2 sits behind an inbound listener.
    pub async fn new(name: &str, http: &str, canary_inbound: bool) -> Sandbox {
        let stable = Backend::start(BackendConfig::new("v1")).await.expect("v1");
        let canary = Backend::start(BackendConfig::new("v2")).await.expect("v2");
        let dir = fresh_dir(name);
        let vs_path = dir.join("reviews-vs.yaml");
        std::fs::write(&vs_path, virtual_service(http)).expect("write vs");
        let mut config = SandboxConfig::new("127.0.0.1:0".parse().unwrap(), &vs_path);
        config.reload_interval_ms = 20;
        let canary_spec = if canary_inbound {
            SubsetSpec::Full {
                address: canary.addr(),
                inbound: Some("127.0.0.1:0".parse().unwrap()),
            }
        } else {
            SubsetSpec::Address(canary.addr())
        };
        config.destinations.push(DestinationSpec {
            host: HOST.into(),
            port: 9080,
            subsets: [
                ("v1".to_owned(), SubsetSpec::Address(stable.addr())),
                ("v2".to_owned(), canary_spec),
            ]
            .into(),
        });
        Sandbox {
            dir,
            vs_path,
            stable,
            canary,
            config,
        }
    }

    pub async fn mesh(&self, filters: Filters) -> Mesh {
        Mesh::start_with(self.config.clone(), filters)
            .await
            .expect("mesh starts")
    }

    pub fn set_canary(&self, behaviour: Behaviour) {
        self.canary.set_behaviour(behaviour).expect("behaviour");
    }
}

/// `n` requests at `rate` per second to the mesh for [`HOST`].
pub fn load(mesh: &Mesh, n: u32, rate: f64) -> LoadConfig {
    LoadConfig::new(
        mesh.addr(),
        HOST,
        rate,
        Duration::from_secs_f64(f64::from(n) / rate),
    )
}

/// Polls `done` for up to five seconds.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..250 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

pub const AGENT_CLUSTER: &str = "outbound|9090||fledge-agent.fledge-system.svc.cluster.local";

/// fledge's filter module; fails (saying to run `./dev wasm`) when it is not built.
pub fn filter_wasm() -> PathBuf {
    fledge_sandbox_host::bench::filter_module().unwrap_or_else(|e| panic!("{e}"))
}

/// A plugin configuration (role auto, reports every 200 ms) whose table for [`HOST`] sends
/// `x-beta: 1` to v2 and splits the rest sticky on `x-user-id` with `canary_bp` to v2.
pub fn plugin_config(canary_bp: u32) -> serde_json::Value {
    serde_json::json!({
        "agent": {"cluster": AGENT_CLUSTER},
        "role": "auto",
        "report_interval_ms": 200,
        "routes": [{
            "host": HOST,
            "rules": [{"header": {"name": "x-beta", "exact": "1"}, "version": "v2"}],
            "split": {"stable": "v1", "canary": "v2", "canary_basis_points": canary_bp},
            "sticky_key": {"header": "x-user-id"}
        }]
    })
}

/// `http:` routes by the filter's version header: v2 → v2, anything else → v1.
pub fn by_version_header() -> String {
    format!(
        "  - name: fledge-v2\n    match:\n    - headers: {{x-fledge-version: {{exact: v2}}}}\n    route:\n    - destination: {{host: {HOST}, subset: v2}}\n{}",
        all_to("v1")
    )
}

impl Sandbox {
    /// Runs the real filter with `plugin` on every listener, reporting to `agent`.
    pub fn with_filter(mut self, plugin: serde_json::Value, agent: Option<SocketAddr>) -> Sandbox {
        self.config.filter = Some(FilterSpec {
            module: filter_wasm(),
            config: plugin,
            vm_config: String::new(),
            workers: 2,
            node: Default::default(),
        });
        self.config.agent = agent;
        self
    }

    /// Starts the mesh with the filter hosts the config asks for.
    pub async fn wasm_mesh(&self) -> Mesh {
        Mesh::start(self.config.clone())
            .await
            .expect("mesh with the filter starts")
    }
}
