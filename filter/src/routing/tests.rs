use std::collections::HashSet;

use super::*;
use crate::config::Config;

const CONFIG: &str = r#"{
  "agent": {"cluster": "outbound|9090||fledge-agent.fledge-system.svc.cluster.local"},
  "sticky_key": {"header": "x-user-id"},
  "routes": [
    {
      "host": "reviews.shop.svc.cluster.local",
      "rules": [
        {"header": {"name": "x-beta", "exact": "1"}, "version": "v2"},
        {"header": {"name": "X-Group", "prefix": "beta-"}, "version": "v3"},
        {"header": {"name": "x-canary", "present": true}, "version": "v2"},
        {"cookie": {"name": "beta", "value": "yes"}, "version": "v4"}
      ],
      "split": {"stable": "v1", "canary": "v2", "canary_basis_points": 1000}
    },
    {
      "host": "ratings.shop.svc.cluster.local",
      "version_header": "x-ratings-version",
      "split": {"stable": "v1", "canary": "v2", "canary_basis_points": 10000},
      "sticky_key": {"cookie": "session"}
    },
    {"host": "details.shop.svc.cluster.local"}
  ]
}"#;

type Headers<'a> = Vec<(&'a str, &'a str)>;

fn table() -> Table {
    Config::parse(CONFIG.as_bytes()).unwrap().table
}

/// A key whose bucket is at or above 1,000 (so the 10 % split sends it to stable).
fn stable_key() -> String {
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|k| bucket(k.as_bytes()) >= 1000)
        .unwrap()
}

fn canary_key() -> String {
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|k| bucket(k.as_bytes()) < 1000)
        .unwrap()
}

#[test]
fn rules_cookies_and_split_decide_in_order() {
    let table = table();
    let stable = stable_key();
    let canary = canary_key();
    let reviews = "reviews.shop.svc.cluster.local";
    let cases: Vec<(&str, Headers, Option<&str>, Cause)> = vec![
        // The first matching rule wins, even when later rules match too.
        (
            reviews,
            vec![
                ("x-beta", "1"),
                ("x-group", "beta-a"),
                ("x-user-id", &stable),
            ],
            Some("v2"),
            Cause::Rule(0),
        ),
        (
            reviews,
            vec![("x-beta", "2"), ("x-group", "beta-a")],
            Some("v3"),
            Cause::Rule(1),
        ),
        // Header names match case-insensitively, values exactly.
        (
            reviews,
            vec![("X-GROUP", "beta-7")],
            Some("v3"),
            Cause::Rule(1),
        ),
        (
            reviews,
            vec![("x-group", "Beta-7"), ("x-user-id", &stable)],
            Some("v1"),
            Cause::Stable,
        ),
        (reviews, vec![("x-canary", "")], Some("v2"), Cause::Rule(2)),
        (
            reviews,
            vec![("cookie", "a=1; beta=yes; b=2")],
            Some("v4"),
            Cause::Rule(3),
        ),
        (
            reviews,
            vec![("cookie", "beta=no"), ("x-user-id", &stable)],
            Some("v1"),
            Cause::Stable,
        ),
        (
            reviews,
            vec![("cookie", "xbeta=yes"), ("x-user-id", &canary)],
            Some("v2"),
            Cause::Canary,
        ),
        // A client-supplied version header decides nothing: the split does.
        (
            reviews,
            vec![("x-fledge-version", "v2"), ("x-user-id", &stable)],
            Some("v1"),
            Cause::Stable,
        ),
        (
            reviews,
            vec![("x-fledge-version", "v9"), ("x-user-id", &canary)],
            Some("v2"),
            Cause::Canary,
        ),
        // A short name finds the route by the DNS search path.
        (
            "reviews",
            vec![("x-user-id", &stable)],
            Some("v1"),
            Cause::Stable,
        ),
        (
            "reviews.shop",
            vec![("x-beta", "1")],
            Some("v2"),
            Cause::Rule(0),
        ),
        // Cookie sticky key at 100 %.
        (
            "ratings.shop.svc.cluster.local",
            vec![("cookie", "session=abc")],
            Some("v2"),
            Cause::Canary,
        ),
        // A route without a split removes the header.
        (
            "details.shop.svc.cluster.local",
            vec![("x-fledge-version", "v2")],
            None,
            Cause::NoSplit,
        ),
    ];
    let mut rng = Rng::new(7);
    for (host, headers, version, cause) in cases {
        let (index, d) = table.decide(host, headers.as_slice(), &mut rng).unwrap();
        assert_eq!((d.version, d.cause), (version, cause), "{host} {headers:?}");
        // The cause alone tells the version again (the filter keeps only the cause till on_log),
        // and the route's index leads back to the same route.
        assert_eq!(d.route.version(d.cause), version, "{host}");
        assert_eq!(table.routes.get(index), Some(d.route), "{host}");
    }
}

