//! Server-side traffic over TLS: broadcast and pub/sub to many TLS subscribers (each encrypts the shared
//! frame itself), POST /publish over https, backpressure with large echoes, and the graceful shutdown
//! (close 1001, then close_notify before the TCP close).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::tls::{metrics, TlsServer, TlsStream};
use common::{metric, ringws_binary, wait_open};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// A TLS stream whose peer ended TLS properly: close_notify, then EOF (rustls reports a TCP EOF
/// without close_notify as an error).
fn expect_close_notify(ws: &mut WebSocket<TlsStream>) {
    let stream = ws.get_mut();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "bytes after the close: {rest:?}"),
        Err(e) => panic!("no close_notify before EOF: {e}"),
    }
}

fn mixed_clients(server: &TlsServer, n: usize, path: &str) -> Vec<WebSocket<TlsStream>> {
    let tls12 = server
        .cert
        .client_config_versions(&[&rustls::version::TLS12]);
    (0..n)
        .map(|i| {
            let stream = if i % 3 == 0 {
                server.connect_with(tls12.clone())
            } else {
                server.connect()
            };
            let (ws, _) = tungstenite::client::client(format!("ws://localhost{path}"), stream)
                .expect("handshake");
            ws
        })
        .collect()
}

#[test]
fn broadcast_reaches_every_tls_subscriber_in_order() {
    let server = TlsServer::start(
        ringws_binary(),
        &[
            "--mode",
            "broadcast",
            "--workers",
            "2",
            "--publish-token",
            "s3cret",
        ],
    );
    const N: usize = 30;
    let mut clients = mixed_clients(&server, N, "/");
    wait_open(|| metrics(&server), N as u64, Duration::from_secs(10));
    const M: usize = 40;
    let message = |i: usize| -> Vec<u8> {
        let len = if i % 10 == 9 { 100_000 } else { 10 + i };
        (0..len).map(|j| (i + j) as u8).collect()
    };
    for i in 0..M {
        clients[0].write(Message::binary(message(i))).unwrap();
    }
    clients[0].flush().unwrap();
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..M {
            match client.read().unwrap() {
                Message::Binary(got) => {
                    assert_eq!(&got[..], &message(i)[..], "client {c} message {i}")
                }
                other => panic!("client {c}: unexpected {other:?}"),
            }
        }
    }
    // POST /publish over https: a broadcast to everyone.
    let mut post = server.connect();
    post.write_all(
        b"POST /publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\nContent-Length: 9\r\n\r\npublished",
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = post.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    for (c, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.read().unwrap(),
            Message::text("published"),
            "client {c}"
        );
    }
    let text = metrics(&server);
    assert_eq!(
        metric(&text, "ringws_frames_encoded_total"),
        M as u64 + 1,
        "{text}"
    );
}

#[test]
fn pubsub_over_tls() {
    let server = TlsServer::start(ringws_binary(), &["--mode", "pubsub", "--workers", "2"]);
    let mut subscribers = mixed_clients(&server, 12, "/?topic=news");
    let mut others = mixed_clients(&server, 3, "/?topic=sport");
    wait_open(|| metrics(&server), 15, Duration::from_secs(10));
    let mut publisher = server.ws("/");
    for i in 0..20 {
        publisher
            .send(Message::text(format!(
                r#"{{"op":"pub","topic":"news","data":"item {i}"}}"#
            )))
            .unwrap();
    }
    for (c, sub) in subscribers.iter_mut().enumerate() {
        for i in 0..20 {
            assert_eq!(
                sub.read().unwrap(),
                Message::text(format!("item {i}")),
                "subscriber {c}"
            );
        }
    }
    publisher
        .send(Message::text(
            r#"{"op":"pub","topic":"sport","data":"goal"}"#,
        ))
        .unwrap();
    for other in &mut others {
        assert_eq!(other.read().unwrap(), Message::text("goal"));
    }
}

#[test]
fn backpressure_over_tls_keeps_every_byte() {
    let server = TlsServer::start(
        ringws_binary(),
        &["--workers", "1", "--max-backpressure", "16KiB"],
    );
    let mut ws = server.ws("/");
    let message = |i: usize| -> Vec<u8> { (0..65536).map(|j| (i * 7 + j) as u8).collect() };
    const M: usize = 16;
    for i in 0..M {
        ws.write(Message::binary(message(i))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..M {
        assert_eq!(ws.read().unwrap(), Message::binary(message(i)), "echo {i}");
    }
    let text = metrics(&server);
    assert!(
        metric(&text, "ringws_backpressure_events_total") >= 1,
        "{text}"
    );
}

#[test]
fn graceful_shutdown_sends_1001_then_close_notify() {
    let mut tls = TlsServer::start(
        ringws_binary(),
        &["--workers", "2", "--shutdown-timeout", "3s"],
    );
    let mut clients = mixed_clients(&tls, 10, "/");
    for ws in &mut clients {
        ws.send(Message::text("x")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("x"));
    }
    tls.server.signal("TERM");
    for (c, ws) in clients.iter_mut().enumerate() {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Away, "client {c}")
            }
            other => panic!("client {c}: expected close 1001, got {other:?}"),
        }
        // tungstenite queued the close reply; flush it and see the handshake end.
        loop {
            match ws.read() {
                Err(tungstenite::Error::ConnectionClosed) => break,
                Ok(_) => {}
                Err(e) => panic!("client {c}: {e}"),
            }
        }
        expect_close_notify(ws);
    }
    let status = tls
        .server
        .wait_exit(Duration::from_secs(5))
        .expect("server exits after the close replies");
    assert!(status.success(), "{status:?}");
}
