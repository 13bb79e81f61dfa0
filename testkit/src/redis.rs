//! A `redis-server` of the test's own: started on a free loopback port with persistence off, asked
//! questions with `redis-cli`, killed (and restarted on the same port) by PID, and killed on drop.
//!
//! Owns the Redis process only. `redis-server` and `redis-cli` must be on `PATH` (Debian's
//! `redis-server` package; `scripts/test.sh` installs it): when they are not, the test fails saying so,
//! never skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` on `127.0.0.1:port`.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

/// `name` on `PATH`, or a panic saying how to install it.
fn on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: these tests need a real Redis (Debian: apt-get install \
                 redis-server; scripts/test.sh installs it)"
            )
        })
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits (up to 10 s) until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_on(crate::ports::free_port())
    }

    /// Starts `redis-server` on `port` (a port a test chose earlier, e.g. to start Redis after the
    /// nodes pointed at it, or to restart it) and waits until it answers PING.
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer { child: None, port };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(on_path("redis-server"))
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it with SIGKILL (by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new `redis-server` on the same port (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `redis-cli -p PORT args...`: its output lines.
    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        let output = Command::new(on_path("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The channels with at least one subscriber (`PUBSUB CHANNELS`), sorted.
    pub fn channels(&self) -> Vec<String> {
        let mut channels = self.cli(&["PUBSUB", "CHANNELS"]);
        channels.sort();
        channels
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`): one per node that wants it.
    pub fn subscribers(&self, channel: &str) -> u64 {
        let lines = self.cli(&["PUBSUB", "NUMSUB", channel]);
        lines.get(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Waits up to `timeout` for `channel` to have `n` subscribers.
    pub fn wait_subscribers(&self, channel: &str, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.subscribers(channel);
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{channel}: {now} subscribers on Redis after {timeout:?}, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
