//! The server: workers (one ring, listener and slab each), the connection state machine, send queues,
//! backpressure, timers, limits, metrics and HTTP routes.
//!
//! [`Server::start`] binds one SO_REUSEPORT listener per worker (worker 0 first, without SO_REUSEPORT at
//! bind time, so that a busy port is an error and port 0 resolves to one ephemeral port for all), starts
//! the workers and returns once every worker accepts.
//! [`Server::start_with`] with [`Listen::Inherit`] serves listeners handed over by a running server
//! instead ([`takeover`]: a zero-downtime restart), and [`ServerHandle::hand_over`] is that running
//! server's side: stop accepting, drain over `drain_window`.
//! [`ServerHandle::shutdown`] starts the graceful shutdown (close 1001 to every open connection) and
//! [`ServerHandle::join`] waits for it. This layer never touches a socket except through the reactor,
//! but for the operators' listener ([`admin`], `--metrics-listen`): one plain thread off the workers.

pub mod admin;
pub mod config;
pub mod connection;
pub mod handler;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod shared_message;
pub mod takeover;
pub mod timer;
pub mod tls;
pub mod worker;

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use config::{
    ConfigError, PublishConfig, SenderBudgetPolicy, ServerConfig, SlowConsumerPolicy,
};
pub use handler::{AuthFailure, ConnId, Ctx, Handler, UpgradeDecision, UpgradeRequest};
pub use inbox::{Fetched, FetchedPage, WorkerMessage};
pub use metrics::WorkerMetrics;
pub use shared_message::SharedMessage;

use crate::channels::{History, Position, Presence};
use crate::reactor::ring::DoorbellRing;
use crate::reactor::sys::PortShare;
use crate::reactor::{sys, Op, UserData, NO_CONNECTION};
use inbox::Inboxes;
use worker::WorkerDeath;

/// State shared by all workers of one server (read-mostly; no lock on the hot path).
pub(crate) struct Shared {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) metrics: Vec<Arc<WorkerMetrics>>,
    /// Each worker's inbox and doorbell.
    pub(crate) inboxes: Inboxes,
    pub(crate) shutdown: AtomicBool,
    /// The workers have finished: the broker's publishers write what is still queued (the leaves of the
    /// connections the shutdown closed, the last publishes) and stop.
    pub(crate) broker_stop: AtomicBool,
    /// The listeners were handed over to another process: stop accepting, drain (`worker::shutdown`).
    pub(crate) handed_over: AtomicBool,
    /// Workers that have stopped accepting after the handover (their accepts cancelled in the kernel).
    pub(crate) accepts_stopped: AtomicUsize,
    /// Bumped to make every worker arm its accept again ([`ServerHandle::rearm_accepts`]).
    pub(crate) accept_rearms: AtomicUsize,
    /// Open WebSocket connections over all workers (for `--max-connections`).
    pub(crate) websockets_open: AtomicUsize,
    /// The link to the other nodes through Redis (`--broker`), if any.
    pub(crate) broker: Option<crate::broker::Broker>,
    /// The node's per-topic history (`ServerConfig::history`), if kept.
    pub(crate) history: Option<Arc<History<SharedMessage>>>,
    /// The node's per-topic presence (`ServerConfig::presence`), if kept.
    pub(crate) presence: Option<Arc<Presence>>,
}

impl Shared {
    /// Hands a message published on `topic` on (`deliver`: to the workers' inboxes, the broker): as a
    /// publication, and with the node's history, at the next offset of the topic, stored, and handed on
    /// under the history's lock so that every inbox holds the topic's publications in offset order.
    /// Returns the position given, if any.
    pub(crate) fn sequence(
        &self,
        topic: &Arc<str>,
        message: SharedMessage,
        deliver: impl FnOnce(&SharedMessage),
    ) -> Option<Position> {
        if let (Some(broker), Some(_)) = (&self.broker, &self.history) {
            // Across nodes, Redis gives the offset and sends the publication back to this node too.
            broker.publish_with_history(topic, &message);
            return None;
        }
        match &self.history {
            None => {
                deliver(&message.into_publication());
                None
            }
            Some(history) => Some(history.append(
                topic,
                message,
                std::time::Instant::now(),
                SharedMessage::with_position,
                deliver,
            )),
        }
    }
}

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
    ring_setup: String,
    doorbell: Mutex<Option<DoorbellRing>>,
    /// The operators' listener (`metrics_listen`), stopped once the workers are done.
    admin: Option<admin::AdminListener>,
    /// Duplicates of the workers' listeners, for a takeover (dropped on shutdown and handover).
    handover: Arc<takeover::ListenerSet>,
    /// The broker's threads (`--broker`), which stop at the shutdown.
    broker_threads: Vec<JoinHandle<()>>,
}

