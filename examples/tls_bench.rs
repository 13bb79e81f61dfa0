//! A small load client for comparing ws:// and wss:// on the same server build, and for TLS handshake
//! rates; `scripts/tls_bench.sh` drives it and reads the server's CPU time from /proc.
//!
//! `echo`: C connections (one blocking thread each), each sending DEPTH messages of SIZE bytes and
//! reading the DEPTH echoes, in a closed loop for DUR seconds; prints the messages echoed.
//! `handshakes`: C threads each connecting, upgrading (TLS handshake first with --ca), sending one message,
//! reading its echo and dropping the connection, for DUR seconds; prints the connections completed.
//! `cert`: writes a self-signed certificate for `localhost` and 127.0.0.1 (DIR/cert.pem, DIR/key.pem).
//!
//! Usage:
//!   tls_bench echo ADDR [--ca CERT.pem] [-c 16] [-s 32] [--depth 4] [-d 5]
//!   tls_bench handshakes ADDR [--ca CERT.pem] [-c 4] [-d 5]
//!   tls_bench cert DIR
//!
//! Output: one line of `key=value` pairs. Loopback only; every loop is bounded by DUR.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tungstenite::Message;

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Options {
    addr: SocketAddr,
    ca: Option<Arc<rustls::ClientConfig>>,
    connections: usize,
    size: usize,
    depth: usize,
    duration: Duration,
}

fn client_config(ca_path: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_path).expect("read --ca") {
        roots.add(cert.expect("parse --ca")).expect("add --ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn open(options: &Options) -> std::io::Result<tungstenite::WebSocket<Box<dyn Stream>>> {
    let tcp = TcpStream::connect(options.addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let stream: Box<dyn Stream> = match &options.ca {
        None => Box::new(tcp),
        Some(config) => {
            let name = ServerName::try_from("localhost").expect("name");
            let conn = rustls::ClientConnection::new(Arc::clone(config), name)
                .map_err(std::io::Error::other)?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let (ws, _) = tungstenite::client::client("ws://localhost/", stream)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(ws)
}

fn echo_worker(options: &Options, stop: &AtomicBool, count: &AtomicU64) {
    let mut ws = open(options).expect("connect");
    let payload = vec![b'x'; options.size];
    let mut done = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..options.depth {
            ws.write(Message::binary(payload.clone())).expect("write");
        }
        ws.flush().expect("flush");
        for _ in 0..options.depth {
            match ws.read().expect("read") {
                Message::Binary(b) if b.len() == options.size => done += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    count.fetch_add(done, Ordering::Relaxed);
    let _ = ws.close(None);
    let _ = ws.flush();
}

fn handshake_worker(options: &Options, stop: &AtomicBool, count: &AtomicU64) {
    let mut done = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut ws = open(options).expect("connect");
        ws.send(Message::text("hi")).expect("write");
        match ws.read().expect("read") {
            Message::Text(t) if t.as_str() == "hi" => done += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    count.fetch_add(done, Ordering::Relaxed);
}

fn parse(args: &[String]) -> Options {
    let addr = args
        .first()
        .expect("ADDR")
        .parse()
        .expect("ADDR as IP:PORT");
    let mut options = Options {
        addr,
        ca: None,
        connections: 16,
        size: 32,
        depth: 4,
        duration: Duration::from_secs(5),
    };
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).expect("flag value").as_str();
        match args[i].as_str() {
            "--ca" => options.ca = Some(client_config(value)),
            "-c" => options.connections = value.parse().expect("-c"),
            "-s" => options.size = value.parse().expect("-s"),
            "--depth" => options.depth = value.parse().expect("--depth"),
            "-d" => options.duration = Duration::from_secs_f64(value.parse().expect("-d")),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    options
}

fn run(options: Options, worker: fn(&Options, &AtomicBool, &AtomicU64)) -> (u64, f64) {
    let options = Arc::new(options);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..options.connections)
        .map(|_| {
            let (options, stop, count) = (options.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || worker(&options, &stop, &count))
        })
        .collect();
    std::thread::sleep(options.duration);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("worker thread");
    }
    (
        count.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("echo") => {
            let options = parse(&args[1..]);
            let (size, depth, c, tls) = (
                options.size,
                options.depth,
                options.connections,
                options.ca.is_some(),
            );
            let (messages, secs) = run(options, echo_worker);
            println!(
                "mode=echo tls={tls} size={size} c={c} depth={depth} messages={messages} secs={secs:.2} rate={:.0}",
                messages as f64 / secs
            );
        }
        Some("handshakes") => {
            let options = parse(&args[1..]);
            let (c, tls) = (options.connections, options.ca.is_some());
            let (connections, secs) = run(options, handshake_worker);
            println!(
                "mode=handshakes tls={tls} c={c} connections={connections} secs={secs:.2} rate={:.0}",
                connections as f64 / secs
            );
        }
        Some("cert") => {
            let dir = std::path::PathBuf::from(args.get(1).expect("DIR"));
            std::fs::create_dir_all(&dir).expect("create DIR");
            let certified = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .expect("generate");
            std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert");
            std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem())
                .expect("write key");
            println!("{}", dir.join("cert.pem").display());
        }
        _ => {
            eprintln!("usage: tls_bench echo|handshakes ADDR [--ca CERT.pem] [-c N] [-s SIZE] [--depth N] [-d SECS] | cert DIR");
            std::process::exit(2);
        }
    }
}
