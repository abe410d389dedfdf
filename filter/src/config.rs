//! The plugin configuration: the JSON the root context gets in `on_configure`, parsed and checked
//! once into a [`Config`]. Unknown fields and bad values are refused with an [`Error::Config`]
//! naming the field path and the reason (`routes[1].split.canary_basis_points: 12000 is over
//! 10000`), so the plugin can log one line and refuse to start.
//!
//! Only `agent.cluster` is required. Every field, with its default:
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `agent.cluster` | – | the Envoy cluster of the agent's gRPC service |
//! | `agent.authority` | the cluster name | the stream's `:authority` |
//! | `agent.timeout_ms` | 0 (none) | deadline of one stream, after which the filter reconnects; at most [`MAX_TIMEOUT_MS`] |
//! | `report_interval_ms` | 1000 | how often deltas are reported, [`REPORT_INTERVAL_MS`] |
//! | `version_header` | `x-fledge-version` | the header the chosen version is written to |
//! | `role` | `auto` | [`Role`]: `client`, `server`, or from the listener's direction |
//! | `sticky_key` | random | `{"header": name}` or `{"cookie": name}`: what keeps a user on one version |
//! | `clear_route_cache` | `true` | after writing the version header, ask the host to pick the route again (Envoy's `clear_route_cache` foreign function; a host without it, or any failure, is ignored). Set `false` for hosts that pick the route again by themselves when a header changes, to save the call |
//! | `routes` | none | the initial routing table (revision 0), replaced by the agent's: per `host`, `version_header`, `rules` (`header` exact/prefix/present or `cookie`, and the `version`), `split` (`stable`, `canary`, `canary_basis_points` of 10,000) and `sticky_key` |
//! | `limits.max_series` | 256 | series held per VM, at most [`MAX_SERIES_LIMIT`] |
//!
//! This module does not read the host's buffers or log anything; the plugin adapter does.

use serde::Deserialize;

use fledge_proto::v1;

use crate::routing::{self, Invalid, RouteDefaults, StickyKey, Table};
use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// Shortest and longest report interval accepted, in milliseconds.
pub const REPORT_INTERVAL_MS: (u64, u64) = (100, 60_000);
/// Most series a VM may hold (each holds a histogram of a few tens of KiB).
pub const MAX_SERIES_LIMIT: u64 = 4096;
/// The longest `agent.timeout_ms`: the longest `google.protobuf.Duration` (10,000 years), so that
/// every accepted value reaches the host in the GrpcService it validates.
pub const MAX_TIMEOUT_MS: u64 = 315_576_000_000_000;

/// The validated plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub agent: Agent,
    pub report_interval_ms: u64,
    pub role: Role,
    /// The version header and sticky key routes fall back to (also for the agent's tables).
    pub defaults: RouteDefaults,
    /// The initial routing table (revision 0).
    pub table: Table,
    /// Series held per VM before samples go to the dropped count.
    pub max_series: usize,
    /// Whether a request whose version header was written asks the host to pick its route
    /// again (`clear_route_cache`). Off for hosts that do it themselves on a header change.
    pub clear_route_cache: bool,
}

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The Envoy cluster the gRPC stream goes to.
    pub cluster: String,
    /// The `:authority` of the stream; Envoy's default (the cluster name) when absent.
    pub authority: Option<String>,
    /// Deadline of one stream in milliseconds, after which the filter reconnects; 0: none. At
    /// most [`MAX_TIMEOUT_MS`].
    pub timeout_ms: u64,
}

/// Which side of the connection the filter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// From the listener's direction, once per filter instance: inbound is the server, outbound
    /// the client, and an unknown direction acts as the client (see
    /// [`identity::Side`](crate::identity::Side)).
    Auto,
    /// Route and record as the caller.
    Client,
    /// Record only, as the callee.
    Server,
}

impl Config {
    /// Parses and checks the plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<Config> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(config_error(
                "configuration",
                "is empty; at least agent.cluster is required",
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let json: ConfigJson = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                // Nothing to name but the place in the text.
                return config_error("configuration", e.into_inner().to_string());
            }
            // The field path says where; the text position would only repeat it.
            let inner = e.into_inner();
            let message = inner.to_string();
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            let reason = message.strip_suffix(&position).unwrap_or(&message);
            config_error(path, reason)
        })?;
        de.end()
            .map_err(|e| config_error("configuration", e.to_string()))?;
        json.check().map_err(|i| config_error(i.field, i.reason))
    }
}

