//! The proxy-wasm ABI 0.2.1 as plain values: status codes, map and buffer types, the header-pairs
//! wire format, and Envoy's header-map edits on an ordered list of pairs.
//!
//! Pure: no wasm runtime here. The wasm adapter (`imports.rs`) decodes guest memory into these
//! values and back; every rule about what a call means lives here or in `properties.rs`.

use std::time::Duration;

/// `WasmResult` codes returned by host calls (proxy-wasm `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    pub(crate) fn code(self) -> u32 {
        self as u32
    }
}

/// Header maps a call may name (`proxy_*_header_map_*`'s first argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapType {
    HttpRequestHeaders,
    HttpRequestTrailers,
    HttpResponseHeaders,
    HttpResponseTrailers,
    GrpcReceiveInitialMetadata,
    GrpcReceiveTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::HttpRequestHeaders,
            1 => Self::HttpRequestTrailers,
            2 => Self::HttpResponseHeaders,
            3 => Self::HttpResponseTrailers,
            4 => Self::GrpcReceiveInitialMetadata,
            5 => Self::GrpcReceiveTrailingMetadata,
            6 => Self::HttpCallResponseHeaders,
            7 => Self::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// Buffers a call may name (`proxy_get_buffer_bytes`' first argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
}

impl BufferType {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::HttpRequestBody,
            1 => Self::HttpResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::HttpCallResponseBody,
            5 => Self::GrpcReceiveBuffer,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            _ => return None,
        })
    }
}

/// Kinds of `proxy_define_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            _ => return None,
        })
    }
}

/// The part of a buffer `proxy_get_buffer_bytes(start, max_size)` returns, clamped as Envoy
/// clamps it: never past the end, and empty when `start` lies beyond it.
pub(crate) fn buffer_slice(buffer: &[u8], start: u32, max_size: u32) -> &[u8] {
    let start = (start as usize).min(buffer.len());
    let end = start.saturating_add(max_size as usize).min(buffer.len());
    &buffer[start..end]
}

/// Serializes header pairs as the ABI does: a u32 count, then per pair the u32 key and value
/// lengths, then per pair the key, a NUL, the value, a NUL (all integers little endian).
#[cfg(test)]
pub(crate) fn encode_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = vec![0; map_serialized_size(pairs)];
    encode_pairs_into(pairs, &mut out);
    out
}

/// [`encode_pairs`] into a buffer of exactly [`map_serialized_size`] bytes.
pub(crate) fn encode_pairs_into(pairs: &[(String, String)], out: &mut [u8]) {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = out.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        put(&(k.len() as u32).to_le_bytes());
        put(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        put(k.as_bytes());
        put(&[0]);
        put(v.as_bytes());
        put(&[0]);
    }
}

/// Parses the format `encode_pairs` writes; `None` when the bytes do not hold it exactly.
pub(crate) fn decode_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(raw) as usize)
    };
    let count = word(0)?;
    let mut sizes_at = 4;
    let mut data_at = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let (key_len, value_len) = (word(sizes_at)?, word(sizes_at + 4)?);
        sizes_at += 8;
        let key = bytes.get(data_at..data_at + key_len)?;
        data_at += key_len;
        if bytes.get(data_at) != Some(&0) {
            return None;
        }
        data_at += 1;
        let value = bytes.get(data_at..data_at + value_len)?;
        data_at += value_len;
        if bytes.get(data_at) != Some(&0) {
            return None;
        }
        data_at += 1;
        pairs.push((lossy(key), lossy(value)));
    }
    Some(pairs)
}

/// Header bytes from the guest as text (invalid UTF-8 is replaced, never refused).
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// === header-map edits (Envoy: keys are lower case; get returns the first value) ===

/// Where the first entry of a key given as the guest's bytes is.
pub(crate) fn map_position(map: &[(String, String)], key: &[u8]) -> Option<usize> {
    map.iter()
        .position(|(k, _)| k.as_bytes().eq_ignore_ascii_case(key))
}

pub(crate) fn map_get<'a>(map: &'a [(String, String)], key: &str) -> Option<&'a str> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Envoy's `setCopy`: the first entry of that key takes the value, later ones go; a missing key
/// is appended.
pub(crate) fn map_replace(map: &mut Vec<(String, String)>, key: &str, value: String) {
    match map.iter().position(|(k, _)| k.eq_ignore_ascii_case(key)) {
        Some(first) => {
            map[first].1 = value;
            let mut index = 0;
            map.retain(|(k, _)| {
                index += 1;
                index - 1 == first || !k.eq_ignore_ascii_case(key)
            });
        }
        None => map.push((key.to_ascii_lowercase(), value)),
    }
}

