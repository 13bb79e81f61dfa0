//! The final report: built once from the run's counters and histogram, printed as a table and, with
//! `--json`, written as JSON for scripts (`scripts/bench.sh`, `scripts/plot.py`).
//!
//! It reports only what was counted: throughput is validated messages over the measured phase, never
//! messages sent.

use crate::cli::{Options, Scenario};
use crate::plan::Plan;
use crate::run::fmt_us;
use crate::stats::{Counter, Counters};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// One second of the run.
#[derive(Serialize, Clone, Debug)]
pub struct TimelinePoint {
    pub t: f64,
    pub phase: String,
    pub open: u64,
    /// Per second of the scenario's main counter (received, delivered, connected or churn cycles).
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub errors: u64,
}

/// What the coordinator measured, handed to `Report::build`.
pub struct Measurements {
    pub started_wall: std::time::SystemTime,
    pub counters: Counters,
    pub at_ramp: Counters,
    pub at_run_end: Counters,
    pub latency: Histogram<u64>,
    pub timeline: Vec<TimelinePoint>,
    pub ramp_secs: f64,
    pub ramp_complete: bool,
    pub run_secs: f64,
    pub open_at_hold_end: u64,
    pub verify: Option<(u64, f64)>,
    pub cpu: (f64, f64),
    pub elapsed_secs: f64,
    /// The I/O engine(s) the workers ran on.
    pub engine: String,
    /// Broadcast with `--window`: the most messages seen in flight.
    pub max_in_flight: u64,
}

#[derive(Serialize, Debug)]
pub struct Latency {
    /// What the values measure.
    pub measures: &'static str,
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Serialize, Debug)]
pub struct Ramp {
    pub seconds: f64,
    pub complete: bool,
    pub connected: u64,
    pub connects_per_s: f64,
}

#[derive(Serialize, Debug)]
pub struct Broadcast {
    pub subscribers: u64,
    pub publishers: u64,
    pub published: u64,
    /// published x subscribers.
    pub expected: u64,
    /// Distinct (subscriber, message) deliveries.
    pub delivered: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// `--window N` (closed loop): N, the most messages in flight allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// `--window`: the most messages seen in flight (deliveries owed, in whole messages rounded up;
    /// see `window.rs`), at most `window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
}

#[derive(Serialize, Debug)]
pub struct Connect {
    pub target: u64,
    pub open_after_hold: u64,
    pub verify_received: Option<u64>,
    pub verify_seconds: Option<f64>,
    pub verify_ok: Option<bool>,
}

/// Bytes one way: all bytes on the socket (upgrade, every frame header, control frames; for wss://, TLS
/// records) against the payload of the data messages (before compression, after inflating).
#[derive(Serialize, Debug)]
pub struct Bytes {
    pub wire: u64,
    pub payload: u64,
    /// wire / payload (0 without payload).
    pub wire_per_payload: f64,
    /// Data messages that went compressed (permessage-deflate).
    pub compressed_messages: u64,
}

impl Bytes {
    fn new(wire: u64, payload: u64, compressed_messages: u64) -> Bytes {
        Bytes {
            wire,
            payload,
            wire_per_payload: if payload == 0 {
                0.0
            } else {
                wire as f64 / payload as f64
            },
            compressed_messages,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} wire / {} payload = {:.3} ({} messages compressed)",
            self.wire, self.payload, self.wire_per_payload, self.compressed_messages
        )
    }
}

/// permessage-deflate and what it saved, both ways.
#[derive(Serialize, Debug)]
pub struct Compression {
    /// `--deflate`: permessage-deflate was offered.
    pub offered: bool,
    /// Connections (counting each reconnect) whose server agreed.
    pub agreed: u64,
    pub sent: Bytes,
    pub received: Bytes,
}

#[derive(Serialize, Debug)]
pub struct Cpu {
    pub user_s: f64,
    pub sys_s: f64,
    /// Load generator CPU time (all its threads and child processes) per counted unit (echoed message,
    /// delivery, connection or churn cycle), in microseconds.
    pub us_per_unit: f64,
}

