use super::*;

fn le(n: i64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

#[test]
fn integers_from_envoy_bytes_or_ascii_decimal() {
    for (bytes, expected) in [
        (le(503), Some(503)),
        (le(-1), Some(-1)),
        (le(0), Some(0)),
        (b"503".to_vec(), Some(503)),
        (b"0".to_vec(), Some(0)),
        (b"007".to_vec(), Some(7)),
        (b"9223372036854775807".to_vec(), Some(i64::MAX)),
        // Unreadable: a fraction, a sign, spaces, other letters, the wrong size, too large.
        (b"503.0".to_vec(), None),
        (b"-1".to_vec(), None),
        (b" 503".to_vec(), None),
        (b"5O3".to_vec(), None),
        (b"".to_vec(), None),
        (503i32.to_le_bytes().to_vec(), None),
        (vec![0; 9], None),
        (b"9223372036854775808".to_vec(), None),
        // Eight digits are text, not an 8-byte integer.
        (b"12345678".to_vec(), Some(12_345_678)),
    ] {
        assert_eq!(integer(&bytes), expected, "{bytes:?}");
    }
}

#[test]
fn flags_are_unsigned() {
    for (bytes, expected) in [
        (0x24u64.to_le_bytes().to_vec(), Some(0x24)),
        (u64::MAX.to_le_bytes().to_vec(), Some(u64::MAX)),
        (b"36".to_vec(), Some(36)),
        (b"18446744073709551615".to_vec(), Some(u64::MAX)),
        (b"18446744073709551616".to_vec(), None),
        (b"UF".to_vec(), None),
        (vec![0x24, 0, 0, 0], None),
    ] {
        assert_eq!(unsigned(&bytes), expected, "{bytes:?}");
    }
}

#[test]
fn durations_from_envoy_nanoseconds_or_seconds_as_text() {
    for (bytes, expected) in [
        (le(254_000_000), Some(254_000_000)),
        (le(0), Some(0)),
        (le(-5), None),
        (b"0.254".to_vec(), Some(254_000_000)),
        (b"0.000001".to_vec(), Some(1_000)),
        (b"3".to_vec(), Some(3_000_000_000)),
        (b"90.5".to_vec(), Some(90_500_000_000)),
        (b"1.0000000019".to_vec(), Some(1_000_000_001)),
        (b"0.".to_vec(), None),
        (b".254".to_vec(), None),
        (b"0.2.5".to_vec(), None),
        (b"0,254".to_vec(), None),
        (b"254ms".to_vec(), None),
        (b"18446744074".to_vec(), None),
        (254_000_000i32.to_le_bytes().to_vec(), None),
    ] {
        assert_eq!(duration_ns(&bytes), expected, "{bytes:?}");
    }
}

#[test]
fn timestamps_as_text_are_never_read_as_8_byte_integers() {
    for (bytes, expected) in [
        (
            le(1_718_000_000_123_456_789),
            Some(1_718_000_000_123_456_789),
        ),
        (b"1718000000.123".to_vec(), Some(1_718_000_000_123_000_000)),
        (b"1718000000".to_vec(), Some(1_718_000_000_000_000_000)),
        // Eight characters, the size of Envoy's integers: still text.
        (b"17180000".to_vec(), Some(17_180_000_000_000_000)),
        (b"1718.123".to_vec(), Some(1_718_123_000_000)),
        (b"99999999999".to_vec(), None),
        (b"2024-06-10T06:13:20Z".to_vec(), None),
    ] {
        assert_eq!(timestamp_ns(&bytes), expected, "{bytes:?}");
    }
}
