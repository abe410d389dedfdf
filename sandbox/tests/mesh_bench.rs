//! The mesh benchmark runs end to end: each setup's proxy process starts, every request of the
//! measured round is answered 200, and the setups come back in order. Its CPU figures are
//! recorded in BENCHMARKS.md from a release run, not asserted here.

use fledge_sandbox::bench::{MeshBenchConfig, Setup, run};
use fledge_sandbox_host::bench::{filter_module, minimal_module};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setup_runs_in_its_own_proxy_process_and_answers_every_request() {
    let dir = std::env::temp_dir().join(format!("fledge-mesh-bench-test-{}", std::process::id()));
    let config = MeshBenchConfig {
        proxy: env!("CARGO_BIN_EXE_fledge-sandbox").into(),
        filter: filter_module().unwrap_or_else(|e| panic!("{e}")),
        minimal: minimal_module().unwrap_or_else(|e| panic!("{e}")),
        rate: 500.0,
        requests: 200,
        warmup: 50,
        rounds: 1,
        dir: dir.clone(),
    };
    let rows = run(&config).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let setups: Vec<Setup> = rows.iter().map(|row| row.setup).collect();
    assert_eq!(setups, Setup::ALL);
    for row in &rows {
        assert_eq!((row.sent, row.ok), (200, 200), "{row:?}");
    }
}
