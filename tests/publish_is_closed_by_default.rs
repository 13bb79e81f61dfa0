//! `POST /publish` is off unless a publish token is configured: with default flags it is an unknown path
//! (404) in every mode and reaches no client; in echo mode a token alone does not turn it on
//! (`--publish-in-echo` does). With a token, from a file or from `RINGWS_PUBLISH_TOKEN`, a request without
//! it or with another is 401, the right one (scheme in any case) publishes, a body over
//! `--max-publish-body` is 413, and each refusal is counted by reason. In pubsub mode a token also closes
//! WebSocket `pub` (an error reply, the connection stays); without one WebSocket `pub` works. A bad token
//! source stops startup with exit code 2 naming it.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "s3cret-Token_42";

/// Extra command-line arguments.
type Args<'a> = Vec<&'a str>;
/// Environment variables set for the server.
type Env<'a> = Vec<(&'a str, &'a str)>;

/// A token file (its contents padded with whitespace, which is trimmed) in a fresh directory.
struct TokenFile {
    dir: std::path::PathBuf,
    path: String,
}

impl TokenFile {
    fn new(name: &str, contents: &str) -> TokenFile {
        let dir = std::env::temp_dir().join(format!(
            "ringws-publish-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, contents).unwrap();
        TokenFile {
            path: path.display().to_string(),
            dir,
        }
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ringws serve --bind 127.0.0.1 --port 0 <args>` with `env` added to its environment and
/// `RINGWS_PUBLISH_TOKEN` removed unless `env` sets it.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(ringws_binary());
    command
        .arg("serve")
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(args)
        .env_remove("RINGWS_PUBLISH_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    if std::env::var_os("RINGWS_TEST_LOG").is_some() {
        command.stderr(Stdio::inherit());
    } else {
        command.stderr(Stdio::null());
    }
    command
}

fn start(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::from_command(command(args, env))
}

/// Runs the server expecting it to fail at startup; returns its exit code and stderr.
fn start_expect_failure(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    ServerProcess::command_expect_failure(command(args, env))
}

/// `POST /publish[?topic=..]` with `auth` (header lines) and `body`; the answer's status.
fn post(addr: std::net::SocketAddr, topic: Option<&str>, auth: &str, body: &str) -> u16 {
    let mut stream = connect(addr);
    let query = topic.map(|t| format!("?topic={t}")).unwrap_or_default();
    let (status, head) = http_exchange(
        &mut stream,
        &format!(
            "POST /publish{query} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(head.contains("Connection: close"), "{head}");
    status
}

/// The value of `ringws_publish_refusals_total` for `reason`, summed over workers.
fn refusals(addr: std::net::SocketAddr, reason: &str) -> u64 {
    let label = format!("reason=\"{reason}\"");
    metrics_text(addr)
        .lines()
        .filter(|l| l.starts_with("ringws_publish_refusals_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// Proves `client` received nothing so far: it makes the server answer it, and the answer is the next
/// frame. Echo and broadcast (with the sender included) send its own message back; pubsub answers a sub.
fn assert_next_frame_is_own(mode: &str, client: &mut std::net::TcpStream) {
    if mode == "pubsub" {
        send_text(client, r#"{"op":"sub","topic":"probe"}"#);
        assert_eq!(read_text(client), r#"{"ok":"sub","topic":"probe"}"#);
    } else {
        send_text(client, "own message");
        assert_eq!(read_text(client), "own message", "mode {mode}");
    }
}

#[test]
fn default_flags_answer_publish_404_in_every_mode_and_nothing_reaches_clients() {
    for mode in ["echo", "broadcast", "pubsub"] {
        let server = start(&["--mode", mode, "--workers", "1"], &[]);
        let mut client = ws_at(server.addr, "/?topic=news");
        wait_open(|| metrics_text(server.addr), 1, Duration::from_secs(5));
        let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
        for (topic, auth) in [(None, ""), (Some("news"), ""), (Some("news"), &*bearer)] {
            assert_eq!(
                post(server.addr, topic, auth, "intruder"),
                404,
                "mode {mode}, topic {topic:?}"
            );
        }
        // A GET, a HEAD: unknown path too.
        let mut get = connect(server.addr);
        let (status, _) = http_exchange(&mut get, "GET /publish HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 404, "mode {mode}");
        assert_next_frame_is_own(mode, &mut client);
        assert_eq!(refusals(server.addr, "unauthorized"), 0);
    }
}

#[test]
fn echo_mode_keeps_publish_off_with_a_token_unless_publish_in_echo() {
    let file = TokenFile::new("echo", TOKEN);
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let server = start(&["--workers", "1", "--publish-token-file", &file.path], &[]);
    let mut client = ws_at(server.addr, "/");
    wait_open(|| metrics_text(server.addr), 1, Duration::from_secs(5));
    assert_eq!(post(server.addr, None, &bearer, "intruder"), 404);
    assert_next_frame_is_own("echo", &mut client);
    drop(server);

    let server = start(
        &[
            "--workers",
            "1",
            "--publish-token-file",
            &file.path,
            "--publish-in-echo",
        ],
        &[],
    );
    let mut client = ws_at(server.addr, "/");
    wait_open(|| metrics_text(server.addr), 1, Duration::from_secs(5));
    assert_eq!(post(server.addr, None, "", "intruder"), 401);
    assert_eq!(post(server.addr, None, &bearer, "asked for"), 200);
    assert_eq!(read_text(&mut client), "asked for");
}

/// One server per argv-less token source; each must guard /publish the same way.
#[test]
fn a_token_from_a_file_or_the_environment_guards_publish() {
    let file = TokenFile::new("guard", &format!("\n  {TOKEN}\t\n"));
    let sources: [(&str, Args, Env); 2] = [
        ("file", vec!["--publish-token-file", &file.path], vec![]),
        ("environment", vec![], vec![("RINGWS_PUBLISH_TOKEN", TOKEN)]),
    ];
    for (source, token_args, env) in sources {
        let mut args = vec![
            "--mode",
            "pubsub",
            "--workers",
            "2",
            "--max-publish-body",
            "1KiB",
        ];
        args.extend(token_args);
        let server = start(&args, &env);
        let mut subs: Vec<_> = (0..4)
            .map(|_| ws_at(server.addr, "/?topic=alerts"))
            .collect();
        wait_open(|| metrics_text(server.addr), 4, Duration::from_secs(5));
        let wrong = format!("Authorization: Bearer {TOKEN}x\r\n");
        let two_tokens = format!("Authorization: Bearer {TOKEN} {TOKEN}\r\n");
        let basic = format!("Authorization: Basic {TOKEN}\r\n");
        for auth in ["", &*wrong, &*two_tokens, &*basic] {
            assert_eq!(
                post(server.addr, Some("alerts"), auth, "intruder"),
                401,
                "{source}: {auth:?}"
            );
        }
        assert_eq!(refusals(server.addr, "unauthorized"), 4, "{source}");
        let lower = format!("Authorization: bearer {TOKEN}\r\n");
        assert_eq!(
            post(server.addr, Some("alerts"), &lower, "fire!"),
            200,
            "{source}"
        );
        let upper = format!("Authorization: BEARER {TOKEN}\r\n");
        assert_eq!(
            post(server.addr, Some("alerts"), &upper, "again"),
            200,
            "{source}"
        );
        // The intruders' bodies never arrived: the first frames are the authorized ones.
        for sub in &mut subs {
            assert_eq!(read_text(sub), "fire!", "{source}");
            assert_eq!(read_text(sub), "again", "{source}");
        }
        // The body limit: 1 KiB passes, one byte more is 413 (decided on the head alone).
        let limit = "x".repeat(1024);
        assert_eq!(
            post(server.addr, Some("alerts"), &lower, &limit),
            200,
            "{source}"
        );
        let mut over = connect(server.addr);
        let (status, _) = http_exchange(
            &mut over,
            &format!("POST /publish?topic=alerts HTTP/1.1\r\nHost: x\r\n{lower}Content-Length: 1025\r\n\r\n"),
        );
        assert_eq!(status, 413, "{source}");
        assert_eq!(refusals(server.addr, "too_large"), 1, "{source}");
        for sub in &mut subs {
            assert_eq!(read_text(sub), limit, "{source}");
        }
    }
}

#[test]
fn websocket_pub_is_refused_when_a_token_is_configured() {
    let server = start(
        &["--mode", "pubsub", "--workers", "2"],
        &[("RINGWS_PUBLISH_TOKEN", TOKEN)],
    );
    let mut subscriber = ws_at(server.addr, "/?topic=t");
    let mut publisher = ws_at(server.addr, "/");
    wait_open(|| metrics_text(server.addr), 2, Duration::from_secs(5));
    send_text(
        &mut publisher,
        r#"{"op":"pub","topic":"t","data":"anonymous"}"#,
    );
    assert_eq!(
        read_text(&mut publisher),
        r#"{"error":"publishing needs a token","op":"pub","topic":"t"}"#
    );
    // The binary form is refused the same way.
    let mut binary = vec![3u8, 1, b't'];
    binary.extend_from_slice(b"anonymous");
    publisher
        .write_all(&client_frame(true, 0, 0x2, &binary, true))
        .unwrap();
    assert_eq!(
        read_text(&mut publisher),
        r#"{"error":"publishing needs a token","op":"pub","topic":"t"}"#
    );
    // The connection stays, and subscribing stays open to all.
    send_text(&mut publisher, r#"{"op":"sub","topic":"t"}"#);
    assert_eq!(read_text(&mut publisher), r#"{"ok":"sub","topic":"t"}"#);
    // The holder of the token publishes; the anonymous messages never arrived before it.
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(post(server.addr, Some("t"), &bearer, "with token"), 200);
    assert_eq!(read_text(&mut subscriber), "with token");
    assert_eq!(read_text(&mut publisher), "with token");
}

#[test]
fn websocket_pub_works_without_a_token() {
    let server = start(&["--mode", "pubsub", "--workers", "2"], &[]);
    let mut subscriber = ws_at(server.addr, "/?topic=t");
    let mut publisher = ws_at(server.addr, "/");
    wait_open(|| metrics_text(server.addr), 2, Duration::from_secs(5));
    send_text(&mut publisher, r#"{"op":"pub","topic":"t","data":"open"}"#);
    assert_eq!(read_text(&mut subscriber), "open");
}

#[test]
fn a_bad_token_source_exits_2_naming_it() {
    let empty = TokenFile::new("empty", " \n\t\n");
    let good = TokenFile::new("good", TOKEN);
    let missing = format!("{}-missing", good.path);
    let cases: Vec<(Args, Env, Vec<&str>)> = vec![
        (
            vec!["--publish-token-file", &missing],
            vec![],
            vec!["--publish-token-file", &missing],
        ),
        (
            vec!["--publish-token-file", &empty.path],
            vec![],
            vec!["--publish-token-file", &empty.path, "empty"],
        ),
        (
            vec!["--publish-token", TOKEN, "--publish-token-file", &good.path],
            vec![],
            vec!["--publish-token and --publish-token-file"],
        ),
        (
            vec!["--publish-token-file", &good.path],
            vec![("RINGWS_PUBLISH_TOKEN", TOKEN)],
            vec!["--publish-token-file and RINGWS_PUBLISH_TOKEN"],
        ),
        (
            vec![],
            vec![("RINGWS_PUBLISH_TOKEN", "")],
            vec!["RINGWS_PUBLISH_TOKEN", "empty"],
        ),
    ];
    for (args, env, must_mention) in cases {
        // In every mode, echo included: a bad source is an error even where the route would stay off.
        for mode in ["echo", "pubsub"] {
            let mut all = vec!["--mode", mode];
            all.extend(&args);
            let (code, stderr) = start_expect_failure(&all, &env);
            assert_eq!(code, Some(2), "{all:?} {env:?}: {stderr}");
            for text in &must_mention {
                assert!(
                    stderr.contains(text),
                    "{all:?} {env:?} should name {text:?}: {stderr}"
                );
            }
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}
