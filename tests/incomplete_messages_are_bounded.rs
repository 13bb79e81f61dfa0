//! Incomplete messages cannot pin memory: the worker's assembly memory stays under
//! `--max-assembly-memory` (the connection whose fragment would pass it is closed 1013, counted, while
//! the others and bystanders are served), and a message that is not finished within
//! `--message-timeout` gets its connection closed 1008 even if pings keep arriving.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Sends a ping and reads until its pong (Some(())) or a close frame (its code in Err).
fn sync_or_close(stream: &mut TcpStream) -> Result<(), Option<u16>> {
    // The write may fail if the server already closed: the close frame is still there to read.
    let _ = stream.write_all(&client_frame(true, 0, 0x9, b"sync", true));
    loop {
        match read_server_frame(stream) {
            Some((_, 0xA, payload)) if payload == b"sync" => return Ok(()),
            Some((_, 0x8, payload)) => {
                return Err(
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
                )
            }
            Some(_) => {}
            None => return Err(None),
        }
    }
}

#[test]
fn unfinished_fragments_stay_under_the_assembly_budget() {
    const BUDGET_MIB: usize = 24;
    const HOLDERS: usize = 16;
    const FRAGMENT: usize = 4 * MIB;
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--workers",
            "1",
            "--max-message-size",
            "8MiB",
            "--max-assembly-memory",
            "24MiB",
            "--message-timeout",
            "0",
        ],
    );
    let baseline = rss_kib(server.pid());
    let fragment = client_frame(false, 0, 0x2, &vec![0x5a; FRAGMENT], true);
    let mut holding = Vec::new();
    let mut refused = 0;
    for _ in 0..HOLDERS {
        let mut stream = raw_websocket(server.addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(&fragment);
        match sync_or_close(&mut stream) {
            Ok(()) => holding.push(stream),
            Err(code) => {
                assert_eq!(
                    code,
                    Some(1013),
                    "the connection over budget: try again later"
                );
                refused += 1;
            }
        }
    }
    let grown_kib = rss_kib(server.pid()).saturating_sub(baseline);
    let bound_kib = ((BUDGET_MIB + 16) * MIB / 1024) as u64;
    assert!(
        grown_kib < bound_kib,
        "RSS grew {grown_kib} KiB holding {} unfinished messages, over budget + margin ({bound_kib} KiB)",
        holding.len()
    );
    // Each holder holds at least its 4 MiB, and capacity is at most twice what is held.
    assert!(
        (3..=BUDGET_MIB * MIB / FRAGMENT).contains(&holding.len()),
        "{} holders, {refused} refused",
        holding.len()
    );
    assert_eq!(holding.len() + refused, HOLDERS);
    assert_eq!(
        metric_sum(server.addr, "ringws_assembly_budget_closes_total"),
        refused as u64
    );

    // A bystander is served meanwhile.
    let mut bystander = ws_client(server.addr);
    bystander
        .send(tungstenite::Message::text("still here"))
        .unwrap();
    assert_eq!(
        bystander.read().unwrap(),
        tungstenite::Message::text("still here")
    );
    // The holders finish their messages and get them back whole.
    for stream in &mut holding {
        stream
            .write_all(&client_frame(true, 0, 0x0, b"end", true))
            .unwrap();
        let (fin, opcode, payload) = read_server_frame(stream).expect("the echo");
        assert!(fin && opcode == 0x2);
        assert_eq!(payload.len(), FRAGMENT + 3);
        assert!(payload.ends_with(b"end"));
    }
}

/// Pings every 100 ms until a close frame arrives; returns its code and when it came.
fn ping_until_closed(stream: &mut TcpStream, started: Instant) -> (Option<u16>, Duration) {
    loop {
        match sync_or_close(stream) {
            Ok(()) => std::thread::sleep(Duration::from_millis(100)),
            Err(code) => return (code, started.elapsed()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an unfinished message held the connection open for 5 s"
        );
    }
}

#[test]
fn a_message_not_finished_in_time_is_closed_though_pings_keep_coming() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--message-timeout", "600ms", "--idle-timeout", "30s"],
    );
    let timeout = Duration::from_millis(600);
    // One sends a first fragment, the other a frame cut in its payload; both then only ping.
    let mut fragment = raw_websocket(server.addr);
    let mut partial = raw_websocket(server.addr);
    let mut bystander = ws_client(server.addr);
    for stream in [&mut fragment, &mut partial] {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    let started = Instant::now();
    fragment
        .write_all(&client_frame(false, 0, 0x1, b"the start of", true))
        .unwrap();
    let frame = client_frame(true, 0, 0x2, &[7; 100], true);
    partial.write_all(&frame[..40]).unwrap();
    // A fragmented message finished within the timeout, on the bystander's side, is served.
    let mut finished = raw_websocket(server.addr);
    finished
        .write_all(&client_frame(false, 0, 0x1, b"quick ", true))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    finished
        .write_all(&client_frame(true, 0, 0x0, b"enough", true))
        .unwrap();
    let (_, opcode, payload) = read_server_frame(&mut finished).expect("the echo");
    assert_eq!((opcode, payload.as_slice()), (0x1, &b"quick enough"[..]));

    for stream in [&mut fragment, &mut partial] {
        let (code, at) = ping_until_closed(stream, started);
        assert_eq!(code, Some(1008), "policy violation");
        assert!(
            at >= timeout - Duration::from_millis(100) && at < timeout * 4,
            "closed at {at:?} for a {timeout:?} message timeout"
        );
        expect_eof(stream);
    }
    assert_eq!(metric_sum(server.addr, "ringws_message_timeouts_total"), 2);
    // Past the timeout, the others are unharmed: messages between messages have no deadline.
    std::thread::sleep(timeout);
    for text in ["still", "here"] {
        bystander.send(tungstenite::Message::text(text)).unwrap();
        assert_eq!(bystander.read().unwrap(), tungstenite::Message::text(text));
    }
    finished
        .write_all(&client_frame(true, 0, 0x1, b"later", true))
        .unwrap();
    let (_, opcode, payload) = read_server_frame(&mut finished).expect("the echo");
    assert_eq!((opcode, payload.as_slice()), (0x1, &b"later"[..]));
}
