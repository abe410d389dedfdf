//! Foreign functions (`clear_route_cache`) and the gRPC stream host calls: open, send, and the
//! close status. The streams themselves run in `crate::grpc`; which cluster an upstream names is
//! `abi::grpc_target`'s.

use bytes::Bytes;

use super::{Call, Ctx, bytes, copy_out, guest, status, text, write_u32};
use crate::abi::{self, Status};
use crate::grpc;

/// Envoy's foreign functions: `clear_route_cache` (Ok in any context; it marks the running HTTP
/// context's route as to be picked again) and nothing else (NotFound). It returns no data.
pub(super) fn call_foreign_function(
    mut c: Ctx,
    np: u32,
    nl: u32,
    _ap: u32,
    _al: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> u32 {
    fault!(c, CallForeignFunction);
    match guest(&c, np, nl) {
        Ok(_) if c.data().shared.quirks.without_foreign_functions => {
            return Status::NotFound.code();
        }
        Ok(b"clear_route_cache") => {}
        Ok(_) => return Status::NotFound.code(),
        Err(e) => return e.code(),
    }
    if let Some(http) = c.data_mut().http() {
        http.route_cache_cleared = true;
    }
    for ptr in [ptr_ptr, size_ptr] {
        if ptr != 0
            && let Err(e) = write_u32(&mut c, ptr, 0)
        {
            return e.code();
        }
    }
    Status::Ok.code()
}

/// Opens a stream for the root context, as Envoy does whatever context asks. The upstream is a
/// cluster name or a serialized `envoy.config.core.v3.GrpcService` (its cluster, authority and
/// timeout are used). Statuses are the ones the
/// SDKs expect here: ParseFailure for bad metadata, InternalFailure for an unknown cluster.
#[allow(clippy::too_many_arguments)]
pub(super) fn grpc_stream(
    mut c: Ctx,
    up: u32,
    upl: u32,
    sp: u32,
    sl: u32,
    mp: u32,
    ml: u32,
    md: u32,
    mdl: u32,
    ret: u32,
) -> u32 {
    fault!(c, GrpcStream);
    let args = (|| {
        let upstream = bytes(&c, up, upl)?;
        let path = format!("/{}/{}", text(&c, sp, sl)?, text(&c, mp, ml)?);
        let metadata = if mdl == 0 {
            Vec::new()
        } else {
            abi::decode_pairs(&bytes(&c, md, mdl)?).ok_or(Status::ParseFailure)?
        };
        Ok::<_, Status>((upstream, path, metadata))
    })();
    let (upstream, path, metadata) = match args {
        Ok(args) => args,
        Err(e) => return e.code(),
    };
    let state = c.data_mut();
    let target = abi::grpc_target(&upstream, |name| {
        state.shared.config.clusters.contains_key(name)
    });
    let Some(abi::GrpcTarget {
        cluster,
        authority,
        timeout,
    }) = target
    else {
        tracing::warn!(vm = state.vm, upstream = %String::from_utf8_lossy(&upstream), "proxy_grpc_stream: no such gRPC cluster");
        return Status::InternalFailure.code();
    };
    let addr = state.shared.config.clusters[&cluster];
    let Ok(path) = path.parse() else {
        return Status::BadArgument.code();
    };
    state.grpc.next_token = state.grpc.next_token.wrapping_add(1).max(1);
    let token = state.grpc.next_token;
    let target = grpc::Target {
        addr,
        authority,
        timeout,
        path,
    };
    let stream = grpc::open(
        &state.shared.runtime,
        target,
        metadata,
        token,
        state.root_id,
        state.deliver.clone(),
    );
    state.grpc.open.insert(token, stream);
    status(write_u32(&mut c, ret, token))
}

pub(super) fn grpc_send(mut c: Ctx, token: u32, ptr: u32, len: u32, end_stream: u32) -> u32 {
    fault!(c, GrpcSend);
    let message = match bytes(&c, ptr, len) {
        Ok(message) => Bytes::from(message),
        Err(e) => return e.code(),
    };
    match c.data_mut().grpc.open.get_mut(&token) {
        Some(stream) => match stream.send(message, end_stream != 0) {
            true => Status::Ok.code(),
            false => Status::BadArgument.code(),
        },
        None => Status::NotFound.code(),
    }
}

/// The status of the stream whose close callback is running (code 0 and no message otherwise).
pub(super) fn get_status(mut c: Ctx, code_ptr: u32, ptr_ptr: u32, size_ptr: u32) -> Call {
    fault!(c, GetStatus, Ok);
    let (code, message) = c.data().grpc.status.clone();
    if let Err(e) = write_u32(&mut c, code_ptr, code) {
        return Ok(e.code());
    }
    Ok(status(copy_out(
        &mut c,
        message.as_bytes(),
        ptr_ptr,
        size_ptr,
    )?))
}
