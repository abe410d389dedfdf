//! Fixture builders for the `fledge.v1` wire messages: a `test()` value that is valid as it
//! stands, and methods that change one thing each.
//!
//! ```
//! use fledge_proto::v1::{HostRoute, Report};
//! use fledge_testkit::messages::{HostRouteExt, ReportExt};
//!
//! // Report 2 of the last second: 100 requests to `reviews` v2, 3 failed, each taking 2 ms.
//! let report = Report::test().seq(2).errors(3, 100).latency_us(2_000);
//! let counts = report.series[0].counts.unwrap_or_default();
//! assert_eq!((counts.requests, counts.failures), (100, 3));
//! // A table sending 5 % of `reviews.shop.svc.cluster.local` to v2, sticky on a header.
//! let table = HostRoute::test().split("v1", "v2", 500).sticky_header("x-user-id").table(1);
//! assert_eq!(table.routes[0].split.as_ref().unwrap().canary_basis_points, 500);
//! ```
//!
//! The types live in fledge-proto, so the builders are extension traits: bring them into scope
//! with `use fledge_testkit::messages::*`.

use std::time::{SystemTime, UNIX_EPOCH};

use fledge_proto::v1::{
    Counts, FilterMessage, Hello, HostRoute, Report, Role, RoutingTable, Series, Split, StickyKey,
    Traffic, filter_message, sticky_key,
};
use fledge_proto::{HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// The latency of a series' requests until a test says otherwise, in µs.
pub const DEFAULT_LATENCY_US: u64 = 1_000;

/// `latency_us_hdr` as the filter encodes it: `count` requests, each taking `latency_us`.
pub fn histogram(latency_us: u64, count: u64) -> Vec<u8> {
    let mut h = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG)
        .expect("histogram bounds");
    if count > 0 {
        h.record_n(latency_us.clamp(1, HISTOGRAM_MAX_US), count)
            .expect("a latency within the bounds");
    }
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(&h, &mut bytes)
        .expect("serialize the histogram");
    bytes
}

/// The wall clock in Unix milliseconds, as the filter stamps its report windows.
pub fn now_unix_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.expect("a clock after 1970").as_millis() as i64
}

// === impl Series ===

/// Builders for [`Series`]. The histogram always holds exactly `requests` values, as the agent
/// requires; every request takes the same latency ([`DEFAULT_LATENCY_US`] unless
/// [`SeriesExt::latency_us`] says otherwise, after the counts are set).
pub trait SeriesExt: Sized {
    /// Host `reviews`, version `v2`, live traffic, no requests.
    fn test() -> Self;
    fn host(self, host: &str) -> Self;
    fn version(self, version: &str) -> Self;
    /// Shadow traffic (mirrored copies seen by the canary's inbound listener).
    fn shadow(self) -> Self;
    /// `requests` requests, none failed.
    fn requests(self, requests: u64) -> Self;
    /// `requests` requests of which `failures` failed with a 5xx.
    fn errors(self, failures: u64, requests: u64) -> Self;
    /// Every request took `latency_us` µs. Panics on a series without requests, which has no
    /// latency to set: set the counts first.
    fn latency_us(self, latency_us: u64) -> Self;
    /// `unmeasured` of the requests have no latency or status (the histogram holds the rest).
    fn unmeasured(self, unmeasured: u64) -> Self;
}

impl SeriesExt for Series {
    fn test() -> Self {
        Series {
            host: "reviews".into(),
            version: "v2".into(),
            traffic: Traffic::Live as i32,
            latency_us_hdr: histogram(DEFAULT_LATENCY_US, 0),
            ..Series::default()
        }
    }

    fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

    fn version(mut self, version: &str) -> Self {
        self.version = version.into();
        self
    }

    fn shadow(mut self) -> Self {
        self.traffic = Traffic::Shadow as i32;
        self
    }

    fn requests(self, requests: u64) -> Self {
        self.errors(0, requests)
    }

    fn errors(mut self, failures: u64, requests: u64) -> Self {
        assert!(failures <= requests, "{failures} failures of {requests}");
        self.counts = Some(Counts {
            requests,
            failures,
            errors_5xx: failures,
            ..Counts::default()
        });
        self.latency_us_hdr = histogram(latency_of(&self), requests);
        self
    }

