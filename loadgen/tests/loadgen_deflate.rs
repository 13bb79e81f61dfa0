//! `ringws-loadgen --deflate` offers permessage-deflate, sends compressed, inflates what comes back, checks
//! every payload as without it, and reports wire bytes against payload bytes both ways: against the real
//! server (agreed: JSON-like payloads cross the wire smaller than they are; `--compression off`: declined,
//! the wire carries the payload plus framing), on both I/O engines, and over `wss://`; with
//! `--deflate-server-context`, against a server that keeps its compression context between messages.

mod common;
use common::tls::TlsServer;
use common::{loadgen_on, ringws_binary, Run, ServerProcess, ENGINES};

fn f64_at(run: &Run, pointer: &str) -> f64 {
    run.report
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("no {pointer} in {}", run.report))
}

const ECHO: [&str; 12] = [
    "echo",
    "-c",
    "3",
    "-m",
    "40",
    "-s",
    "1024",
    "--kind",
    "text",
    "--payload",
    "json",
    "--deflate",
];

fn echo(engine: &str, url: &str) -> Run {
    echo_with(engine, url, &[])
}

fn echo_with(engine: &str, url: &str, extra: &[&str]) -> Run {
    let mut args = ECHO.to_vec();
    args.extend(["--url", url]);
    args.extend(extra);
    let run = loadgen_on(engine, &args);
    assert!(run.success, "{engine}: errors: {}", run.report["errors"]);
    assert_eq!(run.u64_at("/received"), 3 * 40, "{engine}");
    assert_eq!(run.u64_at("/errors_total"), 0, "{engine}");
    assert_eq!(run.report["compression"]["offered"], true, "{engine}");
    for way in ["sent", "received"] {
        assert_eq!(
            run.u64_at(&format!("/compression/{way}/payload")),
            3 * 40 * 1024,
            "{engine} {way}"
        );
    }
    run
}

#[test]
fn agreed_with_ringws_json_echoes_cross_the_wire_compressed() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2"]);
    for engine in ENGINES {
        let run = echo(engine, &server.url());
        assert_eq!(run.u64_at("/compression/agreed"), 3, "{engine}");
        for way in ["sent", "received"] {
            // Every echo went compressed, and the wire (upgrade and framing included) carried well under
            // half of the payload: 1 KiB of JSON-like records deflates to about a third.
            assert_eq!(
                run.u64_at(&format!("/compression/{way}/compressed_messages")),
                3 * 40,
                "{engine} {way}"
            );
            let ratio = f64_at(&run, &format!("/compression/{way}/wire_per_payload"));
            assert!((0.1..0.5).contains(&ratio), "{engine} {way}: {ratio}");
        }
    }
}

#[test]
fn the_server_context_offer_reads_a_server_that_keeps_its_context() {
    // `--compression context`: the server keeps its context where the offer lets it.
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "2", "--compression", "context"],
    );
    for engine in ENGINES {
        let kept = echo_with(engine, &server.url(), &["--deflate-server-context"]);
        let reset = echo(engine, &server.url());
        for run in [&kept, &reset] {
            assert_eq!(run.u64_at("/compression/agreed"), 3, "{engine}");
            assert_eq!(
                run.u64_at("/compression/received/compressed_messages"),
                3 * 40,
                "{engine}"
            );
        }
        // Each echo refers back to the ones before it: the server's frames are smaller with its context
        // kept, and every one of them was inflated and checked by the connection's own inflater.
        let with = f64_at(&kept, "/compression/received/wire_per_payload");
        let without = f64_at(&reset, "/compression/received/wire_per_payload");
        assert!(
            with < without * 0.8,
            "{engine}: {with} with the context kept, {without} without"
        );
    }
}

#[test]
fn declined_by_ringws_with_compression_off_the_wire_carries_the_payload() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1", "--compression", "off"]);
    for engine in ENGINES {
        let run = echo(engine, &server.url());
        assert_eq!(run.u64_at("/compression/agreed"), 0, "{engine}");
        for way in ["sent", "received"] {
            assert_eq!(
                run.u64_at(&format!("/compression/{way}/compressed_messages")),
                0,
                "{engine} {way}"
            );
            // Payload plus frame headers (8 bytes a masked message, 4 unmasked) and the upgrade.
            let ratio = f64_at(&run, &format!("/compression/{way}/wire_per_payload"));
            assert!((1.0..1.05).contains(&ratio), "{engine} {way}: {ratio}");
        }
    }
}

#[test]
fn pubsub_broadcast_of_json_is_delivered_compressed_and_checked() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2", "--mode", "pubsub"]);
    let url = server.url();
    let run = loadgen_on(
        "uring",
        &[
            "broadcast",
            "--url",
            &url,
            "-c",
            "5",
            "--publishers",
            "1",
            "-r",
            "100",
            "-d",
            "0.5",
            "-s",
            "1024",
            "--topic",
            "news",
            "--kind",
            "text",
            "--payload",
            "json",
            "--deflate",
        ],
    );
    assert!(run.success, "errors: {}", run.report["errors"]);
    let published = run.u64_at("/broadcast/published");
    assert!(published >= 30, "published {published}");
    assert_eq!(run.u64_at("/broadcast/delivered"), published * 5);
    assert_eq!(run.u64_at("/compression/agreed"), 6);
    // The publish commands (the JSON payload escaped in a JSON string) went compressed, and every
    // delivery came compressed (compressed once by the server, sent to each subscriber).
    assert_eq!(
        run.u64_at("/compression/sent/compressed_messages"),
        published
    );
    assert_eq!(
        run.u64_at("/compression/received/compressed_messages"),
        published * 5
    );
    assert!(f64_at(&run, "/compression/received/wire_per_payload") < 0.5);
}

#[test]
fn agreed_over_wss_json_echoes_cross_the_wire_compressed() {
    let server = TlsServer::start_for_names(ringws_binary(), &["localhost"], &["--workers", "1"]);
    let url = server.url("localhost");
    for engine in ENGINES {
        let run = echo_with(engine, &url, &["--ca-cert", &server.cert.cert_path]);
        assert_eq!(run.report["scheme"], "wss", "{engine}");
        assert_eq!(run.u64_at("/compression/agreed"), 3, "{engine}");
        for way in ["sent", "received"] {
            assert_eq!(
                run.u64_at(&format!("/compression/{way}/compressed_messages")),
                3 * 40,
                "{engine} {way}"
            );
            // TLS records and handshakes included.
            let ratio = f64_at(&run, &format!("/compression/{way}/wire_per_payload"));
            assert!((0.1..0.6).contains(&ratio), "{engine} {way}: {ratio}");
        }
    }
}