/// Where [`Server::start_with`] gets its listeners.
#[derive(Debug)]
pub enum Listen {
    /// Bind `bind:port`: worker 0's listener claims the port for this server alone (a busy port is a
    /// [`ListenError`]), the others join it with SO_REUSEPORT.
    Bind,
    /// Serve the listeners a running server handed over ([`takeover::take_over`]), one per worker in
    /// their order; workers beyond them join the same port with SO_REUSEPORT. Fewer workers than
    /// listeners is a [`takeover::TakeoverError`] unless the kernel migrates the queues of closed
    /// listeners (`net.ipv4.tcp_migrate_req = 1`); so is an address other than `bind:port` (port 0:
    /// the one handed over).
    Inherit(Vec<OwnedFd>),
}

pub struct Server;

/// The WebSocket address could not be bound or listened on. [`Server::start`] returns it inside its
/// `io::Error` (same kind as `source`); the CLI exits with status 2 on it. A port that any other socket
/// holds (another `ringws serve` too) is `AddrInUse`: the server never shares its port with another process.
#[derive(Debug)]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl ListenError {
    fn io_error(addr: SocketAddr, source: std::io::Error) -> std::io::Error {
        std::io::Error::new(source.kind(), ListenError { addr, source })
    }
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.source.kind() == std::io::ErrorKind::AddrInUse {
            write!(
                f,
                "{} is already in use (another process listens on it; choose another --port or stop it)",
                self.addr
            )
        } else {
            write!(f, "cannot listen on {}: {}", self.addr, self.source)
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Server {
    /// Checks `config` ([`ServerConfig::validate`]: an `InvalidInput` error holding the [`ConfigError`]),
    /// binds, starts `config.workers` workers, each with a handler from `make_handler(worker_index)`
    /// (called on the worker's thread), and returns once all of them accept connections.
    pub fn start<H, F>(config: ServerConfig, make_handler: F) -> std::io::Result<ServerHandle>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        Server::start_with(config, Listen::Bind, make_handler)
    }

    /// [`Server::start`] with the listeners `listen` says.
    pub fn start_with<H, F>(
        config: ServerConfig,
        listen: Listen,
        make_handler: F,
    ) -> std::io::Result<ServerHandle>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        sys::raise_open_file_limit();
        // Bound first: a busy operators' address stops startup before any worker exists. The error
        // carries an `admin::BindError` naming the flag and the address.
        // Taking over, the running server still holds the address until the handover: bound then
        // ([`ServerHandle::listen_metrics`]).
        let inheriting = matches!(listen, Listen::Inherit(_));
        let admin = match config.metrics_listen.filter(|_| !inheriting) {
            Some(addr) => Some(
                admin::BoundAdmin::bind(addr)
                    .map_err(|e| std::io::Error::new(e.source.kind(), e))?,
            ),
            None => None,
        };
        let workers = config.workers;
        let backlog = i32::try_from(config.listen_backlog.max(1)).unwrap_or(i32::MAX);
        let requested = SocketAddr::new(config.bind, config.port);
        let mut listeners = match listen {
            Listen::Bind => {
                // Worker 0's listener claims the port for this server alone (a busy port is an error
                // naming the address, a `ListenError`); the other workers join it with SO_REUSEPORT.
                let first = sys::reuseport_listener(requested, backlog, PortShare::First)
                    .map_err(|source| ListenError::io_error(requested, source))?;
                vec![first]
            }
            Listen::Inherit(inherited) => {
                let inherited = inherited_listeners(inherited, requested, workers)?;
                // This server's --listen-backlog, not the previous one's.
                for listener in &inherited {
                    sys::set_listen_backlog(std::os::fd::AsFd::as_fd(listener), backlog)?;
                }
                inherited
            }
        };
        let local_addr = sys::local_addr(&listeners[0])?;
        while listeners.len() < workers {
            listeners.push(
                sys::reuseport_listener(local_addr, backlog, PortShare::Join)
                    .map_err(|source| ListenError::io_error(local_addr, source))?,
            );
        }
        let handover = Arc::new(takeover::ListenerSet::new(
            listeners
                .iter()
                .map(|fd| fd.try_clone())
                .collect::<std::io::Result<Vec<_>>>()?,
        ));
        let (inboxes, receivers) = Inboxes::new(workers, config.inbox_capacity);
        // `--broker`: the links exist now (workers hand them publishes); their threads start below.
        let broker = config
            .broker_urls()
            .map(|urls| crate::broker::Broker::new(&urls));
        let broker_status = broker.as_ref().map(|b| Arc::clone(b.status()));
        let history = config.history.map(|history| {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()).rotate_left(32);
            // Across nodes the offsets come from Redis: this node's history mirrors its stream.
            Arc::new(if broker.is_some() {
                History::mirror(history, seed)
            } else {
                History::new(history, seed)
            })
        });
        let presence = config.presence.then(|| Arc::new(Presence::new()));
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            metrics: (0..workers)
                .map(|_| {
                    Arc::new(WorkerMetrics {
                        broker: broker_status.clone(),
                        history: history.clone(),
                        presence: presence.clone(),
                        ..WorkerMetrics::default()
                    })
                })
                .collect(),
            inboxes,
            shutdown: AtomicBool::new(false),
            broker_stop: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            accepts_stopped: AtomicUsize::new(0),
            accept_rearms: AtomicUsize::new(0),
            websockets_open: AtomicUsize::new(0),
            broker,
            history,
            presence,
        });
        let make_handler = Arc::new(make_handler);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let cpus = sys::cpu_count();
        let mut threads = Vec::with_capacity(workers);
        for (index, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            let shared = Arc::clone(&shared);
            let make_handler = Arc::clone(&make_handler);
            let ready_tx = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringws-worker-{index}"))
                .spawn(move || {
                    if shared.config.pin_workers {
                        if let Err(e) = sys::pin_current_thread(index % cpus) {
                            tracing::warn!(
                                worker = index,
                                "could not pin to CPU {}: {e}",
                                index % cpus
                            );
                        }
                    }
                    let started = Cell::new(false);
                    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                        let handler = make_handler(index);
                        worker::run_worker(index, listener, shared, inbox, handler, |result| {
                            started.set(result.is_ok());
                            let _ = ready_tx.send(result);
                        })
                    }));
                    let death = match outcome {
                        Ok(Ok(())) => return,
                        Ok(Err(death)) => death,
                        Err(payload) => WorkerDeath::from_panic(payload.as_ref()),
                    };
                    if started.get() {
                        worker_died(index, &death);
                    }
                    // Still starting: `Server::start` returns the error.
                    let _ = ready_tx.send(Err(format!("worker {index} {death}")));
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut ring_setup = String::new();
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(setup)) => ring_setup = setup,
                Ok(Err(message)) => {
                    shared.shutdown.store(true, Ordering::Release);
                    return Err(std::io::Error::other(message));
                }
                Err(_) => return Err(std::io::Error::other("a worker exited during startup")),
            }
        }
        let admin = match admin.map(|bound| bound.serve(shared.metrics.clone())) {
            None => None,
            Some(Ok(admin)) => Some(admin),
            Some(Err(e)) => {
                // The workers run already: they stop within one tick.
                shared.shutdown.store(true, Ordering::Release);
                return Err(e);
            }
        };
        let broker_threads = match &shared.broker {
            Some(broker) => match broker.start(&shared) {
                Ok(threads) => threads,
                Err(e) => {
                    shared.shutdown.store(true, Ordering::Release);
                    return Err(e);
                }
            },
            None => Vec::new(),
        };
        Ok(ServerHandle {
            shared,
            threads,
            local_addr,
            ring_setup,
            doorbell: Mutex::new(None),
            admin,
            handover,
            broker_threads,
        })
    }
}

