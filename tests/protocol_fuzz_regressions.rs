//! Runs the fuzz targets' bodies (`ringws::protocol::fuzz_support`) on stable, over the committed seeds
//! (`fuzz/seeds/<target>/`) and every input that ever crashed a target (`fuzz/regressions/<target>/`).
//! A crash found by `cargo +nightly fuzz run` is copied into `fuzz/regressions/<target>/` and stays here.

use ringws::protocol::fuzz_support::{frame_reader, handshake, utf8_pieces};
use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            found.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    found.sort();
    found
}

fn run_all(target: &str, body: fn(&[u8]), minimum: usize) {
    let inputs = inputs(target);
    assert!(
        inputs.len() >= minimum,
        "expected at least {minimum} seeds for {target}"
    );
    for (name, data) in inputs {
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{target} failed on {name}");
    }
}

#[test]
fn frame_reader_seeds_and_regressions() {
    run_all("frame_reader", frame_reader, 10);
}

#[test]
fn handshake_seeds_and_regressions() {
    run_all("handshake", handshake, 3);
}

#[test]
fn utf8_seeds_and_regressions() {
    run_all("utf8", utf8_pieces, 2);
}

/// The targets must also hold on small hand-made inputs that exercise each branch.
#[test]
fn targets_accept_edge_inputs() {
    for data in [
        &b""[..],
        b"\x00",
        b"\x00\x00\x00",
        b"\x01\x01\x01\x81\x00",
        b"\x00\x01\x00\x88\x81\0\0\0\0\x03",
    ] {
        frame_reader(data);
        handshake(data);
        utf8_pieces(data);
    }
}
