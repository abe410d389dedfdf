use super::*;
use crate::routing::Rng;

#[test]
fn connects_on_the_first_tick_then_reports_every_interval() {
    let mut link = Link::new(1000);
    assert_eq!(link.poll(5), Step::Connect);
    link.opened(3, 5);
    assert_eq!(link.token(), Some(3));
    // Hello just went out; the first report is one interval later (ticks may come a bit early).
    let steps: Vec<Step> = [500, 899, 905, 1200]
        .iter()
        .map(|&t| link.poll(t))
        .collect();
    assert_eq!(
        steps,
        [Step::Wait, Step::Wait, Step::Report(3), Step::Report(3)]
    );
    link.reported(1005);
    assert_eq!(link.poll(1500), Step::Wait);
    assert_eq!(link.poll(2005), Step::Report(3));
    assert_eq!((link.next_seq(), link.next_seq()), (1, 2));
    link.unsent_seq();
    assert_eq!(link.next_seq(), 2);
    // A new configuration reconnects at once with its interval; numbering goes on.
    link.failed(2005);
    link.restart(5000);
    assert_eq!(link.poll(2006), Step::Connect);
    link.opened(4, 2006);
    assert_eq!(link.poll(6005), Step::Wait);
    assert_eq!(link.poll(6506), Step::Report(4));
    assert_eq!(link.next_seq(), 3);
}

