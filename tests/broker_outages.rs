//! `--broker` when Redis is not there, goes away, or talks nonsense: the node starts and serves local
//! traffic, `/healthz` answers 503 with the reason (on the WebSocket port and on `--metrics-listen`) and
//! `ringws_broker_up` is 0 until the link is up; after Redis restarts, delivery resumes and the messages
//! lost across the outage are counted exactly, as are those lost when Redis drops a node that reads too
//! slowly (its output-buffer limit); a node killed with SIGKILL takes only its own subscribers
//! away; a garbage reply resets the link, never the process; a bad URL stops startup naming the flag.

mod common;

use common::redis::RedisServer;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn node(redis_url: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--mode", "pubsub", "--workers", "2", "--broker", redis_url];
    args.extend_from_slice(extra);
    ServerProcess::start(ringws_binary(), &args)
}

/// `GET /healthz` on `addr`: (status, body).
fn healthz(addr: SocketAddr) -> (u16, String) {
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let text = String::from_utf8_lossy(&read_to_end(&mut stream)).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn wait_healthz(addr: SocketAddr, status: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (now, body) = healthz(addr);
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}/healthz: {now} {body:?}, expected {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn publish(publisher: &mut TcpStream, i: usize) {
    send_text(
        publisher,
        &format!(r#"{{"op":"pub","topic":"news","data":"{i}"}}"#),
    );
}

#[test]
fn redis_started_after_the_nodes() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let ops_port = free_port().to_string();
    let ops: SocketAddr = format!("127.0.0.1:{ops_port}").parse().unwrap();
    let a = node(
        &url,
        &["--metrics-listen", &format!("127.0.0.1:{ops_port}")],
    );
    // Up without Redis: unhealthy on both addresses, saying why.
    for addr in [a.addr, ops] {
        let (status, body) = healthz(addr);
        assert_eq!(status, 503, "{addr}: {body}");
        assert_eq!(body, format!("broker link down: redis 127.0.0.1:{port}\n"));
    }
    assert_eq!(metric_sum(ops, "ringws_broker_up"), 0);
    // Local traffic is served meanwhile.
    let mut local = ws_at(a.addr, "/ws?topic=news");
    let mut publisher = ws_at(a.addr, "/ws");
    publish(&mut publisher, 0);
    assert_eq!(read_text(&mut local), "0");

    let redis = RedisServer::start_on(port);
    // Backoff: at most 5 s (+25%) between attempts.
    wait_healthz(a.addr, 200, Duration::from_secs(10));
    wait_healthz(ops, 200, Duration::from_secs(1));
    assert_eq!(metric_sum(ops, "ringws_broker_up"), 1);
    let b = node(&url, &[]);
    let mut remote = ws_at(b.addr, "/ws?topic=news");
    // Node a resubscribed what it had before Redis came.
    redis.wait_subscribers("ringws:news", 2, Duration::from_secs(5));
    publish(&mut publisher, 1);
    assert_eq!(read_text(&mut local), "1");
    assert_eq!(read_text(&mut remote), "1");
}

#[test]
fn redis_killed_and_restarted_mid_stream() {
    let mut redis = RedisServer::start();
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    let mut local = ws_at(a.addr, "/ws?topic=news");
    let mut remote = ws_at(b.addr, "/ws?topic=news");
    redis.wait_subscribers("ringws:news", 2, Duration::from_secs(5));
    let mut publisher = ws_at(a.addr, "/ws");
    let mut published = 0;
    for _ in 0..10 {
        publish(&mut publisher, published);
        published += 1;
    }
    for i in 0..10 {
        assert_eq!(read_text(&mut remote), i.to_string());
    }

    redis.kill();
    wait_healthz(a.addr, 503, Duration::from_secs(10));
    wait_healthz(b.addr, 503, Duration::from_secs(10));
    // Local delivery never stops.
    for _ in 0..10 {
        publish(&mut publisher, published);
        published += 1;
    }
    redis.restart();
    wait_healthz(a.addr, 200, Duration::from_secs(10));
    wait_healthz(b.addr, 200, Duration::from_secs(10));
    // Both nodes subscribed again.
    redis.wait_subscribers("ringws:news", 2, Duration::from_secs(5));
    for _ in 0..10 {
        publish(&mut publisher, published);
        published += 1;
    }
    for i in 0..published {
        assert_eq!(read_text(&mut local), i.to_string(), "local subscriber");
    }
    // The remote subscriber: the messages after the outage all arrive, in order; what is missing is
    // what node b counted as lost.
    let mut received = Vec::new();
    while received.last() != Some(&(published - 1)) {
        let n: usize = read_text(&mut remote).parse().unwrap();
        assert!(received.last().is_none_or(|&last| n > last), "order");
        received.push(n);
    }
    assert!(received.len() >= 10, "{received:?}");
    let missing = (published - 10 - received.len()) as u64;
    assert_eq!(
        metric_sum(b.addr, "ringws_broker_messages_lost_total"),
        missing,
        "received after the first 10: {received:?}"
    );
    assert!(metric_sum(a.addr, "ringws_broker_resets_total") >= 1);
}

#[test]
fn a_node_redis_drops_for_its_output_buffer_reconnects_and_counts_the_loss() {
    let redis = RedisServer::start();
    // Redis drops a pub/sub client whose unread output passes 256 KiB.
    redis.cli(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 256kb 128kb 1",
    ]);
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &["--max-backpressure", "256MiB"]);
    let mut remote = ws_at(b.addr, "/ws?topic=news");
    redis.wait_subscribers("ringws:news", 1, Duration::from_secs(5));
    let mut publisher = ws_at(a.addr, "/ws");
    let padding = "x".repeat(8 << 10);
    let mut published = 0;
    let publish_padded = |publisher: &mut TcpStream, n: &mut usize| {
        send_text(
            publisher,
            &format!(r#"{{"op":"pub","topic":"news","data":"{n} {padding}"}}"#),
        );
        *n += 1;
    };
    // Node b stops reading (the whole process is stopped): far more than the limit piles up.
    b.signal("STOP");
    for _ in 0..4000 {
        publish_padded(&mut publisher, &mut published);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(a.addr, "ringws_broker_published_total") < published as u64 {
        assert!(
            Instant::now() < deadline,
            "node a did not publish everything"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    b.signal("CONT");
    // Node b reads what reached it, finds the connection closed, reconnects and subscribes again.
    wait_healthz(b.addr, 200, Duration::from_secs(10));
    redis.wait_subscribers("ringws:news", 1, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(b.addr, "ringws_broker_resets_total") < 1 {
        assert!(Instant::now() < deadline, "node b's link was never reset");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..10 {
        publish_padded(&mut publisher, &mut published);
    }
    let mut received = Vec::new();
    while received.last() != Some(&(published - 1)) {
        let text = read_text(&mut remote);
        let n: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert!(received.last().is_none_or(|&last| n > last), "order");
        received.push(n);
    }
    assert!(
        received.len() < published,
        "nothing was lost: the limit was never hit"
    );
    assert_eq!(
        metric_sum(b.addr, "ringws_broker_messages_lost_total"),
        (published - received.len()) as u64 - received[0] as u64,
    );
}

#[test]
fn a_node_killed_takes_only_its_own_subscribers_away() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    let c = node(&redis.url(), &[]);
    let mut on_a = ws_at(a.addr, "/ws?topic=news");
    let _on_b = ws_at(b.addr, "/ws?topic=news");
    let mut on_c = ws_at(c.addr, "/ws?topic=news");
    redis.wait_subscribers("ringws:news", 3, Duration::from_secs(5));
    let mut publisher = ws_at(a.addr, "/ws");
    publish(&mut publisher, 0);
    assert_eq!(read_text(&mut on_a), "0");
    assert_eq!(read_text(&mut on_c), "0");
    b.signal("KILL");
    redis.wait_subscribers("ringws:news", 2, Duration::from_secs(5));
    for i in 1..20 {
        publish(&mut publisher, i);
    }
    for i in 1..20 {
        assert_eq!(read_text(&mut on_a), i.to_string());
        assert_eq!(read_text(&mut on_c), i.to_string());
    }
    assert_eq!(healthz(a.addr).0, 200);
    assert_eq!(healthz(c.addr).0, 200);
    assert_eq!(metric_sum(c.addr, "ringws_broker_messages_lost_total"), 0);
}

#[test]
fn a_garbage_reply_resets_the_link_not_the_process() {
    // A "Redis" that answers every connection with bytes that are not RESP.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = fake.local_addr().unwrap().port();
    fake.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let answering = std::thread::spawn(move || {
        let mut served = 0;
        while Instant::now() < deadline && served < 2 {
            match fake.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let mut buf = [0u8; 256];
                    let _ = stream.read(&mut buf);
                    let _ = stream.write_all(b"%%%% not redis\r\n");
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        served
    });
    let a = node(&format!("redis://127.0.0.1:{port}"), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(a.addr, "ringws_broker_resets_total") < 2 {
        assert!(Instant::now() < deadline, "no reset counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = healthz(a.addr);
    assert_eq!(status, 503, "{body}");
    assert_eq!(metric_sum(a.addr, "ringws_broker_up"), 0);
    // Still serving.
    let mut local = ws_at(a.addr, "/ws?topic=news");
    let mut publisher = ws_at(a.addr, "/ws");
    publish(&mut publisher, 7);
    assert_eq!(read_text(&mut local), "7");
    drop(a);
    assert!(answering.join().unwrap() >= 2);
}

#[test]
fn a_bad_broker_url_stops_startup_naming_the_flag() {
    for url in [
        "http://127.0.0.1:6379",
        "redis://127.0.0.1",
        "redis://u:@h:1",
    ] {
        let (code, stderr) =
            ServerProcess::start_expect_failure(ringws_binary(), &["--broker", url]);
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert!(stderr.contains("--broker"), "{url}: {stderr}");
    }
}
