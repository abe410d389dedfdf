use std::collections::BTreeMap;

use hdrhistogram::serialization::{Serializer, V2Serializer};

use super::*;
use fledge_core::windows::{SeriesKey, Traffic};

/// The agent's clock in these tests (unix milliseconds).
const NOW_MS: i64 = 1_700_000_000_500;

fn hello(role: i32, table_revision: u64) -> v1::FilterMessage {
    v1::FilterMessage {
        msg: Some(v1::filter_message::Msg::Hello(v1::Hello {
            proxy_id: "sidecar~10.0.0.1~web-1.shop".into(),
            role,
            table_revision,
            ..Default::default()
        })),
    }
}

const CLIENT: i32 = v1::Role::Client as i32;
const SERVER: i32 = v1::Role::Server as i32;
const UNSPECIFIED: i32 = v1::Role::Unspecified as i32;

/// Report `seq` of `requests` to reviews v2, each taking 1.5 ms, whose window ends at the
/// agent's clock.
fn report(seq: u64, requests: u64) -> v1::Report {
    let mut histogram = fledge_core::analysis::latency::new_histogram();
    histogram.record_n(1500, requests).unwrap();
    let mut latency_us_hdr = Vec::new();
    V2Serializer::new()
        .serialize(&histogram, &mut latency_us_hdr)
        .unwrap();
    v1::Report {
        seq,
        window_start_unix_ms: NOW_MS - 1000,
        window_end_unix_ms: NOW_MS,
        series: vec![v1::Series {
            host: "reviews".into(),
            version: "v2".into(),
            counts: Some(v1::Counts {
                requests,
                ..Default::default()
            }),
            latency_us_hdr,
            ..Default::default()
        }],
        dropped: 0,
    }
}

fn sent(report: v1::Report) -> v1::FilterMessage {
    v1::FilterMessage {
        msg: Some(v1::filter_message::Msg::Report(report)),
    }
}

fn empty() -> v1::FilterMessage {
    v1::FilterMessage { msg: None }
}

/// A report whose histogram was cut short: it does not decode.
fn garbled(seq: u64) -> v1::Report {
    let mut r = report(seq, 10);
    r.series[0].latency_us_hdr.truncate(5);
    r
}

fn table(revision: u64) -> v1::RoutingTable {
    v1::RoutingTable {
        revision,
        routes: vec![v1::HostRoute {
            host: "reviews".into(),
            ..Default::default()
        }],
    }
}

/// An action in words, to compare in tables.
fn said(action: &Action) -> String {
    match action {
        Action::Register(hello) => format!("register {}", hello.proxy_id),
        Action::Merge(merge) => {
            let keys: Vec<String> = merge
                .report
                .series
                .iter()
                .map(|(key, delta)| format!("{} x{}", key, delta.counts.requests))
                .collect();
            format!("merge {} at {}", keys.join(", "), merge.report.second)
        }
        Action::Nothing => "nothing".into(),
        Action::Refuse(r) => format!("refuse {}: {}", r.reason, r.message),
    }
}

fn run(messages: Vec<v1::FilterMessage>) -> Vec<String> {
    let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
    messages
        .into_iter()
        .map(|m| said(&session.received(m, NOW_MS)))
        .collect()
}

#[test]
fn hello_must_come_first() {
    let cases = [
        (
            vec![sent(report(1, 5))],
            vec!["refuse before_hello: report 1 came before Hello; send Hello first"],
        ),
        (
            vec![empty()],
            vec!["refuse empty: message carries neither Hello nor Report"],
        ),
        (
            vec![hello(CLIENT, 0), empty()],
            vec![
                "register sidecar~10.0.0.1~web-1.shop",
                "refuse empty: message carries neither Hello nor Report",
            ],
        ),
        (
            vec![hello(CLIENT, 0), sent(report(1, 5))],
            vec![
                "register sidecar~10.0.0.1~web-1.shop",
                "merge reviews v2 (live, client side) x5 at 1700000000",
            ],
        ),
    ];
    for (messages, expected) in cases {
        assert_eq!(run(messages), expected);
    }
}