/// The connections one `--url` was given (round robin: `Plan::url_of`).
#[derive(Serialize, Debug)]
pub struct UrlShare {
    pub url: String,
    /// Connections on this URL (broadcast: its subscribers and publishers).
    pub connections: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishers: Option<u64>,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub scenario: Scenario,
    /// Every `--url`, space-separated.
    pub url: String,
    /// Connections per `--url`, in the order given.
    pub urls: Vec<UrlShare>,
    pub connections: u64,
    pub size: usize,
    pub kind: crate::cli::Kind,
    pub mode: String,
    pub procs: usize,
    pub threads_per_proc: usize,
    /// The I/O engine the workers ran on ("io_uring ..." or "epoll").
    pub engine: String,
    /// "ws" or "wss".
    pub scheme: &'static str,
    /// wss://: versions offered, server name, how the server is trusted ("INSECURE" with `--insecure`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    pub started_unix_s: f64,
    pub elapsed_s: f64,
    pub ramp: Ramp,
    pub run_s: f64,
    /// Main counter over the measured phase, per second (messages echoed, deliveries, cycles).
    pub throughput_per_s: f64,
    pub sent: u64,
    pub received: u64,
    pub errors_total: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub counters: BTreeMap<&'static str, u64>,
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<Broadcast>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<Connect>,
    pub compression: Compression,
    pub cpu: Cpu,
    pub timeline: Vec<TimelinePoint>,
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e3
    }
}

