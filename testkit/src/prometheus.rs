//! A real Prometheus for tests and the demo: the `prometheus` binary (Debian's package; `./dev
//! test` installs it when missing; `FLEDGE_PROMETHEUS` names another) started on a loopback
//! port with a temporary configuration and storage folder, scraping every second an
//! [`Exporter`] whose values the caller sets. Dropping a [`Prometheus`] kills it and removes its
//! folder.
//!
//! Plain `std` (threads and blocking sockets), so any test or binary can use it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary: `FLEDGE_PROMETHEUS`, else `prometheus` on the PATH.
pub fn binary() -> String {
    std::env::var("FLEDGE_PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

/// Whether the binary runs here.
pub fn installed() -> bool {
    Command::new(binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `/metrics` endpoint in Prometheus's text format, serving the values last set, on a thread
/// of its own until the process ends. Clones set the same values.
#[derive(Clone)]
pub struct Exporter {
    addr: SocketAddr,
    values: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl Exporter {
    /// Listens on a free loopback port, serving nothing until values are set.
    pub fn start() -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let values: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
        let served = values.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let body: String = served
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(series, v)| format!("{series} {v}\n"))
                    .collect();
                let _ = read_head(&mut conn);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Exporter { addr, values }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets one series (`cpu_usage{version="v2"}`) to `value` from the next scrape on.
    pub fn set(&self, series: &str, value: f64) {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(series.to_owned(), value);
    }
}

/// A running Prometheus scraping some targets every second.
pub struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second and waits until it is ready (at most
    /// 30 s); the error says what failed, with Prometheus's own output.
    pub fn start(targets: &[SocketAddr]) -> Result<Prometheus, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free loopback port: {e}"))?
            .port();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: fledge-test\n    scrape_interval: 1s\n    \
             static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).map_err(|e| format!("{config_file:?}: {e}"))?;
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("{log:?}: {e}"))?;
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {}: {e} (install Debian's `prometheus` package, or set \
                     FLEDGE_PROMETHEUS to the binary)",
                    binary()
                )
            })?;
        let mut prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("prometheus exited with {status}: {said}"));
            }
            if get(&prometheus.url, "/-/ready").is_ok_and(|(code, _)| code == 200) {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let _ = prometheus.child.kill();
                return Err(format!("prometheus was not ready within 30s: {said}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`, the address its query API answers on.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits (at most `timeout`) until an instant query of `series` (a selector, sent
    /// unencoded: no spaces or `&`) answers a sample: the exporter has been scraped.
    pub fn wait_for(&self, series: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let path = format!("/api/v1/query?query={}", series.replace('"', "%22"));
        loop {
            match get(&self.url, &path) {
                Ok((200, body)) if body.contains("\"value\"") => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                other => return Err(format!("{series} never appeared: {other:?}")),
            }
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET: the status code and the body.
fn get(base: &str, path: &str) -> Result<(u16, String), String> {
    let host = base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(host).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Reads a request's head (up to the blank line), which the exporter does not need.
fn read_head(conn: &mut TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut seen = Vec::new();
    let mut buf = [0; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
