//! Which version a request goes to: the validated routing table and the per-request decision.
//!
//! A table holds at most one route per destination host. For a request to a routed host, the
//! route's rules are tried in order (header exact/prefix/present, cookie value) and the first
//! match pins the version; otherwise the sticky split hashes the sticky key into 10,000 buckets
//! and a bucket below the canary basis points goes to the canary, so raising the share only ever
//! adds keys to the canary. A request without a key gets a random bucket.
//!
//! This module takes values and returns values: it neither reads nor writes headers (the plugin
//! adapter does) and knows nothing of the wire format beyond converting a `fledge.v1.RoutingTable`.

use std::borrow::Cow;

use fledge_proto::SPLIT_BUCKETS;
use fledge_proto::v1;

mod authority;
#[cfg(test)]
mod tests;

pub use authority::{Destination, HostBytes};

/// A value in a routing table or configuration that is not acceptable, with the path of the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What a route takes from the plugin configuration when it names nothing itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDefaults {
    pub version_header: String,
    pub sticky_key: Option<StickyKey>,
}

impl Default for RouteDefaults {
    fn default() -> Self {
        RouteDefaults {
            version_header: fledge_proto::DEFAULT_VERSION_HEADER.to_owned(),
            sticky_key: None,
        }
    }
}

/// A validated routing table. Revision 0 is the one from the plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub revision: u64,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lower case, without port.
    pub host: String,
    /// Lower-case header name the chosen version is written to.
    pub version_header: String,
    pub rules: Vec<Rule>,
    pub split: Option<Split>,
    pub sticky_key: Option<StickyKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matcher: Match,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    HeaderExact { name: String, value: String },
    HeaderPrefix { name: String, prefix: String },
    HeaderPresent { name: String, present: bool },
    Cookie { name: String, value: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub stable: String,
    pub canary: String,
    /// 0..=10,000.
    pub canary_basis_points: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// A lower-case request header name.
    Header(String),
    /// A cookie name (case-sensitive, as cookies are).
    Cookie(String),
}

/// Why a request got its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The rule at this index matched.
    Rule(usize),
    /// The split put the request's bucket below the canary share.
    Canary,
    /// The split put the request's bucket at or above the canary share.
    Stable,
    /// No rule matched and the route has no split: the header is removed.
    NoSplit,
}

/// The decision for one request to a routed host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'t> {
    pub route: &'t Route,
    /// The version to write into `route.version_header`; `None` removes that header.
    pub version: Option<&'t str>,
    pub cause: Cause,
}

/// Read access to a request's headers. Names are passed lower case.
pub trait Request {
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl<K: AsRef<str>, V: AsRef<str>> Request for [(K, V)] {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| Cow::Borrowed(v.as_ref()))
    }
}

// === impl Table ===

impl Table {
    /// Checks a table from the agent (or the configuration, which takes the same shape) and fills
    /// what its routes leave empty from `defaults`.
    pub fn from_proto(table: v1::RoutingTable, defaults: &RouteDefaults) -> Result<Table, Invalid> {
        let mut routes: Vec<Route> = Vec::with_capacity(table.routes.len());
        for (i, route) in table.routes.into_iter().enumerate() {
            let route = Route::from_proto(route, &format!("routes[{i}]"), defaults)?;
            if let Some(j) = routes.iter().position(|r| r.host == route.host) {
                return Err(Invalid::new(
                    format!("routes[{i}].host"),
                    format!("{:?} is also routes[{j}].host", route.host),
                ));
            }
            routes.push(route);
        }
        Ok(Table {
            revision: table.revision,
            routes,
        })
    }

    /// Which route (an index into `routes`) serves a destination host (lower case, no port). An
    /// exact match wins; otherwise a short name such as `reviews` or `reviews.shop` matches the
    /// first route whose host extends it at a dot (`reviews.shop.svc.cluster.local`), as the
    /// mesh's DNS search path would.
    pub fn route_index(&self, host: &[u8]) -> Option<usize> {
        if host.is_empty() {
            return None;
        }
        let exact = self
            .routes
            .iter()
            .position(|r| same(r.host.as_bytes(), host));
        exact.or_else(|| {
            self.routes.iter().position(|r| {
                r.host
                    .as_bytes()
                    .strip_prefix(host)
                    .is_some_and(|rest| rest.first() == Some(&b'.'))
            })
        })
    }

    /// Whether requests to `host` are measured: the table names the hosts rollouts concern (the
    /// configured initial table until the agent's first arrives). Every other request takes the
    /// fast path — nothing read at log time, nothing recorded — in either role.
    pub fn measures(&self, host: &str) -> bool {
        self.route_index(host.as_bytes()).is_some()
    }

