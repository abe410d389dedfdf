//! `fledge-sandbox`: the local mesh, backends and load generator from the command line.

fn main() {}
