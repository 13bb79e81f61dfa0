//! Runs the fuzz targets' bodies (`ringws::protocol::fuzz_support`) on stable, over the committed seeds
//! (`fuzz/seeds/<target>/`) and every input that ever crashed a target (`fuzz/regressions/<target>/`).
//! A crash found by `cargo +nightly fuzz run` is copied into `fuzz/regressions/<target>/` and stays here.

use ringws::protocol::fuzz_support::{extensions, frame_reader, handshake, inflate, utf8_pieces};
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
fn extensions_seeds_and_regressions() {
    run_all("extensions", extensions, 10);
}

#[test]
fn inflate_seeds_and_regressions() {
    run_all("inflate", inflate, 3);
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
        b"\x01permessage-deflate; client_max_window_bits=8",
        b"\x00\npermessage-deflate\n",
        b"\xff\"",
    ] {
        frame_reader(data);
        handshake(data);
        utf8_pieces(data);
        extensions(data);
        inflate(data);
    }
}

/// The `extensions` target on stable over offers assembled from the grammar's pieces (names, parameters,
/// values quoted or not, separators, whitespace, the odd stray byte), so its checks run on far more than the
/// seeds without nightly.
#[test]
fn extensions_target_holds_on_generated_offers() {
    const PIECES: &[&[u8]] = &[
        b"permessage-deflate",
        b"PerMessage-Deflate",
        b"x-webkit-deflate-frame",
        b"foo",
        b"; ",
        b";",
        b", ",
        b",",
        b"\n",
        b" ",
        b"\t",
        b"server_no_context_takeover",
        b"client_no_context_takeover",
        b"server_max_window_bits",
        b"client_max_window_bits",
        b"mem_level",
        b"; server_max_window_bits=8",
        b"; server_max_window_bits=9",
        b"; client_max_window_bits=8",
        b"; client_max_window_bits",
        b"; server_no_context_takeover",
        b"=",
        b" = ",
        b"8",
        b"9",
        b"10",
        b"15",
        b"16",
        b"08",
        b"\"12\"",
        b"\"1\\3\"",
        b"\"",
        b"\\",
        b"\x01",
        b"\xc3\xa9",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut data = vec![next() as u8];
        for _ in 0..next() % 16 {
            data.extend_from_slice(PIECES[next() as usize % PIECES.len()]);
        }
        extensions(&data);
        let config = ringws::protocol::deflate::DeflateConfig::default();
        accepted += usize::from(
            ringws::protocol::deflate::negotiate(data[1..].split(|b| *b == b'\n'), &config)
                .is_some(),
        );
    }
    // The generator must reach agreements too, not only declines.
    assert!(accepted > 100, "only {accepted} agreements");
}
