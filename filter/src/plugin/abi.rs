//! The proxy-wasm ABI 0.2.1 boundary, in both directions: every host call the filter makes
//! (declared here as imports from `env`, each wrapped in a safe function that returns the host's
//! status as an [`Answer`]), and every callback the filter exports (each a one-line hand-over to
//! [`super::contexts`]). Nothing here decides anything; callers decide what a status means.
//!
//! No status ever panics: any value the host returns, including ones the ABI does not list, is an
//! `Err(Status)` for the caller to absorb. Values the host hands over are buffers it allocated
//! through [`proxy_on_memory_allocate`]; they are taken over without copying.
//!
//! This is the only unsafe code in the workspace (besides two imports the benchmark's minimal
//! fixture, `sandbox/fixtures/minimal`, calls for its floors): the import declarations, the calls through
//! them with pointers to live locals and slices, the exported symbols, taking ownership of the
//! buffers the host allocated, and the module's allocator ([`Pool`]: free lists for the small
//! values every request takes from the host and gives back).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;

use super::contexts;

/// A host call's answer other than Ok: the raw `proxy_status_t`, whatever its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Status(pub(super) u32);

impl Status {
    /// NOT_FOUND: no such property, header, function or buffer; an ordinary answer to a read.
    pub(super) const NOT_FOUND: Status = Status(1);
}

/// What a host call answered: its value on Ok, the status otherwise.
pub(super) type Answer<T = ()> = Result<T, Status>;

/// `proxy_status_t` OK.
const OK: u32 = 0;

fn answer(status: u32) -> Answer {
    if status == OK {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// `proxy_log_level_t`.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)]
pub(super) enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// `proxy_map_type_t` HTTP_REQUEST_HEADERS.
pub(super) const REQUEST_HEADERS: u32 = 0;
/// `proxy_buffer_type_t` GRPC_CALL_MESSAGE.
pub(super) const GRPC_RECEIVE_BUFFER: u32 = 5;
/// `proxy_buffer_type_t` PLUGIN_CONFIGURATION.
pub(super) const PLUGIN_CONFIGURATION: u32 = 7;
/// `proxy_metric_type_t` COUNTER and GAUGE.
pub(super) const COUNTER: u32 = 0;
pub(super) const GAUGE: u32 = 1;

// === host calls (imports) ===

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    safe fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        return_results_data: *mut *mut u8,
        return_results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    safe fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    safe fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_grpc_stream(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        return_stream_id: *mut u32,
    ) -> u32;
    fn proxy_grpc_send(
        token: u32,
        message_data: *const u8,
        message_size: usize,
        end_stream: u32,
    ) -> u32;
    safe fn proxy_grpc_cancel(token: u32) -> u32;
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
}

pub(super) fn log(level: LogLevel, message: &str) -> Answer {
    // SAFETY: the message is a live slice for the call.
    answer(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

/// The host's clock, in nanoseconds since the epoch.
pub(super) fn current_time_ns() -> Answer<u64> {
    let mut ns = 0;
    // SAFETY: the return pointer points at a local.
    answer(unsafe { proxy_get_current_time_nanoseconds(&mut ns) })?;
    Ok(ns)
}

/// Asks for `proxy_on_tick` every `ms` milliseconds on the calling root context.
pub(super) fn set_tick_period_ms(ms: u32) -> Answer {
    answer(proxy_set_tick_period_milliseconds(ms))
}

/// Up to `max` bytes of buffer `kind` from `start`.
pub(super) fn buffer(kind: u32, start: usize, max: usize) -> Answer<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the return pointers point at locals.
    answer(unsafe { proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) })?;
    Ok(take(data, size))
}

/// The property at `path` (its tokens joined by NUL, e.g. `b"request\0duration"`).
pub(super) fn property(path: &[u8]) -> Answer<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the path is a live slice for the call, and the return pointers point at locals.
    answer(unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) })?;
    Ok(take(data, size))
}

/// The first value of header `name` in map `map`.
pub(super) fn header(map: u32, name: &str) -> Answer<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the key is a live slice for the call, and the return pointers point at locals.
    answer(unsafe {
        proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
    })?;
    Ok(take(data, size))
}

