//! How long a sandbox backend takes to answer: a fixed delay, or a lognormal distribution given
//! by its median and 99th percentile (the shape real service latencies roughly have), and the
//! behaviour a backend has at a moment (latency plus error rate). Pure: sampling takes the
//! caller's random source. Written as text like `fixed:20ms` or `lognormal:20ms:80ms`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};

use crate::virtual_service::parse_duration;

/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874_040_841;

/// A latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Latency {
    /// Always the same delay.
    Fixed {
        #[serde(with = "micros")]
        delay: Duration,
    },
    /// Lognormal with this median and 99th percentile (`p99 >= median`).
    #[serde(rename_all = "camelCase")]
    LogNormal {
        #[serde(with = "micros")]
        median: Duration,
        #[serde(with = "micros")]
        p99: Duration,
    },
}

/// What a backend does with each request: wait per `latency`, then fail with probability
/// `error_rate` (a 500) or answer 200.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behaviour {
    pub latency: Latency,
    pub error_rate: f64,
}

impl Latency {
    pub const ZERO: Latency = Latency::Fixed {
        delay: Duration::ZERO,
    };

    pub fn fixed(delay: Duration) -> Latency {
        Latency::Fixed { delay }
    }

    pub fn lognormal(median: Duration, p99: Duration) -> Latency {
        Latency::LogNormal { median, p99 }
    }

    /// One delay drawn from the distribution.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match *self {
            Latency::Fixed { delay } => delay,
            Latency::LogNormal { median, p99 } => {
                let mu = median.as_secs_f64().max(1e-9).ln();
                let sigma = (p99.as_secs_f64().max(1e-9).ln() - mu).max(0.0) / Z99;
                match LogNormal::new(mu, sigma) {
                    Ok(distribution) => {
                        Duration::try_from_secs_f64(distribution.sample(rng)).unwrap_or(p99)
                    }
                    Err(_) => median,
                }
            }
        }
    }

    /// The distribution's median.
    pub fn median(&self) -> Duration {
        match *self {
            Latency::Fixed { delay } => delay,
            Latency::LogNormal { median, .. } => median,
        }
    }

    /// The distribution's 99th percentile.
    pub fn p99(&self) -> Duration {
        match *self {
            Latency::Fixed { delay } => delay,
            Latency::LogNormal { p99, .. } => p99,
        }
    }
}

impl Behaviour {
    pub fn new(latency: Latency, error_rate: f64) -> Behaviour {
        Behaviour {
            latency,
            error_rate,
        }
    }

    /// Refuses an error rate outside [0, 1] or a p99 under the median.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!("errorRate {} is outside [0, 1]", self.error_rate));
        }
        if self.latency.p99() < self.latency.median() {
            return Err(format!("latency {}: p99 is under the median", self.latency));
        }
        Ok(())
    }

    /// Draws this request's delay and whether it fails.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> (Duration, bool) {
        let delay = self.latency.sample(rng);
        let fail = self.error_rate > 0.0 && rng.random::<f64>() < self.error_rate;
        (delay, fail)
    }
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour::new(Latency::ZERO, 0.0)
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::Fixed { delay } => write!(f, "fixed:{}ms", delay.as_secs_f64() * 1e3),
            Latency::LogNormal { median, p99 } => write!(
                f,
                "lognormal:{}ms:{}ms",
                median.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ),
        }
    }
}

impl FromStr for Latency {
    type Err = String;

    /// `fixed:20ms`, `20ms` (fixed), or `lognormal:20ms:80ms` (median, p99).
    fn from_str(text: &str) -> Result<Latency, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let latency = match parts.as_slice() {
            [delay] | ["fixed", delay] => Latency::fixed(parse_duration(delay)?),
            ["lognormal", median, p99] => {
                Latency::lognormal(parse_duration(median)?, parse_duration(p99)?)
            }
            _ => {
                return Err(format!(
                    "{text:?} is not a latency like fixed:20ms or lognormal:20ms:80ms"
                ));
            }
        };
        if latency.p99() < latency.median() {
            return Err(format!("{text:?}: p99 is under the median"));
        }
        Ok(latency)
    }
}

/// Durations as integer microseconds in JSON/YAML.
mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn quantile(sorted: &[Duration], q: f64) -> Duration {
        sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
    }

    #[test]
    fn samples_have_the_asked_median_and_p99() {
        let ms = Duration::from_millis;
        for (latency, median, p99) in [
            (Latency::fixed(ms(20)), ms(20), ms(20)),
            (Latency::lognormal(ms(20), ms(80)), ms(20), ms(80)),
            (Latency::lognormal(ms(5), ms(5)), ms(5), ms(5)),
        ] {
            let mut rng = StdRng::seed_from_u64(3);
            let mut samples: Vec<Duration> =
                (0..200_000).map(|_| latency.sample(&mut rng)).collect();
            samples.sort();
            for (q, expected) in [(0.5, median), (0.99, p99)] {
                let got = quantile(&samples, q).as_secs_f64();
                let want = expected.as_secs_f64();
                assert!(
                    (got / want - 1.0).abs() < 0.02,
                    "{latency} q{q}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn error_rate_is_honoured() {
        let behaviour = Behaviour::new(Latency::ZERO, 0.05);
        let mut rng = StdRng::seed_from_u64(9);
        let failed = (0..100_000).filter(|_| behaviour.draw(&mut rng).1).count();
        assert!((failed as f64 / 100_000.0 - 0.05).abs() < 0.003, "{failed}");
    }

    #[test]
    fn latencies_read_from_text_and_refuse_nonsense() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("20ms", Ok(Latency::fixed(ms(20)))),
            ("fixed:0.5s", Ok(Latency::fixed(ms(500)))),
            (
                "lognormal:20ms:80ms",
                Ok(Latency::lognormal(ms(20), ms(80))),
            ),
            ("lognormal:80ms:20ms", Err("p99 is under the median")),
            ("gamma:1ms", Err("is not a latency")),
            ("fixed:soon", Err("is not a duration")),
        ] {
            match (text.parse::<Latency>(), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
        let behaviour = Behaviour::new(Latency::lognormal(ms(20), ms(80)), 0.1);
        let json = serde_json::to_string(&behaviour).unwrap();
        assert_eq!(serde_json::from_str::<Behaviour>(&json).unwrap(), behaviour);
        assert!(Behaviour::new(Latency::ZERO, 1.5).validate().is_err());
    }
}
