//! History across nodes (`--history-size` with `--broker`; docs/PROTOCOL.md): offsets and epochs are
//! assigned in Redis, so every node's `ringws.v1` subscribers see the same publication at the same offset;
//! a client that comes back on another node (one that never had the topic: the answer comes from Redis)
//! recovers exactly what was published meanwhile from any node, then the live ones; a gap no longer whole,
//! or another epoch, is `recovered: false`; and under a publish load from both nodes, reconnecting clients
//! see no gap and no duplicate.

mod common;

use common::redis::RedisServer;
use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn node(redis: &RedisServer, extra: &[&str]) -> ServerProcess {
    let url = redis.url();
    let mut args = vec!["--mode", "pubsub", "--workers", "2", "--broker", &url];
    args.extend_from_slice(extra);
    if !extra.contains(&"--history-size") {
        args.extend_from_slice(&["--history-size", "100"]);
    }
    ServerProcess::start(ringws_binary(), &args)
}

fn sub(stream: &mut TcpStream, id: u64, topic: &str, since: Option<(u64, &str)>) -> Value {
    let mut command = json!({"id": id, "op": "sub", "topic": topic});
    if let Some((offset, epoch)) = since {
        command["since"] = json!({"offset": offset, "epoch": epoch});
    }
    send_text(stream, &command.to_string());
    let reply = read_json(stream);
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["ok"], "sub", "{reply}");
    reply
}

fn publish(stream: &mut TcpStream, topic: &str, data: &str) {
    send_text(
        stream,
        &json!({"op": "pub", "topic": topic, "data": data}).to_string(),
    );
}

