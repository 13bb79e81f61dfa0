//! `ringws-loadgen`: a load generator for RFC 6455 WebSocket servers (echo closed/open loop, broadcast
//! fanout, connection ramps, churn), thread per core on io_uring (or epoll), with child processes past the
//! per-process open-file limit. It counts a message only once it was received and checked, byte for byte.
//!
//! This file only wires the pieces: options -> plan -> coordinator (`run.rs`) -> report. It must never
//! depend on the ringws server; the wire format comes from `ringws::protocol` (see `wire.rs`).

mod cli;
mod clock;
mod deflate;
mod engine;
mod net;
mod payload;
mod plan;
mod report;
mod run;
mod stats;
mod tls;
mod uring;
mod window;
mod wire;
mod worker;

use clap::Parser;
use std::io::Write;
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(scenario) = cli::help_scenario(&args) {
        print!("{}", cli::scenario_help(scenario));
        return;
    }
    let options = cli::Options::parse();
    if let Err(message) = options.validate() {
        eprintln!("ringws-loadgen: {message}");
        std::process::exit(2);
    }
    net::raise_open_file_limit();
    let targets = options.targets().expect("validated urls");
    let per_proc = options.total_connections().div_ceil(options.procs as u64);
    let limit = net::open_file_limit();
    // io_uring keeps sockets in each worker's fixed-file table (each up to the limit), epoll in the
    // process's descriptor table.
    let per_table = match options.engine {
        engine::EngineKind::Uring => per_proc.div_ceil(options.threads() as u64),
        engine::EngineKind::Epoll => per_proc,
    };
    if per_table + 64 > limit && options.child.is_none() {
        let per_process_capacity = match options.engine {
            engine::EngineKind::Uring => {
                (limit.saturating_sub(64).max(1)) * options.threads() as u64
            }
            engine::EngineKind::Epoll => limit.saturating_sub(64).max(1),
        };
        eprintln!(
            "ringws-loadgen: {per_proc} connections per process exceed what the open-file limit ({limit}) \
             allows {}; use --procs {}",
            match options.engine {
                engine::EngineKind::Uring => "per worker thread's io_uring",
                engine::EngineKind::Epoll => "per process with epoll",
            },
            options.total_connections().div_ceil(per_process_capacity)
        );
        std::process::exit(2);
    }
    let workers_total = options.threads() * options.procs.max(options.child_of);
    // Every target has the same scheme and, for wss://, the same host name (`Options::validate`).
    let tls = match targets[0].tls {
        true => match tls::plan(&options, &targets[0]) {
            Ok(tls) => Some(tls),
            Err(message) => {
                eprintln!("ringws-loadgen: {message}");
                std::process::exit(2);
            }
        },
        false => None,
    };
    let mut plan = plan::Plan::new(&options, targets, workers_total);
    plan.tls = tls;
    let plan = Arc::new(plan);

    if let Some(index) = options.child {
        if let Err(message) = run::run_child(&options, plan, index) {
            eprintln!("ringws-loadgen child {index}: {message}");
            std::process::exit(1);
        }
        return;
    }

    net::catch_interrupts();
    let report = match run::run_leader(&options, plan) {
        Ok(report) => report,
        Err(message) => {
            eprintln!("ringws-loadgen: {message}");
            std::process::exit(1);
        }
    };
    let json_to_stdout = options.json.as_deref() == Some("-");
    {
        let mut table: Box<dyn Write> = if json_to_stdout {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        let _ = report.print_table(&mut *table);
        let _ = table.flush();
    }
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report).expect("report json");
        let result = if json_to_stdout {
            writeln!(std::io::stdout(), "{text}")
        } else {
            std::fs::write(path, text + "\n")
        };
        if let Err(err) = result {
            eprintln!("ringws-loadgen: writing {path}: {err}");
            std::process::exit(1);
        }
    }
    // Exit status: 0 when nothing went wrong, 1 when any error was counted.
    std::process::exit(if report.errors_total == 0 { 0 } else { 1 });
}
