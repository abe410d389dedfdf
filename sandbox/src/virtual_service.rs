//! Istio `networking.istio.io/v1` VirtualService, the part the sandbox mesh routes by: hosts,
//! ordered `http[]` routes with `match` (uri, scheme, method, authority, headers,
//! `withoutHeaders`), weighted `route[]` destinations, `mirror`/`mirrorPercentage`, `mirrors[]`
//! and `timeout`. Parsing names the field that is wrong (`spec.http[1].route[0].weight`).
//!
//! Istio fields the sandbox does not act on are split in two: those that only decorate a route
//! (retries, header rewrites, CORS...) are accepted and reported by [`VirtualService::ignored`];
//! those that would change which requests a route takes or where they go (query-parameter
//! matches, redirects, fault injection...) are refused, since ignoring them would route
//! differently from Istio. Unknown fields are refused. This module does no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// One VirtualService document.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualService {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: Spec,
    #[serde(default)]
    pub status: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<MatchRequest>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    #[serde(default)]
    pub mirror: Option<Destination>,
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    #[serde(default)]
    pub mirrors: Vec<MirrorPolicy>,
    /// Protobuf JSON duration (`"0.5s"`); `ms`, `m` and `h` suffixes are also read.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Accepted, not acted on (reported by [`VirtualService::ignored`]).
    #[serde(default)]
    pub retries: Option<serde_norway::Value>,
    #[serde(default)]
    pub headers: Option<serde_norway::Value>,
    #[serde(default)]
    pub cors_policy: Option<serde_norway::Value>,
    #[serde(default)]
    pub rewrite: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub authority: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
}

/// Istio's StringMatch: one of exact, prefix, regex (RE2, whole string). With none set, a
/// header condition only asks that the header be present.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub headers: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    pub number: u16,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorPolicy {
    pub destination: Destination,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// Istio's Percent: a double in [0, 100].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    pub value: f64,
}

impl VirtualService {
    /// Every VirtualService in a (multi-document) YAML text; documents of other kinds are
    /// skipped. `source` names the text in errors (usually the file path).
    pub fn parse_all(source: &str, text: &str) -> Result<Vec<VirtualService>> {
        let mut services = Vec::new();
        for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            let value: serde_norway::Value = serde_norway::Value::deserialize(document)
                .map_err(|e| invalid(source, format!("document {index}"), "", e.to_string()))?;
            if value.is_null() {
                continue;
            }
            if value.get("kind").and_then(|k| k.as_str()) != Some("VirtualService") {
                continue;
            }
            let object = object_key(&value).unwrap_or_else(|| format!("document {index}"));
            let service: VirtualService = serde_path_to_error::deserialize(value).map_err(|e| {
                let field = e.path().to_string();
                invalid(source, object, &field, e.inner().to_string())
            })?;
            service
                .validate()
                .map_err(|(field, message)| Error::VirtualService {
                    file: source.to_owned(),
                    object: service.key(),
                    field,
                    message,
                })?;
            services.push(service);
        }
        Ok(services)
    }

    /// `namespace/name`, as errors and logs name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    /// Fields present in this VirtualService that the sandbox accepts but does not act on.
    pub fn ignored(&self) -> Vec<String> {
        let mut ignored = Vec::new();
        for (i, route) in self.spec.http.iter().enumerate() {
            let present = [
                ("retries", route.retries.is_some()),
                ("headers", route.headers.is_some()),
                ("corsPolicy", route.cors_policy.is_some()),
                ("rewrite", route.rewrite.is_some()),
            ];
            for (name, _) in present.iter().filter(|(_, is)| *is) {
                ignored.push(format!("spec.http[{i}].{name}"));
            }
            for (j, destination) in route.route.iter().enumerate() {
                if destination.headers.is_some() {
                    ignored.push(format!("spec.http[{i}].route[{j}].headers"));
                }
            }
        }
        ignored
    }

    /// Checks what serde cannot: (field, what is wrong).
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: String, message: &str| Err((field, message.to_owned()));
        if !self.api_version.starts_with("networking.istio.io/") {
            return bad("apiVersion".into(), "is not networking.istio.io/*");
        }
        if self.spec.hosts.is_empty() {
            return bad("spec.hosts".into(), "is empty");
        }
        for (i, route) in self.spec.http.iter().enumerate() {
            let at = format!("spec.http[{i}]");
            if route.route.is_empty() {
                return bad(
                    format!("{at}.route"),
                    "is empty (redirects and direct responses are not supported by the sandbox)",
                );
            }
            for (m, condition) in route.matches.iter().enumerate() {
                condition.validate(&format!("{at}.match[{m}]"))?;
            }
            let mut total = 0;
            for (r, destination) in route.route.iter().enumerate() {
                let field = format!("{at}.route[{r}]");
                destination
                    .destination
                    .validate(&format!("{field}.destination"))?;
                let weight = destination.weight.unwrap_or(0);
                if weight > 100 {
                    return Err((format!("{field}.weight"), format!("{weight} is over 100")));
                }
                total += weight;
            }
            if route.route.len() > 1 && total != 100 {
                return Err((
                    format!("{at}.route"),
                    format!("weights sum to {total}, not 100"),
                ));
            }
            if let Some(mirror) = &route.mirror {
                mirror.validate(&format!("{at}.mirror"))?;
            }
            if let Some(percent) = route.mirror_percentage {
                percent.validate(&format!("{at}.mirrorPercentage.value"))?;
            }
            for (k, mirror) in route.mirrors.iter().enumerate() {
                mirror
                    .destination
                    .validate(&format!("{at}.mirrors[{k}].destination"))?;
                if let Some(percent) = mirror.percentage {
                    percent.validate(&format!("{at}.mirrors[{k}].percentage.value"))?;
                }
            }
        }
        Ok(())
    }
}

