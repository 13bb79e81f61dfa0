//! Shared bits of the comparison echo servers used by `scripts/bench.sh`: argument parsing and the
//! `listening on IP:PORT` line. Each server runs on one thread (a current-thread tokio runtime) so that it
//! is compared core for core with `ringws serve --workers 1`. Never used by ringws itself.

use std::net::SocketAddr;

/// Reads `--port N` (default 0: an ephemeral port) and `--bind IP` (default 127.0.0.1).
pub fn listen_address() -> SocketAddr {
    let mut port = 0u16;
    let mut bind = String::from("127.0.0.1");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|v| v.parse().ok()).expect("--port N"),
            "--bind" => bind = args.next().expect("--bind IP"),
            other => panic!("unknown argument {other}"),
        }
    }
    format!("{bind}:{port}").parse().expect("listen address")
}

/// Prints the line scripts wait for, then flushes stdout.
pub fn announce(addr: SocketAddr) {
    use std::io::Write;
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
}
