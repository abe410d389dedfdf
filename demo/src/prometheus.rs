//! The local Prometheus of the scenarios with a metric gate (`cpu-gate`): the `prometheus`
//! binary on a loopback port (`fledge_testkit::prometheus`), scraping every second an exporter
//! that reports each version's CPU as the scenario's [`CpuStory`](crate::scenario::CpuStory)
//! tells (the canary's climbs after a while). The agent's `--prometheus-url`
//! points at it. Without the binary the demo stops and says how to install it.

use fledge_testkit::prometheus::{self, Exporter, Prometheus};

use crate::scenario::{CANARY, CPU_METRIC, STABLE, Scenario};
use crate::{Error, Result};

/// A running Prometheus and the exporter it scrapes; both stop when dropped.
pub struct LocalPrometheus {
    pub prometheus: Prometheus,
    exporter: Exporter,
}

impl LocalPrometheus {
    /// Starts them when `scenario` gates on a metric (None otherwise), once the first scrape
    /// is in.
    pub async fn start(scenario: Scenario) -> Result<Option<LocalPrometheus>> {
        let Some(cpu) = scenario.cpu() else {
            return Ok(None);
        };
        if !prometheus::installed() {
            return Err(Error::Prometheus(format!(
                "scenario {scenario} needs Prometheus and `{}` does not run: install it \
                 (`sudo apt-get install prometheus` on Debian or Ubuntu, or ./dev test, which \
                 installs it) or set FLEDGE_PROMETHEUS to the binary",
                prometheus::binary()
            )));
        }
        let series = |version: &str| format!("{CPU_METRIC}{{version=\"{version}\"}}");
        let started = tokio::task::spawn_blocking(move || {
            let exporter = Exporter::start();
            exporter.set(&series(STABLE), cpu.stable);
            exporter.set(&series(CANARY), cpu.canary);
            let prometheus = Prometheus::start(&[exporter.addr()]).map_err(Error::Prometheus)?;
            prometheus
                .wait_for(CPU_METRIC, std::time::Duration::from_secs(30))
                .map_err(Error::Prometheus)?;
            Ok::<_, Error>(LocalPrometheus {
                prometheus,
                exporter,
            })
        })
        .await
        .map_err(|e| Error::Prometheus(e.to_string()))??;
        let canary = started.exporter.clone();
        tokio::spawn(async move {
            tokio::time::sleep(cpu.climbs_after).await;
            canary.set(&series(CANARY), cpu.canary_later);
        });
        Ok(Some(started))
    }
}