    /// Picks the version for a request to `host`, with the index of the route that decided (so
    /// a caller can keep `(index, cause)` instead of copies of the strings); `None` when the host
    /// has no route (the request passes untouched). `rng` is drawn from only when the split needs
    /// a key the request lacks.
    pub fn decide<R: Request + ?Sized>(
        &self,
        host: &str,
        request: &R,
        rng: &mut Rng,
    ) -> Option<(usize, Decision<'_>)> {
        let index = self.route_index(host.as_bytes())?;
        let route = self.routes.get(index)?;
        Some((index, route.decide(request, rng)))
    }
}

// === impl Route ===

impl Route {
    fn from_proto(
        route: v1::HostRoute,
        at: &str,
        defaults: &RouteDefaults,
    ) -> Result<Route, Invalid> {
        let host = host_name(&route.host, &format!("{at}.host"))?;
        let version_header = if route.version_header.is_empty() {
            defaults.version_header.clone()
        } else {
            header_name(&route.version_header, &format!("{at}.version_header"))?
        };
        let rules = route
            .rules
            .into_iter()
            .enumerate()
            .map(|(j, rule)| Rule::from_proto(rule, &format!("{at}.rules[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let split = route
            .split
            .map(|s| Split::from_proto(s, &format!("{at}.split")))
            .transpose()?;
        let sticky_key = match route.sticky_key.and_then(|k| k.source) {
            Some(source) => Some(StickyKey::from_proto(source, &format!("{at}.sticky_key"))?),
            None => defaults.sticky_key.clone(),
        };
        Ok(Route {
            host,
            version_header,
            rules,
            split,
            sticky_key,
        })
    }

    /// The decision for one request to this route's host.
    /// The version a decision with this cause writes (`None`: the header is removed).
    pub fn version(&self, cause: Cause) -> Option<&str> {
        match cause {
            Cause::Rule(i) => self.rules.get(i).map(|rule| rule.version.as_str()),
            Cause::Canary => self.split.as_ref().map(|split| split.canary.as_str()),
            Cause::Stable => self.split.as_ref().map(|split| split.stable.as_str()),
            Cause::NoSplit => None,
        }
    }

    pub fn decide<R: Request + ?Sized>(&self, request: &R, rng: &mut Rng) -> Decision<'_> {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matcher.matches(request) {
                return Decision {
                    route: self,
                    version: Some(&rule.version),
                    cause: Cause::Rule(i),
                };
            }
        }
        let Some(split) = &self.split else {
            return Decision {
                route: self,
                version: None,
                cause: Cause::NoSplit,
            };
        };
        let key = self.sticky_key.as_ref().and_then(|k| k.value(request));
        let bucket = match key {
            Some(key) => bucket(key.as_bytes()),
            None => rng.bucket(),
        };
        if bucket < split.canary_basis_points {
            Decision {
                route: self,
                version: Some(&split.canary),
                cause: Cause::Canary,
            }
        } else {
            Decision {
                route: self,
                version: Some(&split.stable),
                cause: Cause::Stable,
            }
        }
    }
}

impl Rule {
    fn from_proto(rule: v1::Rule, at: &str) -> Result<Rule, Invalid> {
        let version = version_name(&rule.version, &format!("{at}.version"))?;
        let matcher = match rule.r#match {
            Some(v1::rule::Match::Header(h)) => {
                let name = header_name(&h.name, &format!("{at}.header.name"))?;
                match h.value {
                    Some(v1::header_match::Value::Exact(value)) => {
                        Match::HeaderExact { name, value }
                    }
                    Some(v1::header_match::Value::Prefix(prefix)) => {
                        Match::HeaderPrefix { name, prefix }
                    }
                    Some(v1::header_match::Value::Present(present)) => {
                        Match::HeaderPresent { name, present }
                    }
                    None => {
                        return Err(Invalid::new(
                            format!("{at}.header"),
                            "needs one of exact, prefix or present",
                        ));
                    }
                }
            }
            Some(v1::rule::Match::Cookie(c)) => {
                if c.name.is_empty() {
                    return Err(Invalid::new(format!("{at}.cookie.name"), "is empty"));
                }
                Match::Cookie {
                    name: c.name,
                    value: c.value,
                }
            }
            None => {
                return Err(Invalid::new(at, "needs one of header or cookie"));
            }
        };
        Ok(Rule { matcher, version })
    }
}

impl Match {
    pub fn matches<R: Request + ?Sized>(&self, request: &R) -> bool {
        match self {
            Match::HeaderExact { name, value } => {
                request.header(name).is_some_and(|v| v == value.as_str())
            }
            Match::HeaderPrefix { name, prefix } => request
                .header(name)
                .is_some_and(|v| v.starts_with(prefix.as_str())),
            Match::HeaderPresent { name, present } => request.header(name).is_some() == *present,
            Match::Cookie { name, value } => request
                .header("cookie")
                .is_some_and(|c| cookie(&c, name) == Some(value.as_str())),
        }
    }
}

