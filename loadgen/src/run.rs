//! The coordinator: starts the workers (threads of this process, or child processes with `--procs`),
//! moves the run through its phases (ramp, run, verify, drain), prints the live line every second, writes
//! the HdrHistogram interval log, and gathers the final figures.
//!
//! Child processes speak to their parent with one JSON line per status update on stdout (counters,
//! flags, and once a second a serialized histogram) and take phase commands on stdin. The coordinator
//! never touches a socket and never runs on a worker's hot path.

use crate::cli::{Options, Scenario};
use crate::clock::{cpu_seconds, now_ns};
use crate::net;
use crate::plan::{Phase, Plan, Shared};
use crate::report::{Measurements, Report, TimelinePoint};
use crate::stats::{self, Counter, Counters};
use crate::worker::run_worker;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(20);
/// The parent -> child command for `Fleet::complete_drain` (phase commands are `Phase as u8`).
const DRAIN_COMPLETE: u8 = 100;

/// A set of workers the coordinator drives: threads here, or child processes.
trait Fleet {
    fn counters(&mut self) -> Counters;
    /// Latencies recorded since the last call.
    fn take_histogram(&mut self) -> Histogram<u64>;
    fn ramped(&mut self) -> bool;
    fn finished(&mut self) -> bool;
    fn done(&mut self) -> bool;
    fn advance(&mut self, phase: Phase);
    /// Every worker is in the drain phase (its send counters are final).
    fn draining(&mut self) -> bool;
    /// During the drain: everything expected arrived, stop now.
    fn complete_drain(&mut self);
    /// Waits for every worker to stop.
    fn join(&mut self);
    /// The I/O engines the workers run on (distinct descriptions, joined).
    fn engine(&mut self) -> String;
    /// Broadcast with `--window`: the most messages seen in flight (0 without a window).
    fn max_in_flight(&mut self) -> u64;
}

fn join_distinct(names: impl Iterator<Item = String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for name in names {
        if !name.is_empty() && !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen.join("; ")
}

/// Worker threads of this process.
struct LocalFleet {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl LocalFleet {
    /// Starts `threads` workers for the connections of process `proc_index` out of `procs`.
    fn start(
        plan: Arc<Plan>,
        total: u64,
        threads: usize,
        proc_index: usize,
        procs: usize,
    ) -> std::io::Result<LocalFleet> {
        let shared = Arc::new(Shared::new(threads, &plan));
        let mine: Vec<u64> = (0..total)
            .filter(|g| (*g % procs as u64) as usize == proc_index)
            .collect();
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let gids: Vec<u64> = mine.iter().copied().skip(t).step_by(threads).collect();
            let seed = now_ns() ^ ((proc_index as u64) << 48) ^ ((t as u64) << 32);
            let (plan, shared) = (plan.clone(), shared.clone());
            let handle = std::thread::Builder::new()
                .name(format!("loadgen-worker-{t}"))
                .spawn(move || run_worker(plan, shared, t, gids, seed))?;
            handles.push(handle);
        }
        Ok(LocalFleet { shared, handles })
    }
}

impl Fleet for LocalFleet {
    fn counters(&mut self) -> Counters {
        let mut sum = Counters::default();
        for w in &self.shared.workers {
            sum.merge(&w.counters.load());
        }
        sum
    }

    fn take_histogram(&mut self) -> Histogram<u64> {
        let mut out = stats::new_histogram();
        for w in &self.shared.workers {
            if let Ok(mut h) = w.histogram.lock() {
                let _ = out.add(&*h);
                h.reset();
            }
        }
        out
    }

    fn ramped(&mut self) -> bool {
        self.shared
            .workers
            .iter()
            .all(|w| w.ramped.load(Ordering::Acquire))
    }

    fn finished(&mut self) -> bool {
        self.shared
            .workers
            .iter()
            .all(|w| w.finished.load(Ordering::Acquire))
    }

    fn done(&mut self) -> bool {
        self.shared
            .workers
            .iter()
            .all(|w| w.done.load(Ordering::Acquire))
    }

    fn advance(&mut self, phase: Phase) {
        self.shared.advance(phase, now_ns());
    }

    fn draining(&mut self) -> bool {
        self.shared
            .workers
            .iter()
            .all(|w| w.draining.load(Ordering::Acquire))
    }

    fn complete_drain(&mut self) {
        self.shared.drain_complete.store(true, Ordering::Release);
    }

    fn join(&mut self) {
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }

    fn engine(&mut self) -> String {
        join_distinct(
            self.shared
                .workers
                .iter()
                .map(|w| w.engine.lock().map(|e| e.clone()).unwrap_or_default()),
        )
    }

    fn max_in_flight(&mut self) -> u64 {
        self.shared.window.as_ref().map_or(0, |w| w.max_in_flight())
    }
}

/// One status line of a child process.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct ChildStatus {
    counters: Vec<u64>,
    ramped: bool,
    finished: bool,
    #[serde(default)]
    draining: bool,
    done: bool,
    #[serde(default)]
    engine: String,
    /// Serialized histogram of the latencies since the previous line that carried one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    hist: Option<String>,
}

