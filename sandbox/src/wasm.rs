//! The proxy-wasm host as the mesh's filter.

use crate::config::SandboxConfig;
use crate::mesh::Filters;
use crate::{Error, Result};

pub(crate) async fn filters(config: &SandboxConfig) -> Result<Filters> {
    match &config.filter {
        None => Ok(Filters::default()),
        Some(filter) => Err(Error::Filter {
            what: filter.module.display().to_string(),
            message: "the proxy-wasm host is not linked yet".into(),
        }),
    }
}
