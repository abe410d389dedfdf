//! The sandbox mesh's configuration (YAML): where the proxy listens, the VirtualService file it
//! routes by, the filter module and its plugin configuration, the agent's address for the
//! filter's gRPC cluster, and DestinationRule-style subsets mapping each version of a host to a
//! backend address, optionally behind an inbound listener that runs the filter in the server
//! role. Parsing names the field that is wrong. Pure apart from [`SandboxConfig::load`].
//!
//! ```yaml
//! listen: 127.0.0.1:15001
//! virtualService: reviews-vs.yaml        # relative to this file
//! agent: 127.0.0.1:50051
//! filter:
//!   module: ../target/wasm32-wasip1/wasm/fledge_filter.wasm
//!   config: {agent: {cluster: "outbound|9090||fledge-agent"}}
//! destinations:
//! - host: reviews.shop.svc.cluster.local
//!   port: 9080
//!   subsets:
//!     v1: 127.0.0.1:9001
//!     v2: {address: 127.0.0.1:9002, inbound: 127.0.0.1:0}
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::route::{Target, same_host};
use crate::{Error, Result};

/// The whole sandbox mesh configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SandboxConfig {
    /// Where the proxy (the client's outbound sidecar) listens.
    pub listen: SocketAddr,
    /// The VirtualService file, watched for changes.
    pub virtual_service: PathBuf,
    /// How often the VirtualService file is checked, in milliseconds.
    #[serde(default = "default_reload_ms")]
    pub reload_interval_ms: u64,
    #[serde(default)]
    pub filter: Option<FilterSpec>,
    /// The agent's gRPC address, for the cluster named in the plugin config's `agent.cluster`.
    #[serde(default)]
    pub agent: Option<SocketAddr>,
    #[serde(default)]
    pub destinations: Vec<DestinationSpec>,
}

/// The proxy-wasm filter every listener runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterSpec {
    pub module: PathBuf,
    /// The plugin configuration: a JSON object (written as YAML or JSON), or a string of JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub vm_config: String,
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// The outbound proxy's node identity; inbound listeners get `LABELS.version` = subset.
    #[serde(default)]
    pub node: NodeSpec,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub workload: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A service host and its subsets (DestinationRule-style).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationSpec {
    pub host: String,
    /// The service port, used in cluster names when a route names none.
    #[serde(default = "default_port")]
    pub port: u16,
    pub subsets: BTreeMap<String, SubsetSpec>,
}

/// A subset's backend, written as an address or `{address, inbound}`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "an address like 127.0.0.1:9001 or {address, inbound}"
)]
pub enum SubsetSpec {
    Address(SocketAddr),
    #[serde(rename_all = "camelCase")]
    Full {
        address: SocketAddr,
        /// Listen here with the filter in the server role, in front of `address`.
        #[serde(default)]
        inbound: Option<SocketAddr>,
    },
}

/// Where a route target goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<'c> {
    /// The destination host as configured (its full name).
    pub host: &'c str,
    pub subset: &'c str,
    pub address: SocketAddr,
    /// Istio's cluster name, `outbound|port|subset|host`.
    pub cluster_name: String,
}

fn default_reload_ms() -> u64 {
    100
}

fn default_workers() -> usize {
    2
}

fn default_port() -> u16 {
    80
}

impl SubsetSpec {
    pub fn address(&self) -> SocketAddr {
        match *self {
            SubsetSpec::Address(address) | SubsetSpec::Full { address, .. } => address,
        }
    }

    pub fn inbound(&self) -> Option<SocketAddr> {
        match *self {
            SubsetSpec::Address(_) => None,
            SubsetSpec::Full { inbound, .. } => inbound,
        }
    }
}

impl SandboxConfig {
    /// A config with no filter and no destinations.
    pub fn new(listen: SocketAddr, virtual_service: impl Into<PathBuf>) -> SandboxConfig {
        SandboxConfig {
            listen,
            virtual_service: virtual_service.into(),
            reload_interval_ms: default_reload_ms(),
            filter: None,
            agent: None,
            destinations: Vec::new(),
        }
    }

    /// Reads `path`; relative paths inside are taken from the file's folder.
    pub fn load(path: &Path) -> Result<SandboxConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = SandboxConfig::parse(&path.display().to_string(), &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.virtual_service = base.join(&config.virtual_service);
        if let Some(filter) = &mut config.filter {
            filter.module = base.join(&filter.module);
        }
        Ok(config)
    }

    /// Parses and checks a config text; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<SandboxConfig> {
        let config: SandboxConfig = serde_path_to_error::deserialize(
            serde_norway::Deserializer::from_str(text),
        )
        .map_err(|e| Error::Config {
            file: source.to_owned(),
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        config
            .validate()
            .map_err(|(field, message)| Error::Config {
                file: source.to_owned(),
                field,
                message,
            })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (i, destination) in self.destinations.iter().enumerate() {
            if destination.host.trim().is_empty() {
                return Err((format!("destinations[{i}].host"), "is empty".into()));
            }
            if destination.subsets.is_empty() {
                return Err((format!("destinations[{i}].subsets"), "is empty".into()));
            }
            if let Some(name) = destination.subsets.keys().find(|n| n.is_empty()) {
                return Err((
                    format!("destinations[{i}].subsets.{name:?}"),
                    "has no name".into(),
                ));
            }
        }
        if let Some(filter) = &self.filter {
            if !(filter.config.is_object() || filter.config.is_string() || filter.config.is_null())
            {
                return Err((
                    "filter.config".into(),
                    "is neither a JSON object nor a string".into(),
                ));
            }
            if filter.workers == 0 {
                return Err(("filter.workers".into(), "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// The bytes given to the filter's `on_configure`.
    pub fn plugin_config(&self) -> String {
        match self.filter.as_ref().map(|f| &f.config) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(value) => value.to_string(),
        }
    }

    /// The gRPC cluster name the filter opens its agent stream on (`agent.cluster`).
    pub fn agent_cluster(&self) -> Option<String> {
        let text = self.plugin_config();
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value
            .get("agent")?
            .get("cluster")?
            .as_str()
            .map(str::to_owned)
    }

    /// The backend and cluster name for a route target: its host (full or short name), the
    /// named subset, or the only subset when the target names none.
    pub fn resolve(&self, target: &Target) -> Option<Resolved<'_>> {
        let destination = self
            .destinations
            .iter()
            .find(|d| same_host(&d.host.to_ascii_lowercase(), &target.host))?;
        let (subset, spec) = match &target.subset {
            Some(name) => destination.subsets.get_key_value(name)?,
            None if destination.subsets.len() == 1 => destination.subsets.iter().next()?,
            None => return None,
        };
        let port = target.port.unwrap_or(destination.port);
        Some(Resolved {
            host: &destination.host,
            subset,
            address: spec.address(),
            cluster_name: format!(
                "outbound|{port}|{}|{}",
                target.subset.as_deref().unwrap_or(""),
                destination.host
            ),
        })
    }
}

#[cfg(test)]
mod tests;
