//! The token's `channels` on an open connection: `sub` (JSON, binary, `?topic=` at open) and `pub` outside
//! them get `{"error":"not allowed",...}` and the connection stays, counted in `ringws_auth_denials_total`;
//! allowed ones (exact names and `prefix*` patterns) are delivered; the permission rule replaces the
//! publish-token rule; when `exp` passes the connection is closed with 4001.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const SECRET: &str = "permissions-secret";

fn token(claims: serde_json::Value) -> String {
    hs256_token(&claims, SECRET)
}

fn server(extra: &[&str]) -> ServerProcess {
    let dir = std::env::temp_dir().join(format!("ringws-auth-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut args = vec![
        "--mode",
        "pubsub",
        "--workers",
        "2",
        "--auth-jwt-secret-file",
        secret.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(ringws_binary(), &args)
}

fn binary_command(stream: &mut TcpStream, op: u8, topic: &str, payload: &[u8]) {
    let mut cmd = vec![op, topic.len() as u8];
    cmd.extend_from_slice(topic.as_bytes());
    cmd.extend_from_slice(payload);
    stream
        .write_all(&client_frame(true, 0, 0x2, &cmd, true))
        .unwrap();
}

fn denials(server: &ServerProcess, op: &str) -> u64 {
    let text = metrics_text(server.addr);
    (0..2)
        .map(|w| {
            let series = format!("ringws_auth_denials_total{{worker=\"{w}\",op=\"{op}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&series)?.parse::<u64>().ok())
                .expect("the series")
        })
        .sum()
}

#[test]
fn commands_outside_the_tokens_channels_are_refused_and_the_connection_stays() {
    // A publish token is set: without auth it would refuse every WebSocket `pub`.
    let server = server(&["--publish-token", "http-token"]);
    let channels = json!({"sub": ["room.1", "news.*"], "pub": ["room.1"]});
    let alice = token(json!({"sub": "alice", "exp": unix_now() + 60, "channels": channels}));
    let mut a = ws_at(
        server.addr,
        &format!("/ws?topic=news.sport&topic=secret&token={alice}"),
    );
    // `?topic=` at open: `secret` is refused, `news.sport` is taken.
    assert_eq!(
        read_text(&mut a),
        r#"{"error":"not allowed","op":"sub","topic":"secret"}"#
    );
    send_text(&mut a, r#"{"op":"sub","topic":"room.1"}"#);
    assert_eq!(read_text(&mut a), r#"{"ok":"sub","topic":"room.1"}"#);
    for topic in ["room.10", "room", "news", "other"] {
        send_text(&mut a, &format!(r#"{{"op":"sub","topic":"{topic}"}}"#));
        assert_eq!(
            read_text(&mut a),
            format!(r#"{{"error":"not allowed","op":"sub","topic":"{topic}"}}"#)
        );
    }
    binary_command(&mut a, 1, "news.a.b", b"");
    assert_eq!(read_text(&mut a), r#"{"ok":"sub","topic":"news.a.b"}"#);
    binary_command(&mut a, 1, "room.2", b"");
    assert_eq!(
        read_text(&mut a),
        r#"{"error":"not allowed","op":"sub","topic":"room.2"}"#
    );
    // Publishing: on room.1 (allowed; the publish token does not apply), not on news.sport.
    send_text(&mut a, r#"{"op":"pub","topic":"news.sport","data":"x"}"#);
    assert_eq!(
        read_text(&mut a),
        r#"{"error":"not allowed","op":"pub","topic":"news.sport"}"#
    );
    binary_command(&mut a, 3, "news.sport", b"y");
    assert_eq!(
        read_text(&mut a),
        r#"{"error":"not allowed","op":"pub","topic":"news.sport"}"#
    );
    send_text(&mut a, r#"{"op":"pub","topic":"room.1","data":"hello"}"#);
    assert_eq!(read_text(&mut a), "hello");
    binary_command(&mut a, 3, "room.1", &[1, 2]);
    assert_eq!(read_server_frame(&mut a), Some((true, 0x2, vec![1, 2])));
    // Another user without `pub` rights publishes nothing; one allowed on news.* reaches alice's
    // subscriptions.
    let bob = token(json!({"sub": "bob", "exp": unix_now() + 60, "channels": {"pub": ["news.*"]}}));
    let mut b = ws_at(server.addr, &format!("/ws?token={bob}"));
    send_text(&mut b, r#"{"op":"pub","topic":"room.1","data":"nope"}"#);
    assert_eq!(
        read_text(&mut b),
        r#"{"error":"not allowed","op":"pub","topic":"room.1"}"#
    );
    send_text(&mut b, r#"{"op":"pub","topic":"news.a.b","data":"news"}"#);
    assert_eq!(read_text(&mut a), "news");
    // A token without channels may do nothing.
    let carol = token(json!({"sub": "carol", "exp": unix_now() + 60}));
    let mut c = ws_at(server.addr, &format!("/ws?token={carol}"));
    send_text(&mut c, r#"{"op":"sub","topic":"room.1"}"#);
    assert_eq!(
        read_text(&mut c),
        r#"{"error":"not allowed","op":"sub","topic":"room.1"}"#
    );
    assert_eq!(denials(&server, "sub"), 7);
    assert_eq!(denials(&server, "pub"), 3);
    // Every connection is still open.
    assert_eq!(metric_sum(server.addr, "ringws_websockets_open"), 3);
}

#[test]
fn an_expired_token_closes_its_connection_with_4001() {
    let server = server(&[]);
    let exp = unix_now() + 2;
    let short = token(json!({"sub": "dan", "exp": exp, "channels": {"sub": ["t"]}}));
    let long = token(json!({"sub": "eve", "exp": unix_now() + 600, "channels": {"sub": ["t"]}}));
    let mut a = ws_at(server.addr, &format!("/ws?topic=t&token={short}"));
    let mut b = ws_at(server.addr, &format!("/ws?topic=t&token={long}"));
    a.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let (_, opcode, payload) = read_server_frame(&mut a).expect("a close frame");
    assert_eq!(opcode, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4001);
    assert_eq!(&payload[2..], b"token expired");
    // Not before `exp`, and within about a second of it.
    let closed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let exp = Duration::from_secs(exp);
    assert!(closed_at >= exp, "closed {:?} before exp", exp - closed_at);
    assert!(
        closed_at < exp + Duration::from_secs(2),
        "closed {:?} after exp",
        closed_at - exp
    );
    assert_eq!(
        metric_sum(server.addr, "ringws_auth_expired_closes_total"),
        1
    );
    // The other connection is still open and subscribed.
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(read_server_frame(&mut b).is_none());
    assert_eq!(metric_sum(server.addr, "ringws_websockets_open"), 1);
}
