//! proxy-wasm host. (Being built.)
