//! One proxy-wasm VM: a wasmtime store and instance of the shared compiled module, its root
//! context, and the calls into it in Envoy's order (`_initialize`, context create, vm start,
//! configure; per request context create, request headers, response headers, log, done, delete;
//! ticks and gRPC callbacks on the context that asked for them).
//!
//! A `Vm` does not decide what happens after a trap: every call returns wasmtime's error and the
//! host (`host.rs`) fails open and recreates the VM.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::grpc::GrpcEvent;
use crate::program::Program;
use crate::state::{HttpContext, VmState};
use crate::{HostError, LogInfo, Result};

/// The root context's id: Envoy's first context in a fresh VM.
const ROOT_CONTEXT: u32 = 1;

type F<P, R> = Option<TypedFunc<P, R>>;

struct Exports {
    context_create: F<(u32, u32), ()>,
    vm_start: F<(u32, u32), u32>,
    configure: F<(u32, u32), u32>,
    tick: F<u32, ()>,
    request_headers: F<(u32, u32, u32), u32>,
    response_headers: F<(u32, u32, u32), u32>,
    log: F<u32, ()>,
    done: F<u32, u32>,
    delete: F<u32, ()>,
    grpc_initial_metadata: F<(u32, u32, u32), ()>,
    grpc_receive: F<(u32, u32, u32), ()>,
    grpc_trailing_metadata: F<(u32, u32, u32), ()>,
    grpc_close: F<(u32, u32, u32), ()>,
}

pub(crate) struct Vm {
    store: Store<VmState>,
    on: Exports,
    next_context: u32,
}

