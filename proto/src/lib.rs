//! fledge's wire contract: the prost messages of `fledge.v1` (always) and tonic's client and
//! server for the `Telemetry` service (behind the `tonic` feature, because the proxy-wasm filter
//! cannot link tonic). `fledge/v1/telemetry.proto` is the truth and documents every field.
//!
//! This crate holds no logic beyond generated code, the arithmetic of [`v1::Counts`] (the request
//! counts both sides share), and a few constants both sides must agree on (with
//! [`is_replica_refusal`], the one reading of two of them).

/// Generated from `fledge/v1/telemetry.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/fledge.v1.rs"));
}

impl v1::Counts {
    /// Adds `other`'s counts (saturating: a count never wraps).
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.each_mut().into_iter().zip(other.each()) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// Requests whose latency and outcome were measured: the ones the analysis judges.
    pub fn measured(&self) -> u64 {
        self.requests.saturating_sub(self.unmeasured)
    }

    /// Every count with its field name, `requests` first: for messages that name a field.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        let [r, e5, e4, g, rs, t, f, u] = self.each();
        [
            ("requests", r),
            ("errors_5xx", e5),
            ("errors_4xx", e4),
            ("grpc_errors", g),
            ("resets", rs),
            ("timeouts", t),
            ("failures", f),
            ("unmeasured", u),
        ]
    }

    fn each(&self) -> [u64; 8] {
        [
            self.requests,
            self.errors_5xx,
            self.errors_4xx,
            self.grpc_errors,
            self.resets,
            self.timeouts,
            self.failures,
            self.unmeasured,
        ]
    }

    fn each_mut(&mut self) -> [&mut u64; 8] {
        [
            &mut self.requests,
            &mut self.errors_5xx,
            &mut self.errors_4xx,
            &mut self.grpc_errors,
            &mut self.resets,
            &mut self.timeouts,
            &mut self.failures,
            &mut self.unmeasured,
        ]
    }
}

/// The header the filter sets when a route names none.
pub const DEFAULT_VERSION_HEADER: &str = "x-fledge-version";

/// Buckets of the sticky split: a canary share is expressed in basis points of this.
pub const SPLIT_BUCKETS: u32 = 10_000;

/// Latency histograms on the wire: microseconds, 2 significant digits (1 % relative precision).
pub const HISTOGRAM_SIGFIG: u8 = 2;

/// Highest latency a histogram tracks, in microseconds (one hour). Longer requests are clamped.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// The gRPC service path filters open their stream on, for hosts that call it by name.
pub const CONNECT_PATH: &str = "/fledge.v1.Telemetry/Connect";

/// The message of the UNAVAILABLE with which an agent replica that does not lead refuses (or
/// ends) a stream. Another replica leads, so the filter connects again at its next report tick
/// instead of backing off: the Service's next pick is likely the leader.
pub const REFUSED_STANDBY: &str = "standby: not the leader";

/// The message of the UNAVAILABLE with which a stopping agent refuses or ends a stream; as for
/// [`REFUSED_STANDBY`], the filter connects again at its next tick (to the replica that stays).
pub const REFUSED_STOPPING: &str = "the agent is stopping";

/// Whether a stream's close (`code`, `message`) is an agent replica saying "not me, try
/// another": gRPC UNAVAILABLE with [`REFUSED_STANDBY`] or [`REFUSED_STOPPING`]. Any other close,
/// an UNAVAILABLE from the proxy (no healthy upstream, connect failure) included, is a failure.
pub fn is_replica_refusal(code: u32, message: &[u8]) -> bool {
    const UNAVAILABLE: u32 = 14;
    code == UNAVAILABLE
        && (message == REFUSED_STANDBY.as_bytes() || message == REFUSED_STOPPING.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::v1::Counts;
    use super::{REFUSED_STANDBY, REFUSED_STOPPING, is_replica_refusal};

    #[test]
    fn only_an_unavailable_with_a_replica_s_words_is_a_refusal() {
        assert!(is_replica_refusal(14, REFUSED_STANDBY.as_bytes()));
        assert!(is_replica_refusal(14, REFUSED_STOPPING.as_bytes()));
        // The proxy's own UNAVAILABLE, another code with the words, words with more after them.
        assert!(!is_replica_refusal(14, b"no healthy upstream"));
        assert!(!is_replica_refusal(14, b""));
        assert!(!is_replica_refusal(13, REFUSED_STANDBY.as_bytes()));
        assert!(!is_replica_refusal(0, REFUSED_STOPPING.as_bytes()));
        assert!(!is_replica_refusal(14, b"standby: not the leader, really"));
        // The contract says the same words.
        let proto = include_str!("../fledge/v1/telemetry.proto");
        for words in [REFUSED_STANDBY, REFUSED_STOPPING] {
            let quoted = format!("\"{words}\"");
            let flat = proto
                .split_whitespace()
                .filter(|w| *w != "//")
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                flat.contains(&quoted),
                "telemetry.proto does not say {quoted}"
            );
        }
    }

    #[test]
    fn counts_add_field_by_field_and_never_wrap() {
        let mut a = Counts {
            requests: 10,
            errors_5xx: 1,
            errors_4xx: 2,
            grpc_errors: 3,
            resets: 4,
            timeouts: 5,
            failures: 6,
            unmeasured: 7,
        };
        let b = Counts {
            requests: u64::MAX,
            failures: 1,
            ..Counts::default()
        };
        a.add(&a.clone());
        assert_eq!(
            a.named().map(|(_, v)| v),
            [20, 2, 4, 6, 8, 10, 12, 14],
            "each field doubled"
        );
        assert_eq!(a.measured(), 6);
        a.add(&b);
        assert_eq!((a.requests, a.failures), (u64::MAX, 13));
        let names = a.named().map(|(n, _)| n);
        assert_eq!(names[0], "requests");
        assert_eq!(names[7], "unmeasured");
    }
}
