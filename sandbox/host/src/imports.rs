//! The wasm side of the proxy-wasm ABI 0.2.1 host calls: each import reads its arguments out of
//! guest memory through checked slices, applies the call to the VM's state (with the rules of
//! `abi.rs` and `properties.rs`), and writes results back into memory the module allocates with
//! `proxy_on_memory_allocate`, as Envoy does.
//!
//! Imports fledge does not use get no stand-in here: `link_unimplemented` gives each one a body
//! that answers Unimplemented (12) and is counted and logged once by name.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wasmtime::{Caller, Linker, Val};

use crate::abi::{self, BufferType, MetricKind, Status};
use crate::properties::{self, ProxyFacts, RequestFacts};
use crate::quirks::Import;
use crate::state::VmState;

/// Returns the status the host's quirks give this call of `$import` instead of carrying it out
/// (wrapped in `Ok` for calls that may trap, written `fault!(c, Import, Ok)`).
macro_rules! fault {
    ($c:ident, $import:ident) => {
        if let Some(code) = $crate::imports::injected(&mut $c, $crate::quirks::Import::$import) {
            return code;
        }
    };
    ($c:ident, $import:ident, Ok) => {
        if let Some(code) = $crate::imports::injected(&mut $c, $crate::quirks::Import::$import) {
            return Ok(code);
        }
    };
}

mod maps;
mod streams;

use maps::{edit_map, get_map_pairs, get_map_size, get_map_value, set_map_pairs};
use streams::{call_foreign_function, get_status, grpc_send, grpc_stream};

type Ctx<'a> = Caller<'a, VmState>;
type Call<T = u32> = wasmtime::Result<T>;

