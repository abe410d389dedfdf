//! The VirtualService (`networking.istio.io/v1`) for a routing intent, built from the user's own
//! as an opaque JSON value: fledge's `fledge-<rollout>-…` routes are replaced at the top of
//! `spec.http`, every other route and field is carried over as it was.

use serde_json::{Map, Value, json};

use super::{Error, Result};
use crate::rollout::{CohortRule, RoutingIntent, Shape};

/// The name prefix of every route the Rollout `owner` owns.
pub fn owned_prefix(owner: &str) -> String {
    format!("fledge-{owner}-")
}

/// The VirtualService `user` with the routes `intent` asks for. `user` is the object as stored
/// (apiVersion, kind, metadata, spec); the result is the object to write back.
pub fn virtual_service(intent: &RoutingIntent, user: &Value) -> Result<Value> {
    let key = format!(
        "{}/{}",
        user["metadata"]["namespace"].as_str().unwrap_or("default"),
        user["metadata"]["name"].as_str().unwrap_or("")
    );
    let bad = |field: &str, problem: String| Error {
        key: key.clone(),
        field: field.to_owned(),
        problem,
    };
    let api = user["apiVersion"].as_str().unwrap_or("");
    if !api.starts_with("networking.istio.io/") || user["kind"] != "VirtualService" {
        return Err(bad(
            "apiVersion/kind",
            format!(
                "are {api:?}/{}, not networking.istio.io/v1 VirtualService",
                user["kind"]
            ),
        ));
    }
    let namespace = user["metadata"]["namespace"].as_str().unwrap_or("default");
    let hosts = user["spec"]["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !hosts
        .iter()
        .filter_map(Value::as_str)
        .any(|h| same_host(h, &intent.host, namespace))
    {
        return Err(bad(
            "spec.hosts",
            format!("{} do not include {}", Value::Array(hosts), intent.host),
        ));
    }
    let http = match &user["spec"]["http"] {
        Value::Null => Vec::new(),
        Value::Array(routes) => routes.clone(),
        other => {
            return Err(bad(
                "spec.http",
                format!("is {other}, not a list of routes"),
            ));
        }
    };
    for (i, route) in http.iter().enumerate() {
        if !route.is_object() {
            return Err(bad(&format!("spec.http[{i}]"), "is not an object".into()));
        }
    }
    let prefix = owned_prefix(&intent.owner);
    let (_, mut theirs): (Vec<Value>, Vec<Value>) = http
        .into_iter()
        .partition(|r| r["name"].as_str().is_some_and(|n| n.starts_with(&prefix)));
    if !theirs
        .iter()
        .any(|r| is_default_to(r, &intent.host, namespace))
    {
        return Err(bad(
            "spec.http",
            format!(
                "has no route of yours without a `match` to {} (the default route the requests fledge does not route take): fledge does not write a VirtualService that would leave them without a route; was it cut short?",
                intent.host
            ),
        ));
    }
    let mut routes = match &intent.shape {
        Shape::Managed {
            canary_weight,
            cohort,
            mirror_percent,
        } => {
            let port = user_port(&theirs, &intent.host, namespace);
            let b = Builder { intent, port };
            b.owned(*canary_weight, cohort, *mirror_percent)
        }
        Shape::Settled { subset } => {
            if *subset != intent.stable {
                hand_over(&mut theirs, intent, subset, namespace);
            }
            Vec::new()
        }
    };
    routes.extend(theirs);
    let mut out = user.clone();
    out["spec"]["http"] = Value::Array(routes);
    Ok(out)
}

/// The VirtualService `user` without the routes the Rollout `owner` owns; every other route and
/// field as it was. The object to write back when the Rollout is deleted.
pub fn release(owner: &str, user: &Value) -> Value {
    let prefix = owned_prefix(owner);
    let mut out = user.clone();
    // `get_mut`, not indexing: indexing a missing field would add it as null.
    let http = out.get_mut("spec").and_then(|s| s.get_mut("http"));
    if let Some(routes) = http.and_then(Value::as_array_mut) {
        routes.retain(|r| !r["name"].as_str().is_some_and(|n| n.starts_with(&prefix)));
    }
    out
}

/// Whether a VirtualService host (`reviews`, `reviews.shop`, or the full name) names `target`.
/// Whether `route` matches every request (no `match`, or an empty one) and sends some to `host`.
fn is_default_to(route: &Value, host: &str, namespace: &str) -> bool {
    let matches_all = match &route["match"] {
        Value::Null => true,
        Value::Array(m) => m.is_empty(),
        _ => false,
    };
    let to_host = route["route"].as_array().is_some_and(|to| {
        to.iter().any(|d| {
            d["destination"]["host"]
                .as_str()
                .is_some_and(|h| same_host(h, host, namespace))
        })
    });
    matches_all && to_host
}

fn same_host(host: &str, target: &str, namespace: &str) -> bool {
    let full = |h: &str| match h.matches('.').count() {
        0 => format!("{h}.{namespace}.svc.cluster.local"),
        1 => format!("{h}.svc.cluster.local"),
        _ => h.to_owned(),
    };
    host == target || full(host) == full(target)
}

/// The port the user's routes use for the host, so fledge's routes use the same.
fn user_port(routes: &[Value], host: &str, namespace: &str) -> Option<Value> {
    routes
        .iter()
        .filter_map(|r| r["route"].as_array())
        .flatten()
        .map(|d| &d["destination"])
        .find(|d| {
            d["host"]
                .as_str()
                .is_some_and(|h| same_host(h, host, namespace))
        })
        .and_then(|d| d.get("port").cloned())
}

/// After a promotion: the user's destinations that named the old stable subset of the host
/// name the new stable. Nothing else of their routes changes.
fn hand_over(routes: &mut [Value], intent: &RoutingIntent, subset: &str, namespace: &str) {
    for route in routes {
        let Some(dests) = route.get_mut("route").and_then(Value::as_array_mut) else {
            continue;
        };
        for d in dests {
            let dest = &mut d["destination"];
            let ours = dest["host"]
                .as_str()
                .is_some_and(|h| same_host(h, &intent.host, namespace));
            if ours && dest["subset"] == intent.stable.as_str() {
                dest["subset"] = json!(subset);
            }
        }
    }
}

struct Builder<'a> {
    intent: &'a RoutingIntent,
    port: Option<Value>,
}

