//! Zero-downtime restart: a running server hands its listening sockets to a new process over a Unix
//! control socket, and the new process serves them from then on.
//!
//! The old server listens on its control socket (`--control-socket PATH`); a new `ringws serve
//! --takeover PATH` connects to it. One connection, one handover:
//!
//! 1. old -> new: the line `ringws-takeover 1 <n>` with its `n` listeners attached (`SCM_RIGHTS`): the
//!    same sockets, each with its accept queue, not copies; connections waiting in them are not lost.
//! 2. new -> old: `ready`, once every worker of the new process accepts on them.
//! 3. old: stops accepting (every worker's accepts cancelled in the kernel), stops its operators'
//!    listener, begins its drain (1001 spread over `--drain-window`), closes its control socket, then
//!    answers `handed-over` and closes the connection.
//! 4. new: arms its accepts again (`ServerHandle::rearm_accepts`), then binds `--metrics-listen` and the
//!    control socket's path. io_uring's accept waits as an exclusive waiter, so a connection's one
//!    wakeup may have gone to an accept of the old process that was then cancelled; a fresh accept takes
//!    what waits in the queue without a wakeup.
//!
//! Until step 3 both processes accept from the same queues, so a client connecting meanwhile is served
//! by one of them (one the old process accepted is served, and closed at the end of its window). A new process that fails before `ready` (or a handover that times out) leaves the old
//! one serving as before. Passing the sockets, rather than binding new SO_REUSEPORT listeners beside the
//! old ones, is what keeps the queues: closing a SO_REUSEPORT listener resets the connections waiting in
//! its own queue (unless `net.ipv4.tcp_migrate_req = 1`).
//!
//! This module owns the control socket and the exchange; it never touches a worker (the server's
//! `ServerHandle::hand_over` starts the drain) and never closes a listener that is the last descriptor
//! of its socket while connections may wait in it.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::reactor::sys;

/// The protocol's version, in the first line.
const VERSION: u32 = 1;
/// The longest line either side sends.
const MAX_LINE: usize = 128;
/// How long the new process waits for the old one's listeners, and the old one for `ready`.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a takeover (either side) failed. The CLI exits with status 2 on the ones the operator's flags
/// cause (a busy control socket, a worker count or address that cannot serve the listeners) and 1 on the
/// others.
#[derive(Debug)]
pub enum TakeoverError {
    /// The control socket path cannot be used: another server answers on it, or it is not a socket.
    ControlSocketBusy { path: PathBuf, reason: String },
    /// The control socket cannot be bound or reached.
    Io { path: PathBuf, source: io::Error },
    /// The old server answered something else than the protocol's lines (or nothing in time).
    Protocol { path: PathBuf, message: String },
    /// The old server is shutting down and hands nothing over.
    ShuttingDown { path: PathBuf },
    /// Fewer workers than the listeners handed over: a listener without a worker would hold its
    /// queue unserved, and closing it would reset the connections waiting in it.
    FewerWorkers { workers: usize, listeners: usize },
    /// The listeners handed over are on another address than `--bind`/`--port` ask for.
    OtherAddress {
        inherited: std::net::SocketAddr,
        requested: std::net::SocketAddr,
    },
    /// A descriptor handed over is not a listening TCP socket.
    NotAListener,
}

impl TakeoverError {
    /// Whether the operator's flags are at fault (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            TakeoverError::ControlSocketBusy { .. }
                | TakeoverError::FewerWorkers { .. }
                | TakeoverError::OtherAddress { .. }
        )
    }
}

