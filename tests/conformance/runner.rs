//! Runs the cases: picks the target (a server started here, or `RINGWS_CONFORMANCE_ADDR`), runs the
//! untimed cases on a few threads and the timed ones alone, prints each failure with its case id and
//! what differed, a line per family, and `N passed, N failed` alone on a line.
//!
//! Environment:
//! - `RINGWS_CONFORMANCE_ADDR=IP:PORT`: test a server already running there instead of starting one.
//! - `RINGWS_CONFORMANCE_FILTER=1.1,6.4`: run only cases whose id is or starts with one of these
//!   (command-line arguments not starting with `-` are filters too).
//! - `RINGWS_CONFORMANCE_SKIP=9`: skip those ids/prefixes (family 9 is the slow one).
//! - `RINGWS_CONFORMANCE_THREADS` (default 4), `RINGWS_CONFORMANCE_TIMEOUT_MS` (default 5000: the
//!   longest wait for any one expected frame or close).
//! - `RINGWS_CONFORMANCE_VERBOSE=1`: print every case, not only failures.
//! - `RINGWS_CONFORMANCE_MAX_MESSAGE`: the target's message size limit in bytes (default 16 MiB, what the
//!   server started here is given), for the cases at the limit.

use crate::common::{ringws_binary, ServerProcess};
use crate::suite::cases::{all_cases, Case};
use crate::suite::script::{execute, Script};
use crate::suite::wire::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Outcome {
    id: String,
    family: u32,
    passed: bool,
}

fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// `pattern` selects `id` if it is the id or one of its dotted prefixes (`6.4` selects `6.4.2`).
fn selects(pattern: &str, id: &str) -> bool {
    id == pattern || id.starts_with(&format!("{pattern}."))
}

/// Runs one case; the duration covers the connection and the exchange, not building the payloads.
fn run_case(case: &Case, addr: SocketAddr, timeout: Duration) -> (Result<(), String>, Duration) {
    let rng = Rng::seeded(&case.id);
    let mut elapsed = Duration::ZERO;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut script = Script::new(rng.clone());
        (case.build)(&mut script);
        let steps = script.finish();
        let started = Instant::now();
        let outcome = execute(addr, timeout, rng, steps);
        elapsed = started.elapsed();
        outcome
    }));
    let result = match result {
        Ok(outcome) => outcome,
        Err(panic) => Err(format!(
            "the case panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    };
    (result, elapsed)
}

fn report(case: &Case, result: &Result<(), String>, elapsed: Duration, verbose: bool) {
    match result {
        Ok(()) if case.timed => println!(
            "ok   {:<8} {:>9.1} ms  {}",
            case.id,
            elapsed.as_secs_f64() * 1000.0,
            case.description
        ),
        Ok(()) if verbose => println!("ok   {:<8} {}", case.id, case.description),
        Ok(()) => {}
        Err(error) => println!("FAIL {:<8} {}\n     {error}", case.id, case.description),
    }
}

/// Runs the suite; returns the process exit code.
pub fn main() -> i32 {
    let mut filters = env_list("RINGWS_CONFORMANCE_FILTER");
    filters.extend(std::env::args().skip(1).filter(|arg| !arg.starts_with('-')));
    let skips = env_list("RINGWS_CONFORMANCE_SKIP");
    let threads = env_number("RINGWS_CONFORMANCE_THREADS", 4).max(1) as usize;
    let timeout = Duration::from_millis(env_number("RINGWS_CONFORMANCE_TIMEOUT_MS", 5000));
    let verbose = std::env::var_os("RINGWS_CONFORMANCE_VERBOSE").is_some();

    let every_case = all_cases();
    let total = every_case.len();
    let (selected, skipped): (Vec<Case>, Vec<Case>) = every_case.into_iter().partition(|case| {
        (filters.is_empty() || filters.iter().any(|f| selects(f, &case.id)))
            && !skips.iter().any(|s| selects(s, &case.id))
    });

    let mut server = None;
    let addr: SocketAddr = match std::env::var("RINGWS_CONFORMANCE_ADDR") {
        Ok(addr) => addr
            .parse()
            .unwrap_or_else(|_| panic!("RINGWS_CONFORMANCE_ADDR={addr:?} is not IP:PORT")),
        Err(_) => {
            let started = std::panic::catch_unwind(|| {
                // Family 9 sends messages of up to 16 MiB, on several threads at once.
                ServerProcess::start(
                    ringws_binary(),
                    &[
                        "--mode",
                        "echo",
                        "--max-message-size",
                        "16MiB",
                        "--max-assembly-memory",
                        "256MiB",
                    ],
                )
            });
            match started {
                Ok(process) => {
                    let addr = process.addr;
                    server = Some(process);
                    addr
                }
                Err(_) => {
                    println!("FAIL server   `ringws serve --mode echo` did not start (see above)");
                    println!("0 passed, 1 failed");
                    return 1;
                }
            }
        }
    };
    println!(
        "conformance: {} of {total} cases against {addr} ({threads} threads, {} ms timeout)",
        selected.len(),
        timeout.as_millis()
    );

    let started = Instant::now();
    let (timed, untimed): (Vec<&Case>, Vec<&Case>) = selected.iter().partition(|case| case.timed);
    let outcomes = Mutex::new(Vec::with_capacity(selected.len()));
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = untimed.get(index) else {
                    break;
                };
                let (result, elapsed) = run_case(case, addr, timeout);
                report(case, &result, elapsed, verbose);
                outcomes.lock().expect("outcomes").push(Outcome {
                    id: case.id.clone(),
                    family: case.family,
                    passed: result.is_ok(),
                });
            });
        }
    });
    let untimed_elapsed = started.elapsed();
    for case in &timed {
        // Large payloads need more than the per-frame timeout of the small cases.
        let (result, elapsed) = run_case(case, addr, timeout.max(Duration::from_secs(30)));
        report(case, &result, elapsed, verbose);
        outcomes.lock().expect("outcomes").push(Outcome {
            id: case.id.clone(),
            family: case.family,
            passed: result.is_ok(),
        });
    }
    let mut outcomes = outcomes.into_inner().expect("outcomes");

    // The server must have survived every case.
    if let Some(process) = server.as_mut() {
        let alive = process.wait_exit(Duration::from_millis(1)).is_none();
        if !alive {
            println!("FAIL server   the server process exited during the suite");
        }
        outcomes.push(Outcome {
            id: "server".into(),
            family: 0,
            passed: alive,
        });
    }

    let mut per_family: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for outcome in &outcomes {
        let entry = per_family.entry(outcome.family).or_default();
        if outcome.passed {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    println!(
        "conformance: untimed cases took {:.1} s, all {:.1} s",
        untimed_elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (family, (passed, failed)) in &per_family {
        let name = if *family == 0 {
            "server alive".to_string()
        } else {
            format!("family {family}")
        };
        println!("  {name:<13} {passed:>4} passed {failed:>4} failed");
    }
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    let mut failed_ids: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.id.as_str())
        .collect();
    failed_ids.sort();
    if !failed_ids.is_empty() {
        println!("failed: {}", failed_ids.join(" "));
    }
    if skipped.is_empty() {
        println!("{passed} passed, {failed} failed");
    } else {
        println!(
            "{passed} passed, {failed} failed, {} skipped",
            skipped.len()
        );
    }
    drop(server);
    if failed == 0 {
        0
    } else {
        1
    }
}
