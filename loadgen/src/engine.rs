//! The I/O engine interface of a worker, completion style: the worker asks for a connect, a send, a
//! close; the engine reports what happened as [`IoEvent`]s (connected, bytes received, send done, end of
//! stream, error). Two engines implement it: io_uring (`uring.rs`, the default) and epoll (here), which
//! emulates completions on top of readiness.
//!
//! Contracts every engine keeps:
//! - A socket handle (`u32`) names one connection attempt; once the worker closes it, no event for it is
//!   ever reported again, even if the engine reuses the handle later.
//! - `send` takes the whole output buffer (swapping it with an empty one) only when nothing of the
//!   previous send is left; until then the worker keeps gathering into its own buffer. `Sent` with
//!   `idle: true` says the engine can take more.
//! - Received bytes are lent with [`Engine::bytes`] and given back with [`Engine::recycle`] before the next
//!   call to [`Engine::next_event`].
//!
//! This module never interprets the bytes it moves and never allocates per message.

use crate::net::{self, Epoll, HANGUP, READABLE, WRITABLE};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Duration;

/// No socket (a connection between attempts).
pub const NO_SOCK: u32 = u32::MAX;

/// Received bytes lent by the engine: buffer `buf` holds `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub buf: u16,
    pub len: u32,
}

/// What happened to a connection (`owner` is the worker's connection index given to `connect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEvent {
    Connected(u32),
    /// The TCP connect failed with this errno (0: no reason given).
    ConnectFailed(u32, i32),
    Data(u32, Chunk),
    /// `bytes` more were accepted by the socket; `idle`: nothing of the current send is left.
    Sent {
        owner: u32,
        bytes: u32,
        idle: bool,
    },
    Eof(u32),
    /// Receive or send failed with this errno.
    Failed(u32, i32),
}

/// Which engine a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// io_uring: multishot receives into a provided buffer ring, one `io_uring_enter` per loop.
    Uring,
    /// epoll readiness with `read`/`send` calls.
    Epoll,
}

/// Sizes an engine is created with.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The servers connections go to (`--url`, repeatable); `connect` names one by its index.
    pub targets: Vec<SocketAddr>,
    /// Connections of this worker.
    pub connections: usize,
}

pub trait Engine {
    /// Starts a TCP connect for connection `owner` to `targets[target]` (from `source` if given);
    /// returns the socket handle.
    fn connect(&mut self, owner: u32, target: usize, source: Option<Ipv4Addr>) -> io::Result<u32>;
    /// Takes `out` for sending if nothing of the previous send is left (see the module contracts);
    /// returns the bytes the socket accepted at once (epoll; io_uring reports them as `Sent`).
    fn send(&mut self, sock: u32, out: &mut Vec<u8>) -> io::Result<usize>;
    /// Bytes taken by `send` and not yet accepted by the socket.
    fn unsent(&self, sock: u32) -> usize;
    /// Ends the socket (its pending operations are cancelled; no more events). `last_words` (a close
    /// frame) is sent first, best effort, when nothing else is being sent.
    fn close(&mut self, sock: u32, last_words: &[u8]);
    /// Submits what was queued and waits up to `timeout_ns` for at least one event.
    fn wait(&mut self, timeout_ns: u64) -> io::Result<()>;
    /// The next event of the last `wait`, if any.
    fn next_event(&mut self) -> Option<IoEvent>;
    /// The bytes of a `Data` event.
    fn bytes(&mut self, chunk: Chunk) -> &mut [u8];
    /// Gives the bytes of a `Data` event back.
    fn recycle(&mut self, chunk: Chunk);
    /// Waits (up to `timeout_ns`) until every cancelled operation completed, so that nothing the kernel
    /// may still write to or read from is freed.
    fn finish(&mut self, timeout_ns: u64);
    /// Receives stopped for want of a buffer since the last call (io_uring `ENOBUFS`, re-armed).
    fn take_no_buffer_count(&mut self) -> u64;
    /// Sockets currently open (including closing ones whose operations are still completing).
    fn sockets(&self) -> usize;
}

