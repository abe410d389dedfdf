//! The host's public face: `FilterHost` owns one VM per worker and hands each request to the
//! next VM round robin; `RequestHandle` carries one request through its remaining callbacks.
//!
//! Every failure inside a VM fails open: the request keeps the headers it had, the trap is
//! counted and logged, and that VM is recreated (new instance, vm start and configure again).
//! Each VM has a tick task firing at the period the plugin set; gRPC events come back through
//! `deliver`. Nothing here knows what the plugin does with any of it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmtime_wasi::WasiCtxBuilder;

use crate::grpc::{Deliver, GrpcEvent};
use crate::program::Program;
use crate::quirks::{Faults, HostQuirks};
use crate::state::{GrpcState, Shared, VmState};
use crate::vm::Vm;
use crate::{HostConfig, HostError, HostStats, LogInfo, Result};

/// How long a VM that could not be recreated stays out before the next attempt.
const RECREATE_BACKOFF: Duration = Duration::from_secs(1);

/// A running plugin: cheap to clone; every clone drives the same VMs.
#[derive(Clone)]
pub struct FilterHost {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    program: Program,
    slots: Vec<Slot>,
    next: AtomicUsize,
    ticks: Mutex<Vec<JoinHandle<()>>>,
}

struct Slot {
    state: Mutex<SlotState>,
    tick: watch::Sender<Duration>,
}

struct SlotState {
    /// `None` while a VM could not be recreated: its requests pass unfiltered.
    vm: Option<Vm>,
    /// Bumped whenever the VM is replaced, so late callbacks for the old one are dropped.
    generation: u64,
    retry_at: Option<Instant>,
}

impl FilterHost {
    /// Compiles the module, starts `workers` VMs (vm start + configure each) and their ticks.
    /// Fails with the plugin's own log lines when it refuses its configuration.
    pub async fn start(config: HostConfig) -> Result<FilterHost> {
        Self::start_with(config, HostQuirks::default()).await
    }

    /// [`FilterHost::start`] for a host that answers as `quirks` say instead of as Envoy does.
    pub async fn start_with(config: HostConfig, quirks: HostQuirks) -> Result<FilterHost> {
        if config.workers == 0 {
            return Err(HostError::NoWorkers);
        }
        let program = Program::compile(&config.module)?;
        let workers = config.workers;
        let shared = Arc::new(Shared::new(
            config,
            quirks,
            tokio::runtime::Handle::current(),
        ));
        let slots = (0..workers)
            .map(|_| Slot {
                state: Mutex::new(SlotState {
                    vm: None,
                    generation: 0,
                    retry_at: None,
                }),
                tick: watch::channel(Duration::ZERO).0,
            })
            .collect();
        let inner = Arc::new(Inner {
            shared,
            program,
            slots,
            next: AtomicUsize::new(0),
            ticks: Mutex::default(),
        });
        for index in 0..workers {
            let vm = inner.new_vm(index, 0)?;
            inner.lock(index).vm = Some(vm);
        }
        let ticks = (0..workers)
            .map(|index| {
                let ticks = inner.slots[index].tick.subscribe();
                tokio::spawn(tick_loop(Arc::downgrade(&inner), index, ticks))
            })
            .collect();
        *inner.ticks.lock().unwrap_or_else(|e| e.into_inner()) = ticks;
        Ok(FilterHost { inner })
    }

