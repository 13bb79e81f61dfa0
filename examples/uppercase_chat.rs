//! Embedding ringws as a library with a custom `Handler`: a tiny chat where every text message is
//! upper-cased and broadcast to everyone, each new client is greeted, and `/quit` closes the sender.
//!
//! Run: `cargo run --example uppercase_chat -- 9002`, then connect with any WebSocket client to
//! `ws://127.0.0.1:9002/`. Ctrl-C shuts down gracefully (close 1001 to everyone).

use ringws::app::{ConnId, Ctx, Handler};
use ringws::protocol::{CloseCode, MessageKind};
use ringws::server::{Server, ServerConfig};

/// One per worker thread: no locks needed.
struct UppercaseChat {
    /// Reused for every message (no allocation per message once it has grown).
    scratch: Vec<u8>,
}

impl Handler for UppercaseChat {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, path: &str) {
        let greeting = format!("welcome (worker {}, path {path})", ctx.worker());
        ctx.send(conn, MessageKind::Text, greeting.as_bytes());
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        if kind == MessageKind::Text && payload == b"/quit" {
            ctx.close(conn, CloseCode::NORMAL, "bye");
            return;
        }
        self.scratch.clear();
        self.scratch
            .extend(payload.iter().map(u8::to_ascii_uppercase));
        ctx.broadcast(kind, &self.scratch, None);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _code: Option<CloseCode>) {}
}

fn main() -> std::io::Result<()> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(9002);
    let config = ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port,
        ..ServerConfig::default()
    };
    ringws::reactor::sys::block_termination_signals()?;
    let server = Server::start(config, |_worker| UppercaseChat {
        scratch: Vec::new(),
    })?;
    println!("uppercase chat on ws://{}/", server.local_addr());
    ringws::reactor::sys::wait_termination_signal();
    server.shutdown();
    server.join();
    Ok(())
}