/// Defines every implemented host call in module `env`. Each first asks the host's quirks
/// ([`injected`]) whether to answer with a status instead of carrying the call out.
pub(crate) fn link(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", proxy_log)?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: Ctx, ret: u32| {
        fault!(c, GetLogLevel);
        status(write_u32(&mut c, ret, log_level()))
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx, ret: u32| {
            fault!(c, GetCurrentTime);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            status(write(&mut c, ret, &(now.as_nanos() as u64).to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx, ms: u32| {
            fault!(c, SetTickPeriod);
            c.data()
                .tick
                .send_replace(std::time::Duration::from_millis(u64::from(ms)));
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Ctx, id: u32| {
            fault!(c, SetEffectiveContext);
            let known = id == c.data().root_id || c.data().contexts.contains_key(&id);
            if known {
                c.data_mut().current = id;
            }
            if known {
                Status::Ok
            } else {
                Status::BadArgument
            }
            .code()
        },
    )?;
    linker.func_wrap("env", "proxy_get_buffer_bytes", get_buffer_bytes)?;
    linker.func_wrap("env", "proxy_get_buffer_status", get_buffer_status)?;
    linker.func_wrap("env", "proxy_get_header_map_pairs", get_map_pairs)?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", set_map_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_size", get_map_size)?;
    linker.func_wrap("env", "proxy_get_header_map_value", get_map_value)?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Ctx, t: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            fault!(c, ReplaceHeaderMapValue);
            if c.data().shared.quirks.replace_keeps_duplicates {
                edit_map(c, t, kp, kl, Some((vp, vl)), abi::map_replace_first)
            } else {
                edit_map(c, t, kp, kl, Some((vp, vl)), abi::map_replace)
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Ctx, t: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            fault!(c, AddHeaderMapValue);
            edit_map(c, t, kp, kl, Some((vp, vl)), abi::map_add)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx, t: u32, kp: u32, kl: u32| {
            fault!(c, RemoveHeaderMapValue);
            edit_map(c, t, kp, kl, None, |map, key, _| abi::map_remove(map, key))
        },
    )?;
    linker.func_wrap("env", "proxy_get_property", get_property)?;
    linker.func_wrap("env", "proxy_define_metric", define_metric)?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: Ctx, id: u32, offset: i64| {
            fault!(c, IncrementMetric);
            status(metrics(&c, |m| m.increment(id, offset)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: Ctx, id: u32, value: u64| {
            fault!(c, RecordMetric);
            status(metrics(&c, |m| m.record(id, value)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx, id: u32, ret: u32| {
            fault!(c, GetMetric);
            let value = metrics(&c, |m| m.get(id));
            status(value.and_then(|v| write(&mut c, ret, &v.to_le_bytes())))
        },
    )?;
    linker.func_wrap("env", "proxy_call_foreign_function", call_foreign_function)?;
    linker.func_wrap("env", "proxy_grpc_stream", grpc_stream)?;
    linker.func_wrap("env", "proxy_grpc_send", grpc_send)?;
    linker.func_wrap("env", "proxy_grpc_close", |mut c: Ctx, token: u32| {
        fault!(c, GrpcClose);
        match c.data_mut().grpc.open.get_mut(&token) {
            Some(stream) => {
                stream.close();
                Status::Ok
            }
            None => Status::NotFound,
        }
        .code()
    })?;
    linker.func_wrap("env", "proxy_grpc_cancel", |mut c: Ctx, token: u32| {
        fault!(c, GrpcCancel);
        match c.data_mut().grpc.open.remove(&token) {
            Some(_reset_on_drop) => Status::Ok,
            None => Status::NotFound,
        }
        .code()
    })?;
    linker.func_wrap("env", "proxy_get_status", get_status)?;
    Ok(())
}

/// The status the host's quirks ([`crate::HostQuirks::every_status`]) answer this call of
/// `import` with instead of carrying it out; `None` (always, without quirks): carry it out.
fn injected(c: &mut Ctx, import: Import) -> Option<u32> {
    let status = c.data_mut().faults.as_mut()?.next(import)?;
    c.data()
        .shared
        .injected_statuses
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(status.code())
}

/// Gives every function import of `module` a body answering Unimplemented. Call it first, on a
/// linker that allows shadowing, so WASI and `link` then replace the ones this host implements.
pub(crate) fn link_unimplemented(
    linker: &mut Linker<VmState>,
    module: &wasmtime::Module,
) -> wasmtime::Result<()> {
    for import in module.imports() {
        let wasmtime::ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let (module_name, name) = (import.module().to_string(), import.name().to_string());
        let results: Vec<wasmtime::ValType> = ty.results().collect();
        let reported = name.clone();
        linker.func_new(
            &module_name,
            &name,
            ty.clone(),
            move |c: Ctx, _params, out| {
                c.data().shared.unimplemented(&reported);
                for (slot, result) in out.iter_mut().zip(&results) {
                    *slot = match result {
                        wasmtime::ValType::I32 => Val::I32(Status::Unimplemented.code() as i32),
                        wasmtime::ValType::I64 => Val::I64(i64::from(Status::Unimplemented.code())),
                        other => Val::default_for_ty(other).unwrap_or(Val::I32(0)),
                    };
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

// === memory ===

fn bytes(c: &Ctx, ptr: u32, len: u32) -> Result<Vec<u8>, Status> {
    guest(c, ptr, len).map(<[u8]>::to_vec)
}

/// The guest's bytes at `ptr..ptr + len`, borrowed (no copy).
fn guest<'c>(c: &'c Ctx, ptr: u32, len: u32) -> Result<&'c [u8], Status> {
    let memory = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    slice(memory.data(c), ptr, len)
}

fn slice(memory: &[u8], ptr: u32, len: u32) -> Result<&[u8], Status> {
    let (start, end) = (ptr as usize, ptr as usize + len as usize);
    memory.get(start..end).ok_or(Status::InvalidMemoryAccess)
}

fn text(c: &Ctx, ptr: u32, len: u32) -> Result<String, Status> {
    bytes(c, ptr, len).map(|b| abi::lossy(&b))
}

fn write(c: &mut Ctx, ptr: u32, data: &[u8]) -> Result<(), Status> {
    let memory = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let start = ptr as usize;
    memory
        .data_mut(c)
        .get_mut(start..start + data.len())
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(data);
    Ok(())
}

fn write_u32(c: &mut Ctx, ptr: u32, value: u32) -> Result<(), Status> {
    write(c, ptr, &value.to_le_bytes())
}

/// Copies `data` into memory the module allocates and stores its address and size at the two
/// return pointers (address 0 and size 0 for empty data, as Envoy does).
fn copy_out(c: &mut Ctx, data: &[u8], ptr_ptr: u32, size_ptr: u32) -> Call<Result<(), Status>> {
    copy_out_with(c, data.len(), ptr_ptr, size_ptr, |out, _| {
        out.copy_from_slice(data);
        Ok(())
    })
}

/// [`copy_out`] for data that lives in the VM's state: the module allocates `len` bytes, then
/// `fill` writes them straight from the state into its memory (no copy on the host's heap).
/// `fill` must fill exactly `out` (it fails with InternalFailure when the data changed size
/// while the module was allocating).
fn copy_out_with(
    c: &mut Ctx,
    len: usize,
    ptr_ptr: u32,
    size_ptr: u32,
    fill: impl FnOnce(&mut [u8], &VmState) -> Result<(), Status>,
) -> Call<Result<(), Status>> {
    let mut address = 0;
    if len > 0 {
        let Some(malloc) = c.data().malloc.clone() else {
            return Ok(Err(Status::InvalidMemoryAccess));
        };
        address = malloc.call(&mut *c, len as u32)?;
        if address == 0 {
            return Ok(Err(Status::InvalidMemoryAccess));
        }
        let Some(memory) = c.data().memory else {
            return Ok(Err(Status::InvalidMemoryAccess));
        };
        let (memory, state) = memory.data_and_store_mut(&mut *c);
        let start = address as usize;
        let Some(out) = memory.get_mut(start..start + len) else {
            return Ok(Err(Status::InvalidMemoryAccess));
        };
        if let Err(e) = fill(out, state) {
            return Ok(Err(e));
        }
    }
    let Some(memory) = c.data().memory else {
        return Ok(Err(Status::InvalidMemoryAccess));
    };
    let memory = memory.data_mut(&mut *c);
    Ok(put_u32(memory, ptr_ptr, address).and_then(|()| put_u32(memory, size_ptr, len as u32)))
}

fn put_u32(memory: &mut [u8], ptr: u32, value: u32) -> Result<(), Status> {
    let start = ptr as usize;
    memory
        .get_mut(start..start + 4)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(&value.to_le_bytes());
    Ok(())
}

fn status(result: Result<(), Status>) -> u32 {
    result.err().unwrap_or(Status::Ok).code()
}

// === logging, buffers, properties, metrics ===

fn proxy_log(mut c: Ctx, level: u32, ptr: u32, len: u32) -> u32 {
    fault!(c, Log);
    let message = match text(&c, ptr, len) {
        Ok(message) => message,
        Err(e) => return e.code(),
    };
    let vm = c.data().vm;
    match level {
        0 => tracing::trace!(target: "fledge::wasm", vm, "{message}"),
        1 => tracing::debug!(target: "fledge::wasm", vm, "{message}"),
        2 => tracing::info!(target: "fledge::wasm", vm, "{message}"),
        3 => tracing::warn!(target: "fledge::wasm", vm, "{message}"),
        _ => tracing::error!(target: "fledge::wasm", vm, "{message}"),
    }
    c.data_mut().capture(&message);
    Status::Ok.code()
}

fn log_level() -> u32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => 0,
        LevelFilter::DEBUG => 1,
        LevelFilter::INFO => 2,
        LevelFilter::WARN => 3,
        LevelFilter::ERROR => 4,
        _ => 5,
    }
}

/// The buffer `kind` names: BadArgument for an id outside the ABI, NotFound for one this host
/// has no data for in the running callback (as Envoy's `getBuffer` returning null).
fn buffer(state: &VmState, kind: u32) -> Result<Bytes, Status> {
    match BufferType::from_abi(kind).ok_or(Status::BadArgument)? {
        BufferType::PluginConfiguration => Ok(state.shared.plugin_config.clone()),
        BufferType::VmConfiguration => Ok(state.shared.vm_config.clone()),
        BufferType::GrpcReceiveBuffer => Ok(state.grpc.receive_buffer.clone()),
        _ => Err(Status::NotFound),
    }
}

fn get_buffer_bytes(
    mut c: Ctx,
    kind: u32,
    start: u32,
    max: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> Call {
    fault!(c, GetBufferBytes, Ok);
    let data = match buffer(c.data(), kind) {
        Ok(data) => data,
        Err(e) => return Ok(e.code()),
    };
    let slice = abi::buffer_slice(&data, start, max);
    Ok(status(copy_out(&mut c, slice, ptr_ptr, size_ptr)?))
}

fn get_buffer_status(mut c: Ctx, kind: u32, len_ptr: u32, flags_ptr: u32) -> u32 {
    fault!(c, GetBufferStatus);
    let result = buffer(c.data(), kind)
        .and_then(|data| write_u32(&mut c, len_ptr, data.len() as u32))
        .and_then(|()| write_u32(&mut c, flags_ptr, 0));
    status(result)
}

fn get_property(mut c: Ctx, ptr: u32, len: u32, ptr_ptr: u32, size_ptr: u32) -> Call {
    fault!(c, GetProperty, Ok);
    let value = {
        let path = match guest(&c, ptr, len) {
            Ok(path) => path,
            Err(e) => return Ok(e.code()),
        };
        let state = c.data();
        let proxy = ProxyFacts {
            node: &state.shared.config.node,
            direction: state.shared.config.direction,
        };
        let request = state.contexts.get(&state.current).map(|h| RequestFacts {
            start_unix_ns: h.start_unix_ns,
            request_headers: &h.request_headers,
            response_headers: &h.response_headers,
            log: h.log.as_ref(),
        });
        properties::lookup(path, &proxy, request.as_ref())
    };
    match value {
        Some(value) => {
            let state = c.data_mut();
            let form = state
                .shared
                .quirks
                .properties
                .nth(state.properties_answered);
            state.properties_answered = state.properties_answered.wrapping_add(1);
            let mut buffer = properties::NumberBuffer::default();
            let bytes = value.encode(form, &mut buffer);
            Ok(status(copy_out(&mut c, bytes, ptr_ptr, size_ptr)?))
        }
        None => {
            c.data()
                .shared
                .property_misses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Status::NotFound.code())
        }
    }
}

fn metrics<T>(
    c: &Ctx,
    f: impl FnOnce(&mut crate::state::Metrics) -> Result<T, Status>,
) -> Result<T, Status> {
    let mut metrics = c
        .data()
        .shared
        .metrics
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    f(&mut metrics)
}

fn define_metric(mut c: Ctx, kind: u32, ptr: u32, len: u32, ret: u32) -> u32 {
    fault!(c, DefineMetric);
    let Some(kind) = MetricKind::from_abi(kind) else {
        return Status::BadArgument.code();
    };
    let id = text(&c, ptr, len).and_then(|name| metrics(&c, |m| Ok(m.define(kind, name))));
    status(id.and_then(|id| write_u32(&mut c, ret, id)))
}
