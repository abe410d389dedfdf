//! Where a request goes, as the filter keys it: the host of its `:authority`, lower case,
//! without port, and whether Envoy marked the request as a mirrored copy. Found in one pass over
//! the header's bytes in the common case (eight bytes at a step), and kept as bytes
//! ([`HostBytes`]) until a request is recorded under its own host ([`Destination`]).

/// A destination as the filter keys it: host lower case without port, and whether Envoy marked
/// the request as a mirrored copy (it appends `-shadow` to the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub shadow: bool,
}

/// A destination's host as the authority's bytes, lower case, without port and without
/// Envoy's `-shadow` suffix (noted in `shadow`): enough to find the host's route. It becomes a
/// [`Destination`] (a `String`) only where it is recorded under its own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBytes {
    pub host: Vec<u8>,
    pub shadow: bool,
}

impl HostBytes {
    /// [`Destination::from_authority`] on the header's bytes as the host handed them over,
    /// reusing their buffer: the host (before `:port`, or inside `[…]`) is cut out of the
    /// trimmed authority and lower-cased in place.
    pub fn from_authority(mut authority: Vec<u8>) -> HostBytes {
        // The common case in one pass: `host[:port]`, nothing to trim, no brackets. Eight
        // bytes at a step while none is special, then a host name's usual bytes (lower-case
        // letters, digits, dots, dashes) take one test each.
        let mut end = authority.len();
        let mut plain = true;
        let words = lower_plain_words(&mut authority);
        for (i, b) in authority.iter_mut().enumerate().skip(words) {
            let c = *b;
            if c > b':' && c != b'[' {
                *b = c.to_ascii_lowercase();
                continue;
            }
            match c {
                b':' => {
                    end = i;
                    break;
                }
                b' ' | b'\t' | b'\n' | b'\r' | 0x0c | b'[' => {
                    plain = false;
                    break;
                }
                _ => {}
            }
        }
        if !plain {
            return HostBytes::from_general_authority(authority);
        }
        authority.truncate(end);
        HostBytes::from_host(authority)
    }

    /// [`HostBytes::from_authority`] for authorities with whitespace or brackets (and, in the
    /// tests, the reference it is checked against).
    pub(super) fn from_general_authority(mut authority: Vec<u8>) -> HostBytes {
        let start = authority
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(authority.len());
        let stop = authority
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(start, |last| last + 1);
        let rest = authority.get(start..stop).unwrap_or_default();
        let (from, end) = if rest.first() == Some(&b'[') {
            // [v6]:port
            let end = rest.iter().position(|&b| b == b']').unwrap_or(rest.len());
            (start + 1, start + end.max(1))
        } else {
            let end = rest.iter().position(|&b| b == b':').unwrap_or(rest.len());
            (start, start + end)
        };
        authority.truncate(end);
        authority.drain(..from.min(end));
        authority.make_ascii_lowercase();
        HostBytes::from_host(authority)
    }

    /// The lower-case host, with Envoy's `-shadow` suffix taken off and noted.
    fn from_host(mut host: Vec<u8>) -> HostBytes {
        let shadow = host.ends_with(b"-shadow");
        if shadow {
            host.truncate(host.len() - b"-shadow".len());
        }
        HostBytes { host, shadow }
    }

    /// The host as text; bytes that are not UTF-8 are read lossily.
    pub fn into_destination(self) -> Destination {
        let host = String::from_utf8(self.host)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Destination {
            host,
            shadow: self.shadow,
        }
    }
}

impl Destination {
    /// [`HostBytes::from_authority`], the host then made text (bytes that are not UTF-8 are
    /// read lossily).
    pub fn from_authority_bytes(authority: Vec<u8>) -> Destination {
        HostBytes::from_authority(authority).into_destination()
    }

    pub fn from_authority(authority: &str) -> Destination {
        Destination::from_authority_bytes(authority.as_bytes().to_vec())
    }
}

/// Lower-cases `bytes` eight at a time from the start, up to the first word holding a `:`, a
/// `[` or a byte of at most a space; returns how many bytes it did (a multiple of eight, or all
/// of them: when every whole word was plain, the last eight bytes, overlapping the words done,
/// are one more word). Bit tricks on a `u64`: a byte below `n` (≤ 128) shows in
/// `(w - n·ONES) & !w & HIGH`, and an ASCII upper-case letter is a byte ≥ `A` and not > `Z`,
/// found with two additions that cannot carry into the next byte.
fn lower_plain_words(bytes: &mut [u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    // Lower-cases a plain word in place; `false` (and nothing changed) if it is not plain.
    let lower = |chunk: &mut [u8]| {
        let Ok(word) = <[u8; 8]>::try_from(&*chunk) else {
            return false;
        };
        let w = u64::from_le_bytes(word);
        let special = below(w ^ (ONES * u64::from(b':')), 1)
            | below(w ^ (ONES * u64::from(b'[')), 1)
            | below(w, u64::from(b' ') + 1);
        if special != 0 {
            return false;
        }
        let low7 = w & !HIGH;
        let at_least_a = low7 + ONES * (0x80 - u64::from(b'A'));
        let above_z = low7 + ONES * (0x7f - u64::from(b'Z'));
        let upper = !w & (at_least_a ^ above_z) & HIGH;
        chunk.copy_from_slice(&(w | (upper >> 2)).to_le_bytes());
        true
    };
    let n = bytes.len();
    let mut done = 0;
    for chunk in bytes.chunks_exact_mut(8) {
        if !lower(chunk) {
            return done;
        }
        done += 8;
    }
    // Bytes already lowered stay as they are when lowered again.
    if done < n && n >= 8 && bytes.get_mut(n - 8..).is_some_and(lower) {
        return n;
    }
    done
}