#[test]
fn the_role_in_hello_says_which_side_reports_measure() {
    for (role, side) in [
        (SERVER, Side::Server),
        (CLIENT, Side::Client),
        (UNSPECIFIED, Side::Client),
        // A role this agent does not know (a newer filter's) is taken as the caller's side.
        (9, Side::Client),
    ] {
        let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
        assert!(matches!(
            session.received(hello(role, 0), NOW_MS),
            Action::Register(h) if h.role == role
        ));
        let Action::Merge(merge) = session.received(sent(report(1, 10)), NOW_MS) else {
            panic!("role {role}: the report was not merged");
        };
        assert_eq!(merge.hosts().collect::<Vec<_>>(), ["reviews"]);
        let mut windows = Windows::new(300, 64);
        merge.into_windows(&mut windows);
        let key = SeriesKey::new("reviews", "v2", Traffic::Live);
        let other = match side {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        };
        let requests = |side| {
            windows
                .window(&key.clone().on(side), 0, i64::MAX)
                .counts
                .requests
        };
        assert_eq!((requests(side), requests(other)), (10, 0), "role {role}");
    }
}

#[test]
fn a_second_hello_changes_nothing() {
    let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
    let actions: Vec<String> = [hello(SERVER, 5), hello(CLIENT, 100), sent(report(1, 3))]
        .into_iter()
        .map(|m| said(&session.received(m, NOW_MS)))
        .collect();
    assert_eq!(
        actions,
        [
            "register sidecar~10.0.0.1~web-1.shop",
            "nothing",
            "merge reviews v2 (live, server side) x3 at 1700000000",
        ]
    );
    // The first Hello's revision still stands.
    assert!(session.offer(&table(6)).is_some());
}

#[test]
fn only_tables_newer_than_the_filters_are_sent() {
    // (revision in Hello, tables offered before Hello, tables offered after it, revisions sent)
    let cases = [
        (0, vec![], vec![1, 1, 3, 2, 4], vec![1, 3, 4]),
        (10, vec![], vec![5, 10, 11, 11], vec![11]),
        (10, vec![], vec![], vec![]),
        // Tables before Hello wait for it: the filter's revision is not known yet.
        (0, vec![7, 8], vec![8], vec![8]),
        (8, vec![7, 9], vec![9], vec![9]),
    ];
    for (hello_revision, before, after, expected) in cases {
        let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
        for &revision in &before {
            assert_eq!(session.offer(&table(revision)), None, "before Hello");
        }
        session.received(hello(CLIENT, hello_revision), NOW_MS);
        let mut revisions = Vec::new();
        for &revision in &after {
            if let Some(message) = session.offer(&table(revision)) {
                let Some(v1::agent_message::Msg::RoutingTable(sent)) = message.msg else {
                    panic!("not a table: {message:?}");
                };
                assert_eq!(sent, table(revision));
                revisions.push(sent.revision);
            }
        }
        assert_eq!(
            revisions, expected,
            "Hello at {hello_revision}, offered {before:?} then {after:?}"
        );
    }
}

#[test]
fn an_invalid_report_is_refused_with_the_validators_reason_and_message() {
    let mut backwards = report(3, 1);
    backwards.window_start_unix_ms = NOW_MS + 1;
    let mut late = report(4, 1);
    late.window_end_unix_ms = NOW_MS - 300_000;
    late.window_start_unix_ms = late.window_end_unix_ms - 1000;
    let mut inconsistent = report(5, 10);
    if let Some(c) = inconsistent.series[0].counts.as_mut() {
        c.errors_5xx = 11;
    }
    let cases = [
        (garbled(2), "histogram"),
        (backwards, "window"),
        (late, "clock"),
        (inconsistent, "counts"),
    ];
    for (report, reason) in cases {
        let expected = validate(&report, NOW_MS, DEFAULT_MAX_SKEW_MS).unwrap_err();
        let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
        session.received(hello(CLIENT, 0), NOW_MS);
        let Action::Refuse(rejection) = session.received(sent(report), NOW_MS) else {
            panic!("a report with a {reason} problem was not refused");
        };
        assert_eq!((rejection.reason, &rejection), (reason, &expected));
    }
}

#[test]
fn the_clock_skew_limit_is_the_sessions() {
    let mut skewed = report(1, 1);
    skewed.window_end_unix_ms = NOW_MS + 90_000;
    for (max_skew_ms, refused) in [(DEFAULT_MAX_SKEW_MS, false), (60_000, true)] {
        let mut session = Session::new(max_skew_ms);
        session.received(hello(CLIENT, 0), NOW_MS);
        let action = session.received(sent(skewed.clone()), NOW_MS);
        assert_eq!(
            matches!(action, Action::Refuse(ref r) if r.reason == "clock"),
            refused,
            "limit {max_skew_ms} ms: {}",
            said(&action)
        );
    }
}

