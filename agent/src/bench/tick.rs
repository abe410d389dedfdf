//! `fledge-agent bench tick`: the reconcile loop's cost with many progressing Rollouts. The real
//! controller, planner and judges run over either the local store in a temporary folder (YAML
//! files read every tick, status files written and synced) or an in-memory store that keeps the
//! same objects without I/O, so the loop's own cost shows apart from the files'. Every Rollout
//! is a canary whose stable and canary report healthy traffic each simulated second; the clock
//! is simulated (one tick per second, as the agent runs), so the run takes what the ticks cost.
//! Prints the tick time and the writes per second by kind: status writes happen on a change of
//! phase, step, weight or verdict, and for evidence at most every few seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use fledge_core::ObjectKey;
use fledge_core::judge::Arms;
use fledge_core::rollout::{Rollout, RolloutStatus};
use fledge_core::windows::{SeriesDelta, Traffic, Windows};
use jiff::Timestamp;
use serde_json::Value;

use super::sample_reports;
use crate::controller::Controller;
use crate::metrics::{Metrics, WriteLabel};
use crate::store::{Listing, LocalStore, Result, RolloutEvent, RolloutStore};
use crate::telemetry::Hub;
use crate::telemetry::validate::validate;

/// Which store the loop writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TickStore {
    /// The local store over a temporary folder (what `fledge-agent local` runs).
    Local,
    /// Objects kept in memory, no I/O: the loop's own cost.
    Memory,
}

/// What `bench tick` measured.
#[derive(Clone, Debug)]
pub struct TickResult {
    pub rollouts: usize,
    pub ticks: usize,
    /// Tick times, sorted.
    pub tick_times: Vec<Duration>,
    /// Writes by kind ("status", "virtual_service", "event") over the run.
    pub writes: Vec<(&'static str, u64)>,
    /// Status writes in the second half of the run, once every Rollout is in its step.
    pub steady_status_writes: u64,
    pub steady_secs: u64,
    /// The process's peak resident set at the end, in KiB (Linux only).
    pub peak_rss_kib: Option<u64>,
}

impl TickResult {
    pub fn mean(&self) -> Duration {
        self.tick_times.iter().sum::<Duration>() / self.tick_times.len().max(1) as u32
    }
    pub fn quantile(&self, q: f64) -> Duration {
        let i = ((self.tick_times.len() as f64 - 1.0) * q).round() as usize;
        self.tick_times.get(i).copied().unwrap_or_default()
    }
}

/// A Rollout and its VirtualService, as YAML, for service `i`.
fn objects(i: usize) -> (String, String) {
    let rollout = format!(
        "apiVersion: fledge.dev/v1alpha1
kind: Rollout
metadata: {{name: svc-{i}, namespace: shop, generation: 1}}
spec:
  host: svc-{i}.shop.svc.cluster.local
  stable: v1
  canary: v2
  virtualService: {{name: svc-{i}}}
  strategy:
    canary:
      steps:
        - weight: 10
          pause: {{duration: 10m}}
        - weight: 50
          pause: {{untilAnalysisPasses: true}}
  analysis:
    interval: 2s
    falseAlarm: 0.01
    errors: {{tolerance: 0.25}}
    latency: {{quantile: 0.99, tolerance: 0.2, maxMs: 500}}
"
    );
    let vs = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{i}, namespace: shop}}
spec:
  hosts: [svc-{i}.shop.svc.cluster.local]
  http:
    - name: default
      route:
        - destination: {{host: svc-{i}.shop.svc.cluster.local, subset: v1}}
"
    );
    (rollout, vs)
}

/// The Rollouts and VirtualServices in memory: what the local store keeps in files, without
/// the files.
#[derive(Default)]
struct MemoryStore {
    rollouts: Mutex<Vec<Rollout>>,
    virtual_services: Mutex<HashMap<ObjectKey, Value>>,
}

impl RolloutStore for MemoryStore {
    async fn rollouts(&self) -> Result<Listing> {
        Ok(Listing {
            rollouts: self.rollouts.lock().expect("not poisoned").clone(),
            problems: Vec::new(),
        })
    }
    async fn write_status(&self, rollout: &Rollout, status: &RolloutStatus) -> Result<()> {
        let key = ObjectKey::of(rollout);
        let mut rollouts = self.rollouts.lock().expect("not poisoned");
        if let Some(r) = rollouts.iter_mut().find(|r| ObjectKey::of(r) == key) {
            r.status = Some(status.clone());
        }
        Ok(())
    }
    async fn virtual_service(&self, key: &ObjectKey) -> Result<Value> {
        let vss = self.virtual_services.lock().expect("not poisoned");
        Ok(vss.get(key).cloned().unwrap_or_default())
    }
    async fn write_virtual_service(&self, vs: &Value) -> Result<()> {
        let key = ObjectKey::of_object(vs);
        let mut vss = self.virtual_services.lock().expect("not poisoned");
        vss.insert(key, vs.clone());
        Ok(())
    }
    async fn record_event(&self, _: &Rollout, _: &RolloutEvent) -> Result<()> {
        Ok(())
    }
}