impl Report {
    pub fn build(options: &Options, plan: &Plan, m: Measurements) -> Report {
        let c = &m.counters;
        let main = match options.scenario {
            Scenario::Echo => Counter::Received,
            Scenario::Broadcast => Counter::Delivered,
            Scenario::Connect => Counter::Connected,
            Scenario::Churn => Counter::ChurnCycles,
        };
        let in_run = m.at_run_end.get(main).saturating_sub(m.at_ramp.get(main));
        let throughput_per_s = match options.scenario {
            Scenario::Connect => 0.0,
            _ => in_run as f64 / m.run_secs.max(1e-9),
        };
        let units = c.get(main).max(1);
        let h = &m.latency;
        let latency = Latency {
            measures: match options.scenario {
                Scenario::Echo if plan.echo_interval_ns.is_some() => {
                    "echo round trip from the intended send time (coordinated-omission corrected)"
                }
                Scenario::Echo => "echo round trip from the actual send time (closed loop)",
                Scenario::Broadcast if plan.window.is_some() => {
                    "publish (actual send time, closed loop) to delivery"
                }
                Scenario::Broadcast => "publish (intended send time) to delivery",
                Scenario::Churn => "whole cycle: connect, handshake, echoes, close",
                Scenario::Connect => "none",
            },
            count: h.len(),
            min_us: if h.is_empty() {
                0.0
            } else {
                h.min() as f64 / 1e3
            },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() / 1e3 },
            p50_us: us(h, 0.5),
            p90_us: us(h, 0.9),
            p99_us: us(h, 0.99),
            p999_us: us(h, 0.999),
            max_us: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1e3
            },
        };
        let broadcast = (options.scenario == Scenario::Broadcast).then(|| {
            let published = c.get(Counter::Published);
            let expected = published * options.connections;
            let delivered = c.get(Counter::Delivered);
            Broadcast {
                subscribers: options.connections,
                publishers: options.publishers,
                published,
                expected,
                delivered,
                missing: expected.saturating_sub(delivered),
                duplicates: c.get(Counter::Duplicates),
                out_of_order: c.get(Counter::OutOfOrder),
                window: plan.window,
                max_in_flight: plan.window.map(|_| m.max_in_flight),
            }
        });
        let connect = (options.scenario == Scenario::Connect).then(|| Connect {
            target: options.connections,
            open_after_hold: m.open_at_hold_end,
            verify_received: m.verify.map(|v| v.0),
            verify_seconds: m.verify.map(|v| v.1),
            verify_ok: m
                .verify
                .map(|v| v.0 >= m.open_at_hold_end && m.open_at_hold_end == options.connections),
        });
        let mut errors = BTreeMap::new();
        let mut counters = BTreeMap::new();
        for &counter in Counter::ALL {
            counters.insert(counter.label(), c.get(counter));
            if counter.is_error() && c.get(counter) > 0 {
                errors.insert(counter.label(), c.get(counter));
            }
        }
        if let Some(b) = &broadcast {
            if b.missing > 0 {
                errors.insert("broadcast_missing", b.missing);
            }
        }
        if let Some(c) = &connect {
            if c.verify_ok == Some(false) {
                // The connections the check message did not reach (at least one: the check failed).
                let missing = c.target.saturating_sub(c.verify_received.unwrap_or(0));
                errors.insert("broadcast_check_missing", missing.max(1));
            }
        }
        let errors_total = errors.values().sum();
        let broadcasting = options.scenario == Scenario::Broadcast;
        let urls = options
            .urls
            .iter()
            .zip(plan.connections_per_url(options.total_connections()))
            .map(|(url, (connections, publishers))| UrlShare {
                url: url.clone(),
                connections,
                subscribers: broadcasting.then_some(connections - publishers),
                publishers: broadcasting.then_some(publishers),
            })
            .collect();
        Report {
            scenario: options.scenario,
            url: options.urls.join(" "),
            urls,
            connections: options.connections,
            size: options.size,
            kind: options.kind,
            mode: match (options.scenario, options.rate) {
                (Scenario::Echo, Some(rate)) => format!("open loop {rate} msg/s"),
                (Scenario::Echo, None) => format!("closed loop depth {}", options.depth),
                (Scenario::Broadcast, _) => format!(
                    "{} publisher{} {}{}",
                    options.publishers,
                    if options.publishers == 1 { "" } else { "s" },
                    match plan.window {
                        Some(window) => format!("with a window of {window} messages in flight"),
                        None => format!("at {} msg/s total", options.rate.unwrap_or(0.0)),
                    },
                    match &plan.topic {
                        Some(topic) => format!(", pub/sub topic {topic}"),
                        None => String::new(),
                    }
                ),
                (Scenario::Churn, rate) => format!(
                    "{} cycles/s, {} echoes each",
                    rate.unwrap_or(0.0),
                    plan.messages.unwrap_or(1)
                ),
                (Scenario::Connect, _) => format!("hold {}s", options.hold),
            },
            procs: options.procs,
            threads_per_proc: options.threads(),
            engine: m.engine.clone(),
            scheme: plan.targets[0].scheme(),
            tls: plan.tls.as_ref().map(|t| t.description.clone()),
            started_unix_s: m
                .started_wall
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            elapsed_s: m.elapsed_secs,
            ramp: Ramp {
                seconds: m.ramp_secs,
                complete: m.ramp_complete,
                connected: m.at_ramp.get(Counter::Connected),
                connects_per_s: m.at_ramp.get(Counter::Connected) as f64 / m.ramp_secs.max(1e-9),
            },
            run_s: m.run_secs,
            throughput_per_s,
            sent: c.get(Counter::Sent),
            received: c.get(Counter::Received),
            errors_total,
            errors,
            counters,
            latency,
            broadcast,
            connect,
            compression: Compression {
                offered: plan.deflate.is_some(),
                agreed: c.get(Counter::DeflateAgreed),
                sent: Bytes::new(
                    c.get(Counter::BytesSent),
                    c.get(Counter::PayloadBytesSent),
                    c.get(Counter::CompressedSent),
                ),
                received: Bytes::new(
                    c.get(Counter::BytesReceived),
                    c.get(Counter::PayloadBytesReceived),
                    c.get(Counter::CompressedReceived),
                ),
            },
            cpu: Cpu {
                user_s: m.cpu.0,
                sys_s: m.cpu.1,
                us_per_unit: (m.cpu.0 + m.cpu.1) * 1e6 / units as f64,
            },
            timeline: m.timeline,
        }
    }

    /// The human-readable table.
    pub fn print_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let row = |out: &mut dyn Write, k: &str, v: String| writeln!(out, "  {k:<22} {v}");
        writeln!(
            out,
            "ringws-loadgen {:?} {} ({})",
            self.scenario, self.url, self.mode
        )?;
        row(
            out,
            "connections",
            format!(
                "{} ({} procs x {} threads)",
                self.connections, self.procs, self.threads_per_proc
            ),
        )?;
        if self.urls.len() > 1 {
            for share in &self.urls {
                let roles = match (share.subscribers, share.publishers) {
                    (Some(subscribers), Some(publishers)) => {
                        format!(" ({subscribers} subscribers, {publishers} publishers)")
                    }
                    _ => String::new(),
                };
                row(
                    out,
                    "  on url",
                    format!("{} {}{roles}", share.url, share.connections),
                )?;
            }
        }
        row(out, "engine", self.engine.clone())?;
        row(
            out,
            "scheme",
            match &self.tls {
                Some(tls) => format!("{} ({tls})", self.scheme),
                None => self.scheme.to_string(),
            },
        )?;
        if self.tls.is_some() {
            row(
                out,
                "tls handshakes",
                format!(
                    "{} TLS 1.3, {} TLS 1.2",
                    self.counters["tls13_handshakes"], self.counters["tls12_handshakes"]
                ),
            )?;
        }
        row(
            out,
            "ramp",
            format!(
                "{} connected in {:.3}s ({:.0}/s){}",
                self.ramp.connected,
                self.ramp.seconds,
                self.ramp.connects_per_s,
                if self.ramp.complete {
                    ""
                } else {
                    " INCOMPLETE"
                }
            ),
        )?;
        if self.scenario != Scenario::Connect {
            row(out, "measured", format!("{:.3}s", self.run_s))?;
            row(out, "throughput", format!("{:.0}/s", self.throughput_per_s))?;
        }
        row(out, "messages sent", self.sent.to_string())?;
        if matches!(self.scenario, Scenario::Echo | Scenario::Churn) {
            row(
                out,
                "echoes received",
                format!("{} (validated)", self.received),
            )?;
        }
        if let Some(b) = &self.broadcast {
            row(out, "published", b.published.to_string())?;
            row(
                out,
                "delivered",
                format!("{} of {} expected", b.delivered, b.expected),
            )?;
            row(out, "missing", b.missing.to_string())?;
            row(out, "duplicates", b.duplicates.to_string())?;
            row(out, "out of order", b.out_of_order.to_string())?;
            if let (Some(window), Some(max)) = (b.window, b.max_in_flight) {
                row(
                    out,
                    "window",
                    format!("{window} messages, at most {max} seen in flight"),
                )?;
            }
        }
        if let Some(c) = &self.connect {
            row(
                out,
                "open after hold",
                format!("{} of {}", c.open_after_hold, c.target),
            )?;
            row(
                out,
                "pings / pongs",
                format!(
                    "{} / {}",
                    self.counters["pings_sent"], self.counters["pongs_received"]
                ),
            )?;
            if let (Some(n), Some(secs), Some(ok)) =
                (c.verify_received, c.verify_seconds, c.verify_ok)
            {
                row(
                    out,
                    "broadcast check",
                    format!(
                        "{n} received in {secs:.3}s: {}",
                        if ok { "OK" } else { "FAILED" }
                    ),
                )?;
            }
        }
        if self.latency.count > 0 {
            let l = &self.latency;
            row(out, "latency", l.measures.to_string())?;
            row(
                out,
                "  p50 / p90 / p99",
                format!(
                    "{} / {} / {}",
                    fmt_us(l.p50_us),
                    fmt_us(l.p90_us),
                    fmt_us(l.p99_us)
                ),
            )?;
            row(
                out,
                "  p99.9 / max",
                format!("{} / {}", fmt_us(l.p999_us), fmt_us(l.max_us)),
            )?;
            row(
                out,
                "  min / mean",
                format!("{} / {}", fmt_us(l.min_us), fmt_us(l.mean_us)),
            )?;
        }
        let compression = &self.compression;
        row(
            out,
            "permessage-deflate",
            if compression.offered {
                format!("offered, agreed on {} connections", compression.agreed)
            } else {
                "not offered".to_string()
            },
        )?;
        row(out, "bytes sent", compression.sent.describe())?;
        row(out, "bytes received", compression.received.describe())?;
        row(
            out,
            "loadgen cpu",
            format!(
                "{:.2}s user {:.2}s sys, {:.3} us per unit",
                self.cpu.user_s, self.cpu.sys_s, self.cpu.us_per_unit
            ),
        )?;
        let reconnects = self.counters["reconnects"];
        if reconnects > 0 {
            row(
                out,
                "reconnects",
                format!("{reconnects} (scheduled, with backoff)"),
            )?;
        }
        let closes: Vec<String> = Counter::SERVER_CLOSES
            .iter()
            .map(|&counter| (counter, self.counters[counter.label()]))
            .filter(|&(_, n)| n > 0)
            .map(|(counter, n)| {
                let code = counter.label().trim_start_matches("server_close_");
                format!("{n} x {code}")
            })
            .collect();
        if !closes.is_empty() {
            row(out, "server close codes", closes.join(", "))?;
        }
        row(out, "errors", self.errors_total.to_string())?;
        for (name, n) in &self.errors {
            row(out, &format!("  {name}"), n.to_string())?;
        }
        Ok(())
    }
}
