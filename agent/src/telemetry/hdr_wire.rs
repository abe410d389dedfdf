//! The filters' latency histograms as they arrive: hdrhistogram's V2 encoding (without deflate)
//! read straight into the list of non-zero counters, so ingest never allocates a full-range
//! histogram per series. The layout (which value each counter stands for) is derived from the
//! payload's own header exactly as hdrhistogram derives it. This module only decodes; whether the
//! values fit fledge's range or the counts match the report is `validate`'s business. Pure.

/// The V2 cookie (hdrhistogram's base cookie 0x1c849303 with its word-size bits 0x10).
const V2_COOKIE: u32 = 0x1c84_9313;
/// The deflate-compressed V2 cookie, which the wire contract rules out.
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// Cookie, payload length, normalizing offset, significant digits, lowest, highest, ratio.
const HEADER_LEN: usize = 4 + 4 + 4 + 4 + 8 + 8 + 8;

/// fledge's own histogram bounds: lowest, highest, significant digits.
const FLEDGE_BOUNDS: (u64, u64, u64) = (
    1,
    fledge_proto::HISTOGRAM_MAX_US,
    fledge_proto::HISTOGRAM_SIGFIG as u64,
);

/// The non-zero counters of one histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// (the lowest value the counter stands for, its count), by increasing value.
    pub values: Vec<(u64, u64)>,
    /// The sum of the counts; a payload whose counts add up beyond u64 does not decode.
    pub total: u64,
}

/// Decodes one V2 payload; the error says what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Counters, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes are shorter than the {HEADER_LEN}-byte V2 header",
            bytes.len()
        ));
    }
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let long = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    match word(0) {
        V2_COOKIE => {}
        V2_COMPRESSED_COOKIE => {
            return Err(
                "compressed V2 histograms are not accepted; send V2 without deflate".into(),
            );
        }
        other => {
            return Err(format!(
                "cookie {other:#010x} is not a V2 histogram's ({V2_COOKIE:#010x})"
            ));
        }
    }
    let payload_len = word(4) as usize;
    if word(8) != 0 {
        return Err(format!("normalizing offset {} is not supported", word(8)));
    }
    let ratio = f64::from_bits(long(32));
    if ratio != 1.0 {
        return Err(format!("integer-to-double ratio {ratio} is not supported"));
    }
    let (lowest, highest, digits) = (long(16), long(24), word(12));
    let layout = if (lowest, highest, u64::from(digits)) == FLEDGE_BOUNDS {
        // What every fledge filter sends: derived once.
        static FLEDGE: std::sync::LazyLock<Layout> = std::sync::LazyLock::new(Layout::fledge);
        *FLEDGE
    } else {
        Layout::new(lowest, highest, digits)?
    };
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != payload_len {
        return Err(format!(
            "payload length is {payload_len} bytes but {} follow the header",
            payload.len()
        ));
    }

    // Each non-zero counter takes at least one byte: reserve once rather than grow.
    let capacity = payload.len().min(layout.counts_len as usize);
    let mut counters = Counters {
        values: Vec::with_capacity(capacity),
        total: 0,
    };
    let (mut at, mut index) = (0usize, 0u64);
    while at < payload.len() {
        let (encoded, read) = varint(&payload[at..])
            .ok_or_else(|| format!("payload ends inside a number at byte {}", HEADER_LEN + at))?;
        at += read;
        let count_or_zeros = zig_zag(encoded);
        if count_or_zeros < 0 {
            index = index
                .checked_add(count_or_zeros.unsigned_abs())
                .ok_or_else(|| {
                    format!(
                        "a run of zeros at byte {} overflows the counter index",
                        HEADER_LEN + at
                    )
                })?;
            continue;
        }
        let count = count_or_zeros as u64;
        if count > 0 {
            if index >= layout.counts_len {
                return Err(format!(
                    "counter {index} is past the {} counters of its range",
                    layout.counts_len
                ));
            }
            counters.values.push((layout.value_for(index), count));
            counters.total = counters.total.checked_add(count).ok_or_else(|| {
                format!(
                    "the counts add up to more than {} at byte {}",
                    u64::MAX,
                    HEADER_LEN + at
                )
            })?;
        }
        index = index.saturating_add(1);
    }
    Ok(counters)
}

