//! fledge's end-to-end tests live in `tests/tests/e2e/`: each runs a whole rollout on this
//! machine (the agent in-process, the mesh with the real filter `.wasm`, backends, load)
//! through the same code as `fledge-demo` (crate and binary), and asserts what a user sees.
