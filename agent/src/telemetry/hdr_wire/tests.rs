use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

fn encode(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2Serializer::new().serialize(h, &mut out).unwrap();
    out
}

/// A V2 header with the given fields, followed by `payload`.
fn raw(
    cookie: u32,
    offset: u32,
    digits: u32,
    bounds: (u64, u64),
    ratio: f64,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(cookie.to_be_bytes());
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend(offset.to_be_bytes());
    out.extend(digits.to_be_bytes());
    out.extend(bounds.0.to_be_bytes());
    out.extend(bounds.1.to_be_bytes());
    out.extend(ratio.to_bits().to_be_bytes());
    out.extend(payload);
    out
}

/// hdrhistogram's own decoding, as (value, count) of the non-zero counters, and the total.
fn library(bytes: &[u8]) -> Option<(Vec<(u64, u64)>, u64)> {
    let h: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).ok()?;
    let values = h
        .iter_recorded()
        .map(|v| {
            (
                h.lowest_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        })
        .collect();
    Some((values, h.len()))
}

/// A histogram of random bounds and precision holding random values.
fn random_histogram(rng: &mut StdRng) -> Histogram<u64> {
    let lowest = 1u64 << rng.random_range(0..12) | rng.random_range(0..3);
    let highest = (2 * lowest).saturating_mul(1 << rng.random_range(1..30));
    let digits = rng.random_range(0..=3);
    let mut h = Histogram::<u64>::new_with_bounds(lowest, highest, digits).unwrap();
    for _ in 0..rng.random_range(0..200) {
        let value = (rng.random::<f64>() * (highest as f64).ln()).exp() as u64;
        h.saturating_record_n(value, rng.random_range(1..=3) << rng.random_range(0..40));
    }
    h
}

#[test]
fn fledge_layout_maps_indexes_to_values() {
    let fledge = Layout::fledge();
    for (index, value) in [
        (0, 0),
        (1, 1),
        (127, 127),
        (255, 255),
        (256, 256),
        (383, 510),
        (384, 512),
        (400, 576),
    ] {
        assert_eq!(fledge.value_for(index), value, "index {index}");
    }
    let mut library = fledge_core::analysis::latency::new_histogram();
    assert_eq!(fledge.counts_len(), library.distinct_values() as u64);
    // The highest value is the last one fledge's histogram can record.
    let top = fledge.highest_value();
    assert!(top >= fledge_proto::HISTOGRAM_MAX_US);
    assert!(library.record(top).is_ok());
    assert!(library.record(top + 1).is_err());
}

#[test]
fn decodes_like_hdrhistogram_for_random_histograms() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut fledge_shaped = 0;
    for round in 0..400 {
        let h = if round % 4 == 0 {
            fledge_shaped += 1;
            let mut h = fledge_core::analysis::latency::new_histogram();
            for _ in 0..rng.random_range(0..500) {
                h.saturating_record((rng.random::<f64>() * 22.0).exp() as u64);
            }
            h
        } else {
            random_histogram(&mut rng)
        };
        let bytes = encode(&h);
        let ours = decode(&bytes).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            Some((ours.values.clone(), ours.total)),
            library(&bytes),
            "round {round}"
        );
        // Recorded into a fresh histogram of the same bounds, the counters are the original's.
        let mut rebuilt = Histogram::<u64>::new_from(&h);
        for (value, count) in &ours.values {
            rebuilt.record_n(*value, *count).unwrap();
        }
        assert!(
            rebuilt
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .eq(h
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))),
            "round {round}"
        );
        assert_eq!(rebuilt.len(), h.len());
    }
    assert_eq!(fledge_shaped, 100);
}