impl std::fmt::Display for TakeoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TakeoverError::ControlSocketBusy { path, reason } => {
                write!(f, "--control-socket {}: {reason}", path.display())
            }
            TakeoverError::Io { path, source } => {
                write!(f, "control socket {}: {source}", path.display())
            }
            TakeoverError::Protocol { path, message } => {
                write!(f, "takeover through {}: {message}", path.display())
            }
            TakeoverError::ShuttingDown { path } => write!(
                f,
                "takeover through {}: the running server is shutting down and hands nothing over",
                path.display()
            ),
            TakeoverError::FewerWorkers { workers, listeners } => write!(
                f,
                "--workers {workers} is fewer than the {listeners} listeners the running server hands \
                 over: use --workers {listeners} or more (or set net.ipv4.tcp_migrate_req = 1, so that \
                 closing the extra listeners resets no waiting connection)"
            ),
            TakeoverError::OtherAddress {
                inherited,
                requested,
            } => write!(
                f,
                "the listeners handed over are on {inherited}, not on {requested} (--bind/--port): give \
                 the same address, or port 0 to take the one handed over"
            ),
            TakeoverError::NotAListener => {
                write!(f, "a descriptor handed over is not a listening TCP socket")
            }
        }
    }
}

impl std::error::Error for TakeoverError {}

/// The running server's listeners as the control socket hands them over: duplicates of the workers'
/// descriptors, held until the server hands over or shuts down (then dropped, so that a shutdown closes
/// the sockets as before).
#[derive(Debug, Default)]
pub struct ListenerSet {
    fds: Mutex<Option<Vec<OwnedFd>>>,
}

impl ListenerSet {
    pub(crate) fn new(fds: Vec<OwnedFd>) -> ListenerSet {
        ListenerSet {
            fds: Mutex::new(Some(fds)),
        }
    }

    /// Drops the duplicates: nothing can be handed over any more.
    pub(crate) fn clear(&self) {
        self.fds.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Sends the header line and the listeners (or that there are none to send) over `stream`.
    fn send(&self, stream: &UnixStream) -> io::Result<bool> {
        let guard = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(fds) => {
                let line = format!("ringws-takeover {VERSION} {}\n", fds.len());
                let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
                sys::send_fds(stream.as_fd(), line.as_bytes(), &borrowed)?;
                Ok(true)
            }
            None => {
                (&*stream).write_all(b"shutting-down\n")?;
                Ok(false)
            }
        }
    }
}

/// The old server's side: the bound control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    identity: FileIdentity,
}

/// Where the control socket was bound, to remove the path at exit only if it is still this server's
/// socket. After a handover the new process binds its own there: the old one removes nothing then.
#[derive(Debug, Clone)]
pub struct ControlSocketPath {
    path: PathBuf,
    identity: FileIdentity,
}

impl ControlSocketPath {
    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }

    /// Removes the socket file if it is still the one this server bound.
    pub fn remove_if_ours(&self) {
        if file_identity(&self.path).is_some_and(|identity| identity == self.identity) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A file's device, inode and change time: an inode number freed by a removal may be reused at once
/// (tmpfs), the change time to the nanosecond tells the files apart.
type FileIdentity = (u64, u64, i64, i64);

fn file_identity(path: &Path) -> Option<FileIdentity> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

impl ControlSocket {
    /// Binds `path`. A stale socket file (nothing answers on it) is replaced; a socket another server
    /// answers on, or a path that is not a socket, is an error and nothing is removed.
    pub fn bind(path: &Path) -> Result<ControlSocket, TakeoverError> {
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            if !metadata.file_type().is_socket() {
                return Err(TakeoverError::ControlSocketBusy {
                    path: path.into(),
                    reason: "exists and is not a socket".into(),
                });
            }
            if UnixStream::connect(path).is_ok() {
                return Err(TakeoverError::ControlSocketBusy {
                    path: path.into(),
                    reason: "another server answers on it (to take its port over, add --takeover \
                             with this path)"
                        .into(),
                });
            }
            std::fs::remove_file(path).map_err(|source| TakeoverError::Io {
                path: path.into(),
                source,
            })?;
        }
        let listener = UnixListener::bind(path).map_err(|source| TakeoverError::Io {
            path: path.into(),
            source,
        })?;
        // Whoever connects is handed the listening sockets: this user (and root) only.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| TakeoverError::Io {
                path: path.into(),
                source,
            },
        )?;
        let identity = file_identity(path).unwrap_or_default();
        Ok(ControlSocket {
            listener,
            path: path.into(),
            identity,
        })
    }

    /// Where it is bound (to remove it at exit).
    pub fn path(&self) -> ControlSocketPath {
        ControlSocketPath {
            path: self.path.clone(),
            identity: self.identity,
        }
    }

    /// Serves takeovers on a thread of its own until one succeeds: each connection gets `listeners`;
    /// on its `ready`, `hand_over` is called (it must stop this server's accepting and start the drain),
    /// the control socket is closed and the new process told so. A takeover that fails leaves this
    /// server serving as before (logged).
    pub fn serve(
        self,
        listeners: std::sync::Arc<ListenerSet>,
        hand_over: impl FnOnce() + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("ringws-control".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    let stream = match stream {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::warn!(path = %self.path.display(), "control socket: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    match offer(&stream, &listeners) {
                        Ok(true) => {
                            hand_over();
                            // Closed before the answer: the new process binds this path next.
                            drop(self.listener);
                            let _ = (&stream).write_all(b"handed-over\n");
                            return;
                        }
                        Ok(false) => {}
                        Err(message) => tracing::warn!(
                            path = %self.path.display(),
                            "takeover abandoned, still serving: {message}"
                        ),
                    }
                }
            })
    }
}