/// One socket of the epoll engine.
struct Slot {
    fd: RawFd,
    generation: u32,
    owner: u32,
    live: bool,
    connecting: bool,
    /// Waiting for EPOLLOUT to write the rest of `sending`.
    want_write: bool,
    sending: Vec<u8>,
    pos: usize,
}

const RECEIVE_BUFFER: usize = 256 * 1024;

/// The epoll engine: level-triggered readiness, one `read` per readable socket (more while the buffer
/// fills), one `send` per `send` call, EPOLLOUT only while a send is unfinished.
pub struct EpollEngine {
    epoll: Epoll,
    targets: Vec<SocketAddr>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    ready: Vec<(u64, u32)>,
    next: usize,
    /// A socket whose last read filled the buffer: read it again before the next ready entry.
    reading: Option<(u32, u32)>,
    rbuf: Vec<u8>,
    sockets: usize,
}

fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

impl EpollEngine {
    pub fn new(config: &EngineConfig) -> io::Result<EpollEngine> {
        Ok(EpollEngine {
            epoll: Epoll::new(1024)?,
            targets: config.targets.clone(),
            slots: Vec::with_capacity(config.connections),
            free: Vec::new(),
            ready: Vec::with_capacity(1024),
            next: 0,
            reading: None,
            rbuf: vec![0; RECEIVE_BUFFER],
            sockets: 0,
        })
    }

    fn token(&self, sock: u32) -> u64 {
        ((self.slots[sock as usize].generation as u64) << 32) | sock as u64
    }

    fn live(&self, sock: u32, generation: u32) -> bool {
        self.slots
            .get(sock as usize)
            .is_some_and(|s| s.live && s.generation == generation)
    }

    fn set_want_write(&mut self, sock: u32, want: bool) {
        let token = self.token(sock);
        let slot = &mut self.slots[sock as usize];
        if slot.want_write != want {
            slot.want_write = want;
            let interest = if want {
                READABLE | WRITABLE | HANGUP
            } else {
                READABLE | HANGUP
            };
            let _ = self.epoll.modify(slot.fd, token, interest);
        }
    }

