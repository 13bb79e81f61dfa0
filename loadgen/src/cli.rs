//! Command-line options of `ringws-loadgen` (clap). Parsing and checking only: what each option means at
//! run time is decided in `plan.rs` and `worker/`.

use crate::engine::EngineKind;
pub use crate::payload::PayloadKind;
use clap::{Parser, ValueEnum};
use std::net::{Ipv4Addr, SocketAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// C connections send messages and check every echo (closed loop with --depth, open loop with --rate).
    Echo,
    /// C subscribers and P publishers; publishers stamp time and sequence, subscribers count deliveries.
    Broadcast,
    /// Ramp to C idle connections, hold them, optionally ping them and check one broadcast reaches all.
    Connect,
    /// Connect, exchange --messages echoes, close; --rate cycles per second over C concurrent slots.
    Churn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Text,
    Binary,
}

/// Where in its backoff window a reconnect waits (`--backoff-jitter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffJitter {
    /// Anywhere in the upper half of the window.
    Upper,
    /// Anywhere in the whole window, from 0 ("full jitter": what `web/ringws.js` does).
    Full,
}

/// TLS versions a wss:// client offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    #[serde(rename = "1.2")]
    V12,
    #[value(name = "1.3")]
    #[serde(rename = "1.3")]
    V13,
    #[value(name = "any")]
    #[serde(rename = "any")]
    Any,
}

/// Load generator for RFC 6455 WebSocket servers: echo (closed/open loop), broadcast fanout, connection
/// ramps and churn, with exact counting and HdrHistogram latencies.
#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(name = "ringws-loadgen", version)]
pub struct Options {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,

    /// Server URL: ws://HOST:PORT/PATH or wss://HOST:PORT/PATH (HOST: an IPv4 address, or a name
    /// resolved once at startup to an IPv4 address; loopback for load tests). Repeat it for several
    /// servers (e.g. nodes joined by a broker): connections are spread over them round robin, and in
    /// broadcast the subscribers and the publishers each, so subscribers on one server check what
    /// publishers on the others sent (all ws://, or all wss:// with one host name).
    #[arg(long = "url", default_value = "ws://127.0.0.1:9001/")]
    pub urls: Vec<String>,

    /// wss://: trust the certificates in this PEM file (and nothing else) as roots.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<String>,

    /// wss://: accept any server certificate (no authentication; handshake signatures are still checked).
    #[arg(long)]
    pub insecure: bool,

    /// wss://: TLS versions offered.
    #[arg(long, value_enum, default_value_t = TlsVersion::Any)]
    pub tls_version: TlsVersion,

    /// wss://: keep the session tickets servers send and resume with them (a reconnecting client);
    /// without it every connection makes a full TLS handshake.
    #[arg(long)]
    pub tls_resume: bool,

    /// Connections (echo, connect), subscribers (broadcast) or concurrent slots (churn).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: u64,

    /// Seconds of measured load (echo, broadcast, churn). With --messages, an upper bound.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,

    /// Worker threads per process (default: number of CPUs this process may run on).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,

    /// Child processes sharing the connections (each has its own open-file limit); one report.
    #[arg(long, default_value_t = 1)]
    pub procs: usize,

    /// Spread connections over N source addresses 127.0.0.2 .. 127.0.0.(N+1) (0: kernel's choice).
    #[arg(long, default_value_t = 0)]
    pub source_ips: u8,

    /// I/O engine: io_uring (falls back to epoll, with one line on stderr, where io_uring cannot be set
    /// up) or epoll.
    #[arg(long, value_enum, default_value_t = EngineKind::Uring)]
    pub engine: EngineKind,

    /// Reconnect dropped connections, with exponential backoff and jitter (counted in the report).
    #[arg(long)]
    pub reconnect: bool,

    /// With --reconnect: the first backoff window in milliseconds; each later one is twice the one before.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub backoff_base: u64,

    /// With --reconnect: the largest backoff window in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub backoff_cap: u64,

    /// With --reconnect: where in its window a reconnect waits: `upper` half, or anywhere (`full` jitter,
    /// as `web/ringws.js` does).
    #[arg(long, value_enum, default_value_t = BackoffJitter::Upper)]
    pub backoff_jitter: BackoffJitter,

    /// Connection attempts per second over the whole run (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,

    /// Most connection attempts in progress at once, per worker thread.
    #[arg(long, default_value_t = 256)]
    pub max_pending_connects: usize,

    /// Seconds a connect + handshake may take before it counts as a timeout.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Seconds to wait for every connection to open before the measured phase starts anyway.
    #[arg(long, default_value_t = 60.0)]
    pub ramp_timeout: f64,

    /// Seconds to wait, after sending stops, for messages still in flight (then they count as lost).
    #[arg(long, default_value_t = 2.0)]
    pub drain_timeout: f64,

