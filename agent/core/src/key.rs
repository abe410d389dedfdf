//! The name of a namespaced object (`namespace/name`), and the keys a Rollout implies: its own
//! and its VirtualService's. Pure; the stores use it to address objects, the loop to index them.
//!
//! Names follow Kubernetes' rules (a namespace is a DNS-1123 label, an object's name a DNS-1123
//! subdomain), which the API server enforces and the local store checks with [`ObjectKey::check`]:
//! such names hold no `/`, `_` or `..`, so a file named after them cannot escape its folder or
//! collide with another object's.

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

/// Why a namespace or name is not one Kubernetes would accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("metadata.{field} {value:?} {problem}")]
pub struct BadName {
    pub field: &'static str,
    /// At most the first 64 characters of the value.
    pub value: String,
    pub problem: &'static str,
}

impl ObjectKey {
    /// Checks both parts against Kubernetes' naming rules.
    pub fn check(&self) -> Result<(), BadName> {
        let bad = |field, value: &str, problem| BadName {
            field,
            value: value.chars().take(64).collect(),
            problem,
        };
        if let Some(problem) = label_problem(&self.namespace, 63) {
            return Err(bad("namespace", &self.namespace, problem));
        }
        if let Some(problem) = subdomain_problem(&self.name) {
            return Err(bad("name", &self.name, problem));
        }
        Ok(())
    }
}

/// A DNS-1123 label: 1–`max` characters of `a-z`, `0-9` and `-`, starting and ending with a
/// letter or digit.
fn label_problem(s: &str, max: usize) -> Option<&'static str> {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        Some("is empty")
    } else if bytes.len() > max {
        Some("is longer than Kubernetes allows")
    } else if !bytes.iter().all(|&c| alnum(c) || c == b'-') {
        Some("may hold only lower-case letters, digits and '-' (and '.' between parts of a name)")
    } else if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        Some("must start and end with a lower-case letter or a digit")
    } else {
        None
    }
}

/// A DNS-1123 subdomain: at most 253 characters, labels joined by `.`.
fn subdomain_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("is empty");
    }
    if s.len() > 253 {
        return Some("is longer than Kubernetes allows");
    }
    if s.split('.').any(str::is_empty) {
        return Some("must not start or end with '.' nor hold \"..\"");
    }
    s.split('.').find_map(|label| label_problem(label, 63))
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::ObjectKey;

    #[test]
    fn kubernetes_names_are_accepted_and_others_refused_with_the_rule() {
        let long = "a".repeat(64);
        let cases: [(&str, &str, Option<&str>); 11] = [
            ("shop", "reviews", None),
            ("a-1", "reviews.v2-canary", None),
            ("shop", "a_b", Some("metadata.name \"a_b\" may hold only")),
            ("a_b", "c", Some("metadata.namespace \"a_b\" may hold only")),
            (
                "../../../escaped",
                "x",
                Some("metadata.namespace \"../../../escaped\" may hold"),
            ),
            (
                "shop",
                "..",
                Some("metadata.name \"..\" must not start or end with '.'"),
            ),
            ("shop", "a/b", Some("metadata.name \"a/b\" may hold only")),
            (
                "shop",
                "-a",
                Some("metadata.name \"-a\" must start and end"),
            ),
            (
                "Shop",
                "a",
                Some("metadata.namespace \"Shop\" may hold only"),
            ),
            (&long, "a", Some("is longer than Kubernetes allows")),
            ("", "a", Some("metadata.namespace \"\" is empty")),
        ];
        for (namespace, name, expected) in cases {
            let got = ObjectKey::new(namespace, name)
                .check()
                .map_err(|e| e.to_string());
            match expected {
                None => assert_eq!(got, Ok(()), "{namespace}/{name}"),
                Some(start) => {
                    let message = got.expect_err(start);
                    assert!(message.contains(start), "{message:?} lacks {start:?}");
                }
            }
        }
    }
}
