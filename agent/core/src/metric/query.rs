//! The PromQL a metric gate sends: its template with the placeholders filled in. `{{canary}}`,
//! `{{stable}}` and `{{namespace}}` are the Rollout's canary and stable subsets and its
//! namespace; `{{version}}` is the subset of the arm the query is run for, so one `query` serves
//! both arms. A placeholder fledge does not know is a validation problem, never sent as is.

use super::spec::MetricGate;

/// The placeholders, without their braces.
const PLACEHOLDERS: [&str; 4] = ["canary", "stable", "namespace", "version"];

/// What the placeholders stand for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names<'a> {
    pub namespace: &'a str,
    pub canary: &'a str,
    pub stable: &'a str,
}

/// The queries as sent: the canary's, and the stable's when a bound needs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Queries {
    pub canary: String,
    pub stable: Option<String>,
}

impl Queries {
    /// The queries of `gate` for the Rollout `names` describes.
    pub fn of(gate: &MetricGate, names: &Names<'_>) -> Self {
        let canary_template = gate
            .canary_query
            .as_deref()
            .or(gate.query.as_deref())
            .unwrap_or_default();
        let stable_template = gate.stable_query.as_deref().or(gate.query.as_deref());
        Self {
            canary: render(canary_template, names, names.canary),
            stable: stable_template
                .filter(|_| gate.relative())
                .map(|t| render(t, names, names.stable)),
        }
    }
}

/// `template` with every placeholder replaced; `version` is the arm's subset.
pub fn render(template: &str, names: &Names<'_>, version: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let value = match after[..close].trim() {
            "canary" => names.canary,
            "stable" => names.stable,
            "namespace" => names.namespace,
            "version" => version,
            _ => {
                // Unknown: kept as written (validation refuses it before any query runs).
                out.push_str(&rest[open..open + 2 + close + 2]);
                rest = &after[close + 2..];
                continue;
            }
        };
        out.push_str(value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// Whether `template` has a `{{version}}`, so its two arms ask different things.
pub fn names_version(template: &str) -> bool {
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return false;
        };
        if after[..close].trim() == "version" {
            return true;
        }
        rest = &after[close + 2..];
    }
    false
}

/// Whether every `{{…}}` in `template` is a known placeholder; the problem in words otherwise.
pub fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(format!(
                "{template:?} opens a placeholder with {{{{ and never closes it"
            ));
        };
        let name = after[..close].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "{template:?} has the unknown placeholder {{{{{name}}}}}; use {{{{canary}}}}, \
                 {{{{stable}}}}, {{{{namespace}}}} or {{{{version}}}}"
            ));
        }
        rest = &after[close + 2..];
    }
    Ok(())
}
