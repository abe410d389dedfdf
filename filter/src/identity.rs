//! Who one filter instance is: the node it runs in and the side of the connection it takes.
//! Worked out once per root context in `on_configure`, from the configured `role` and the
//! listener's direction; every request of that instance reads the result, and Hello sends it.
//!
//! The listener direction is a property of the listener the plugin is configured on, not of a
//! request: Envoy answers `listener_direction` from the plugin (root and request contexts alike)
//! and keys root contexts by plugin name, direction and listener metadata, and Istio configures
//! one plugin per listener direction. So one reading per root context holds for all its requests.
//! (Older Envoys keyed root contexts by root id and configuration only, so an identical `auto`
//! configuration on both listeners shared one root context and one Hello; there, set `role`, as
//! the shipped manifests do.)
//!
//! This module reads nothing from the host; the plugin adapter reads the properties and passes
//! them in.

use fledge_proto::v1;

use crate::config::Role;
use crate::stream::Node;

/// The listener a filter instance runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    /// From Envoy's `TrafficDirection`, the `listener_direction` property: 1 inbound,
    /// 2 outbound. `None` for 0 (a listener without `traffic_direction`) and anything else.
    pub fn from_envoy(code: i64) -> Option<Direction> {
        match code {
            1 => Some(Direction::Inbound),
            2 => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// The side a filter instance takes, resolved from its `role` and its listener's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `client`, or `auto` on an outbound listener: route each request and record it as the
    /// caller saw it.
    Client,
    /// `server`, or `auto` on an inbound listener: record only, as the callee, under the
    /// workload's own `version` label when nothing better names the version.
    Server,
    /// `auto` where the listener's direction is unknown (none was set, or the host has no such
    /// property): requests act as the client, since a proxy that routes is the one a rollout
    /// needs and a listener without a direction is usually a gateway's or a front proxy's.
    /// Hello says UNSPECIFIED rather than claim a direction; the agent counts the stream as a
    /// client's. Setting `role` removes the guess.
    ClientByDefault,
}

impl Side {
    /// The side for the configured `role` on a listener of direction `listener` (`None`:
    /// unknown). An explicit `client` or `server` wins over the listener.
    pub fn resolve(role: Role, listener: Option<Direction>) -> Side {
        match (role, listener) {
            (Role::Client, _) | (Role::Auto, Some(Direction::Outbound)) => Side::Client,
            (Role::Server, _) | (Role::Auto, Some(Direction::Inbound)) => Side::Server,
            (Role::Auto, None) => Side::ClientByDefault,
        }
    }

    /// Whether requests only record, as the callee; otherwise they route and record as the
    /// caller.
    pub fn is_server(self) -> bool {
        self == Side::Server
    }

    /// The role Hello declares.
    pub fn hello_role(self) -> v1::Role {
        match self {
            Side::Client => v1::Role::Client,
            Side::Server => v1::Role::Server,
            Side::ClientByDefault => v1::Role::Unspecified,
        }
    }
}

/// One filter instance's identity, shared by its root context and its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The proxy, workload, namespace and `version` label Hello names.
    pub node: Node,
    pub side: Side,
}

impl Identity {
    /// The identity of an instance in `node`, configured with `role`, on a listener of
    /// direction `listener` (`None`: unknown).
    pub fn new(node: Node, role: Role, listener: Option<Direction>) -> Identity {
        Identity {
            node,
            side: Side::resolve(role, listener),
        }
    }

    /// The version a request is counted under when neither the routing decision nor the
    /// upstream cluster names one: the workload's own `version` label, in the server side only
    /// (a caller's label says nothing about the version it called). `None` when the label is
    /// empty.
    pub fn own_version(&self) -> Option<&str> {
        let label = self.node.version_label.as_str();
        (self.side.is_server() && !label.is_empty()).then_some(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_direction_codes() {
        for (code, expected) in [
            (0, None),
            (1, Some(Direction::Inbound)),
            (2, Some(Direction::Outbound)),
            (3, None),
            (-1, None),
        ] {
            assert_eq!(Direction::from_envoy(code), expected, "code {code}");
        }
    }

    #[test]
    fn the_side_comes_from_the_role_then_the_listener() {
        // listener_direction as the host answers it; `None`: the host has no such property.
        for (configured, listener_direction, expected) in [
            (Role::Auto, Some(1), Side::Server),
            (Role::Auto, Some(2), Side::Client),
            (Role::Auto, Some(0), Side::ClientByDefault),
            (Role::Auto, Some(7), Side::ClientByDefault),
            (Role::Auto, None, Side::ClientByDefault),
            (Role::Client, Some(1), Side::Client),
            (Role::Client, Some(2), Side::Client),
            (Role::Client, None, Side::Client),
            (Role::Server, Some(1), Side::Server),
            (Role::Server, Some(2), Side::Server),
            (Role::Server, None, Side::Server),
        ] {
            let listener = listener_direction.and_then(Direction::from_envoy);
            assert_eq!(
                Side::resolve(configured, listener),
                expected,
                "{configured:?} on listener_direction {listener_direction:?}"
            );
        }
    }

    #[test]
    fn requests_act_as_client_unless_the_side_is_server() {
        // An unknown direction routes like a client but says so in Hello.
        for (side, server, hello) in [
            (Side::Client, false, v1::Role::Client),
            (Side::Server, true, v1::Role::Server),
            (Side::ClientByDefault, false, v1::Role::Unspecified),
        ] {
            assert_eq!(
                (side.is_server(), side.hello_role()),
                (server, hello),
                "{side:?}"
            );
        }
    }

    #[test]
    fn only_the_server_side_counts_under_its_own_version_label() {
        let node = |label: &str| Node {
            proxy_id: "sidecar~10.0.0.7~reviews-v2-5f8d.shop~shop.svc.cluster.local".to_owned(),
            workload: "reviews-v2".to_owned(),
            namespace: "shop".to_owned(),
            version_label: label.to_owned(),
        };
        for (role, direction, label, expected) in [
            (Role::Server, None, "v2", Some("v2")),
            (Role::Auto, Some(Direction::Inbound), "v2", Some("v2")),
            (Role::Server, None, "", None),
            (Role::Client, None, "v2", None),
            (Role::Auto, Some(Direction::Outbound), "v2", None),
            (Role::Auto, None, "v2", None),
        ] {
            let identity = Identity::new(node(label), role, direction);
            assert_eq!(
                identity.own_version(),
                expected,
                "{role:?} on {direction:?} with label {label:?}"
            );
            assert_eq!(identity.node, node(label));
        }
    }
}
