//! Thin, checked wrappers over the few plain syscalls used outside the hot path: listener sockets with
//! SO_REUSEPORT (shared by one server's workers, never joined to a port another process holds), passing
//! listeners to another process (`SCM_RIGHTS`), thread pinning, signal masks and waiting, resource limits.
//!
//! Everything here runs at startup or shutdown only (or, for [`release_free_memory`], at most once per
//! timer tick after a burst; for [`thread_cpu_time`], twice per timed fanout, at debug level only); none
//! of it may be called per connection or per message.

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
    /// (Taking over a busy port on purpose, `--takeover` for zero-downtime restarts, binds nothing: the
    /// running server passes its listeners with [`send_fds`], see `server::takeover`.)
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

/// Sets the listen queue length of a socket that listens already (`listen(2)` again: Linux applies the
/// new backlog to the same socket and keeps its queue), e.g. one handed over by another process.
pub fn set_listen_backlog(fd: std::os::fd::BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: plain listen(2) on a socket descriptor the caller holds.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
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

/// Raises the calling thread's nice value by `by` (capped at 19), lowering its share of a contended CPU
/// against the process's other threads, and returns the new value. Lowering one's own priority needs no
/// privilege. On Linux the nice value belongs to a thread: `setpriority(PRIO_PROCESS, tid)` changes only
/// that thread.
pub fn lower_current_thread_priority(by: i32) -> io::Result<i32> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    // getpriority returns -1 both for an error and for a nice value of -1: errno tells them apart.
    // SAFETY: __errno_location returns this thread's errno, valid for writes.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall on this thread's id.
    let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    if now == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error().unwrap_or(0) != 0 {
            return Err(err);
        }
    }
    let nice = now.saturating_add(by).min(19);
    // SAFETY: plain syscall on this thread's id.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) })?;
    Ok(nice)
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

/// CPU time (user and system) the calling thread has used so far (`CLOCK_THREAD_CPUTIME_ID`). A real
/// syscall, not a vDSO read: for diagnostics that are off by default (a timed fanout at debug level), never
/// per message.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

/// The most descriptors one [`send_fds`] carries (the kernel's `SCM_MAX_FD`).
pub const MAX_PASSED_FDS: usize = 253;

/// Sends `payload` (at least one byte) with `fds` attached (`SCM_RIGHTS`) over a connected Unix stream
/// socket, in one `sendmsg`: the receiver gets the descriptors with the payload's first byte. The
/// descriptors stay open here; the receiver gets its own references to the same open files (for a
/// listening socket: the same socket and accept queue, not a copy).
pub fn send_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    payload: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    if payload.is_empty() || fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let data_len = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
    // u64 words: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the fields set below point at live buffers of the given sizes.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(data_len) bytes, so the first header and its data
        // fit; CMSG_DATA points inside it and `raw` holds exactly `data_len` bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                data_len,
            );
        }
    }
    let mut sent = 0;
    while sent < payload.len() {
        if sent > 0 {
            // The descriptors went with the first part; the rest is plain bytes.
            msg.msg_control = std::ptr::null_mut();
            msg.msg_controllen = 0;
            iov.iov_base = payload[sent..].as_ptr() as *mut libc::c_void;
            iov.iov_len = payload.len() - sent;
            msg.msg_iov = &mut iov;
        }
        // SAFETY: `msg` points at live buffers (see above); MSG_NOSIGNAL: a closed peer is an error, not
        // a SIGPIPE.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        sent += n as usize;
    }
    Ok(())
}

/// Receives bytes into `buf` and the descriptors attached to them (`SCM_RIGHTS`, at most
/// [`MAX_PASSED_FDS`]) from a Unix stream socket, with close-on-exec set. Returns the byte count (0: the
/// peer closed) and the descriptors, owned by the caller. Descriptors cut off by a too small control
/// buffer never happen here (the buffer holds `MAX_PASSED_FDS`); a truncated control message is an error.
pub fn recv_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let data_len = MAX_PASSED_FDS * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the fields set below point at live buffers of the given sizes.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points at writable buffers of the sizes it states.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of well-formed control
    // messages; CMSG_FIRSTHDR/CMSG_NXTHDR walk them within that length, and an SCM_RIGHTS message's data
    // is an array of descriptors now open in this process, owned by nobody else.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off (MSG_CTRUNC)"));
    }
    Ok((n, fds))
}

/// Whether `fd` is a TCP socket in the listening state (`SO_ACCEPTCONN`), as a listener handed over by
/// another process must be.
pub fn is_tcp_listener(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let get = |level: libc::c_int, name: libc::c_int| -> Option<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` is a writable c_int and `len` its size.
        let ret = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                level,
                name,
                &mut value as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        (ret == 0).then_some(value)
    };
    get(libc::SOL_SOCKET, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && get(libc::SOL_SOCKET, libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP)
        && get(libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(1)
}

/// Whether the kernel moves the connections waiting in a closed SO_REUSEPORT listener's accept queue
/// to another listener of its group (`net.ipv4.tcp_migrate_req = 1`, Linux 5.14+) instead of resetting
/// them.
pub fn tcp_migrate_req() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

#[cfg(test)]
mod fd_passing_tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_passed_listener_is_the_same_socket_with_the_same_accept_queue() {
        let listener =
            reuseport_listener("127.0.0.1:0".parse().unwrap(), 16, PortShare::First).unwrap();
        let addr = local_addr(&listener).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_fds(a.as_fd(), b"hello\n", &[listener.as_fd(), listener.as_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let (n, fds) = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
        assert_eq!(fds.len(), 2);
        assert!(fds.iter().all(|fd| is_tcp_listener(fd.as_fd())));
        assert_eq!(local_addr(&fds[0]).unwrap(), addr);
        // A client queued before the sender closes its descriptor is accepted through the passed one.
        let client = std::net::TcpStream::connect(addr).unwrap();
        drop(listener);
        // SAFETY: plain accept(2) on a listening socket we own; the result is checked.
        let accepted = unsafe {
            libc::accept(
                fds[0].as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert!(accepted >= 0, "{}", io::Error::last_os_error());
        // SAFETY: `accepted` was just returned by accept(2).
        drop(unsafe { OwnedFd::from_raw_fd(accepted) });
        drop(client);
        let plain = std::net::TcpStream::connect(addr).unwrap();
        assert!(!is_tcp_listener(plain.as_fd()));
    }
}
