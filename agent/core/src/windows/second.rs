//! One series' second as stored: its counts and the non-zero latency counters, varint-encoded,
//! answering the analysis exactly as a full histogram of the same requests would. Pure.

use fledge_proto::v1::Counts;
use hdrhistogram::Histogram;

use super::SeriesDelta;
use crate::analysis::{Bucket, latency};

/// One series' traffic in one second, as stored: its counts and the non-zero latency counters,
/// varint-encoded. A second of a series with a few hundred requests takes a few hundred bytes
/// (a full-range histogram takes 26 KiB). A report's counters are appended as they come (O(its
/// counters)) and folded into the compact form in batches, and once the second has settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Second {
    pub counts: Counts,
    latency: Counters,
    /// Counters added since the last fold: (lowest value of fledge's counter, count).
    pending: Vec<(u64, u64)>,
}

/// Pending counters folded at once: bounds both the fold's share of an add and the memory.
const FOLD_AT: usize = 1024;

impl Second {
    /// Adds one report's delta.
    pub fn add(&mut self, delta: &SeriesDelta) {
        self.counts.add(&delta.counts);
        let layout = layout();
        self.pending.extend(
            delta
                .latency
                .iter()
                .filter(|&&(_, c)| c > 0)
                .map(|&(v, c)| (layout.lowest_equivalent(v), c)),
        );
        if self.pending.len() >= FOLD_AT {
            self.fold();
        }
    }

    /// Folds the pending counters into the compact form.
    pub(super) fn fold(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.pending.sort_unstable_by_key(|&(v, _)| v);
        self.latency.add(&self.pending);
        self.pending = Vec::new();
    }

    /// The latency counters: (the lowest value of fledge's counter, count), in no particular
    /// order, a value possibly more than once.
    pub fn latencies(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.latency.iter().chain(self.pending.iter().copied())
    }

    /// Bytes held on the heap for the latencies.
    pub fn heap_bytes(&self) -> usize {
        self.latency.0.capacity() + self.pending.capacity() * 16
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
    fn add(&mut self, incoming: &[(u64, u64)]) {
        if incoming.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + incoming.len() * 3);
        let mut previous = 0u64;
        let mut push = |value: u64, count: u64| {
            write_varint(&mut out, value - previous);
            write_varint(&mut out, count);
            previous = value;
        };
        let mut mine = self.iter().peekable();
        let mut theirs = incoming.iter().copied().peekable();
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