    /// Runs `proxy_on_request_headers` on the next VM with `headers` (pseudo headers first) and
    /// leaves the plugin's edits in them. The headers move into the request's context (where the
    /// plugin reads and edits them, and later callbacks still find them) and are copied back
    /// once. Never fails the request: on a trap the headers come back as the plugin left them
    /// (Envoy's plugins edit the live header map, so edits made before a trap stay there too),
    /// and the VM is recreated.
    pub fn on_request_headers(&self, headers: &mut Vec<(String, String)>) -> RequestHandle {
        let inner = &self.inner;
        inner.shared.requests.fetch_add(1, Ordering::Relaxed);
        let index = inner.next.fetch_add(1, Ordering::Relaxed) % inner.slots.len();
        let mut slot = inner.lock(index);
        inner.revive(&mut slot, index);
        let mut handle = RequestHandle {
            inner: Arc::clone(inner),
            vm: index,
            generation: slot.generation,
            context: 0,
            route_cache_cleared: false,
        };
        let Some(vm) = slot.vm.as_mut() else {
            return handle;
        };
        let (context, result) = vm.request_headers(headers);
        match result {
            Ok(()) => {
                if let Some(http) = vm.context(context) {
                    handle.route_cache_cleared = http.route_cache_cleared;
                    handle.context = context;
                }
            }
            Err(e) => inner.trapped(&mut slot, index, "proxy_on_request_headers", &e),
        }
        handle
    }

    /// Counters since start, and the plugin's metrics.
    pub fn stats(&self) -> HostStats {
        let shared = &self.inner.shared;
        let open_contexts = (0..self.inner.slots.len())
            .map(|index| {
                self.inner
                    .lock(index)
                    .vm
                    .as_ref()
                    .map_or(0, Vm::open_contexts)
            })
            .sum();
        let ticking = self
            .inner
            .slots
            .iter()
            .filter(|slot| !slot.tick.borrow().is_zero())
            .count();
        HostStats {
            open_contexts,
            ticking,
            requests: shared.requests.load(Ordering::Relaxed),
            traps: shared.traps.load(Ordering::Relaxed),
            vm_restarts: shared.vm_restarts.load(Ordering::Relaxed),
            unimplemented_calls: shared.unimplemented_calls.load(Ordering::Relaxed),
            property_misses: shared.property_misses.load(Ordering::Relaxed),
            injected_statuses: shared.injected_statuses.load(Ordering::Relaxed),
            unimplemented_imports: shared
                .unimplemented_imports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
            metrics: shared
                .metrics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot(),
        }
    }

    /// Stops the ticks, runs done/delete on every root context and resets every gRPC stream.
    pub async fn shutdown(self) {
        let ticks =
            std::mem::take(&mut *self.inner.ticks.lock().unwrap_or_else(|e| e.into_inner()));
        for tick in ticks {
            tick.abort();
        }
        for index in 0..self.inner.slots.len() {
            let mut slot = self.inner.lock(index);
            slot.generation += 1;
            if let Some(mut vm) = slot.vm.take()
                && let Err(e) = vm.shutdown()
            {
                tracing::warn!(vm = index, error = %format!("{e:#}"), "proxy-wasm VM trapped while shutting down");
            }
        }
    }
}

impl Inner {
    fn lock(&self, index: usize) -> MutexGuard<'_, SlotState> {
        self.slots[index]
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn new_vm(self: &Arc<Self>, index: usize, generation: u64) -> Result<Vm> {
        let weak = Arc::downgrade(self);
        let deliver: Deliver = Arc::new(move |token, event| {
            if let Some(inner) = weak.upgrade() {
                inner.deliver(index, generation, token, event);
            }
        });
        let tick = self.slots[index].tick.clone();
        tick.send_replace(Duration::ZERO);
        let state = VmState {
            wasi: WasiCtxBuilder::new().inherit_stderr().build_p1(),
            shared: Arc::clone(&self.shared),
            vm: index,
            memory: None,
            malloc: None,
            root_id: 0,
            current: 0,
            contexts: Default::default(),
            grpc: GrpcState::default(),
            deliver,
            tick,
            captured: Some(Vec::new()),
            faults: self.shared.quirks.every_status.map(Faults::new),
            properties_answered: 0,
        };
        Vm::create(&self.program, state, &self.shared.config.module)
    }

