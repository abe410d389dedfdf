//! The built module, checked as a host would see it: it speaks proxy-wasm ABI 0.2.1, exports the
//! callbacks fledge relies on, and imports only from `env` (exactly the proxy-wasm host calls it
//! makes) and `wasi_snapshot_preview1`.
//!
//! It reads the .wasm that `./dev wasm` builds; it does not build it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

fn module_path() -> PathBuf {
    std::env::var_os("FLEDGE_FILTER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip1/wasm/fledge_filter.wasm")
        })
}

struct Module {
    exports: BTreeSet<String>,
    imports: BTreeSet<(String, String)>,
}

fn module() -> Module {
    let path = module_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the filter module {}: {e}. Build it first with `./dev wasm` \
             (or set FLEDGE_FILTER_WASM)",
            path.display()
        )
    });
    let mut exports = BTreeSet::new();
    let mut imports = BTreeSet::new();
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.expect("a valid wasm module") {
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.expect("an export");
                    if export.kind == ExternalKind::Func {
                        exports.insert(export.name.to_owned());
                    }
                }
            }
            Payload::ImportSection(section) => {
                for import in section {
                    let import = import.expect("an import");
                    assert!(
                        matches!(import.ty, TypeRef::Func(_)),
                        "{}.{} is not a function import",
                        import.module,
                        import.name
                    );
                    imports.insert((import.module.to_owned(), import.name.to_owned()));
                }
            }
            _ => {}
        }
    }
    Module { exports, imports }
}

#[test]
fn exports_the_proxy_wasm_abi_and_fledge_callbacks() {
    let m = module();
    let required = [
        "proxy_abi_version_0_2_1",
        "_initialize",
        "proxy_on_memory_allocate",
        "proxy_on_context_create",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_tick",
        "proxy_on_request_headers",
        "proxy_on_log",
        "proxy_on_delete",
        "proxy_on_grpc_receive_initial_metadata",
        "proxy_on_grpc_receive",
        "proxy_on_grpc_receive_trailing_metadata",
        "proxy_on_grpc_close",
    ];
    let missing: Vec<_> = required
        .iter()
        .filter(|e| !m.exports.contains(**e))
        .collect();
    assert!(
        missing.is_empty(),
        "missing exports {missing:?}; has {:?}",
        m.exports
    );
    let other_abis: Vec<_> = m
        .exports
        .iter()
        .filter(|e| e.starts_with("proxy_abi_version_") && *e != "proxy_abi_version_0_2_1")
        .collect();
    assert!(other_abis.is_empty(), "{other_abis:?}");
    // Callbacks the filter has nothing to do in: without the export a host skips the call
    // (a done context is then done), and every request saves a crossing into the VM.
    let needless: Vec<_> = ["proxy_on_done", "proxy_on_response_headers"]
        .into_iter()
        .filter(|e| m.exports.contains(*e))
        .collect();
    assert!(needless.is_empty(), "{needless:?}");
}

/// The host calls the filter makes, each declared by the filter itself (`plugin/abi.rs`) as a
/// proxy-wasm ABI 0.2.1 function. Nothing else from `env`: no SDK links calls the filter never
/// makes, so a host only has to provide these.
const CALLED: [&str; 16] = [
    "proxy_log",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_get_property",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_call_foreign_function",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_get_status",
];

#[test]
fn imports_only_proxy_wasm_and_wasi() {
    let m = module();
    let mut unexpected = Vec::new();
    for (module, name) in &m.imports {
        match module.as_str() {
            "env" if CALLED.contains(&name.as_str()) => {}
            "wasi_snapshot_preview1" => {}
            _ => unexpected.push(format!("{module}.{name}")),
        }
    }
    assert!(unexpected.is_empty(), "unexpected imports: {unexpected:?}");
    for needed in [
        "proxy_grpc_stream",
        "proxy_grpc_send",
        "proxy_call_foreign_function",
        "proxy_get_property",
        "proxy_replace_header_map_value",
    ] {
        let import = ("env".to_owned(), needed.to_owned());
        assert!(m.imports.contains(&import), "{needed} not imported");
    }
    // Every declared call is used (an unused one would not be linked in).
    let env: BTreeSet<&str> = m
        .imports
        .iter()
        .filter(|(module, _)| module == "env")
        .map(|(_, name)| name.as_str())
        .collect();
    assert_eq!(env, CALLED.into_iter().collect());
}