impl Builder<'_> {
    fn destination(&self, subset: &str) -> Value {
        let mut d = json!({ "host": self.intent.host, "subset": subset });
        if let Some(port) = &self.port {
            d["port"] = port.clone();
        }
        d
    }

    fn route(&self, what: &str, matches: Option<Vec<Value>>, to: Vec<Value>) -> Value {
        let mut r = Map::new();
        r.insert(
            "name".into(),
            json!(format!("{}{what}", owned_prefix(&self.intent.owner))),
        );
        if let Some(m) = matches {
            r.insert("match".into(), Value::Array(m));
        }
        r.insert("route".into(), Value::Array(to));
        Value::Object(r)
    }

    fn mirror(&self, route: &mut Value, percent: Option<f64>) {
        if let Some(p) = percent {
            route["mirror"] = self.destination(&self.intent.canary);
            route["mirrorPercentage"] = json!({ "value": p });
        }
    }

    /// fledge's routes, top to bottom.
    fn owned(&self, weight: u32, cohort: &[CohortRule], mirror: Option<f64>) -> Vec<Value> {
        let i = self.intent;
        let header = i.version_header.to_ascii_lowercase();
        let pinned = |subset: &str| {
            let m = json!([{ "headers": { header.as_str(): { "exact": subset } } }]);
            self.route(
                subset,
                Some(m.as_array().cloned().unwrap_or_default()),
                vec![json!({ "destination": self.destination(subset) })],
            )
        };
        let mut stable = pinned(&i.stable);
        self.mirror(&mut stable, mirror);
        let mut out = vec![stable, pinned(&i.canary)];
        if !cohort.is_empty() {
            let matches = cohort.iter().map(istio_match).collect();
            out.push(self.route(
                "cohort",
                Some(matches),
                vec![json!({ "destination": self.destination(&i.canary) })],
            ));
        }
        let weight = weight.min(100);
        let mut split = self.route(
            "split",
            None,
            vec![
                json!({ "destination": self.destination(&i.stable), "weight": 100 - weight }),
                json!({ "destination": self.destination(&i.canary), "weight": weight }),
            ],
        );
        self.mirror(&mut split, mirror);
        out.push(split);
        out
    }
}

/// One cohort rule as an Istio HTTPMatchRequest. Header names are lower case, as Istio wants;
/// a cookie is matched within the `cookie` header by an RE2 regex.
fn istio_match(rule: &CohortRule) -> Value {
    if let Some(h) = &rule.header {
        let name = h.name.to_ascii_lowercase();
        return match (&h.exact, &h.prefix, h.present) {
            (Some(v), _, _) => json!({ "headers": { name: { "exact": v } } }),
            (None, Some(v), _) => json!({ "headers": { name: { "prefix": v } } }),
            (None, None, Some(false)) => json!({ "withoutHeaders": { name: {} } }),
            (None, None, _) => json!({ "headers": { name: {} } }),
        };
    }
    let (name, value) = rule
        .cookie
        .as_ref()
        .map_or(("", ""), |c| (c.name.as_str(), c.value.as_str()));
    let regex = format!(
        r"^(.*?;\s*)?({}={})(;.*)?$",
        re2_escape(name),
        re2_escape(value)
    );
    json!({ "headers": { "cookie": { "regex": regex } } })
}

fn re2_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
