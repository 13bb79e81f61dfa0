//! What `/proc` says about a process a test started: resident memory (VmRSS) and open descriptors.
//!
//! Reads only, and only the process it is given by PID. The parsers are separate from the file reads so
//! that they are tested without a process.

/// Resident memory of `pid` in KiB (VmRSS of `/proc/PID/status`); panics if it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    try_rss_kib(pid).unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// Resident memory of `pid` in KiB, or `None` if the process is gone.
pub fn try_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_rss_kib(&status)
}

/// The VmRSS field (KiB) of a `/proc/PID/status` text.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`), or `None` if the process is gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_status_text() {
        let status = "Name:\tringws\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(vm_rss_kib(status), Some(1234));
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        assert!(open_fds(me).expect("fds") >= 3);
    }
}
