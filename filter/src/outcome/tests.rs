use super::*;

#[test]
fn grpc_requests_are_told_by_content_type() {
    for yes in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web+proto",
        "Application/GRPC",
        "application/grpc;charset=utf-8",
    ] {
        assert!(is_grpc(yes.as_bytes()), "{yes}");
    }
    for no in [
        "",
        "application/json",
        "application/grpcx",
        "application/gr",
        "text/application/grpc",
    ] {
        assert!(!is_grpc(no.as_bytes()), "{no}");
    }
}

#[test]
fn outcomes_are_classified_from_code_grpc_status_and_flags() {
    let cases = [
        // (code, grpc, flags, 5xx, 4xx, grpc_err, reset, timeout)
        (Some(200), None, 0, false, false, false, false, false),
        (
            Some(503),
            None,
            flags::UPSTREAM_CONNECTION_FAILURE,
            true,
            false,
            false,
            true,
            false,
        ),
        (
            Some(504),
            None,
            flags::UPSTREAM_REQUEST_TIMEOUT,
            true,
            false,
            false,
            false,
            true,
        ),
        (Some(404), None, 0, false, true, false, false, false),
        (Some(200), Some(14), 0, false, false, true, false, false),
        (Some(200), Some(0), 0, false, false, false, false, false),
        (
            None,
            None,
            flags::UPSTREAM_REMOTE_RESET,
            false,
            false,
            false,
            true,
            false,
        ),
        (
            Some(0),
            None,
            flags::DURATION_TIMEOUT,
            false,
            false,
            false,
            false,
            true,
        ),
        (
            Some(499),
            None,
            flags::STREAM_IDLE_TIMEOUT,
            false,
            true,
            false,
            false,
            true,
        ),
        (
            Some(200),
            None,
            0x100, /* NR: not ours */
            false,
            false,
            false,
            false,
            false,
        ),
    ];
    for (code, grpc, fl, e5, e4, ge, reset, timeout) in cases {
        let o = Outcome::of(&Facts {
            duration_ns: 2_500_000,
            response_code: code,
            response_flags: fl,
            grpc_status: grpc,
        });
        let got = (o.error_5xx, o.error_4xx, o.grpc_error, o.reset, o.timeout);
        assert_eq!(
            got,
            (e5, e4, ge, reset, timeout),
            "{code:?} {grpc:?} {fl:#x}"
        );
        assert_eq!(o.latency_us, 2500);
    }
}

#[test]
fn version_comes_from_decision_then_cluster_then_label() {
    let cases = [
        (Some("v3"), Some("outbound|80|v2|reviews"), Some("v1"), "v3"),
        (
            None,
            Some("outbound|80|v2|reviews.shop.svc.cluster.local"),
            Some("v1"),
            "v2",
        ),
        (None, Some("outbound|80||reviews"), Some("v1"), "v1"),
        (None, Some("inbound|9080||"), Some("v1"), "v1"),
        (None, Some("PassthroughCluster"), None, "unknown"),
        (None, None, None, "unknown"),
        (None, None, Some(""), "unknown"),
    ];
    for (decided, cluster, label, expected) in cases {
        assert_eq!(
            version_of(decided, cluster, label),
            expected,
            "{decided:?} {cluster:?}"
        );
    }
}

/// A host answering some properties, recording which paths were read.
#[derive(Default)]
struct Host {
    values: Vec<(&'static [u8], Vec<u8>)>,
    now_ns: Option<u64>,
    read: std::cell::RefCell<Vec<&'static str>>,
}

impl Properties for Host {
    fn get(&self, path: &[u8]) -> Option<Vec<u8>> {
        let name = [
            (paths::DURATION, "duration"),
            (paths::START_TIME, "time"),
            (paths::RESPONSE_CODE, "code"),
            (paths::RESPONSE_FLAGS, "flags"),
            (paths::GRPC_STATUS, "grpc_status"),
        ]
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("?", |(_, name)| name);
        self.read.borrow_mut().push(name);
        self.values
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, v)| v.clone())
    }

    fn now_ns(&self) -> Option<u64> {
        self.now_ns
    }
}

