//! The agent's own Prometheus metrics: what it received, rejected and decided, and how long its
//! work took. One registry, created once at start; every family is defined here, never per
//! request or per report. Served as Prometheus text by `http.rs` at `/metrics`.
//!
//! This module counts; it decides nothing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of a rejected report: why it was rejected (a short stable token).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Label of telemetry the agent did not store: the destination host it was for (hosts beyond
/// the first 1,024 are counted together as "(other hosts)").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub host: String,
}

/// Label of a decision: the rollout it was about and what was decided.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub rollout: String,
    pub decision: String,
}

/// Label of one write the controller made: what it wrote and how it ended (`ok`, or the
/// failure's label: `conflict`, `forbidden`, `not_found`, `invalid`, `unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub write: &'static str,
    pub result: &'static str,
}

/// Label of a write's duration: what was written.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteKindLabel {
    pub write: &'static str,
}

/// Label of one attempt to call a webhook: the hook's type (`preRollout`, `notify`, …) and how
/// the attempt ended (`ok`, `not_yet`, `error`: no answer, 5xx, 408 or 429; `refused`: another
/// answer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabel {
    pub hook_type: &'static str,
    pub result: &'static str,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reports accepted and merged.
    pub reports_received: Counter,
    /// Reports rejected, by reason.
    pub reports_rejected: Family<ReasonLabel, Counter>,
    /// Filter streams open now.
    pub streams_connected: Gauge,
    /// Rollout decisions (step advanced, promoted, rolled back, …), by rollout and decision.
    pub decisions: Family<DecisionLabel, Counter>,
    /// The newest routing-table revision pushed to the filters.
    pub routing_revision: Gauge,
    /// Time one analysis tick took over all rollouts, in seconds.
    pub analysis_seconds: Histogram,
    /// Writes to the store (VirtualService, status, event), by what and how they ended.
    pub writes: Family<WriteLabel, Counter>,
    /// Time one write took, in seconds, by what was written.
    pub write_seconds: Family<WriteKindLabel, Histogram>,
    /// Series deltas (one series of one report) for series no Rollout reads, by host.
    pub ignored_series: Family<HostLabel, Counter>,
    /// Requests in those series, by host.
    pub ignored_requests: Family<HostLabel, Counter>,
    /// Series deltas that came after the analysis had read their second, by host.
    pub late_series: Family<HostLabel, Counter>,
    /// Requests in those series, by host.
    pub late_requests: Family<HostLabel, Counter>,
    /// Requests the filters counted but could not measure (a latency or status the proxy did
    /// not give), by host: never judged as successes, and a canary with too many cannot pass.
    pub unmeasured_requests: Family<HostLabel, Counter>,
    /// Requests of series beyond the store's series cap (only when it keeps every series).
    pub over_cap_requests: Counter,
    /// Requests the filters could not place in a series (their own series limit).
    pub filter_dropped_requests: Counter,
    /// Series the telemetry store holds now.
    pub series_stored: Gauge,
    /// Attempts to call a webhook, by the hook's type and how each ended.
    pub webhook_calls: Family<HookLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fledge_agent");
        let reports_received = Counter::default();
        let reports_rejected = Family::<ReasonLabel, Counter>::default();
        let streams_connected = Gauge::default();
        let decisions = Family::<DecisionLabel, Counter>::default();
        let routing_revision = Gauge::default();
        // 100 µs … ~1.6 s: analysis and local writes are fast; a slow API server shows at the top.
        let analysis_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        let writes = Family::<WriteLabel, Counter>::default();
        let write_seconds =
            Family::<WriteKindLabel, Histogram>::new_with_constructor(write_duration as fn() -> _);
        let ignored_series = Family::<HostLabel, Counter>::default();
        let ignored_requests = Family::<HostLabel, Counter>::default();
        let late_series = Family::<HostLabel, Counter>::default();
        let late_requests = Family::<HostLabel, Counter>::default();
        let unmeasured_requests = Family::<HostLabel, Counter>::default();
        let over_cap_requests = Counter::default();
        let filter_dropped_requests = Counter::default();
        let series_stored = Gauge::default();
        let webhook_calls = Family::<HookLabel, Counter>::default();
        registry.register(
            "webhook_calls",
            "Attempts to call a webhook, by hook type and result (ok, not_yet, error, refused)",
            webhook_calls.clone(),
        );
        for (name, help, family) in [
            (
                "ignored_series",
                "Series deltas for series no Rollout reads, dropped at ingest, by host",
                &ignored_series,
            ),
            (
                "ignored_requests",
                "Requests in series no Rollout reads, dropped at ingest, by host",
                &ignored_requests,
            ),
            (
                "late_series",
                "Series deltas that arrived after the analysis read their second, by host",
                &late_series,
            ),
            (
                "late_requests",
                "Requests that arrived after the analysis read their second, by host",
                &late_requests,
            ),
            (
                "unmeasured_requests",
                "Requests the filters could not measure (no latency or status from the proxy), by host",
                &unmeasured_requests,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "over_cap_requests",
            "Requests of series beyond the telemetry store's series cap",
            over_cap_requests.clone(),
        );
        registry.register(
            "filter_dropped_requests",
            "Requests the filters could not place in a series (their series limit)",
            filter_dropped_requests.clone(),
        );
        registry.register(
            "series_stored",
            "Series the telemetry store holds now",
            series_stored.clone(),
        );
        registry.register(
            "reports_received",
            "Telemetry reports accepted and merged",
            reports_received.clone(),
        );
        registry.register(
            "reports_rejected",
            "Telemetry reports rejected, by reason",
            reports_rejected.clone(),
        );
        registry.register(
            "streams_connected",
            "Filter telemetry streams open now",
            streams_connected.clone(),
        );
        registry.register(
            "decisions",
            "Rollout decisions, by rollout and decision",
            decisions.clone(),
        );
        registry.register(
            "routing_revision",
            "Newest routing-table revision pushed to the filters",
            routing_revision.clone(),
        );
        registry.register(
            "analysis_duration_seconds",
            "Time one analysis tick took over all rollouts",
            analysis_seconds.clone(),
        );
        registry.register(
            "writes",
            "Writes to the store (virtual_service, status, event), by result",
            writes.clone(),
        );
        registry.register(
            "write_duration_seconds",
            "Time one write to the store took, by what was written",
            write_seconds.clone(),
        );
        Self {
            registry,
            reports_received,
            reports_rejected,
            streams_connected,
            decisions,
            routing_revision,
            analysis_seconds,
            writes,
            write_seconds,
            ignored_series,
            ignored_requests,
            late_series,
            late_requests,
            unmeasured_requests,
            over_cap_requests,
            filter_dropped_requests,
            series_stored,
            webhook_calls,
        }
    }

    /// Counts what one merge did not store.
    pub fn merged(&self, merged: &fledge_core::windows::Merged, filter_dropped: u64) {
        for (series, requests, list) in [
            (
                &self.ignored_series,
                &self.ignored_requests,
                &merged.ignored,
            ),
            (&self.late_series, &self.late_requests, &merged.late),
        ] {
            for (host, n) in list {
                let label = HostLabel { host: host.clone() };
                series.get_or_create(&label).inc();
                requests.get_or_create(&label).inc_by(*n);
            }
        }
        self.over_cap_requests.inc_by(merged.over_cap_requests);
        self.filter_dropped_requests.inc_by(filter_dropped);
    }

    /// Counts one write of `write` that ended in `result` after `seconds`.
    pub fn wrote(&self, write: &'static str, result: &'static str, seconds: f64) {
        self.writes
            .get_or_create(&WriteLabel { write, result })
            .inc();
        self.write_seconds
            .get_or_create(&WriteKindLabel { write })
            .observe(seconds);
    }

    /// Counts one rejected report under `reason`.
    pub fn rejected(&self, reason: &str) {
        self.reports_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one attempt to call a hook of `hook_type` that ended in `result`.
    pub fn hook_called(&self, hook_type: &'static str, result: &'static str) {
        self.webhook_calls
            .get_or_create(&HookLabel { hook_type, result })
            .inc();
    }

    /// Counts one decision for `rollout`.
    pub fn decided(&self, rollout: &str, decision: &str) {
        self.decisions
            .get_or_create(&DecisionLabel {
                rollout: rollout.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder, and
        // an empty page is a better answer than a crash.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// 100 µs … ~1.6 s: local writes are fast; a slow API server shows at the top.
fn write_duration() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_counts() {
        let m = Metrics::new();
        m.reports_received.inc_by(3);
        m.rejected("histogram_decode");
        m.rejected("histogram_decode");
        m.decided("shop/reviews", "promoted");
        m.routing_revision.set(7);
        m.analysis_seconds.observe(0.002);
        m.wrote("virtual_service", "ok", 0.003);
        m.wrote("virtual_service", "conflict", 0.004);
        m.wrote("status", "ok", 0.001);
        let text = m.render();
        for (needle, why) in [
            ("fledge_agent_reports_received_total 3", "accepted reports"),
            (
                "fledge_agent_reports_rejected_total{reason=\"histogram_decode\"} 2",
                "rejections by reason",
            ),
            (
                "fledge_agent_decisions_total{rollout=\"shop/reviews\",decision=\"promoted\"} 1",
                "decisions",
            ),
            ("fledge_agent_routing_revision 7", "revision gauge"),
            (
                "fledge_agent_analysis_duration_seconds_count 1",
                "analysis time",
            ),
            (
                "fledge_agent_writes_total{write=\"virtual_service\",result=\"conflict\"} 1",
                "writes by result",
            ),
            (
                "fledge_agent_write_duration_seconds_count{write=\"virtual_service\"} 2",
                "write time by kind",
            ),
            (
                "fledge_agent_write_duration_seconds_count{write=\"status\"} 1",
                "write time by kind",
            ),
        ] {
            assert!(
                text.contains(needle),
                "{why}: {needle:?} missing from\n{text}"
            );
        }
    }
}