#[test]
fn hosts_without_a_route_pass_untouched() {
    let table = table();
    let mut rng = Rng::new(1);
    for host in [
        "productpage.shop.svc.cluster.local",
        "review",
        "shop",
        "",
        "svc.cluster.local",
    ] {
        let headers: [(&str, &str); 1] = [("x-fledge-version", "v2")];
        assert!(
            table.decide(host, &headers[..], &mut rng).is_none(),
            "{host}"
        );
    }
}

#[test]
fn routes_name_the_header_to_replace() {
    let table = table();
    let mut rng = Rng::new(1);
    let none: [(&str, &str); 0] = [];
    let (_, reviews) = table.decide("reviews", &none[..], &mut rng).unwrap();
    assert_eq!(reviews.route.version_header, "x-fledge-version");
    let (_, ratings) = table
        .decide("ratings.shop.svc.cluster.local", &none[..], &mut rng)
        .unwrap();
    assert_eq!(ratings.route.version_header, "x-ratings-version");
}

#[test]
fn a_missing_key_draws_a_random_bucket() {
    let table = table();
    let mut rng = Rng::new(42);
    let no_key: [(&str, &str); 1] = [("x-other", "1")];
    let n = 100_000;
    let canary = (0..n)
        .filter(|_| {
            table
                .decide("reviews", &no_key[..], &mut rng)
                .unwrap()
                .1
                .cause
                == Cause::Canary
        })
        .count();
    let share = canary as f64 / n as f64;
    assert!((share - 0.10).abs() < 0.005, "share {share}");
    // An empty key is no key.
    let empty: [(&str, &str); 1] = [("x-user-id", "")];
    let causes: HashSet<_> = (0..200)
        .map(|_| {
            table
                .decide("reviews", &empty[..], &mut rng)
                .unwrap()
                .1
                .cause
        })
        .collect();
    assert_eq!(causes, HashSet::from([Cause::Canary, Cause::Stable]));
}

#[test]
fn cohorts_only_grow_with_the_weight() {
    let keys: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let buckets: Vec<u32> = keys.iter().map(|k| bucket(k.as_bytes())).collect();
    let split = |bp: u32| -> HashSet<usize> {
        let route = Route {
            host: "reviews".into(),
            version_header: "x-fledge-version".into(),
            rules: vec![],
            split: Some(Split {
                stable: "v1".into(),
                canary: "v2".into(),
                canary_basis_points: bp,
            }),
            sticky_key: Some(StickyKey::Header("x-user-id".into())),
        };
        let mut rng = Rng::new(0);
        keys.iter()
            .enumerate()
            .filter(|(_, k)| {
                let headers = [("x-user-id", k.as_str())];
                route.decide(&headers[..], &mut rng).cause == Cause::Canary
            })
            .map(|(i, _)| i)
            .collect()
    };
    let weights = [0, 1, 100, 500, 1000, 2500, 5000, 9999, 10_000];
    let sets: Vec<HashSet<usize>> = weights.iter().map(|&w| split(w)).collect();
    for (w, pair) in weights.windows(2).zip(sets.windows(2)) {
        assert!(
            pair[0].is_subset(&pair[1]),
            "canary at {} not within {}",
            w[0],
            w[1]
        );
    }
    assert!(sets[0].is_empty());
    assert_eq!(sets[8].len(), keys.len());
    let share = sets[4].len() as f64 / keys.len() as f64;
    assert!((share - 0.10).abs() <= 0.005, "share at 1000 bp: {share}");
    // The decision agrees with the published bucket function.
    assert!(sets[4].iter().all(|&i| buckets[i] < 1000));
}

#[test]
fn the_bucket_hash_is_stable() {
    // FNV-1a reference vectors, then pinned buckets: changing either moves users between cohorts.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    let pinned: Vec<u32> = ["user-1", "user-2", "session=abc", ""]
        .iter()
        .map(|k| bucket(k.as_bytes()))
        .collect();
    assert_eq!(pinned, PINNED_BUCKETS);
}

