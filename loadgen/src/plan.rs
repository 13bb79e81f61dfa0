//! The run plan (what every worker must do, fixed before the run starts) and the few values the
//! coordinator and the workers share while it runs: the phase, the start time of the measured phase,
//! each worker's published counters and latency histogram, and the broadcast window (`--window`).
//!
//! Workers read the phase once per loop iteration; nothing here is touched per message but the window
//! (one atomic add per publish, one per subscriber's received batch; see `window.rs`).

use crate::cli::{Kind, Options, Scenario, Target};
use crate::engine::EngineKind;
use crate::stats::{self, SharedCounters};
use crate::window::Window;
use crate::wire::{MessageKind, OpCode};
use hdrhistogram::Histogram;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Phases of a run, in order. Workers never go back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Open every connection (at `--connect-rate`).
    Ramp = 0,
    /// Measured load (echo, broadcast, churn) or holding idle connections (connect).
    Run = 1,
    /// Connect scenario: one connection sends a message every connection must receive.
    Verify = 2,
    /// Stop sending; wait for what is in flight, up to the drain timeout; then close and exit.
    Drain = 3,
}

impl Phase {
    pub fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Ramp,
            1 => Phase::Run,
            2 => Phase::Verify,
            _ => Phase::Drain,
        }
    }
}

/// The backoff before a reconnect: windows of `base_ns` doubling up to `cap_ns`; a wait anywhere in the
/// window (`full_jitter`) or in its upper half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ns: u64,
    pub cap_ns: u64,
    pub full_jitter: bool,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base_ns: 100_000_000,
            cap_ns: 5_000_000_000,
            full_jitter: false,
        }
    }
}

/// Everything a worker needs to know, computed once from the options.
#[derive(Debug)]
pub struct Plan {
    pub scenario: Scenario,
    /// The I/O engine workers try first (io_uring falls back to epoll).
    pub engine: EngineKind,
    /// Every `--url`, in the order given; connection `gid` goes to `targets[url_of(gid)]`.
    pub targets: Vec<Target>,
    /// What every payload carries after its stamp, `--size` bytes long (see `payload.rs`).
    pub filler: Vec<u8>,
    /// `--deflate`: offer permessage-deflate; what this client compresses with.
    pub deflate: Option<crate::deflate::ClientDeflate>,
    pub opcode: OpCode,
    pub kind: MessageKind,
    pub depth: usize,
    /// Echo open loop: nanoseconds between two sends on one connection.
    pub echo_interval_ns: Option<u64>,
    /// Echo: messages per connection (closed loop stops after them). Churn: echoes per cycle.
    pub messages: Option<u64>,
    /// Broadcast: subscribers are connection ids `0..subscribers`, publishers the next `publishers` ids.
    pub subscribers: u64,
    pub publishers: u64,
    /// Broadcast: nanoseconds between two publishes of one publisher (open loop, `--rate`).
    pub publish_interval_ns: u64,
    /// Broadcast closed loop (`--window N`): most messages in flight over all publishers (`window.rs`).
    pub window: Option<u64>,
    /// Churn: nanoseconds between two cycle starts of one slot.
    pub churn_interval_ns: u64,
    /// Nanoseconds between two connection attempts of one worker during the ramp (0: no pacing).
    pub connect_interval_ns: u64,
    pub max_pending_connects: usize,
    pub connect_timeout_ns: u64,
    pub drain_timeout_ns: u64,
    pub ping_interval_ns: u64,
    /// Connect: one connection sends `VERIFY_PAYLOAD` in the verify phase.
    pub verify_broadcast: bool,
    pub reconnect: bool,
    /// With `reconnect`: the backoff before each retry.
    pub backoff: Backoff,
    pub source_ips: Vec<Ipv4Addr>,
    /// Broadcast on a pub/sub topic: subscribers use `subscriber_path`, publishers wrap each message.
    pub topic: Option<String>,
    /// The request path of subscribers, per target (its path, plus `topic=T` with `--topic`).
    pub subscriber_paths: Vec<String>,
    /// `wss://`: the TLS client configuration every connection uses (`None` for `ws://`).
    pub tls: Option<crate::tls::TlsPlan>,
    /// The role connections read frames in: the client's, or with `--floor` the server's (a raw TCP
    /// echo sends back this client's own masked frames).
    pub reader_role: crate::wire::Role,
}