    /// Writes as much of the unfinished send as the socket takes.
    fn write_pending(&mut self, sock: u32) -> io::Result<usize> {
        let slot = &mut self.slots[sock as usize];
        let mut total = 0;
        while slot.pos < slot.sending.len() {
            match net::write(slot.fd, &slot.sending[slot.pos..]) {
                Ok(n) => {
                    slot.pos += n;
                    total += n;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        let done = slot.pos == slot.sending.len();
        if done {
            slot.sending.clear();
            slot.pos = 0;
        }
        self.set_want_write(sock, !done);
        Ok(total)
    }

    fn read(&mut self, sock: u32, generation: u32) -> Option<IoEvent> {
        loop {
            if !self.live(sock, generation) {
                return None;
            }
            let slot = &self.slots[sock as usize];
            let owner = slot.owner;
            return match net::read(slot.fd, &mut self.rbuf) {
                Ok(0) => Some(IoEvent::Eof(owner)),
                Ok(n) => {
                    if n == self.rbuf.len() {
                        self.reading = Some((sock, generation));
                    }
                    Some(IoEvent::Data(
                        owner,
                        Chunk {
                            buf: 0,
                            len: n as u32,
                        },
                    ))
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => None,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => Some(IoEvent::Failed(owner, errno_of(&err))),
            };
        }
    }
}

impl Engine for EpollEngine {
    fn connect(&mut self, owner: u32, target: usize, source: Option<Ipv4Addr>) -> io::Result<u32> {
        let fd = net::start_connect(self.targets[target], source)?;
        let sock = match self.free.pop() {
            Some(sock) => sock,
            None => {
                self.slots.push(Slot {
                    fd: -1,
                    generation: 0,
                    owner: 0,
                    live: false,
                    connecting: false,
                    want_write: false,
                    sending: Vec::new(),
                    pos: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[sock as usize];
        slot.fd = fd;
        slot.owner = owner;
        slot.live = true;
        slot.connecting = true;
        slot.want_write = true;
        slot.sending.clear();
        slot.pos = 0;
        let token = self.token(sock);
        if let Err(err) = self.epoll.add(fd, token, READABLE | WRITABLE | HANGUP) {
            let slot = &mut self.slots[sock as usize];
            net::close(fd);
            slot.live = false;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(sock);
            return Err(err);
        }
        self.sockets += 1;
        Ok(sock)
    }

    fn send(&mut self, sock: u32, out: &mut Vec<u8>) -> io::Result<usize> {
        let slot = &mut self.slots[sock as usize];
        if !slot.live || slot.connecting || slot.pos < slot.sending.len() || out.is_empty() {
            return Ok(0);
        }
        std::mem::swap(out, &mut slot.sending);
        out.clear();
        slot.pos = 0;
        self.write_pending(sock)
    }

    fn unsent(&self, sock: u32) -> usize {
        self.slots
            .get(sock as usize)
            .map_or(0, |s| s.sending.len() - s.pos)
    }

    fn close(&mut self, sock: u32, last_words: &[u8]) {
        let Some(slot) = self.slots.get_mut(sock as usize) else {
            return;
        };
        if !slot.live {
            return;
        }
        if !last_words.is_empty() && !slot.connecting {
            // Best effort: what is left of the current send, then the last words.
            let mut ok = true;
            while ok && slot.pos < slot.sending.len() {
                match net::write(slot.fd, &slot.sending[slot.pos..]) {
                    Ok(n) => slot.pos += n,
                    Err(_) => ok = false,
                }
            }
            if ok {
                let _ = net::write(slot.fd, last_words);
            }
        }
        net::close(slot.fd);
        slot.fd = -1;
        slot.live = false;
        slot.generation = slot.generation.wrapping_add(1);
        slot.sending.clear();
        slot.pos = 0;
        slot.want_write = false;
        self.free.push(sock);
        self.sockets -= 1;
    }

    fn wait(&mut self, timeout_ns: u64) -> io::Result<()> {
        self.ready.clear();
        self.next = 0;
        self.reading = None;
        let events = self.epoll.wait(Duration::from_nanos(timeout_ns))?;
        self.ready.extend(events);
        Ok(())
    }

    fn next_event(&mut self) -> Option<IoEvent> {
        loop {
            if let Some((sock, generation)) = self.reading.take() {
                if let Some(event) = self.read(sock, generation) {
                    return Some(event);
                }
                continue;
            }
            let (token, events) = *self.ready.get(self.next)?;
            self.next += 1;
            let sock = token as u32;
            let generation = (token >> 32) as u32;
            if !self.live(sock, generation) {
                continue;
            }
            let slot = &mut self.slots[sock as usize];
            let owner = slot.owner;
            if slot.connecting {
                return Some(match net::take_error(slot.fd) {
                    Ok(()) if events & (WRITABLE | READABLE) != 0 => {
                        slot.connecting = false;
                        self.set_want_write(sock, false);
                        IoEvent::Connected(owner)
                    }
                    Ok(()) => IoEvent::ConnectFailed(owner, 0),
                    Err(err) => IoEvent::ConnectFailed(owner, errno_of(&err)),
                });
            }
            if events & (READABLE | HANGUP) != 0 {
                self.reading = Some((sock, generation));
            }
            if events & WRITABLE != 0 && slot.want_write {
                match self.write_pending(sock) {
                    Ok(bytes) => {
                        let idle = self.slots[sock as usize].sending.is_empty();
                        if bytes > 0 || idle {
                            return Some(IoEvent::Sent {
                                owner,
                                bytes: bytes as u32,
                                idle,
                            });
                        }
                    }
                    Err(err) => {
                        self.reading = None;
                        return Some(IoEvent::Failed(owner, errno_of(&err)));
                    }
                }
            }
        }
    }

    fn bytes(&mut self, chunk: Chunk) -> &mut [u8] {
        &mut self.rbuf[..chunk.len as usize]
    }

    fn recycle(&mut self, _chunk: Chunk) {}

    fn finish(&mut self, _timeout_ns: u64) {}

    fn take_no_buffer_count(&mut self) -> u64 {
        0
    }

    fn sockets(&self) -> usize {
        self.sockets
    }
}

impl Drop for EpollEngine {
    fn drop(&mut self) {
        for slot in &self.slots {
            if slot.live {
                net::close(slot.fd);
            }
        }
    }
}