impl MatchRequest {
    fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let singles = [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ];
        for (name, condition) in singles {
            if let Some(condition) = condition {
                condition.validate(&format!("{at}.{name}"), false)?;
            }
        }
        for (field, map) in [
            ("headers", &self.headers),
            ("withoutHeaders", &self.without_headers),
        ] {
            for (name, condition) in map {
                condition.validate(&format!("{at}.{field}.{name}"), true)?;
            }
        }
        Ok(())
    }
}

impl StringMatch {
    fn validate(&self, at: &str, may_be_empty: bool) -> Result<(), (String, String)> {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if set > 1 {
            return Err((
                at.to_owned(),
                "sets more than one of exact, prefix, regex".into(),
            ));
        }
        if set == 0 && !may_be_empty {
            return Err((at.to_owned(), "sets none of exact, prefix, regex".into()));
        }
        if let Some(pattern) = &self.regex
            && let Err(e) = regex::Regex::new(pattern)
        {
            return Err((
                format!("{at}.regex"),
                format!("{pattern:?} is not a regex: {e}"),
            ));
        }
        Ok(())
    }
}

impl Destination {
    fn validate(&self, at: &str) -> Result<(), (String, String)> {
        if self.host.trim().is_empty() {
            return Err((format!("{at}.host"), "is empty".into()));
        }
        if self.subset.as_deref() == Some("") {
            return Err((format!("{at}.subset"), "is empty".into()));
        }
        Ok(())
    }
}

impl Percent {
    fn validate(self, at: &str) -> Result<(), (String, String)> {
        if !(0.0..=100.0).contains(&self.value) {
            return Err((at.to_owned(), format!("{} is outside [0, 100]", self.value)));
        }
        Ok(())
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `"1.5s"`, `"250ms"`, `"2m"`, `"1h"` → Duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, *unit)))
        .ok_or_else(|| format!("{text:?} is not a duration like \"1.5s\""))?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like \"1.5s\""))?;
    Duration::try_from_secs_f64(value * unit).map_err(|e| format!("{text:?}: {e}"))
}

/// `namespace/name` from a document's metadata, when it has a name.
fn object_key(value: &serde_norway::Value) -> Option<String> {
    let metadata = value.get("metadata")?;
    let name = metadata.get("name")?.as_str()?;
    let namespace = metadata
        .get("namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("");
    Some(format!("{namespace}/{name}"))
}

fn invalid(source: &str, object: String, field: &str, message: String) -> Error {
    Error::VirtualService {
        file: source.to_owned(),
        object,
        field: if field.is_empty() || field == "." {
            "(document)".into()
        } else {
            field.to_owned()
        },
        message,
    }
}

#[cfg(test)]
mod tests;
