//! Checking one report from a filter before anything of it is merged: a report is taken whole
//! or refused whole, with a reason token (for the rejection counter) and a message that names
//! the problem (for the filter's log and the agent's). Every size a client chooses is bounded
//! here ([`MAX_HOST_LEN`], [`MAX_VERSION_LEN`], [`MAX_SERIES`], [`MAX_REQUESTS`]), so sums of
//! accepted counts cannot wrap, and a message quotes at most [`QUOTED`] bytes of a client's
//! string. Pure.

use fledge_proto::v1;

use super::hdr_wire::{self, Layout};
use fledge_core::windows::{SeriesDelta, SeriesKey, Traffic};

/// A host name: at most a DNS name's length.
pub const MAX_HOST_LEN: usize = 253;
/// A version (subset) name: at most a Kubernetes label value's length.
pub const MAX_VERSION_LEN: usize = 63;
/// Series in one report. A filter keeps 256 by default; old filters report every host they see.
pub const MAX_SERIES: usize = 4096;
/// Requests of one series in one report (2^40, about 10^12): far beyond any proxy's second, and
/// small enough that the agent's sums over millions of reports cannot wrap.
pub const MAX_REQUESTS: u64 = 1 << 40;
/// How much of a client's string a message quotes.
pub const QUOTED: usize = 64;

