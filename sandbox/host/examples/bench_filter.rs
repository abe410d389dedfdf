//! Runs the filter benchmark (fledge's filter against the minimal fixture in one host, on the
//! routed path and on the path of a host no rollout concerns) and prints per-request times.
//! `cargo run --release -p fledge-sandbox-host --example bench_filter [REQUESTS]
//! [filter|minimal|calls|pairs [routed|unrouted]] [--headers sidecar|mesh]`; the modules come from
//! FLEDGE_FILTER_WASM / FLEDGE_MINIMAL_WASM or `./dev wasm`. With a module named, only that
//! module runs, once, on one path (routed unless named), for profiling:
//! `valgrind --tool=callgrind --toggle-collect='*bench::requests*' …/bench_filter 20000 filter
//! unrouted` counts the instructions of its request loop alone. `--headers mesh` gives every
//! request the sandbox load's five headers instead of an Istio sidecar's eighteen. `calls` and
//! `pairs` run the minimal fixture configured to make only the host calls of fledge's routed
//! request, or the fewest a filter that routes and measures could make: the floors beneath it.

use fledge_sandbox_host::bench::{self, BenchConfig, HeaderSet, Module, RequestPath};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = BenchConfig::from_env()?;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--headers" => {
                config.headers = match args.next().as_deref() {
                    Some("sidecar") => HeaderSet::Sidecar,
                    Some("mesh") => HeaderSet::Mesh,
                    other => anyhow::bail!("--headers takes sidecar or mesh, not {other:?}"),
                }
            }
            other if other.starts_with("--") => {
                anyhow::bail!("unknown option '{other}' (--headers sidecar|mesh)")
            }
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    if let Some(requests) = positional.next() {
        config.requests = requests.parse()?;
    }
    if let Some(module) = positional.next() {
        let module = match module.as_str() {
            "filter" => Module::Filter,
            "minimal" => Module::Minimal,
            "calls" => Module::Calls,
            "pairs" => Module::Pairs,
            other => anyhow::bail!("unknown module '{other}' (filter, minimal, calls or pairs)"),
        };
        let path = match positional.next().as_deref() {
            None | Some("routed") => RequestPath::Routed,
            Some("unrouted") => RequestPath::Unrouted,
            Some(other) => anyhow::bail!("unknown path '{other}' (routed or unrouted)"),
        };
        let p = bench::profile(&config, module, path, config.requests).await?;
        println!(
            "{module:?}, {path:?}: {} requests, {:?} headers, {:.0} ns/request ({} versioned, {} traps, {} property misses)",
            config.requests, config.headers, p.ns, p.versioned, p.traps, p.property_misses
        );
        return Ok(());
    }
    let report = bench::run(&config).await?;
    println!(
        "filter benchmark: {} requests per module and path, {} workers, median of {} rounds, {:?} headers",
        report.requests, config.workers, config.rounds, config.headers
    );
    println!("{report}");
    Ok(())
}