#[test]
fn failures_back_off_exponentially_up_to_30_seconds() {
    let delays: Vec<u64> = (1..=8).map(backoff_ms).collect();
    assert_eq!(
        delays,
        [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
    );
    assert_eq!(backoff_ms(u32::MAX), 30_000);

    let mut link = Link::new(1000);
    let mut now = 0;
    let mut waits = Vec::new();
    for token in 1..=7 {
        assert_eq!(link.poll(now), Step::Connect);
        // The stream opens but the agent is unreachable: it closes without a word.
        link.opened(token, now);
        assert!(link.closed(token, now + 10));
        let retry = (now + 10..)
            .find(|&t| link.poll(t) == Step::Connect)
            .unwrap();
        waits.push(retry - (now + 10));
        now = retry;
    }
    assert_eq!(waits, [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    // Failing to open at all backs off the same way.
    link.failed(now);
    assert_eq!(link.poll(now + 29_999), Step::Wait);
    assert_eq!(link.poll(now + 30_000), Step::Connect);
}

#[test]
fn a_healthy_stream_reconnects_at_once_and_resets_the_backoff() {
    let mut link = Link::new(1000);
    link.failed(0);
    link.failed(1000);
    link.opened(9, 3000);
    link.heard(9);
    assert!(link.closed(9, 4000));
    assert_eq!(link.poll(4000), Step::Connect);
    // One that stayed open long enough counts as healthy even if the agent never spoke.
    link.opened(10, 4000);
    assert!(link.closed(10, 4000 + HEALTHY_AFTER_MS));
    assert_eq!(link.poll(4000 + HEALTHY_AFTER_MS), Step::Connect);
    // The next failure starts from the base delay again.
    link.opened(11, 40_000);
    assert!(link.closed(11, 40_001));
    assert_eq!(link.poll(41_000), Step::Wait);
    assert_eq!(link.poll(41_001), Step::Connect);
}

#[test]
fn a_replica_s_refusal_reconnects_at_the_next_tick_and_leaves_the_backoff_alone() {
    let mut link = Link::new(1000);
    // Two failures in a row: the next one would wait 4 s.
    link.failed(0);
    link.failed(1000);
    let mut now = 3000;
    // A standby refuses ten times in a row: each time the next tick connects again.
    for token in 1..=10 {
        assert_eq!(link.poll(now), Step::Connect);
        link.opened(token, now);
        assert!(link.refused(token, now + 5));
        assert_eq!(link.token(), None);
        assert_eq!(link.poll(now + 5), Step::Connect);
        now += 1000;
    }
    // The refusals counted as no failure: the third failure waits 4 s, as it would have.
    link.opened(11, now);
    assert!(link.closed(11, now + 5));
    assert_eq!(link.poll(now + 4004), Step::Wait);
    assert_eq!(link.poll(now + 4005), Step::Connect);
    // A refusal of a stream that is not the open one changes nothing.
    assert!(!link.refused(11, now + 4005));
    link.opened(12, now + 4005);
    assert!(!link.refused(11, now + 4006));
    assert_eq!(link.token(), Some(12));
}

#[test]
fn closes_of_old_streams_change_nothing() {
    let mut link = Link::new(1000);
    assert!(!link.closed(1, 0));
    link.opened(2, 0);
    link.heard(1);
    assert!(!link.closed(1, 10));
    assert_eq!(link.token(), Some(2));
    assert_eq!(link.poll(1000), Step::Report(2));
}

fn table_message(revision: u64, bp: u32) -> Vec<u8> {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::RoutingTable(v1::RoutingTable {
            revision,
            routes: vec![v1::HostRoute {
                host: "reviews".into(),
                version_header: String::new(),
                rules: vec![],
                split: Some(v1::Split {
                    stable: "v1".into(),
                    canary: "v2".into(),
                    canary_basis_points: bp,
                }),
                sticky_key: None,
            }],
        })),
    }
    .encode_to_vec()
}

#[test]
fn newer_tables_replace_and_older_ones_are_ignored() {
    let defaults = RouteDefaults {
        version_header: "x-v".into(),
        sticky_key: Some(crate::routing::StickyKey::Header("x-user-id".into())),
    };
    let cases = [
        (table_message(5, 500), 4, Some(5)),
        (table_message(5, 500), 5, None),
        (table_message(3, 500), 5, None),
        (table_message(1, 0), 0, Some(1)),
    ];
    for (bytes, held, replaced) in cases {
        match receive(&bytes, held, &defaults).unwrap() {
            Received::Table(t) => {
                assert_eq!(Some(t.revision), replaced);
                // Empty fields take the configured defaults.
                assert_eq!(t.routes[0].version_header, "x-v");
                assert_eq!(t.routes[0].sticky_key, defaults.sticky_key);
            }
            Received::Stale { revision } => {
                assert_eq!(replaced, None);
                assert!(revision <= held);
            }
            Received::Nothing => panic!("a table was sent"),
        }
    }
    assert_eq!(receive(&[], 0, &defaults).unwrap(), Received::Nothing);
    let err = receive(&table_message(9, 10_001), 1, &defaults).unwrap_err();
    assert_eq!(
        err.to_string(),
        "routing table revision 9: routes[0].split.canary_basis_points: 10001 is over 10000"
    );
    assert!(matches!(
        receive(&[0xff, 0xff], 0, &defaults),
        Err(Error::Decode(_))
    ));
}

#[test]
fn random_bytes_into_agent_messages_never_panic() {
    let defaults = RouteDefaults::default();
    let mut rng = Rng::new(99);
    let valid = table_message(7, 2500);
    let mut tables = 0;
    for i in 0..50_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = (rng.next_u64() % 128) as usize;
            (0..len).map(|_| rng.next_u64() as u8).collect()
        } else {
            let mut b = valid.clone();
            let at = (rng.next_u64() as usize) % b.len();
            b[at] = rng.next_u64() as u8;
            b
        };
        if let Ok(Received::Table(t)) = receive(&bytes, 0, &defaults) {
            assert!(t.routes.iter().all(|r| {
                r.split
                    .as_ref()
                    .is_none_or(|s| s.canary_basis_points <= 10_000)
            }));
            tables += 1;
        }
        // Raw RoutingTable bytes too (the message inside the oneof).
        let _ = <v1::RoutingTable as Message>::decode(bytes.as_slice())
            .map(|t| Table::from_proto(t, &defaults));
    }
    assert!(tables > 0, "some mutations should still be valid tables");
}

