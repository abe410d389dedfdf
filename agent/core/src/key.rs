//! The name of a namespaced object (`namespace/name`), and the keys a Rollout implies: its own
//! and its VirtualService's. Pure; the stores use it to address objects, the loop to index them.

use serde_json::Value;

use crate::rollout::Rollout;

/// A namespaced object's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The Rollout's own key (namespace `default` when unset).
    pub fn of(rollout: &Rollout) -> Self {
        let m = &rollout.metadata;
        Self::new(
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or(""),
        )
    }

    /// The key in a stored object's `metadata` (namespace `default` when unset).
    pub fn of_object(object: &Value) -> Self {
        let m = &object["metadata"];
        Self::new(
            m["namespace"].as_str().unwrap_or("default"),
            m["name"].as_str().unwrap_or(""),
        )
    }

    /// The VirtualService a Rollout manages.
    pub fn virtual_service_of(rollout: &Rollout) -> Self {
        let vs = &rollout.spec.virtual_service;
        let own = Self::of(rollout);
        Self::new(
            vs.namespace.clone().unwrap_or(own.namespace),
            vs.name.clone(),
        )
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
