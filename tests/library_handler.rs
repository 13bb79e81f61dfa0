//! Embedding: a user `Handler` driven by `Server::start` in-process, then shut down gracefully.

mod common;

use ringws::app::{ConnId, Ctx, Handler};
use ringws::protocol::MessageKind;
use ringws::server::{Server, ServerConfig};
use tungstenite::Message;

struct Reverse;

impl Handler for Reverse {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, path: &str) {
        ctx.send(conn, MessageKind::Text, path.as_bytes());
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        let reversed: Vec<u8> = payload.iter().rev().copied().collect();
        ctx.send(conn, kind, &reversed);
    }
}

#[test]
fn user_handler_sees_open_path_and_messages() {
    let config = ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        workers: 2,
        ..ServerConfig::default()
    };
    let server = Server::start(config, |_| Reverse).expect("start");
    let addr = server.local_addr();
    let stream = common::connect(addr);
    let (mut ws, _) =
        tungstenite::client::client(format!("ws://{addr}/room?topic=a"), stream).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("/room?topic=a"));
    ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![3u8, 2, 1]));
    server.shutdown();
    // The client gets close 1001 from the graceful shutdown.
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    drop(ws);
    server.join();
}

#[test]
fn server_handle_publishes_from_any_thread() {
    use ringws::app::PubSub;
    let config = ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        workers: 2,
        ..ServerConfig::default()
    };
    let server = std::sync::Arc::new(Server::start(config, |_| PubSub::new(8)).expect("start"));
    let addr = server.local_addr();
    let mut clients: Vec<_> = (0..6)
        .map(|_| {
            let stream = common::connect(addr);
            tungstenite::client::client(format!("ws://{addr}/?topic=ticks"), stream)
                .unwrap()
                .0
        })
        .collect();
    // Subscriptions happen at open; make sure each connection is open on its worker (a sub round trip).
    for ws in &mut clients {
        ws.send(Message::text(r#"{"op":"sub","topic":"sync"}"#))
            .unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::text(r#"{"ok":"sub","topic":"sync"}"#)
        );
    }
    let publisher = {
        let server = server.clone();
        std::thread::spawn(move || {
            for i in 0..20 {
                server.publish(
                    Some("ticks"),
                    MessageKind::Text,
                    format!("tick {i}").as_bytes(),
                );
            }
            server.publish(None, MessageKind::Binary, b"to everyone");
        })
    };
    publisher.join().unwrap();
    for ws in &mut clients {
        for i in 0..20 {
            assert_eq!(ws.read().unwrap(), Message::text(format!("tick {i}")));
        }
        assert_eq!(ws.read().unwrap(), Message::binary(&b"to everyone"[..]));
    }
    drop(clients);
    let server = std::sync::Arc::try_unwrap(server).ok().expect("only owner");
    server.shutdown();
    server.join();
}