/// One envelope: (offset, epoch, data).
fn publication(stream: &mut TcpStream) -> (u64, String, String) {
    let message = read_json(stream);
    let publication = &message["pub"];
    (
        publication["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("{message}")),
        publication["epoch"].as_str().expect("epoch").to_string(),
        publication["data"].as_str().expect("data").to_string(),
    )
}

fn expect_nothing_more(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    assert!(read_server_frame(stream).is_none(), "a message more");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}

#[test]
fn every_node_sees_the_same_offsets_and_a_client_recovers_on_another_node() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut on_a = ws_v1(a.addr, "/");
    let mut on_b = ws_v1(b.addr, "/");
    // A topic without history yet: no position in the reply.
    let reply = sub(&mut on_a, 1, "t", None);
    assert_eq!(reply, json!({"id": 1, "ok": "sub", "topic": "t"}));
    sub(&mut on_b, 1, "t", None);
    redis.wait_subscribers("ringws:t", 2, Duration::from_secs(5));
    let (mut pub_a, mut pub_b) = (ws_at(a.addr, "/"), ws_at(b.addr, "/"));
    for i in 1..=6 {
        let publisher = if i % 2 == 0 { &mut pub_b } else { &mut pub_a };
        publish(publisher, "t", &format!("m{i}"));
        // One at a time: the order of two nodes' concurrent publishes is Redis's.
        let got_a = publication(&mut on_a);
        let got_b = publication(&mut on_b);
        assert_eq!(got_a, got_b, "both nodes, publication {i}");
        assert_eq!((got_a.0, got_a.2.as_str()), (i, format!("m{i}").as_str()));
    }
    let epoch = publication_epoch(&redis, "t");
    // A client of A leaves after offset 6; 7..9 are published on both nodes meanwhile.
    drop(on_a);
    for i in 7..=9 {
        let publisher = if i % 2 == 0 { &mut pub_b } else { &mut pub_a };
        publish(publisher, "t", &format!("m{i}"));
        assert_eq!(publication(&mut on_b).0, i);
    }
    // It comes back on a third node that never had the topic: Redis answers.
    let c = node(&redis, &[]);
    let mut back = ws_v1(c.addr, "/");
    let reply = sub(&mut back, 2, "t", Some((6, &epoch)));
    assert_eq!(
        reply,
        json!({"id": 2, "ok": "sub", "topic": "t", "offset": 9, "epoch": epoch, "recovered": true})
    );
    for i in 7..=9 {
        assert_eq!(publication(&mut back), (i, epoch.clone(), format!("m{i}")));
    }
    // A left (its last subscriber gone), B and C listen.
    redis.wait_subscribers("ringws:t", 2, Duration::from_secs(5));
    publish(&mut pub_a, "t", "m10");
    assert_eq!(publication(&mut back).0, 10);
    assert_eq!(publication(&mut on_b).0, 10);
    expect_nothing_more(&mut back);
    // On a node that has the topic, the mirror answers (no fetch): the same result.
    let mut again = ws_v1(b.addr, "/");
    let reply = sub(&mut again, 3, "t", Some((8, &epoch)));
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["offset"], 10, "{reply}");
    assert_eq!(publication(&mut again).0, 9);
    assert_eq!(publication(&mut again).0, 10);
    expect_nothing_more(&mut again);
    let text = metrics_text(c.addr);
    assert!(
        text.contains("ringws_broker_history_fetches_total 1\n"),
        "{text}"
    );
    // History queries across nodes are Redis's: from any node, raw clients too.
    let mut raw = ws_at(c.addr, "/");
    send_text(&mut raw, r#"{"id":5,"op":"history","topic":"t","limit":2}"#);
    assert_eq!(
        read_json(&mut raw),
        json!({"id": 5, "ok": "history", "topic": "t", "offset": 10, "epoch": epoch,
               "publications": [{"offset": 9, "data": "m9"}, {"offset": 10, "data": "m10"}]})
    );
    send_text(
        &mut raw,
        &json!({"id": 6, "op": "history", "topic": "t", "since": {"offset": 7, "epoch": epoch}})
            .to_string(),
    );
    let reply = read_json(&mut raw);
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(
        reply["publications"].as_array().map(Vec::len),
        Some(3),
        "{reply}"
    );
    send_text(&mut raw, r#"{"id":7,"op":"history","topic":"never"}"#);
    assert_eq!(
        read_json(&mut raw),
        json!({"id": 7, "ok": "history", "topic": "never", "publications": []})
    );
}

fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The epoch Redis keeps for `topic`.
fn publication_epoch(redis: &RedisServer, topic: &str) -> String {
    let out = redis.cli(&["HGET", &format!("ringws:hm:{topic}"), "epoch"]);
    out.first().cloned().expect("an epoch")
}

#[test]
fn recovery_across_nodes_is_refused_when_the_gap_is_gone_or_the_epoch_changed() {
    let redis = RedisServer::start();
    let a = node(&redis, &["--history-size", "3"]);
    let b = node(&redis, &["--history-size", "3"]);
    let mut watcher = ws_v1(a.addr, "/");
    sub(&mut watcher, 1, "g", None);
    redis.wait_subscribers("ringws:g", 1, Duration::from_secs(5));
    let mut publisher = ws_at(a.addr, "/");
    for i in 1..=12 {
        publish(&mut publisher, "g", &format!("{i}"));
        assert_eq!(publication(&mut watcher).0, i);
    }
    let epoch = publication_epoch(&redis, "g");
    // Redis keeps about 3 (MAXLEN ~): 2 is long gone.
    let mut late = ws_v1(b.addr, "/");
    let reply = sub(&mut late, 2, "g", Some((2, &epoch)));
    assert_eq!(
        reply,
        json!({"id": 2, "ok": "sub", "topic": "g", "offset": 12, "epoch": epoch, "recovered": false})
    );
    // Still subscribed, from the position on.
    redis.wait_subscribers("ringws:g", 2, Duration::from_secs(5));
    publish(&mut publisher, "g", "13");
    assert_eq!(publication(&mut late).0, 13);
    assert_eq!(publication(&mut watcher).0, 13);
    // The history lost in Redis (keys gone): a new epoch, old positions are refused.
    redis.cli(&["DEL", "ringws:hm:g", "ringws:hs:g"]);
    publish(&mut publisher, "g", "fresh");
    let (offset, new_epoch, data) = publication(&mut watcher);
    assert_eq!((offset, data.as_str()), (1, "fresh"));
    assert_ne!(new_epoch, epoch);
    let c = node(&redis, &["--history-size", "3"]);
    let mut old = ws_v1(c.addr, "/");
    let reply = sub(&mut old, 3, "g", Some((12, &epoch)));
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["epoch"], new_epoch.as_str(), "{reply}");
}

