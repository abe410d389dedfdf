//! Everything a demo scenario runs, started in-process on free local ports: the fledge agent
//! over a fresh folder holding the scenario's Rollout and VirtualService, the stable and canary
//! backends, the mesh with the real filter (client role on the outbound proxy, server role on
//! an inbound listener in front of each backend), and the open-loop load. The agent
//! can be stopped (as a crash would) and started again on the same folder and ports: it runs on
//! a runtime of its own, as it would in a process of its own, and stopping it ends that runtime
//! with every task and connection on it, so the filters see their streams drop and reconnect.
//! A scenario that names workloads also gets their Deployment files and `pods`, the stand-in
//! that brings their status along.
//!
//! It observes; it never decides. Every rollout decision is the agent's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fledge_agent::cli::ApiClient;
use fledge_agent::local::{LocalAgent, Options};
use serde_json::{Value, json};

use fledge_sandbox::config::{DestinationSpec, FilterSpec, SubsetSpec};
use fledge_sandbox::{Backend, BackendConfig, Mesh, SandboxConfig};

use crate::approval::Approval;
use crate::pods::{self, Pods};
use crate::progress::{self, Progress};
use crate::prometheus::LocalPrometheus;
use crate::scenario::{
    self, CANARY, HOST, NAME, NAMESPACE, STABLE, Scenario, virtual_service_yaml,
};
use crate::traffic::{Slice, Traffic, TrafficConfig};
use crate::{DemoConfig, Error, Result};

/// The gRPC cluster the filter's plugin configuration names for the agent.
/// How long the demo's pods take to become ready, one after the other.
const POD_STARTUP: Duration = Duration::from_secs(2);
const AGENT_CLUSTER: &str = "outbound|9090||fledge-agent.fledge-system.svc.cluster.local";
/// The file names in the rollout folder.
pub const ROLLOUT_FILE: &str = "rollout.yaml";
pub const VIRTUAL_SERVICE_FILE: &str = "virtualservice.yaml";

/// One observation of the rollout, made once per progress line.
#[derive(Debug, Clone)]
pub struct Observation {
    pub elapsed: Duration,
    /// The rollout as the agent's API answered; None while it did not.
    pub rollout: Option<Value>,
}

/// The running scenario.
pub struct Stack {
    pub scenario: Scenario,
    /// The folder the agent reads and writes.
    pub dir: PathBuf,
    pub stable: Backend,
    pub canary: Backend,
    /// The approval service and chat the scenario's webhooks call, if it has any.
    pub approval: Option<Approval>,
    agent: Option<Agent>,
    options: Options,
    api: ApiClient,
    mesh: Option<Mesh>,
    traffic: Option<Traffic>,
    started: Instant,
    /// Every observation so far.
    pub observations: Vec<Observation>,
    /// Every finished slice of load so far.
    pub slices: Vec<Slice>,
    answered: BTreeMap<String, u64>,
    /// The scenario's Prometheus, if it gates on a metric.
    _prometheus: Option<LocalPrometheus>,
    /// The Deployment controller's stand-in, when the scenario names workloads.
    pods: Option<Pods>,
}

impl Stack {
    /// Writes the scenario's files into a fresh folder and starts everything, load included.
    pub async fn start(config: &DemoConfig) -> Result<Stack> {
        let scenario = config.scenario;
        let dir = fresh_dir(scenario)?;
        write(&dir.join(VIRTUAL_SERVICE_FILE), &virtual_service_yaml())?;
        let approval = match scenario.approval_after(config.hold) {
            Some(after) => Some(
                Approval::start(after)
                    .await
                    .map_err(|source| Error::Approval { source })?,
            ),
            None => None,
        };
        let mut rollout = scenario.rollout_yaml(config.hold, config.interval);
        if let Some(a) = &approval {
            rollout.push_str(&scenario.webhooks_yaml(&a.url("approve"), &a.url("chat")));
        }
        write(&dir.join(ROLLOUT_FILE), &rollout)?;
        let deployments = scenario::deployments(scenario);
        for (file, yaml) in &deployments {
            write(&dir.join(file), yaml)?;
        }
        let pods = (!deployments.is_empty()).then(|| {
            let files = deployments.into_iter().map(|(file, _)| file).collect();
            Pods::start(dir.clone(), files, POD_STARTUP)
        });
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let prometheus = LocalPrometheus::start(scenario).await?;
        let mut options = Options {
            dir: dir.clone(),
            grpc: any,
            http: any,
            tick: config.tick,
            prometheus: prometheus.as_ref().map(|p| p.prometheus.url().to_owned()),
        };
        let agent = Agent::start(options.clone()).await?;
        let agent_addrs = (agent.local.grpc_addr, agent.local.http_addr);
        // A restarted agent comes back on the same ports, so the filters and API client find it.
        (options.grpc, options.http) = agent_addrs;
        let api = ApiClient::new(&format!("http://{}", options.http))?;

        let backend = |version: &str, behaviour, seed| {
            let mut b = BackendConfig::new(version).behaviour(behaviour);
            b.seed = seed;
            Backend::start(b)
        };
        let stable = backend(STABLE, scenario.stable_behaviour(), config.seed).await?;
        let canary = backend(CANARY, scenario.canary_behaviour(), config.seed + 1).await?;

        let mut mesh_config = SandboxConfig::new(any, dir.join(VIRTUAL_SERVICE_FILE));
        mesh_config.reload_interval_ms = 50;
        mesh_config.agent = Some(options.grpc);
        mesh_config.filter = Some(FilterSpec {
            module: config.module.clone(),
            config: json!({
                "agent": {"cluster": AGENT_CLUSTER},
                "role": "auto",
                "report_interval_ms": config.report_interval.as_millis() as u64,
            }),
            vm_config: String::new(),
            workers: 2,
            node: Default::default(),
        });
        // Every backend sits behind its own sidecar (the filter in the server role): mirrored
        // copies are recorded there, and so is the live traffic they are judged against.
        let behind_sidecar = |backend: &Backend| SubsetSpec::Full {
            address: backend.addr(),
            inbound: Some(any),
        };
        mesh_config.destinations.push(DestinationSpec {
            host: HOST.into(),
            port: 9080,
            subsets: [
                (STABLE.to_owned(), behind_sidecar(&stable)),
                (CANARY.to_owned(), behind_sidecar(&canary)),
            ]
            .into(),
        });
        let mesh = Mesh::start(mesh_config).await?;
        let traffic = Traffic::start(TrafficConfig {
            target: mesh.addr(),
            rate: config.rate,
            beta_share: scenario.beta_share(),
            users: config.users,
            slice: Duration::from_secs(1),
        });
        Ok(Stack {
            scenario,
            dir,
            stable,
            canary,
            approval,
            agent: Some(agent),
            options,
            api,
            mesh: Some(mesh),
            traffic: Some(traffic),
            started: Instant::now(),
            observations: Vec::new(),
            slices: Vec::new(),
            answered: BTreeMap::new(),
            _prometheus: prometheus,
            pods,
        })
    }

