use super::*;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn pairs_round_trip_in_the_abi_layout() {
    let headers = pairs(&[(":path", "/a"), ("x-user-id", "")]);
    let bytes = encode_pairs(&headers);
    let mut expected = vec![2, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(b":path\0/a\0x-user-id\0\0");
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), map_serialized_size(&headers));
    assert_eq!(decode_pairs(&bytes), Some(headers));
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
    type Edit = fn(&mut Vec<(String, String)>);
    let cases: [(&str, Edit, Vec<(String, String)>); 5] = [
        ("replace keeps first, drops rest", |m| map_replace(m, "a", "9".into()), pairs(&[("a", "9"), ("b", "2")])),
        ("replace appends missing", |m| map_replace(m, "C", "x".into()), pairs(&[("a", "1"), ("b", "2"), ("A", "3"), ("c", "x")])),
        ("add appends", |m| map_add(m, "b", "5".into()), pairs(&[("a", "1"), ("b", "2"), ("A", "3"), ("b", "5")])),
        ("remove drops all", |m| map_remove(m, "a"), pairs(&[("b", "2")])),
        ("remove missing is no-op", |m| map_remove(m, "z"), pairs(&[("a", "1"), ("b", "2"), ("A", "3")])),
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
        (0, 5, Some(&b"hello"[..])),
        (0, u32::MAX, Some(&b"hello"[..])),
        (1, 2, Some(&b"el"[..])),
        (5, 1, Some(&b""[..])),
        (6, 1, None),
    ] {
        assert_eq!(buffer_slice(buf, start, max), expected, "start {start} max {max}");
    }
}
