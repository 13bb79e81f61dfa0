//! Presence across nodes (`--presence` with `--broker`; docs/PROTOCOL.md): a query on any node lists the
//! members of every node (with their users and client info, counts of connections and distinct users); a
//! watcher gets the joins and leaves made on other nodes; a node killed with `kill -9` drops out of the
//! queries within `--presence-ttl`; and a node stopped gracefully (SIGTERM) takes its presence with it at
//! once (its members' leaves reach Redis before its broker stops).

mod common;

use common::redis::RedisServer;
use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SECRET: &str = "presence-nodes-secret";

fn node(redis: &RedisServer) -> ServerProcess {
    node_with_ttl(redis, "1s")
}

fn node_with_ttl(redis: &RedisServer, ttl: &str) -> ServerProcess {
    let dir = std::env::temp_dir().join(format!("ringws-presence-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let url = redis.url();
    let args = [
        "--mode",
        "pubsub",
        "--workers",
        "2",
        "--broker",
        &url,
        "--presence",
        "--presence-ttl",
        ttl,
        "--auth-jwt-secret-file",
        secret.to_str().unwrap(),
    ];
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

fn join(node: &ServerProcess, user: &str, info: Option<Value>) -> TcpStream {
    ws_at(
        node.addr,
        &format!("/?topic=room.1&token={}", token(user, info)),
    )
}

fn presence(stream: &mut TcpStream) -> Value {
    send_text(stream, r#"{"id":9,"op":"presence","topic":"room.1"}"#);
    loop {
        let reply = read_json(stream);
        if reply.get("id").is_some() {
            return reply;
        }
        // A join or leave event that came first.
    }
}

fn users(reply: &Value) -> Vec<String> {
    let mut users: Vec<String> = reply["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_string())
        .collect();
    users.sort();
    users
}

#[test]
fn members_of_every_node_are_listed_and_their_events_reach_every_node() {
    let redis = RedisServer::start();
    let a = node(&redis);
    let mut b = node(&redis);
    let mut alice = ws_v1(a.addr, &format!("/?token={}", token("alice", None)));
    send_text(
        &mut alice,
        r#"{"id":1,"op":"sub","topic":"room.1","presence":true}"#,
    );
    assert_eq!(read_json(&mut alice)["ok"], "sub");
    assert_eq!(read_json(&mut alice)["join"]["user"], "alice");
    redis.wait_subscribers("ringws:room.1", 1, Duration::from_secs(5));

    // Bob joins on the other node: alice's watcher hears it, with his client info.
    let bob = join(&b, "bob", Some(json!({"name": "Bob"})));
    let event = read_json(&mut alice);
    assert_eq!(event["join"]["user"], "bob", "{event}");
    assert_eq!(event["join"]["info"], json!({"name": "Bob"}), "{event}");
    let bob_client = event["join"]["client"].as_str().unwrap().to_string();
    // Client ids name their node: unique across nodes.
    let alice_client = {
        let reply = presence(&mut alice);
        assert_eq!(users(&reply), ["alice", "bob"], "{reply}");
        assert_eq!(
            (reply["connections"].clone(), reply["users"].clone()),
            (json!(2), json!(2))
        );
        reply["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["client"].as_str().unwrap().to_string())
            .find(|c| *c != bob_client)
            .unwrap()
    };
    assert_ne!(
        alice_client.split('.').next(),
        bob_client.split('.').next(),
        "each node's ids start with the node's name"
    );

    // Bob leaves (a TCP reset): alice hears it on her node.
    socket2::SockRef::from(&bob)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(bob);
    let event = read_json(&mut alice);
    assert_eq!(event["leave"]["client"], bob_client.as_str(), "{event}");

    // Carol on node B, then node B is killed without a word: she is listed until the TTL passes.
    let _carol = join(&b, "carol", None);
    assert_eq!(read_json(&mut alice)["join"]["user"], "carol");
    assert_eq!(users(&presence(&mut alice)), ["alice", "carol"]);
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(5));
    let killed = Instant::now();
    loop {
        let reply = presence(&mut alice);
        if users(&reply) == ["alice"] {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(4),
            "node B's members still listed 4 s after it died: {reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Within the TTL (1 s), plus a refresh period at most.
    assert!(killed.elapsed() < Duration::from_millis(2500));
    // Every query went to Redis (the fetch connection).
    let text = metrics_text(a.addr);
    let fetches: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("ringws_broker_history_fetches_total ")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(fetches >= 3, "{text}");
}

#[test]
fn a_node_restarted_redis_gets_its_members_written_again() {
    let mut redis = RedisServer::start();
    let a = node(&redis);
    let mut alice = ws_v1(a.addr, &format!("/?token={}", token("alice", None)));
    send_text(&mut alice, r#"{"id":1,"op":"sub","topic":"room.1"}"#);
    assert_eq!(read_json(&mut alice)["ok"], "sub");
    let _bob = join(&a, "bob", None);
    assert_eq!(users(&presence(&mut alice)), ["alice", "bob"]);
    // Redis restarts empty: the node's publisher reconnects and writes its members again.
    redis.restart();
    let restarted = Instant::now();
    loop {
        let reply = presence(&mut alice);
        if reply.get("error").is_none() && users(&reply) == ["alice", "bob"] {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "members not back after Redis restarted: {reply}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn connections(stream: &mut TcpStream) -> u64 {
    presence(stream)["connections"].as_u64().expect("a count")
}

#[test]
fn a_node_stopped_with_sigterm_leaves_no_members_behind() {
    let redis = RedisServer::start();
    // A TTL far longer than the test: only the leaves can take A's members out.
    let mut a = node_with_ttl(&redis, "30s");
    let b = node_with_ttl(&redis, "30s");
    let _members: Vec<_> = ["m1", "m2", "m3", "m4", "m5"]
        .iter()
        .map(|user| join(&a, user, None))
        .collect();
    let mut watcher = ws_v1(
        b.addr,
        &format!("/?topic=room.1&token={}", token("w", None)),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while connections(&mut watcher) < 6 {
        assert!(
            Instant::now() < deadline,
            "the five members of A never listed on B"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a.signal("TERM");
    a.wait_exit(Duration::from_secs(10));
    assert_eq!(connections(&mut watcher), 1);
    let left = redis.cli(&["--scan", "--pattern", "ringws:pm:room.1:*"]);
    assert_eq!(left.len(), 1, "only B's hash is left: {left:?}");
}
