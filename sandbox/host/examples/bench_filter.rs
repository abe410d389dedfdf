//! Runs the filter benchmark (fledge's filter against the minimal fixture in one host) and
//! prints per-request times. `cargo run --release -p fledge-sandbox-host --example bench_filter
//! [REQUESTS]`; the modules come from FLEDGE_FILTER_WASM / FLEDGE_MINIMAL_WASM or `./dev wasm`.

use fledge_sandbox_host::bench::{self, BenchConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = BenchConfig::from_env()?;
    if let Some(requests) = std::env::args().nth(1) {
        config.requests = requests.parse()?;
    }
    let report = bench::run(&config).await?;
    println!(
        "filter benchmark: {} requests per module, {} workers, median of {} rounds",
        report.requests, config.workers, config.rounds
    );
    println!("  fledge filter   {:>8.0} ns/request", report.filter_ns);
    println!("  minimal module  {:>8.0} ns/request", report.minimal_ns);
    println!("  ratio           {:>8.2}", report.ratio);
    println!("  traps           {:>8}", report.traps);
    Ok(())
}
