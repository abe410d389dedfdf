//! Header-map host calls (`proxy_*_header_map_*`) on the running context's request or response
//! headers and the gRPC metadata being delivered, with Envoy's answers for maps that are absent
//! in the running callback. The edits themselves are `abi.rs`'s.

use super::{Call, Ctx, bytes, copy_out, status, text, write_u32};
use crate::abi::{self, MapType, Status};
use crate::state::VmState;

/// The map `kind` names in the running callback. `Err(BadArgument)` for an id outside the ABI;
/// `Ok(None)` for a map that exists in the ABI but not here and now (no HTTP context, trailers,
/// HTTP call responses).
fn map(state: &mut VmState, kind: u32) -> Result<Option<&mut Vec<(String, String)>>, Status> {
    let kind = MapType::from_abi(kind).ok_or(Status::BadArgument)?;
    Ok(match kind {
        MapType::HttpRequestHeaders => state.http().map(|h| &mut h.request_headers),
        MapType::HttpResponseHeaders => state.http().map(|h| &mut h.response_headers),
        MapType::GrpcReceiveInitialMetadata => Some(&mut state.grpc.initial_metadata),
        MapType::GrpcReceiveTrailingMetadata => Some(&mut state.grpc.trailing_metadata),
        _ => None,
    })
}

/// A map to change: one that is not available cannot be changed (BadArgument, as Envoy).
fn map_mut(state: &mut VmState, kind: u32) -> Result<&mut Vec<(String, String)>, Status> {
    map(state, kind)?.ok_or(Status::BadArgument)
}

/// Envoy answers a map that is not available with no pairs.
pub(super) fn get_map_pairs(mut c: Ctx, kind: u32, ptr_ptr: u32, size_ptr: u32) -> Call {
    let encoded = match map(c.data_mut(), kind) {
        Ok(Some(map)) if !map.is_empty() => abi::encode_pairs(map),
        Ok(_) => Vec::new(),
        Err(e) => return Ok(e.code()),
    };
    Ok(status(copy_out(&mut c, &encoded, ptr_ptr, size_ptr)?))
}

pub(super) fn set_map_pairs(mut c: Ctx, kind: u32, ptr: u32, len: u32) -> u32 {
    let pairs = bytes(&c, ptr, len).and_then(|b| abi::decode_pairs(&b).ok_or(Status::ParseFailure));
    let result = pairs.and_then(|pairs| {
        let lowered = pairs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        *map_mut(c.data_mut(), kind)? = lowered;
        Ok(())
    });
    status(result)
}

pub(super) fn get_map_size(mut c: Ctx, kind: u32, ret: u32) -> u32 {
    let size = map_mut(c.data_mut(), kind).map(|m| abi::map_serialized_size(m) as u32);
    status(size.and_then(|size| write_u32(&mut c, ret, size)))
}

/// ABI 0.2.x: a missing key, or a map not available in this callback, is NotFound (Envoy answers
/// Ok with an empty value only to ABI 0.1.0 modules).
pub(super) fn get_map_value(
    mut c: Ctx,
    kind: u32,
    kp: u32,
    kl: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> Call {
    let key = match bytes(&c, kp, kl) {
        Ok(key) => key,
        Err(e) => return Ok(e.code()),
    };
    let value = match map(c.data_mut(), kind) {
        Ok(Some(map)) => abi::map_get_bytes(map, &key).map(<[u8]>::to_vec),
        Ok(None) => None,
        Err(e) => return Ok(e.code()),
    };
    match value {
        Some(value) => Ok(status(copy_out(&mut c, &value, ptr_ptr, size_ptr)?)),
        None => Ok(Status::NotFound.code()),
    }
}

pub(super) fn edit_map(
    mut c: Ctx,
    kind: u32,
    kp: u32,
    kl: u32,
    value: Option<(u32, u32)>,
    edit: impl FnOnce(&mut Vec<(String, String)>, &str, String),
) -> u32 {
    let args = text(&c, kp, kl).and_then(|key| {
        let value = value.map(|(vp, vl)| text(&c, vp, vl)).transpose()?;
        Ok((key, value.unwrap_or_default()))
    });
    let result = args.and_then(|(key, value)| {
        edit(map_mut(c.data_mut(), kind)?, &key, value);
        Ok(())
    });
    status(result)
}