/// `s` for a message: whole when short, else its first [`QUOTED`] bytes (at a character
/// boundary) and its length.
pub fn quote(s: &str) -> String {
    if s.len() <= QUOTED {
        return s.to_string();
    }
    let mut end = QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// A short stable token. From `validate`: `window`, `clock`, `series`, `counts`,
    /// `histogram`; from the stream's session: `before_hello`, `empty`, `hello`, `seq`, `rate`,
    /// `peer_identity`, `peer_namespace`; from the
    /// gRPC adapter: `decode`, `too_large`, `hello_timeout`, `idle`.
    pub reason: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A report that passed every check, decoded.
#[derive(Debug)]
pub struct ValidReport {
    /// The unix second its window ends in: the bucket it is merged into.
    pub second: i64,
    pub series: Vec<(SeriesKey, SeriesDelta)>,
    pub dropped: u64,
}

/// Checks a Hello's strings against their bounds (a proxy id of at most 512 bytes, names of at
/// most a DNS name's, a version label of at most a label value's, a build of at most 128).
pub fn validate_hello(hello: &v1::Hello) -> Result<(), Rejection> {
    for (field, value, max) in [
        ("proxy_id", &hello.proxy_id, 512),
        ("workload", &hello.workload, MAX_HOST_LEN),
        ("namespace", &hello.namespace, MAX_HOST_LEN),
        ("version_label", &hello.version_label, MAX_VERSION_LEN),
        ("filter_build", &hello.filter_build, 128),
    ] {
        if value.len() > max {
            return Err(Rejection::new(
                "hello",
                format!("Hello {field} {} is longer than {max} bytes", quote(value)),
            ));
        }
    }
    Ok(())
}

/// Checks `report` against the agent's clock `now_ms`; windows ending more than `max_skew_ms`
/// away from it are refused (a wrong clock would put data into the wrong step).
pub fn validate(
    report: &v1::Report,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<ValidReport, Rejection> {
    let seq = report.seq;
    let (start, end) = (report.window_start_unix_ms, report.window_end_unix_ms);
    if end < start {
        return Err(Rejection::new(
            "window",
            format!("report {seq}: window ends ({end} ms) before it starts ({start} ms)"),
        ));
    }
    if (end - now_ms).abs() > max_skew_ms {
        return Err(Rejection::new(
            "clock",
            format!(
                "report {seq}: window end {end} ms is {} s from the agent's clock (limit {} s); check the proxy's clock",
                (end - now_ms) / 1000,
                max_skew_ms / 1000
            ),
        ));
    }
    if report.series.len() > MAX_SERIES {
        return Err(Rejection::new(
            "series",
            format!(
                "report {seq}: {} series are more than the {MAX_SERIES} a report may carry",
                report.series.len()
            ),
        ));
    }
    let mut series = Vec::with_capacity(report.series.len());
    let highest_us = Layout::fledge().highest_value();
    for (i, s) in report.series.iter().enumerate() {
        if s.host.is_empty() {
            return Err(Rejection::new(
                "series",
                format!("report {seq}: series[{i}] has no host"),
            ));
        }
        for (field, value, max) in [
            ("host", &s.host, MAX_HOST_LEN),
            ("version", &s.version, MAX_VERSION_LEN),
        ] {
            if value.len() > max {
                return Err(Rejection::new(
                    "series",
                    format!(
                        "report {seq}: series[{i}] {field} {} is longer than {max} bytes",
                        quote(value)
                    ),
                ));
            }
        }
        let name = |s: &v1::Series| {
            format!(
                "report {seq}: series[{i}] {} {}",
                quote(&s.host),
                quote(&s.version)
            )
        };
        let traffic = match v1::Traffic::try_from(s.traffic) {
            Ok(v1::Traffic::Live) => Traffic::Live,
            Ok(v1::Traffic::Shadow) => Traffic::Shadow,
            Err(_) => {
                return Err(Rejection::new(
                    "series",
                    format!("{}: unknown traffic {}", name(s), s.traffic),
                ));
            }
        };
        // An absent `counts` is proto3's empty message: no requests.
        let counts = s.counts.unwrap_or_default();
        if counts.requests > MAX_REQUESTS {
            return Err(Rejection::new(
                "counts",
                format!(
                    "{}: requests {} is more than {MAX_REQUESTS} in one report",
                    name(s),
                    counts.requests
                ),
            ));
        }
        if counts.unmeasured > counts.requests {
            return Err(Rejection::new(
                "counts",
                format!(
                    "{}: unmeasured {} > requests {}",
                    name(s),
                    counts.unmeasured,
                    counts.requests
                ),
            ));
        }
        // Unmeasured requests are in no other count, so each is within the measured ones.
        let measured = counts.measured();
        let (noun, unmeasured) = match counts.unmeasured {
            0 => ("requests", String::new()),
            u => (
                "measured requests",
                format!(" ({u} of {} unmeasured)", counts.requests),
            ),
        };
        for (field, count) in counts.named().into_iter().skip(1).take(6) {
            if count > measured {
                return Err(Rejection::new(
                    "counts",
                    format!(
                        "{}: {field} {count} > {noun} {measured}{unmeasured}",
                        name(s)
                    ),
                ));
            }
        }
        let mut delta = SeriesDelta {
            counts,
            latency: Vec::new(),
        };
        if measured > 0 || !s.latency_us_hdr.is_empty() {
            let counters = hdr_wire::decode(&s.latency_us_hdr).map_err(|e| {
                Rejection::new(
                    "histogram",
                    format!("{}: latency_us_hdr does not decode: {e}", name(s)),
                )
            })?;
            if counters.total != measured {
                return Err(Rejection::new(
                    "counts",
                    format!(
                        "{}: latency histogram holds {} samples but {noun} is {measured}{unmeasured}",
                        name(s),
                        counters.total,
                    ),
                ));
            }
            if let Some(&(us, _)) = counters.values.last().filter(|(us, _)| *us > highest_us) {
                return Err(Rejection::new(
                    "histogram",
                    format!(
                        "{}: latency_us_hdr out of fledge's range: {us} µs is above {highest_us} µs",
                        name(s)
                    ),
                ));
            }
            delta.latency = counters.values;
        }
        series.push((SeriesKey::new(&s.host, &s.version, traffic), delta));
    }
    Ok(ValidReport {
        second: end.div_euclid(1000),
        series,
        dropped: report.dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2Serializer};

    pub(crate) fn hdr(values: &[u64]) -> Vec<u8> {
        let mut h = fledge_core::analysis::latency::new_histogram();
        for v in values {
            h.record(*v).unwrap();
        }
        let mut out = Vec::new();
        V2Serializer::new().serialize(&h, &mut out).unwrap();
        out
    }

    fn series(requests: u64, failures: u64) -> v1::Series {
        v1::Series {
            host: "reviews".into(),
            version: "v2".into(),
            counts: Some(v1::Counts {
                requests,
                failures,
                errors_5xx: failures,
                ..Default::default()
            }),
            latency_us_hdr: hdr(&vec![1500; requests as usize]),
            ..Default::default()
        }
    }

    fn report(series: Vec<v1::Series>) -> v1::Report {
        v1::Report {
            seq: 7,
            window_start_unix_ms: 99_000,
            window_end_unix_ms: 100_000,
            series,
            dropped: 2,
        }
    }

    #[test]
    fn a_good_report_decodes_whole() {
        let r = validate(&report(vec![series(10, 1)]), 100_500, 60_000).unwrap();
        assert_eq!((r.second, r.dropped, r.series.len()), (100, 2, 1));
        let (key, d) = &r.series[0];
        assert_eq!(key, &SeriesKey::new("reviews", "v2", Traffic::Live));
        let c = &d.counts;
        assert_eq!((c.requests, c.failures, c.errors_5xx), (10, 1, 1));
        // 1500 µs falls in the counter for 1496..=1503 µs (2 significant digits).
        assert_eq!(d.latency, vec![(1496, 10)]);
    }

    #[test]
    fn unmeasured_requests_are_kept_apart_from_the_latencies() {
        let mut s = series(6, 1);
        s.counts = Some(v1::Counts {
            requests: 10,
            unmeasured: 4,
            failures: 1,
            errors_5xx: 1,
            ..Default::default()
        });
        let r = validate(&report(vec![s]), 100_500, 60_000).unwrap();
        let (_, d) = &r.series[0];
        assert_eq!(
            (d.counts.requests, d.counts.unmeasured, d.counts.measured()),
            (10, 4, 6)
        );
        assert_eq!(d.latency, vec![(1496, 6)]);
    }

    #[test]
    fn each_problem_is_named() {
        let mut inconsistent = series(10, 0);
        if let Some(c) = inconsistent.counts.as_mut() {
            c.errors_5xx = 11;
        }
        let mut garbage = series(10, 0);
        garbage.latency_us_hdr = vec![1, 2, 3, 4];
        let mut short = series(10, 0);
        short.latency_us_hdr = hdr(&[1500; 9]);
        let mut beyond = series(2, 0);
        beyond.latency_us_hdr = {
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 40, 2).unwrap();
            h.record_n(5_000_000_000, 2).unwrap();
            let mut out = Vec::new();
            V2Serializer::new().serialize(&h, &mut out).unwrap();
            out
        };
        let mut hostless = series(1, 0);
        hostless.host.clear();
        let mut traffic = series(1, 0);
        traffic.traffic = 9;
        let mut backwards = report(vec![]);
        backwards.window_start_unix_ms = 200_000;
        let unmeasured = |requests: u64, unmeasured: u64, failures: u64| {
            let mut s = series(requests.saturating_sub(unmeasured), 0);
            s.counts = Some(v1::Counts {
                requests,
                unmeasured,
                failures,
                errors_5xx: failures,
                ..Default::default()
            });
            s
        };
        let cases = [
            (
                report(vec![unmeasured(10, 11, 0)]),
                100_000,
                "counts",
                "report 7: series[0] reviews v2: unmeasured 11 > requests 10",
            ),
            (
                report(vec![unmeasured(10, 4, 7)]),
                100_000,
                "counts",
                "errors_5xx 7 > measured requests 6 (4 of 10 unmeasured)",
            ),
            (
                {
                    let mut s = unmeasured(10, 4, 0);
                    s.latency_us_hdr = hdr(&[1500; 10]);
                    report(vec![s])
                },
                100_000,
                "counts",
                "latency histogram holds 10 samples but measured requests is 6 (4 of 10 unmeasured)",
            ),
            (
                report(vec![inconsistent]),
                100_000,
                "counts",
                "report 7: series[0] reviews v2: errors_5xx 11 > requests 10",
            ),
            (
                report(vec![garbage]),
                100_000,
                "histogram",
                "report 7: series[0] reviews v2: latency_us_hdr does not decode",
            ),
            (
                report(vec![short]),
                100_000,
                "counts",
                "latency histogram holds 9 samples but requests is 10",
            ),
            (
                report(vec![beyond]),
                100_000,
                "histogram",
                "report 7: series[0] reviews v2: latency_us_hdr out of fledge's range: 4999610368 µs",
            ),
            (
                report(vec![hostless]),
                100_000,
                "series",
                "report 7: series[0] has no host",
            ),
            (
                report(vec![traffic]),
                100_000,
                "series",
                "unknown traffic 9",
            ),
            (
                backwards,
                100_000,
                "window",
                "window ends (100000 ms) before it starts (200000 ms)",
            ),
            (
                report(vec![series(1, 0)]),
                400_000,
                "clock",
                "window end 100000 ms is -300 s from the agent's clock",
            ),
        ];
        for (r, now, reason, message) in cases {
            let err = validate(&r, now, 60_000).unwrap_err();
            assert_eq!(err.reason, reason, "{err}");
            assert!(
                err.message.contains(message),
                "{:?} does not contain {message:?}",
                err.message
            );
        }
    }

    #[test]
    fn random_bytes_as_histogram_never_panic() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let mut s = series(3, 0);
            let len = rng.random_range(0..64);
            s.latency_us_hdr = (0..len).map(|_| rng.random()).collect();
            // Either refused with a reason or (vanishingly rarely) a histogram of 3 samples.
            if let Err(e) = validate(&report(vec![s]), 100_000, 60_000) {
                assert!(["histogram", "counts"].contains(&e.reason));
            }
        }
    }

    #[test]
    fn client_sizes_are_bounded_and_quoted_short() {
        let mut long_host = series(1, 0);
        long_host.host = "h".repeat(3_900_000);
        let mut long_version = series(1, 0);
        long_version.version = "é".repeat(40);
        let mut huge = series(0, 0);
        huge.counts = Some(v1::Counts {
            requests: u64::MAX - 49,
            ..Default::default()
        });
        let many = report((0..=MAX_SERIES).map(|_| series(1, 0)).collect());
        let cases = [
            (
                report(vec![long_host]),
                "series",
                "report 7: series[0] host hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh… (3900000 bytes) is longer than 253 bytes",
            ),
            (
                report(vec![long_version]),
                "series",
                "is longer than 63 bytes",
            ),
            (
                report(vec![huge]),
                "counts",
                "report 7: series[0] reviews v2: requests 18446744073709551566 is more than 1099511627776 in one report",
            ),
            (
                many,
                "series",
                "report 7: 4097 series are more than the 4096",
            ),
        ];
        for (r, reason, message) in cases {
            let err = validate(&r, 100_000, 60_000).unwrap_err();
            assert_eq!(err.reason, reason, "{err}");
            assert!(
                err.message.contains(message),
                "{:?} lacks {message:?}",
                err.message
            );
            assert!(
                err.message.len() < 200,
                "a long message: {} bytes",
                err.message.len()
            );
        }
    }

    #[test]
    fn a_histogram_whose_counts_wrap_is_refused() {
        // Four counters of 2^62 each: their sum does not fit a u64.
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        for v in [1000, 2000, 3000, 5000] {
            h.record_n(v, 1 << 62).unwrap();
        }
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&h, &mut bytes).unwrap();
        let mut s = series(1, 0);
        s.latency_us_hdr = bytes;
        let err = validate(&report(vec![s]), 100_000, 60_000).unwrap_err();
        assert_eq!(err.reason, "histogram", "{err}");
        assert!(
            err.message.contains("add up to more than"),
            "{}",
            err.message
        );
    }
}
