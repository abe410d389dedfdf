use std::time::Duration;

use super::*;

type Pairs = Vec<(String, String)>;
type Target = Option<(String, Option<String>)>;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn pairs_round_trip_in_the_abi_layout() {
    let headers = pairs(&[(":path", "/a"), ("x-user-id", "")]);
    let bytes = encode_pairs(&headers);
    let mut expected = vec![2, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(b":path\0/a\0x-user-id\0\0");
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), map_serialized_size(&headers));
    assert_eq!(decode_pairs(&bytes), Some(headers.clone()));
    let mut direct = vec![0xaa; map_serialized_size(&headers)];
    encode_pairs_into(&headers, &mut direct);
    assert_eq!(direct, bytes);
}

#[test]
fn malformed_pairs_are_refused() {
    let good = encode_pairs(&pairs(&[("a", "b")]));
    for (name, bytes) in [
        ("empty", vec![]),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("missing nul", {
            let mut b = good.clone();
            let at = b.len() - 3;
            b[at] = b'x';
            b
        }),
        ("huge count", vec![255, 255, 255, 255]),
    ] {
        assert_eq!(decode_pairs(&bytes), None, "{name}");
    }
    assert_eq!(decode_pairs(&[0, 0, 0, 0]), Some(vec![]));
}

#[test]
fn header_edits_follow_envoy() {
    let base = pairs(&[("a", "1"), ("b", "2"), ("A", "3")]);
    type Edit = fn(&mut Pairs);
    let cases: [(&str, Edit, Pairs); 5] = [
        (
            "replace keeps first, drops rest",
            |m| map_replace(m, "a", "9".into()),
            pairs(&[("a", "9"), ("b", "2")]),
        ),
        (
            "replace appends missing",
            |m| map_replace(m, "C", "x".into()),
            pairs(&[("a", "1"), ("b", "2"), ("A", "3"), ("c", "x")]),
        ),
        (
            "add appends",
            |m| map_add(m, "b", "5".into()),
            pairs(&[("a", "1"), ("b", "2"), ("A", "3"), ("b", "5")]),
        ),
        (
            "remove drops all",
            |m| map_remove(m, "a"),
            pairs(&[("b", "2")]),
        ),
        (
            "remove missing is no-op",
            |m| map_remove(m, "z"),
            pairs(&[("a", "1"), ("b", "2"), ("A", "3")]),
        ),
    ];
    for (name, edit, expected) in cases {
        let mut map = base.clone();
        edit(&mut map);
        assert_eq!(map, expected, "{name}");
    }
    assert_eq!(map_get(&base, "A"), Some("1"));
    assert_eq!(map_get(&base, "z"), None);
}

#[test]
fn buffer_slices_clamp_like_envoy() {
    let buf = b"hello";
    for (start, max, expected) in [
        (0, 5, &b"hello"[..]),
        (0, u32::MAX, &b"hello"[..]),
        (1, 2, &b"el"[..]),
        (4, u32::MAX, &b"o"[..]),
        (5, 1, &b""[..]),
        (6, 1, &b""[..]),
    ] {
        assert_eq!(
            buffer_slice(buf, start, max),
            expected,
            "start {start} max {max}"
        );
    }
}

