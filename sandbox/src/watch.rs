//! The routes in force, loaded from the VirtualService file and reloaded when it changes. The
//! file is polled (modification time, length and inode, so an atomic rename over it is seen);
//! a file that no longer parses keeps the previous routes, and the failure is logged and
//! counted. Only the file system boundary lives here; parsing and routing are elsewhere.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use crate::route::RouteTable;
use crate::virtual_service::VirtualService;
use crate::{Error, Result};

/// The current route table and how reloading has gone.
#[derive(Debug)]
pub struct Routes {
    path: PathBuf,
    table: RwLock<Arc<RouteTable>>,
    seen: Mutex<Option<Fingerprint>>,
    reloads: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Routes {
    /// Loads `path`; it must exist and parse.
    pub fn load(path: &Path) -> Result<Arc<Routes>> {
        let fingerprint = fingerprint(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let table = read(path)?;
        log_loaded(path, &table, "loaded");
        Ok(Arc::new(Routes {
            path: path.to_owned(),
            table: RwLock::new(Arc::new(table)),
            seen: Mutex::new(Some(fingerprint)),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }))
    }

    /// The table requests are routed by now.
    pub fn current(&self) -> Arc<RouteTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Successful reloads since loading.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Changes of the file that did not parse (the previous routes were kept).
    pub fn failed_reloads(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the last failed reload failed, until a reload succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads the file if it changed since last seen. Returns whether the routes changed.
    pub fn check(&self) -> bool {
        let Ok(now) = fingerprint(&self.path) else {
            // Missing for a moment (being replaced): keep routing, look again next time.
            return false;
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == Some(now) {
                return false;
            }
            *seen = Some(now);
        }
        match read(&self.path) {
            Ok(table) => {
                log_loaded(&self.path, &table, "reloaded");
                *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "VirtualService file not reloaded; keeping the previous routes");
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                self.failures.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Checks the file every `interval` until the task is aborted.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let routes = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let routes = Arc::clone(&routes);
                let _ = tokio::task::spawn_blocking(move || routes.check()).await;
            }
        })
    }
}

fn read(path: &Path) -> Result<RouteTable> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let services = VirtualService::parse_all(&path.display().to_string(), &text)?;
    for service in &services {
        for field in service.ignored() {
            tracing::info!(virtual_service = %service.key(), %field, "not acted on by the sandbox mesh");
        }
    }
    RouteTable::new(&services)
}

fn log_loaded(path: &Path, table: &RouteTable, what: &str) {
    tracing::info!(path = %path.display(), virtual_services = table.len(), "VirtualService file {what}");
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let metadata = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Fingerprint {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode,
    })
}