/// Publishers on both nodes, subscribers that leave and come back on the other node "since" their last
/// offset: every session continues exactly where the last one stopped, and a witness that never left
/// saw every publication once, in the same order.
#[test]
fn recovery_across_nodes_under_a_publish_load_has_no_gap_and_no_duplicate() {
    let redis = RedisServer::start();
    let big = ["--history-size", "100000", "--max-backpressure", "64MiB"];
    // Nodes 0 and 1 keep a subscriber all along (their mirrors answer recoveries); node 2 has only the
    // client that comes and goes (Redis answers each of its recoveries).
    let nodes = [node(&redis, &big), node(&redis, &big), node(&redis, &big)];
    let addrs = [nodes[0].addr, nodes[1].addr, nodes[2].addr];
    let mut witness = ws_v1(addrs[0], "/");
    sub(&mut witness, 1, "load", None);
    let mut other = ws_v1(addrs[1], "/");
    sub(&mut other, 1, "load", None);
    redis.wait_subscribers("ringws:load", 2, Duration::from_secs(5));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let witness_reader = std::thread::spawn(move || {
        let mut seen: Vec<String> = Vec::new();
        let mut epoch = String::new();
        loop {
            let (offset, e, data) = publication(&mut witness);
            if seen.is_empty() {
                epoch = e.clone();
            }
            assert_eq!(e, epoch);
            assert_eq!(offset, seen.len() as u64 + 1, "the witness");
            if data == "end" {
                return (seen, epoch);
            }
            seen.push(data);
        }
    });
    // The other node's standing subscriber drains too (a slow consumer would be closed).
    let other_reader = std::thread::spawn(move || loop {
        if publication(&mut other).2 == "end" {
            return;
        }
    });
    let mut publishers = Vec::new();
    for (p, &addr) in addrs.iter().take(2).enumerate() {
        let stop = std::sync::Arc::clone(&stop);
        publishers.push(std::thread::spawn(move || {
            let mut conn = ws_at(addr, "/");
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publish(&mut conn, "load", &format!("{p}:{n}"));
                n += 1;
                if n.is_multiple_of(4) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            n
        }));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut sessions: Vec<Vec<(u64, String)>> = Vec::new();
    let mut last: Option<(u64, String)> = None;
    for round in 0..9 {
        let mut client = ws_v1(addrs[round % 3], "/");
        let reply = match &last {
            None => sub(&mut client, 1, "load", None),
            Some((offset, epoch)) => {
                let reply = sub(&mut client, 1, "load", Some((*offset, epoch)));
                assert_eq!(reply["recovered"], true, "round {round}: {reply}");
                reply
            }
        };
        let position = reply["offset"].as_u64().unwrap_or(0);
        let mut at = last.as_ref().map_or(position, |(o, _)| *o);
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until || at < position {
            let (offset, epoch, data) = publication(&mut client);
            assert_eq!(offset, at + 1, "round {round}: after {at} came {offset}");
            at = offset;
            seen.push((offset, data));
            last = Some((offset, epoch));
        }
        sessions.push(seen);
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published: u64 = publishers.into_iter().map(|h| h.join().unwrap()).sum();
    // The last publication, after every publisher's reached Redis (two nodes' publishes have no order
    // between them until Redis gives them one).
    std::thread::sleep(Duration::from_millis(500));
    publish(&mut ws_at(addrs[0], "/"), "load", "end");
    let (reference, _) = witness_reader.join().unwrap();
    other_reader.join().unwrap();
    assert_eq!(reference.len() as u64, published);
    assert!(published > 2000, "the load was too light: {published}");
    for seen in &sessions {
        for (offset, data) in seen {
            assert_eq!(&reference[*offset as usize - 1], data, "offset {offset}");
        }
    }
    let fetches = metric_sum(
        &metrics_text(addrs[2]),
        "ringws_broker_history_fetches_total",
    );
    assert!(fetches >= 3, "node 2 fetched {fetches} times");
    let mut next = [0u64; 2];
    for data in &reference {
        let (p, n) = data.split_once(':').unwrap();
        let (p, n): (usize, u64) = (p.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, next[p], "publisher {p}");
        next[p] += 1;
    }
}
