//! A small load client for comparing ws:// and wss:// on the same server build, and for TLS handshake
//! rates; `scripts/tls_bench.sh` drives it and reads the server's CPU time from /proc.
//!
//! `echo`: C connections (one blocking thread each), each sending DEPTH messages of SIZE bytes and
//! reading the DEPTH echoes, in a closed loop for DUR seconds; prints the messages echoed.
//! `handshakes`: C threads each connecting, upgrading (TLS handshake first with --ca), sending one message,
//! reading its echo and dropping the connection, for DUR seconds; prints the connections completed and how
//! many TLS handshakes resumed a session. Every TLS handshake is a full one unless `--resume` is given:
//! then each client keeps the session tickets it receives (rustls's in-memory cache, one per thread) and
//! resumes with them, as a reconnecting client does.
//! `--suite aes128|aes256`: the client offers that TLS 1.3 suite only (default: rustls's list, AES-256-GCM
//! first, which the server overrides with its own order), to measure the server's cost per suite.
//! `cert`: writes a self-signed certificate for `localhost` and 127.0.0.1 (DIR/cert.pem, DIR/key.pem).
//! `compare`: the whole comparison in one run: starts `BIN serve --workers 1 --no-pin` under
//! `taskset -c 0` (if present) without and then with TLS, runs the echo load and then the handshake
//! load against each (for wss, full handshakes and then resumed ones), and prints the server's CPU time
//! (utime + stime from /proc/PID/stat) per message and per connection; then (unless `--no-probe`) the echo
//! round trips of one established connection alone and while 4 threads open connections (handshake
//! starvation). `--no-handshakes` leaves out the handshake loads (echo only); `--server-arg ARG` (repeated)
//! passes ARG to both servers (e.g. `--server-arg=--recv-buffer-size --server-arg=65536`). Run it under `taskset -c 1` so that the client does not share the server's CPU.
//!
//! Usage:
//!   tls_bench echo ADDR [--ca CERT.pem] [--suite S] [-c 16] [-s 32] [--depth 4] [-d 5]
//!   tls_bench handshakes ADDR [--ca CERT.pem] [--suite S] [--resume] [-c 4] [-d 5]
//!   tls_bench cert DIR
//!   tls_bench compare BIN [--suite S] [-c 16] [-s 32] [--depth 4] [-d 5] [--no-probe] [--no-handshakes]
//!     [--server-arg ARG]...
//!
//! Output: one line of `key=value` pairs. Loopback only; every loop is bounded by DUR.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringws_testkit::proc::cpu_ticks;
use ringws_testkit::tls::{self_signed, write_pem_files, TestCert};
use ringws_testkit::ServerProcess;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tungstenite::Message;

/// The names the test certificate is made for.
const CERT_NAMES: &[&str] = &["localhost", "127.0.0.1"];

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Options {
    addr: SocketAddr,
    /// The CA file (wss); each thread builds its client configuration from it (`client_config`).
    ca: Option<String>,
    /// Keep and use session tickets (per thread); without it every TLS handshake is full.
    resume: bool,
    /// The one TLS 1.3 suite the client offers (`--suite`); `None`: rustls's default list.
    suite: Option<rustls::SupportedCipherSuite>,
    connections: usize,
    size: usize,
    depth: usize,
    duration: Duration,
}

/// A client configuration trusting `ca_path`, with a session cache of its own when `resume` (one per
/// thread: no lock shared between the client threads), else without resumption.
fn client_config(
    ca_path: &str,
    resume: bool,
    suite: Option<rustls::SupportedCipherSuite>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_path).expect("read --ca") {
        roots.add(cert.expect("parse --ca")).expect("add --ca");
    }
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suite) = suite {
        provider.cipher_suites = vec![suite];
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = if resume {
        rustls::client::Resumption::in_memory_sessions(16)
    } else {
        rustls::client::Resumption::disabled()
    };
    Arc::new(config)
}

/// One thread's connections: the client configuration (and so the session cache) they share.
struct Client {
    config: Option<Arc<rustls::ClientConfig>>,
    /// TLS handshakes that resumed a session.
    resumed: u64,
}

impl Client {
    fn new(options: &Options) -> Client {
        Client {
            config: options
                .ca
                .as_deref()
                .map(|ca| client_config(ca, options.resume, options.suite)),
            resumed: 0,
        }
    }
}