fn config_error(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

// === the JSON shape ===

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object with the fledge filter configuration"
)]
struct ConfigJson {
    agent: AgentJson,
    report_interval_ms: Option<u64>,
    version_header: Option<String>,
    role: Option<Role>,
    sticky_key: Option<StickyKeyJson>,
    #[serde(default)]
    routes: Vec<RouteJson>,
    limits: Option<LimitsJson>,
    clear_route_cache: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentJson {
    cluster: String,
    authority: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsJson {
    max_series: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StickyKeyJson {
    header: Option<String>,
    cookie: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteJson {
    host: String,
    version_header: Option<String>,
    #[serde(default)]
    rules: Vec<RuleJson>,
    split: Option<SplitJson>,
    sticky_key: Option<StickyKeyJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleJson {
    header: Option<HeaderJson>,
    cookie: Option<CookieJson>,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderJson {
    name: String,
    exact: Option<String>,
    prefix: Option<String>,
    present: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CookieJson {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitJson {
    stable: String,
    canary: String,
    canary_basis_points: u32,
}

// === checks ===

impl ConfigJson {
    fn check(self) -> Result<Config, Invalid> {
        let agent = self.agent.check()?;
        let report_interval_ms = self.report_interval_ms.unwrap_or(1000);
        let (lo, hi) = REPORT_INTERVAL_MS;
        if report_interval_ms < lo {
            return Err(Invalid::new(
                "report_interval_ms",
                format!("{report_interval_ms} is under {lo}"),
            ));
        }
        if report_interval_ms > hi {
            return Err(Invalid::new(
                "report_interval_ms",
                format!("{report_interval_ms} is over {hi}"),
            ));
        }
        let version_header = match &self.version_header {
            Some(h) => routing::header_name(h, "version_header")?,
            None => fledge_proto::DEFAULT_VERSION_HEADER.to_owned(),
        };
        let sticky_key = self
            .sticky_key
            .map(|k| k.check("sticky_key"))
            .transpose()?
            .map(|source| StickyKey::from_proto(source, "sticky_key"))
            .transpose()?;
        let defaults = RouteDefaults {
            version_header,
            sticky_key,
        };
        let routes = self
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.into_proto(&format!("routes[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let table = Table::from_proto(
            v1::RoutingTable {
                revision: 0,
                routes,
            },
            &defaults,
        )?;
        let max_series = self.limits.and_then(|l| l.max_series).unwrap_or(256);
        if max_series == 0 {
            return Err(Invalid::new("limits.max_series", "0 is under 1"));
        }
        if max_series > MAX_SERIES_LIMIT {
            return Err(Invalid::new(
                "limits.max_series",
                format!("{max_series} is over {MAX_SERIES_LIMIT}"),
            ));
        }
        Ok(Config {
            agent,
            report_interval_ms,
            role: self.role.unwrap_or(Role::Auto),
            defaults,
            table,
            max_series: usize::try_from(max_series).unwrap_or(256),
            clear_route_cache: self.clear_route_cache.unwrap_or(true),
        })
    }
}

impl AgentJson {
    fn check(self) -> Result<Agent, Invalid> {
        if self.cluster.is_empty() {
            return Err(Invalid::new("agent.cluster", "is empty"));
        }
        if !self.cluster.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Invalid::new(
                "agent.cluster",
                format!("{:?} is not an Envoy cluster name", self.cluster),
            ));
        }
        if let Some(authority) = &self.authority {
            if authority.is_empty() {
                return Err(Invalid::new("agent.authority", "is empty"));
            }
            if !authority.chars().all(|c| c.is_ascii_graphic()) {
                return Err(Invalid::new(
                    "agent.authority",
                    format!("{authority:?} is not an authority"),
                ));
            }
        }
        let timeout_ms = self.timeout_ms.unwrap_or(0);
        if timeout_ms > MAX_TIMEOUT_MS {
            return Err(Invalid::new(
                "agent.timeout_ms",
                format!("{timeout_ms} is over {MAX_TIMEOUT_MS} (10,000 years)"),
            ));
        }
        Ok(Agent {
            cluster: self.cluster,
            authority: self.authority,
            timeout_ms,
        })
    }
}

impl StickyKeyJson {
    fn check(self, at: &str) -> Result<v1::sticky_key::Source, Invalid> {
        match (self.header, self.cookie) {
            (Some(h), None) => Ok(v1::sticky_key::Source::Header(h)),
            (None, Some(c)) => Ok(v1::sticky_key::Source::Cookie(c)),
            _ => Err(Invalid::new(at, "needs exactly one of header or cookie")),
        }
    }
}

impl RouteJson {
    fn into_proto(self, at: &str) -> Result<v1::HostRoute, Invalid> {
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(j, r)| r.into_proto(&format!("{at}.rules[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let sticky_key = self
            .sticky_key
            .map(|k| k.check(&format!("{at}.sticky_key")))
            .transpose()?
            .map(|source| v1::StickyKey {
                source: Some(source),
            });
        if self.version_header.as_deref() == Some("") {
            return Err(Invalid::new(format!("{at}.version_header"), "is empty"));
        }
        Ok(v1::HostRoute {
            host: self.host,
            version_header: self.version_header.unwrap_or_default(),
            rules,
            split: self.split.map(|s| v1::Split {
                stable: s.stable,
                canary: s.canary,
                canary_basis_points: s.canary_basis_points,
            }),
            sticky_key,
        })
    }
}

impl RuleJson {
    fn into_proto(self, at: &str) -> Result<v1::Rule, Invalid> {
        let matcher = match (self.header, self.cookie) {
            (Some(h), None) => {
                let value = match (h.exact, h.prefix, h.present) {
                    (Some(e), None, None) => v1::header_match::Value::Exact(e),
                    (None, Some(p), None) => v1::header_match::Value::Prefix(p),
                    (None, None, Some(p)) => v1::header_match::Value::Present(p),
                    _ => {
                        return Err(Invalid::new(
                            format!("{at}.header"),
                            "needs exactly one of exact, prefix or present",
                        ));
                    }
                };
                v1::rule::Match::Header(v1::HeaderMatch {
                    name: h.name,
                    value: Some(value),
                })
            }
            (None, Some(c)) => v1::rule::Match::Cookie(v1::CookieMatch {
                name: c.name,
                value: c.value,
            }),
            _ => {
                return Err(Invalid::new(at, "needs exactly one of header or cookie"));
            }
        };
        Ok(v1::Rule {
            r#match: Some(matcher),
            version: self.version,
        })
    }
}