fn le(n: i64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn facts_are_read_from_envoy_bytes_or_text_and_never_guessed() {
    use paths::*;
    const UF: i64 = flags::UPSTREAM_CONNECTION_FAILURE as i64;
    let s = 1_000_000_000u64;
    let ok = |duration_ns, response_code, response_flags, grpc_status| {
        Ok(Facts {
            duration_ns,
            response_code,
            response_flags,
            grpc_status,
        })
    };
    type Case = (
        &'static str,
        Vec<(&'static [u8], Vec<u8>)>,
        Option<u64>,
        bool,
        Result<Facts, Unmeasured>,
    );
    let cases: Vec<Case> = vec![
        (
            "Envoy",
            vec![
                (DURATION, le(2_500_000)),
                (RESPONSE_CODE, le(200)),
                (RESPONSE_FLAGS, le(0)),
            ],
            None,
            false,
            ok(2_500_000, Some(200), 0, None),
        ),
        (
            "nginx text",
            vec![(DURATION, text("0.254")), (RESPONSE_CODE, text("503"))],
            None,
            false,
            ok(254_000_000, Some(503), 0, None),
        ),
        (
            "start time as text",
            vec![
                (START_TIME, text("1718000000.100")),
                (RESPONSE_CODE, text("200")),
            ],
            Some(1_718_000_000 * s + 354_000_000),
            false,
            ok(254_000_000, Some(200), 0, None),
        ),
        (
            "an 8-character start time is text",
            vec![(START_TIME, text("17180000")), (RESPONSE_CODE, le(200))],
            Some(17_180_000 * s + s / 2),
            false,
            ok(s / 2, Some(200), 0, None),
        ),
        (
            "start time as Envoy nanoseconds",
            vec![(START_TIME, le(5 * s as i64)), (RESPONSE_CODE, le(200))],
            Some(6 * s),
            false,
            ok(s, Some(200), 0, None),
        ),
        (
            "an unreadable duration falls back to the start time",
            vec![
                (DURATION, vec![1, 2, 3, 4]),
                (START_TIME, le(5 * s as i64)),
                (RESPONSE_CODE, le(200)),
            ],
            Some(6 * s),
            false,
            ok(s, Some(200), 0, None),
        ),
        (
            "no latency at all",
            vec![(RESPONSE_CODE, le(200))],
            Some(6 * s),
            false,
            Err(Unmeasured::Latency),
        ),
        (
            "a start time but no clock",
            vec![(START_TIME, le(5 * s as i64)), (RESPONSE_CODE, le(200))],
            None,
            false,
            Err(Unmeasured::Latency),
        ),
        (
            "a start time after now",
            vec![(START_TIME, le(7 * s as i64)), (RESPONSE_CODE, le(200))],
            Some(6 * s),
            false,
            Err(Unmeasured::Latency),
        ),
        (
            "a 4-byte duration",
            vec![(DURATION, vec![0, 0, 1, 0]), (RESPONSE_CODE, le(200))],
            None,
            false,
            Err(Unmeasured::Latency),
        ),
        (
            "no response and no flag: not a success",
            vec![(DURATION, le(1_000))],
            None,
            false,
            Err(Unmeasured::ResponseCode),
        ),
        (
            "code 0 and no flag",
            vec![(DURATION, le(1_000)), (RESPONSE_CODE, text("0"))],
            None,
            false,
            Err(Unmeasured::ResponseCode),
        ),
        (
            "no response, and a flag says why",
            vec![(DURATION, le(1_000)), (RESPONSE_FLAGS, le(UF))],
            None,
            false,
            ok(1_000, None, UF as u64, None),
        ),
        (
            "an unreadable code",
            vec![(DURATION, le(1_000)), (RESPONSE_CODE, text("5O3"))],
            None,
            false,
            Err(Unmeasured::ResponseCode),
        ),
        (
            "a code beyond u16",
            vec![(DURATION, le(1_000)), (RESPONSE_CODE, le(70_000))],
            None,
            false,
            Err(Unmeasured::ResponseCode),
        ),
        (
            "a 4-byte code",
            vec![(DURATION, le(1_000)), (RESPONSE_CODE, vec![0xf7, 1, 0, 0])],
            None,
            false,
            Err(Unmeasured::ResponseCode),
        ),
        (
            "unreadable flags",
            vec![
                (DURATION, le(1_000)),
                (RESPONSE_CODE, le(503)),
                (RESPONSE_FLAGS, text("UF")),
            ],
            None,
            false,
            Err(Unmeasured::ResponseFlags),
        ),
        (
            "flags as text",
            vec![
                (DURATION, text("0.001")),
                (RESPONSE_CODE, text("503")),
                (RESPONSE_FLAGS, text("32")),
            ],
            None,
            false,
            ok(1_000_000, Some(503), 32, None),
        ),
        (
            "gRPC status as text",
            vec![
                (DURATION, le(1_000)),
                (RESPONSE_CODE, le(200)),
                (GRPC_STATUS, text("14")),
            ],
            None,
            true,
            ok(1_000, Some(200), 0, Some(14)),
        ),
        (
            "a gRPC response without a gRPC status",
            vec![(DURATION, le(1_000)), (RESPONSE_CODE, le(200))],
            None,
            true,
            Err(Unmeasured::GrpcStatus),
        ),
        (
            "an unreadable gRPC status",
            vec![
                (DURATION, le(1_000)),
                (RESPONSE_CODE, le(200)),
                (GRPC_STATUS, vec![14]),
            ],
            None,
            true,
            Err(Unmeasured::GrpcStatus),
        ),
        (
            "a gRPC request reset before any response",
            vec![(DURATION, le(1_000)), (RESPONSE_FLAGS, le(UF))],
            None,
            true,
            ok(1_000, None, UF as u64, None),
        ),
        (
            "plain HTTP ignores the gRPC status",
            vec![
                (DURATION, le(1_000)),
                (RESPONSE_CODE, le(200)),
                (GRPC_STATUS, text("bad")),
            ],
            None,
            false,
            ok(1_000, Some(200), 0, None),
        ),
    ];
    for (name, values, now_ns, grpc, expected) in cases {
        let host = Host {
            values,
            now_ns,
            ..Host::default()
        };
        assert_eq!(Facts::read(&host, grpc), expected, "{name}");
    }
}

#[test]
fn only_the_properties_needed_are_read() {
    let host = Host {
        values: vec![
            (paths::DURATION, le(1_000)),
            (paths::RESPONSE_CODE, le(200)),
        ],
        ..Host::default()
    };
    assert!(Facts::read(&host, false).is_ok());
    assert_eq!(*host.read.borrow(), ["duration", "flags", "code"]);
    let host = Host {
        values: vec![(paths::RESPONSE_CODE, le(200))],
        now_ns: Some(1),
        ..Host::default()
    };
    assert_eq!(Facts::read(&host, true), Err(Unmeasured::Latency));
    assert_eq!(*host.read.borrow(), ["duration", "time"]);
}
