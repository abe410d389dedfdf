use std::time::Duration;

use super::*;

const REVIEWS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  http:
  - name: beta
    match:
    - headers: {x-beta: {exact: "1"}}
      uri: {prefix: /api}
    route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2}
    timeout: 0.5s
  - name: split
    route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v1, port: {number: 9080}}
      weight: 80
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2}
      weight: 20
    mirror: {host: reviews.shop.svc.cluster.local, subset: v2}
    mirrorPercentage: {value: 20.0}
    retries: {attempts: 3}
"#;

#[test]
fn a_full_virtual_service_parses() {
    let services = VirtualService::parse_all("vs.yaml", REVIEWS).unwrap();
    assert_eq!(services.len(), 1);
    let vs = &services[0];
    assert_eq!(vs.key(), "shop/reviews");
    assert_eq!(vs.spec.http[0].timeout, Some(Duration::from_millis(500)));
    assert_eq!(
        vs.spec.http[0].matches[0].headers["x-beta"]
            .exact
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        vs.spec.http[1].route[0].destination.port,
        Some(PortSelector { number: 9080 })
    );
    assert_eq!(
        vs.spec.http[1].mirror_percentage,
        Some(Percent { value: 20.0 })
    );
    assert_eq!(vs.ignored(), vec!["spec.http[1].retries".to_owned()]);
}

#[test]
fn other_kinds_and_empty_documents_are_skipped() {
    let text = format!(
        "---\n---\nkind: DestinationRule\napiVersion: networking.istio.io/v1\n---\n{REVIEWS}"
    );
    assert_eq!(
        VirtualService::parse_all("vs.yaml", &text).unwrap().len(),
        1
    );
}

#[test]
fn errors_name_the_object_and_field() {
    let cases = [
        (
            "weight: 80",
            "weight: 180",
            "spec.http[1].route[0].weight: 180 is over 100",
        ),
        (
            "weight: 80",
            "weight: 70",
            "spec.http[1].route: weights sum to 90, not 100",
        ),
        (
            "weight: 80",
            "weigth: 80",
            "spec.http[1].route[0].weigth: unknown field `weigth`",
        ),
        (
            "{value: 20.0}",
            "{value: 120.0}",
            "spec.http[1].mirrorPercentage.value: 120 is outside [0, 100]",
        ),
        (
            "{exact: \"1\"}",
            "{exact: \"1\", prefix: \"2\"}",
            "spec.http[0].match[0].headers.x-beta: sets more than one",
        ),
        (
            "uri: {prefix: /api}",
            "uri: {regex: \"(\"}",
            "spec.http[0].match[0].uri.regex: \"(\" is not a regex",
        ),
        (
            "uri: {prefix: /api}",
            "queryParams: {a: {exact: b}}",
            "spec.http[0].match[0].queryParams: unknown field `queryParams`",
        ),
        (
            "timeout: 0.5s",
            "timeout: soon",
            "spec.http[0].timeout: \"soon\" is not a duration",
        ),
        (
            "subset: v2}\n    timeout",
            "subset: \"\"}\n    timeout",
            "spec.http[0].route[0].destination.subset: is empty",
        ),
        (
            "hosts: [reviews.shop.svc.cluster.local]",
            "hosts: []",
            "spec.hosts: is empty",
        ),
    ];
    for (from, to, expected) in cases {
        let text = REVIEWS.replacen(from, to, 1);
        assert_ne!(text, REVIEWS, "case {to:?} did not change the text");
        let err = VirtualService::parse_all("vs.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("VirtualService shop/reviews in vs.yaml: "),
            "{err}"
        );
        assert!(
            err.contains(expected),
            "case {to:?}: {err} does not contain {expected:?}"
        );
    }
}

#[test]
fn durations_read_protobuf_json_and_common_units() {
    for (text, expected) in [
        ("1s", Some(Duration::from_secs(1))),
        ("0.25s", Some(Duration::from_millis(250))),
        ("250ms", Some(Duration::from_millis(250))),
        ("2m", Some(Duration::from_secs(120))),
        ("1h", Some(Duration::from_secs(3600))),
        ("5", None),
        ("-1s", None),
    ] {
        assert_eq!(parse_duration(text).ok(), expected, "{text}");
    }
}