fn open(
    options: &Options,
    client: &mut Client,
) -> std::io::Result<tungstenite::WebSocket<Box<dyn Stream>>> {
    let mut tcp = TcpStream::connect(options.addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let stream: Box<dyn Stream> = match &client.config {
        None => Box::new(tcp),
        Some(config) => {
            let name = ServerName::try_from("localhost").expect("name");
            let mut conn = rustls::ClientConnection::new(Arc::clone(config), name)
                .map_err(std::io::Error::other)?;
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp)?;
            }
            if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                client.resumed += 1;
            }
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let (ws, _) = tungstenite::client::client("ws://localhost/", stream)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(ws)
}

fn echo_worker(options: &Options, stop: &AtomicBool, count: &AtomicU64) {
    let mut ws = open(options, &mut Client::new(options)).expect("connect");
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
    let mut client = Client::new(options);
    while !stop.load(Ordering::Relaxed) {
        // The echo is read before the next connection: the TLS 1.3 ticket comes with the 101.
        let mut ws = open(options, &mut client).expect("connect");
        ws.send(Message::text("hi")).expect("write");
        match ws.read().expect("read") {
            Message::Text(t) if t.as_str() == "hi" => done += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    count.fetch_add(done, Ordering::Relaxed);
    RESUMED.fetch_add(client.resumed, Ordering::Relaxed);
}

/// TLS handshakes that resumed a session, over every `handshake_worker` of the process.
static RESUMED: AtomicU64 = AtomicU64::new(0);

/// Round trips of one established connection (32-byte echo, one at a time) until `stop`; returns the
/// sorted round-trip times.
fn probe(options: &Options, stop: &AtomicBool) -> Vec<Duration> {
    let mut ws = open(options, &mut Client::new(options)).expect("connect probe");
    let mut rtts = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        ws.send(Message::binary(vec![b'p'; 32]))
            .expect("probe write");
        ws.read().expect("probe read");
        rtts.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(1));
    }
    rtts.sort();
    rtts
}

