//! Thin, checked wrappers over the few plain syscalls used outside the hot path: listener sockets with
//! SO_REUSEPORT (shared by one server's workers, never joined to a port another process holds), thread pinning, signal masks and waiting, resource limits.
//!
//! Everything here runs at startup or shutdown only (or, for [`release_free_memory`], at most once per
//! timer tick after a burst); none of it may be called per connection or per message.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its exact size is passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// How a listener joins the port it binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortShare {
    /// The first listener of a server: bound *without* SO_REUSEPORT, so the bind fails (EADDRINUSE) if
    /// any socket already holds the port, whichever process or option it used; SO_REUSEPORT is turned on
    /// after the bind, before `listen`, so that the server's other listeners can join it. A process that
    /// starts at the same time fails the same way: of two such binds (or listens) only one succeeds.
    /// (Taking over a busy port on purpose, e.g. a `--take-over` flag for zero-downtime restarts, is a
    /// separate, explicit mode; it does not exist yet.)
    First,
    /// Another listener of the same server, bound with SO_REUSEPORT to the port the first one holds (the
    /// kernel balances new connections between them).
    Join,
}

/// A TCP listener bound with SO_REUSEADDR and, as `share` says, SO_REUSEPORT (one per worker), and
/// TCP_NODELAY (inherited by accepted sockets).
pub fn reuseport_listener(addr: SocketAddr, backlog: i32, share: PortShare) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = check(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if share == PortShare::Join {
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    let (storage, len) = sockaddr_from(addr);
    // SAFETY: `storage` holds a valid sockaddr of length `len`.
    check(unsafe {
        libc::bind(
            fd,
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    })?;
    if share == PortShare::First {
        // The port is ours alone now; from here on the server's own listeners may share it.
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    // SAFETY: plain listen(2) on our socket.
    check(unsafe { libc::listen(fd, backlog) })?;
    Ok(owned)
}

/// The local address a socket is bound to.
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    socket_address(fd, libc::getsockname)
}

/// The peer's address of the connected socket `fd`, a descriptor the ring just installed for the caller
/// (`Ring::install_fd`'s result), which this takes over and closes.
pub fn peer_addr_of_installed(fd: i32) -> io::Result<SocketAddr> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the ring's fixed-descriptor install returned `fd` to this caller alone: it is open, owned
    // by nothing else in the process, and closed here exactly once (when `owned` drops).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    socket_address(&owned, libc::getpeername)
}

/// `getsockname` or `getpeername` of `fd` as a `SocketAddr`.
fn socket_address(
    fd: &OwnedFd,
    get: unsafe extern "C" fn(
        libc::c_int,
        *mut libc::sockaddr,
        *mut libc::socklen_t,
    ) -> libc::c_int,
) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `get` is getsockname or getpeername; `storage` is writable for `len` bytes and `len` is
    // updated by the kernel.
    check(unsafe {
        get(
            fd.as_raw_fd(),
            &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
        )
    })?;
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe {
                &*(&storage as *const libc::sockaddr_storage as *const libc::sockaddr_in)
            };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(&storage as *const libc::sockaddr_storage as *const libc::sockaddr_in6)
            };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => Err(io::Error::other("unknown address family")),
    }
}

fn sockaddr_from(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in)
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6)
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: all-zero is an empty cpu_set_t; CPU_SET writes inside it (cpu is bounded by the caller to the
    // CPU count, and CPU_SET itself ignores indexes past the set size).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = this thread.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(drop)
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The soft limit on open files (the most fixed-file slots one ring can register).
pub fn open_file_limit() -> u64 {
    // SAFETY: all-zero is a valid rlimit, filled by getrlimit.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// Raises the soft open-file limit to the hard limit (best effort).
pub fn raise_open_file_limit() {
    // SAFETY: all-zero is a valid rlimit, filled by getrlimit.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a writable, then readable rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn termination_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset with valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and every thread it spawns afterwards), so that they
/// are only received by [`wait_termination_signal`].
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_sigset();
    // SAFETY: `set` is an initialised sigset_t; the old mask is not requested.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM (blocked beforehand) and returns its number.
pub fn wait_termination_signal() -> i32 {
    let set = termination_sigset();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` writable.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// A signal the main thread of `ringws serve` acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlSignal {
    /// SIGINT or SIGTERM (the number): shut down gracefully.
    Terminate(i32),
    /// SIGHUP: load the TLS certificate again.
    Reload,
}

fn control_sigset() -> libc::sigset_t {
    let mut set = termination_sigset();
    // SAFETY: `set` is an initialised sigset_t and SIGHUP a valid signal number.
    unsafe { libc::sigaddset(&mut set, libc::SIGHUP) };
    set
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and every thread it spawns afterwards), so
/// that they are only received by [`wait_control_signal`] (a SIGHUP no longer ends the process).
pub fn block_control_signals() -> io::Result<()> {
    let set = control_sigset();
    // SAFETY: `set` is an initialised sigset_t; the old mask is not requested.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Waits for SIGINT, SIGTERM or SIGHUP (blocked beforehand with [`block_control_signals`]).
pub fn wait_control_signal() -> ControlSignal {
    let set = control_sigset();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` writable.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return if sig == libc::SIGHUP {
                ControlSignal::Reload
            } else {
                ControlSignal::Terminate(sig)
            };
        }
    }
}

/// Hands free heap memory back to the system (glibc `malloc_trim(0)`: free pages inside the heap are
/// released too, not only its top). Called after a worker cut its pools back, so that memory used for a
/// burst does not stay resident while connections sit idle. A no-op on other C libraries.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `malloc_trim` takes no pointers and only reorganises the allocator's free memory; it is
    // thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// An anonymous private read-write mapping (memory shared with the kernel: provided buffer rings),
/// unmapped on drop unless leaked.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    pub fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; the result is
        // checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Start of the mapping (page aligned).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Never unmap: for memory the kernel may still write into (an operation that never completed).
    pub fn leak(&mut self) {
        self.len = 0;
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `ptr`/`len` are exactly what mmap returned; owners drop a mapping only once nothing
            // (neither the kernel nor a live slice) can use it any more, and leak it otherwise.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}
