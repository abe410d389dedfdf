//! The demo's open-loop load, cut into back-to-back slices (one second by default) so progress
//! can be shown while it runs: a slice of plain requests and, for the A/B scenario, a slice of
//! requests carrying the cohort header, each started on the clock whatever the previous slice
//! is still waiting for. Every finished slice comes back with its wall-clock start and end, so
//! what clients saw can be set against the agent's decision times. Not a load generator of its
//! own: each slice is one [`load::run`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use fledge_sandbox::load::{self, LoadConfig, LoadReport};

use crate::scenario::{BETA_HEADER, BETA_VALUE, HOST, USER_HEADER};

/// Which part of the load a slice belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cohort {
    /// Requests without the A/B header.
    Plain,
    /// Requests with `x-beta: 1`.
    Beta,
}

/// One finished slice of load.
#[derive(Debug, Clone)]
pub struct Slice {
    pub cohort: Cohort,
    /// When its first request was due.
    pub started: SystemTime,
    /// When its last answer came back.
    pub ended: SystemTime,
    pub report: LoadReport,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// The mesh proxy.
    pub target: SocketAddr,
    /// Requests per second, both cohorts together.
    pub rate: f64,
    /// The share of requests in the A/B cohort.
    pub beta_share: f64,
    /// Distinct user ids (sticky key values).
    pub users: u32,
    pub slice: Duration,
}

/// Load running in the background.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    clock: JoinHandle<JoinSet<()>>,
    finished: mpsc::UnboundedReceiver<Slice>,
}

impl Traffic {
    pub fn start(config: TrafficConfig) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, finished) = mpsc::unbounded_channel();
        let clock = tokio::spawn(run(config, Arc::clone(&stop), sender));
        Traffic {
            stop,
            clock,
            finished,
        }
    }

    /// The slices finished since the last call.
    pub fn finished(&mut self) -> Vec<Slice> {
        let mut out = Vec::new();
        while let Ok(slice) = self.finished.try_recv() {
            out.push(slice);
        }
        out
    }

    /// Starts no new slice, waits for the running ones and returns those not yet taken.
    pub async fn stop(mut self) -> Vec<Slice> {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut running) = (&mut self.clock).await {
            while running.join_next().await.is_some() {}
        }
        self.finished()
    }
}

async fn run(
    config: TrafficConfig,
    stop: Arc<AtomicBool>,
    sender: mpsc::UnboundedSender<Slice>,
) -> JoinSet<()> {
    let cohorts = [
        (Cohort::Plain, config.rate * (1.0 - config.beta_share)),
        (Cohort::Beta, config.rate * config.beta_share),
    ];
    let mut running = JoinSet::new();
    let mut clock = tokio::time::interval(config.slice);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        clock.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        while running.try_join_next().is_some() {}
        for (cohort, rate) in cohorts {
            if rate <= 0.0 {
                continue;
            }
            let mut load =
                LoadConfig::new(config.target, HOST, rate, config.slice).users(config.users);
            load.user_header = USER_HEADER.into();
            if cohort == Cohort::Beta {
                load = load.header(BETA_HEADER, BETA_VALUE);
            }
            let sender = sender.clone();
            running.spawn(async move {
                let started = SystemTime::now();
                match load::run(&load).await {
                    Ok(report) => {
                        let _ = sender.send(Slice {
                            cohort,
                            started,
                            ended: SystemTime::now(),
                            report,
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "a slice of demo load did not run"),
                }
            });
        }
    }
    running
}