/// Sets header `name` of map `map` to `value` (added when absent).
pub(super) fn replace_header(map: u32, name: &str, value: &[u8]) -> Answer {
    // SAFETY: key and value are live slices for the call.
    answer(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Removes header `name` (every copy, as the ABI says) from map `map`.
pub(super) fn remove_header(map: u32, name: &str) -> Answer {
    // SAFETY: the key is a live slice for the call.
    answer(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// Calls the host's foreign function `name` with `arguments`; its results, if any.
pub(super) fn foreign_function(name: &str, arguments: &[u8]) -> Answer<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: name and arguments are live slices for the call, and the return pointers point at
    // locals.
    answer(unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        )
    })?;
    Ok(take(data, size))
}

/// Defines a metric of `kind` ([`COUNTER`], [`GAUGE`]); its id.
pub(super) fn define_metric(kind: u32, name: &str) -> Answer<u32> {
    let mut id = 0;
    // SAFETY: the name is a live slice for the call, and the return pointer points at a local.
    answer(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub(super) fn increment_metric(id: u32, offset: i64) -> Answer {
    answer(proxy_increment_metric(id, offset))
}

pub(super) fn record_metric(id: u32, value: u64) -> Answer {
    answer(proxy_record_metric(id, value))
}

/// Opens a gRPC stream to `upstream` (a cluster name or a serialized
/// `envoy.config.core.v3.GrpcService`, passed as bytes) for `/{service}/{method}`, with no
/// initial metadata; its token.
pub(super) fn grpc_stream(upstream: &[u8], service: &str, method: &str) -> Answer<u32> {
    let mut token = 0;
    let metadata: &[u8] = &[];
    // SAFETY: every input is a live slice for the call, and the return pointer points at a local.
    answer(unsafe {
        proxy_grpc_stream(
            upstream.as_ptr(),
            upstream.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            &mut token,
        )
    })?;
    Ok(token)
}

pub(super) fn grpc_send(token: u32, message: &[u8], end_stream: bool) -> Answer {
    // SAFETY: the message is a live slice for the call.
    answer(unsafe {
        proxy_grpc_send(
            token,
            message.as_ptr(),
            message.len(),
            u32::from(end_stream),
        )
    })
}

pub(super) fn grpc_cancel(token: u32) -> Answer {
    answer(proxy_grpc_cancel(token))
}

/// The status code and message of the gRPC stream whose close callback is running.
pub(super) fn grpc_status() -> Answer<(u32, Vec<u8>)> {
    let (mut code, mut data, mut size) = (0, std::ptr::null_mut(), 0);
    // SAFETY: the return pointers point at locals.
    answer(unsafe { proxy_get_status(&mut code, &mut data, &mut size) })?;
    Ok((code, take(data, size)))
}

/// Takes ownership of what the host wrote on Ok: `size` bytes it allocated through
/// [`proxy_on_memory_allocate`] (a boxed slice of exactly that size), or nothing for an empty
/// value or a null address.
fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated `size` bytes at `data` with this module's allocator, as a boxed
    // slice (length = capacity = size), and handed them over.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

// === callbacks (exports) ===

unsafe extern "C" {
    /// The static constructors wasm-ld collects; a reactor runs them from `_initialize`.
    fn __wasm_call_ctors();
}

/// The module's start: runs its constructors (a WASI reactor has no `_start`).
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    // SAFETY: called once by the host, before any other export, as a reactor's entry point.
    unsafe { __wasm_call_ctors() }
}

/// Marks the module as speaking proxy-wasm ABI 0.2.1; never called.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Allocates `size` bytes for the host to write a value into; the filter takes them back as a
/// boxed slice of exactly that size ([`take`]).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: the capacity is at least `size`, and `MaybeUninit` needs no initialisation.
    unsafe { buffer.set_len(size) };
    Box::into_raw(buffer.into_boxed_slice()).cast::<u8>()
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    contexts::create(context_id, parent_context_id);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> u32 {
    u32::from(contexts::vm_start(context_id))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> u32 {
    u32::from(contexts::configure(context_id, plugin_configuration_size))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    contexts::tick(context_id);
}

/// Returns CONTINUE (0): the filter never pauses a request.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    contexts::request_headers(context_id);
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_log(context_id: u32) {
    contexts::log(context_id);
}

// No `proxy_on_done`: the filter never holds a context past the host's end of it, which is what
// a host assumes of a module without the export (proxy-wasm-cpp-host's `onDone` returns true),
// and the call would cost every request one more crossing.

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    contexts::delete(context_id);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(
    context_id: u32,
    token: u32,
    _num_elements: usize,
) {
    contexts::grpc_heard(context_id, token);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive(context_id: u32, token: u32, message_size: usize) {
    contexts::grpc_message(context_id, token, message_size);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(
    _context_id: u32,
    _token: u32,
    _num_elements: usize,
) {
    // The close that follows says what the filter needs.
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_close(context_id: u32, token: u32, status_code: u32) {
    contexts::grpc_close(context_id, token, status_code);
}

// === allocator ===

/// Small allocations (what the host hands over per request, the authority, header values) come
/// from free lists, one per 16-byte size class up to 128 bytes, in front of the system allocator
/// (wasi-libc's dlmalloc): a request's values are taken and given back at the cost of a list
/// push and pop. A block is never handed back to dlmalloc: the lists never hold more blocks of a
/// class than were live at once. One VM is one thread.
struct Pool {
    lists: UnsafeCell<[*mut u8; POOL_CLASSES]>,
}

const POOL_STEP: usize = 16;
const POOL_CLASSES: usize = 8;

// SAFETY: a wasm32-wasip1 module runs on one thread; nothing shares the pool across threads.
unsafe impl Sync for Pool {}

#[global_allocator]
static POOL: Pool = Pool {
    lists: UnsafeCell::new([std::ptr::null_mut(); POOL_CLASSES]),
};

fn pool_class(layout: Layout) -> Option<usize> {
    let size = layout.size();
    (size > 0 && size <= POOL_STEP * POOL_CLASSES && layout.align() <= POOL_STEP)
        .then(|| (size - 1) / POOL_STEP)
}

/// The layout of a block of `class` (below [`POOL_CLASSES`]).
fn class_layout(class: usize) -> Layout {
    // SAFETY: the alignment is a power of two, and the size (at most 128 bytes) a non-zero
    // multiple of it that cannot overflow.
    unsafe { Layout::from_size_align_unchecked((class + 1) * POOL_STEP, POOL_STEP) }
}

// SAFETY: every block handed out is at least the layout's size and alignment (a class block is
// the class's full size, 16-aligned); blocks of a class go back only to that class's list,
// which only ever holds blocks allocated for it.
unsafe impl GlobalAlloc for Pool {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match pool_class(layout) {
            Some(class) => {
                // SAFETY: one thread, and no reference into the lists outlives this call.
                let lists = unsafe { &mut *self.lists.get() };
                let Some(head) = lists.get_mut(class) else {
                    return std::ptr::null_mut();
                };
                if head.is_null() {
                    // SAFETY: a valid non-zero layout.
                    return unsafe { System.alloc(class_layout(class)) };
                }
                let block = *head;
                // SAFETY: a block on the list holds the next block's address in its first
                // bytes (it is at least 16 bytes and 16-aligned).
                *head = unsafe { *block.cast::<*mut u8>() };
                block
            }
            // SAFETY: the caller's layout, as GlobalAlloc receives it.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match pool_class(layout) {
            Some(class) => {
                // SAFETY: one thread, and no reference into the lists outlives this call.
                let lists = unsafe { &mut *self.lists.get() };
                if let Some(head) = lists.get_mut(class) {
                    // SAFETY: the block is ours again and large enough for an address.
                    unsafe { *ptr.cast::<*mut u8>() = *head };
                    *head = ptr;
                }
            }
            // SAFETY: allocated by System with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align(new_size, layout.align());
        match new {
            Ok(new) if pool_class(layout).is_none() && pool_class(new).is_none() => {
                // SAFETY: both sizes outside the pool: System's own block, resized by System.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
            Ok(new) => {
                // SAFETY: a fresh block, the old one's bytes copied, the old one freed.
                unsafe {
                    let block = self.alloc(new);
                    if !block.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, block, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    block
                }
            }
            Err(_) => std::ptr::null_mut(),
        }
    }
}