    /// Message payload size in bytes (broadcast: at least 41 for text; binary from 16 with a compact stamp).
    #[arg(short = 's', long, default_value_t = 20)]
    pub size: usize,

    /// Message type.
    #[arg(long, value_enum, default_value_t = Kind::Binary)]
    pub kind: Kind,

    /// What fills each payload after its stamp: `letters` (a..z repeating) or `json` (JSON-like records,
    /// which compress like JSON traffic: use it with --deflate).
    #[arg(long, value_enum, default_value_t = PayloadKind::Letters)]
    pub payload: PayloadKind,

    /// Offer permessage-deflate (RFC 7692) without context takeover either way, as
    /// `permessage-deflate; server_no_context_takeover; client_no_context_takeover`. Where the server
    /// agrees, every data message is sent compressed (plain when that would not make it smaller) and
    /// compressed messages received are inflated before they are checked; a server answer this client
    /// cannot honour fails the handshake (handshake_invalid). The report gives wire and payload bytes.
    #[arg(long)]
    pub deflate: bool,

    /// --deflate: offer `permessage-deflate; client_no_context_takeover` instead, letting the server keep
    /// its compression context between messages (uWebSockets' dedicated compressors, `ringws serve
    /// --compression context`). Where the answer keeps it, each connection keeps its own inflater (a 15-bit
    /// window, about 44 KB) from its first compressed message on.
    #[arg(long, requires = "deflate")]
    pub deflate_server_context: bool,

    /// --deflate: the compression level (0-9) of what this client sends.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub deflate_level: u8,

    /// Echo closed loop: messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,

    /// Messages per second over the whole run: echo open loop (latency from the intended send time),
    /// broadcast publish rate (all publishers together; or --window), churn cycles per second.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,

    /// Broadcast closed loop (instead of --rate): at most N published messages in flight over all
    /// publishers together, a message being in flight from its send until every subscriber received it;
    /// publishers publish whenever the window has room. One process only (no --procs).
    #[arg(long, value_name = "N")]
    pub window: Option<u64>,

    /// Echo: messages per connection, then stop (exact counts). Churn: echoes per cycle (default 1).
    #[arg(short = 'm', long)]
    pub messages: Option<u64>,

    /// Broadcast: publisher connections (in addition to the subscribers).
    #[arg(long, default_value_t = 1)]
    pub publishers: u64,

    /// Broadcast on a pub/sub topic (`ringws serve --mode pubsub`): subscribers connect with `?topic=T`,
    /// publishers send `{"op":"pub","topic":T,"data":...}` (text) or `[3][len][T][payload]` (binary).
    #[arg(long)]
    pub topic: Option<String>,

    /// Connect: seconds to hold the connections open after the ramp.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,

    /// Connect: seconds between pings on each connection while holding (0: no pings).
    #[arg(long, default_value_t = 0.0)]
    pub ping_interval: f64,

    /// Connect: after holding, one connection sends a message and every connection must receive it
    /// (needs a server in broadcast mode).
    #[arg(long)]
    pub verify_broadcast: bool,

    /// Write the final report as JSON to this file ("-" for stdout, then the table goes to stderr).
    #[arg(long)]
    pub json: Option<String>,

    /// Write an HdrHistogram interval log (one interval per second) to this file.
    #[arg(long)]
    pub hist_log: Option<String>,

    /// No live line on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Measurement of a server's floor (echo): the server sends back the raw bytes it received (a TCP
    /// echo answering the upgrade, `examples/tcp_echo_floor.rs`), so echoes arrive as this client's own
    /// masked frames; they are read in the server role (unmasked) and checked like any echo.
    #[arg(long, hide = true)]
    pub floor: bool,

    /// Internal: this process is child K of --child-of N (started by --procs).
    #[arg(long, hide = true)]
    pub child: Option<usize>,

    /// Internal: number of child processes of the run.
    #[arg(long, hide = true, default_value_t = 1)]
    pub child_of: usize,
}

/// Options that only one or some scenarios read (clap ids), with those scenarios; every other option
/// applies to all. `ringws-loadgen SCENARIO --help` shows a scenario's options only ([`scenario_help`]).
const SCENARIO_OPTIONS: [(&str, &[Scenario]); 10] = [
    ("depth", &[Scenario::Echo]),
    ("floor", &[Scenario::Echo]),
    (
        "rate",
        &[Scenario::Echo, Scenario::Broadcast, Scenario::Churn],
    ),
    ("messages", &[Scenario::Echo, Scenario::Churn]),
    ("window", &[Scenario::Broadcast]),
    ("publishers", &[Scenario::Broadcast]),
    ("topic", &[Scenario::Broadcast]),
    ("hold", &[Scenario::Connect]),
    ("ping_interval", &[Scenario::Connect]),
    ("verify_broadcast", &[Scenario::Connect]),
];