/// Offers the listeners on `stream`; `Ok(true)` once the new process says it accepts on them.
fn offer(stream: &UnixStream, listeners: &ListenerSet) -> Result<bool, String> {
    stream
        .set_read_timeout(Some(EXCHANGE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    if !listeners.send(stream).map_err(|e| e.to_string())? {
        return Ok(false);
    }
    tracing::info!("takeover: listeners sent, waiting for the new process to accept on them");
    let line = read_line(stream, &mut Vec::new()).map_err(|e| e.to_string())?;
    match line.as_str() {
        "ready" => Ok(true),
        "" => Err("the new process closed the connection before it was ready".into()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Reads one line (without its newline; empty at end of stream), keeping any descriptors that come
/// with it in `fds`.
fn read_line(stream: &UnixStream, fds: &mut Vec<OwnedFd>) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        // One byte at a time: nothing after the newline is consumed.
        let (n, received) = sys::recv_fds(stream.as_fd(), &mut byte)?;
        fds.extend(received);
        if n == 0 {
            break;
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
    if line.is_empty() {
        return Ok(String::new());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "line cut off or too long",
    ))
}

/// The new process's side: the listeners received, and the connection to answer on.
pub struct Inherited {
    stream: UnixStream,
    path: PathBuf,
    /// The listeners, in the old server's worker order.
    pub listeners: Vec<OwnedFd>,
}

/// Connects to the control socket at `path` and receives the running server's listeners. `Ok(None)`:
/// no server answers there (no socket file, or nothing listening on it): nothing to take over, the
/// caller binds the port itself (and the busy-port check applies as always).
pub fn take_over(path: &Path) -> Result<Option<Inherited>, TakeoverError> {
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(TakeoverError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let protocol = |message: String| TakeoverError::Protocol {
        path: path.into(),
        message,
    };
    stream
        .set_read_timeout(Some(EXCHANGE_TIMEOUT))
        .map_err(|e| protocol(e.to_string()))?;
    let mut fds = Vec::new();
    let line = read_line(&stream, &mut fds).map_err(|e| protocol(e.to_string()))?;
    if line == "shutting-down" {
        return Err(TakeoverError::ShuttingDown { path: path.into() });
    }
    let count = parse_header(&line).ok_or_else(|| protocol(format!("unexpected line {line:?}")))?;
    if fds.len() != count || count == 0 {
        return Err(protocol(format!(
            "{} descriptors received, {count} announced",
            fds.len()
        )));
    }
    if !fds.iter().all(|fd| sys::is_tcp_listener(fd.as_fd())) {
        return Err(TakeoverError::NotAListener);
    }
    Ok(Some(Inherited {
        stream,
        path: path.into(),
        listeners: fds,
    }))
}

/// The listener count of a header line `ringws-takeover <version> <n>`.
fn parse_header(line: &str) -> Option<usize> {
    let mut words = line.split(' ');
    if words.next()? != "ringws-takeover" || words.next()?.parse::<u32>().ok()? != VERSION {
        return None;
    }
    let count = words.next()?.parse().ok()?;
    words.next().is_none().then_some(count)
}

/// The connection to the old server once the listeners were taken (`Inherited::listeners` moved out).
pub struct Handover {
    stream: UnixStream,
    path: PathBuf,
}

impl Inherited {
    /// Splits off the listeners; the rest answers the old server.
    pub fn into_parts(self) -> (Vec<OwnedFd>, Handover) {
        (
            self.listeners,
            Handover {
                stream: self.stream,
                path: self.path,
            },
        )
    }
}

impl Handover {
    /// Tells the old server that this process accepts on the listeners, and waits until it has stopped
    /// accepting and closed its control socket (its `handed-over`).
    pub fn confirm(self) -> Result<(), TakeoverError> {
        let protocol = |message: String| TakeoverError::Protocol {
            path: self.path.clone(),
            message,
        };
        (&self.stream)
            .write_all(b"ready\n")
            .map_err(|e| protocol(e.to_string()))?;
        let line = read_line(&self.stream, &mut Vec::new()).map_err(|e| protocol(e.to_string()))?;
        if line != "handed-over" {
            return Err(protocol(format!(
                "the running server did not confirm the handover (answered {line:?})"
            )));
        }
        // Nothing else comes; the old server closes the connection.
        let _ = (&self.stream).read(&mut [0u8; 1]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_version_and_the_count() {
        assert_eq!(parse_header("ringws-takeover 1 4"), Some(4));
        assert_eq!(parse_header("ringws-takeover 2 4"), None);
        assert_eq!(parse_header("ringws-takeover 1 4 5"), None);
        assert_eq!(parse_header("ringws-takeover 1"), None);
        assert_eq!(parse_header("hello 1 4"), None);
    }

    #[test]
    fn a_control_socket_path_that_is_not_a_socket_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("ringws-takeover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-a-socket");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(matches!(
            ControlSocket::bind(&file),
            Err(TakeoverError::ControlSocketBusy { .. })
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        // A live control socket is refused; a stale one replaced.
        let path = dir.join("control.sock");
        let live = ControlSocket::bind(&path).unwrap();
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(TakeoverError::ControlSocketBusy { .. })
        ));
        drop(live);
        let again = ControlSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only this user may take the listeners");
        again.path().remove_if_ours();
        assert!(!path.exists());
        assert!(take_over(&path).unwrap().is_none(), "nothing to take over");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listeners_go_over_and_the_handover_is_confirmed() {
        let dir = std::env::temp_dir().join(format!("ringws-takeover-x-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let a = sys::reuseport_listener("127.0.0.1:0".parse().unwrap(), 8, sys::PortShare::First)
            .unwrap();
        let addr = sys::local_addr(&a).unwrap();
        let b = sys::reuseport_listener(addr, 8, sys::PortShare::Join).unwrap();
        let set = std::sync::Arc::new(ListenerSet::new(vec![a, b]));
        let control = ControlSocket::bind(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let set_for_hand_over = std::sync::Arc::clone(&set);
        let thread = control
            .serve(std::sync::Arc::clone(&set), move || {
                set_for_hand_over.clear();
                tx.send(()).unwrap();
            })
            .unwrap();
        let inherited = take_over(&path).unwrap().expect("a server answers");
        let (listeners, handover) = inherited.into_parts();
        assert_eq!(listeners.len(), 2);
        assert_eq!(sys::local_addr(&listeners[1]).unwrap(), addr);
        handover.confirm().unwrap();
        rx.recv().unwrap();
        thread.join().unwrap();
        // The old side holds nothing any more; the sockets live on in `listeners`.
        assert!(set.fds.lock().unwrap().is_none());
        std::net::TcpStream::connect(addr).unwrap();
        // Its control socket is closed: the path is free for the new process.
        assert!(take_over(&path).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