    fn latency_us(mut self, latency_us: u64) -> Self {
        let measured = self.counts.unwrap_or_default().measured();
        assert!(
            measured > 0,
            "latency_us({latency_us}) of a series without requests: set requests or errors first"
        );
        self.latency_us_hdr = histogram(latency_us, measured);
        self
    }

    fn unmeasured(mut self, unmeasured: u64) -> Self {
        let mut counts = self.counts.unwrap_or_default();
        assert!(
            unmeasured <= counts.requests,
            "{unmeasured} unmeasured of {}",
            counts.requests
        );
        counts.unmeasured = unmeasured;
        self.counts = Some(counts);
        self.latency_us_hdr = histogram(latency_of(&self), counts.measured());
        self
    }
}

/// The latency the series' histogram holds (to its precision, which re-encodes to the same
/// histogram), or [`DEFAULT_LATENCY_US`] when it holds none.
fn latency_of(series: &Series) -> u64 {
    Deserializer::new()
        .deserialize::<u64, _>(&mut series.latency_us_hdr.as_slice())
        .ok()
        .filter(|h| !h.is_empty())
        .map_or(DEFAULT_LATENCY_US, |h| h.value_at_quantile(0.5))
}

// === impl Report ===

/// Builders for [`Report`]. The series methods change every series of the report (there is one
/// unless [`ReportExt::with_series`] says otherwise).
pub trait ReportExt: Sized {
    /// Report 1 of the second that ends now (wall clock), one [`SeriesExt::test`] series.
    fn test() -> Self;
    fn seq(self, seq: u64) -> Self;
    /// The window, in Unix milliseconds.
    fn window_ms(self, start: i64, end: i64) -> Self;
    /// Values the filter could not keep (a full table).
    fn dropped(self, dropped: u64) -> Self;
    /// These series instead of the report's.
    fn with_series(self, series: Vec<Series>) -> Self;
    fn host(self, host: &str) -> Self;
    fn version(self, version: &str) -> Self;
    fn shadow(self) -> Self;
    fn requests(self, requests: u64) -> Self;
    fn errors(self, failures: u64, requests: u64) -> Self;
    fn latency_us(self, latency_us: u64) -> Self;
    fn unmeasured(self, unmeasured: u64) -> Self;
    /// The report as a filter sends it.
    fn message(self) -> FilterMessage;
}

impl ReportExt for Report {
    fn test() -> Self {
        let now = now_unix_ms();
        Report {
            seq: 1,
            window_start_unix_ms: now - 1000,
            window_end_unix_ms: now,
            series: vec![Series::test()],
            dropped: 0,
        }
    }

    fn seq(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }

    fn window_ms(mut self, start: i64, end: i64) -> Self {
        (self.window_start_unix_ms, self.window_end_unix_ms) = (start, end);
        self
    }

    fn dropped(mut self, dropped: u64) -> Self {
        self.dropped = dropped;
        self
    }

    fn with_series(mut self, series: Vec<Series>) -> Self {
        self.series = series;
        self
    }

    fn host(self, host: &str) -> Self {
        each(self, |s| s.host(host))
    }

    fn version(self, version: &str) -> Self {
        each(self, |s| s.version(version))
    }

    fn shadow(self) -> Self {
        each(self, Series::shadow)
    }

    fn requests(self, requests: u64) -> Self {
        each(self, |s| s.requests(requests))
    }

    fn errors(self, failures: u64, requests: u64) -> Self {
        each(self, |s| s.errors(failures, requests))
    }

    fn latency_us(self, latency_us: u64) -> Self {
        each(self, |s| s.latency_us(latency_us))
    }

    fn unmeasured(self, unmeasured: u64) -> Self {
        each(self, |s| s.unmeasured(unmeasured))
    }

    fn message(self) -> FilterMessage {
        FilterMessage {
            msg: Some(filter_message::Msg::Report(self)),
        }
    }
}

fn each(mut report: Report, change: impl Fn(Series) -> Series) -> Report {
    report.series = report.series.into_iter().map(change).collect();
    report
}

// === impl Hello ===

/// Builders for [`Hello`].
pub trait HelloExt: Sized {
    /// Proxy `sidecar~10.0.0.1~web-1.shop`, worker 0, holding no table, role unspecified.
    fn test() -> Self;
    fn proxy(self, proxy_id: &str) -> Self;
    fn role(self, role: Role) -> Self;
    /// The revision of the routing table the filter holds.
    fn revision(self, table_revision: u64) -> Self;
    /// The Hello as a filter sends it.
    fn message(self) -> FilterMessage;
}