/// Which value each counter index stands for, given a histogram's bounds and precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    unit_magnitude: u32,
    sub_bucket_half_count_magnitude: u32,
    counts_len: u64,
}

impl Layout {
    /// hdrhistogram's layout for `lowest..=highest` at `digits` significant digits, refused where
    /// hdrhistogram refuses to build such a histogram.
    pub fn new(lowest: u64, highest: u64, digits: u32) -> Result<Self, String> {
        let bounds = || format!("lowest {lowest}, highest {highest}, {digits} significant digits");
        if lowest == 0 || lowest > u64::MAX / 2 || highest < 2 * lowest || digits > 5 {
            return Err(format!("{} are not valid histogram bounds", bounds()));
        }
        let unit_magnitude = lowest.ilog2();
        // The power of two at or above 2·10^digits: counters of unit width up to that value.
        let sub_bucket_count_magnitude = (2 * 10u64.pow(digits)).next_power_of_two().ilog2();
        if unit_magnitude + sub_bucket_count_magnitude > 63 {
            return Err(format!("{} cannot be represented", bounds()));
        }
        let sub_bucket_half_count_magnitude = sub_bucket_count_magnitude - 1;
        // Buckets double the range until it covers `highest`; the first has twice the counters.
        let mut buckets = 1u64;
        let mut untrackable = 1u64 << (unit_magnitude + sub_bucket_count_magnitude);
        while untrackable <= highest {
            if untrackable > u64::MAX / 2 {
                buckets += 1;
                break;
            }
            untrackable <<= 1;
            buckets += 1;
        }
        Ok(Self {
            unit_magnitude,
            sub_bucket_half_count_magnitude,
            counts_len: (buckets + 1) << sub_bucket_half_count_magnitude,
        })
    }

    /// fledge's own wire layout (1 µs .. 1 h, 2 significant digits).
    pub fn fledge() -> Self {
        let (lowest, highest, digits) = FLEDGE_BOUNDS;
        Self::new(lowest, highest, digits as u32)
            .expect("fledge's histogram bounds are valid constants")
    }

    /// How many counters the layout has.
    pub fn counts_len(&self) -> u64 {
        self.counts_len
    }

    /// The lowest value counter `index` stands for (saturating at `u64::MAX` for counters of
    /// layouts that reach beyond it).
    pub fn value_for(&self, index: u64) -> u64 {
        let (sub, shift) = self.location(index);
        u64::try_from(u128::from(sub) << shift).unwrap_or(u64::MAX)
    }

    /// The highest value the layout's last counter stands for.
    pub fn highest_value(&self) -> u64 {
        let last = self.counts_len - 1;
        let (sub, shift) = self.location(last);
        u64::try_from(((u128::from(sub) + 1) << shift) - 1).unwrap_or(u64::MAX)
    }

    /// Counter `index` stands for the values `sub << shift ..= ((sub + 1) << shift) - 1`.
    fn location(&self, index: u64) -> (u64, u64) {
        let half = self.sub_bucket_half_count_magnitude;
        let (bucket, sub) = match (index >> half).checked_sub(1) {
            // The lower half of the first bucket.
            None => (0, index),
            Some(bucket) => (bucket, (index & ((1 << half) - 1)) + (1 << half)),
        };
        (sub, bucket + u64::from(self.unit_magnitude))
    }
}

/// One LEB128 number of at most 9 bytes, the ninth contributing all its 8 bits; with the bytes
/// read. `None` when the input ends first.
#[inline]
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    // Most counts and runs of zeros fit one byte.
    match bytes.first() {
        Some(&b) if b < 0x80 => return Some((u64::from(b), 1)),
        None => return None,
        Some(_) => {}
    }
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Some((value | u64::from(b) << 56, 9));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn zig_zag(encoded: u64) -> i64 {
    ((encoded >> 1) as i64) ^ -((encoded & 1) as i64)
}

#[cfg(test)]
mod tests;
