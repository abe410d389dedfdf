//! Routes from a [`RoutingIntent`]: the new VirtualService (`virtual_service`) and the filters'
//! `HostRoute` (`table`).
//!
//! In the VirtualService fledge owns only the HTTP routes it adds, named `fledge-<rollout>-…`
//! and placed above the user's own: one header-match route per version (`x-fledge-version: v2`
//! → subset v2) for requests the filter already decided, the A/B cohort's matches to the canary,
//! and the weighted route (with the mirror) for callers without the filter. The user's routes
//! are carried over untouched, except at the hand-over after a promotion, when their
//! destinations that named the old stable subset of the host name the new one.
//!
//! When a Rollout is deleted its routes go with it: the agent puts [`FINALIZER`] on every Rollout
//! it manages, and on deletion writes the VirtualService without the Rollout's routes
//! ([`release`]) before it lets the Rollout go.
//!
//! Pure: JSON values in, JSON values out. Reading and writing VirtualServices is `store`'s job.

mod table;
mod virtual_service;

pub use table::host_route;
pub use virtual_service::{owned_prefix, release, virtual_service};

/// The finalizer that keeps a deleted Rollout until its routes are out of the VirtualService.
pub const FINALIZER: &str = "fledge.dev/routes";

/// A VirtualService fledge cannot work with; the message names the object and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VirtualService {key}: {field} {problem}")]
pub struct Error {
    /// `namespace/name`.
    pub key: String,
    pub field: String,
    pub problem: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
