//! `--broker`: two nodes joined through a Redis of the test's own. Publishes on one node (WebSocket `pub`
//! and `POST /publish`) reach the subscribers of both, once each, in publish order; a node subscribes to a
//! topic on Redis while it has local subscribers and unsubscribes after the last one leaves.

mod common;

use common::redis::RedisServer;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn node(redis: &RedisServer, extra: &[&str]) -> ServerProcess {
    let url = redis.url();
    let mut args = vec!["--mode", "pubsub", "--workers", "2", "--broker", &url];
    args.extend_from_slice(extra);
    ServerProcess::start(ringws_binary(), &args)
}

/// Reads `expected` in order, then makes sure nothing else arrives (no message twice).
fn expect_exactly(sub: &mut TcpStream, expected: &[String], who: &str) {
    for (i, text) in expected.iter().enumerate() {
        assert_eq!(&read_text(sub), text, "{who}, message {i}");
    }
    expect_nothing_more(sub, expected.len(), who);
}

/// Reads `expected` in any order (each once), then makes sure nothing else arrives.
fn expect_each_once(sub: &mut TcpStream, expected: &[String], who: &str) {
    let mut got: Vec<String> = expected.iter().map(|_| read_text(sub)).collect();
    got.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(got, want, "{who}");
    expect_nothing_more(sub, expected.len(), who);
}

