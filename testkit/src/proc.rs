//! What `/proc` says about a process a test started: resident memory (VmRSS), open descriptors, CPU time.
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

/// Anonymous resident memory of `pid` in KiB (RssAnon of `/proc/PID/status`: the heap and other private
/// memory, without the program's code and files mapped in); panics if it cannot be read.
pub fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("no /proc/{pid}/status: {e}"));
    status_field_kib(&status, "RssAnon:").unwrap_or_else(|| panic!("no RssAnon for pid {pid}"))
}

/// A `Name: N kB` field (KiB) of a `/proc/PID/status` text.
pub fn status_field_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`), or `None` if the process is gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// User + system CPU time of `pid` so far, in clock ticks (100 per second on Linux), from
/// `/proc/PID/stat`; panics if it cannot be read.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    stat_cpu_ticks(&stat).expect("stat format")
}

/// utime + stime (fields 14 and 15 of stat(5)) of a `/proc/PID/stat` text. The command name (field 2)
/// may hold spaces and parentheses, so the fields are counted after its last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Counted from the state field (3): utime is field 14, stime field 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_status_text() {
        let status = "Name:\tringws\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(vm_rss_kib(status), Some(1234));
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
        assert_eq!(status_field_kib(status, "RssAnon:"), Some(1000));
        assert_eq!(status_field_kib(status, "RssFile:"), None);
    }

    #[test]
    fn cpu_ticks_count_fields_after_a_command_name_with_spaces() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 1 1 1";
        assert_eq!(stat_cpu_ticks(stat), Some(12));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_has_memory_descriptors_and_a_stat() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        assert!(open_fds(me).expect("fds") >= 3);
        let _ = cpu_ticks(me);
    }
}