/// nginx's replace (ngx_wasm_module): the first entry of that key takes the value and later ones
/// stay; a missing key is appended.
pub(crate) fn map_replace_first(map: &mut Vec<(String, String)>, key: &str, value: String) {
    match map.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
        Some((_, first)) => *first = value,
        None => map.push((key.to_ascii_lowercase(), value)),
    }
}

/// Envoy's `addCopy`: another entry, even when the key is already there.
pub(crate) fn map_add(map: &mut Vec<(String, String)>, key: &str, value: String) {
    map.push((key.to_ascii_lowercase(), value));
}

pub(crate) fn map_remove(map: &mut Vec<(String, String)>, key: &str) {
    map.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
}

/// The byte size `proxy_get_header_map_size` reports: the serialized pairs.
pub(crate) fn map_serialized_size(map: &[(String, String)]) -> usize {
    4 + map
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>()
}

// === gRPC upstreams ===

/// Where `proxy_grpc_stream`'s `upstream` argument points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrpcTarget {
    pub cluster: String,
    /// The `:authority` to send; the cluster's address when `None`.
    pub authority: Option<String>,
    /// The stream's deadline; none when `None`.
    pub timeout: Option<Duration>,
}

/// Where `proxy_grpc_stream`'s `upstream` argument points. It is either a cluster name `known`
/// accepts, or (as Envoy reads it) a serialized `envoy.config.core.v3.GrpcService` whose
/// `envoy_grpc` (field 1) names the cluster (field 1) and perhaps an authority (field 2), with
/// perhaps a `timeout` (field 3, a `google.protobuf.Duration`). `None` when neither names a
/// known cluster, or the timeout is not a valid Duration (negative, or nanos out of range).
pub(crate) fn grpc_target(upstream: &[u8], known: impl Fn(&str) -> bool) -> Option<GrpcTarget> {
    if let Ok(name) = std::str::from_utf8(upstream)
        && known(name)
    {
        return Some(GrpcTarget {
            cluster: name.to_string(),
            authority: None,
            timeout: None,
        });
    }
    let envoy_grpc = proto_bytes(upstream, 1)?;
    let cluster = std::str::from_utf8(proto_bytes(envoy_grpc, 1)?).ok()?;
    let authority = proto_bytes(envoy_grpc, 2)
        .and_then(|a| std::str::from_utf8(a).ok())
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    let timeout = match proto_bytes(upstream, 3) {
        Some(duration) => {
            // int64 seconds and int32 nanos, as varints (negative ones in ten bytes).
            let seconds = proto_varint(duration, 1).unwrap_or(0) as i64;
            let nanos = proto_varint(duration, 2).unwrap_or(0) as i64;
            let seconds = u64::try_from(seconds).ok()?;
            let nanos = u32::try_from(nanos).ok().filter(|&n| n < 1_000_000_000)?;
            Some(Duration::new(seconds, nanos)).filter(|d| !d.is_zero())
        }
        None => None,
    };
    known(cluster).then(|| GrpcTarget {
        cluster: cluster.to_string(),
        authority,
        timeout,
    })
}

/// The `grpc-timeout` header for `timeout`, as Envoy writes it: milliseconds, or a coarser unit
/// when that needs more than the eight digits gRPC allows.
pub(crate) fn grpc_timeout_header(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ms = timeout.as_millis();
    if ms <= MAX {
        return format!("{ms}m");
    }
    let seconds = u128::from(timeout.as_secs());
    for (unit, per) in [("S", 1), ("M", 60), ("H", 3600)] {
        if seconds / per <= MAX {
            return format!("{}{unit}", seconds / per);
        }
    }
    format!("{MAX}H")
}

/// A protobuf field as [`proto_fields`] finds it.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Every field of a protobuf message with its number; `None` when the bytes are not a
/// well-formed message.
fn proto_fields(mut message: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut fields = Vec::new();
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match key & 7 {
            0 => fields.push((key >> 3, Field::Varint(varint(&mut message)?))),
            1 => message = message.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                let value = message.get(..len)?;
                message = &message[len..];
                fields.push((key >> 3, Field::Bytes(value)));
            }
            5 => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(fields)
}

/// The last length-delimited field `number` (a later one wins, as in protobuf's merge), or
/// `None` when there is none or the bytes are not a well-formed message.
fn proto_bytes(message: &[u8], number: u64) -> Option<&[u8]> {
    proto_fields(message)?
        .into_iter()
        .rev()
        .find_map(|(n, field)| match field {
            Field::Bytes(bytes) if n == number => Some(bytes),
            _ => None,
        })
}

/// The last varint field `number`, as [`proto_bytes`].
fn proto_varint(message: &[u8], number: u64) -> Option<u64> {
    proto_fields(message)?
        .into_iter()
        .rev()
        .find_map(|(n, field)| match field {
            Field::Varint(value) if n == number => Some(value),
            _ => None,
        })
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests;