const PINNED_BUCKETS: [u32; 4] = [7624, 8795, 4907, 6203];

#[test]
fn cookies_are_read_by_name() {
    let cases = [
        ("beta=yes", "beta", Some("yes")),
        ("a=1; beta=yes", "beta", Some("yes")),
        ("a=1;beta=\"yes\" ", "beta", Some("yes")),
        ("xbeta=yes", "beta", None),
        ("beta", "beta", None),
        ("Beta=yes", "beta", None),
        ("", "beta", None),
    ];
    for (header, name, expected) in cases {
        assert_eq!(cookie(header, name), expected, "{header}");
    }
}

#[test]
fn authorities_become_destinations() {
    let cases = [
        (
            "reviews.shop.svc.cluster.local",
            "reviews.shop.svc.cluster.local",
            false,
        ),
        ("Reviews:9080", "reviews", false),
        (
            "reviews.shop.svc.cluster.local-shadow",
            "reviews.shop.svc.cluster.local",
            true,
        ),
        ("reviews-shadow:9080", "reviews", true),
        ("[::1]:8080", "::1", false),
        ("", "", false),
        (" reviews ", "reviews", false),
        ("REVIEWS-shadow", "reviews", true),
        ("[::1", "::1", false),
        ("[]", "", false),
        ("[", "", false),
        (" ", "", false),
        (":80", "", false),
        ("a b:1", "a b", false),
        ("-shadow", "", true),
        ("Ä:1", "Ä", false),
        ("[V6]-shadow:80", "v6", false),
        ("A.Z-0_9~@^`{:1", "a.z-0_9~@^`{", false),
    ];
    for (authority, host, shadow) in cases {
        let d = Destination::from_authority(authority);
        assert_eq!((d.host.as_str(), d.shadow), (host, shadow), "{authority}");
    }
    let d = Destination::from_authority_bytes(b"Revi\xffews:80".to_vec());
    assert_eq!((d.host.as_str(), d.shadow), ("revi\u{fffd}ews", false));
}

#[test]
fn only_hosts_the_table_names_are_measured() {
    let table = table();
    // (destination host as parsed from :authority, measured)
    for (host, measured) in [
        ("reviews.shop.svc.cluster.local", true),
        // A short name the route's host extends, as a caller in the namespace writes it.
        ("reviews", true),
        ("reviews.shop", true),
        // A route with neither rules nor split still names a host to measure.
        ("details.shop.svc.cluster.local", true),
        ("productpage.shop.svc.cluster.local", false),
        ("review", false),
        ("", false),
    ] {
        assert_eq!(table.measures(host), measured, "{host:?}");
    }
    assert!(!Table::default().measures("reviews.shop.svc.cluster.local"));
}

#[test]
fn word_wise_equality_agrees_with_byte_equality() {
    let text = b"reviews.shop.svc.cluster.local:9080";
    for n in 0..=text.len() {
        let a = &text[..n];
        let copy = a.to_vec();
        assert!(same(a, &copy), "{n}");
        // One byte different, at every position: not the same.
        for i in 0..n {
            let mut b = a.to_vec();
            b[i] ^= 0x20;
            assert!(!same(a, &b), "{n} bytes, byte {i} differs");
        }
        // A different length is never the same, whatever the prefix.
        assert!(
            !same(a, &text[..(n + 1).min(text.len())]) || n == text.len(),
            "{n}"
        );
    }
}

/// The one-pass parse (eight bytes at a step, the last eight as one more word, then byte by
/// byte) agrees with the general one on authorities where a port, a bracket, white space or an
/// upper-case letter falls at every position, in and across eight-byte words.
#[test]
fn the_fast_authority_parse_agrees_with_the_general_one() {
    let base = "reviews.shop.svc.cluster.local";
    for at in 0..base.len() {
        for inserted in [
            ":9080", "[", " ", "\t", "Q", "@", "`", "Z", "A", "\u{e9}", "-shadow",
        ] {
            let mut authority = base.to_owned();
            authority.insert_str(at, inserted);
            let upper: String = authority.to_ascii_uppercase();
            for authority in [authority, upper] {
                let fast = Destination::from_authority_bytes(authority.clone().into_bytes());
                let general = HostBytes::from_general_authority(authority.clone().into_bytes())
                    .into_destination();
                assert_eq!(fast, general, "{authority:?}");
            }
        }
    }
}
