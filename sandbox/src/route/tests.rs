use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  http:
  - name: pinned
    match:
    - headers: {x-fledge-version: {exact: v2}}
    route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2}
  - name: beta
    match:
    - headers: {x-group: {prefix: beta-}}
      withoutHeaders: {x-opt-out: {}}
    - uri: {regex: "/v2/.*"}
      method: {exact: POST}
    route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2}
  - name: split
    route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v1}
      weight: 75
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2}
      weight: 25
    mirrors:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v3}
      percentage: {value: 10}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catch-all, namespace: shop}
spec:
  hosts: ["*"]
  http:
  - route:
    - destination: {host: other, subset: v9}
"#;

fn table() -> RouteTable {
    RouteTable::new(&VirtualService::parse_all("vs.yaml", VS).unwrap()).unwrap()
}

fn request(
    authority: &str,
    path: &str,
    method: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut headers = vec![
        (":authority".to_owned(), authority.to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":method".to_owned(), method.to_owned()),
        (":scheme".to_owned(), "http".to_owned()),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    headers
}

#[test]
fn first_matching_route_of_the_host_decides() {
    let table = table();
    let mut rng = StdRng::seed_from_u64(7);
    // (authority, path, method, extra headers, route taken, subset)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: [Case; 8] = [
        (
            "reviews.shop.svc.cluster.local",
            "/",
            "GET",
            &[("x-fledge-version", "v2")],
            Some("pinned"),
            Some("v2"),
        ),
        (
            "reviews.shop.svc.cluster.local:9080",
            "/",
            "GET",
            &[("x-fledge-version", "v2")],
            Some("pinned"),
            Some("v2"),
        ),
        (
            "reviews",
            "/",
            "GET",
            &[("x-group", "beta-7")],
            Some("beta"),
            Some("v2"),
        ),
        (
            "reviews",
            "/",
            "GET",
            &[("x-group", "beta-7"), ("x-opt-out", "")],
            Some("split"),
            None,
        ),
        (
            "reviews",
            "/v2/items?q=1",
            "POST",
            &[],
            Some("beta"),
            Some("v2"),
        ),
        ("reviews", "/v2/items", "GET", &[], Some("split"), None),
        ("reviews", "/x/v2/items", "POST", &[], Some("split"), None),
        ("ratings.shop", "/", "GET", &[], None, Some("v9")),
    ];
    for (authority, path, method, extra, route, subset) in cases {
        let headers = request(authority, path, method, extra);
        let selection = table.select(&headers, &mut rng).unwrap();
        assert_eq!(selection.route, route, "{authority} {path} {extra:?}");
        if subset.is_some() {
            assert_eq!(
                selection.target.subset.as_deref(),
                subset,
                "{authority} {path} {extra:?}"
            );
        }
    }
}

#[test]
fn weights_and_mirror_percentages_are_honoured() {
    let table = table();
    let mut rng = StdRng::seed_from_u64(42);
    let headers = request("reviews", "/", "GET", &[]);
    let (mut v2, mut mirrored) = (0, 0);
    let n = 20_000;
    for _ in 0..n {
        let selection = table.select(&headers, &mut rng).unwrap();
        v2 += usize::from(selection.target.subset.as_deref() == Some("v2"));
        mirrored += selection.mirrors.len();
    }
    let v2 = v2 as f64 / n as f64;
    let mirrored = mirrored as f64 / n as f64;
    assert!((v2 - 0.25).abs() < 0.015, "v2 share {v2}");
    assert!((mirrored - 0.10).abs() < 0.01, "mirror share {mirrored}");
}

#[test]
fn no_virtual_service_or_route_selects_nothing() {
    let only_reviews = VS.split("---").next().unwrap();
    let table =
        RouteTable::new(&VirtualService::parse_all("vs.yaml", only_reviews).unwrap()).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    assert!(
        table
            .select(&request("ratings", "/", "GET", &[]), &mut rng)
            .is_none()
    );
    assert!(
        RouteTable::default()
            .select(&request("reviews", "/", "GET", &[]), &mut rng)
            .is_none()
    );
}

#[test]
fn host_names_compare_like_istio_in_one_namespace() {
    for (a, b, same) in [
        ("reviews", "reviews.shop.svc.cluster.local", true),
        ("reviews.shop.svc.cluster.local", "reviews", true),
        ("reviews.shop", "reviews.shop", true),
        ("reviews", "ratings.shop", false),
        ("reviews.shop", "reviews.other", false),
    ] {
        assert_eq!(same_host(a, b), same, "{a} {b}");
    }
    for (authority, host) in [
        ("Reviews:9080", "reviews"),
        ("[::1]:80", "::1"),
        ("a.b", "a.b"),
    ] {
        assert_eq!(host_of(authority), host);
    }
}