fn summary(rtts: &[Duration]) -> String {
    let at = |q: f64| rtts[((rtts.len() as f64 - 1.0) * q) as usize].as_micros();
    if rtts.is_empty() {
        return "rtts=0".to_string();
    }
    format!(
        "rtts={} p50_us={} p99_us={} max_us={}",
        rtts.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// An established connection's echo round trips alone, then while 4 threads open connections.
fn probe_during_handshakes(flags: &[String], scheme: &str) {
    let options = Arc::new(parse(flags));
    for (phase, load) in [("idle", false), ("during-handshakes", true)] {
        let stop = Arc::new(AtomicBool::new(false));
        let prober = {
            let (options, stop) = (options.clone(), stop.clone());
            std::thread::spawn(move || probe(&options, &stop))
        };
        let count = Arc::new(AtomicU64::new(0));
        let loaders: Vec<_> = (0..if load { 4 } else { 0 })
            .map(|_| {
                let (options, stop, count) = (options.clone(), stop.clone(), count.clone());
                std::thread::spawn(move || handshake_worker(&options, &stop, &count))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        for t in loaders {
            t.join().expect("loader");
        }
        let rtts = prober.join().expect("prober");
        println!(
            "scheme={scheme} mode=probe phase={phase} connections_opened={} {}",
            count.load(Ordering::Relaxed),
            summary(&rtts)
        );
    }
}

/// The suite the client offers (`--suite`), or `default`.
fn suite_name(options: &Options) -> String {
    options
        .suite
        .map_or("default".to_string(), |s| format!("{:?}", s.suite()))
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
        resume: false,
        suite: None,
        connections: 16,
        size: 32,
        depth: 4,
        duration: Duration::from_secs(5),
    };
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--resume" {
            options.resume = true;
            i += 1;
            continue;
        }
        let value = args.get(i + 1).expect("flag value").as_str();
        match args[i].as_str() {
            "--ca" => options.ca = Some(value.to_string()),
            "--suite" => {
                use rustls::crypto::ring::cipher_suite::*;
                options.suite = Some(match value {
                    "aes128" => TLS13_AES_128_GCM_SHA256,
                    "aes256" => TLS13_AES_256_GCM_SHA384,
                    other => panic!("--suite {other}: aes128 or aes256"),
                })
            }
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

/// `BIN serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin --idle-timeout 0 <extra>`, under
/// `taskset -c 0` when taskset is present; its stderr is dropped.
fn spawn_server(bin: &str, extra: &[String]) -> ServerProcess {
    let taskset = std::path::Path::new("/usr/bin/taskset").exists();
    let mut command = if taskset {
        let mut c = std::process::Command::new("/usr/bin/taskset");
        c.args(["-c", "0", bin]);
        c
    } else {
        std::process::Command::new(bin)
    };
    command
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--workers",
            "1",
            "--no-pin",
        ])
        .args(["--idle-timeout", "0"])
        .args(extra)
        .stderr(std::process::Stdio::null());
    ServerProcess::from_command(command)
}

fn compare(args: &[String]) {
    let bin = args.first().expect("BIN").clone();
    let probe = !args.iter().any(|a| a == "--no-probe");
    let handshakes = !args.iter().any(|a| a == "--no-handshakes");
    let mut server_args = Vec::new();
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--no-probe" | "--no-handshakes" => {}
            "--server-arg" => server_args.push(iter.next().expect("--server-arg ARG").clone()),
            other => match other.strip_prefix("--server-arg=") {
                Some(value) => server_args.push(value.to_string()),
                None => rest.push(arg.clone()),
            },
        }
    }
    let args = rest;
    let cert = TestCert::for_names(CERT_NAMES);
    for (scheme, mut extra) in [("ws", vec![]), ("wss", cert.args())] {
        extra.extend(server_args.iter().cloned());
        let mut server = spawn_server(&bin, &extra);
        let pid = server.pid();
        let mut flags = vec![server.addr.to_string()];
        if scheme == "wss" {
            flags.extend(["--ca".to_string(), cert.cert_path.clone()]);
        }
        flags.extend(args[1..].iter().cloned());
        let options = parse(&flags);
        let (size, c, depth) = (options.size, options.connections, options.depth);
        let suite = suite_name(&options);
        let t0 = cpu_ticks(pid);
        let (messages, secs) = run(options, echo_worker);
        let t1 = cpu_ticks(pid);
        println!(
            "scheme={scheme} mode=echo suite={suite} size={size} c={c} depth={depth} messages={messages} secs={secs:.2} \
             server_cpu_s={:.2} cpu_us_per_msg={:.2}",
            (t1 - t0) as f64 / 100.0,
            (t1 - t0) as f64 * 1e4 / messages.max(1) as f64
        );
        // Handshakes: 4 client threads, each connect + (TLS) + upgrade + one echo + drop; over wss
        // full handshakes, then resumed ones.
        let resume_runs: &[bool] = match (handshakes, scheme) {
            (false, _) => &[],
            (true, "wss") => &[false, true],
            (true, _) => &[false],
        };
        for &resume in resume_runs {
            let mut options = parse(&flags);
            options.connections = 4;
            options.resume = resume;
            RESUMED.store(0, Ordering::Relaxed);
            let t0 = cpu_ticks(pid);
            let (connections, secs) = run(options, handshake_worker);
            let t1 = cpu_ticks(pid);
            println!(
                "scheme={scheme} mode=handshakes resume={resume} c=4 connections={connections} resumed={} \
                 secs={secs:.2} rate={:.0}/s server_cpu_s={:.2} cpu_us_per_connection={:.1}",
                RESUMED.load(Ordering::Relaxed),
                connections as f64 / secs,
                (t1 - t0) as f64 / 100.0,
                (t1 - t0) as f64 * 1e4 / connections.max(1) as f64
            );
        }
        if probe {
            probe_during_handshakes(&flags, scheme);
        }
        // A graceful stop (SIGTERM) before the next server; dropping `server` kills it if it hangs.
        server.signal("TERM");
        server.wait_exit(Duration::from_secs(10));
    }
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
            let (c, tls, resume) = (options.connections, options.ca.is_some(), options.resume);
            let (connections, secs) = run(options, handshake_worker);
            println!(
                "mode=handshakes tls={tls} resume={resume} c={c} connections={connections} resumed={} \
                 secs={secs:.2} rate={:.0}",
                RESUMED.load(Ordering::Relaxed),
                connections as f64 / secs
            );
        }
        Some("cert") => {
            let dir = std::path::PathBuf::from(args.get(1).expect("DIR"));
            std::fs::create_dir_all(&dir).expect("create DIR");
            let (cert_pem, key_pem, _) = self_signed(CERT_NAMES);
            let (cert_path, _) = write_pem_files(&dir, &cert_pem, &key_pem);
            println!("{}", cert_path.display());
        }
        Some("compare") => compare(&args[1..]),
        _ => {
            eprintln!("usage: tls_bench echo|handshakes ADDR [--ca CERT.pem] [--suite aes128|aes256] [--resume] [-c N] [-s SIZE] [--depth N] [-d SECS] | cert DIR | compare BIN [flags] [--no-probe] [--no-handshakes]");
            std::process::exit(2);
        }
    }
}
