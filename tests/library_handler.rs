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