#[test]
fn damaged_payloads_are_refused_where_hdrhistogram_refuses_them() {
    let mut rng = StdRng::seed_from_u64(12);
    let (mut accepted, mut refused, mut trailing) = (0, 0, 0);
    for round in 0..3000 {
        let mut bytes = encode(&random_histogram(&mut rng));
        match round % 3 {
            0 => bytes.truncate(rng.random_range(0..bytes.len())),
            1 => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            _ => bytes.extend((0..rng.random_range(1..4)).map(|_| rng.random::<u8>())),
        }
        match (decode(&bytes), library(&bytes)) {
            (Ok(ours), theirs) => {
                assert_eq!(Some((ours.values, ours.total)), theirs, "round {round}");
                accepted += 1;
            }
            (Err(e), None) => {
                assert!(!e.is_empty());
                refused += 1;
            }
            // hdrhistogram ignores bytes beyond the declared payload; fledge refuses them.
            (Err(e), Some(_)) => {
                assert!(e.starts_with("payload length is"), "round {round}: {e}");
                trailing += 1;
            }
        }
    }
    // Every truncation is refused; a flipped bit often still decodes (as the same thing for both).
    assert!(
        refused >= 1000 && accepted > 300 && trailing > 500,
        "accepted {accepted}, refused {refused}, trailing {trailing}"
    );
}

#[test]
fn each_problem_is_named() {
    let good = encode(&fledge_core::analysis::latency::new_histogram());
    let bounds = (1, fledge_proto::HISTOGRAM_MAX_US);
    let cases = [
        (
            good[..20].to_vec(),
            "20 bytes are shorter than the 40-byte V2 header",
        ),
        (
            raw(0x1c84_9303, 0, 2, bounds, 1.0, &[]),
            "cookie 0x1c849303 is not a V2 histogram's (0x1c849313)",
        ),
        (
            raw(0x1c84_9314, 0, 2, bounds, 1.0, &[]),
            "compressed V2 histograms are not accepted",
        ),
        (
            raw(0x1c84_9313, 3, 2, bounds, 1.0, &[]),
            "normalizing offset 3 is not supported",
        ),
        (
            raw(0x1c84_9313, 0, 2, bounds, 2.5, &[]),
            "integer-to-double ratio 2.5 is not supported",
        ),
        (
            raw(0x1c84_9313, 0, 2, (0, 100), 1.0, &[]),
            "lowest 0, highest 100, 2 significant digits are not valid",
        ),
        (
            raw(0x1c84_9313, 0, 6, bounds, 1.0, &[]),
            "lowest 1, highest 3600000000, 6 significant digits are not valid",
        ),
        (
            raw(0x1c84_9313, 0, 2, bounds, 1.0, &[0x02, 0x80]),
            "payload ends inside a number at byte 41",
        ),
        // 3328 zeros (ZigZag -3328 = 6655 = 0xff 0x33), then a count of 1.
        (
            raw(0x1c84_9313, 0, 2, bounds, 1.0, &[0xff, 0x33, 0x02]),
            "counter 3328 is past the 3328 counters of its range",
        ),
        (
            {
                let mut b = good.clone();
                b.push(0);
                b
            },
            "payload length is 1 bytes but 2 follow the header",
        ),
    ];
    for (bytes, message) in cases {
        let err = decode(&bytes).unwrap_err();
        assert!(
            err.contains(message),
            "{err:?} does not contain {message:?}"
        );
    }
}

#[test]
fn counts_zero_runs_and_long_numbers() {
    let bounds = (1, fledge_proto::HISTOGRAM_MAX_US);
    // count 2 at 0; 3 zeros; count 1 at 4; a 9-byte number (count 2^62) at 5; a zero count at 6;
    // count 1 at 7.
    let mut payload = vec![0x04, 0x05, 0x02];
    payload.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80]);
    payload.extend([0x00, 0x02]);
    let counters = decode(&raw(0x1c84_9313, 0, 2, bounds, 1.0, &payload)).unwrap();
    assert_eq!(counters.values, vec![(0, 2), (4, 1), (5, 1 << 62), (7, 1)]);
    assert_eq!(counters.total, 4 + (1 << 62));
}
