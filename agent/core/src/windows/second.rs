//! One series' second as stored: its counts and the non-zero latency counters, varint-encoded,
//! answering the analysis exactly as a full histogram of the same requests would. While the
//! second is still open (reports for it still arriving) its counters accumulate in a dense
//! array over the range of counters seen, so a report costs O(its counters); the second is
//! folded into the compact form once, when it settles. Pure.

use fledge_proto::v1::Counts;
use hdrhistogram::Histogram;

use super::SeriesDelta;
use crate::analysis::{Bucket, latency};

/// One series' traffic in one second, as stored: its counts and the non-zero latency counters,
/// varint-encoded. A settled second of a series with a few hundred requests takes a few hundred
/// bytes (a full-range histogram takes 26 KiB). An open second also holds an accumulator: one
/// counter per histogram counter between the lowest and highest seen (at most the 26 KiB of the
/// full range, typically a few KiB), until [`Second::fold`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Second {
    pub counts: Counts,
    latency: Counters,
    /// Counters added since the last fold.
    open: Open,
}

impl Second {
    /// Adds one report's delta: O(its counters).
    pub fn add(&mut self, delta: &SeriesDelta) {
        self.counts.add(&delta.counts);
        for &(value, count) in &delta.latency {
            if count > 0 {
                self.open.add(index_of(value), count);
            }
        }
    }

    /// Whether counters were added since the last fold.
    pub fn is_open(&self) -> bool {
        !self.open.counts.is_empty()
    }

    /// Folds the counters added since the last fold into the compact form and frees the
    /// accumulator: O(the compact form + the accumulator's range).
    pub fn fold(&mut self) {
        if !self.is_open() {
            return;
        }
        let open = std::mem::take(&mut self.open);
        self.latency.add(open.iter());
    }

    /// The latency counters: (the lowest value of fledge's counter, count), in no particular
    /// order, a value possibly more than once.
    pub fn latencies(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.latency.iter().chain(self.open.iter())
    }

    /// Bytes held on the heap for the latencies.
    pub fn heap_bytes(&self) -> usize {
        self.latency.0.capacity() + self.open.counts.capacity() * 8
    }
}

impl Bucket for Second {
    fn requests(&self) -> u64 {
        self.counts.measured()
    }
    fn failures(&self) -> u64 {
        self.counts.failures
    }
    fn unmeasured(&self) -> u64 {
        self.counts.unmeasured
    }
    /// The same answer as [`latency::count_above`] on a histogram holding these counters:
    /// a counter is above `us` when its median-equivalent value is.
    fn count_above(&self, us: u64) -> u64 {
        let layout = layout();
        self.latencies()
            .filter(|&(v, _)| layout.median_equivalent(v) > us)
            .map(|(_, c)| c)
            .fold(0u64, u64::saturating_add)
    }
    fn add_latencies_to(&self, into: &mut Histogram<u64>) {
        for (value, count) in self.latencies() {
            into.saturating_record_n(value, count);
        }
    }
}

/// fledge's histogram layout, to quantize values and find a counter's median value. Allocated
/// once per process.
fn layout() -> &'static Histogram<u64> {
    static LAYOUT: std::sync::LazyLock<Histogram<u64>> =
        std::sync::LazyLock::new(latency::new_histogram);
    &LAYOUT
}

/// The counters of fledge's layout (lowest value 1 µs, [`fledge_proto::HISTOGRAM_SIGFIG`]
/// digits): 2^`HALF` sub-counters per power of two, as the HDR layout places them.
const HALF: u32 = {
    let single_unit = 2 * 10u64.pow(fledge_proto::HISTOGRAM_SIGFIG as u32);
    let mut magnitude = 0;
    while (1u64 << magnitude) < single_unit {
        magnitude += 1;
    }
    magnitude - 1
};

/// How many counters the layout has: the HDR histogram's count of buckets for a highest value
/// of [`fledge_proto::HISTOGRAM_MAX_US`], each of 2^`HALF` counters, plus the first half-bucket.
const COUNTERS: usize = {
    let mut untrackable = 1u64 << (HALF + 1);
    let mut buckets = 1;
    while untrackable <= fledge_proto::HISTOGRAM_MAX_US {
        untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) << HALF
};

/// The index of the counter holding `value` in fledge's layout; a value beyond the layout's
/// counters counts at the highest trackable value, as the histogram's saturating record does.
fn index_of(value: u64) -> usize {
    match layout_index(value) {
        i if i < COUNTERS => i,
        _ => layout_index(fledge_proto::HISTOGRAM_MAX_US),
    }
}

/// The HDR histogram's own arithmetic for a counter's index, for a lowest value of 1.
const fn layout_index(value: u64) -> usize {
    let mask = (1u64 << (HALF + 1)) - 1;
    let bucket = (64 - HALF - 1) - (value | mask).leading_zeros();
    ((((bucket + 1) as u64) << HALF) + (value >> bucket) - (1 << HALF)) as usize
}

/// The lowest value of counter `index` in fledge's layout.
const fn value_of(index: usize) -> u64 {
    let half = 1usize << HALF;
    let bucket = (index >> HALF) as i64 - 1;
    let mut sub = (index & (half - 1)) + half;
    let bucket = if bucket < 0 {
        sub -= half;
        0
    } else {
        bucket as u32
    };
    (sub as u64) << bucket
}

/// Counters of an open second, dense over the range of counters seen so far: `counts[i]` is
/// counter `first + i`. The range grows at least geometrically, so growing costs O(its end
/// size) in all, and it never exceeds the layout's [`COUNTERS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Open {
    first: usize,
    counts: Vec<u64>,
}

