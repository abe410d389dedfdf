//! Runs the filter benchmark (fledge's filter against the minimal fixture in one host) and
//! prints per-request times. `cargo run --release -p fledge-sandbox-host --example bench_filter
//! [REQUESTS] [filter|minimal] [--realistic]`; the modules come from FLEDGE_FILTER_WASM / FLEDGE_MINIMAL_WASM
//! or `./dev wasm`. With a module named, only that module runs, once, for profiling:
//! `valgrind --tool=callgrind --toggle-collect='*bench::requests*' …/bench_filter 4000 filter`
//! counts the instructions of its request loop alone. `--realistic` gives every request fifteen
//! headers (with a 300-byte cookie) instead of the mesh's five.

use fledge_sandbox_host::bench::{self, BenchConfig, HeaderSet, Module};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = BenchConfig::from_env()?;
    let (flags, positional): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    for flag in flags {
        match flag.as_str() {
            "--realistic" => config.headers = HeaderSet::Realistic,
            other => anyhow::bail!("unknown option '{other}' (--realistic)"),
        }
    }
    let mut args = positional.into_iter();
    if let Some(requests) = args.next() {
        config.requests = requests.parse()?;
    }
    if let Some(module) = args.next() {
        let module = match module.as_str() {
            "filter" => Module::Filter,
            "minimal" => Module::Minimal,
            other => anyhow::bail!("unknown module '{other}' (filter or minimal)"),
        };
        let ns = bench::profile(&config, module, config.requests).await?;
        println!(
            "{module:?}: {} requests, {:?} headers, {ns:.0} ns/request",
            config.requests, config.headers
        );
        return Ok(());
    }
    let report = bench::run(&config).await?;
    println!(
        "filter benchmark: {} requests per module, {} workers, median of {} rounds, {:?} headers",
        report.requests, config.workers, config.rounds, config.headers
    );
    println!("  fledge filter   {:>8.0} ns/request", report.filter_ns);
    println!("  minimal module  {:>8.0} ns/request", report.minimal_ns);
    println!("  ratio           {:>8.2}", report.ratio);
    println!("  traps           {:>8}", report.traps);
    println!("  property misses {:>8}", report.property_misses);
    Ok(())
}