impl HelloExt for Hello {
    fn test() -> Self {
        Hello {
            proxy_id: "sidecar~10.0.0.1~web-1.shop".into(),
            worker: 0,
            ..Hello::default()
        }
    }

    fn proxy(mut self, proxy_id: &str) -> Self {
        self.proxy_id = proxy_id.into();
        self
    }

    fn role(mut self, role: Role) -> Self {
        self.role = role as i32;
        self
    }

    fn revision(mut self, table_revision: u64) -> Self {
        self.table_revision = table_revision;
        self
    }

    fn message(self) -> FilterMessage {
        FilterMessage {
            msg: Some(filter_message::Msg::Hello(self)),
        }
    }
}

// === impl HostRoute ===

/// Builders for [`HostRoute`].
pub trait HostRouteExt: Sized {
    /// `reviews.shop.svc.cluster.local`: v1 stable, v2 canary at 0 basis points, no rules, no
    /// sticky key, no version header (the filter then writes its default).
    fn test() -> Self;
    fn host(self, host: &str) -> Self;
    /// `canary_basis_points` of 10 000 to `canary`, the rest to `stable`.
    fn split(self, stable: &str, canary: &str, canary_basis_points: u32) -> Self;
    /// Split sticky on this request header.
    fn sticky_header(self, name: &str) -> Self;
    /// The header the filter writes the chosen version into.
    fn version_header(self, name: &str) -> Self;
    /// A routing table of this one route.
    fn table(self, revision: u64) -> RoutingTable;
}

impl HostRouteExt for HostRoute {
    fn test() -> Self {
        HostRoute {
            host: "reviews.shop.svc.cluster.local".into(),
            ..HostRoute::default()
        }
        .split("v1", "v2", 0)
    }

    fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

    fn split(mut self, stable: &str, canary: &str, canary_basis_points: u32) -> Self {
        self.split = Some(Split {
            stable: stable.into(),
            canary: canary.into(),
            canary_basis_points,
        });
        self
    }

    fn sticky_header(mut self, name: &str) -> Self {
        self.sticky_key = Some(StickyKey {
            source: Some(sticky_key::Source::Header(name.into())),
        });
        self
    }

    fn version_header(mut self, name: &str) -> Self {
        self.version_header = name.into();
        self
    }

    fn table(self, revision: u64) -> RoutingTable {
        RoutingTable {
            revision,
            routes: vec![self],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(series: &Series) -> Histogram<u64> {
        Deserializer::new()
            .deserialize(&mut series.latency_us_hdr.as_slice())
            .unwrap()
    }

    #[test]
    fn the_histogram_holds_every_request_at_the_latency() {
        for series in [
            Series::test().errors(3, 100).latency_us(2_000),
            // Changing the counts keeps the latency.
            Series::test().requests(50).latency_us(2_000).errors(3, 100),
        ] {
            let h = decoded(&series);
            assert_eq!(
                {
                    let c = series.counts.unwrap_or_default();
                    (c.requests, c.failures, c.errors_5xx)
                },
                (100, 3, 3)
            );
            assert_eq!(h.len(), 100);
            assert!(h.equivalent(h.value_at_quantile(0.0), 2_000), "{series:?}");
            assert!(h.equivalent(h.value_at_quantile(1.0), 2_000), "{series:?}");
        }
        assert_eq!(decoded(&Series::test()).len(), 0);
        let default = decoded(&Series::test().requests(10));
        assert!(default.equivalent(default.max(), DEFAULT_LATENCY_US));
    }

    #[test]
    #[should_panic(expected = "set requests or errors first")]
    fn a_latency_without_requests_is_refused() {
        let _ = Series::test().latency_us(2_000);
    }

    #[test]
    fn report_methods_change_every_series() {
        let report = Report::test()
            .with_series(vec![Series::test(), Series::test().version("v1")])
            .host("ratings")
            .errors(1, 10)
            .shadow();
        for s in &report.series {
            assert_eq!(
                (
                    s.host.as_str(),
                    s.counts.unwrap_or_default().requests,
                    s.counts.unwrap_or_default().failures,
                    s.traffic,
                ),
                ("ratings", 10, 1, Traffic::Shadow as i32)
            );
        }
        assert_eq!(
            report.window_end_unix_ms - report.window_start_unix_ms,
            1000
        );
    }
}
