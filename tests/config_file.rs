//! `ringws serve --config FILE` and `ringws check-config`: the file's values are applied, a flag on the
//! command line wins over the file and the environment's publish token over the file's, an unknown key or
//! a bad value stops startup with exit status 2 naming the file, line and key, and `check-config` checks
//! what `serve` would (values, certificate and key) without binding, printing the effective configuration.
//! `ringws.example.toml` at the repository root passes `check-config`.

mod common;

use common::tls::TestCert;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A directory of its own for one test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ringws-config-file-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ringws check-config ARGS` (with neither `RINGWS_PUBLISH_TOKEN` nor `RUST_LOG` in the
/// environment but those of `env`), waiting at most 20 s for it to exit.
fn check_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(ringws_binary());
    command
        .arg("check-config")
        .args(args)
        .env_remove("RINGWS_PUBLISH_TOKEN")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.envs(env.iter().copied());
    let child = command.spawn().expect("spawn ringws check-config");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(output) => output.expect("check-config output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("check-config {args:?} did not exit");
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The value of `key` in check-config's printed configuration (a `key = value` line).
fn printed<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(str::trim)
}

#[test]
fn the_example_file_passes_check_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("ringws.example.toml");
    let output = check_config(&["--config", example.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        printed(&text, "max_message_size"),
        Some("\"1MiB\""),
        "{text}"
    );
    assert_eq!(printed(&text, "mode"), Some("\"echo\""), "{text}");
}

#[test]
fn file_values_are_applied_and_a_flag_wins() {
    let dir = TempDir::new("applied");
    let file = dir.write(
        "ringws.toml",
        "max_message_size = \"1KiB\"\nidle_timeout = \"7s\"\nsubprotocols = [\"chat\", \"v2\"]\n",
    );
    let output = check_config(&["--config", &file, "--idle-timeout", "9s"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        printed(&text, "max_message_size"),
        Some("\"1KiB\""),
        "{text}"
    );
    assert_eq!(printed(&text, "max_frame_size"), Some("\"1KiB\""), "{text}");
    assert_eq!(printed(&text, "idle_timeout"), Some("\"9s\""), "{text}");
    assert_eq!(
        printed(&text, "subprotocols"),
        Some("[\"chat\", \"v2\"]"),
        "{text}"
    );

    // The server itself runs with the file's message limit: 2 KiB is closed 1009 ...
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1", "--config", &file]);
    let mut ws = raw_websocket(server.addr);
    use std::io::Write;
    ws.write_all(&client_frame(true, 0, 0x2, &[7; 2048], true))
        .unwrap();
    assert_eq!(expect_close(&mut ws), Some(1009));
    drop(server);
    // ... unless the command line says otherwise.
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--workers",
            "1",
            "--config",
            &file,
            "--max-message-size",
            "4KiB",
        ],
    );
    let mut ws = raw_websocket(server.addr);
    ws.write_all(&client_frame(true, 0, 0x2, &[7; 2048], true))
        .unwrap();
    let (fin, opcode, payload) = read_server_frame(&mut ws).expect("the echo");
    assert!(fin);
    assert_eq!(opcode, 0x2);
    assert_eq!(payload.len(), 2048);
}

#[test]
fn an_unknown_key_exits_2_naming_it_and_its_line() {
    let dir = TempDir::new("unknown");
    let file = dir.write("ringws.toml", "port = 9001\nmax_mesage_size = \"1MiB\"\n");
    let (code, errors) = ServerProcess::start_expect_failure(ringws_binary(), &["--config", &file]);
    assert_eq!(code, Some(2), "{errors}");
    assert!(
        errors.contains(&format!("{file}:2: unknown key `max_mesage_size`")),
        "{errors}"
    );
    let output = check_config(&["--config", &file], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).is_empty());
    assert!(
        stderr_has(&output, "unknown key `max_mesage_size`"),
        "{}",
        stderr(&output)
    );
}

fn stderr_has(output: &Output, needle: &str) -> bool {
    stderr(output).contains(needle)
}

#[test]
fn a_bad_value_exits_2_naming_the_key() {
    let dir = TempDir::new("bad-value");
    // Not a size at all.
    let file = dir.write("bad.toml", "\nmax_message_size = \"lots\"\n");
    let (code, errors) = ServerProcess::start_expect_failure(ringws_binary(), &["--config", &file]);
    assert_eq!(code, Some(2), "{errors}");
    assert!(
        errors.contains(&format!("{file}:2: max_message_size: invalid size")),
        "{errors}"
    );
    // A size out of its range: the flag's error, with where the value came from.
    let file = dir.write("range.toml", "recv_buffers = 3\n");
    let (code, errors) = ServerProcess::start_expect_failure(ringws_binary(), &["--config", &file]);
    assert_eq!(code, Some(2), "{errors}");
    assert!(errors.contains("--recv-buffers: 3"), "{errors}");
    assert!(
        errors.contains(&format!("(recv_buffers in {file}:1)")),
        "{errors}"
    );
    // The wrong type.
    let file = dir.write("type.toml", "port = \"high\"\n");
    let output = check_config(&["--config", &file], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_has(&output, &format!("{file}:1: port: ")),
        "{}",
        stderr(&output)
    );
    // A file that cannot be read.
    let missing = dir.0.join("missing.toml");
    let output = check_config(&["--config", missing.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_has(&output, "cannot read"));
}

#[test]
fn check_config_loads_the_certificate_and_key() {
    let dir = TempDir::new("tls");
    let cert = dir.write("cert.pem", "not a certificate\n");
    let key = dir.write("key.pem", "not a key\n");
    let file = dir.write(
        "ringws.toml",
        &format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"),
    );
    let output = check_config(&["--config", &file], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr_has(&output, &cert), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());

    // A real pair passes; one without the other does not.
    let good = TestCert::new();
    let output = check_config(
        &["--tls-cert", &good.cert_path, "--tls-key", &good.key_path],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let only_cert = dir.write("only_cert.toml", &format!("tls_cert = \"{cert}\"\n"));
    let output = check_config(&["--config", &only_cert], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_has(&output, "--tls-cert: --tls-key is required"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_config_does_not_bind_the_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let output = check_config(&["--bind", "127.0.0.1", "--port", &port], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        printed(&stdout(&output), "port"),
        Some(port.as_str()),
        "{}",
        stdout(&output)
    );
}

#[test]
fn the_environment_token_wins_over_the_file() {
    let dir = TempDir::new("token");
    // The file's token file does not exist: reading it would fail.
    let file = dir.write(
        "ringws.toml",
        "mode = \"pubsub\"\npublish_token_file = \"/nonexistent/ringws.token\"\n",
    );
    let output = check_config(&["--config", &file], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_has(&output, "/nonexistent/ringws.token"));
    let output = check_config(
        &["--config", &file],
        &[("RINGWS_PUBLISH_TOKEN", "secret-from-env")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("POST /publish is on"), "{text}");
    assert!(!text.contains("secret-from-env"), "{text}");
}

#[test]
fn the_log_level_comes_from_the_flag_then_rust_log_then_the_file() {
    let dir = TempDir::new("log-level");
    let file = dir.write(
        "ringws.toml",
        "log_level = \"debug\"\nlog_format = \"json\"\n",
    );
    let level = |args: &[&str], env: &[(&str, &str)]| {
        let output = check_config(args, env);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        printed(&stdout(&output), "log_level").map(str::to_string)
    };
    assert_eq!(level(&[], &[]).as_deref(), Some("\"info\""));
    assert_eq!(
        level(&["--config", &file], &[]).as_deref(),
        Some("\"debug\"")
    );
    let rust_log = [("RUST_LOG", "warn")];
    assert_eq!(
        level(&["--config", &file], &rust_log).as_deref(),
        Some("\"warn\"")
    );
    assert_eq!(
        level(&["--config", &file, "--log-level", "trace"], &rust_log).as_deref(),
        Some("\"trace\"")
    );
    // A level that is not one exits 2 naming where it came from.
    let output = check_config(&["--log-level", "ringws=loud"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_has(&output, "--log-level: \"ringws=loud\""),
        "{}",
        stderr(&output)
    );
    // The file's log format applies to the error lines of the values it holds.
    let bad = dir.write("bad.toml", "log_format = \"json\"\nrecv_buffers = 3\n");
    let output = check_config(&["--config", &bad], &[]);
    assert_eq!(output.status.code(), Some(2));
    let line = stderr(&output);
    let error: serde_json::Value = serde_json::from_str(line.trim()).expect("a JSON line");
    assert_eq!(error["level"], "ERROR");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("--recv-buffers: 3"),
        "{line}"
    );
}