#[derive(Default)]
struct ChildView {
    status: ChildStatus,
    hist: Option<Histogram<u64>>,
    exited: bool,
}

/// Child processes started with `--procs`.
struct ChildFleet {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    views: Vec<Arc<Mutex<ChildView>>>,
    readers: Vec<JoinHandle<()>>,
}

impl ChildFleet {
    fn start(procs: usize) -> std::io::Result<ChildFleet> {
        let exe = std::env::current_exe()?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut fleet = ChildFleet {
            children: Vec::new(),
            stdins: Vec::new(),
            views: Vec::new(),
            readers: Vec::new(),
        };
        for k in 0..procs {
            let mut child = Command::new(&exe)
                .args(strip_parent_only_args(&args))
                .args([
                    "--child",
                    &k.to_string(),
                    "--child-of",
                    &procs.to_string(),
                    "--quiet",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdout = child.stdout.take().expect("piped stdout");
            let view = Arc::new(Mutex::new(ChildView::default()));
            let reader_view = view.clone();
            fleet.readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Ok(status) = serde_json::from_str::<ChildStatus>(&line) else {
                        continue;
                    };
                    let mut view = reader_view.lock().expect("child view");
                    if let Some(text) = &status.hist {
                        if let Some(h) = stats::decode_histogram(text) {
                            match view.hist.as_mut() {
                                Some(acc) => {
                                    let _ = acc.add(&h);
                                }
                                None => view.hist = Some(h),
                            }
                        }
                    }
                    view.status = ChildStatus {
                        hist: None,
                        ..status
                    };
                }
                reader_view.lock().expect("child view").exited = true;
            }));
            fleet.stdins.push(child.stdin.take());
            fleet.views.push(view);
            fleet.children.push(child);
        }
        Ok(fleet)
    }

    fn all(&self, f: impl Fn(&ChildView) -> bool) -> bool {
        self.views.iter().all(|v| f(&v.lock().expect("child view")))
    }
}

/// Options that only the parent acts on (outputs, process count) are not passed to children.
fn strip_parent_only_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        let name = arg.split('=').next().unwrap_or("");
        if matches!(name, "--procs" | "--json" | "--hist-log") {
            skip_value = !arg.contains('=');
            continue;
        }
        if matches!(name, "-q" | "--quiet") {
            continue;
        }
        out.push(arg.clone());
    }
    out
}

impl Fleet for ChildFleet {
    fn counters(&mut self) -> Counters {
        let mut sum = Counters::default();
        for v in &self.views {
            let v = v.lock().expect("child view");
            for (slot, value) in sum.0.iter_mut().zip(v.status.counters.iter()) {
                *slot += *value;
            }
        }
        sum
    }

    fn take_histogram(&mut self) -> Histogram<u64> {
        let mut out = stats::new_histogram();
        for v in &self.views {
            if let Some(h) = v.lock().expect("child view").hist.take() {
                let _ = out.add(&h);
            }
        }
        out
    }

    fn ramped(&mut self) -> bool {
        self.all(|v| v.status.ramped || v.exited)
    }

    fn finished(&mut self) -> bool {
        self.all(|v| v.status.finished || v.exited)
    }

    fn done(&mut self) -> bool {
        self.all(|v| v.status.done || v.exited)
    }

