//! History and recovery on one node (`--history-size`, the `ringws.v1` subprotocol; docs/PROTOCOL.md):
//! publications get offsets within an epoch, `ringws.v1` subscribers get them in envelopes (raw ones get
//! the message itself, as before), a subscriber that comes back "since" its last position gets exactly
//! what it missed, then the live ones, or `recovered: false` when the gap is not whole (too old, another
//! epoch); history queries; the bounds counted in `/metrics`; and under a publish load from both workers,
//! every subscriber sees offsets 1, 2, 3, ... with no gap and no duplicate across a reconnect.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn server(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--mode", "pubsub", "--workers", "2"];
    args.extend_from_slice(extra);
    ServerProcess::start(ringws_binary(), &args)
}

fn sub(stream: &mut TcpStream, id: u64, topic: &str) -> Value {
    send_text(
        stream,
        &json!({"id": id, "op": "sub", "topic": topic}).to_string(),
    );
    let reply = read_json(stream);
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["ok"], "sub", "{reply}");
    reply
}

fn sub_since(stream: &mut TcpStream, id: u64, topic: &str, offset: u64, epoch: &str) -> Value {
    let command = json!({"id": id, "op": "sub", "topic": topic,
        "since": {"offset": offset, "epoch": epoch}});
    send_text(stream, &command.to_string());
    let reply = read_json(stream);
    assert_eq!(reply["id"], id, "{reply}");
    reply
}

fn publish(stream: &mut TcpStream, topic: &str, data: &str) {
    send_text(
        stream,
        &json!({"op": "pub", "topic": topic, "data": data}).to_string(),
    );
}

/// One envelope: (offset, epoch, data).
fn publication(stream: &mut TcpStream, topic: &str) -> (u64, String, String) {
    let message = read_json(stream);
    let publication = &message["pub"];
    assert_eq!(publication["topic"], topic, "{message}");
    (
        publication["offset"].as_u64().expect("offset"),
        publication["epoch"].as_str().expect("epoch").to_string(),
        publication["data"].as_str().expect("data").to_string(),
    )
}

/// A raw connection on the other worker than `of` is not promised: open a few and publish from each.
fn publishers(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| ws_at(addr, "/")).collect()
}