#[test]
fn grpc_targets_are_cluster_names_or_grpc_service_protos() {
    let cluster = "outbound|9090||fledge-agent.fledge-system.svc.cluster.local";
    let known = |name: &str| name == cluster;
    // GrpcService { envoy_grpc: EnvoyGrpc { cluster_name, authority }, timeout: 2s }, by hand.
    let envoy_grpc = |authority: &str| {
        let mut inner = vec![0x0a, cluster.len() as u8];
        inner.extend_from_slice(cluster.as_bytes());
        if !authority.is_empty() {
            inner.extend_from_slice(&[0x12, authority.len() as u8]);
            inner.extend_from_slice(authority.as_bytes());
        }
        let mut outer = vec![0x0a, inner.len() as u8];
        outer.extend_from_slice(&inner);
        outer.extend_from_slice(&[0x1a, 0x02, 0x08, 0x02]);
        outer
    };
    let authority = "fledge-agent.fledge-system.svc.cluster.local";
    let cases: Vec<(&str, Vec<u8>, Target)> = vec![
        (
            "plain name",
            cluster.as_bytes().to_vec(),
            Some((cluster.into(), None)),
        ),
        ("unknown name", b"outbound|1||nowhere".to_vec(), None),
        ("proto", envoy_grpc(""), Some((cluster.into(), None))),
        (
            "proto with authority",
            envoy_grpc(authority),
            Some((cluster.into(), Some(authority.into()))),
        ),
        ("truncated proto", envoy_grpc("")[..10].to_vec(), None),
        ("empty", Vec::new(), None),
    ];
    for (name, upstream, expected) in cases {
        let target = grpc_target(&upstream, known);
        assert_eq!(
            target.clone().map(|t| (t.cluster, t.authority)),
            expected,
            "{name}"
        );
        // Both protos above carry a 2 s timeout; a plain name has none.
        if let Some(target) = target {
            let timeout = (upstream[0] == 0x0a).then_some(Duration::from_secs(2));
            assert_eq!(target.timeout, timeout, "{name}");
        }
    }
}

#[test]
fn grpc_service_timeouts_are_read_and_checked() {
    let cluster = "agent";
    // GrpcService { envoy_grpc: { cluster_name }, timeout: Duration { seconds, nanos } }.
    let service = |duration: &[u8]| {
        let mut bytes = vec![0x0a, 7, 0x0a, 5];
        bytes.extend_from_slice(cluster.as_bytes());
        if !duration.is_empty() {
            bytes.extend_from_slice(&[0x1a, duration.len() as u8]);
            bytes.extend_from_slice(duration);
        }
        bytes
    };
    let minus_one = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let negative_seconds: Vec<u8> = [&[0x08][..], &minus_one].concat();
    let negative_nanos: Vec<u8> = [&[0x08, 0x01, 0x10][..], &minus_one].concat();
    // (case, upstream, timeout: None when the target is refused)
    type Case = (&'static str, Vec<u8>, Option<Option<Duration>>);
    let cases: Vec<Case> = vec![
        ("none", service(&[]), Some(None)),
        (
            "90.5 s",
            // seconds 90, nanos 500,000,000 (varint 80 ca b5 ee 01)
            service(&[0x08, 90, 0x10, 0x80, 0xca, 0xb5, 0xee, 0x01]),
            Some(Some(Duration::from_millis(90_500))),
        ),
        (
            "128 s",
            service(&[0x08, 0x80, 0x01]),
            Some(Some(Duration::from_secs(128))),
        ),
        ("zero is none", service(&[0x08, 0]), Some(None)),
        ("negative seconds", service(&negative_seconds), None),
        ("negative nanos", service(&negative_nanos), None),
        (
            "nanos of a whole second",
            service(&[0x10, 0x80, 0x94, 0xeb, 0xdc, 0x03]),
            None,
        ),
    ];
    for (name, upstream, expected) in cases {
        let target = grpc_target(&upstream, |name| name == cluster);
        assert_eq!(target.map(|t| t.timeout), expected, "{name}");
    }
}

#[test]
fn grpc_timeout_headers_are_written_as_envoy_writes_them() {
    for (timeout, header) in [
        (Duration::from_millis(90_500), "90500m"),
        (Duration::from_micros(1_500), "1m"),
        (Duration::from_millis(99_999_999), "99999999m"),
        (Duration::from_millis(100_000_000), "100000S"),
        (Duration::from_secs(315_576_000_000), "87660000H"),
    ] {
        assert_eq!(grpc_timeout_header(timeout), header, "{timeout:?}");
    }
}

#[test]
fn nginx_replace_keeps_later_copies() {
    for (key, expected) in [
        ("a", pairs(&[("a", "9"), ("b", "2"), ("A", "3")])),
        (
            "C",
            pairs(&[("a", "1"), ("b", "2"), ("A", "3"), ("c", "9")]),
        ),
    ] {
        let mut map = pairs(&[("a", "1"), ("b", "2"), ("A", "3")]);
        map_replace_first(&mut map, key, "9".into());
        assert_eq!(map, expected, "{key}");
    }
}
