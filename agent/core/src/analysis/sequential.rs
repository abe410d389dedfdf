//! Always-valid sequential tests: statistics that may be looked at after every new bucket of data,
//! for as long as a step lasts, while the chance of a false alarm stays under the level `alpha`.
//!
//! Each test is a mixture likelihood ratio (a mixture sequential probability ratio test, mSPRT):
//! the average over a grid of alternatives of the likelihood ratio against the boundary of the
//! null. Under the null it is a non-negative supermartingale with expectation ≤ 1, so by Ville's
//! inequality it ever reaches `1 / alpha` with probability ≤ alpha — however often one looks.
//! References: H. Robbins, "Statistical methods related to the law of the iterated logarithm"
//! (1970); R. Johari, L. Pekelis, D. Walsh, "Always valid inference: bringing sequential analysis
//! to A/B testing" (2017); S. Howard, A. Ramdas et al., "Time-uniform, nonparametric,
//! nonasymptotic confidence sequences" (2021).
//!
//! Each test has a side. `above` tests gather evidence that the truth lies beyond the boundary
//! (a regression: the failure side); `below` tests gather evidence that it lies on the near side
//! (non-inferiority: the pass side). Both are always valid, so a check may fail or pass at any look
//! and each wrong answer keeps its own error level.
//!
//! This module only does arithmetic on counts; it knows nothing of canaries, histograms or time.

/// Alternatives mixed over, as multiples of the null boundary (equal prior weight each).
const GRID: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// Mean of `exp(log_lr)` over the grid, computed without overflow.
fn mixture(log_lr: &[f64; GRID.len()]) -> f64 {
    let max = log_lr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = log_lr.iter().map(|l| (l - max).exp()).sum();
    (max + (sum / GRID.len() as f64).ln()).exp()
}

/// Which side of the boundary a test gathers evidence for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The truth is above the boundary (H0: at or below it): a regression.
    Above,
    /// The truth is below the boundary (H0: at or above it): no regression beyond it.
    Below,
}

impl Side {
    /// The grid's alternative `k` for a boundary `at`.
    fn alternative(self, at: f64, k: f64) -> f64 {
        match self {
            Self::Above => at * k,
            Self::Below => at / k,
        }
    }
}

/// Two streams of events compared by their rates: is the canary's event rate more than
/// `ratio0` times the baseline's (side `Above`), or less (side `Below`)?
///
/// Conditional on how many events a bucket holds in total, the number that came from the canary
/// is binomial with probability `n·ρ / (n·ρ + m)` (n, m: requests in each arm, ρ: the ratio of
/// rates; the Poisson approximation of rare events). The baseline's own rate cancels out, which
/// makes the test exact enough at the rare rates (0.1 %–5 %) where a normal approximation is not,
/// and because each bucket is judged given its own totals, a change of traffic or weight between
/// buckets cannot create evidence. Side `Above`, H0: ρ ≤ ratio0: each bucket's factor has
/// expectation ≤ 1 under any such ρ because every alternative is above ratio0 (monotone
/// likelihood ratio); side `Below` mirrors it with alternatives ratio0 / k.
#[derive(Clone, Debug)]
pub struct RatioTest {
    ratio0: f64,
    side: Side,
    log_lr: [f64; GRID.len()],
}

impl RatioTest {
    /// The failure side: evidence that the ratio is above `ratio0`.
    pub fn new(ratio0: f64) -> Self {
        Self::on(Side::Above, ratio0)
    }

    pub fn on(side: Side, ratio0: f64) -> Self {
        Self {
            ratio0,
            side,
            log_lr: [0.0; GRID.len()],
        }
    }

