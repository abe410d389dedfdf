//! The sandbox mesh's routing decision: given the VirtualServices and a request's headers (with
//! the pseudo headers `:authority`, `:path`, `:method`, `:scheme`), which route takes the
//! request, which destination it goes to (weighted, random per request) and which mirrors get a
//! copy. The first VirtualService naming the request's host (exact names before wildcards) and
//! its first matching `http[]` route decide, as in Istio. Pure: values in, values out; the
//! caller brings the random source.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use regex::Regex;

use crate::virtual_service::{self, StringMatch, VirtualService};
use crate::{Error, Result};

/// Compiled VirtualServices, ready to route requests.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    services: Vec<Service>,
}

/// Where a request (or its mirror) goes: a subset of a service host, on a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
}

/// What the table decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection<'t> {
    /// `namespace/name` of the VirtualService.
    pub service: &'t str,
    /// The `http[].name` of the route taken, if it has one.
    pub route: Option<&'t str>,
    pub target: &'t Target,
    /// Mirrors drawn for this request (each by its own percentage).
    pub mirrors: Vec<&'t Target>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Service {
    key: String,
    hosts: Vec<String>,
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    name: Option<String>,
    matches: Vec<Match>,
    targets: Vec<(Target, u32)>,
    mirrors: Vec<(Target, f64)>,
    timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
struct Match {
    pseudo: Vec<(&'static str, Matcher)>,
    headers: Vec<(String, Matcher)>,
    without_headers: Vec<(String, Matcher)>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Present,
}

impl RouteTable {
    /// Compiles `services` (already validated by [`VirtualService::parse_all`]).
    pub fn new(services: &[VirtualService]) -> Result<RouteTable> {
        let services = services
            .iter()
            .map(Service::compile)
            .collect::<Result<_>>()?;
        Ok(RouteTable { services })
    }

    /// Number of VirtualServices in the table.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The route for a request, or `None` when no VirtualService names its host or no route
    /// of it matches (Envoy answers 404, `NR`).
    pub fn select<R: Rng + ?Sized>(
        &self,
        headers: &[(String, String)],
        rng: &mut R,
    ) -> Option<Selection<'_>> {
        let authority = header(headers, ":authority").unwrap_or_default();
        let host = host_of(authority);
        let service = self
            .services
            .iter()
            .find(|s| {
                s.hosts
                    .iter()
                    .any(|h| !h.starts_with('*') && same_host(h, &host))
            })
            .or_else(|| {
                self.services
                    .iter()
                    .find(|s| s.hosts.iter().any(|h| wildcard_matches(h, &host)))
            })?;
        let route = service.routes.iter().find(|r| r.matches(headers))?;
        let target = route.pick(rng)?;
        let mirrors = route
            .mirrors
            .iter()
            .filter(|(_, percent)| *percent >= 100.0 || rng.random::<f64>() * 100.0 < *percent)
            .map(|(target, _)| target)
            .collect();
        Some(Selection {
            service: &service.key,
            route: route.name.as_deref(),
            target,
            mirrors,
            timeout: route.timeout,
        })
    }
}

impl Service {
    fn compile(vs: &VirtualService) -> Result<Service> {
        let key = vs.key();
        let routes = vs
            .spec
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Route::compile(r).map_err(|(field, message)| Error::VirtualService {
                    file: "(compiled)".into(),
                    object: key.clone(),
                    field: format!("spec.http[{i}].{field}"),
                    message,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Service {
            key,
            hosts: vs
                .spec
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            routes,
        })
    }
}

impl Route {
    fn compile(route: &virtual_service::HttpRoute) -> Result<Route, (String, String)> {
        let matches = route
            .matches
            .iter()
            .map(Match::compile)
            .collect::<Result<_, _>>()?;
        let targets = route
            .route
            .iter()
            .map(|d| (Target::from(&d.destination), d.weight.unwrap_or(0)))
            .collect();
        let mut mirrors: Vec<(Target, f64)> = route
            .mirror
            .iter()
            .map(|m| {
                (
                    Target::from(m),
                    route.mirror_percentage.map_or(100.0, |p| p.value),
                )
            })
            .collect();
        mirrors.extend(route.mirrors.iter().map(|m| {
            (
                Target::from(&m.destination),
                m.percentage.map_or(100.0, |p| p.value),
            )
        }));
        Ok(Route {
            name: route.name.clone(),
            matches,
            targets,
            mirrors,
            timeout: route.timeout,
        })
    }

