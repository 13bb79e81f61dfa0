//! The server's `/metrics` (Prometheus text) from a test: fetch it over plain TCP, sum a counter over the
//! workers' labels, and wait until a number of WebSocket connections are open.
//!
//! Reads only; never changes what the server counts. The TLS fetch is `tls::metrics`; `wait_open` takes
//! any fetch so that plain and TLS tests poll the same way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::raw::{connect, http_exchange, read_to_end};

/// The value of counter `name` summed over workers in a Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let base = key.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok())?
        })
        .map(|v| v as u64)
        .sum()
}

/// The `/metrics` text of a plain (not TLS) server.
pub fn metrics_text(addr: SocketAddr) -> String {
    let mut stream = connect(addr);
    http_exchange(&mut stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    String::from_utf8_lossy(&read_to_end(&mut stream)).to_string()
}

/// Fetches `/metrics` from a plain server and returns counter `name` summed over workers.
pub fn metric_sum(addr: SocketAddr, name: &str) -> u64 {
    metric(&metrics_text(addr), name)
}

/// Polls `fetch_metrics` (every 10 ms) until `ringws_websockets_open` reaches `n`; panics after `timeout`.
pub fn wait_open(mut fetch_metrics: impl FnMut() -> String, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let open = metric(&fetch_metrics(), "ringws_websockets_open");
        if open >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {open} of {n} open");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP ringws_websockets_open Open WebSocket connections.\n\
                        # TYPE ringws_websockets_open gauge\n\
                        ringws_websockets_open{worker=\"0\"} 3\n\
                        ringws_websockets_open{worker=\"1\"} 4\n\
                        ringws_websockets_open_total 100\n\
                        ringws_uptime_seconds 12.5\n";

    #[test]
    fn counter_is_summed_over_workers_and_other_names_are_ignored() {
        assert_eq!(metric(TEXT, "ringws_websockets_open"), 7);
        assert_eq!(metric(TEXT, "ringws_websockets_open_total"), 100);
        assert_eq!(metric(TEXT, "ringws_uptime_seconds"), 12);
        assert_eq!(metric(TEXT, "ringws_missing"), 0);
    }

    #[test]
    fn wait_open_returns_once_the_count_is_reached() {
        let mut calls = 0;
        wait_open(
            || {
                calls += 1;
                format!("ringws_websockets_open{{worker=\"0\"}} {calls}\n")
            },
            3,
            Duration::from_secs(5),
        );
        assert_eq!(calls, 3);
    }

    #[test]
    #[should_panic(expected = "only 1 of 2 open")]
    fn wait_open_panics_at_the_deadline() {
        wait_open(
            || "ringws_websockets_open 1\n".to_string(),
            2,
            Duration::from_millis(30),
        );
    }
}