/// The range an accumulator starts with, in counters.
const OPEN_MIN: usize = 64;

impl Open {
    #[inline]
    fn add(&mut self, index: usize, count: u64) {
        let mut at = index.wrapping_sub(self.first);
        if at >= self.counts.len() {
            self.grow(index);
            at = index - self.first;
        }
        let counter = &mut self.counts[at];
        *counter = counter.saturating_add(count);
    }

    /// Widens the range to hold counter `index`: to at least twice its length, within the
    /// layout.
    #[cold]
    fn grow(&mut self, index: usize) {
        let end = self.first + self.counts.len();
        if self.counts.is_empty() {
            self.first = index.saturating_sub(OPEN_MIN / 2).min(COUNTERS - OPEN_MIN);
            self.counts = vec![0; OPEN_MIN];
        } else if index < self.first {
            let first = index.min(self.first.saturating_sub(self.counts.len()));
            self.counts
                .splice(0..0, std::iter::repeat_n(0, self.first - first));
            self.first = first;
        } else {
            let end = (index + 1).max(end + self.counts.len()).min(COUNTERS);
            self.counts.resize(end - self.first, 0);
        }
    }

    /// The non-zero counters: (lowest value of the counter, count), by increasing value.
    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c > 0)
            .map(|(i, &c)| (value_of(self.first + i), c))
    }
}

/// Non-zero latency counters as varint pairs (value minus the previous value, count), by
/// increasing value; each value is the lowest of its counter in fledge's layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counters(Vec<u8>);

impl Counters {
    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut at = 0;
        let mut value = 0u64;
        std::iter::from_fn(move || {
            let gap = read_varint(&self.0, &mut at)?;
            let count = read_varint(&self.0, &mut at)?;
            value = value.saturating_add(gap);
            Some((value, count))
        })
    }

    /// Adds counters given by increasing value, each the lowest of its counter in fledge's
    /// layout (a value may repeat).
    fn add(&mut self, incoming: impl Iterator<Item = (u64, u64)>) {
        let mut out = Vec::with_capacity(self.0.len() * 2 + 16);
        let mut previous = 0u64;
        let mut push = |value: u64, count: u64| {
            write_varint(&mut out, value - previous);
            write_varint(&mut out, count);
            previous = value;
        };
        let mut mine = self.iter().peekable();
        let mut theirs = incoming.peekable();
        let mut pending: Option<(u64, u64)> = None;
        loop {
            let next = match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) if a.0 <= b.0 => mine.next(),
                (Some(_), Some(_)) | (None, Some(_)) => theirs.next(),
                (Some(_), None) => mine.next(),
                (None, None) => None,
            };
            match (pending, next) {
                (Some((v, c)), Some((w, d))) if v == w => pending = Some((v, c.saturating_add(d))),
                (Some((v, c)), next) => {
                    push(v, c);
                    pending = next;
                }
                (None, Some(n)) => pending = Some(n),
                (None, None) => {}
            }
            if pending.is_none() {
                break;
            }
        }
        drop(mine);
        out.shrink_to_fit();
        self.0 = out;
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_arithmetic_is_the_histograms() {
        assert_eq!(COUNTERS, layout().distinct_values());
        let mut values: Vec<u64> = (0..2000).collect();
        for p in 0..64 {
            let v = 1u64 << p;
            values.extend([v - 1, v, v + 1, v + v / 3]);
        }
        values.extend([fledge_proto::HISTOGRAM_MAX_US, u64::MAX]);
        for v in values {
            let index = index_of(v);
            if v <= layout().highest_equivalent(fledge_proto::HISTOGRAM_MAX_US) {
                assert_eq!(value_of(index), layout().lowest_equivalent(v), "value {v}");
            }
            // A single value read back through a histogram lands where recording it would.
            let mut second = Second::default();
            second.add(&SeriesDelta {
                latency: vec![(v, 3)],
                ..SeriesDelta::default()
            });
            let (mut direct, mut through) = (latency::new_histogram(), latency::new_histogram());
            direct.saturating_record_n(v, 3);
            second.add_latencies_to(&mut through);
            assert_eq!(direct, through, "value {v}");
        }
    }

    #[test]
    fn the_accumulator_grows_both_ways_and_folds_to_the_same_counters() {
        // (value, count) in an order that grows the range below and above its start.
        let adds = [
            (20_000, 1),
            (19_000, 2),
            (5, 1),
            (3_000_000, 4),
            (20_000, 5),
            (1, 1),
        ];
        let mut second = Second::default();
        let mut histogram = latency::new_histogram();
        for (v, c) in adds {
            second.add(&SeriesDelta {
                latency: vec![(v, c)],
                ..SeriesDelta::default()
            });
            histogram.saturating_record_n(v, c);
        }
        let open: Vec<_> = second.latencies().collect();
        assert!(second.is_open());
        assert!(second.open.counts.len() <= COUNTERS);
        second.fold();
        assert!(!second.is_open());
        assert_eq!(
            second.open.counts.capacity(),
            0,
            "folding frees the accumulator"
        );
        let folded: Vec<_> = second.latencies().collect();
        assert_eq!(open, folded);
        let expected: Vec<_> = histogram
            .iter_recorded()
            .map(|v| {
                (
                    layout().lowest_equivalent(v.value_iterated_to()),
                    v.count_at_value(),
                )
            })
            .collect();
        assert_eq!(folded, expected);
    }
}