fn secs_to_ns(secs: f64) -> u64 {
    (secs * 1e9).max(0.0) as u64
}

impl Plan {
    /// `targets`: every `--url` (at least one). `workers_total`: worker threads over all processes
    /// (connect pacing is split between them).
    pub fn new(options: &Options, targets: Vec<Target>, workers_total: usize) -> Plan {
        assert!(!targets.is_empty(), "at least one target");
        let (opcode, kind) = match options.kind {
            Kind::Text => (OpCode::Text, MessageKind::Text),
            Kind::Binary => (OpCode::Binary, MessageKind::Binary),
        };
        let per_second_to_interval = |rate: f64, share: f64| secs_to_ns(share / rate).max(1);
        let echo_interval_ns = match (options.scenario, options.rate) {
            (Scenario::Echo, Some(rate)) => {
                Some(per_second_to_interval(rate, options.connections as f64))
            }
            _ => None,
        };
        let rate = options.rate.unwrap_or(1000.0);
        let topic = match options.scenario {
            Scenario::Broadcast => options.topic.clone(),
            _ => None,
        };
        let subscriber_paths = targets
            .iter()
            .map(|target| match &topic {
                Some(t) if target.path.contains('?') => format!("{}&topic={t}", target.path),
                Some(t) => format!("{}?topic={t}", target.path),
                None => target.path.clone(),
            })
            .collect();
        Plan {
            scenario: options.scenario,
            engine: options.engine,
            topic,
            subscriber_paths,
            targets,
            filler: crate::payload::filler(options.payload, options.size),
            deflate: options.deflate.then(|| {
                crate::deflate::ClientDeflate::new(
                    options.deflate_level,
                    options.deflate_server_context,
                )
            }),
            opcode,
            kind,
            depth: options.depth,
            echo_interval_ns,
            messages: match options.scenario {
                Scenario::Churn => Some(options.messages.unwrap_or(1)),
                _ => options.messages,
            },
            subscribers: options.connections,
            publishers: options.publishers,
            publish_interval_ns: per_second_to_interval(rate, options.publishers as f64),
            window: match options.scenario {
                Scenario::Broadcast => options.window,
                _ => None,
            },
            churn_interval_ns: per_second_to_interval(rate, options.connections as f64),
            connect_interval_ns: if options.connect_rate > 0.0 {
                per_second_to_interval(options.connect_rate, workers_total as f64)
            } else {
                0
            },
            max_pending_connects: options.max_pending_connects.max(1),
            connect_timeout_ns: secs_to_ns(options.connect_timeout),
            drain_timeout_ns: secs_to_ns(options.drain_timeout),
            ping_interval_ns: secs_to_ns(options.ping_interval),
            verify_broadcast: options.scenario == Scenario::Connect && options.verify_broadcast,
            reconnect: options.reconnect,
            backoff: Backoff {
                base_ns: options.backoff_base.saturating_mul(1_000_000),
                cap_ns: options.backoff_cap.saturating_mul(1_000_000),
                full_jitter: options.backoff_jitter == crate::cli::BackoffJitter::Full,
            },
            source_ips: (0..options.source_ips)
                .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i))
                .collect(),
            tls: None,
            reader_role: if options.floor {
                crate::wire::Role::Server
            } else {
                crate::wire::Role::Client
            },
        }
    }
}

impl Plan {
    /// The target (index into `targets`) of connection `gid`: round robin over the URLs; in broadcast,
    /// round robin among the subscribers and, separately, among the publishers, so that with several
    /// URLs both are spread (one publisher per URL before a second on any).
    pub fn url_of(&self, gid: u64) -> usize {
        let n = self.targets.len() as u64;
        let index = match self.scenario {
            Scenario::Broadcast if gid >= self.subscribers => gid - self.subscribers,
            _ => gid,
        };
        (index % n) as usize
    }

    /// Connections per target: (all, of which publishers), in `targets` order.
    pub fn connections_per_url(&self, total: u64) -> Vec<(u64, u64)> {
        let mut shares = vec![(0, 0); self.targets.len()];
        for gid in 0..total {
            let share = &mut shares[self.url_of(gid)];
            share.0 += 1;
            if self.scenario == Scenario::Broadcast && gid >= self.subscribers {
                share.1 += 1;
            }
        }
        shares
    }
}

