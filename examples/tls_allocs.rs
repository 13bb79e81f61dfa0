//! Heap allocations per echoed message on the server, ws:// and wss://, counted by a counting global
//! allocator (dhat) around an in-process server (`Server::start`, one worker, echo) while a separate
//! client process (`tls_bench echo`) drives it; the allocations of the client are not in this process.
//!
//! Usage: tls_allocs PATH/TO/tls_bench [SIZE=32]
//! (`cargo build --release --example tls_bench --example tls_allocs`; then
//! `target/release/examples/tls_allocs target/release/examples/tls_bench 32`)
//!
//! `RINGWS_DHAT_FILE=dhat.json` keeps dhat's profile (allocation sites) for `dh_view` or a script.
//!
//! Prints, per scheme, the messages echoed in the measured window (after a warm-up run), the heap
//! blocks allocated meanwhile by the whole process, and their ratio. The window includes the client's
//! 4 connections being opened and closed (handshakes allocate), so the ratio is an upper bound of the
//! steady state. dhat records a backtrace per allocation, which slows the server down; counts are exact.

use std::process::Command;
use std::time::Duration;

use ringws::app::Echo;
use ringws::server::{Server, ServerConfig};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn messages_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("ringws_messages_in_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = args.first().expect("path to the tls_bench example").clone();
    let size = args.get(1).cloned().unwrap_or_else(|| "32".to_string());
    let dir = std::env::temp_dir().join(format!("ringws-tls-allocs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    // RINGWS_DHAT_FILE=path keeps dhat's profile (allocation sites, 12 frames deep) for inspection.
    let keep = std::env::var_os("RINGWS_DHAT_FILE");
    let profiler = dhat::Profiler::builder()
        .file_name(keep.clone().map_or(dir.join("dhat.json"), Into::into))
        .trim_backtraces(Some(if keep.is_some() { 12 } else { 1 }))
        .build();
    for tls in [false, true] {
        let config = ServerConfig {
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
            workers: 1,
            pin_workers: false,
            idle_timeout: Duration::ZERO,
            tls: tls.then(|| ringws::server::tls::load_server_config(&cert, &key).unwrap()),
            ..ServerConfig::default()
        };
        let server = Server::start(config, |_| Echo).expect("start");
        let addr = server.local_addr().to_string();
        let run = || {
            let mut command = Command::new(&client);
            command.args([
                "echo", &addr, "-c", "4", "-s", &size, "--depth", "8", "-d", "3",
            ]);
            if tls {
                command.arg("--ca").arg(&cert);
            }
            let status = command.status().expect("run the client");
            assert!(status.success());
        };
        run(); // warm-up: pools, buffers, scratch
        let before = dhat::HeapStats::get();
        let messages_before = messages_in(&server.render_metrics());
        run();
        let after = dhat::HeapStats::get();
        let messages = messages_in(&server.render_metrics()) - messages_before;
        let blocks = after.total_blocks - before.total_blocks;
        println!(
            "scheme={} size={size} messages={messages} heap_blocks_allocated={blocks} per_message={:.3}",
            if tls { "wss" } else { "ws" },
            blocks as f64 / messages.max(1) as f64
        );
        server.shutdown();
        server.join();
    }
    drop(profiler);
    let _ = std::fs::remove_dir_all(&dir);
}
