//! The proxy-wasm host (crate fledge-sandbox-host) as the mesh's [`Filter`]: converts the
//! mesh's header lists and [`Completion`] to the host's calls, and starts one host per listener
//! from the sandbox config — the client role on the outbound proxy, the server role (inbound
//! direction, `LABELS.version` = the subset) on each inbound listener, every one with the
//! agent's address for the filter's gRPC cluster. No routing or policy here.

use std::collections::HashMap;
use std::sync::Arc;

use fledge_sandbox_host::{
    FilterHost, HostConfig, ListenerDirection, LogInfo, NodeInfo, RequestHandle,
};

use crate::config::{FilterSpec, SandboxConfig};
use crate::filter::{Completion, Filter, FilterRequest, Filters};
use crate::{Error, Result};

impl Filter for FilterHost {
    fn on_request_headers(&self, headers: &mut Vec<(String, String)>) -> Box<dyn FilterRequest> {
        Box::new(FilterHost::on_request_headers(self, headers))
    }
}

impl FilterRequest for RequestHandle {
    fn route_cache_cleared(&self) -> bool {
        RequestHandle::route_cache_cleared(self)
    }

    fn on_response_headers(&mut self, headers: &mut Vec<(String, String)>) {
        RequestHandle::on_response_headers(self, headers);
    }

    fn on_log(self: Box<Self>, done: Completion) {
        RequestHandle::on_log(
            *self,
            LogInfo {
                duration: done.duration,
                response_code: done.response_code,
                response_flags: done.response_flags,
                grpc_status: done.grpc_status,
                cluster_name: done.cluster_name,
            },
        );
    }
}

/// The hosts a config asks for (none without a `filter` section), also returned as plain
/// [`FilterHost`]s so the mesh can shut them down.
pub(crate) async fn filters(config: &SandboxConfig) -> Result<(Filters, Vec<FilterHost>)> {
    let Some(spec) = &config.filter else {
        return Ok((Filters::default(), Vec::new()));
    };
    let clusters: HashMap<_, _> = match (config.agent_cluster(), config.agent) {
        (Some(cluster), Some(agent)) => [(cluster, agent)].into(),
        _ => HashMap::new(),
    };
    let base = HostConfig {
        module: spec.module.clone(),
        plugin_config: config.plugin_config(),
        vm_config: spec.vm_config.clone(),
        workers: spec.workers,
        node: outbound_node(spec),
        direction: ListenerDirection::Outbound,
        clusters,
    };
    let mut hosts = Vec::new();
    let outbound = start(base.clone(), "the outbound proxy").await?;
    hosts.push(outbound.clone());
    let mut inbound: HashMap<(String, String), Arc<dyn Filter>> = HashMap::new();
    for destination in &config.destinations {
        for (subset, subset_spec) in &destination.subsets {
            if subset_spec.inbound().is_none() {
                continue;
            }
            let host_config = HostConfig {
                node: inbound_node(&destination.host, subset),
                direction: ListenerDirection::Inbound,
                ..base.clone()
            };
            let what = format!("the inbound listener of {} {subset}", destination.host);
            let host = start(host_config, &what).await?;
            hosts.push(host.clone());
            inbound.insert((destination.host.clone(), subset.clone()), Arc::new(host));
        }
    }
    let filters = Filters {
        outbound: Some(Arc::new(outbound)),
        inbound,
    };
    Ok((filters, hosts))
}

async fn start(config: HostConfig, what: &str) -> Result<FilterHost> {
    let module = config.module.display().to_string();
    FilterHost::start(config).await.map_err(|e| Error::Filter {
        what: format!("{module} on {what}"),
        message: e.to_string(),
    })
}

fn outbound_node(spec: &FilterSpec) -> NodeInfo {
    let node = &spec.node;
    let workload = if node.workload.is_empty() {
        "sandbox-client"
    } else {
        &node.workload
    };
    let namespace = if node.namespace.is_empty() {
        "default"
    } else {
        &node.namespace
    };
    NodeInfo {
        id: if node.id.is_empty() {
            format!("sidecar~127.0.0.1~{workload}.{namespace}~{namespace}.svc.cluster.local")
        } else {
            node.id.clone()
        },
        workload: workload.to_owned(),
        namespace: namespace.to_owned(),
        labels: node.labels.clone(),
    }
}

/// The node of a pod running `subset` of `host` (`reviews.shop.svc...`, `v2` → workload
/// `reviews-v2` in namespace `shop`, labelled `app: reviews, version: v2`).
fn inbound_node(host: &str, subset: &str) -> NodeInfo {
    let mut labels = host.split('.');
    let app = labels.next().unwrap_or(host);
    let namespace = labels.next().unwrap_or("default");
    let workload = format!("{app}-{subset}");
    NodeInfo {
        id: format!("sidecar~127.0.0.1~{workload}.{namespace}~{namespace}.svc.cluster.local"),
        workload,
        namespace: namespace.to_owned(),
        labels: [
            ("app".to_owned(), app.to_owned()),
            ("version".to_owned(), subset.to_owned()),
        ]
        .into(),
    }
}
