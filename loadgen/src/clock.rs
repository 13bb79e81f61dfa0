//! The load generator's clock: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! One clock shared by every thread and every child process of a run (it is system-wide), so a timestamp
//! written into a broadcast message by one process can be subtracted from the receive time in another.
//! It must never be the wall clock (which can jump).

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always available on Linux, so the
    // call cannot fail and only writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Process CPU time (user, system) in seconds, including reaped child processes when `children` is set.
pub fn cpu_seconds(children: bool) -> (f64, f64) {
    fn usage(who: libc::c_int) -> (f64, f64) {
        // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage; getrusage only writes into it.
        unsafe { libc::getrusage(who, &mut ru) };
        let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        (secs(ru.ru_utime), secs(ru.ru_stime))
    }
    let (mut user, mut sys) = usage(libc::RUSAGE_SELF);
    if children {
        let (cu, cs) = usage(libc::RUSAGE_CHILDREN);
        user += cu;
        sys += cs;
    }
    (user, sys)
}
