//! A sandbox backend: an HTTP server playing one version of a service. Each request waits per
//! the backend's latency distribution, then fails (500) with its error rate or answers 200; the
//! response names the version in [`VERSION_HEADER`]. Requests are counted live or shadow (a
//! mirrored copy's Host ends in `-shadow`). The behaviour changes while it runs, through
//! [`Backend::set_behaviour`] or `PUT /__backend` with a JSON [`Behaviour`]; `GET /__backend`
//! answers the version, behaviour and counts. Admin requests are not counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::latency::Behaviour;
use crate::listener::{Listener, authority_of, text};
use crate::route::host_of;
use crate::{Error, Result};

/// The response header naming the version that served a request.
pub const VERSION_HEADER: &str = "x-sandbox-version";

/// The admin path (not counted, never delayed).
pub const ADMIN_PATH: &str = "/__backend";

/// How to start a backend.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub listen: SocketAddr,
    pub version: String,
    pub behaviour: Behaviour,
    /// Seed of the delay/error draws (fixed seeds make runs repeatable).
    pub seed: u64,
}

impl BackendConfig {
    /// A backend for `version` on a free local port that answers at once.
    pub fn new(version: impl Into<String>) -> BackendConfig {
        BackendConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            version: version.into(),
            behaviour: Behaviour::default(),
            seed: 1,
        }
    }

    pub fn behaviour(mut self, behaviour: Behaviour) -> BackendConfig {
        self.behaviour = behaviour;
        self
    }
}

/// Requests a backend has answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendCounts {
    /// Requests whose Host does not end in `-shadow`.
    pub live: u64,
    /// Mirrored copies (Host ends in `-shadow`).
    pub shadow: u64,
    /// Requests answered with a 500 by the error rate.
    pub errors: u64,
}

/// A running backend. Cheap to clone; stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Backend {
    shared: Arc<Shared>,
    listener: Arc<Listener>,
}

#[derive(Debug)]
struct Shared {
    version: String,
    behaviour: RwLock<Behaviour>,
    rng: Mutex<StdRng>,
    live: AtomicU64,
    shadow: AtomicU64,
    errors: AtomicU64,
}

#[derive(Serialize)]
struct Status<'a> {
    version: &'a str,
    behaviour: Behaviour,
    counts: BackendCounts,
}

impl Backend {
    pub async fn start(config: BackendConfig) -> Result<Backend> {
        config
            .behaviour
            .validate()
            .map_err(|message| Error::Config {
                file: format!("backend {}", config.version),
                field: "behaviour".into(),
                message,
            })?;
        let shared = Arc::new(Shared {
            version: config.version,
            behaviour: RwLock::new(config.behaviour),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            live: AtomicU64::new(0),
            shadow: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let handler = {
            let shared = Arc::clone(&shared);
            move |request| serve(Arc::clone(&shared), request)
        };
        let listener = Listener::start(config.listen, handler).await?;
        tracing::info!(version = %shared.version, addr = %listener.addr(), "backend listening");
        Ok(Backend {
            shared,
            listener: Arc::new(listener),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    pub fn version(&self) -> &str {
        &self.shared.version
    }

    pub fn behaviour(&self) -> Behaviour {
        *self
            .shared
            .behaviour
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Changes latency and error rate for the requests that arrive from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) -> Result<()> {
        behaviour.validate().map_err(|message| Error::Config {
            file: format!("backend {}", self.shared.version),
            field: "behaviour".into(),
            message,
        })?;
        *self
            .shared
            .behaviour
            .write()
            .unwrap_or_else(|e| e.into_inner()) = behaviour;
        Ok(())
    }

    pub fn counts(&self) -> BackendCounts {
        self.shared.counts()
    }
}

impl Shared {
    fn counts(&self) -> BackendCounts {
        BackendCounts {
            live: self.live.load(Ordering::Relaxed),
            shadow: self.shadow.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    fn behaviour(&self) -> Behaviour {
        *self.behaviour.read().unwrap_or_else(|e| e.into_inner())
    }
}

async fn serve(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() == ADMIN_PATH {
        return admin(&shared, request).await;
    }
    let shadow = host_of(&authority_of(&request)).ends_with("-shadow");
    // Read the whole request, as a real service would, before answering.
    let _ = request.into_body().collect().await;
    let (delay, fail) = {
        let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
        shared.behaviour().draw(&mut *rng)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let counter = if shadow { &shared.shadow } else { &shared.live };
    counter.fetch_add(1, Ordering::Relaxed);
    let mut response = if fail {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        text(500, format!("{} failed\n", shared.version))
    } else {
        text(200, format!("served by {}\n", shared.version))
    };
    if let Ok(value) = http::HeaderValue::from_str(&shared.version) {
        response.headers_mut().insert(VERSION_HEADER, value);
    }
    response
}

async fn admin(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() == Method::PUT {
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return text(400, format!("reading the body: {e}\n")),
        };
        let behaviour: Behaviour = match serde_json::from_slice(&body) {
            Ok(behaviour) => behaviour,
            Err(e) => return text(400, format!("body is not a Behaviour: {e}\n")),
        };
        if let Err(e) = behaviour.validate() {
            return text(400, format!("{e}\n"));
        }
        *shared.behaviour.write().unwrap_or_else(|e| e.into_inner()) = behaviour;
        tracing::info!(version = %shared.version, ?behaviour, "backend behaviour changed");
    }
    let status = Status {
        version: &shared.version,
        behaviour: shared.behaviour(),
        counts: shared.counts(),
    };
    let mut response = text(200, serde_json::to_vec(&status).unwrap_or_default());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
