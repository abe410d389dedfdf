//! Numbers in property values, as proxies answer `proxy_get_property`. Envoy writes integers,
//! durations and timestamps as 8 bytes little endian, durations and timestamps in nanoseconds;
//! nginx with ngx_wasm_module writes ASCII decimal text, durations and timestamps in seconds
//! with a fraction (`"0.254"`, `"1718000000.123"`) and integers as they are (`"503"`). Each
//! function here reads both forms and nothing else: a value of another size or shape is
//! unreadable (`None`), never a guess.
//!
//! Text is recognised first: a value made of ASCII digits with at most one `.` between digits
//! is text, whatever its length (so an 8-character text such as `"17180000"` is not taken for
//! an 8-byte integer). An 8-byte integer spelled only with such characters would be above
//! 3.4 × 10^18, beyond anything a property the filter reads can hold.
//!
//! Pure: the plugin adapter reads the bytes from the host.

#[cfg(test)]
mod tests;

/// An integer (`response.code`, `response.grpc_status`, `listener_direction`): 8 bytes little
/// endian, or ASCII decimal digits without a fraction.
pub fn integer(bytes: &[u8]) -> Option<i64> {
    match Decimal::parse(bytes) {
        Some(decimal) => i64::try_from(decimal.whole_only()?).ok(),
        None => Some(i64::from_le_bytes(bytes.try_into().ok()?)),
    }
}

/// Unsigned bits (`response.flags`): 8 bytes little endian, or ASCII decimal digits without a
/// fraction.
pub fn unsigned(bytes: &[u8]) -> Option<u64> {
    match Decimal::parse(bytes) {
        Some(decimal) => decimal.whole_only(),
        None => Some(u64::from_le_bytes(bytes.try_into().ok()?)),
    }
}

/// A duration in nanoseconds (`request.duration`): 8 bytes little endian of nanoseconds (not
/// negative), or ASCII seconds with an optional fraction (digits past nanoseconds are dropped).
pub fn duration_ns(bytes: &[u8]) -> Option<u64> {
    match Decimal::parse(bytes) {
        Some(decimal) => decimal.nanos(),
        None => u64::try_from(i64::from_le_bytes(bytes.try_into().ok()?)).ok(),
    }
}

/// A point in time in nanoseconds since the epoch (`request.time`): 8 bytes little endian of
/// nanoseconds, or ASCII seconds since the epoch with an optional fraction.
pub fn timestamp_ns(bytes: &[u8]) -> Option<i64> {
    match Decimal::parse(bytes) {
        Some(decimal) => i64::try_from(decimal.nanos()?).ok(),
        None => Some(i64::from_le_bytes(bytes.try_into().ok()?)),
    }
}

/// ASCII decimal text: digits, then perhaps a `.` and more digits.
struct Decimal<'a> {
    whole: &'a [u8],
    /// Empty when there is no `.`.
    fraction: &'a [u8],
}

impl<'a> Decimal<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Decimal<'a>> {
        let (whole, fraction) = match bytes.iter().position(|&b| b == b'.') {
            Some(dot) => {
                let (whole, rest) = bytes.split_at(dot);
                let fraction = rest.get(1..)?;
                if fraction.is_empty() {
                    return None;
                }
                (whole, fraction)
            }
            None => (bytes, &[][..]),
        };
        let digits = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
        (!whole.is_empty() && digits(whole) && digits(fraction))
            .then_some(Decimal { whole, fraction })
    }

    /// The value, when it has no fraction and fits.
    fn whole_only(&self) -> Option<u64> {
        if !self.fraction.is_empty() {
            return None;
        }
        value(self.whole)
    }

    /// The value as seconds, in nanoseconds, when it fits.
    fn nanos(&self) -> Option<u64> {
        let mut fraction = 0u64;
        for position in 0..9 {
            let digit = self
                .fraction
                .get(position)
                .map_or(0, |d| u64::from(d - b'0'));
            fraction = fraction * 10 + digit;
        }
        value(self.whole)?
            .checked_mul(1_000_000_000)?
            .checked_add(fraction)
    }
}

/// The value of ASCII digits, when it fits in a `u64`.
fn value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}