    /// Adds one bucket: `x` canary events among `n` canary requests, `y` baseline events among `m`.
    pub fn observe(&mut self, x: u64, n: u64, y: u64, m: u64) {
        if x + y == 0 || n == 0 || m == 0 {
            return; // no events, or one arm absent: the bucket says nothing about the ratio
        }
        let (n, m) = (n as f64, m as f64);
        let q0 = n * self.ratio0 / (n * self.ratio0 + m);
        for (log_lr, k) in self.log_lr.iter_mut().zip(GRID) {
            let rho = self.side.alternative(self.ratio0, k);
            let q1 = n * rho / (n * rho + m);
            *log_lr += x as f64 * (q1 / q0).ln() + y as f64 * ((1.0 - q1) / (1.0 - q0)).ln();
        }
    }

    /// The mixture likelihood ratio; reject H0 when it reaches `1 / alpha`.
    pub fn evidence(&self) -> f64 {
        mixture(&self.log_lr)
    }
}

/// One stream of events against a fixed rate: is the event probability above `p0` (side
/// `Above`), or below it (side `Below`)? Binomial likelihood ratio mixed over alternatives
/// `p0 × GRID` (kept below 1), or `p0 / GRID`.
#[derive(Clone, Debug)]
pub struct RateTest {
    p0: f64,
    side: Side,
    log_lr: [f64; GRID.len()],
}

impl RateTest {
    /// The failure side: evidence that the rate is above `p0`.
    pub fn new(p0: f64) -> Self {
        Self::on(Side::Above, p0)
    }

    pub fn on(side: Side, p0: f64) -> Self {
        Self {
            p0: p0.clamp(1e-9, 1.0 - 1e-9),
            side,
            log_lr: [0.0; GRID.len()],
        }
    }

    /// Adds `x` events among `n` trials.
    pub fn observe(&mut self, x: u64, n: u64) {
        if n == 0 {
            return;
        }
        let p0 = self.p0;
        for (log_lr, k) in self.log_lr.iter_mut().zip(GRID) {
            // Alternatives above p0 but below 1, spread towards 1 when p0 · k would pass it.
            let p1 = match self.side {
                Side::Above => (p0 * k).min(p0 + (1.0 - p0) * (1.0 - 1.0 / k)),
                Side::Below => p0 / k,
            };
            *log_lr +=
                x as f64 * (p1 / p0).ln() + (n - x.min(n)) as f64 * ((1.0 - p1) / (1.0 - p0)).ln();
        }
    }

    pub fn evidence(&self) -> f64 {
        mixture(&self.log_lr)
    }
}