    /// The agent's gRPC and HTTP addresses (kept across restarts).
    pub fn agent_addrs(&self) -> (SocketAddr, SocketAddr) {
        (self.options.grpc, self.options.http)
    }

    /// The running agent, if any.
    pub fn agent(&self) -> Option<&LocalAgent> {
        self.agent.as_ref().map(|a| &a.local)
    }

    /// The mesh's outbound proxy address.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.mesh.as_ref().map(Mesh::addr)
    }

    /// Stops the agent as a crash would: nothing is flushed.
    pub fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop();
        }
    }

    /// Starts the agent again on the same folder and ports.
    pub async fn start_agent(&mut self) -> Result<()> {
        if self.agent.is_none() {
            // The old listeners close as their tasks wind down; retry the bind briefly.
            let mut tries = 0;
            let agent = loop {
                match Agent::start(self.options.clone()).await {
                    Ok(agent) => break agent,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        tracing::debug!(error = %e, "agent restart: retrying the bind");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            self.agent = Some(agent);
        }
        Ok(())
    }

    /// The rollout as the agent's API answers, None when the agent does not answer.
    pub async fn rollout(&self) -> Option<Value> {
        self.api.get(NAME, NAMESPACE).await.ok()
    }

    /// Takes the finished load, asks the agent, and returns the progress line.
    pub async fn observe(&mut self) -> Progress {
        let fresh = self
            .traffic
            .as_mut()
            .map(Traffic::finished)
            .unwrap_or_default();
        self.take(fresh.clone());
        let rollout = self.rollout().await;
        let elapsed = self.started.elapsed();
        let reports: Vec<_> = fresh.iter().map(|s| &s.report).collect();
        let line = Progress::read(
            elapsed,
            rollout.as_ref(),
            &self.answered,
            self.canary.counts().shadow,
            &reports,
        );
        self.observations.push(Observation { elapsed, rollout });
        line
    }

    fn take(&mut self, slices: Vec<Slice>) {
        for slice in &slices {
            for (version, n) in &slice.report.versions {
                *self.answered.entry(version.clone()).or_default() += n;
            }
        }
        self.slices.extend(slices);
    }

    /// The replicas of each version's Deployment (`pods: v1 3 (3 ready) · v2 1 (1 ready)`),
    /// when the scenario names workloads.
    pub fn pods_line(&self) -> Option<String> {
        self.pods.as_ref()?;
        let parts: Vec<String> = [STABLE, CANARY]
            .iter()
            .filter_map(|v| pods::describe(&self.dir.join(format!("{NAME}-{v}.yaml")), v))
            .collect();
        Some(format!("    pods: {}", parts.join(" · ")))
    }

    /// The last rollout the agent answered with.
    pub fn last_rollout(&self) -> Option<&Value> {
        self.observations
            .iter()
            .rev()
            .find_map(|o| o.rollout.as_ref())
    }

    /// Whether the last observation saw a final phase.
    pub fn finished(&self) -> bool {
        self.observations
            .last()
            .and_then(|o| o.rollout.as_ref())
            .is_some_and(progress::is_final)
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the load (waiting for its last answers), the mesh and the agent.
    pub async fn shutdown(&mut self) {
        if let Some(traffic) = self.traffic.take() {
            let rest = traffic.stop().await;
            self.take(rest);
        }
        if let Some(mesh) = self.mesh.take() {
            mesh.shutdown().await;
        }
        self.stop_agent();
        self.pods = None;
    }
}

/// The agent on a runtime of its own.
struct Agent {
    local: LocalAgent,
    runtime: tokio::runtime::Runtime,
}

impl Agent {
    async fn start(options: Options) -> Result<Agent> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fledge-agent")
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        let local = runtime
            .spawn(LocalAgent::start(options))
            .await
            .map_err(|e| Error::Runtime {
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(Agent { local, runtime })
    }

    /// Ends every task of the agent, open connections included.
    fn stop(self) {
        self.local.stop();
        self.runtime.shutdown_background();
    }
}

fn fresh_dir(scenario: Scenario) -> Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fledge-demo-{scenario}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn write(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}
