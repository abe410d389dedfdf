//! The VM's contexts by id, and the hand-over of each exported callback to the root context or
//! request it names. The host creates a root context (parent 0) per plugin configuration and a
//! request context (parent: its root) per HTTP request; both live here until `proxy_on_delete`.
//!
//! A callback for an unknown id, or one that arrives while another callback of this VM is still
//! running (a host calling back into the module from inside a host call), does nothing: no
//! callback here can fail or panic, whatever the host sends.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::request::Request;
use super::root::Root;

thread_local! {
    /// One VM is one thread: its contexts.
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

#[derive(Default)]
struct Contexts {
    /// Root contexts: one per plugin configuration sharing this VM, usually one.
    roots: Vec<(u32, Root)>,
    requests: HashMap<u32, Request, BuildHasherDefault<IdHasher>>,
}

impl Contexts {
    fn root(&mut self, id: u32) -> Option<&mut Root> {
        self.roots
            .iter_mut()
            .find(|(root, _)| *root == id)
            .map(|(_, root)| root)
    }

    /// The root context `id`, created if the host skipped `proxy_on_context_create` for it.
    fn root_or_new(&mut self, id: u32) -> Option<&mut Root> {
        if self.root(id).is_none() {
            self.roots.push((id, Root::new()));
        }
        self.root(id)
    }

    /// The root context a gRPC callback is for: the one it names, else the one holding `token`.
    fn root_of_stream(&mut self, id: u32, token: u32) -> Option<&mut Root> {
        let index = self
            .roots
            .iter()
            .position(|(root, _)| *root == id)
            .or_else(|| self.roots.iter().position(|(_, r)| r.holds(token)))?;
        self.roots.get_mut(index).map(|(_, root)| root)
    }
}

/// Runs `f` on the VM's contexts, unless a callback is already running.
fn with<T>(f: impl FnOnce(&mut Contexts) -> T) -> Option<T> {
    CONTEXTS.with(|contexts| {
        let mut contexts = contexts.try_borrow_mut().ok()?;
        Some(f(&mut contexts))
    })
}

pub(super) fn create(id: u32, parent: u32) {
    with(|c| {
        if parent == 0 {
            c.requests.remove(&id);
            c.roots.retain(|(root, _)| *root != id);
            c.roots.push((id, Root::new()));
        } else {
            let shared = c.root(parent).and_then(|root| root.shared());
            c.requests.insert(id, Request::new(shared));
        }
    });
}

pub(super) fn vm_start(root: u32) -> bool {
    with(|c| c.root_or_new(root).is_none_or(Root::on_vm_start)).unwrap_or(true)
}

pub(super) fn configure(root: u32, size: usize) -> bool {
    with(|c| {
        c.root_or_new(root)
            .is_some_and(|root| root.on_configure(size))
    })
    .unwrap_or(false)
}

pub(super) fn tick(root: u32) {
    with(|c| c.root(root).map(Root::on_tick));
}

pub(super) fn request_headers(id: u32) {
    with(|c| c.requests.get_mut(&id).map(Request::on_request_headers));
}

pub(super) fn log(id: u32) {
    with(|c| c.requests.get_mut(&id).map(Request::on_log));
}

pub(super) fn delete(id: u32) {
    with(|c| {
        if c.requests.remove(&id).is_none() {
            c.roots.retain(|(root, _)| *root != id);
        }
    });
}

pub(super) fn grpc_heard(root: u32, token: u32) {
    with(|c| {
        c.root_of_stream(root, token)
            .map(|r| r.on_grpc_heard(token))
    });
}

pub(super) fn grpc_message(root: u32, token: u32, size: usize) {
    with(|c| {
        c.root_of_stream(root, token)
            .map(|r| r.on_grpc_message(token, size))
    });
}

pub(super) fn grpc_close(root: u32, token: u32, status_code: u32) {
    with(|c| {
        c.root_of_stream(root, token)
            .map(|r| r.on_grpc_close(token, status_code))
    });
}

/// Context ids are small consecutive integers: a multiplicative hash spreads them over the
/// table's buckets at a fraction of SipHash's cost.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
