//! `Handler::on_upgrade` sees the upgrade request (path, query, headers, chosen subprotocol) before the
//! 101 and may refuse it with a status: the client gets that status and reason, the handler never sees the
//! connection open, the refusal is counted, and accepted connections are unaffected.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringws::app::{ConnId, Ctx, Handler, UpgradeDecision, UpgradeRequest};
use ringws::protocol::MessageKind;
use ringws::server::{Server, ServerConfig};
use tungstenite::Message;

/// Accepts `?token=good` (echoing what it saw at the upgrade on open), refuses a bad token with 401, and
/// `/admin` with an out-of-range status (sent as 403).
struct Gate {
    opened: Arc<AtomicUsize>,
    seen: Option<String>,
}

impl Handler for Gate {
    fn on_upgrade(&mut self, request: &UpgradeRequest<'_>) -> UpgradeDecision {
        if request.path_only() == "/admin" {
            return UpgradeDecision::Refuse {
                status: 200,
                reason: "no admin here".into(),
            };
        }
        if request.query_param("token") != Some("good") {
            return UpgradeDecision::Refuse {
                status: 401,
                reason: "bad or missing token".into(),
            };
        }
        let agent = request
            .header("x-agent")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        self.seen = Some(format!(
            "{} agent={agent:?} protocol={:?}",
            request.path(),
            request.subprotocol()
        ));
        UpgradeDecision::Accept
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _path: &str) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let seen = self.seen.take().unwrap_or_default();
        ctx.send(conn, MessageKind::Text, seen.as_bytes());
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        ctx.send(conn, kind, payload);
    }
}

/// Sends a raw upgrade request and returns the whole response (the server closes after a refusal).
fn raw_upgrade(addr: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8(response).unwrap()
}

fn handler_refusals(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("ringws_handshake_failures_total{") && l.contains("reason=\"handler\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn refused_upgrades_get_the_handlers_status_and_never_open() {
    let opened = Arc::new(AtomicUsize::new(0));
    let config = ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        workers: 2,
        subprotocols: vec!["chat".into()],
        ..ServerConfig::default()
    };
    let counter = Arc::clone(&opened);
    let server = Server::start(config, move |_| Gate {
        opened: Arc::clone(&counter),
        seen: None,
    })
    .expect("start");
    let addr = server.local_addr();

    let missing = raw_upgrade(addr, "/chat");
    assert!(missing.starts_with("HTTP/1.1 401 "), "{missing}");
    assert!(
        missing.ends_with("\r\n\r\nbad or missing token\n"),
        "{missing}"
    );
    let wrong = raw_upgrade(addr, "/chat?token=bad");
    assert!(wrong.starts_with("HTTP/1.1 401 "), "{wrong}");
    let admin = raw_upgrade(addr, "/admin?token=good");
    assert!(admin.starts_with("HTTP/1.1 403 "), "{admin}");
    assert!(admin.ends_with("no admin here\n"), "{admin}");
    assert_eq!(opened.load(Ordering::SeqCst), 0);
    assert_eq!(handler_refusals(&server.render_metrics()), 3);

    // An accepted upgrade: the handler saw its path, headers and the chosen subprotocol.
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/chat?token=good"
    ))
    .unwrap();
    request
        .headers_mut()
        .insert("x-agent", "tester/1".parse().unwrap());
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "other, chat".parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    let (mut ws, response) = tungstenite::client::client(request, stream).unwrap();
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(
        ws.read().unwrap(),
        Message::text(r#"/chat?token=good agent=Some("tester/1") protocol=Some("chat")"#)
    );
    ws.send(Message::text("still echoes")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still echoes"));
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    assert_eq!(handler_refusals(&server.render_metrics()), 3);

    server.shutdown();
    drop(ws);
    server.join();
}