    fn advance(&mut self, phase: Phase) {
        for stdin in self.stdins.iter_mut().flatten() {
            let _ = writeln!(stdin, "{}", phase as u8);
            let _ = stdin.flush();
        }
    }

    fn draining(&mut self) -> bool {
        self.all(|v| v.status.draining || v.exited)
    }

    fn complete_drain(&mut self) {
        for stdin in self.stdins.iter_mut().flatten() {
            let _ = writeln!(stdin, "{DRAIN_COMPLETE}");
            let _ = stdin.flush();
        }
    }

    fn join(&mut self) {
        self.stdins.clear(); // EOF tells children to finish if they have not yet
        for child in &mut self.children {
            let _ = child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    fn engine(&mut self) -> String {
        join_distinct(
            self.views
                .iter()
                .map(|v| v.lock().expect("child view").status.engine.clone()),
        )
    }

    fn max_in_flight(&mut self) -> u64 {
        0 // `--window` runs in one process (`Options::validate`)
    }
}

/// Runs as child `index` of a `--procs` run: local workers, phases from stdin, status on stdout.
pub fn run_child(options: &Options, plan: Arc<Plan>, index: usize) -> Result<(), String> {
    // An interrupt from the terminal reaches the whole process group: the parent handles it and tells
    // the children (or its exit closes their stdin, which drains them).
    net::ignore_interrupts();
    let threads = options.threads();
    let mut fleet = LocalFleet::start(
        plan,
        options.total_connections(),
        threads,
        index,
        options.child_of,
    )
    .map_err(|e| format!("starting workers: {e}"))?;
    let commanded = Arc::new(AtomicU8::new(Phase::Ramp as u8));
    let drain_complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let commanded = commanded.clone();
        let drain_complete = drain_complete.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match line.trim().parse::<u8>() {
                    Ok(DRAIN_COMPLETE) => drain_complete.store(true, Ordering::Release),
                    Ok(phase) => {
                        commanded.fetch_max(phase.min(Phase::Drain as u8), Ordering::AcqRel);
                    }
                    Err(_) => {}
                }
            }
            // Parent gone or finished: drain and stop.
            commanded.fetch_max(Phase::Drain as u8, Ordering::AcqRel);
        });
    }
    let stdout = std::io::stdout();
    let mut last_hist = Instant::now();
    loop {
        fleet.advance(Phase::from_u8(commanded.load(Ordering::Acquire)));
        if drain_complete.load(Ordering::Acquire) {
            fleet.complete_drain();
        }
        let done = fleet.done();
        let hist = if done || last_hist.elapsed() >= Duration::from_secs(1) {
            last_hist = Instant::now();
            let h = fleet.take_histogram();
            (!h.is_empty()).then(|| stats::encode_histogram(&h))
        } else {
            None
        };
        // Read `draining` before the counters: once it is set, the counters read after it are final.
        let draining = fleet.draining();
        let status = ChildStatus {
            counters: fleet.counters().0.to_vec(),
            ramped: fleet.ramped(),
            finished: fleet.finished(),
            draining,
            done,
            hist,
            engine: fleet.engine(),
        };
        let line = serde_json::to_string(&status).expect("status json");
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            fleet.advance(Phase::Drain);
        }
        drop(out);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    fleet.join();
    Ok(())
}

/// Per-second bookkeeping of the coordinator: live line, timeline, interval log.
struct Meter<'a> {
    options: &'a Options,
    started: Instant,
    last_tick: Instant,
    last_counters: Counters,
    total: Histogram<u64>,
    timeline: Vec<TimelinePoint>,
    log: Option<HistLog>,
}

