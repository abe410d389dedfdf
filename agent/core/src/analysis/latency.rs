//! Latency arithmetic on HDR histograms (microseconds): quantiles, tail counts, and the rank
//! comparison of two histograms. Values, not I/O.

use hdrhistogram::Histogram;

/// An empty histogram with fledge's wire settings (1 µs .. 1 h, 2 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(
        1,
        fledge_proto::HISTOGRAM_MAX_US,
        fledge_proto::HISTOGRAM_SIGFIG,
    )
    .expect("fledge's histogram bounds are valid constants")
}

/// Recorded values strictly above `us`, at the histogram's resolution.
pub fn count_above(hist: &Histogram<u64>, us: u64) -> u64 {
    if hist.is_empty() || hist.max() <= us {
        return 0;
    }
    hist.iter_recorded()
        .filter(|v| hist.median_equivalent(v.value_iterated_to()) > us)
        .map(|v| v.count_at_value())
        .sum()
}

/// The rank comparison with a tolerance: θ = P(C > (1 + tol) · B) + ½ P(C = (1 + tol) · B) for a
/// canary latency C and a baseline latency B drawn at random (the Mann–Whitney probability
/// index). θ = ½ means "canary as slow as baseline × (1 + tol)"; a canary no slower than the
/// baseline has θ < ½. Returns (θ, its variance under θ = ½ with continuous data).
pub fn rank_index(
    canary: &Histogram<u64>,
    baseline: &Histogram<u64>,
    tolerance: f64,
) -> Option<(f64, f64)> {
    let (n, m) = (canary.len(), baseline.len());
    if n == 0 || m == 0 {
        return None;
    }
    let scale = 1.0 + tolerance;
    let base: Vec<(f64, u64)> = baseline
        .iter_recorded()
        .map(|v| {
            (
                baseline.median_equivalent(v.value_iterated_to()) as f64 * scale,
                v.count_at_value(),
            )
        })
        .collect();
    let (mut below, mut i, mut wins) = (0u64, 0usize, 0.0f64);
    for v in canary.iter_recorded() {
        let c = canary.median_equivalent(v.value_iterated_to()) as f64;
        while i < base.len() && base[i].0 < c {
            below += base[i].1;
            i += 1;
        }
        let equal = base.get(i).filter(|b| b.0 == c).map_or(0, |b| b.1);
        wins += v.count_at_value() as f64 * (below as f64 + 0.5 * equal as f64);
    }
    let (n, m) = (n as f64, m as f64);
    Some((wins / (n * m), (n + m + 1.0) / (12.0 * n * m)))
}

/// The value at quantile `q` in milliseconds, or None when empty.
pub fn quantile_ms(hist: &Histogram<u64>, q: f64) -> Option<f64> {
    (!hist.is_empty()).then(|| hist.value_at_quantile(q) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for v in values {
            h.record(*v).unwrap();
        }
        h
    }

    #[test]
    fn rank_index_orders_and_ties() {
        let slow = hist(&[2000, 3000, 4000]);
        let fast = hist(&[100, 200, 300]);
        for (canary, baseline, tol, expected) in [
            (&slow, &fast, 0.0, 1.0),
            (&fast, &slow, 0.0, 0.0),
            (&fast, &fast, 0.0, 0.5),
            // A 100× tolerance makes the slow set faster than the scaled fast one.
            (&slow, &fast, 100.0, 0.0),
        ] {
            let (theta, var) = rank_index(canary, baseline, tol).unwrap();
            assert!((theta - expected).abs() < 1e-9, "θ {theta} != {expected}");
            assert!(var > 0.0);
        }
        assert_eq!(rank_index(&new_histogram(), &fast, 0.0), None);
    }

    #[test]
    fn counts_above_a_threshold() {
        let h = hist(&[100, 1000, 5000, 5000, 90_000]);
        for (threshold, expected) in [(0, 5), (500, 4), (4000, 3), (6000, 1), (100_000, 0)] {
            assert_eq!(count_above(&h, threshold), expected, "above {threshold}");
        }
        assert_eq!(quantile_ms(&h, 0.5).map(|v| v.round()), Some(5.0));
    }
}