impl Split {
    fn from_proto(split: v1::Split, at: &str) -> Result<Split, Invalid> {
        let stable = version_name(&split.stable, &format!("{at}.stable"))?;
        let canary = version_name(&split.canary, &format!("{at}.canary"))?;
        if split.canary_basis_points > SPLIT_BUCKETS {
            return Err(Invalid::new(
                format!("{at}.canary_basis_points"),
                format!("{} is over {SPLIT_BUCKETS}", split.canary_basis_points),
            ));
        }
        Ok(Split {
            stable,
            canary,
            canary_basis_points: split.canary_basis_points,
        })
    }
}

impl StickyKey {
    pub(crate) fn from_proto(source: v1::sticky_key::Source, at: &str) -> Result<Self, Invalid> {
        match source {
            v1::sticky_key::Source::Header(h) => {
                Ok(StickyKey::Header(header_name(&h, &format!("{at}.header"))?))
            }
            v1::sticky_key::Source::Cookie(c) if c.is_empty() => {
                Err(Invalid::new(format!("{at}.cookie"), "is empty"))
            }
            v1::sticky_key::Source::Cookie(c) => Ok(StickyKey::Cookie(c)),
        }
    }

    /// The key's value in this request, if it has a non-empty one.
    pub fn value<'r, R: Request + ?Sized>(&self, request: &'r R) -> Option<Cow<'r, str>> {
        let value = match self {
            StickyKey::Header(name) => request.header(name)?,
            StickyKey::Cookie(name) => match request.header("cookie")? {
                Cow::Borrowed(c) => Cow::Borrowed(cookie(c, name)?),
                Cow::Owned(c) => Cow::Owned(cookie(&c, name)?.to_owned()),
            },
        };
        (!value.is_empty()).then_some(value)
    }
}

// === buckets and randomness ===

/// The split bucket of a sticky key: FNV-1a (64 bit) of its bytes, mixed by the SplitMix64
/// finalizer, modulo 10,000. Stable across builds, platforms and processes, so the agent or a
/// test can compute which keys are in the canary.
pub fn bucket(key: &[u8]) -> u32 {
    // The remainder is below 10,000, so it always fits.
    u32::try_from(mix64(fnv1a64(key)) % u64::from(SPLIT_BUCKETS)).unwrap_or(0)
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: a small, fast generator for requests that carry no sticky key. Not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A uniformly drawn bucket in `0..10_000`.
    pub fn bucket(&mut self) -> u32 {
        u32::try_from(self.next_u64() % u64::from(SPLIT_BUCKETS)).unwrap_or(0)
    }
}

// === names ===

/// Whether two byte strings are equal, compared eight bytes at a step: the wasm module's
/// `memcmp` (compiler-builtins) takes one byte per step, and a measured request compares its
/// host name with the table's and with its series' on every request.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_ne_bytes)
    };
    let mut at = 0;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    // The last eight bytes, overlapping the previous word when `n` is not a multiple of 8.
    word(a, n - 8) == word(b, n - 8)
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`).
pub fn cookie<'c>(header: &'c str, name: &str) -> Option<&'c str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A request header name, lower-cased. Pseudo headers (`:path`) are refused.
pub(crate) fn header_name(raw: &str, field: &str) -> Result<String, Invalid> {
    if raw.is_empty() {
        return Err(Invalid::new(field, "is empty"));
    }
    if !raw.chars().all(is_token_char) {
        return Err(Invalid::new(field, format!("{raw:?} is not a header name")));
    }
    Ok(raw.to_ascii_lowercase())
}

fn host_name(raw: &str, field: &str) -> Result<String, Invalid> {
    if raw.is_empty() {
        return Err(Invalid::new(field, "is empty"));
    }
    if raw.contains(':') {
        return Err(Invalid::new(
            field,
            format!("{raw:?} must not include a port"),
        ));
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' || c == '*')
    {
        return Err(Invalid::new(field, format!("{raw:?} is not a host name")));
    }
    Ok(raw.to_ascii_lowercase())
}

/// A version name: it becomes a header value and a subset name, so visible ASCII only.
fn version_name(raw: &str, field: &str) -> Result<String, Invalid> {
    if raw.is_empty() {
        return Err(Invalid::new(field, "is empty"));
    }
    if !raw.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Invalid::new(
            field,
            format!("{raw:?} is not a version name"),
        ));
    }
    Ok(raw.to_owned())
}
