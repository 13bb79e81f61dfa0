//! A Redis password need not be on the command line, and is never shown: `--broker-password-file`
//! authenticates every `--broker` URL without a password of its own (`redis://HOST:PORT` and
//! `redis://USER@HOST:PORT`), nodes joined that way share publishes, and the password appears neither in
//! the process's command line, nor in its logs (at debug level, the link up or refused), nor in
//! `check-config`'s output, nor in a startup error. A bad password file stops startup naming the flag.

mod common;

use common::redis::RedisServer;
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret-redis-pass";

/// A directory of the test's own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ringws-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Redis requiring `PASSWORD` (`requirepass`, which the `default` user then needs too).
fn redis_with_password() -> RedisServer {
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "requirepass", PASSWORD]);
    redis
}

/// `redis-cli` authenticated.
fn cli(redis: &RedisServer, args: &[&str]) -> Vec<String> {
    let mut all = vec!["-a", PASSWORD, "--no-auth-warning"];
    all.extend_from_slice(args);
    redis.cli(&all)
}

/// `ringws serve ARGS --log-level debug`, its stderr (the logs) going to `log`.
fn node(args: &[&str], log: &Path) -> ServerProcess {
    let mut command = Command::new(ringws_binary());
    command
        .arg("serve")
        .args(["--bind", "127.0.0.1", "--port", "0", "--workers", "1"])
        .args(["--mode", "pubsub", "--log-level", "debug"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    ServerProcess::from_command(command)
}

fn healthz(addr: SocketAddr) -> u16 {
    let mut stream = connect(addr);
    http_exchange(&mut stream, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").0
}

fn wait_healthz(addr: SocketAddr, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthz(addr) != status {
        assert!(Instant::now() < deadline, "{addr}/healthz never {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn command_line(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).into_owned()
}

#[test]
fn a_password_file_joins_nodes_and_is_never_shown() {
    let redis = redis_with_password();
    let dir = TempDir::new("broker-password");
    let file = dir.write("redis.password", &format!("{PASSWORD}\n"));
    let file = file.to_str().unwrap();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let as_user = format!("redis://default@127.0.0.1:{}", redis.port);
    let (log_a, log_b) = (dir.0.join("a.log"), dir.0.join("b.log"));
    let a = node(&["--broker", &url, "--broker-password-file", file], &log_a);
    let b = node(
        &["--broker", &as_user, "--broker-password-file", file],
        &log_b,
    );
    // Both links authenticated: healthy, and a publish on A reaches a subscriber on B.
    wait_healthz(a.addr, 200);
    wait_healthz(b.addr, 200);
    let mut subscriber = ws_at(b.addr, "/ws?topic=news");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli(&redis, &["PUBSUB", "NUMSUB", "ringws:news"]).last() != Some(&"1".to_string()) {
        assert!(Instant::now() < deadline, "B never subscribed on Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut publisher = ws_at(a.addr, "/ws");
    send_text(
        &mut publisher,
        r#"{"op":"pub","topic":"news","data":"across"}"#,
    );
    assert!(read_text(&mut subscriber).contains("across"));
    for node in [&a, &b] {
        assert!(!command_line(node.pid()).contains(PASSWORD));
    }
    // check-config with the same flags: the file's path, never what it holds.
    let output = Command::new(ringws_binary())
        .args(["check-config", "--broker", &as_user])
        .args(["--broker-password-file", file])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains(&format!("broker_password_file = \"{file}\"")),
        "{printed}"
    );
    assert!(!printed.contains(PASSWORD), "{printed}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains(PASSWORD));
    drop((a, b));
    for log in [log_a, log_b] {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("broker subscriber connection up"), "{text}");
        assert!(!text.contains(PASSWORD), "{}: {text}", log.display());
    }
}

#[test]
fn a_refused_password_is_not_shown_either() {
    let redis = redis_with_password();
    let dir = TempDir::new("broker-wrong-password");
    let wrong = "not-the-password-42";
    let file = dir.write("redis.password", &format!("{wrong}\n"));
    let (log_file, log_url) = (dir.0.join("file.log"), dir.0.join("url.log"));
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let from_file = node(
        &[
            "--broker",
            &url,
            "--broker-password-file",
            file.to_str().unwrap(),
        ],
        &log_file,
    );
    let own = format!("redis://:{wrong}@127.0.0.1:{}", redis.port);
    let in_url = node(&["--broker", &own], &log_url);
    // Refused by Redis: the links stay down and the logs say why, without the password.
    for log in [&log_file, &log_url] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(log).unwrap().contains("WRONGPASS") {
            assert!(
                Instant::now() < deadline,
                "no WRONGPASS in {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(healthz(from_file.addr), 503);
    assert_eq!(healthz(in_url.addr), 503);
    assert!(!command_line(from_file.pid()).contains(wrong));
    drop((from_file, in_url));
    for log in [log_file, log_url] {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("WRONGPASS"), "{text}");
        assert!(!text.contains(wrong), "{}: {text}", log.display());
    }
}

#[test]
fn a_bad_password_file_stops_startup_naming_the_flag() {
    let dir = TempDir::new("broker-bad-password-file");
    let url = "redis://127.0.0.1:1";
    let missing = dir.0.join("missing");
    let two_lines = dir.write("two-lines", &format!("{PASSWORD}\nmore\n"));
    let empty = dir.write("empty", "\n");
    let good = dir.write("redis.password", PASSWORD);
    for (args, expected) in [
        (
            vec![
                "--broker",
                url,
                "--broker-password-file",
                missing.to_str().unwrap(),
            ],
            "cannot read the Redis password",
        ),
        (
            vec![
                "--broker",
                url,
                "--broker-password-file",
                two_lines.to_str().unwrap(),
            ],
            "expected one line holding the Redis password",
        ),
        (
            vec![
                "--broker",
                url,
                "--broker-password-file",
                empty.to_str().unwrap(),
            ],
            "expected one line holding the Redis password",
        ),
        (
            vec!["--broker-password-file", good.to_str().unwrap()],
            "--broker-password-file: given without --broker",
        ),
        (
            // `user@` takes its password from the file: without one it is refused.
            vec!["--broker", "redis://app@127.0.0.1:1"],
            "user@ with --broker-password-file",
        ),
    ] {
        let (code, stderr) = ServerProcess::start_expect_failure(ringws_binary(), &args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{args:?}: {stderr}");
    }
    // The password in a configuration file is read as from the flag (and never printed).
    let config = dir.write(
        "ringws.toml",
        "broker = [\"redis://127.0.0.1:1\"]\nbroker_password_file = \"redis.password\"\n",
    );
    let output = Command::new(ringws_binary())
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        printed.contains(&format!("broker_password_file = \"{}\"", good.display())),
        "{printed}"
    );
    assert!(!printed.contains(PASSWORD), "{printed}");
}