/// `rollouts` canaries over `secs` simulated seconds on `store`.
pub async fn tick(rollouts: usize, secs: u64, store: TickStore) -> anyhow::Result<TickResult> {
    match store {
        TickStore::Memory => {
            let memory = MemoryStore::default();
            for i in 0..rollouts {
                let (rollout, vs) = objects(i);
                let rollout: Rollout = serde_norway::from_str(&rollout).context("a Rollout")?;
                let vs: Value = serde_norway::from_str(&vs).context("a VirtualService")?;
                memory.rollouts.lock().expect("fresh").push(rollout);
                memory
                    .virtual_services
                    .lock()
                    .expect("fresh")
                    .insert(ObjectKey::of_object(&vs), vs);
            }
            run(memory, rollouts, secs).await
        }
        TickStore::Local => {
            let dir =
                std::env::temp_dir().join(format!("fledge-bench-tick-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            for i in 0..rollouts {
                let (rollout, vs) = objects(i);
                std::fs::write(
                    dir.join(format!("svc-{i}.yaml")),
                    format!("{rollout}---\n{vs}"),
                )
                .with_context(|| format!("write into {}", dir.display()))?;
            }
            let result = run(LocalStore::new(&dir), rollouts, secs).await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
    }
}

async fn run<S: RolloutStore + 'static>(
    store: S,
    rollouts: usize,
    secs: u64,
) -> anyhow::Result<TickResult> {
    let now_ms = 1_800_000_000_000;
    // Healthy traffic: the same distribution for stable and canary.
    let deltas: Vec<SeriesDelta> = sample_reports(16, 20, now_ms, 5)
        .iter()
        .flat_map(|r| validate(r, now_ms, 120_000).expect("valid").series)
        .map(|(_, d)| d)
        .collect();
    let arms: Vec<Arms> = (0..rollouts)
        .map(|i| {
            Arms::new(
                &format!("svc-{i}.shop.svc.cluster.local"),
                "v1",
                "v2",
                Traffic::Live,
            )
        })
        .collect();
    // As the agent runs it: only the series the Rollouts read are kept (the cap is unused).
    let telemetry = Arc::new(Mutex::new(Windows::new(crate::serve::RETENTION_SECS, 1)));
    telemetry
        .lock()
        .expect("fresh")
        .keep_only(Default::default());
    let metrics = Arc::new(Metrics::new());
    let controller = Controller::new(store, telemetry.clone(), Hub::new(), metrics.clone());
    let status_writes = || {
        metrics
            .writes
            .get_or_create(&WriteLabel {
                write: "status",
                result: "ok",
            })
            .get()
    };
    let t0 = now_ms / 1000;
    let mut tick_times = Vec::new();
    let mut steady_from = 0;
    for s in 0..secs as i64 {
        let now = t0 + s;
        {
            let mut windows = telemetry.lock().expect("not poisoned");
            for (i, a) in arms.iter().enumerate() {
                let at = i + s as usize;
                let batch = vec![
                    (a.canary.clone(), deltas[at % deltas.len()].clone()),
                    (
                        a.baseline.clone(),
                        deltas[(at * 7 + 3) % deltas.len()].clone(),
                    ),
                ];
                windows.merge(now - 1, batch, 0, now);
            }
        }
        if s == secs as i64 / 2 {
            steady_from = status_writes();
        }
        let start = Instant::now();
        controller
            .tick(Timestamp::from_second(now).context("a simulated time")?)
            .await;
        tick_times.push(start.elapsed());
    }
    tick_times.sort();
    let writes = ["status", "virtual_service", "event"]
        .into_iter()
        .map(|write| {
            let n = metrics
                .writes
                .get_or_create(&WriteLabel {
                    write,
                    result: "ok",
                })
                .get();
            (write, n)
        })
        .collect();
    Ok(TickResult {
        rollouts,
        ticks: tick_times.len(),
        tick_times,
        writes,
        steady_status_writes: status_writes() - steady_from,
        steady_secs: secs - secs / 2,
        peak_rss_kib: super::peak_rss_kib(),
    })
}
