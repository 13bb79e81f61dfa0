//! Thin, safe wrappers over the Linux socket and epoll calls the load generator needs: non-blocking TCP
//! connect (optionally from a chosen source address with `IP_BIND_ADDRESS_NO_PORT`), read, write, close,
//! and an epoll set with nanosecond timeouts (`epoll_pwait2`).
//!
//! This module owns every `unsafe` block of the crate besides `clock.rs` and `uring.rs` (io_uring); each
//! states why it is sound. It never interprets the bytes it moves.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn sockaddr_v4(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives for the duration of the call and its exact size is passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// A non-blocking TCP socket (IPv4) with `TCP_NODELAY`, bound to `source` (port chosen at connect time)
/// when given: everything of a client connection but the connect itself.
pub fn open_socket(source: Option<Ipv4Addr>) -> io::Result<RawFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    let result = (|| {
        set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        if let Some(ip) = source {
            // Delay the port choice to connect(): the 4-tuple, not the source port alone, must be unique.
            set_int_option(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
            let local = sockaddr_v4(SocketAddrV4::new(ip, 0));
            // SAFETY: `local` is a valid sockaddr_in and its exact size is passed.
            check(unsafe {
                libc::bind(
                    fd,
                    &local as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            })?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(fd),
        Err(err) => {
            close(fd);
            Err(err)
        }
    }
}

/// The target as a `sockaddr_in` (IPv4 only).
pub fn target_sockaddr(target: SocketAddr) -> io::Result<libc::sockaddr_in> {
    match target {
        SocketAddr::V4(target) => Ok(sockaddr_v4(target)),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only IPv4 targets are supported",
        )),
    }
}

/// Starts a non-blocking TCP connect to `target` (IPv4 only) from `source` (port chosen at connect time).
/// Returns the socket; completion is reported by epoll (writable) and `take_error`.
pub fn start_connect(target: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<RawFd> {
    let remote = target_sockaddr(target)?;
    let fd = open_socket(source)?;
    // SAFETY: `remote` is a valid sockaddr_in and its exact size is passed.
    let ret = unsafe {
        libc::connect(
            fd,
            &remote as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            close(fd);
            return Err(err);
        }
    }
    Ok(fd)
}

/// The pending error of a socket (`SO_ERROR`), used to learn how a non-blocking connect ended.
pub fn take_error(fd: RawFd) -> io::Result<()> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid and writable; `len` holds the size of `value`.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    })?;
    if value == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(value))
    }
}

/// `read(2)` into `buf`. `Ok(0)` is end of stream.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send(2)` of `buf` without SIGPIPE and without blocking (the socket may be a blocking one).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Closes a descriptor this crate opened. Errors are ignored (the descriptor is gone either way).
pub fn close(fd: RawFd) {
    // SAFETY: callers pass a descriptor they own and never use it again.
    unsafe { libc::close(fd) };
}

/// The per-process open-file limit (soft), to size connection counts per process.
pub fn open_file_limit() -> u64 {
    // SAFETY: an all-zero rlimit is a valid value of this plain C struct.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is valid and writable.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Raises the soft open-file limit to the hard limit (best effort).
pub fn raise_open_file_limit() {
    // SAFETY: an all-zero rlimit is a valid value of this plain C struct.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is valid and writable; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    if INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        // Second interrupt: quit at once (only async-signal-safe calls here).
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

/// Catches SIGINT and SIGTERM: the first one only sets a flag (`interrupted`) so that the run drains and
/// reports; a second one exits at once.
pub fn catch_interrupts() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Ignores SIGINT (child processes: their parent coordinates the end of the run).
pub fn ignore_interrupts() {
    // SAFETY: installing SIG_IGN has no memory-safety requirements.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
}

/// Whether SIGINT or SIGTERM arrived (after `catch_interrupts`).
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
pub const HANGUP: u32 = (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;

/// One epoll set (level-triggered), owned by one worker thread.
pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: plain epoll_create1(2) call.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    fn control(&self, op: libc::c_int, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.fd, op, fd, &mut event) }).map(|_| ())
    }

    pub fn add(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    pub fn modify(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Waits up to `timeout` and returns the ready (token, events) pairs.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<impl Iterator<Item = (u64, u32)> + '_> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // SAFETY: `self.events` is a valid buffer of `len` events; `ts` is valid; no signal mask is passed.
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        let n = if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                0
            } else {
                return Err(err);
            }
        } else {
            n as usize
        };
        Ok(self.events[..n].iter().map(|e| (e.u64, e.events)))
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        close(self.fd);
    }
}
