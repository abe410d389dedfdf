//! The example manifests of `manifests/examples/` (one Rollout per strategy and its
//! VirtualService), and a temporary folder holding copies of some of them: what a local store
//! reads, or what a test loads into a stand-in API server.

use std::path::PathBuf;

/// The `manifests/examples/` folder of the repository.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples")
}

/// A fresh temporary folder (removed when dropped) holding copies of these example files.
pub fn folder(files: &[&str]) -> tempfile::TempDir {
    let folder = tempfile::tempdir().expect("a temporary folder");
    for file in files {
        let from = dir().join(file);
        std::fs::copy(&from, folder.path().join(file))
            .unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
    folder
}