impl Vm {
    /// Instantiates the program and runs it up to a configured root context.
    pub(crate) fn create(program: &Program, state: VmState, path: &Path) -> Result<Self> {
        let index = state.vm;
        let trap = |phase: &'static str| {
            move |e: wasmtime::Error| HostError::Trap {
                vm: index,
                phase,
                message: format!("{e:#}"),
            }
        };
        let mut store = Store::new(program.engine(), state);
        let instance = program
            .pre()
            .instantiate(&mut store)
            .map_err(trap("instantiation"))?;
        let export_error = |export: &'static str, message: String| HostError::Export {
            path: path.into(),
            export,
            message,
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| export_error("memory", "missing".into()))?;
        let malloc = match typed(&instance, &mut store, "proxy_on_memory_allocate") {
            Ok(Some(f)) => Some(f),
            Ok(None) => {
                typed(&instance, &mut store, "malloc").map_err(|m| export_error("malloc", m))?
            }
            Err(m) => return Err(export_error("proxy_on_memory_allocate", m)),
        };
        if malloc.is_none() {
            return Err(export_error(
                "proxy_on_memory_allocate",
                "missing (and no `malloc`)".into(),
            ));
        }
        let data = store.data_mut();
        data.memory = Some(memory);
        data.malloc = malloc.map(Arc::new);
        data.root_id = ROOT_CONTEXT;
        data.current = ROOT_CONTEXT;
        macro_rules! export {
            ($name:literal) => {
                typed(&instance, &mut store, $name).map_err(|m| export_error($name, m))?
            };
        }
        let on = Exports {
            context_create: export!("proxy_on_context_create"),
            vm_start: export!("proxy_on_vm_start"),
            configure: export!("proxy_on_configure"),
            tick: export!("proxy_on_tick"),
            request_headers: export!("proxy_on_request_headers"),
            response_headers: export!("proxy_on_response_headers"),
            log: export!("proxy_on_log"),
            done: export!("proxy_on_done"),
            delete: export!("proxy_on_delete"),
            grpc_initial_metadata: export!("proxy_on_grpc_receive_initial_metadata"),
            grpc_receive: export!("proxy_on_grpc_receive"),
            grpc_trailing_metadata: export!("proxy_on_grpc_receive_trailing_metadata"),
            grpc_close: export!("proxy_on_grpc_close"),
        };
        // A WASI reactor initializes itself in `_initialize`; a command in `_start`.
        for entry in ["_initialize", "_start"] {
            if let Some(init) = typed::<(), ()>(&instance, &mut store, entry)
                .map_err(|m| export_error("_initialize", m))?
            {
                init.call(&mut store, ()).map_err(trap("_initialize"))?;
                break;
            }
        }
        let mut vm = Self {
            store,
            on,
            next_context: ROOT_CONTEXT + 1,
        };
        call(&mut vm.store, &vm.on.context_create, (ROOT_CONTEXT, 0))
            .map_err(trap("proxy_on_context_create"))?;
        let config = Arc::clone(&vm.store.data().shared);
        let refused = |what, callback, vm_ref: &mut Vm| HostError::Refused {
            vm: index,
            what,
            callback,
            log: vm_ref
                .store
                .data_mut()
                .captured
                .take()
                .unwrap_or_default()
                .join("; "),
        };
        let size = config.config.vm_config.len() as u32;
        if call(&mut vm.store, &vm.on.vm_start, (ROOT_CONTEXT, size))
            .map_err(trap("proxy_on_vm_start"))?
            == Some(0)
        {
            return Err(refused("VM configuration", "proxy_on_vm_start", &mut vm));
        }
        let size = config.config.plugin_config.len() as u32;
        if call(&mut vm.store, &vm.on.configure, (ROOT_CONTEXT, size))
            .map_err(trap("proxy_on_configure"))?
            == Some(0)
        {
            return Err(refused(
                "plugin configuration",
                "proxy_on_configure",
                &mut vm,
            ));
        }
        vm.store.data_mut().captured = None;
        Ok(vm)
    }

    /// Creates a request context, moves `headers` into it and runs `proxy_on_request_headers`;
    /// `headers` then holds what the plugin left (the context keeps its copy for later
    /// callbacks). After a trap they come back as the plugin left them, without a copy.
    pub(crate) fn request_headers(
        &mut self,
        headers: &mut Vec<(String, String)>,
    ) -> (u32, wasmtime::Result<()>) {
        let context = self.next_context;
        let result = self.run_request_headers(std::mem::take(headers));
        self.give_back(context, headers, result.is_ok(), |h| &mut h.request_headers);
        (context, result)
    }

    /// Hands a context's header map back to the caller: a copy when the context lives on, the
    /// map itself after a trap (the VM is about to go).
    fn give_back(
        &mut self,
        context: u32,
        headers: &mut Vec<(String, String)>,
        lives_on: bool,
        map: impl FnOnce(&mut HttpContext) -> &mut Vec<(String, String)>,
    ) {
        if let Some(http) = self.store.data_mut().contexts.get_mut(&context) {
            let held = map(http);
            if lives_on {
                headers.clone_from(held);
            } else {
                *headers = std::mem::take(held);
            }
        }
    }

    fn run_request_headers(&mut self, headers: Vec<(String, String)>) -> wasmtime::Result<()> {
        let context = self.next_context;
        self.next_context = self.next_context.checked_add(1).unwrap_or(ROOT_CONTEXT + 1);
        let count = headers.len() as u32;
        let start_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let state = self.store.data_mut();
        state.contexts.insert(
            context,
            HttpContext {
                start_unix_ns,
                request_headers: headers,
                ..HttpContext::default()
            },
        );
        state.current = context;
        call(
            &mut self.store,
            &self.on.context_create,
            (context, ROOT_CONTEXT),
        )?;
        self.store.data_mut().current = context;
        call(
            &mut self.store,
            &self.on.request_headers,
            (context, count, 0),
        )?;
        Ok(())
    }

    pub(crate) fn open_contexts(&self) -> usize {
        self.store.data().contexts.len()
    }

    pub(crate) fn context(&self, context: u32) -> Option<&HttpContext> {
        self.store.data().contexts.get(&context)
    }

    /// Runs `proxy_on_response_headers` on `headers` (moved into the context, handed back as
    /// the plugin left them, as for request headers). A context that is gone leaves them as
    /// they are.
    pub(crate) fn response_headers(
        &mut self,
        context: u32,
        headers: &mut Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let count = headers.len() as u32;
        let state = self.store.data_mut();
        let Some(http) = state.contexts.get_mut(&context) else {
            return Ok(());
        };
        http.response_headers = std::mem::take(headers);
        state.current = context;
        let result = call(
            &mut self.store,
            &self.on.response_headers,
            (context, count, 0),
        )
        .map(drop);
        self.give_back(context, headers, result.is_ok(), |h| {
            &mut h.response_headers
        });
        result
    }

    /// Ends a request context in the ABI's order: `proxy_on_done`, `proxy_on_log` (when the
    /// request completed and `info` says how), `proxy_on_delete`.
    pub(crate) fn finish(&mut self, context: u32, log: Option<LogInfo>) -> wasmtime::Result<()> {
        let state = self.store.data_mut();
        let Some(http) = state.contexts.get_mut(&context) else {
            return Ok(());
        };
        let completed = log.is_some();
        http.log = log;
        state.current = context;
        call(&mut self.store, &self.on.done, context)?;
        if completed {
            self.store.data_mut().current = context;
            call(&mut self.store, &self.on.log, context)?;
        }
        self.store.data_mut().current = context;
        call(&mut self.store, &self.on.delete, context)?;
        self.store.data_mut().contexts.remove(&context);
        Ok(())
    }

    pub(crate) fn tick(&mut self) -> wasmtime::Result<()> {
        self.store.data_mut().current = ROOT_CONTEXT;
        call(&mut self.store, &self.on.tick, ROOT_CONTEXT).map(drop)
    }

    /// Runs the plugin's callback for a gRPC stream event; events of cancelled streams are dropped.
    pub(crate) fn grpc(&mut self, token: u32, event: GrpcEvent) -> wasmtime::Result<()> {
        let state = self.store.data_mut();
        let Some(context) = state.grpc.open.get(&token).map(|s| s.context) else {
            return Ok(());
        };
        if context != ROOT_CONTEXT && !state.contexts.contains_key(&context) {
            state.grpc.open.remove(&token);
            return Ok(());
        }
        state.current = context;
        let result = match event {
            GrpcEvent::InitialMetadata(metadata) => {
                let count = metadata.len() as u32;
                state.grpc.initial_metadata = metadata;
                call(
                    &mut self.store,
                    &self.on.grpc_initial_metadata,
                    (context, token, count),
                )
            }
            GrpcEvent::Message(message) => {
                let size = message.len() as u32;
                state.grpc.receive_buffer = message;
                call(
                    &mut self.store,
                    &self.on.grpc_receive,
                    (context, token, size),
                )
            }
            GrpcEvent::TrailingMetadata(metadata) => {
                let count = metadata.len() as u32;
                state.grpc.trailing_metadata = metadata;
                call(
                    &mut self.store,
                    &self.on.grpc_trailing_metadata,
                    (context, token, count),
                )
            }
            GrpcEvent::Close(code, message) => {
                // Keep the task's handle alive until the callback ran: dropping it resets the stream.
                let _stream = state.grpc.open.remove(&token);
                state.grpc.status = (code, message);
                let result = call(&mut self.store, &self.on.grpc_close, (context, token, code));
                self.store.data_mut().grpc.status.1.clear();
                result
            }
        };
        let grpc = &mut self.store.data_mut().grpc;
        grpc.receive_buffer = bytes::Bytes::new();
        grpc.initial_metadata.clear();
        grpc.trailing_metadata.clear();
        result.map(drop)
    }

    /// Envoy's VM teardown: done and delete on the root context; open streams are reset.
    pub(crate) fn shutdown(&mut self) -> wasmtime::Result<()> {
        self.store.data_mut().current = ROOT_CONTEXT;
        call(&mut self.store, &self.on.done, ROOT_CONTEXT)?;
        call(&mut self.store, &self.on.delete, ROOT_CONTEXT)?;
        self.store.data_mut().grpc.open.clear();
        Ok(())
    }
}

fn typed<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<VmState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, String> {
    match instance.get_func(&mut *store, name) {
        Some(func) => func
            .typed(&*store)
            .map(Some)
            .map_err(|e| format!("wrong signature: {e:#}")),
        None => Ok(None),
    }
}

/// Calls an export if the module has it (a module may leave out callbacks it does not need).
fn call<P: WasmParams, R: WasmResults>(
    store: &mut Store<VmState>,
    f: &F<P, R>,
    params: P,
) -> wasmtime::Result<Option<R>> {
    match f {
        Some(f) => f.call(store, params).map(Some),
        None => Ok(None),
    }
}
