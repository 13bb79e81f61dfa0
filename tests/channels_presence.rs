//! Presence on one node (`--presence`; docs/PROTOCOL.md): who subscribes to a topic (client id, user id
//! and client info from the token), counts of connections and distinct users, join and leave events for
//! the `ringws.v1` subscribers that ask, and a leave for every way a subscription really ends:
//! unsubscribe, close, TCP reset, and the idle/ping timeout of a peer that went silent.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SECRET: &str = "presence-secret";

fn server(extra: &[&str]) -> ServerProcess {
    let dir = std::env::temp_dir().join(format!("ringws-presence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut args = vec![
        "--mode",
        "pubsub",
        "--workers",
        "2",
        "--presence",
        "--auth-jwt-secret-file",
        secret.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(ringws_binary(), &args)
}

fn token(user: &str, info: Option<Value>) -> String {
    let mut claims = json!({"sub": user, "exp": unix_now() + 600,
        "channels": {"sub": ["room.*"], "pub": ["room.*"]}});
    if let Some(info) = info {
        claims["info"] = info;
    }
    hs256_token(&claims, SECRET)
}

fn watcher(server: &ServerProcess, user: &str, topic: &str) -> (TcpStream, String) {
    let mut stream = ws_v1(server.addr, &format!("/?token={}", token(user, None)));
    send_text(
        &mut stream,
        &json!({"id": 1, "op": "sub", "topic": topic, "presence": true}).to_string(),
    );
    assert_eq!(read_json(&mut stream)["ok"], "sub");
    // Its own join comes back to it.
    let event = read_json(&mut stream);
    let client = event["join"]["client"]
        .as_str()
        .expect("own join")
        .to_string();
    (stream, client)
}

fn join(server: &ServerProcess, user: &str, info: Option<Value>, topic: &str) -> TcpStream {
    ws_at(
        server.addr,
        &format!("/?topic={topic}&token={}", token(user, info)),
    )
}

fn presence(stream: &mut TcpStream, topic: &str) -> Value {
    send_text(
        stream,
        &json!({"id": 9, "op": "presence", "topic": topic}).to_string(),
    );
    read_json(stream)
}

fn next_event(stream: &mut TcpStream) -> Value {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    read_json(stream)
}

#[test]
fn joins_and_leaves_follow_subscriptions_however_they_end() {
    let server = server(&["--idle-timeout", "1s", "--ping-timeout", "1s"]);
    let (mut alice, alice_client) = watcher(&server, "alice", "room.1");

    // A member with client info, by the token's `info` claim.
    let bob = join(&server, "bob", Some(json!({"name": "Bob"})), "room.1");
    let event = next_event(&mut alice);
    assert_eq!(event["join"]["topic"], "room.1", "{event}");
    assert_eq!(event["join"]["user"], "bob", "{event}");
    assert_eq!(event["join"]["info"], json!({"name": "Bob"}), "{event}");
    let bob_client = event["join"]["client"].as_str().unwrap().to_string();

    // Two connections of one user: three members, two users.
    let mut bob2 = join(&server, "bob", None, "room.1");
    assert_eq!(next_event(&mut alice)["join"]["user"], "bob");
    let reply = presence(&mut alice, "room.1");
    assert_eq!(reply["ok"], "presence", "{reply}");
    assert_eq!(
        (reply["connections"].clone(), reply["users"].clone()),
        (json!(3), json!(2))
    );
    let mut clients: Vec<&str> = reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["client"].as_str().unwrap())
        .collect();
    clients.sort();
    let mut expected = vec![alice_client.as_str(), bob_client.as_str()];
    expected.push(
        reply["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["client"].as_str().unwrap())
            .find(|c| *c != alice_client && *c != bob_client)
            .unwrap(),
    );
    expected.sort();
    assert_eq!(clients, expected);

    // Unsubscribe: a leave.
    send_text(&mut bob2, r#"{"op":"unsub","topic":"room.1"}"#);
    let event = next_event(&mut alice);
    assert_eq!(event["leave"]["user"], "bob", "{event}");
    drop(bob2);

    // A TCP reset: a leave.
    socket2::SockRef::from(&bob)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(bob);
    let event = next_event(&mut alice);
    assert_eq!(event["leave"]["client"], bob_client.as_str(), "{event}");

    // A peer that goes silent (never answers the idle ping): a leave after the idle and ping timeouts.
    let carol = join(&server, "carol", None, "room.1");
    assert_eq!(next_event(&mut alice)["join"]["user"], "carol");
    let silent_since = Instant::now();
    // Alice keeps her own connection alive meanwhile by answering pings: a presence query each 300 ms
    // also counts as activity. Read events until carol's leave.
    let leave = loop {
        send_text(&mut alice, r#"{"id":5,"op":"presence","topic":"room.1"}"#);
        let message = next_event(&mut alice);
        if message.get("leave").is_some() {
            break message;
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            silent_since.elapsed() < Duration::from_secs(8),
            "no leave for the silent peer"
        );
    };
    assert_eq!(leave["leave"]["user"], "carol", "{leave}");
    assert!(
        silent_since.elapsed() >= Duration::from_millis(1500),
        "left too early"
    );
    drop(carol);
    let reply = presence(&mut alice, "room.1");
    assert_eq!(
        (reply["connections"].clone(), reply["users"].clone()),
        (json!(1), json!(1))
    );

    let text = metrics_text(server.addr);
    assert!(text.contains("ringws_presence_members 1\n"), "{text}");
    assert!(text.contains("ringws_presence_joins_total 4\n"), "{text}");
    assert!(text.contains("ringws_presence_leaves_total 3\n"), "{text}");
}

#[test]
fn presence_needs_the_permission_to_subscribe_and_the_flag() {
    let server = server(&[]);
    let (mut alice, _) = watcher(&server, "alice", "room.1");
    let reply = presence(&mut alice, "secret");
    assert_eq!(
        reply,
        json!({"id": 9, "error": "not allowed", "code": 403, "op": "presence", "topic": "secret"})
    );
    // A raw client cannot ask for events (it could not tell them from publications).
    let mut raw = ws_at(server.addr, &format!("/?token={}", token("dave", None)));
    send_text(&mut raw, r#"{"op":"sub","topic":"room.2","presence":true}"#);
    let reply: Value = serde_json::from_str(&read_text(&mut raw)).unwrap();
    assert_eq!(
        reply["error"],
        "since and presence need the ringws.v1 subprotocol"
    );

    let plain = ServerProcess::start(ringws_binary(), &["--mode", "pubsub"]);
    let mut client = ws_v1(plain.addr, "/");
    assert_eq!(presence(&mut client, "room.1")["code"], 501);
    send_text(
        &mut client,
        r#"{"id":2,"op":"sub","topic":"t","presence":true}"#,
    );
    assert_eq!(
        read_json(&mut client),
        json!({"id": 2, "error": "presence is off (--presence)", "code": 501, "op": "sub", "topic": "t"})
    );
}