    /// Fails open after a trap: counts and logs it, and replaces the VM.
    fn trapped(
        self: &Arc<Self>,
        slot: &mut SlotState,
        index: usize,
        phase: &str,
        error: &wasmtime::Error,
    ) {
        self.shared.traps.fetch_add(1, Ordering::Relaxed);
        tracing::error!(vm = index, phase, error = %format!("{error:#}"), "proxy-wasm VM trapped; the request continues unfiltered and the VM is recreated");
        slot.vm = None;
        slot.retry_at = None;
        self.revive(slot, index);
    }

    /// Recreates a missing VM, at most once per backoff period.
    fn revive(self: &Arc<Self>, slot: &mut SlotState, index: usize) {
        if slot.vm.is_some() || slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        slot.generation += 1;
        match self.new_vm(index, slot.generation) {
            Ok(vm) => {
                slot.vm = Some(vm);
                slot.retry_at = None;
                self.shared.vm_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(vm = index, "proxy-wasm VM recreated");
            }
            Err(e) => {
                slot.retry_at = Some(Instant::now() + RECREATE_BACKOFF);
                tracing::error!(vm = index, error = %e, "proxy-wasm VM could not be recreated; its requests pass unfiltered");
            }
        }
    }

    fn deliver(self: &Arc<Self>, index: usize, generation: u64, token: u32, event: GrpcEvent) {
        let mut slot = self.lock(index);
        if slot.generation != generation {
            return;
        }
        if let Some(vm) = slot.vm.as_mut()
            && let Err(e) = vm.grpc(token, event)
        {
            self.trapped(&mut slot, index, "gRPC callback", &e);
        }
    }

    fn tick(self: &Arc<Self>, index: usize) {
        let mut slot = self.lock(index);
        if let Some(vm) = slot.vm.as_mut()
            && let Err(e) = vm.tick()
        {
            self.trapped(&mut slot, index, "proxy_on_tick", &e);
        }
    }
}

async fn tick_loop(inner: Weak<Inner>, index: usize, mut period: watch::Receiver<Duration>) {
    loop {
        let every = *period.borrow_and_update();
        if every.is_zero() {
            if period.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = period.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.tick(index);
    }
}

/// One request's passage through a VM. Dropping it without `on_log` still ends its context.
pub struct RequestHandle {
    inner: Arc<Inner>,
    vm: usize,
    generation: u64,
    /// 0 when the request runs unfiltered (no VM, or it trapped).
    context: u32,
    route_cache_cleared: bool,
}

impl RequestHandle {
    /// Whether the plugin called the `clear_route_cache` foreign function for this request.
    pub fn route_cache_cleared(&self) -> bool {
        self.route_cache_cleared
    }

    /// Runs `proxy_on_response_headers` (`:status` first) and leaves the plugin's edits in them.
    pub fn on_response_headers(&mut self, headers: &mut Vec<(String, String)>) {
        if self.context == 0 {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let mut slot = inner.lock(self.vm);
        let current = slot.generation == self.generation;
        let Some(vm) = slot.vm.as_mut().filter(|_| current) else {
            self.context = 0;
            return;
        };
        match vm.response_headers(self.context, headers) {
            Ok(()) => {}
            Err(e) => {
                self.context = 0;
                inner.trapped(&mut slot, self.vm, "proxy_on_response_headers", &e);
            }
        }
    }

    /// Runs `proxy_on_log` with what the proxy knows of the completed request, then done and
    /// delete for its context.
    pub fn on_log(mut self, info: LogInfo) {
        self.finish(Some(info));
    }

    fn finish(&mut self, log: Option<LogInfo>) {
        let context = std::mem::take(&mut self.context);
        if context == 0 {
            return;
        }
        let mut slot = self.inner.lock(self.vm);
        if slot.generation != self.generation {
            return;
        }
        if let Some(vm) = slot.vm.as_mut()
            && let Err(e) = vm.finish(context, log)
        {
            self.inner.trapped(&mut slot, self.vm, "proxy_on_log", &e);
        }
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.finish(None);
    }
}