/// What one worker shares with its coordinator.
pub struct WorkerShared {
    pub counters: SharedCounters,
    /// Every connection of the worker opened (or failed for good).
    pub ramped: AtomicBool,
    /// Echo with --messages: every connection sent and got back all its messages.
    pub finished: AtomicBool,
    /// The worker entered the drain phase and published its final send counts.
    pub draining: AtomicBool,
    /// The worker closed everything and stopped.
    pub done: AtomicBool,
    /// Latencies recorded since the coordinator last took them (handed over about once a second).
    pub histogram: Mutex<Histogram<u64>>,
    /// The I/O engine the worker runs on, as it describes itself (set once when it starts).
    pub engine: Mutex<String>,
}

impl Default for WorkerShared {
    fn default() -> WorkerShared {
        WorkerShared {
            counters: SharedCounters::default(),
            ramped: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            done: AtomicBool::new(false),
            histogram: Mutex::new(stats::new_histogram()),
            engine: Mutex::new(String::new()),
        }
    }
}

/// What all workers of one process share.
pub struct Shared {
    phase: AtomicU8,
    /// `CLOCK_MONOTONIC` ns at which the measured phase started (0 before).
    pub run_start_ns: AtomicU64,
    /// Set by the coordinator during the drain once everything expected arrived: workers stop at once.
    pub drain_complete: AtomicBool,
    pub workers: Vec<WorkerShared>,
    /// Broadcast with `--window`: the messages in flight, counted over every worker of the process.
    pub window: Option<Arc<Window>>,
}

impl Shared {
    /// What `workers` worker threads running `plan` share.
    pub fn new(workers: usize, plan: &Plan) -> Shared {
        Shared {
            phase: AtomicU8::new(Phase::Ramp as u8),
            run_start_ns: AtomicU64::new(0),
            drain_complete: AtomicBool::new(false),
            workers: (0..workers).map(|_| WorkerShared::default()).collect(),
            window: plan
                .window
                .map(|limit| Arc::new(Window::new(limit, plan.subscribers))),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves to `phase` (never backwards).
    pub fn advance(&self, phase: Phase, now_ns: u64) {
        if phase >= Phase::Run && self.run_start_ns.load(Ordering::Acquire) == 0 {
            self.run_start_ns.store(now_ns, Ordering::Release);
        }
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str], urls: usize) -> Plan {
        use clap::Parser;
        let options =
            Options::try_parse_from(std::iter::once("ringws-loadgen").chain(args.iter().copied()))
                .expect("valid arguments");
        let targets = (0..urls)
            .map(|i| crate::cli::parse_url(&format!("ws://127.0.0.1:{}/", 9000 + i)).unwrap())
            .collect();
        Plan::new(&options, targets, 1)
    }

    #[test]
    fn connections_go_round_robin_over_the_urls() {
        let echo = plan(&["echo", "-c", "5"], 2);
        let urls: Vec<usize> = (0..5).map(|gid| echo.url_of(gid)).collect();
        assert_eq!(urls, [0, 1, 0, 1, 0]);
        assert_eq!(echo.connections_per_url(5), [(3, 0), (2, 0)]);
        let one = plan(&["churn", "-c", "3", "--rate", "10"], 1);
        assert!((0..3).all(|gid| one.url_of(gid) == 0));
    }

    #[test]
    fn broadcast_spreads_subscribers_and_publishers_each() {
        // 3 subscribers (gids 0..3) and 2 publishers (gids 3, 4): the publishers go one per URL, not
        // both where the subscribers' count happens to leave off.
        let broadcast = plan(
            &["broadcast", "-c", "3", "--publishers", "2", "-s", "64"],
            2,
        );
        let urls: Vec<usize> = (0..5).map(|gid| broadcast.url_of(gid)).collect();
        assert_eq!(urls, [0, 1, 0, 0, 1]);
        assert_eq!(broadcast.connections_per_url(5), [(3, 1), (2, 1)]);
        let paths =
            plan(&["broadcast", "-c", "2", "--topic", "news", "-s", "64"], 2).subscriber_paths;
        assert_eq!(paths, ["/?topic=news", "/?topic=news"]);
    }
}
