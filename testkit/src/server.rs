//! A `ringws serve` process for one test: started on `127.0.0.1`, port 0 (the kernel picks a free one),
//! its address read from the `ringws listening on IP:PORT` line on stdout within a timeout, and killed by
//! PID (then reaped) on drop.
//!
//! Owns the process lifecycle only; what the test sends to the server is the other modules' business.
//! Never leaves a process behind: a server that does not report its address is killed before the panic.
//! Set `RINGWS_TEST_LOG=1` to see the server's stderr (its logs) in the test output.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The line `ringws serve` prints on stdout once it listens, before the address.
pub const LISTENING_PREFIX: &str = "ringws listening on ";

/// How long a server may take to print its listening line (or to fail at startup).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server process. Dropping it kills the process (by PID) and reaps it.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `BINARY serve --bind 127.0.0.1 --port 0 <extra_args>` and waits (up to 20 s) for its
    /// listening line.
    pub fn start(binary: impl AsRef<OsStr>, extra_args: &[&str]) -> ServerProcess {
        let mut command = serve_command(binary, extra_args);
        if std::env::var_os("RINGWS_TEST_LOG").is_some() {
            command.stderr(Stdio::inherit());
        } else {
            command.stderr(Stdio::null());
        }
        ServerProcess::from_command(command)
    }

    /// Spawns `command` (any command line that ends up printing the listening line, e.g. the server
    /// under `taskset`) with stdout piped, and waits (up to 20 s) for the line. stdin and stderr are left
    /// as the caller set them.
    pub fn from_command(mut command: Command) -> ServerProcess {
        command.stdout(Stdio::piped());
        let mut child = command.spawn().expect("spawn the server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => ServerProcess {
                child,
                addr: addr.parse().expect("listening address"),
            },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the server did not report its listening address (exit: {status:?})");
            }
        }
    }

    /// Runs `BINARY serve --bind 127.0.0.1 --port 0 <extra_args>` expecting it to fail at startup:
    /// waits (up to 20 s) for it to exit and returns its exit code and stderr. Nothing may appear on
    /// stdout (no listening line).
    pub fn start_expect_failure(
        binary: impl AsRef<OsStr>,
        extra_args: &[&str],
    ) -> (Option<i32>, String) {
        Self::command_expect_failure(serve_command(binary, extra_args))
    }

    /// Runs `command` (a server command line) expecting it to fail at startup, as
    /// [`ServerProcess::start_expect_failure`] does.
    pub fn command_expect_failure(mut command: Command) -> (Option<i32>, String) {
        let describe = format!("{command:?}");
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringws");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(out)) => {
                assert!(
                    out.stdout.is_empty(),
                    "nothing on stdout when startup fails: {:?}",
                    String::from_utf8_lossy(&out.stdout)
                );
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).to_string(),
                )
            }
            _ => {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                panic!("{describe} did not exit at startup");
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://IP:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Sends `signal` (a name such as `"TERM"` or `"INT"`) to the server process, by its PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `BINARY serve --bind 127.0.0.1 --port 0 <extra_args>` with stdin closed.
fn serve_command(binary: impl AsRef<OsStr>, extra_args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(extra_args)
        .stdin(Stdio::null());
    command
}

/// The address in a `ringws listening on IP:PORT` line (surrounding whitespace ignored), if it is one.
pub fn listening_addr(line: &str) -> Option<&str> {
    line.strip_prefix(LISTENING_PREFIX).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_gives_the_address_and_nothing_else_does() {
        assert_eq!(
            listening_addr("ringws listening on 127.0.0.1:40123\n"),
            Some("127.0.0.1:40123")
        );
        assert_eq!(
            listening_addr("ringws listening on [::1]:9"),
            Some("[::1]:9")
        );
        assert_eq!(listening_addr("listening on 127.0.0.1:1"), None);
        assert_eq!(
            listening_addr("2024 INFO ringws listening on 127.0.0.1:1"),
            None
        );
    }
}
