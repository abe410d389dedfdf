//! The route builder: fledge's routes on top, the user's routes byte-for-byte below, a clean
//! VirtualService after the hand-over, every produced object valid against Istio's own CRD
//! schema (the pinned bundle in `FLEDGE_ISTIO_CRDS`), and the filters' HostRoute.

use fledge_proto::v1::{header_match, rule, sticky_key};
use serde_json::{Value, json};

use super::*;
use crate::rollout::{CohortRule, CookieRule, HeaderRule, RoutingIntent, Shape, StickyKey};

/// The `openAPIV3Schema` of VirtualService `networking.istio.io/v1`, compiled once.
fn schema() -> &'static jsonschema::Validator {
    fledge_testkit::istio::virtual_service()
}

fn assert_valid(vs: &Value, what: &str) {
    let errors: Vec<String> = schema().iter_errors(vs).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{vs:#}");
}

fn user_vs() -> Value {
    serde_norway::from_str(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  gateways: [mesh]
  http:
    - name: other-rollout
      match: [{headers: {x-other: {exact: "1"}}}]
      route: [{destination: {host: ratings, subset: v3}}]
    - name: admin
      match: [{uri: {prefix: /admin}}]
      route: [{destination: {host: reviews-admin, port: {number: 9080}}}]
      timeout: 3s
    - name: default
      route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]
      retries: {attempts: 3, perTryTimeout: 2s}
"#,
    )
    .unwrap()
}

fn intent(shape: Shape) -> RoutingIntent {
    RoutingIntent {
        owner: "reviews".into(),
        host: "reviews.shop.svc.cluster.local".into(),
        stable: "v1".into(),
        canary: "v2".into(),
        version_header: "x-fledge-version".into(),
        sticky: Some(StickyKey::Header("X-User-Id".into())),
        shape,
    }
}

fn managed(weight: u32, cohort: Vec<CohortRule>, mirror: Option<f64>) -> RoutingIntent {
    intent(Shape::Managed {
        canary_weight: weight,
        cohort,
        mirror_percent: mirror,
    })
}

fn cohort() -> Vec<CohortRule> {
    let header = |exact: Option<&str>, prefix: Option<&str>, present: Option<bool>| CohortRule {
        header: Some(HeaderRule {
            name: "X-Beta".into(),
            exact: exact.map(Into::into),
            prefix: prefix.map(Into::into),
            present,
        }),
        cookie: None,
    };
    vec![
        header(Some("true"), None, None),
        header(None, Some("tester-"), None),
        header(None, None, Some(true)),
        header(None, None, Some(false)),
        CohortRule {
            header: None,
            cookie: Some(CookieRule {
                name: "cohort".into(),
                value: "beta.1".into(),
            }),
        },
    ]
}