/// Checks listeners handed over for `workers` workers asking for `requested` (see [`Listen::Inherit`]).
fn inherited_listeners(
    mut inherited: Vec<OwnedFd>,
    requested: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<OwnedFd>> {
    use takeover::TakeoverError;
    let usage = |e: TakeoverError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    if inherited.is_empty()
        || !inherited
            .iter()
            .all(|fd| sys::is_tcp_listener(std::os::fd::AsFd::as_fd(fd)))
    {
        return Err(usage(TakeoverError::NotAListener));
    }
    let addr = sys::local_addr(&inherited[0])?;
    if addr.ip() != requested.ip() || (requested.port() != 0 && addr.port() != requested.port()) {
        return Err(usage(TakeoverError::OtherAddress {
            inherited: addr,
            requested,
        }));
    }
    if inherited.len() > workers {
        if !sys::tcp_migrate_req() {
            return Err(usage(TakeoverError::FewerWorkers {
                workers,
                listeners: inherited.len(),
            }));
        }
        // Closed once the old server closes its descriptors too; the kernel moves their queues.
        tracing::info!(
            listeners = inherited.len(),
            workers,
            "takeover: closing the listeners beyond the worker count (net.ipv4.tcp_migrate_req = 1 \
             moves their waiting connections)"
        );
        inherited.truncate(workers);
    }
    Ok(inherited)
}

/// A worker ended before a shutdown finished it: the server cannot keep its promises with fewer
/// workers (their connections' slots and `--max-connections` share are lost, other workers ring a dead
/// ring), so one error line names the worker and the cause, and the process exits with status 70.
fn worker_died(index: usize, death: &WorkerDeath) -> ! {
    let status = worker::WORKER_DIED_EXIT_STATUS;
    if tracing::dispatcher::has_been_set() {
        tracing::error!(
            worker = index,
            "worker {index} ended unexpectedly: {death}; exiting with status {status}"
        );
    } else {
        // No subscriber (an embedding without logging): the line still reaches stderr.
        eprintln!(
            "ringws: worker {index} ended unexpectedly: {death}; exiting with status {status}"
        );
    }
    std::process::exit(status)
}

impl ServerHandle {
    /// The address the workers listen on (the real port when started with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The operators' listener's address (`metrics_listen`, with the real port when given port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(admin::AdminListener::local_addr)
    }

    /// The io_uring setup flags the kernel accepted (for the startup log line).
    pub fn ring_setup(&self) -> &str {
        &self.ring_setup
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Every worker's counters.
    pub fn metrics(&self) -> &[Arc<WorkerMetrics>] {
        &self.shared.metrics
    }

    /// Prometheus text of every worker's counters.
    pub fn render_metrics(&self) -> String {
        metrics::render_prometheus(&self.shared.metrics)
    }

    /// Publishes one message from any thread: encoded once, handed to every worker, one doorbell each.
    /// With a topic, every worker's handler gets it in `on_published` (pubsub mode delivers it to that
    /// topic's subscribers); without, it goes to every open connection (broadcast).
    pub fn publish(&self, topic: Option<&str>, kind: crate::protocol::MessageKind, payload: &[u8]) {
        let message = SharedMessage::encode(kind, payload);
        match topic {
            Some(topic) => {
                let topic: Arc<str> = Arc::from(topic);
                self.shared.sequence(&topic, message, |message| {
                    for worker in 0..self.shared.inboxes.len() {
                        let sent = WorkerMessage::Publish {
                            topic: Arc::clone(&topic),
                            message: message.clone(),
                        };
                        if self.shared.inboxes.send(worker, sent) == inbox::Sent::Full {
                            self.shared.metrics[worker].handoff_drops.inc();
                        }
                    }
                    if let Some(broker) = &self.shared.broker {
                        broker.publish(Some(&topic), message);
                    }
                });
            }
            None => {
                for worker in 0..self.shared.inboxes.len() {
                    let sent = WorkerMessage::Broadcast {
                        message: message.clone(),
                        except: None,
                    };
                    if self.shared.inboxes.send(worker, sent) == inbox::Sent::Full {
                        self.shared.metrics[worker].handoff_drops.inc();
                    }
                }
                if let Some(broker) = &self.shared.broker {
                    broker.publish(None, &message);
                }
            }
        }
        // One doorbell per worker until it answers, not one per published message.
        self.wake(|worker| self.shared.inboxes.claim_doorbell(worker));
    }

    /// Starts the graceful shutdown: stop accepting, close 1001 to every open connection, wait for the
    /// replies up to the shutdown timeout. Callable from any thread; returns at once.
    pub fn shutdown(&self) {
        // The duplicates kept for a takeover must not keep the sockets listening.
        self.handover.clear();
        self.shared.shutdown.store(true, Ordering::Release);
        self.wake(|_| true);
    }

    /// The listeners are now served by another process ([`takeover`]): every worker stops accepting
    /// (the sockets and their queues live on in that process) and closes its open connections with 1001
    /// one by one, in a random order spread over `drain_window`, then shuts down as [`Self::shutdown`]
    /// does (the shutdown timeout counted from the window's end). Returns at once.
    ///
    /// The operators' listener (`metrics_listen`) stops here, before this returns, so that the new
    /// process can bind its address ([`Self::listen_metrics`]).
    pub fn hand_over(&mut self) {
        self.handover.clear();
        self.shared.handed_over.store(true, Ordering::Release);
        self.wake(|_| true);
        // Each worker stops accepting at its next tick; wait for that (a worker stuck for a second is
        // not waited for: the new process re-arms its accepts anyway, see `rearm_accepts`).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.shared.accepts_stopped.load(Ordering::Acquire) < self.threads.len()
            && std::time::Instant::now() < deadline
            && !self.is_finished()
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
    }

    /// Makes every worker arm its accept again (within a tick). For a process that took listeners over,
    /// once the previous one has stopped accepting: a connection whose wakeup went to the previous
    /// process's accept (io_uring's accept waits as an exclusive waiter: one wakeup per connection) and
    /// was cancelled there would otherwise wait in the queue until the next connection arrives; a fresh
    /// accept takes what waits in the queue at once.
    pub fn rearm_accepts(&self) {
        self.shared.accept_rearms.fetch_add(1, Ordering::AcqRel);
        self.wake(|_| true);
    }

    /// Started with [`Listen::Inherit`]: binds and serves `metrics_listen` once the previous server has
    /// handed over (and so released the address). Retries for up to `patience` while the address is
    /// still in use. A no-op without `metrics_listen` or when it is served already.
    pub fn listen_metrics(&mut self, patience: std::time::Duration) -> std::io::Result<()> {
        let Some(addr) = self.shared.config.metrics_listen else {
            return Ok(());
        };
        if self.admin.is_some() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + patience;
        let bound = loop {
            match admin::BoundAdmin::bind(addr) {
                Ok(bound) => break bound,
                Err(e)
                    if e.source.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(std::io::Error::new(e.source.kind(), e)),
            }
        };
        self.admin = Some(bound.serve(self.shared.metrics.clone())?);
        Ok(())
    }

    /// This server's listeners as a control socket hands them over ([`takeover::ControlSocket::serve`]).
    pub fn handover_listeners(&self) -> Arc<takeover::ListenerSet> {
        Arc::clone(&self.handover)
    }

    /// Whether every worker has finished (after a shutdown or a drain).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for every worker to finish, then stops the operators' listener (it answers until then).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
        self.shared.broker_stop.store(true, Ordering::Release);
        for thread in self.broker_threads {
            let _ = thread.join();
        }
        if let Some(mut admin) = self.admin {
            admin.stop();
        }
    }

    /// Wakes every worker `which` selects (a `MSG_RING` doorbell); their tick would notice within one
    /// tick anyway.
    fn wake(&self, which: impl Fn(usize) -> bool) {
        let mut guard = self.doorbell.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = DoorbellRing::new().ok();
        }
        let Some(ring) = guard.as_mut() else { return };
        for worker in 0..self.shared.inboxes.len() {
            if !which(worker) {
                continue;
            }
            if let Some(fd) = self.shared.inboxes.ring_fd(worker) {
                let _ = ring.ring(
                    fd,
                    0,
                    UserData::new(NO_CONNECTION, 0, Op::Doorbell).encode(),
                );
            }
        }
    }
}