impl<'a> Meter<'a> {
    fn new(options: &'a Options) -> Result<Meter<'a>, String> {
        let log = match &options.hist_log {
            Some(path) => Some(HistLog::create(path)?),
            None => None,
        };
        let now = Instant::now();
        Ok(Meter {
            options,
            started: now,
            last_tick: now,
            last_counters: Counters::default(),
            total: stats::new_histogram(),
            timeline: Vec::new(),
            log,
        })
    }

    /// The counter whose rate the live line shows.
    fn rate_counter(&self) -> Counter {
        match self.options.scenario {
            Scenario::Echo => Counter::Received,
            Scenario::Broadcast => Counter::Delivered,
            Scenario::Connect => Counter::Connected,
            Scenario::Churn => Counter::ChurnCycles,
        }
    }

    fn tick(&mut self, fleet: &mut dyn Fleet, phase: Phase, force: bool) {
        let now = Instant::now();
        let elapsed = now - self.last_tick;
        if elapsed < Duration::from_secs(1) && !force {
            return;
        }
        let counters = fleet.counters();
        let interval = fleet.take_histogram();
        let _ = self.total.add(&interval);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let counter = self.rate_counter();
        let rate = (counters.get(counter)
            - self.last_counters.get(counter).min(counters.get(counter))) as f64
            / secs;
        let point = TimelinePoint {
            t: (now - self.started).as_secs_f64(),
            phase: format!("{phase:?}").to_lowercase(),
            open: counters.get(Counter::Open),
            rate,
            p50_us: quantile_us(&interval, 0.5),
            p99_us: quantile_us(&interval, 0.99),
            max_us: if interval.is_empty() {
                0.0
            } else {
                interval.max() as f64 / 1e3
            },
            errors: counters.errors(),
        };
        if !self.options.quiet {
            eprintln!(
                "[{:6.1}s] {:<6} open {:>7} | {:>10.0} {}/s | p50 {:>9} p99 {:>9} | errors {}{}",
                point.t,
                point.phase,
                point.open,
                point.rate,
                counter.label(),
                // No sample in this second: no latency to show (not 0.0us).
                if interval.is_empty() {
                    "-".to_string()
                } else {
                    fmt_us(point.p50_us)
                },
                if interval.is_empty() {
                    "-".to_string()
                } else {
                    fmt_us(point.p99_us)
                },
                point.errors,
                if self.options.insecure {
                    " | wss INSECURE (certificate not checked)"
                } else {
                    ""
                }
            );
        }
        if let Some(log) = &self.log {
            log.write(self.last_tick - self.started, elapsed, &interval);
        }
        self.timeline.push(point);
        self.last_counters = counters;
        self.last_tick = now;
    }
}

/// The `--hist-log` file: an HdrHistogram interval log (compressed V2 histograms, one line per second)
/// written by the crate's `IntervalLogWriter` on its own thread, which owns the file for the whole run.
struct HistLog {
    sender: Option<std::sync::mpsc::Sender<(Duration, Duration, Histogram<u64>)>>,
    thread: Option<JoinHandle<()>>,
}

impl HistLog {
    fn create(path: &str) -> Result<HistLog, String> {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("--hist-log {path}: {e}"))?,
        );
        let (sender, receiver) = std::sync::mpsc::channel::<(Duration, Duration, Histogram<u64>)>();
        let start_time = std::time::SystemTime::now();
        let thread = std::thread::spawn(move || {
            let mut serializer = V2DeflateSerializer::new();
            let writer = IntervalLogWriterBuilder::new()
                .add_comment("ringws-loadgen latency interval log; values in nanoseconds")
                .with_start_time(start_time)
                .with_max_value_divisor(1e6)
                .begin_log_with(&mut file, &mut serializer);
            let Ok(mut writer) = writer else { return };
            let _ = writer.write_comment("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"");
            for (start, length, histogram) in receiver {
                let _ = writer.write_histogram(&histogram, start, length, None);
            }
            drop(writer);
            let _ = file.flush();
        });
        Ok(HistLog {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    fn write(&self, start: Duration, length: Duration, histogram: &Histogram<u64>) {
        if let Some(sender) = &self.sender {
            let _ = sender.send((start, length, histogram.clone()));
        }
    }
}

impl Drop for HistLog {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e3
    }
}

pub fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.1}us")
    }
}

