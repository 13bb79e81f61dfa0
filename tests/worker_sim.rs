//! A whole worker on the simulated ring (feature `sim-ring`): the fuzz target `worker`'s body run on stable
//! over its seeds (`fuzz/seeds/worker/`), every input that ever broke it (`fuzz/regressions/worker/`), and
//! a few thousand pseudo-random inputs from a fixed seed. Each run checks the worker's invariants after every
//! batch and after the drain (see `ringws::server::worker::sim`); a broken one panics with its name.
//!
//! Run: `cargo test -p ringws --features sim-ring --test worker_sim`.

use std::path::Path;

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use ringws::server::worker::sim;

fn inputs_in(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.is_file()
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read input");
            (path.display().to_string(), bytes)
        })
        .collect()
}

#[test]
fn seeds_run_clean_and_reach_the_echo_path() {
    let seeds = inputs_in("fuzz/seeds/worker");
    assert!(!seeds.is_empty(), "no seeds");
    let mut clean_closes = 0;
    for (name, input) in &seeds {
        let report = std::panic::catch_unwind(|| sim::run(input))
            .unwrap_or_else(|_| panic!("seed {name} broke an invariant (see the panic above)"));
        clean_closes += report.clean_closes;
    }
    // The seeds are built to upgrade, echo and close cleanly: a sim that reaches none of that tests little.
    assert!(clean_closes > 0, "no seed reached a clean close");
}

#[test]
fn every_regression_input_runs_clean() {
    for (name, input) in inputs_in("fuzz/regressions/worker") {
        if std::panic::catch_unwind(|| sim::run(&input)).is_err() {
            panic!("regression input {name} broke an invariant again (see the panic above)");
        }
    }
}

/// Inputs of random bytes, but with the event bytes biased towards receives, sends and batches, so that
/// connections get somewhere.
fn pseudo_random_input(rng: &mut TestRng) -> Vec<u8> {
    let len = 16 + rng.next_u32() as usize % 400;
    let mut input = Vec::with_capacity(len);
    input.push(rng.next_u32() as u8);
    while input.len() < len {
        let r = rng.next_u32();
        // One event in four starts with an accept or a message, the rest are random.
        let op = match r % 8 {
            0 => 0,
            1 => 1,
            2 => 4 | 0x80,
            3 => 8 | 0x80,
            _ => (r >> 8) as u8,
        };
        input.push(op);
        for _ in 0..(r >> 16) % 6 {
            input.push(rng.next_u32() as u8);
        }
    }
    input
}

#[test]
fn thousands_of_pseudo_random_inputs_run_clean() {
    let (upgraded, echoed) = run_pseudo_random(0x5e, 3000);
    assert!(upgraded > 3000 / 4, "too few upgrades: {upgraded}");
    assert!(echoed > 3000 / 10, "too few echoes: {echoed}");
}

/// A longer run, off by default: `WORKER_SIM_RUNS=200000 WORKER_SIM_SEED=7 cargo test -p ringws --features
/// sim-ring --test worker_sim -- --ignored`.
#[test]
#[ignore]
fn many_pseudo_random_inputs_run_clean() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    run_pseudo_random(
        var("WORKER_SIM_SEED", 1) as u8,
        var("WORKER_SIM_RUNS", 100_000) as usize,
    );
}

/// Runs `runs` inputs from seed `seed`; returns the upgrades and echoes they reached.
fn run_pseudo_random(seed: u8, runs: usize) -> (usize, usize) {
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut upgraded = 0;
    let mut echoed = 0;
    for i in 0..runs {
        let input = pseudo_random_input(&mut rng);
        match std::panic::catch_unwind(|| sim::run(&input)) {
            Ok(report) => {
                upgraded += report.upgraded;
                echoed += report.echoed;
            }
            Err(_) => panic!("input {i} broke an invariant (see the panic above): {input:02x?}"),
        }
    }
    (upgraded, echoed)
}

/// One input, to debug it: `WORKER_SIM_INPUT=path cargo test -p ringws --features sim-ring --test worker_sim
/// one_input -- --ignored --nocapture`.
#[test]
#[ignore]
fn one_input() {
    let path = std::env::var("WORKER_SIM_INPUT").expect("WORKER_SIM_INPUT names the input file");
    let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    eprintln!("{:?}", sim::run(&input));
}