fn names(vs: &Value) -> Vec<String> {
    vs["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The user's routes, each serialized: what "byte-for-byte" compares.
fn user_routes(vs: &Value) -> Vec<String> {
    vs["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            !r["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("fledge-reviews-")
        })
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

#[test]
fn the_user_vs_fixture_is_valid_and_invalid_ones_are_caught() {
    assert_valid(&user_vs(), "fixture");
    let mut bad = user_vs();
    bad["spec"]["http"][2]["route"][0]["weight"] = json!("ninety");
    assert!(
        !schema().is_valid(&bad),
        "the schema must refuse a weight that is a string"
    );
}

#[test]
fn managed_routes_sit_above_the_users_untouched_routes() {
    // (intent, fledge's route names top to bottom, canary weight)
    let cases = [
        (managed(0, vec![], None), vec!["v1", "v2", "split"], 0),
        (managed(25, vec![], None), vec!["v1", "v2", "split"], 25),
        (managed(100, vec![], None), vec!["v1", "v2", "split"], 100),
        (
            managed(0, cohort(), None),
            vec!["v1", "v2", "cohort", "split"],
            0,
        ),
        (managed(0, vec![], Some(12.5)), vec!["v1", "v2", "split"], 0),
    ];
    let user = user_vs();
    for (intent, ours, weight) in cases {
        let vs = virtual_service(&intent, &user).unwrap();
        assert_valid(&vs, &format!("{ours:?} at {weight}"));
        let mut expected: Vec<String> =
            ours.iter().map(|n| format!("fledge-reviews-{n}")).collect();
        expected.extend(["other-rollout", "admin", "default"].map(String::from));
        assert_eq!(names(&vs), expected);
        assert_eq!(
            user_routes(&vs),
            user_routes(&user),
            "user's routes changed"
        );
        // Everything but spec.http is as the user wrote it.
        let (mut a, mut b) = (vs.clone(), user.clone());
        a["spec"]["http"] = Value::Null;
        b["spec"]["http"] = Value::Null;
        assert_eq!(a, b);

        let http = &vs["spec"]["http"];
        let pinned = &http[1];
        assert_eq!(
            pinned["match"][0]["headers"]["x-fledge-version"]["exact"],
            "v2"
        );
        assert_eq!(pinned["route"][0]["destination"]["subset"], "v2");
        // fledge's destinations use the port the user's routes use for the host.
        assert_eq!(pinned["route"][0]["destination"]["port"]["number"], 9080);
        let split = &http[ours.len() - 1];
        assert!(split.get("match").is_none(), "the split catches the rest");
        assert_eq!(split["route"][0]["weight"], 100 - weight);
        assert_eq!(split["route"][1]["weight"], weight);
        assert_eq!(split["route"][1]["destination"]["subset"], "v2");
        // The same intent again changes nothing: fledge's routes are replaced, never stacked.
        assert_eq!(virtual_service(&intent, &vs).unwrap(), vs);
    }
}

#[test]
fn the_mirror_copies_stable_traffic_to_the_canary() {
    let vs = virtual_service(&managed(0, vec![], Some(12.5)), &user_vs()).unwrap();
    for i in [0, 2] {
        let r = &vs["spec"]["http"][i];
        assert_eq!(r["mirror"]["subset"], "v2", "route {i}");
        assert_eq!(r["mirrorPercentage"]["value"], 12.5, "route {i}");
    }
    assert!(
        vs["spec"]["http"][1].get("mirror").is_none(),
        "canary is not mirrored to itself"
    );
}

#[test]
fn cohort_rules_become_matches_to_the_canary() {
    let vs = virtual_service(&managed(0, cohort(), None), &user_vs()).unwrap();
    let route = &vs["spec"]["http"][2];
    assert_eq!(route["route"][0]["destination"]["subset"], "v2");
    let expected = json!([
        { "headers": { "x-beta": { "exact": "true" } } },
        { "headers": { "x-beta": { "prefix": "tester-" } } },
        { "headers": { "x-beta": {} } },
        { "withoutHeaders": { "x-beta": {} } },
        { "headers": { "cookie": { "regex": r"^(.*?;\s*)?(cohort=beta\.1)(;.*)?$" } } },
    ]);
    assert_eq!(route["match"], expected);
}

#[test]
fn settling_removes_fledge_routes_and_hands_over_the_stable_subset() {
    let user = user_vs();
    let during = virtual_service(&managed(50, cohort(), Some(5.0)), &user).unwrap();

    let back = virtual_service(
        &intent(Shape::Settled {
            subset: "v1".into(),
        }),
        &during,
    )
    .unwrap();
    assert_eq!(
        back, user,
        "a rollback leaves exactly the user's VirtualService"
    );

    let promoted = virtual_service(
        &intent(Shape::Settled {
            subset: "v2".into(),
        }),
        &during,
    )
    .unwrap();
    assert_valid(&promoted, "promoted");
    assert_eq!(names(&promoted), ["other-rollout", "admin", "default"]);
    let mut expected = user.clone();
    expected["spec"]["http"][2]["route"][0]["destination"]["subset"] = json!("v2");
    assert_eq!(
        promoted, expected,
        "only the host's stable destination moved to v2"
    );
}

#[test]
fn release_takes_out_only_the_rollouts_own_routes() {
    let mut user = user_vs();
    let theirs = json!({ "name": "fledge-ratings-split", "route": [{ "destination": { "host": "ratings", "subset": "v1" } }] });
    user["spec"]["http"]
        .as_array_mut()
        .unwrap()
        .insert(0, theirs);
    for shape in [
        managed(10, vec![], None).shape,
        managed(0, cohort(), Some(20.0)).shape,
    ] {
        let vs = virtual_service(&intent(shape), &user).unwrap();
        assert_ne!(vs, user);
        let released = release("reviews", &vs);
        assert_eq!(released, user, "byte for byte the user's own");
        assert_valid(&released, "released");
        assert_eq!(release("reviews", &released), user, "nothing more to take");
    }
    // A VirtualService without routes is left as it is.
    let mut bare = user_vs();
    bare["spec"].as_object_mut().unwrap().remove("http");
    assert_eq!(release("reviews", &bare), bare);
}

#[test]
fn other_owners_routes_are_left_alone() {
    let mut user = user_vs();
    let theirs = json!({ "name": "fledge-ratings-split", "route": [{ "destination": { "host": "ratings", "subset": "v1" } }] });
    user["spec"]["http"]
        .as_array_mut()
        .unwrap()
        .insert(0, theirs.clone());
    let vs = virtual_service(&managed(10, vec![], None), &user).unwrap();
    assert_eq!(vs["spec"]["http"][3], theirs);
    let settled = virtual_service(
        &intent(Shape::Settled {
            subset: "v1".into(),
        }),
        &vs,
    )
    .unwrap();
    assert_eq!(settled, user);
}

#[test]
fn unusable_virtual_services_are_refused_naming_the_field() {
    type Edit = fn(&mut Value);
    const CUT: &str = "VirtualService shop/reviews: spec.http has no route of yours without a `match` to reviews.shop.svc.cluster.local (the default route the requests fledge does not route take): fledge does not write a VirtualService that would leave them without a route; was it cut short?";
    let cases: [(Edit, &str); 8] = [
        (
            |v| v["kind"] = json!("DestinationRule"),
            "VirtualService shop/reviews: apiVersion/kind are \"networking.istio.io/v1\"/\"DestinationRule\", not networking.istio.io/v1 VirtualService",
        ),
        (
            |v| v["spec"]["hosts"] = json!(["ratings"]),
            "VirtualService shop/reviews: spec.hosts [\"ratings\"] do not include reviews.shop.svc.cluster.local",
        ),
        (
            |v| v["spec"]["http"] = json!({ "route": [] }),
            "VirtualService shop/reviews: spec.http is {\"route\":[]}, not a list of routes",
        ),
        (
            |v| v["spec"]["http"][1] = json!("admin"),
            "VirtualService shop/reviews: spec.http[1] is not an object",
        ),
        // A file cut short after the matched routes: the default route is gone.
        (
            |v| {
                v["spec"]["http"].as_array_mut().unwrap().pop();
            },
            CUT,
        ),
        (|v| v["spec"]["http"] = json!([]), CUT),
        (
            |v| v["spec"].as_object_mut().unwrap().clear(),
            "VirtualService shop/reviews: spec.hosts [] do not include reviews.shop.svc.cluster.local",
        ),
        // A default route to another host is not this host's.
        (
            |v| v["spec"]["http"][2]["route"][0]["destination"]["host"] = json!("ratings"),
            CUT,
        ),
    ];
    for (edit, expected) in cases {
        let mut vs = user_vs();
        edit(&mut vs);
        let err = virtual_service(&managed(10, vec![], None), &vs).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn host_names_match_in_short_and_full_form() {
    for host in ["reviews", "reviews.shop", "reviews.shop.svc.cluster.local"] {
        let mut vs = user_vs();
        vs["spec"]["hosts"] = json!([host]);
        assert!(
            virtual_service(&managed(10, vec![], None), &vs).is_ok(),
            "{host}"
        );
    }
    let mut vs = user_vs();
    vs["metadata"]["namespace"] = json!("other");
    assert!(
        virtual_service(&managed(10, vec![], None), &vs).is_err(),
        "reviews.other is not ours"
    );
}

#[test]
fn the_filters_get_rules_split_and_sticky_key() {
    let route = host_route(&managed(25, cohort(), None)).unwrap();
    assert_eq!(route.host, "reviews.shop.svc.cluster.local");
    assert_eq!(route.version_header, "x-fledge-version");
    let split = route.split.unwrap();
    assert_eq!(
        (
            split.stable.as_str(),
            split.canary.as_str(),
            split.canary_basis_points
        ),
        ("v1", "v2", 2500)
    );
    assert_eq!(
        route.sticky_key.unwrap().source,
        Some(sticky_key::Source::Header("x-user-id".into()))
    );
    assert_eq!(route.rules.len(), 5);
    assert!(route.rules.iter().all(|r| r.version == "v2"));
    let values: Vec<_> = route
        .rules
        .iter()
        .map(|r| match r.r#match.clone().unwrap() {
            rule::Match::Header(h) => format!("{}:{:?}", h.name, h.value.unwrap()),
            rule::Match::Cookie(c) => format!("cookie {}={}", c.name, c.value),
        })
        .collect();
    assert_eq!(
        values,
        [
            format!("x-beta:{:?}", header_match::Value::Exact("true".into())),
            format!("x-beta:{:?}", header_match::Value::Prefix("tester-".into())),
            format!("x-beta:{:?}", header_match::Value::Present(true)),
            format!("x-beta:{:?}", header_match::Value::Present(false)),
            "cookie cohort=beta.1".to_owned(),
        ]
    );
    for (weight, bp) in [(0, 0), (1, 100), (100, 10_000)] {
        let r = host_route(&managed(weight, vec![], None)).unwrap();
        assert_eq!(r.split.unwrap().canary_basis_points, bp);
        assert!(r.rules.is_empty());
    }
    for subset in ["v1", "v2"] {
        assert_eq!(
            host_route(&intent(Shape::Settled {
                subset: subset.into()
            })),
            None
        );
    }
}