#[test]
fn merged_reports_are_counted_as_received_and_refusals_by_reason() {
    // Each stream is fed until the session refuses it, as the adapter does; then the counts the
    // adapter keeps (received on Merge, rejected by reason on Refuse) are summed over streams.
    let streams = [
        vec![hello(CLIENT, 0), sent(report(1, 5)), sent(report(2, 5))],
        vec![sent(report(1, 5)), hello(CLIENT, 0)],
        vec![hello(SERVER, 0), hello(SERVER, 0), sent(report(1, 5))],
        // The last report is never fed: the stream was refused before it.
        vec![hello(CLIENT, 0), sent(garbled(1)), sent(report(2, 5))],
        vec![hello(CLIENT, 0), sent(report(1, 5)), empty()],
    ];
    let mut received = 0;
    let mut rejected = BTreeMap::new();
    for messages in streams {
        let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
        for message in messages {
            match session.received(message, NOW_MS) {
                Action::Merge(_) => received += 1,
                Action::Refuse(r) => {
                    *rejected.entry(r.reason).or_insert(0) += 1;
                    break;
                }
                Action::Register(_) | Action::Nothing => {}
            }
        }
    }
    assert_eq!(received, 4);
    assert_eq!(
        rejected,
        BTreeMap::from([("before_hello", 1), ("empty", 1), ("histogram", 1)])
    );
}

#[test]
fn a_seq_that_does_not_grow_is_refused_not_counted_twice() {
    let cases = [
        (vec![1, 2, 3], vec!["merge", "merge", "merge"]),
        // A gap is only a gap: reports were lost or refused elsewhere.
        (vec![1, 5], vec!["merge", "merge"]),
        (
            vec![1, 1],
            vec!["merge", "refuse seq: report 1 does not follow report 1"],
        ),
        (
            vec![4, 3],
            vec!["merge", "refuse seq: report 3 does not follow report 4"],
        ),
    ];
    for (seqs, expected) in cases {
        let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
        session.received(hello(CLIENT, 0), NOW_MS);
        let got: Vec<String> = seqs
            .iter()
            .map(|&seq| said(&session.received(sent(report(seq, 1)), NOW_MS)))
            .collect();
        for (got, expected) in got.iter().zip(&expected) {
            assert!(
                got.starts_with(expected),
                "{seqs:?}: {got:?} is not {expected:?}"
            );
        }
    }
}

#[test]
fn a_hello_with_overlong_strings_is_refused_quoting_a_prefix_only() {
    let long = "p".repeat(4_000_000);
    let mut message = hello(CLIENT, 0);
    if let Some(v1::filter_message::Msg::Hello(h)) = message.msg.as_mut() {
        h.proxy_id = long;
    }
    let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
    let Action::Refuse(r) = session.received(message, NOW_MS) else {
        panic!("an overlong Hello was accepted");
    };
    assert_eq!(r.reason, "hello");
    assert!(r.message.len() < 200, "{}", r.message.len());
    assert!(
        r.message
            .ends_with("… (4000000 bytes) is longer than 512 bytes"),
        "{}",
        r.message
    );
}

