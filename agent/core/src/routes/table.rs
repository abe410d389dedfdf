//! The filters' view of a routing intent: the `HostRoute` of the wire contract (rules, sticky
//! split, version header). A settled intent has no route: the host passes through the filter
//! and the mesh's own routes decide.

use fledge_proto::v1::{
    CookieMatch, HeaderMatch, HostRoute, Rule, Split, StickyKey as WireKey, header_match, rule,
    sticky_key,
};

use crate::rollout::{CohortRule, RoutingIntent, Shape, StickyKey};

/// The route the filters should hold for the intent's host; None once the rollout has settled.
pub fn host_route(intent: &RoutingIntent) -> Option<HostRoute> {
    let Shape::Managed {
        canary_weight,
        cohort,
        ..
    } = &intent.shape
    else {
        return None;
    };
    Some(HostRoute {
        host: intent.host.clone(),
        version_header: intent.version_header.clone(),
        rules: cohort
            .iter()
            .filter_map(|r| wire_rule(r, &intent.canary))
            .collect(),
        split: Some(Split {
            stable: intent.stable.clone(),
            canary: intent.canary.clone(),
            canary_basis_points: (*canary_weight).min(100) * 100,
        }),
        sticky_key: intent.sticky.as_ref().map(|k| WireKey {
            source: Some(match k {
                StickyKey::Header(h) => sticky_key::Source::Header(h.to_ascii_lowercase()),
                StickyKey::Cookie(c) => sticky_key::Source::Cookie(c.clone()),
            }),
        }),
    })
}

/// A validated cohort rule on the wire; None for a rule that sets neither match.
fn wire_rule(r: &CohortRule, canary: &str) -> Option<Rule> {
    let matched = if let Some(h) = &r.header {
        let value = if let Some(v) = &h.exact {
            header_match::Value::Exact(v.clone())
        } else if let Some(v) = &h.prefix {
            header_match::Value::Prefix(v.clone())
        } else {
            header_match::Value::Present(h.present.unwrap_or(true))
        };
        rule::Match::Header(HeaderMatch {
            name: h.name.to_ascii_lowercase(),
            value: Some(value),
        })
    } else {
        let c = r.cookie.as_ref()?;
        rule::Match::Cookie(CookieMatch {
            name: c.name.clone(),
            value: c.value.clone(),
        })
    };
    Some(Rule {
        r#match: Some(matched),
        version: canary.to_owned(),
    })
}
