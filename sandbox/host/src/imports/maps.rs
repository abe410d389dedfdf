//! Header-map host calls (`proxy_*_header_map_*`) on the running context's request or response
//! headers and the gRPC metadata being delivered, with Envoy's answers for maps that are absent
//! in the running callback. The edits themselves are `abi.rs`'s.

use super::{Call, Ctx, bytes, copy_out_with, guest, slice, status, write_u32};
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

/// The same map, read only.
fn map_ref(state: &VmState, kind: u32) -> Result<Option<&Vec<(String, String)>>, Status> {
    let kind = MapType::from_abi(kind).ok_or(Status::BadArgument)?;
    Ok(match kind {
        MapType::HttpRequestHeaders => state
            .contexts
            .get(&state.current)
            .map(|h| &h.request_headers),
        MapType::HttpResponseHeaders => state
            .contexts
            .get(&state.current)
            .map(|h| &h.response_headers),
        MapType::GrpcReceiveInitialMetadata => Some(&state.grpc.initial_metadata),
        MapType::GrpcReceiveTrailingMetadata => Some(&state.grpc.trailing_metadata),
        _ => None,
    })
}

/// Envoy answers a map that is not available with no pairs.
pub(super) fn get_map_pairs(mut c: Ctx, kind: u32, ptr_ptr: u32, size_ptr: u32) -> Call {
    fault!(c, GetHeaderMapPairs, Ok);
    // Serialized straight into the module's memory once it has allocated the size.
    let len = match map_ref(c.data(), kind) {
        Ok(Some(map)) if !map.is_empty() => abi::map_serialized_size(map),
        Ok(_) => 0,
        Err(e) => return Ok(e.code()),
    };
    let copied = copy_out_with(&mut c, len, ptr_ptr, size_ptr, |out, state| {
        let map = map_ref(state, kind).ok().flatten();
        match map {
            Some(map) if abi::map_serialized_size(map) == out.len() => {
                abi::encode_pairs_into(map, out);
                Ok(())
            }
            _ => Err(Status::InternalFailure),
        }
    })?;
    Ok(status(copied))
}

pub(super) fn set_map_pairs(mut c: Ctx, kind: u32, ptr: u32, len: u32) -> u32 {
    fault!(c, SetHeaderMapPairs);
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
    fault!(c, GetHeaderMapSize);
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
    fault!(c, GetHeaderMapValue, Ok);
    // Find the entry in place, let the module allocate, then copy the value straight across.
    let found = guest(&c, kp, kl).and_then(|key| {
        Ok(map_ref(c.data(), kind)?.and_then(|map| {
            let index = abi::map_position(map, key)?;
            Some((index, map.get(index)?.1.len()))
        }))
    });
    let (index, len) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(Status::NotFound.code()),
        Err(e) => return Ok(e.code()),
    };
    let copied = copy_out_with(&mut c, len, ptr_ptr, size_ptr, |out, state| {
        // The module's allocator ran since the lookup: take the same entry, if it is unchanged.
        let value = map_ref(state, kind)
            .ok()
            .flatten()
            .and_then(|map| map.get(index))
            .map(|(_, v)| v.as_bytes())
            .filter(|v| v.len() == out.len())
            .ok_or(Status::InternalFailure)?;
        out.copy_from_slice(value);
        Ok(())
    })?;
    Ok(status(copied))
}

pub(super) fn edit_map(
    mut c: Ctx,
    kind: u32,
    kp: u32,
    kl: u32,
    value: Option<(u32, u32)>,
    edit: impl FnOnce(&mut Vec<(String, String)>, &str, String),
) -> u32 {
    let Some(memory) = c.data().memory else {
        return Status::InvalidMemoryAccess.code();
    };
    // The key is read in place; only the value is copied, into the map.
    let (memory, state) = memory.data_and_store_mut(&mut c);
    let result = slice(memory, kp, kl).and_then(|key| {
        let value = match value {
            Some((vp, vl)) => abi::lossy(slice(memory, vp, vl)?),
            None => String::new(),
        };
        edit(map_mut(state, kind)?, &String::from_utf8_lossy(key), value);
        Ok(())
    });
    status(result)
}
