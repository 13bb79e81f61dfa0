//! The operators' listener (`--metrics-listen ADDR:PORT`): `GET /metrics` (Prometheus text of every
//! worker's counters) and `GET /healthz` on an address of their own, so that the counters need not be
//! public on the WebSocket port.
//!
//! One plain thread with a blocking std [`TcpListener`], off the workers' rings: it serves one connection
//! at a time, one request per connection (`Connection: close`), with a small request limit
//! ([`MAX_REQUEST_BYTES`], larger -> 431) and a deadline for the whole exchange ([`EXCHANGE_DEADLINE`]),
//! so a client that stalls holds it for that long at most. It only reads the shared counters; it never
//! writes a worker's counter (each has a single writer) and never touches a worker's ring.
//! [`AdminListener::stop`] (and dropping it) wakes the blocked `accept` and joins the thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::protocol::handshake::{parse_request, write_http_response, HandshakeError};

use super::metrics::{render_prometheus, WorkerMetrics};

/// Largest request (request line and headers) the listener reads; an operator's scrape is far smaller.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Time one connection has, from accept to the last byte of the answer.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(2);

/// The operators' listener could not bind its address: startup stops (the CLI exits with status 2).
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--metrics-listen {}: cannot bind: {}",
            self.addr, self.source
        )
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The bound listener, not yet serving (bound before the workers start, so a busy address fails fast).
pub struct BoundAdmin {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl BoundAdmin {
    /// Binds `addr` (port 0: an ephemeral port, see [`BoundAdmin::local_addr`]).
    pub fn bind(addr: SocketAddr) -> Result<BoundAdmin, BindError> {
        let bound = TcpListener::bind(addr).and_then(|listener| {
            let local_addr = listener.local_addr()?;
            Ok(BoundAdmin {
                listener,
                local_addr,
            })
        });
        bound.map_err(|source| BindError { addr, source })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts the serving thread.
    pub fn serve(self, metrics: Vec<Arc<WorkerMetrics>>) -> std::io::Result<AdminListener> {
        let listener = Arc::new(self.listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let listener = Arc::clone(&listener);
            let stopping = Arc::clone(&stopping);
            std::thread::Builder::new()
                .name("ringws-metrics".into())
                .spawn(move || accept_loop(&listener, &stopping, &metrics))?
        };
        Ok(AdminListener {
            listener,
            stopping,
            thread: Some(thread),
            local_addr: self.local_addr,
        })
    }
}

/// The running listener; stopped by [`AdminListener::stop`] or on drop.
pub struct AdminListener {
    /// Shared with the thread so that its descriptor stays open (and ours) until both are done.
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl AdminListener {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and waits for the thread (at most one exchange's deadline).
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        // SAFETY: the descriptor is a listening socket kept open by `self.listener` for the whole call.
        // shutdown(2) on a listening socket makes a blocked accept(2) return (EINVAL) on Linux.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        let _ = thread.join();
    }
}

impl Drop for AdminListener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, stopping: &AtomicBool, metrics: &[Arc<WorkerMetrics>]) {
    let mut failures_logged = false;
    while !stopping.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                failures_logged = false;
                if let Err(e) = serve_one(stream, metrics) {
                    tracing::debug!("metrics listener: {e}");
                }
            }
            Err(_) if stopping.load(Ordering::Acquire) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors and the like: say it once per run of failures, back off a little.
                if !failures_logged {
                    tracing::warn!("metrics listener: accept failed: {e}");
                    failures_logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request (within the deadline and the size limit) and writes its answer.
fn serve_one(mut stream: TcpStream, metrics: &[Arc<WorkerMetrics>]) -> std::io::Result<()> {
    let deadline = Instant::now() + EXCHANGE_DEADLINE;
    let mut buf = [0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let mut out = Vec::new();
    loop {
        match parse_request(&buf[..len], MAX_REQUEST_BYTES) {
            Ok(Some((request, _))) => {
                route(request.method(), request.path_only(), metrics, &mut out);
                break;
            }
            Ok(None) if len == buf.len() => {
                HandshakeError::HeadersTooLarge.write_response(&mut out);
                break;
            }
            Ok(None) => {}
            Err(error) => {
                error.write_response(&mut out);
                break;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "request deadline"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[len..])? {
            0 => return Ok(()),
            n => len += n,
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
    stream.write_all(&out)?;
    // Closing with unread input would reset the connection and could lose the answer (a 431 leaves the
    // rest of the request unread): end our side, then discard what the client still sends until it
    // closes, within the same deadline.
    stream.shutdown(std::net::Shutdown::Write)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        if stream.read(&mut buf)? == 0 {
            return Ok(());
        }
    }
}

/// The answer to `method path` on the operators' listener: `/metrics` and `/healthz` (GET or HEAD),
/// 405 for another method on them, 404 for any other path. Returns the status.
pub fn route(method: &str, path: &str, metrics: &[Arc<WorkerMetrics>], out: &mut Vec<u8>) -> u16 {
    let close = ("Connection", "close");
    let head = method == "HEAD";
    if !matches!(path, "/metrics" | "/healthz") {
        write_http_response(
            out,
            404,
            "text/plain; charset=utf-8",
            &[close],
            b"not found\n",
        );
        return 404;
    }
    if method != "GET" && !head {
        let body = b"method not allowed\n";
        let headers = [("Allow", "GET, HEAD"), close];
        write_http_response(out, 405, "text/plain; charset=utf-8", &headers, body);
        return 405;
    }
    let (status, content_type, body) = if path == "/metrics" {
        (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            render_prometheus(metrics).into_bytes(),
        )
    } else {
        match super::metrics::health(metrics) {
            Ok(()) => (200, "text/plain; charset=utf-8", b"ok\n".to_vec()),
            // A `--broker` link down.
            Err(reason) => (
                503,
                "text/plain; charset=utf-8",
                format!("{reason}\n").into_bytes(),
            ),
        }
    };
    let start = out.len();
    write_http_response(out, status, content_type, &[close], &body);
    if head {
        // Same headers, no body.
        out.truncate(out.len() - body.len());
        debug_assert!(out.len() > start);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(method: &str, path: &str, metrics: &[Arc<WorkerMetrics>]) -> (u16, String) {
        let mut out = Vec::new();
        let status = route(method, path, metrics, &mut out);
        (status, String::from_utf8(out).unwrap())
    }

    #[test]
    fn metrics_and_healthz_only() {
        let worker = Arc::new(WorkerMetrics::default());
        worker.websockets_total.add(3);
        let metrics = [worker];
        let (status, text) = answer("GET", "/metrics", &metrics);
        assert_eq!(status, 200);
        assert!(
            text.contains("ringws_websockets_total{worker=\"0\"} 3"),
            "{text}"
        );
        assert_eq!(answer("GET", "/healthz", &metrics).0, 200);
        let (status, text) = answer("HEAD", "/metrics", &metrics);
        assert_eq!(status, 200);
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert_eq!(answer("GET", "/", &metrics).0, 404);
        assert_eq!(answer("POST", "/publish", &metrics).0, 404);
        let (status, text) = answer("POST", "/metrics", &metrics);
        assert_eq!(status, 405);
        assert!(text.contains("Allow: GET, HEAD"));
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    #[test]
    fn serves_bounds_requests_and_stops() {
        let bound = BoundAdmin::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = bound.local_addr();
        assert_ne!(addr.port(), 0);
        let mut admin = bound
            .serve(vec![Arc::new(WorkerMetrics::default())])
            .unwrap();
        let text = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        assert!(text.ends_with("ok\n"), "{text}");
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES)
        );
        let text = exchange(addr, huge.as_bytes());
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        // A client that never finishes its request is dropped at the deadline, and the next is served.
        let started = Instant::now();
        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled.write_all(b"GET /met").unwrap();
        let text = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        assert!(started.elapsed() < EXCHANGE_DEADLINE + Duration::from_secs(2));
        drop(stalled);
        admin.stop();
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after stop"
        );
    }

    #[test]
    fn a_busy_address_is_a_bind_error_naming_the_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = BoundAdmin::bind(addr).err().expect("the address is taken");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("--metrics-listen {addr}: cannot bind")),
            "{text}"
        );
    }
}
