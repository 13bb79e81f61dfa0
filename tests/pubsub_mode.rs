//! `--mode pubsub`: subscribers on both workers receive every message of their topic in publish order,
//! encoded once; unsubscribe stops delivery; URL subscriptions; error replies keep the connection open;
//! `POST /publish` with and without the token.

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn subscribers_on_both_workers_get_every_message_in_order_from_one_encoding() {
    let server = ServerProcess::start(ringws_binary(), &["--mode", "pubsub", "--workers", "2"]);
    let mut subs: Vec<_> = (0..20)
        .map(|_| ws_at(server.addr, "/ws?topic=news"))
        .collect();
    let mut other = ws_at(server.addr, "/ws?topic=sport");
    let mut publisher = ws_at(server.addr, "/ws");
    wait_open(|| metrics_text(server.addr), 22, Duration::from_secs(5));
    const M: usize = 30;
    for i in 0..M {
        send_text(
            &mut publisher,
            &format!(r#"{{"op":"pub","topic":"news","data":"item {i}"}}"#),
        );
    }
    send_text(
        &mut publisher,
        r#"{"op":"pub","topic":"sport","data":{"score":[1,2]}}"#,
    );
    for (s, sub) in subs.iter_mut().enumerate() {
        for i in 0..M {
            assert_eq!(read_text(sub), format!("item {i}"), "subscriber {s}");
        }
    }
    assert_eq!(read_text(&mut other), r#"{"score":[1,2]}"#);
    assert_eq!(
        metric_sum(server.addr, "ringws_frames_encoded_total"),
        M as u64 + 1
    );
    assert_eq!(
        metric_sum(server.addr, "ringws_deliveries_total"),
        (M * 20 + 1) as u64
    );
}

#[test]
fn subscribe_unsubscribe_and_errors() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "pubsub",
            "--workers",
            "1",
            "--max-subscriptions",
            "2",
        ],
    );
    let mut a = ws_at(server.addr, "/");
    send_text(&mut a, r#"{"op":"sub","topic":"t1"}"#);
    assert_eq!(read_text(&mut a), r#"{"ok":"sub","topic":"t1"}"#);
    send_text(&mut a, "not json");
    assert!(read_text(&mut a).starts_with(r#"{"error":"malformed command"#));
    send_text(&mut a, r#"{"op":"sub","topic":"bad topic!"}"#);
    assert!(read_text(&mut a).starts_with(r#"{"error":"invalid topic"#));
    send_text(&mut a, r#"{"op":"sub","topic":"t2"}"#);
    assert_eq!(read_text(&mut a), r#"{"ok":"sub","topic":"t2"}"#);
    send_text(&mut a, r#"{"op":"sub","topic":"t3"}"#);
    assert!(read_text(&mut a).starts_with(r#"{"error":"subscription limit reached""#));
    // Binary form: publish [3][len][topic][payload] is delivered as binary.
    let mut cmd = vec![3u8, 2];
    cmd.extend_from_slice(b"t1");
    cmd.extend_from_slice(&[0, 1, 2]);
    a.write_all(&client_frame(true, 0, 0x2, &cmd, true))
        .unwrap();
    assert_eq!(read_server_frame(&mut a), Some((true, 0x2, vec![0, 1, 2])));
    send_text(&mut a, r#"{"op":"unsub","topic":"t1"}"#);
    assert_eq!(read_text(&mut a), r#"{"ok":"unsub","topic":"t1"}"#);
    send_text(&mut a, r#"{"op":"pub","topic":"t1","data":"gone"}"#);
    send_text(&mut a, r#"{"op":"pub","topic":"t2","data":"here"}"#);
    // Nothing for t1 any more: the next message is t2's.
    assert_eq!(read_text(&mut a), "here");
}

#[test]
fn http_publish_with_and_without_the_token() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "pubsub",
            "--workers",
            "2",
            "--publish-token",
            "s3cret",
        ],
    );
    let mut subs: Vec<_> = (0..4)
        .map(|_| ws_at(server.addr, "/?topic=alerts"))
        .collect();
    wait_open(|| metrics_text(server.addr), 4, Duration::from_secs(5));
    let publish = |auth: &str| {
        let mut s = connect(server.addr);
        let body = "fire!";
        let (status, _) = http_exchange(
            &mut s,
            &format!(
                "POST /publish?topic=alerts HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        status
    };
    assert_eq!(publish(""), 401);
    assert_eq!(publish("Authorization: Bearer wrong\r\n"), 401);
    assert_eq!(publish("Authorization: Bearer s3cret\r\n"), 200);
    for sub in &mut subs {
        assert_eq!(read_text(sub), "fire!");
    }
}

#[test]
fn http_publish_body_split_across_receives() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "pubsub",
            "--workers",
            "1",
            "--publish-token",
            "s3cret",
            "--max-publish-body",
            "128KiB",
        ],
    );
    let mut sub = ws_at(server.addr, "/?topic=big");
    wait_open(|| metrics_text(server.addr), 1, Duration::from_secs(5));
    let body = "y".repeat(100_000);
    let mut s = connect(server.addr);
    s.write_all(
        format!(
            "POST /publish?topic=big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    for chunk in body.as_bytes().chunks(7000) {
        s.write_all(chunk).unwrap();
    }
    let (status, _) = read_response_head(&mut s);
    assert_eq!(status, 200);
    assert_eq!(read_text(&mut sub), body);
}

#[test]
fn subscribers_leaving_mid_stream_cost_the_others_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = ServerProcess::start(ringws_binary(), &["--mode", "pubsub", "--workers", "2"]);
    const M: usize = 2000;
    let mut leavers: Vec<_> = (0..10)
        .map(|_| ws_at(server.addr, "/?topic=feed"))
        .collect();
    let stayers: Vec<_> = (0..10)
        .map(|_| ws_at(server.addr, "/?topic=feed"))
        .collect();
    let mut publisher = ws_at(server.addr, "/");
    wait_open(|| metrics_text(server.addr), 21, Duration::from_secs(5));
    let progress: Vec<_> = (0..10)
        .map(|_| std::sync::Arc::new(AtomicUsize::new(0)))
        .collect();
    let readers: Vec<_> = stayers
        .into_iter()
        .zip(progress.iter().cloned())
        .map(|(mut s, done)| {
            std::thread::spawn(move || {
                for i in 0..M {
                    assert_eq!(read_text(&mut s), format!("m{i}"));
                    done.store(i + 1, Ordering::Release);
                }
            })
        })
        .collect();
    for i in 0..M {
        send_text(
            &mut publisher,
            &format!(r#"{{"op":"pub","topic":"feed","data":"m{i}"}}"#),
        );
        if i == M / 4 {
            // Half the subscribers vanish mid-stream: some reset, some close cleanly.
            for (n, mut s) in leavers.drain(..).enumerate() {
                if n % 2 == 0 {
                    let _ = s.write_all(&client_frame(true, 0, 0x8, &1000u16.to_be_bytes(), true));
                }
                drop(s);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while progress
            .iter()
            .any(|p| p.load(Ordering::Acquire) + 64 < i + 1)
        {
            assert!(Instant::now() < deadline, "a subscriber stopped receiving");
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    for r in readers {
        r.join()
            .expect("every remaining subscriber got every message in order");
    }
    // Every subscriber is gone from the server (the readers dropped theirs at the end): only the
    // publisher remains open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(server.addr, "ringws_websockets_open") != 1 {
        assert!(Instant::now() < deadline, "subscribers still counted open");
        std::thread::sleep(Duration::from_millis(20));
    }
}
