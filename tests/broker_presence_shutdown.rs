//! A node stopped gracefully (SIGTERM) takes its presence with it: its members' leaves reach Redis before
//! the broker stops, so the other nodes list nobody of it (not until `--presence-ttl`, at once).

mod common;

use common::redis::RedisServer;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn node(redis: &RedisServer) -> ServerProcess {
    let url = redis.url();
    ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "pubsub",
            "--workers",
            "2",
            "--broker",
            &url,
            "--presence",
            "--presence-ttl",
            "30s",
        ],
    )
}

fn connections(stream: &mut std::net::TcpStream) -> u64 {
    send_text(stream, r#"{"id":9,"op":"presence","topic":"room"}"#);
    loop {
        let reply: Value = read_json(stream);
        if reply.get("id").is_some() {
            return reply["connections"]
                .as_u64()
                .unwrap_or_else(|| panic!("{reply}"));
        }
    }
}

#[test]
fn a_node_stopped_with_sigterm_leaves_no_members_behind() {
    let redis = RedisServer::start();
    let mut a = node(&redis);
    let b = node(&redis);
    let _members: Vec<_> = (0..5).map(|_| ws_at(a.addr, "/?topic=room")).collect();
    let mut watcher = ws_v1(b.addr, "/?topic=room");
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
    // Well within the 30 s TTL: the leaves were written before A stopped.
    assert_eq!(connections(&mut watcher), 1);
    let left = redis.cli(&["--scan", "--pattern", "ringws:pm:room:*"]);
    assert_eq!(left.len(), 1, "only B's hash is left: {left:?}");
}