/// Runs the whole scenario (as the top-level process) and returns the report.
pub fn run_leader(options: &Options, plan: Arc<Plan>) -> Result<Report, String> {
    let started_wall = std::time::SystemTime::now();
    let cpu_before = cpu_seconds(true);
    let mut fleet: Box<dyn Fleet> = if options.procs > 1 {
        Box::new(
            ChildFleet::start(options.procs)
                .map_err(|e| format!("starting child processes: {e}"))?,
        )
    } else {
        Box::new(
            LocalFleet::start(
                plan.clone(),
                options.total_connections(),
                options.threads(),
                0,
                1,
            )
            .map_err(|e| format!("starting workers: {e}"))?,
        )
    };
    let mut meter = Meter::new(options)?;
    let t0 = Instant::now();

    // Ramp.
    let ramp_timeout = Duration::from_secs_f64(options.ramp_timeout);
    let mut ramp_complete = true;
    while !fleet.ramped() {
        if t0.elapsed() >= ramp_timeout {
            ramp_complete = false;
            eprintln!(
                "ringws-loadgen: ramp not complete after {:.1}s; starting anyway",
                options.ramp_timeout
            );
            break;
        }
        if net::interrupted() {
            ramp_complete = false;
            break;
        }
        meter.tick(fleet.as_mut(), Phase::Ramp, false);
        std::thread::sleep(TICK);
    }
    let ramp_secs = t0.elapsed().as_secs_f64();
    let at_ramp = fleet.counters();
    fleet.advance(Phase::Run);
    let run_start = Instant::now();

    // Run (or hold).
    let mut verify = None;
    let run_for = match options.scenario {
        Scenario::Connect => Duration::from_secs_f64(options.hold),
        _ => Duration::from_secs_f64(options.duration),
    };
    let mut open_at_hold_end = 0;
    loop {
        let elapsed = run_start.elapsed();
        if elapsed >= run_for {
            break;
        }
        if options.messages.is_some() && options.scenario == Scenario::Echo && fleet.finished() {
            break;
        }
        if net::interrupted() {
            eprintln!("ringws-loadgen: interrupted; draining and reporting (interrupt again to quit at once)");
            break;
        }
        meter.tick(fleet.as_mut(), Phase::Run, false);
        std::thread::sleep(TICK.min(run_for - elapsed));
    }
    let run_secs = run_start.elapsed().as_secs_f64();
    let at_run_end = fleet.counters();
    if options.scenario == Scenario::Connect {
        open_at_hold_end = fleet.counters().get(Counter::Open);
        if options.verify_broadcast && !net::interrupted() {
            fleet.advance(Phase::Verify);
            let verify_start = Instant::now();
            let deadline = Duration::from_secs_f64(options.drain_timeout + 1.0);
            loop {
                let c = fleet.counters();
                if c.get(Counter::VerifyReceived) >= open_at_hold_end
                    || verify_start.elapsed() >= deadline
                {
                    verify = Some((
                        c.get(Counter::VerifyReceived),
                        verify_start.elapsed().as_secs_f64(),
                    ));
                    break;
                }
                meter.tick(fleet.as_mut(), Phase::Verify, false);
                std::thread::sleep(TICK);
            }
        }
    }

    // Drain.
    fleet.advance(Phase::Drain);
    let drain_start = Instant::now();
    let drain_limit = Duration::from_secs_f64(options.drain_timeout + 10.0);
    while !fleet.done() && drain_start.elapsed() < drain_limit {
        if options.scenario == Scenario::Broadcast && fleet.draining() {
            let c = fleet.counters();
            if c.get(Counter::Delivered) >= c.get(Counter::Published) * options.connections {
                fleet.complete_drain();
            }
        }
        meter.tick(fleet.as_mut(), Phase::Drain, false);
        std::thread::sleep(TICK);
    }
    fleet.join();
    meter.tick(fleet.as_mut(), Phase::Drain, true);
    let counters = fleet.counters();
    let cpu_after = cpu_seconds(true);
    let cpu = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    Ok(Report::build(
        options,
        &plan,
        Measurements {
            started_wall,
            counters,
            at_ramp,
            at_run_end,
            latency: std::mem::replace(&mut meter.total, stats::new_histogram()),
            timeline: std::mem::take(&mut meter.timeline),
            ramp_secs,
            ramp_complete,
            run_secs,
            open_at_hold_end,
            verify,
            cpu,
            elapsed_secs: t0.elapsed().as_secs_f64(),
            engine: fleet.engine(),
            max_in_flight: fleet.max_in_flight(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_only_args_are_not_passed_to_children() {
        let args: Vec<String> = [
            "echo",
            "--procs",
            "4",
            "--json=out.json",
            "-c",
            "10",
            "--hist-log",
            "h.log",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(strip_parent_only_args(&args), vec!["echo", "-c", "10"]);
    }
}