#[test]
fn hello_and_report_encode_as_filter_messages() {
    let node = Node {
        proxy_id: "sidecar~1".into(),
        workload: "productpage".into(),
        namespace: "shop".into(),
        version_label: "v1".into(),
    };
    let bytes = hello(&node, v1::Role::Client, 7, 3);
    let Some(v1::filter_message::Msg::Hello(h)) =
        v1::FilterMessage::decode(bytes.as_slice()).unwrap().msg
    else {
        panic!("not a hello");
    };
    assert_eq!(
        (h.proxy_id.as_str(), h.worker, h.table_revision, h.role()),
        ("sidecar~1", 7, 3, v1::Role::Client)
    );
    assert!(h.filter_build.starts_with("fledge-filter/"));
    let bytes = report(v1::Report {
        seq: 4,
        ..Default::default()
    });
    let Some(v1::filter_message::Msg::Report(r)) =
        v1::FilterMessage::decode(bytes.as_slice()).unwrap().msg
    else {
        panic!("not a report");
    };
    assert_eq!(r.seq, 4);
}

#[test]
fn the_upstream_is_the_cluster_name_unless_authority_or_deadline_are_set() {
    let mut agent = Agent {
        cluster: "outbound|9090||agent".into(),
        authority: None,
        timeout_ms: 0,
    };
    assert_eq!(upstream(&agent), b"outbound|9090||agent");
    // Envoy tries the proto first: the plain name must not parse as one.
    assert!(GrpcService::decode(upstream(&agent).as_slice()).is_err());
    agent.authority = Some("agent.fledge-system.svc.cluster.local".into());
    agent.timeout_ms = 90_500;
    let service = GrpcService::decode(upstream(&agent).as_slice()).unwrap();
    let envoy = service.envoy_grpc.unwrap();
    assert_eq!(envoy.cluster_name, "outbound|9090||agent");
    assert_eq!(envoy.authority, "agent.fledge-system.svc.cluster.local");
    assert_eq!(
        service.timeout,
        Some(GrpcDuration {
            seconds: 90,
            nanos: 500_000_000
        })
    );
}

#[test]
fn every_accepted_authority_and_deadline_survive_as_bytes() {
    // Each comes back whole from the bytes handed to the host. Most are not text: a `&str`
    // (the SDK's open_grpc_stream) could not carry them, so the plugin passes the bytes as they
    // are. Envoy parses the GrpcService as it would from any configuration.
    let cluster = "outbound|9090||fledge-agent.fledge-system.svc.cluster.local";
    let long = format!("{}.fledge-system.svc.cluster.local", "a".repeat(40));
    let cases = [
        // (authority, timeout_ms, seconds, nanos, text)
        (None, 2_000, 2, 0, true),
        (None, 90_500, 90, 500_000_000, false),
        (None, 127_000, 127, 0, true),
        (None, 128_000, 128, 0, false),
        (Some(long.as_str()), 0, 0, 0, false),
        (Some("agent"), 1, 0, 1_000_000, false),
        (
            Some("agent"),
            crate::config::MAX_TIMEOUT_MS,
            315_576_000_000,
            0,
            false,
        ),
    ];
    for (authority, timeout_ms, seconds, nanos, text) in cases {
        let agent = Agent {
            cluster: cluster.into(),
            authority: authority.map(str::to_owned),
            timeout_ms,
        };
        let bytes = upstream(&agent);
        let at = format!("{authority:?} {timeout_ms} ms");
        assert_eq!(std::str::from_utf8(&bytes).is_ok(), text, "{at}");
        let service = GrpcService::decode(bytes.as_slice()).unwrap();
        let envoy = service.envoy_grpc.unwrap();
        assert_eq!(
            (envoy.cluster_name.as_str(), envoy.authority.as_str()),
            (cluster, authority.unwrap_or_default()),
            "{at}"
        );
        let timeout = (timeout_ms > 0).then_some(GrpcDuration { seconds, nanos });
        assert_eq!(service.timeout, timeout, "{at}");
    }
}