/// The half-width of Robbins' normal-mixture confidence sequence for a mean whose estimate has
/// variance `variance`: the estimate stays within it of the truth at every look with probability
/// ≥ 1 − alpha (asymptotically: the estimate must be close to normal). `tau2` is the mixture's
/// variance, the squared effect size the boundary is tightest for.
pub fn normal_mixture_radius(variance: f64, tau2: f64, alpha: f64) -> f64 {
    if variance <= 0.0 {
        return 0.0;
    }
    let ratio = (variance + tau2) / variance;
    (2.0 * variance * (variance + tau2) / tau2 * ((1.0 / alpha).ln() + 0.5 * ratio.ln())).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Under the null boundary, an always-valid test looked at after every bucket must cross
    /// `1/alpha` in at most about `alpha` of runs.
    #[test]
    fn ratio_test_false_alarm_holds_under_continuous_monitoring() {
        let mut rng = StdRng::seed_from_u64(7);
        let (alpha, runs, buckets) = (0.05, 2000, 300);
        let mut alarms = 0;
        for _ in 0..runs {
            let mut test = RatioTest::new(1.0);
            for _ in 0..buckets {
                let (n, m) = (20, 180);
                let x = (0..n).filter(|_| rng.random_bool(0.02)).count() as u64;
                let y = (0..m).filter(|_| rng.random_bool(0.02)).count() as u64;
                test.observe(x, n, y, m);
                if test.evidence() >= 1.0 / alpha {
                    alarms += 1;
                    break;
                }
            }
        }
        let rate = alarms as f64 / runs as f64;
        assert!(
            rate <= alpha,
            "false-alarm rate {rate} over {runs} runs exceeds {alpha}"
        );
    }

    #[test]
    fn ratio_test_detects_a_tenfold_rate() {
        let mut rng = StdRng::seed_from_u64(8);
        let mut test = RatioTest::new(1.5);
        let mut seconds = 0;
        while test.evidence() < 100.0 && seconds < 120 {
            let x = (0..20).filter(|_| rng.random_bool(0.05)).count() as u64;
            let y = (0..180).filter(|_| rng.random_bool(0.005)).count() as u64;
            test.observe(x, 20, y, 180);
            seconds += 1;
        }
        assert!(seconds < 30, "took {seconds} s to see 5 % against 0.5 %");
    }

    #[test]
    fn rate_test_false_alarm_and_power() {
        let mut rng = StdRng::seed_from_u64(9);
        let (alpha, runs) = (0.05, 2000);
        let mut alarms = 0;
        for _ in 0..runs {
            let mut test = RateTest::new(0.01);
            for _ in 0..200 {
                let x = (0..20).filter(|_| rng.random_bool(0.01)).count() as u64;
                test.observe(x, 20);
                if test.evidence() >= 1.0 / alpha {
                    alarms += 1;
                    break;
                }
            }
        }
        assert!(
            (alarms as f64 / runs as f64) <= alpha,
            "{alarms} alarms in {runs} runs"
        );
        let mut test = RateTest::new(0.01);
        for _ in 0..30 {
            let x = (0..20).filter(|_| rng.random_bool(0.1)).count() as u64;
            test.observe(x, 20);
        }
        assert!(
            test.evidence() > 1.0 / alpha,
            "10 % against a 1 % bound not detected in 30 buckets"
        );
    }

    /// The pass side: at the boundary it passes in at most about alpha of runs however often it
    /// is looked at; well inside it, it passes.
    #[test]
    fn ratio_test_below_passes_rarely_at_the_boundary_and_surely_inside() {
        use rand_distr::{Binomial, Distribution};
        let mut rng = StdRng::seed_from_u64(10);
        let (alpha, runs, buckets) = (0.05, 1000, 300);
        let baseline = Binomial::new(180, 0.01).unwrap();
        let mut run = |canary: f64| {
            let canary = Binomial::new(20, canary).unwrap();
            let mut passes = 0;
            for _ in 0..runs {
                let mut test = RatioTest::on(Side::Below, 2.0);
                for _ in 0..buckets {
                    let x = canary.sample(&mut rng);
                    let y = baseline.sample(&mut rng);
                    test.observe(x, 20, y, 180);
                    if test.evidence() >= 1.0 / alpha {
                        passes += 1;
                        break;
                    }
                }
            }
            passes as f64 / runs as f64
        };
        let at_boundary = run(0.02);
        assert!(at_boundary <= alpha, "passed {at_boundary} at the boundary");
        let inside = run(0.01);
        assert!(inside >= 0.95, "passed only {inside} of equal rates");
    }

    #[test]
    fn rate_test_below_passes_a_clean_stream() {
        let mut test = RateTest::on(Side::Below, 0.01);
        for _ in 0..100 {
            test.observe(0, 20);
        }
        assert!(test.evidence() > 100.0, "{}", test.evidence());
        let mut test = RateTest::on(Side::Below, 0.01);
        test.observe(40, 2000);
        assert!(test.evidence() < 1.0, "{}", test.evidence());
    }

    #[test]
    fn radius_shrinks_with_variance_and_widens_with_confidence() {
        let wide = normal_mixture_radius(0.01, 0.01, 0.01);
        assert!(normal_mixture_radius(0.0001, 0.01, 0.01) < wide);
        assert!(normal_mixture_radius(0.01, 0.01, 0.001) > wide);
        assert_eq!(normal_mixture_radius(0.0, 0.01, 0.01), 0.0);
    }
}
