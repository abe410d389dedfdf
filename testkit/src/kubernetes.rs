//! Kubernetes' own schemas, offline: objects checked with `kubernetes-validate --strict` (PyPI;
//! `./dev test` installs it when missing).

use std::process::Command;

use serde_json::Value;

/// Runs `kubernetes-validate --strict` on `objects`; its output when any fails (or warns).
pub fn validate(objects: &[&Value]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    let file = dir.path().join("objects.yaml");
    let text: Vec<String> = objects
        .iter()
        .map(|o| serde_norway::to_string(o).unwrap_or_else(|e| panic!("{o}: {e}")))
        .collect();
    std::fs::write(&file, text.join("---\n")).map_err(|e| format!("{file:?}: {e}"))?;
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("kubernetes-validate: {e} (./dev test installs it)"));
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && !said.contains("WARN") {
        Ok(())
    } else {
        Err(said)
    }
}