#[test]
fn publications_get_offsets_v1_clients_get_envelopes_and_raw_clients_the_message() {
    let server = server(&["--history-size", "100"]);
    let mut v1 = ws_v1(server.addr, "/");
    let reply = sub(&mut v1, 1, "room");
    assert_eq!(reply["offset"], 0, "{reply}");
    let epoch = reply["epoch"].as_str().expect("an epoch").to_string();
    assert_eq!(epoch.len(), 8);
    let mut raw = ws_at(server.addr, "/?topic=room");
    // The raw protocol's replies are unchanged with history on.
    send_text(&mut raw, r#"{"op":"sub","topic":"other"}"#);
    assert_eq!(read_text(&mut raw), r#"{"ok":"sub","topic":"other"}"#);
    let mut publisher = ws_v1(server.addr, "/");
    for (i, text) in ["a", "b\"quoted\"", "c"].iter().enumerate() {
        send_text(
            &mut publisher,
            &json!({"id": 10 + i, "op": "pub", "topic": "room", "data": text}).to_string(),
        );
        let ack = read_json(&mut publisher);
        assert_eq!(
            ack,
            json!({"id": 10 + i, "ok": "pub", "topic": "room", "offset": i + 1, "epoch": epoch})
        );
    }
    for (i, text) in ["a", "b\"quoted\"", "c"].iter().enumerate() {
        assert_eq!(
            publication(&mut v1, "room"),
            ((i + 1) as u64, epoch.clone(), text.to_string())
        );
        assert_eq!(read_text(&mut raw), *text);
    }
    // A binary publication reaches a v1 client as base64.
    let mut cmd = vec![3u8, 4];
    cmd.extend_from_slice(b"room");
    cmd.extend_from_slice(&[0, 255]);
    publisher
        .write_all(&client_frame(true, 0, 0x2, &cmd, true))
        .unwrap();
    let message = read_json(&mut v1);
    assert_eq!(
        message,
        json!({"pub": {"topic": "room", "offset": 4, "epoch": epoch, "b64": "AP8="}})
    );
    let (_, opcode, payload) = read_server_frame(&mut raw).expect("the binary message");
    assert_eq!((opcode, payload), (0x2, vec![0, 255]));
    // A raw client cannot ask to recover (it never sees offsets).
    send_text(
        &mut raw,
        &json!({"op":"sub","topic":"x","since":{"offset":1,"epoch":epoch}}).to_string(),
    );
    let refusal: Value = serde_json::from_str(&read_text(&mut raw)).unwrap();
    assert_eq!(
        refusal["error"],
        "since and presence need the ringws.v1 subprotocol"
    );
}

use std::io::Write;

#[test]
fn a_subscriber_that_comes_back_gets_exactly_what_it_missed_then_the_live_ones() {
    let server = server(&["--history-size", "100"]);
    let mut publisher = ws_at(server.addr, "/");
    let mut first = ws_v1(server.addr, "/");
    let epoch = sub(&mut first, 1, "t")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&mut publisher, "t", "one");
    assert_eq!(publication(&mut first, "t").0, 1);
    drop(first);
    for text in ["two", "three", "four"] {
        publish(&mut publisher, "t", text);
    }
    // Wait until the publications are in (the publisher's commands have no reply).
    wait_for_metric(server.addr, "ringws_history_appended_total", 4);
    let mut again = ws_v1(server.addr, "/");
    let reply = sub_since(&mut again, 2, "t", 1, &epoch);
    assert_eq!(
        reply,
        json!({"id": 2, "ok": "sub", "topic": "t", "offset": 4, "epoch": epoch, "recovered": true})
    );
    for (offset, text) in [(2, "two"), (3, "three"), (4, "four")] {
        assert_eq!(
            publication(&mut again, "t"),
            (offset, epoch.clone(), text.to_string())
        );
    }
    publish(&mut publisher, "t", "five");
    assert_eq!(
        publication(&mut again, "t"),
        (5, epoch.clone(), "five".to_string())
    );
    // Nothing more: no duplicate of the replayed ones.
    again
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(read_server_frame(&mut again).is_none());
    let text = metrics_text(server.addr);
    assert!(
        text.contains("ringws_recoveries_total{result=\"recovered\"} 1"),
        "{text}"
    );
}

#[test]
fn recovery_is_refused_when_the_gap_is_gone_or_the_epoch_is_another() {
    let server = server(&["--history-size", "3"]);
    let mut publisher = ws_at(server.addr, "/");
    let mut first = ws_v1(server.addr, "/");
    let epoch = sub(&mut first, 1, "t")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&mut publisher, "t", "1");
    assert_eq!(publication(&mut first, "t").0, 1);
    drop(first);
    for i in 2..=6 {
        publish(&mut publisher, "t", &i.to_string());
    }
    wait_for_metric(server.addr, "ringws_history_appended_total", 6);
    // Offsets 2 and 3 are gone (3 kept: 4, 5, 6): never a partial replay.
    let mut again = ws_v1(server.addr, "/");
    let reply = sub_since(&mut again, 2, "t", 1, &epoch);
    assert_eq!(
        reply,
        json!({"id": 2, "ok": "sub", "topic": "t", "offset": 6, "epoch": epoch, "recovered": false})
    );
    // It is subscribed all the same, from the current position on.
    publish(&mut publisher, "t", "7");
    assert_eq!(publication(&mut again, "t").0, 7);
    // From offset 3 the gap (4..7) is whole.
    let mut third = ws_v1(server.addr, "/");
    let reply = sub_since(&mut third, 3, "t", 4, &epoch);
    assert_eq!(reply["recovered"], true, "{reply}");
    let offsets: Vec<u64> = (0..3).map(|_| publication(&mut third, "t").0).collect();
    assert_eq!(offsets, [5, 6, 7]);
    // Another epoch (the history was lost: another run of the node) is never recovered.
    let mut fourth = ws_v1(server.addr, "/");
    let reply = sub_since(&mut fourth, 4, "t", 5, "00000000");
    assert_eq!(reply["recovered"], false, "{reply}");
    let text = metrics_text(server.addr);
    assert!(
        text.contains("ringws_recoveries_total{result=\"not_recovered\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("ringws_history_evicted_total{bound=\"size\"} 4"),
        "{text}"
    );
}

#[test]
fn a_restarted_node_has_a_new_epoch_and_refuses_to_recover_the_old_one() {
    // The same topic on a new run of the node (a client reconnecting after a restart).
    let server = server(&["--history-size", "10"]);
    let mut first = ws_v1(server.addr, "/");
    let epoch = sub(&mut first, 1, "t")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    drop(first);
    drop(server);
    let server = self::server(&["--history-size", "10"]);
    let mut again = ws_v1(server.addr, "/");
    let reply = sub_since(&mut again, 2, "t", 0, &epoch);
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_ne!(reply["epoch"], epoch.as_str());
}

#[test]
fn history_queries_give_the_latest_or_what_follows_a_position() {
    let server = server(&["--history-size", "10"]);
    let mut client = ws_v1(server.addr, "/");
    let epoch = sub(&mut client, 1, "t")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..=4 {
        publish(&mut client, "t", &format!("m{i}"));
        assert_eq!(publication(&mut client, "t").0, i);
    }
    send_text(
        &mut client,
        r#"{"id":7,"op":"history","topic":"t","limit":2}"#,
    );
    assert_eq!(
        read_json(&mut client),
        json!({"id": 7, "ok": "history", "topic": "t", "offset": 4, "epoch": epoch,
               "publications": [{"offset": 3, "data": "m3"}, {"offset": 4, "data": "m4"}]})
    );
    send_text(
        &mut client,
        &json!({"id":8,"op":"history","topic":"t","since":{"offset":2,"epoch":epoch}}).to_string(),
    );
    let reply = read_json(&mut client);
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(
        reply["publications"],
        json!([{"offset": 3, "data": "m3"}, {"offset": 4, "data": "m4"}])
    );
    send_text(&mut client, r#"{"id":9,"op":"history","topic":"never"}"#);
    assert_eq!(
        read_json(&mut client),
        json!({"id": 9, "ok": "history", "topic": "never", "publications": []})
    );
}

#[test]
fn without_history_a_recovery_or_a_query_is_an_error_and_the_connection_stays() {
    let server = server(&[]);
    let mut client = ws_v1(server.addr, "/");
    send_text(
        &mut client,
        r#"{"id":1,"op":"sub","topic":"t","since":{"offset":1,"epoch":"0000aaaa"}}"#,
    );
    assert_eq!(
        read_json(&mut client),
        json!({"id": 1, "error": "history is off (--history-size)", "code": 501, "op": "sub", "topic": "t"})
    );
    send_text(&mut client, r#"{"id":2,"op":"history","topic":"t"}"#);
    assert_eq!(read_json(&mut client)["code"], 501);
    // Envelopes without offsets.
    let reply = sub(&mut client, 3, "t");
    assert_eq!(reply, json!({"id": 3, "ok": "sub", "topic": "t"}));
    publish(&mut client, "t", "x");
    assert_eq!(
        read_json(&mut client),
        json!({"pub": {"topic": "t", "data": "x"}})
    );
}

/// Waits (up to 5 s) until the sum of a metric's series reaches `at_least`.
fn wait_for_metric(addr: SocketAddr, name: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric_sum(&metrics_text(addr), name);
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {value} (< {at_least})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Publishers on both workers publish numbered messages as fast as they can while subscribers on both
/// workers come and go, each coming back "since" its last offset: every subscriber's offsets, over all
/// its sessions, are exactly 1..=N in order (N: the last it saw), and the payloads match the offsets'
/// order in the history (checked against a subscriber that never left).
#[test]
fn recovery_under_a_publish_load_from_both_workers_has_no_gap_and_no_duplicate() {
    recovery_under_load(&[], None);
}

/// The same with inboxes of 8 messages: handoffs to a worker are dropped all the time
/// (`ringws_handoff_drops_total`), and the worker delivers what it missed from the history when the next
/// publication of the topic reaches it: still no gap and no duplicate.
#[test]
fn a_worker_that_missed_handoffs_delivers_them_from_the_history_in_order() {
    recovery_under_load(
        &["--inbox-capacity", "8"],
        Some("catch-ups: dropped handoffs were delivered"),
    );
}

/// `catch_ups`: the run must have needed catch-ups from the history (inboxes too small), said why.
fn recovery_under_load(extra: &[&str], catch_ups: Option<&str>) {
    // Readers in this test parse every message (debug build): a deep queue and a moderate rate.
    let mut args = vec![
        "--history-size",
        "1000000",
        "--history-max-bytes",
        "256MiB",
        "--max-backpressure",
        "64MiB",
    ];
    args.extend_from_slice(extra);
    let server = server(&args);
    let addr = server.addr;
    // A subscriber that stays: the reference order.
    let mut witness = ws_v1(addr, "/");
    let epoch = sub(&mut witness, 1, "load")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let published_total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    // The witness reads all along (a subscriber left unread would be closed as a slow consumer).
    let witness_reader = {
        let published_total = std::sync::Arc::clone(&published_total);
        std::thread::spawn(move || {
            let mut reference: Vec<String> = Vec::new();
            loop {
                let Some((_, opcode, payload)) = read_server_frame(&mut witness) else {
                    panic!(
                        "the witness got nothing more after {} of {} publications",
                        reference.len(),
                        published_total.load(std::sync::atomic::Ordering::Acquire)
                    );
                };
                assert_eq!(opcode, 1, "{}", String::from_utf8_lossy(&payload));
                let message: Value = serde_json::from_slice(&payload).unwrap();
                let offset = message["pub"]["offset"].as_u64().unwrap();
                let data = message["pub"]["data"].as_str().unwrap().to_string();
                assert_eq!(offset, reference.len() as u64 + 1, "the witness");
                if data == "end" {
                    return reference;
                }
                reference.push(data);
            }
        })
    };
    let mut handles = Vec::new();
    for p in 0..4 {
        let stop = std::sync::Arc::clone(&stop);
        handles.push(std::thread::spawn(move || {
            let mut conns = publishers(addr, 1);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publish(&mut conns[0], "load", &format!("{p}:{n}"));
                n += 1;
                if n.is_multiple_of(4) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            n
        }));
    }
    let mut sessions: Vec<Vec<(u64, String)>> = Vec::new();
    for round in 0..4 {
        let mut seen: Vec<(u64, String)> = Vec::new();
        // Several subscribers, so that both workers get some.
        for s in 0..3 {
            let mut client = ws_v1(addr, "/");
            let reply = match seen.last() {
                None => sub(&mut client, 1, "load"),
                Some((offset, _)) => {
                    let reply = sub_since(&mut client, 1, "load", *offset, &epoch);
                    assert_eq!(
                        reply["recovered"], true,
                        "round {round} session {s}: {reply}"
                    );
                    reply
                }
            };
            let position = reply["offset"].as_u64().unwrap();
            // Read for a while, then leave without a word (a reset-like drop).
            let until = Instant::now() + Duration::from_millis(150);
            let mut last = seen.last().map_or(position, |(o, _)| *o);
            while Instant::now() < until || last < position {
                let (offset, got_epoch, data) = publication(&mut client, "load");
                assert_eq!(got_epoch, epoch);
                assert_eq!(
                    offset,
                    last + 1,
                    "round {round} session {s}: after {last} came {offset}"
                );
                last = offset;
                seen.push((offset, data));
            }
            drop(client);
            std::thread::sleep(Duration::from_millis(30));
        }
        sessions.push(seen);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(published > 5000, "the load was too light: {published}");
    published_total.store(published, std::sync::atomic::Ordering::Release);
    // The last publication, after every publisher's: the witness stops at it.
    publish(&mut ws_at(addr, "/"), "load", "end");
    // The witness saw every publication, in offset order; each session's data matches it offset by
    // offset.
    let reference = witness_reader.join().unwrap();
    assert_eq!(reference.len() as u64, published);
    let text = metrics_text(addr);
    eprintln!(
        "{published} publications; catch-ups {}, delivery gaps {}, recoveries {}",
        metric_sum(&text, "ringws_history_catch_ups_total"),
        metric_sum(&text, "ringws_history_delivery_gaps_total"),
        metric_sum(&text, "ringws_recoveries_total"),
    );
    assert_eq!(metric_sum(&text, "ringws_history_delivery_gaps_total"), 0);
    if let Some(why) = catch_ups {
        assert!(
            metric_sum(&text, "ringws_history_catch_ups_total") > 0,
            "{why}"
        );
    }
    for seen in &sessions {
        for (offset, data) in seen {
            assert_eq!(&reference[*offset as usize - 1], data, "offset {offset}");
        }
    }
    // Each publisher's messages in its own order, as every subscriber saw them.
    let mut next = [0u64; 4];
    for data in &reference {
        let (p, n) = data.split_once(':').unwrap();
        let (p, n): (usize, u64) = (p.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, next[p], "publisher {p}");
        next[p] += 1;
    }
}

/// A burst of publications over the workers' inboxes (one client writes 20,000 `pub` in one write: more
/// than an inbox holds, `ringws_handoff_drops_total` counts the overflow): with history, every subscriber on
/// either worker still gets all of them, in order, once: the publishing worker delivers its own overflow
/// itself, and a worker whose handoffs were dropped catches up from the history on its next tick.
#[test]
fn a_burst_over_the_inboxes_reaches_every_subscriber_from_the_history() {
    let server = server(&[
        "--inbox-capacity",
        "64",
        "--history-size",
        "100000",
        "--history-max-bytes",
        "256MiB",
        "--max-backpressure",
        "64MiB",
    ]);
    let mut subscribers: Vec<TcpStream> = (0..4)
        .map(|_| ws_at(server.addr, "/?topic=burst"))
        .collect();
    let mut publisher = ws_at(server.addr, "/");
    const N: usize = 20_000;
    let mut burst = Vec::new();
    for i in 0..N {
        let command = json!({"op": "pub", "topic": "burst", "data": i.to_string()}).to_string();
        burst.extend(client_frame(true, 0, 0x1, command.as_bytes(), true));
    }
    publisher.write_all(&burst).unwrap();
    for (s, subscriber) in subscribers.iter_mut().enumerate() {
        for i in 0..N {
            assert_eq!(read_text(subscriber), i.to_string(), "subscriber {s}");
        }
        subscriber
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            read_server_frame(subscriber).is_none(),
            "subscriber {s}: one more"
        );
    }
    let text = metrics_text(server.addr);
    assert!(
        metric_sum(&text, "ringws_handoff_drops_total") > 0,
        "the burst did not overflow an inbox: the test shows nothing"
    );
    assert_eq!(metric_sum(&text, "ringws_history_delivery_gaps_total"), 0);
}

/// A history reply holds at most half the connection's queue cap (`--max-backpressure`): one over it says
/// `"more":true`, and the client pages on with `since` its last offset until it has them all, in order.
#[test]
fn a_history_reply_is_bounded_and_pages_on_with_since() {
    let server = server(&["--history-size", "100", "--max-backpressure", "64KiB"]);
    let mut client = ws_v1(server.addr, "/");
    let epoch = sub(&mut client, 1, "big")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let text = "x".repeat(1000);
    for i in 1..=100 {
        publish(&mut client, "big", &text);
        assert_eq!(publication(&mut client, "big").0, i);
    }
    send_text(&mut client, r#"{"id":1,"op":"history","topic":"big"}"#);
    let first = read_json(&mut client);
    let page: Vec<u64> = first["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(first["more"], true, "100 x 1000 B over a 32 KiB reply");
    assert!(page.len() < 40, "{} publications in one reply", page.len());
    let mut seen = page;
    while seen.len() < 100 {
        let since = *seen.last().unwrap();
        send_text(
            &mut client,
            &json!({"id": 2, "op": "history", "topic": "big", "since": {"offset": since, "epoch": epoch}})
                .to_string(),
        );
        let reply = read_json(&mut client);
        assert_eq!(reply["recovered"], true, "{}", reply["error"]);
        let page = reply["publications"].as_array().unwrap();
        assert!(!page.is_empty());
        seen.extend(page.iter().map(|p| p["offset"].as_u64().unwrap()));
    }
    assert_eq!(seen, (1..=100).collect::<Vec<u64>>());
}