    /// No `match` means every request; otherwise any one of them (each is an AND of its parts).
    fn matches(&self, headers: &[(String, String)]) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(headers))
    }

    /// A single destination takes everything; several split by weight.
    fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<&Target> {
        if self.targets.len() == 1 {
            return self.targets.first().map(|(t, _)| t);
        }
        let total: u32 = self.targets.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut draw = rng.random_range(0..total);
        for (target, weight) in &self.targets {
            if draw < *weight {
                return Some(target);
            }
            draw -= weight;
        }
        None
    }
}

impl Match {
    fn compile(m: &virtual_service::MatchRequest) -> Result<Match, (String, String)> {
        let mut pseudo = Vec::new();
        for (name, condition) in [
            (":path", &m.uri),
            (":scheme", &m.scheme),
            (":method", &m.method),
            (":authority", &m.authority),
        ] {
            if let Some(condition) = condition {
                pseudo.push((name, Matcher::compile(condition)?));
            }
        }
        let compile_all = |map: &std::collections::BTreeMap<String, StringMatch>| {
            map.iter()
                .map(|(name, c)| Ok((name.to_ascii_lowercase(), Matcher::compile(c)?)))
                .collect::<Result<Vec<_>, (String, String)>>()
        };
        Ok(Match {
            pseudo,
            headers: compile_all(&m.headers)?,
            without_headers: compile_all(&m.without_headers)?,
        })
    }

    fn matches(&self, headers: &[(String, String)]) -> bool {
        let pseudo = self.pseudo.iter().all(|(name, matcher)| {
            let value = header(headers, name).unwrap_or_default();
            match (*name, matcher) {
                (":path", Matcher::Prefix(_)) => matcher.matches(value),
                (":path", _) => matcher.matches(value.split('?').next().unwrap_or(value)),
                (":authority", _) => matcher.matches(&host_of(value)) || matcher.matches(value),
                _ => matcher.matches(value),
            }
        });
        pseudo
            && self
                .headers
                .iter()
                .all(|(name, m)| values(headers, name).any(|v| m.matches(v)))
            && self
                .without_headers
                .iter()
                .all(|(name, m)| !values(headers, name).any(|v| m.matches(v)))
    }
}

impl Matcher {
    fn compile(m: &StringMatch) -> Result<Matcher, (String, String)> {
        Ok(match (&m.exact, &m.prefix, &m.regex) {
            (Some(exact), _, _) => Matcher::Exact(exact.clone()),
            (_, Some(prefix), _) => Matcher::Prefix(prefix.clone()),
            (_, _, Some(pattern)) => {
                Matcher::Regex(Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    (
                        "regex".to_owned(),
                        format!("{pattern:?} is not a regex: {e}"),
                    )
                })?)
            }
            _ => Matcher::Present,
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(exact) => value == exact,
            Matcher::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Matcher::Regex(regex) => regex.is_match(value),
            Matcher::Present => true,
        }
    }
}

impl From<&virtual_service::Destination> for Target {
    fn from(d: &virtual_service::Destination) -> Target {
        Target {
            host: d.host.to_ascii_lowercase(),
            subset: d.subset.clone(),
            port: d.port.map(|p| p.number),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host)?;
        if let Some(subset) = &self.subset {
            write!(f, "/{subset}")?;
        }
        Ok(())
    }
}

/// The first value of header `name` (names are lower case).
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    values(headers, name).next()
}

fn values<'h, 'n>(
    headers: &'h [(String, String)],
    name: &'n str,
) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
    headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The host of an authority, lower case, without port.
pub fn host_of(authority: &str) -> String {
    let authority = authority.trim();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.to_ascii_lowercase()
}

/// Host names as Istio compares them inside one namespace: equal, or one is the short name
/// (first label) of the other.
pub fn same_host(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let first = |s: &str| s.split('.').next().unwrap_or(s).to_owned();
    (!a.contains('.') && first(b) == a) || (!b.contains('.') && first(a) == b)
}

fn wildcard_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests;
