//! The sandbox mesh put together from a [`SandboxConfig`]: the outbound proxy (a client's
//! sidecar) routing by the watched VirtualService file, and one inbound listener (a server's
//! sidecar, filter in the server role) in front of each subset that asks for one. [`Mesh::start`]
//! runs the real `.wasm` through the proxy-wasm host; [`Mesh::start_with`] takes any
//! [`Filters`], or none.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fledge_sandbox_host::FilterHost;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::task::JoinHandle;

use crate::Result;
use crate::config::SandboxConfig;
use crate::filter::Filters;
use crate::listener::Listener;
use crate::proxy::{Mode, Proxy, ProxyStats};
use crate::watch::Routes;

/// A running sandbox mesh. Dropping it stops every listener and the file watch.
pub struct Mesh {
    outbound: Arc<Proxy>,
    inbound: BTreeMap<(String, String), (Arc<Proxy>, SocketAddr)>,
    routes: Arc<Routes>,
    listeners: Vec<Listener>,
    watch: JoinHandle<()>,
    addr: SocketAddr,
    _filters: Filters,
    hosts: Vec<FilterHost>,
}

impl Mesh {
    /// Starts the mesh with the filter module the config names (if any), loaded in the
    /// proxy-wasm host: client role on the outbound proxy, server role on inbound listeners.
    pub async fn start(config: SandboxConfig) -> Result<Mesh> {
        let (filters, hosts) = crate::wasm::filters(&config).await?;
        let mut mesh = Mesh::start_with(config, filters).await?;
        mesh.hosts = hosts;
        Ok(mesh)
    }

    /// Starts the mesh with the given filters (the config's `filter` section is not read).
    pub async fn start_with(config: SandboxConfig, filters: Filters) -> Result<Mesh> {
        let routes = Routes::load(&config.virtual_service)?;
        let mut listeners = Vec::new();
        let mut inbound = BTreeMap::new();
        let mut inbound_addrs = HashMap::new();
        for destination in &config.destinations {
            for (subset, spec) in &destination.subsets {
                let Some(listen) = spec.inbound() else {
                    continue;
                };
                let key = (destination.host.clone(), subset.clone());
                let mode = Mode::Inbound {
                    upstream: spec.address(),
                    cluster_name: format!("inbound|{}||", spec.address().port()),
                };
                let proxy = Arc::new(Proxy::new(
                    mode,
                    filters.inbound.get(&key).cloned(),
                    seed(&key),
                ));
                let listener = Listener::start(listen, handler(&proxy)).await?;
                tracing::info!(host = %key.0, subset = %key.1, addr = %listener.addr(), "inbound listener");
                inbound_addrs.insert(key.clone(), listener.addr());
                inbound.insert(key, (proxy, listener.addr()));
                listeners.push(listener);
            }
        }
        let interval = Duration::from_millis(config.reload_interval_ms.max(1));
        let mode = Mode::Outbound {
            routes: Arc::clone(&routes),
            config: Arc::new(config.clone()),
            inbound: inbound_addrs,
        };
        let outbound = Arc::new(Proxy::new(mode, filters.outbound.clone(), 0x5eed));
        let listener = Listener::start(config.listen, handler(&outbound)).await?;
        let addr = listener.addr();
        tracing::info!(%addr, virtual_service = %config.virtual_service.display(), "sandbox mesh listening");
        listeners.push(listener);
        let watch = routes.watch(interval);
        Ok(Mesh {
            outbound,
            inbound,
            routes,
            listeners,
            watch,
            addr,
            _filters: filters,
            hosts: Vec::new(),
        })
    }

    /// The outbound proxy's address: send client requests here.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The inbound listener in front of a subset, if the config asked for one.
    pub fn inbound_addr(&self, host: &str, subset: &str) -> Option<SocketAddr> {
        self.inbound
            .get(&(host.to_owned(), subset.to_owned()))
            .map(|(_, a)| *a)
    }

    /// The routes in force: reload counts and the last reload error.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    /// The outbound proxy's counters.
    pub fn stats(&self) -> ProxyStats {
        self.outbound.stats()
    }

    /// The proxy-wasm hosts [`Mesh::start`] started: outbound first, then the inbound ones.
    pub fn filter_hosts(&self) -> &[FilterHost] {
        &self.hosts
    }

    /// Stops the listeners and file watch, then shuts the filter hosts down (their ticks and
    /// gRPC streams end).
    pub async fn shutdown(mut self) {
        self.watch.abort();
        self.listeners.clear();
        for host in std::mem::take(&mut self.hosts) {
            host.shutdown().await;
        }
    }

    /// An inbound listener's counters.
    pub fn inbound_stats(&self, host: &str, subset: &str) -> Option<ProxyStats> {
        self.inbound
            .get(&(host.to_owned(), subset.to_owned()))
            .map(|(p, _)| p.stats())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.watch.abort();
        self.listeners.clear();
    }
}

/// A boxed response future of the proxy.
type Handling = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

fn handler(
    proxy: &Arc<Proxy>,
) -> impl Fn(Request<Incoming>) -> Handling + Clone + Send + Sync + 'static {
    let proxy = Arc::clone(proxy);
    move |request| Box::pin(Arc::clone(&proxy).handle(request))
}

fn seed(key: &(String, String)) -> u64 {
    key.0
        .bytes()
        .chain(key.1.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