/// The scenario a command line asks help for: `SCENARIO --help` (or `-h`, in any order); `None` when it
/// asks none, or names no scenario (then clap's own help shows everything).
pub fn help_scenario<S: AsRef<str>>(args: &[S]) -> Option<Scenario> {
    let args: Vec<&str> = args.iter().skip(1).map(AsRef::as_ref).collect();
    if !args.iter().any(|a| *a == "--help" || *a == "-h") {
        return None;
    }
    args.iter().find_map(|a| Scenario::from_str(a, false).ok())
}

/// The long help of `scenario`: its description, then only the options it reads (and the common ones).
pub fn scenario_help(scenario: Scenario) -> String {
    use clap::CommandFactory;
    let name = scenario
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let about = scenario
        .to_possible_value()
        .and_then(|v| v.get_help().map(ToString::to_string))
        .unwrap_or_default();
    let mut command = Options::command()
        .about(about)
        .long_about(None)
        .override_usage(format!("ringws-loadgen {name} [OPTIONS]"))
        .mut_arg("scenario", |arg| arg.hide(true));
    for (id, scenarios) in SCENARIO_OPTIONS {
        if !scenarios.contains(&scenario) {
            command = command.mut_arg(id, |arg| arg.hide(true));
        }
    }
    command.render_long_help().to_string()
}

/// The parsed target of `--url`.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Host header value (`HOST:PORT`, as written in the URL).
    pub host: String,
    /// The URL's host alone (the TLS server name: SNI when it is a DNS name).
    pub hostname: String,
    pub path: String,
    /// `wss://`: the connection speaks TLS.
    pub tls: bool,
}

impl Target {
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "wss"
        } else {
            "ws"
        }
    }
}

pub fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else {
        return Err(format!("{url}: only ws:// and wss:// URLs are supported"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?),
        None => (authority, default_port),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let ip: Ipv4Addr = match host.parse() {
        Ok(ip) => ip,
        Err(_) => resolve_ipv4(host, port).map_err(|e| format!("{url}: {e}"))?,
    };
    Ok(Target {
        addr: SocketAddr::from((ip, port)),
        host: format!("{host}:{port}"),
        hostname: host.to_string(),
        path: path.to_string(),
        tls,
    })
}

/// The first IPv4 address of `host` (resolved once, at startup).
fn resolve_ipv4(host: &str, port: u16) -> Result<Ipv4Addr, String> {
    use std::net::ToSocketAddrs;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host}: {e}"))?;
    addrs
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(*v4.ip()),
            SocketAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| format!("host {host} has no IPv4 address"))
}

