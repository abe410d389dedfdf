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
    requests: Requests,
}

/// Slots in [`Requests`]' direct table (a power of two).
const SLOTS: usize = 64;

/// Request contexts by id. Hosts number contexts consecutively, so the requests in flight in a
/// VM mostly sit in distinct slots of a small table indexed by the id's low bits (an array
/// access per callback); an id whose slot is taken goes to a hash map. An id is in one place
/// at most.
struct Requests {
    slots: Vec<Option<(u32, Request)>>,
    spill: HashMap<u32, Request, BuildHasherDefault<IdHasher>>,
}

impl Default for Requests {
    fn default() -> Requests {
        let mut slots = Vec::new();
        slots.resize_with(SLOTS, || None);
        Requests {
            slots,
            spill: HashMap::default(),
        }
    }
}

impl Requests {
    fn slot(&mut self, id: u32) -> Option<&mut Option<(u32, Request)>> {
        self.slots.get_mut(id as usize % SLOTS)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Request> {
        if self
            .slots
            .get(id as usize % SLOTS)
            .is_some_and(|slot| slot.as_ref().is_some_and(|(held, _)| *held == id))
        {
            return self
                .slot(id)
                .and_then(|slot| slot.as_mut().map(|(_, request)| request));
        }
        self.spill.get_mut(&id)
    }

    /// Drops request `id` where it lies; `false` if there is none.
    fn remove(&mut self, id: u32) -> bool {
        if let Some(slot) = self.slot(id)
            && slot.as_ref().is_some_and(|(held, _)| *held == id)
        {
            *slot = None;
            return true;
        }
        // Hashing and probing an empty map still costs a lookup: the spill is usually empty.
        !self.spill.is_empty() && self.spill.remove(&id).is_some()
    }

    /// Puts request `id` in its slot when that is free or already its own (replacing it), else
    /// in the spill; an older copy in the spill goes first.
    fn insert(&mut self, id: u32, request: Request) {
        if !self.spill.is_empty() {
            self.spill.remove(&id);
        }
        match self.slot(id) {
            Some(slot) if slot.as_ref().is_none_or(|(held, _)| *held == id) => {
                *slot = Some((id, request));
            }
            _ => {
                self.spill.insert(id, request);
            }
        }
    }
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
            c.requests.remove(id);
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
    with(|c| c.requests.get_mut(id).map(Request::on_request_headers));
}

pub(super) fn log(id: u32) {
    with(|c| c.requests.get_mut(id).map(Request::on_log));
}

pub(super) fn delete(id: u32) {
    with(|c| {
        if !c.requests.remove(id) {
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
