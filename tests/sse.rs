//! The event-stream transport (`GET /sse?topic=..`, Server-Sent Events; docs/PROTOCOL.md "Event streams")
//! in `--mode pubsub`: the 200 and its headers, publications as events with `id: TOPIC:EPOCH:OFFSET`,
//! keep-alive comments when idle, recovery through `Last-Event-ID` (exactly the missed events, or
//! `recovered:false` when the history no longer has them), 401/403 as for an upgrade, the slow-consumer
//! rule, https, input discarded, and the stream ending at shutdown with a last `close` event.

mod common;

use common::tls::TlsServer;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn server(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--mode", "pubsub", "--workers", "2"];
    args.extend_from_slice(extra);
    ServerProcess::start(ringws_binary(), &args)
}

/// One event of a stream: its fields (`id`, `event`, `data` joined by newlines), or a comment.
#[derive(Debug, Default, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<String>,
    comment: Option<String>,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("a data field")).expect("JSON data")
    }
}

/// Reads an event stream (after its head) from any stream: one event per blank line.
struct Events<S: Read> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read> Events<S> {
    fn new(stream: S) -> Events<S> {
        Events {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next event or comment block; `None` at EOF.
    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("UTF-8 stream");
                let mut event = Event::default();
                for line in text.trim_end_matches('\n').split('\n') {
                    if let Some(comment) = line.strip_prefix(':') {
                        event.comment = Some(comment.trim().to_string());
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                    match field {
                        "id" => event.id = Some(value),
                        "event" => event.event = Some(value),
                        "retry" => event.retry = Some(value),
                        "data" => {
                            event.data = Some(match event.data.take() {
                                Some(before) => format!("{before}\n{value}"),
                                None => value,
                            })
                        }
                        other => panic!("unknown field {other:?} in {text:?}"),
                    }
                }
                return Some(event);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!(
                    "reading the stream: {e} (buffered: {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// The next event that is not a comment.
    fn next_event(&mut self) -> Event {
        loop {
            let event = self.next().expect("an event before EOF");
            // Comments and a lone `retry:` are not events.
            if event.comment.is_none() && (event.data.is_some() || event.event.is_some()) {
                return event;
            }
        }
    }
}

fn request(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{headers}\r\n")
}

/// Opens `path` as an event stream: asserts the 200 and its head, returns the events.
fn open(addr: SocketAddr, path: &str, headers: &str) -> Events<TcpStream> {
    let mut stream = connect(addr);
    let (status, head) = http_exchange(&mut stream, &request(path, headers));
    assert_eq!(status, 200, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(lower.contains("cache-control: no-cache\r\n"), "{head}");
    assert!(lower.contains("x-accel-buffering: no\r\n"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    assert!(!lower.contains("transfer-encoding"), "{head}");
    let mut events = Events::new(stream);
    let first = events.next().expect("a first comment");
    assert!(first.comment.is_some(), "{first:?}");
    let retry = events.next().expect("a retry field");
    let ms: u64 = retry.retry.as_deref().expect("retry").parse().unwrap();
    assert!((1000..2000).contains(&ms), "{retry:?}");
    events
}

/// The reply event of a topic subscribed at open.
fn sub_reply<S: Read>(events: &mut Events<S>, topic: &str) -> Value {
    let reply = events.next_event().json();
    assert_eq!(reply["ok"], "sub", "{reply}");
    assert_eq!(reply["topic"], topic, "{reply}");
    reply
}

/// A publication event: (its id, its offset, its data).
fn publication<S: Read>(events: &mut Events<S>, topic: &str) -> (Option<String>, u64, String) {
    let event = events.next_event();
    let message = event.json();
    let publication = &message["pub"];
    assert_eq!(publication["topic"], topic, "{message}");
    (
        event.id,
        publication["offset"].as_u64().unwrap_or(0),
        publication["data"].as_str().expect("data").to_string(),
    )
}

fn publish(stream: &mut TcpStream, topic: &str, data: &str) {
    send_text(
        stream,
        &json!({"op": "pub", "topic": topic, "data": data}).to_string(),
    );
}

/// Publishes and waits for the server's acknowledgement (so that an event stream opened after it is
/// after it in the topic's history).
fn publish_acked(stream: &mut TcpStream, topic: &str, data: &str) -> u64 {
    send_text(
        stream,
        &json!({"id": 1, "op": "pub", "topic": topic, "data": data}).to_string(),
    );
    let reply = read_json(stream);
    assert_eq!(reply["ok"], "pub", "{reply}");
    reply["offset"].as_u64().expect("an offset")
}

#[test]
fn a_stream_gets_its_head_a_reply_per_topic_and_publications_with_ids() {
    let server = server(&["--history-size", "100"]);
    let mut events = open(server.addr, "/sse?topic=room.1&topic=news", "");
    let reply = sub_reply(&mut events, "room.1");
    assert_eq!(reply["offset"], 0, "{reply}");
    let epoch = reply["epoch"].as_str().expect("an epoch").to_string();
    sub_reply(&mut events, "news");
    let mut publisher = ws_v1(server.addr, "/");
    publish(&mut publisher, "room.1", "one\ntwo");
    publish(&mut publisher, "news", "extra");
    publish(&mut publisher, "room.1", "three");
    let (id, offset, data) = publication(&mut events, "room.1");
    assert_eq!(id.as_deref(), Some(format!("room.1:{epoch}:1").as_str()));
    assert_eq!((offset, data.as_str()), (1, "one\ntwo"));
    let (id, _, data) = publication(&mut events, "news");
    assert!(id.expect("an id").starts_with("news:"));
    assert_eq!(data, "extra");
    let (id, offset, data) = publication(&mut events, "room.1");
    assert_eq!(id.as_deref(), Some(format!("room.1:{epoch}:2").as_str()));
    assert_eq!((offset, data.as_str()), (2, "three"));
    // A binary publication comes as base64 in the envelope.
    let mut frame = vec![3u8, 6];
    frame.extend_from_slice(b"room.1");
    frame.extend_from_slice(&[0, 1, 2, 255]);
    publisher
        .write_all(&client_frame(true, 0, 0x2, &frame, true))
        .unwrap();
    let message = events.next_event().json();
    assert_eq!(message["pub"]["b64"], "AAEC/w==", "{message}");
    let metrics = metrics_text(server.addr);
    assert_eq!(metric(&metrics, "ringws_event_streams_total"), 1);
}

#[test]
fn without_history_events_have_no_id_and_raw_clients_are_unchanged() {
    let server = server(&[]);
    let mut events = open(server.addr, "/sse?topic=a", "");
    let reply = sub_reply(&mut events, "a");
    assert!(reply.get("offset").is_none(), "{reply}");
    let mut raw = ws_at(server.addr, "/?topic=a");
    let mut publisher = ws_at(server.addr, "/");
    publish(&mut publisher, "a", "hello");
    assert_eq!(read_text(&mut raw), "hello");
    let (id, _, data) = publication(&mut events, "a");
    assert_eq!((id, data.as_str()), (None, "hello"));
}

#[test]
fn bad_requests_get_their_status_and_sse_is_404_outside_pubsub() {
    let server = server(&[]);
    for (request, status) in [
        (request("/sse", ""), 400),
        (request("/sse?topic=bad%20name", ""), 400),
        (
            "POST /sse?topic=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_string(),
            405,
        ),
    ] {
        let mut stream = connect(server.addr);
        let (got, head) = http_exchange(&mut stream, &request);
        assert_eq!(got, status, "{request:?}: {head}");
    }
    let many: String = (0..65).map(|i| format!("topic=t{i}&")).collect();
    let mut stream = connect(server.addr);
    let (got, head) = http_exchange(&mut stream, &request(&format!("/sse?{many}"), ""));
    assert_eq!(got, 429, "{head}");
    let echo = ServerProcess::start(ringws_binary(), &["--mode", "echo"]);
    let mut stream = connect(echo.addr);
    let (got, head) = http_exchange(&mut stream, &request("/sse?topic=a", ""));
    assert_eq!(got, 404, "{head}");
}

#[test]
fn an_idle_stream_gets_keep_alive_comments_and_its_input_is_discarded() {
    let server = server(&["--idle-timeout", "200ms", "--ping-timeout", "200ms"]);
    let mut events = open(server.addr, "/sse?topic=quiet", "");
    sub_reply(&mut events, "quiet");
    // What the client sends is read and dropped: no reply, no close.
    events.stream.write_all(b"hello server\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut comments = 0;
    while comments < 3 {
        let event = events.next().expect("the stream stays open");
        assert_eq!(event.comment.as_deref(), Some("keep-alive"), "{event:?}");
        comments += 1;
    }
    // Three idle intervals, never cut by the ping timeout (nothing ever answers).
    assert!(started.elapsed() >= Duration::from_millis(500));
    let mut publisher = ws_at(server.addr, "/");
    publish(&mut publisher, "quiet", "still here");
    let (_, _, data) = publication(&mut events, "quiet");
    assert_eq!(data, "still here");
    let metrics = metrics_text(server.addr);
    assert!(metric(&metrics, "ringws_event_stream_keepalives_total") >= 3);
    assert_eq!(
        metric(&metrics, "ringws_event_stream_input_discarded_bytes_total"),
        16
    );
}

#[test]
fn last_event_id_recovers_exactly_the_missed_publications() {
    let server = server(&["--history-size", "100"]);
    let mut publisher = ws_v1(server.addr, "/");
    let mut events = open(server.addr, "/sse?topic=feed", "");
    sub_reply(&mut events, "feed");
    for i in 1..=3 {
        publish(&mut publisher, "feed", &format!("m{i}"));
    }
    let mut last_id = String::new();
    for i in 1..=3 {
        let (id, offset, _) = publication(&mut events, "feed");
        assert_eq!(offset, i);
        last_id = id.expect("an id");
    }
    drop(events);
    for i in 4..=6 {
        publish_acked(&mut publisher, "feed", &format!("m{i}"));
    }
    // The browser's reconnect: the same URL, the last id it saw.
    let mut events = open(
        server.addr,
        "/sse?topic=feed",
        &format!("Last-Event-ID: {last_id}\r\n"),
    );
    let reply = sub_reply(&mut events, "feed");
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["offset"], 6, "{reply}");
    publish(&mut publisher, "feed", "m7");
    for i in 4..=7 {
        let (_, offset, data) = publication(&mut events, "feed");
        assert_eq!((offset, data), (i, format!("m{i}")), "no gap, no duplicate");
    }
    // `since=` in the URL does the same for a client that reconnects by itself; Last-Event-ID wins for
    // its topic.
    let epoch = last_id.split(':').nth(1).unwrap().to_string();
    let mut events = open(
        server.addr,
        &format!("/sse?topic=feed&since=feed:{epoch}:5"),
        "",
    );
    assert_eq!(sub_reply(&mut events, "feed")["recovered"], true);
    assert_eq!(publication(&mut events, "feed").1, 6);
    assert_eq!(publication(&mut events, "feed").1, 7);
    let mut events = open(
        server.addr,
        &format!("/sse?topic=feed&since=feed:{epoch}:1"),
        &format!("Last-Event-ID: feed:{epoch}:6\r\n"),
    );
    assert_eq!(sub_reply(&mut events, "feed")["recovered"], true);
    assert_eq!(publication(&mut events, "feed").1, 7);
}

#[test]
fn a_gap_the_history_no_longer_holds_is_not_recovered() {
    let server = server(&["--history-size", "2"]);
    let mut publisher = ws_v1(server.addr, "/");
    // Subscribed elsewhere, so that the topic's log (and its epoch) stays.
    let mut keeper = ws_v1(server.addr, "/?topic=t");
    let first = publish_acked(&mut publisher, "t", "a");
    let reply = read_json(&mut keeper);
    let epoch = reply["pub"]["epoch"].as_str().unwrap().to_string();
    for data in ["b", "c", "d"] {
        publish_acked(&mut publisher, "t", data);
    }
    let mut events = open(
        server.addr,
        "/sse?topic=t",
        &format!("Last-Event-ID: t:{epoch}:{first}\r\n"),
    );
    let reply = sub_reply(&mut events, "t");
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["offset"], 4, "{reply}");
    publish(&mut publisher, "t", "e");
    let (_, offset, data) = publication(&mut events, "t");
    assert_eq!((offset, data.as_str()), (5, "e"), "nothing replayed");
}

#[test]
fn tokens_and_topic_permissions_are_checked_as_for_an_upgrade() {
    const SECRET: &str = "sse-secret";
    let dir = std::env::temp_dir().join(format!("ringws-sse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let server = server(&["--auth-jwt-secret-file", secret.to_str().unwrap()]);
    let token = hs256_token(
        &json!({"sub": "alice", "exp": unix_now() + 600,
            "channels": {"sub": ["room.*"], "pub": []}}),
        SECRET,
    );
    for (path, status) in [
        ("/sse?topic=room.1".to_string(), 401),
        ("/sse?topic=room.1&token=not.a.jwt".to_string(), 401),
        (format!("/sse?topic=room.1&topic=secret&token={token}"), 403),
    ] {
        let mut stream = connect(server.addr);
        let (got, head) = http_exchange(&mut stream, &request(&path, ""));
        assert_eq!(got, status, "{path}: {head}");
    }
    let metrics = metrics_text(server.addr);
    assert_eq!(metric_sum(server.addr, "ringws_auth_failures_total"), 2);
    assert!(metric(&metrics, "ringws_websockets_open") == 0);
    let mut events = open(server.addr, &format!("/sse?topic=room.1&token={token}"), "");
    sub_reply(&mut events, "room.1");
    // The header carries it too.
    let mut events = open(
        server.addr,
        "/sse?topic=room.2",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    sub_reply(&mut events, "room.2");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_stream_whose_token_expires_ends_with_a_4001_close_event() {
    const SECRET: &str = "sse-expiry-secret";
    let dir = std::env::temp_dir().join(format!("ringws-sse-exp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let server = server(&["--auth-jwt-secret-file", secret.to_str().unwrap()]);
    let token = hs256_token(
        &json!({"sub": "bob", "exp": unix_now() + 2, "channels": {"sub": ["a"]}}),
        SECRET,
    );
    let mut events = open(server.addr, &format!("/sse?topic=a&token={token}"), "");
    sub_reply(&mut events, "a");
    let started = Instant::now();
    let last = events.next_event();
    assert_eq!(last.event.as_deref(), Some("close"), "{last:?}");
    assert_eq!(
        last.json(),
        json!({"code": 4001, "reason": "token expired"})
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(events.next().is_none(), "then EOF");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_stream_that_never_reads_is_closed_as_a_slow_consumer_while_a_reader_gets_everything() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const COUNT: u64 = 1000;
    const SIZE: usize = 16 * 1024;
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "pubsub",
            "--workers",
            "1",
            "--max-backpressure",
            "512KiB",
            // The stalled stream's last bytes wait until the test reads them.
            "--close-timeout",
            "60s",
        ],
    );
    // Never read after its head (the kernel's buffers fill, then its queue).
    let mut stalled = connect(server.addr);
    let (status, _) = http_exchange(&mut stalled, &request("/sse?topic=flood", ""));
    assert_eq!(status, 200);
    let mut reader = open(server.addr, "/sse?topic=flood", "");
    sub_reply(&mut reader, "flood");
    let got = Arc::new(AtomicU64::new(0));
    let reading = std::thread::spawn({
        let got = Arc::clone(&got);
        move || {
            for i in 0..COUNT {
                let (_, _, data) = publication(&mut reader, "flood");
                assert_eq!(data.len(), SIZE);
                assert!(data.starts_with(&format!("{i:05}")), "in order, none lost");
                got.store(i + 1, Ordering::Release);
            }
        }
    });
    let mut publisher = ws_at(server.addr, "/");
    for i in 0..COUNT {
        // The reader keeps up (at most 16 behind: a quarter of the cap); the stalled one cannot.
        let deadline = Instant::now() + Duration::from_secs(20);
        while i >= got.load(Ordering::Acquire) + 16 {
            assert!(Instant::now() < deadline, "the reader is stuck at {i}");
            std::thread::sleep(Duration::from_millis(1));
        }
        let data = format!("{i:05}{}", "x".repeat(SIZE - 5));
        publish(&mut publisher, "flood", &data);
    }
    reading.join().expect("the reader got every publication");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &metrics_text(server.addr),
        "ringws_slow_consumer_closes_total",
    ) < 1
    {
        assert!(Instant::now() < deadline, "the stalled stream is closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        metric(
            &metrics_text(server.addr),
            "ringws_slow_consumer_closes_total"
        ),
        1,
        "only the stalled one"
    );
    // Its last event says why, after what was queued before it.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let rest = read_to_end(&mut stalled);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.ends_with("event: close\ndata: {\"code\":1008,\"reason\":\"slow consumer\"}\n\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
}

#[test]
fn a_stream_works_over_https() {
    let server = TlsServer::start(
        ringws_binary(),
        &["--mode", "pubsub", "--history-size", "10"],
    );
    let mut stream = server.connect();
    stream
        .write_all(request("/sse?topic=secure", "").as_bytes())
        .unwrap();
    let (status, head) = read_response_head(&mut stream);
    assert_eq!(status, 200, "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    let mut events = Events::new(stream);
    sub_reply(&mut events, "secure");
    let mut publisher = server.ws("/");
    publisher
        .send(tungstenite::Message::text(
            json!({"op": "pub", "topic": "secure", "data": "over tls"}).to_string(),
        ))
        .unwrap();
    let (id, offset, data) = publication(&mut events, "secure");
    assert_eq!((offset, data.as_str()), (1, "over tls"));
    assert!(id.expect("an id").ends_with(":1"));
}

#[test]
fn shutdown_ends_the_stream_with_a_close_event() {
    let mut server = server(&[]);
    let mut events = open(server.addr, "/sse?topic=a", "");
    sub_reply(&mut events, "a");
    server.signal("TERM");
    let last = events.next_event();
    assert_eq!(last.event.as_deref(), Some("close"), "{last:?}");
    assert_eq!(last.json()["code"], 1001);
    assert!(events.next().is_none(), "then EOF");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits");
    assert!(status.success());
}

#[test]
fn across_nodes_a_stream_resumes_on_another_node_through_redis() {
    use common::redis::RedisServer;
    let redis = RedisServer::start();
    let url = redis.url();
    let node = || {
        let args = [
            "--mode",
            "pubsub",
            "--workers",
            "2",
            "--broker",
            &url,
            "--history-size",
            "100",
        ];
        ServerProcess::start(ringws_binary(), &args)
    };
    let (a, b) = (node(), node());
    let mut events = open(a.addr, "/sse?topic=x", "");
    sub_reply(&mut events, "x");
    redis.wait_subscribers("ringws:x", 1, Duration::from_secs(5));
    let mut on_b = ws_at(b.addr, "/");
    for i in 1..=2 {
        publish(&mut on_b, "x", &format!("m{i}"));
    }
    let mut last_id = String::new();
    for i in 1..=2 {
        let (id, offset, data) = publication(&mut events, "x");
        assert_eq!((offset, data), (i, format!("m{i}")));
        last_id = id.expect("an id");
    }
    drop(events);
    redis.wait_subscribers("ringws:x", 0, Duration::from_secs(5));
    // Published while the client is away, seen by a watcher on node B (so they are in Redis).
    let mut watcher = ws_v1(b.addr, "/?topic=x");
    redis.wait_subscribers("ringws:x", 1, Duration::from_secs(5));
    for i in 3..=4 {
        publish(&mut on_b, "x", &format!("m{i}"));
    }
    for i in 3..=4 {
        assert_eq!(read_json(&mut watcher)["pub"]["offset"], i);
    }
    // Back on node A, which no longer listens to the topic: the gap comes from Redis.
    let mut events = open(
        a.addr,
        "/sse?topic=x",
        &format!("Last-Event-ID: {last_id}\r\n"),
    );
    let reply = sub_reply(&mut events, "x");
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["offset"], 4, "{reply}");
    for i in 3..=4 {
        let (_, offset, data) = publication(&mut events, "x");
        assert_eq!((offset, data), (i, format!("m{i}")));
    }
    redis.wait_subscribers("ringws:x", 2, Duration::from_secs(5));
    publish(&mut on_b, "x", "m5");
    let (id, offset, _) = publication(&mut events, "x");
    assert_eq!(offset, 5, "the live ones follow, none twice");
    assert!(id.expect("an id").ends_with(":5"));
}