fn expect_nothing_more(sub: &mut TcpStream, count: usize, who: &str) {
    sub.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let extra = std::io::Read::read(sub, &mut byte);
    assert!(
        matches!(&extra, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{who}: more than the {count} messages published ({extra:?})"
    );
}

/// Subscribers of `news`: two on `a`, two on `b` (the node's two workers share them).
fn subscribers(a: &ServerProcess, b: &ServerProcess, redis: &RedisServer) -> Vec<TcpStream> {
    let subs: Vec<TcpStream> = [a, a, b, b]
        .iter()
        .map(|node| ws_at(node.addr, "/ws?topic=news"))
        .collect();
    // Each node subscribed once on Redis, whatever its number of local subscribers.
    redis.wait_subscribers("ringws:news", 2, Duration::from_secs(5));
    subs
}

#[test]
fn websocket_publishes_reach_every_node_once_in_order() {
    let redis = RedisServer::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let mut subs = subscribers(&a, &b, &redis);
    let mut publisher = ws_at(a.addr, "/ws");
    const M: usize = 50;
    let expected: Vec<String> = (0..M).map(|i| format!("item {i}")).collect();
    for text in &expected {
        send_text(
            &mut publisher,
            &format!(r#"{{"op":"pub","topic":"news","data":"{text}"}}"#),
        );
    }
    for (s, sub) in subs.iter_mut().enumerate() {
        expect_exactly(sub, &expected, &format!("subscriber {s}"));
    }
    // Node b decoded each message from Redis once; node a skipped its own echoes.
    assert_eq!(metric_sum(b.addr, "ringws_broker_received_total"), M as u64);
    assert_eq!(metric_sum(a.addr, "ringws_broker_received_total"), 0);
    assert_eq!(
        metric_sum(a.addr, "ringws_broker_published_total"),
        M as u64
    );
    assert_eq!(metric_sum(b.addr, "ringws_frames_encoded_total"), 0);
    assert_eq!(metric_sum(b.addr, "ringws_broker_messages_lost_total"), 0);
    assert_eq!(metric_sum(a.addr, "ringws_broker_up"), 1);
}

#[test]
fn http_publishes_reach_every_node_once_in_order() {
    let redis = RedisServer::start();
    let token = ["--publish-token", "s3cret"];
    let a = node(&redis, &token);
    let b = node(&redis, &token);
    let mut subs = subscribers(&a, &b, &redis);
    const M: usize = 20;
    let expected: Vec<String> = (0..M).map(|i| format!("http {i}")).collect();
    for text in &expected {
        let mut http = connect(a.addr);
        let (status, head) = http_exchange(
            &mut http,
            &format!(
                "POST /publish?topic=news HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\
                 Content-Length: {}\r\n\r\n{text}",
                text.len()
            ),
        );
        assert_eq!(status, 200, "{head}");
    }
    // Each request is a publisher of its own, and node a's two workers take them in turn: on node a a
    // publish handed to the other worker may be overtaken by the next request's (as without a broker).
    // Node b gets them in the order they reached Redis, which is the order they were made.
    for (s, sub) in subs.iter_mut().enumerate() {
        if s < 2 {
            expect_each_once(sub, &expected, &format!("subscriber {s} (node a)"));
        } else {
            expect_exactly(sub, &expected, &format!("subscriber {s} (node b)"));
        }
    }
}

#[test]
fn a_node_leaves_a_topic_on_redis_after_its_last_subscriber() {
    let redis = RedisServer::start();
    let a = node(&redis, &[]);
    let mut first = ws_at(a.addr, "/ws?topic=t");
    let mut second = ws_at(a.addr, "/ws");
    send_text(&mut second, r#"{"op":"sub","topic":"t"}"#);
    assert_eq!(read_text(&mut second), r#"{"ok":"sub","topic":"t"}"#);
    redis.wait_subscribers("ringws:t", 1, Duration::from_secs(5));
    assert!(redis.channels().contains(&"ringws:t".to_string()));
    // One of two leaves: still subscribed.
    send_text(&mut second, r#"{"op":"unsub","topic":"t"}"#);
    assert_eq!(read_text(&mut second), r#"{"ok":"unsub","topic":"t"}"#);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(redis.subscribers("ringws:t"), 1);
    // The last one closes: the node unsubscribes.
    first
        .write_all(&client_frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
        .unwrap();
    assert_eq!(expect_close(&mut first), Some(1000));
    redis.wait_subscribers("ringws:t", 0, Duration::from_secs(5));
    assert!(!redis.channels().contains(&"ringws:t".to_string()));
    // The broadcast channel stays.
    assert_eq!(redis.channels(), ["ringws:#broadcast"]);
}

#[test]
fn broadcasts_reach_every_node_once_in_order() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--mode", "broadcast", "--workers", "2", "--broker", &url];
    let a = ServerProcess::start(ringws_binary(), &args);
    let b = ServerProcess::start(ringws_binary(), &args);
    // Every node is on the broadcast channel while its link is up.
    redis.wait_subscribers("ringws:#broadcast", 2, Duration::from_secs(5));
    let mut clients: Vec<TcpStream> = [&a, &a, &b, &b]
        .iter()
        .map(|node| ws_at(node.addr, "/"))
        .collect();
    wait_open(|| metrics_text(a.addr), 2, Duration::from_secs(5));
    wait_open(|| metrics_text(b.addr), 2, Duration::from_secs(5));
    const M: usize = 30;
    let expected: Vec<String> = (0..M).map(|i| format!("all {i}")).collect();
    for text in &expected {
        send_text(&mut clients[0], text);
    }
    // The sender too (--broadcast-include-sender is on by default).
    for (c, client) in clients.iter_mut().enumerate() {
        expect_exactly(client, &expected, &format!("client {c}"));
    }
}

#[test]
fn topics_spread_over_two_redis_reach_every_node() {
    let (first, second) = (RedisServer::start(), RedisServer::start());
    let (url1, url2) = (first.url(), second.url());
    let args = [
        "--mode",
        "pubsub",
        "--workers",
        "2",
        "--broker",
        &url1,
        "--broker",
        &url2,
    ];
    let a = ServerProcess::start(ringws_binary(), &args);
    let b = ServerProcess::start(ringws_binary(), &args);
    let topics: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    let mut sub = ws_at(b.addr, &format!("/ws?{}", query.join("&")));
    // Each topic's channel lives on exactly one of the two, and both carry some.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let on: Vec<(u64, u64)> = topics
            .iter()
            .map(|t| {
                let channel = format!("ringws:{t}");
                (first.subscribers(&channel), second.subscribers(&channel))
            })
            .collect();
        if on.iter().all(|&(x, y)| x + y == 1) {
            assert!(on.iter().any(|&(x, _)| x == 1), "{on:?}");
            assert!(on.iter().any(|&(_, y)| y == 1), "{on:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{on:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut publisher = ws_at(a.addr, "/ws");
    let mut expected = Vec::new();
    for round in 0..3 {
        for t in &topics {
            let text = format!("{t} {round}");
            send_text(
                &mut publisher,
                &format!(r#"{{"op":"pub","topic":"{t}","data":"{text}"}}"#),
            );
            expected.push(text);
        }
    }
    // Order holds per topic (each topic has one Redis); across topics it may not.
    let mut got: Vec<String> = (0..expected.len()).map(|_| read_text(&mut sub)).collect();
    for t in &topics {
        let mine: Vec<&String> = got
            .iter()
            .filter(|m| m.starts_with(&format!("{t} ")))
            .collect();
        let want: Vec<String> = (0..3).map(|r| format!("{t} {r}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "{t}");
    }
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

#[test]
fn publishes_from_another_node_reach_compressing_subscribers_compressed_once() {
    use ringws::protocol::deflate::Inflater;
    let redis = RedisServer::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    // On node b: one subscriber that agreed permessage-deflate, one that did not.
    let (mut compressing, head) = websocket_offering(b.addr, Some("permessage-deflate"));
    assert!(head.contains("permessage-deflate"), "{head}");
    compressing
        .write_all(&client_frame(
            true,
            0,
            0x1,
            br#"{"op":"sub","topic":"news"}"#,
            true,
        ))
        .unwrap();
    let (_, opcode, reply) = read_server_frame(&mut compressing).expect("the sub reply");
    assert_eq!(
        (opcode, reply.as_slice()),
        (0x1, br#"{"ok":"sub","topic":"news"}"#.as_slice())
    );
    let mut plain = ws_at(b.addr, "/ws?topic=news");
    redis.wait_subscribers("ringws:news", 1, Duration::from_secs(5));
    let record = r#"{\"user\":\"alice\",\"room\":\"lobby\",\"text\":\"hello there\"}"#;
    let data = record.repeat(20);
    let text = data.replace("\\\"", "\"");
    let mut publisher = ws_at(a.addr, "/ws");
    send_text(
        &mut publisher,
        &format!(r#"{{"op":"pub","topic":"news","data":"{data}"}}"#),
    );
    // Compressed (RSV1) for the subscriber that agreed, and it inflates to the message.
    use std::io::Read;
    let mut head = [0u8; 2];
    compressing.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x80 | 0x40 | 0x1, "FIN, RSV1, text");
    assert!(
        head[1] < 126,
        "{head:?}: {} bytes compress well under 126",
        text.len()
    );
    let mut payload = vec![0u8; head[1] as usize];
    compressing.read_exact(&mut payload).unwrap();
    assert!(
        payload.len() < text.len() / 2,
        "{} of {}",
        payload.len(),
        text.len()
    );
    let mut inflater = Inflater::new();
    let mut out = Vec::new();
    inflater.inflate(&payload, &mut out, 1 << 20).unwrap();
    inflater.finish(&mut out, 1 << 20).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), text);
    // Plain for the other one.
    assert_eq!(read_text(&mut plain), text);
    // Compressed once on node b, whose workers framed nothing themselves.
    assert_eq!(
        metric_sum(b.addr, "ringws_broker_frames_compressed_total"),
        1
    );
    assert_eq!(metric_sum(b.addr, "ringws_frames_encoded_total"), 0);
}
