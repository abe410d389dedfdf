//! A proxy-wasm module compiled and linked, ready to instantiate once per VM. Compiling is the
//! expensive step (seconds for fledge's filter), so a process compiles each module file once:
//! hosts started on the same file (same path, size and modification time) share its compiled
//! code, as Envoy shares one compiled module between the VMs of all its workers.
//!
//! Not here: instances, contexts or calls (`vm.rs`), or what any import does (`imports.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use wasmtime::{Engine, InstancePre, Linker, Module};

use crate::state::VmState;
use crate::{HostError, Result, imports};

/// The module compiled and linked once, instantiated per VM.
pub(crate) struct Program {
    engine: Engine,
    pre: InstancePre<VmState>,
}

/// Which file a compiled module came from.
type FileKey = (PathBuf, u64, Option<SystemTime>);

/// A file's compiled module, once compiled.
type Slot = Arc<Mutex<Option<Module>>>;

/// One engine per process (compiled code belongs to an engine), and each file's compiled module.
fn compiled() -> &'static (Engine, Mutex<HashMap<FileKey, Slot>>) {
    static COMPILED: OnceLock<(Engine, Mutex<HashMap<FileKey, Slot>>)> = OnceLock::new();
    COMPILED.get_or_init(|| (engine(), Mutex::default()))
}

/// Wasmtime's defaults, and with `FLEDGE_WASM_PERFMAP=1` a `perf-<pid>.map` in the system's
/// temporary folder naming the compiled functions, so profilers (perf, or callgrind's addresses
/// by hand) can tell the module's functions apart.
fn engine() -> Engine {
    let mut config = wasmtime::Config::new();
    if std::env::var_os("FLEDGE_WASM_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config).unwrap_or_default()
}

impl Program {
    /// Compiles `path` (or reuses this process's compilation of the same file) and links it
    /// against this host's imports.
    pub(crate) fn compile(path: &Path) -> Result<Self> {
        let module = module(path)?;
        let engine = module.engine().clone();
        let link_error = |e: wasmtime::Error| HostError::Link {
            path: path.into(),
            message: format!("{e:#}"),
        };
        let mut linker = Linker::new(&engine);
        linker.allow_shadowing(true);
        imports::link_unimplemented(&mut linker, &module).map_err(link_error)?;
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut VmState| &mut s.wasi)
            .map_err(link_error)?;
        imports::link(&mut linker).map_err(link_error)?;
        let has_abi = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"]
            .iter()
            .any(|name| module.get_export(name).is_some());
        if !has_abi {
            return Err(HostError::Export {
                path: path.into(),
                export: "proxy_abi_version_0_2_1",
                message: "missing: not a proxy-wasm ABI 0.2.x module".into(),
            });
        }
        let pre = linker.instantiate_pre(&module).map_err(link_error)?;
        Ok(Self { engine, pre })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn pre(&self) -> &InstancePre<VmState> {
        &self.pre
    }
}

/// The compiled module of the file at `path`. Hosts starting together on one file wait for a
/// single compilation; a failed one is not kept, so the next start tries again.
fn module(path: &Path) -> Result<Module> {
    let read_error = |source| HostError::ReadModule {
        path: path.into(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let (engine, files) = compiled();
    let slot = Arc::clone(
        files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default(),
    );
    // Held while compiling, so concurrent starts on this file compile it once.
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(module) = slot.as_ref() {
        return Ok(module.clone());
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let module = Module::new(engine, &bytes).map_err(|e| HostError::Compile {
        path: path.into(),
        message: format!("{e:#}"),
    })?;
    *slot = Some(module.clone());
    Ok(module)
}
