//! What fledge's test suites share, so that each suite states only what it checks:
//!
//! - [`istio`]: Istio's CRD bundle (located by `FLEDGE_ISTIO_CRDS`, which `./dev test` sets) and
//!   the compiled `openAPIV3Schema` of any kind in it;
//! - [`messages`]: fixture builders for the `fledge.v1` wire messages, as extension traits
//!   (`Report::test().errors(3, 100)`);
//! - [`examples`]: the example manifests, copied into a temporary folder;
//! - [`kubernetes`]: objects checked against Kubernetes' own schemas (`kubernetes-validate`);
//! - `hooks` (feature `hooks`): a stand-in for the servers webhooks call, recording every
//!   request and answering with the status the test sets;
//! - [`prometheus`]: a real Prometheus on a loopback port scraping an exporter the test sets;
//! - `telemetry` (feature `telemetry`): a stand-in for the agent's `fledge.v1.Telemetry` gRPC
//!   server, recording what filters send and pushing routing tables back.
//!
//! A dev-dependency only; nothing here is part of fledge's filter, agent or sandbox. It does not
//! depend on fledge-core, so fledge-core's own tests can use it.

pub mod examples;
#[cfg(feature = "hooks")]
pub mod hooks;
pub mod istio;
pub mod kubernetes;
pub mod messages;
pub mod prometheus;
#[cfg(feature = "telemetry")]
pub mod telemetry;