impl Options {
    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let targets = self.targets()?;
        let target = &targets[0];
        if let Some(other) = targets.iter().find(|t| t.tls != target.tls) {
            return Err(format!(
                "--url: {}:// and {}:// mixed: every URL of a run is ws://, or every one wss://",
                target.scheme(),
                other.scheme()
            ));
        }
        if let Some(other) = targets
            .iter()
            .find(|t| t.tls && t.hostname != target.hostname)
        {
            return Err(format!(
                "--url: wss:// URLs of one run name one host (the TLS server name): {} and {}",
                target.hostname, other.hostname
            ));
        }
        if target.tls {
            if self.ca_cert.is_none() && !self.insecure {
                return Err(format!(
                    "{}: wss:// needs --ca-cert FILE (PEM roots to trust) or --insecure (accept any \
                     certificate); no system root store is used",
                    self.urls[0]
                ));
            }
            if self.ca_cert.is_some() && self.insecure {
                return Err("--ca-cert and --insecure exclude each other".into());
            }
        } else if self.ca_cert.is_some() || self.insecure || self.tls_resume {
            return Err("--ca-cert, --insecure and --tls-resume apply to wss:// URLs only".into());
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.procs == 0 {
            return Err("--procs must be at least 1".into());
        }
        if self.floor && (self.scenario != Scenario::Echo || self.deflate) {
            return Err("--floor applies to echo without --deflate only".into());
        }
        if self.depth == 0 {
            return Err("--depth must be at least 1".into());
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err("--rate must be a positive number".into());
            }
        }
        if self.duration.is_nan() || self.duration <= 0.0 {
            return Err("--duration must be positive".into());
        }
        match self.scenario {
            Scenario::Broadcast => {
                let min_size = match self.kind {
                    Kind::Text => crate::payload::BROADCAST_HEADER,
                    Kind::Binary => crate::payload::COMPACT_BROADCAST_HEADER,
                };
                if self.size < min_size {
                    return Err(format!(
                        "broadcast needs --size >= {} for {:?} messages",
                        min_size, self.kind
                    ));
                }
                if self.publishers == 0 {
                    return Err("--publishers must be at least 1".into());
                }
                match (self.rate, self.window) {
                    (Some(_), Some(_)) => {
                        return Err("broadcast: --rate (open loop) and --window (closed loop) \
                                    exclude each other; give one"
                            .into())
                    }
                    (None, None) => {
                        return Err("broadcast needs --rate R (publishes per second over all \
                                    publishers, open loop) or --window N (messages in flight, closed \
                                    loop)"
                            .into())
                    }
                    (None, Some(0)) => return Err("--window must be at least 1".into()),
                    (None, Some(_)) if self.procs > 1 || self.child.is_some() => {
                        return Err("--window counts the messages in flight in one process: it \
                                    excludes --procs (use --threads)"
                            .into())
                    }
                    _ => {}
                }
                if let Some(topic) = &self.topic {
                    let valid = |c: char| c.is_ascii_alphanumeric() || "._-:/".contains(c);
                    if topic.is_empty() || topic.len() > 64 || !topic.chars().all(valid) {
                        return Err("--topic: 1 to 64 characters of A-Z a-z 0-9 . _ - : /".into());
                    }
                }
            }
            Scenario::Churn if self.rate.is_none() => {
                return Err("churn needs --rate (cycles per second)".into())
            }
            _ => {}
        }
        if self.window.is_some() && self.scenario != Scenario::Broadcast {
            return Err("--window applies to broadcast only".into());
        }
        Ok(())
    }

    /// Every `--url`, parsed, in the order given (at least one: `--url` has a default).
    pub fn targets(&self) -> Result<Vec<Target>, String> {
        self.urls.iter().map(|url| parse_url(url)).collect()
    }

    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// Total connections of the run: subscribers plus publishers for broadcast.
    pub fn total_connections(&self) -> u64 {
        match self.scenario {
            Scenario::Broadcast => self.connections + self.publishers,
            _ => self.connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let t = parse_url("ws://127.0.0.1:9001/chat?topic=a").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.path, "/chat?topic=a");
        assert_eq!(t.host, "127.0.0.1:9001");
        assert!(!t.tls);
        assert_eq!(parse_url("ws://127.0.0.1:80").unwrap().path, "/");
        assert!(parse_url("http://127.0.0.1/").is_err());
        assert!(parse_url("ws://:9001/").is_err());
        let t = parse_url("wss://localhost:9443/x").unwrap();
        assert!(t.tls);
        assert_eq!(t.hostname, "localhost");
        assert_eq!(t.host, "localhost:9443");
        assert!(t.addr.ip().is_loopback());
        assert_eq!(parse_url("wss://127.0.0.1").unwrap().addr.port(), 443);
        assert!(parse_url("wss://no-such-host.invalid:1/").is_err());
    }

    fn options(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("ringws-loadgen").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn url_may_be_repeated_with_one_scheme() {
        let one = options(&["echo"]);
        assert_eq!(one.urls, ["ws://127.0.0.1:9001/"]);
        let two = options(&[
            "echo",
            "--url",
            "ws://127.0.0.1:1/",
            "--url",
            "ws://127.0.0.1:2/a",
        ]);
        let targets = two.targets().unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(
            (targets[1].addr.port(), targets[1].path.as_str()),
            (2, "/a")
        );
        assert_eq!(two.validate(), Ok(()));
        let mixed = options(&[
            "echo",
            "--url",
            "ws://127.0.0.1:1/",
            "--url",
            "wss://127.0.0.1:2/",
            "--insecure",
        ]);
        assert!(mixed.validate().unwrap_err().contains("mixed"));
        let hosts = options(&[
            "echo",
            "--url",
            "wss://127.0.0.1:1/",
            "--url",
            "wss://localhost:2/",
            "--insecure",
        ]);
        assert!(hosts.validate().unwrap_err().contains("one host"));
        let bad = options(&["echo", "--url", "ws://127.0.0.1:1/", "--url", "http://x/"]);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn broadcast_takes_a_rate_or_a_window() {
        let error = |args: &[&str]| options(args).validate().err().unwrap_or_default();
        assert_eq!(options(&["broadcast", "--rate", "10"]).validate(), Ok(()));
        assert_eq!(options(&["broadcast", "--window", "64"]).validate(), Ok(()));
        assert!(
            error(&["broadcast", "--rate", "10", "--window", "64"]).contains("exclude each other")
        );
        assert!(error(&["broadcast"]).contains("--rate R"));
        assert!(error(&["broadcast", "--window", "0"]).contains("at least 1"));
        assert!(error(&["broadcast", "--window", "8", "--procs", "2"]).contains("--procs"));
        assert!(error(&["echo", "--window", "8"]).contains("broadcast only"));
    }
}