#[test]
fn the_mesh_identity_bounds_what_a_stream_may_say() {
    let shop = Identity::from_spiffe("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    let hello_in = |namespace: &str, role: i32| {
        let mut message = hello(role, 0);
        if let Some(v1::filter_message::Msg::Hello(h)) = &mut message.msg {
            h.namespace = namespace.into();
        }
        message
    };
    let to_host = |host: &str| {
        let mut r = report(1, 10);
        r.series[0].host = host.into();
        sent(r)
    };
    let refused_peer = |m: &str| format!("refuse peer_namespace: {m}");
    // The stream's identity, whether one is required, what it sends, what the session says.
    type Case<'a> = (
        Option<&'a Identity>,
        bool,
        Vec<v1::FilterMessage>,
        Vec<String>,
    );
    let cases: Vec<Case> = vec![
        // An honest stream: its Hello names its identity's namespace.
        (
            Some(&shop),
            true,
            vec![hello_in("shop", SERVER), to_host("web.shop.svc.cluster.local")],
            vec![
                "register sidecar~10.0.0.1~web-1.shop".into(),
                "merge web.shop.svc.cluster.local v2 (live, server side) x10 at 1700000000".into(),
            ],
        ),
        // A Hello for another namespace than the identity's.
        (
            Some(&shop),
            false,
            vec![hello_in("payments", CLIENT)],
            vec![refused_peer(
                "Hello says namespace \"payments\" but the stream's mesh identity is spiffe://cluster.local/ns/shop/sa/web; a proxy reports only for its own namespace",
            )],
        ),
        // Server-role series are the workload's own inbound traffic: its namespace's hosts only.
        (
            Some(&shop),
            false,
            vec![hello_in("shop", SERVER), to_host("pay.payments.svc.cluster.local")],
            vec![
                "register sidecar~10.0.0.1~web-1.shop".into(),
                refused_peer(
                    "a server-role series for host \"pay.payments.svc.cluster.local\" comes from spiffe://cluster.local/ns/shop/sa/web: a workload measures only its own inbound traffic, in its own namespace",
                ),
            ],
        ),
        // A client measures calls to any namespace's hosts.
        (
            Some(&shop),
            false,
            vec![hello_in("shop", CLIENT), to_host("pay.payments.svc.cluster.local")],
            vec![
                "register sidecar~10.0.0.1~web-1.shop".into(),
                "merge pay.payments.svc.cluster.local v2 (live, client side) x10 at 1700000000".into(),
            ],
        ),
        // No identity, none required (local mode): as before.
        (
            None,
            false,
            vec![hello_in("payments", CLIENT)],
            vec!["register sidecar~10.0.0.1~web-1.shop".into()],
        ),
        // No identity where one is required.
        (
            None,
            true,
            vec![hello_in("shop", CLIENT)],
            vec!["refuse peer_identity: the stream carries no mesh identity (x-forwarded-client-cert): this agent takes telemetry only over the mesh's mutual TLS; check that the proxy has a sidecar and that the agent's namespace has the PeerAuthentication of the install".into()],
        ),
    ];
    for (identity, required, messages, expected) in cases {
        let peer = Peer {
            identity: identity.cloned(),
            required,
        };
        let mut session = Session::with_peer(DEFAULT_MAX_SKEW_MS, peer);
        let got: Vec<String> = messages
            .into_iter()
            .map(|m| said(&session.received(m, NOW_MS)))
            .collect();
        assert_eq!(got, expected);
    }
}

/// A stream at 1,000 requests a second: a burst of 30 s at once, then what the rate refills.
#[test]
fn a_stream_reports_at_most_its_rate_and_a_bursts_worth_at_once() {
    let mut session = Session::new(DEFAULT_MAX_SKEW_MS).with_rate(1_000);
    assert!(matches!(
        session.received(hello(CLIENT, 0), NOW_MS),
        Action::Register(_)
    ));
    // (ms after the Hello, requests, accepted); each report's window ends at the agent's clock.
    let rows: [(i64, u64, bool); 6] = [
        (0, 20_000, true),      // 30,000 of burst, 10,000 left
        (0, 10_001, false),     // one more than is left
        (0, 10_000, true),      // exactly what is left
        (500, 501, false),      // half a second refills 500
        (500, 500, true),       // the 500 (no more time passed)
        (60_000, 30_000, true), // a minute refills at most a burst
    ];
    for (i, (after_ms, requests, accepted)) in rows.into_iter().enumerate() {
        let now = NOW_MS + after_ms;
        let mut r = report(i as u64 + 1, requests);
        r.window_start_unix_ms = now - 1000;
        r.window_end_unix_ms = now;
        let action = session.received(sent(r), now);
        match (&action, accepted) {
            (Action::Merge(_), true) => {}
            (Action::Refuse(r), false) => {
                assert_eq!(r.reason, "rate", "row {i}");
                assert!(
                    r.message.contains(&format!("carries {requests} requests"))
                        && r.message.contains("at most 1000 a second"),
                    "row {i}: {}",
                    r.message
                );
            }
            _ => panic!("row {i}: {}", said(&action)),
        }
    }
    let mut over = report(10, 1);
    over.window_start_unix_ms = NOW_MS + 59_000;
    over.window_end_unix_ms = NOW_MS + 60_000;
    assert!(
        matches!(
            session.received(sent(over), NOW_MS + 60_000),
            Action::Refuse(_)
        ),
        "the burst was spent"
    );
}

#[test]
fn the_default_rate_takes_a_busy_proxy_and_refuses_a_flood() {
    let mut session = Session::new(DEFAULT_MAX_SKEW_MS);
    session.received(hello(CLIENT, 0), NOW_MS);
    let busy = DEFAULT_MAX_REQUESTS_PER_SECOND / 2;
    assert!(matches!(
        session.received(sent(report(1, busy)), NOW_MS),
        Action::Merge(_)
    ));
    let flood = DEFAULT_MAX_REQUESTS_PER_SECOND * RATE_BURST_SECS;
    assert!(matches!(
        session.received(sent(report(2, flood)), NOW_MS),
        Action::Refuse(Rejection { reason: "rate", .. })
    ));
}
