//! The two host reads every request makes several times, `proxy_get_property` and
//! `proxy_get_header_map_value`, called directly rather than through the SDK's `hostcalls`.
//! The SDK builds each property path in two heap vectors and panics on a status it does not
//! expect; here the path is a constant, the value is the one buffer the host
//! allocates (through the SDK's `proxy_on_memory_allocate`), and every status other than Ok is
//! an absent value. Everything else still goes through the SDK.
//!
//! The only unsafe code in the workspace: the two imports and taking ownership of the buffer
//! the host allocated, exactly as the SDK itself does.
#![allow(unsafe_code)]

use std::borrow::Cow;

use crate::routing;

/// `proxy_get_header_map_value`'s map id for the request headers (ABI 0.2.1).
const REQUEST_HEADERS: u32 = 0;
/// ABI status codes.
const OK: u32 = 0;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
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
}

/// The property at `path` (its tokens joined by NUL, e.g. `b"request\0duration"`), or `None`
/// when the host has none or refuses the call.
pub(super) fn property(path: &[u8]) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the path is a live slice for the call, and the return pointers point at locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    (status == OK).then(|| take(data, size))
}

/// The first value of request header `name`, or `None` when it is absent (or the call fails).
pub(super) fn request_header(name: &str) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the key is a live slice for the call, and the return pointers point at locals.
    let status = unsafe {
        proxy_get_header_map_value(
            REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        )
    };
    (status == OK).then(|| take(data, size))
}

/// The request's headers, read one by one from the host as the routing rules ask for them.
pub(super) struct RequestHeaders;

impl routing::Request for RequestHeaders {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let bytes = request_header(name)?;
        Some(Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|e| {
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        })))
    }
}

/// Takes ownership of what the host wrote: `size` bytes it allocated through
/// `proxy_on_memory_allocate` (a boxed slice of exactly that size), or nothing for an empty value.
fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated `size` bytes at `data` with the module's allocator, as a boxed
    // slice (length = capacity = size), and handed them over to the module.
    unsafe { Vec::from_raw_parts(data, size, size) }
}
