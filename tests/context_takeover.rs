//! `--compression context`: the server keeps its compression context per connection (the client is told
//! `client_no_context_takeover`), so a message like one sent before costs a few bytes on the wire; a message
//! that does not shrink goes plain without breaking the context; broadcasts and publishes go to such a
//! connection plain (the shared compressed frame is not in its window) and compressed to the others; each
//! compressor is counted in `ringws_deflate_context_compressors` and freed with its connection.

mod common;

use common::*;
use flate2::{Decompress, FlushDecompress};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const TOKEN: &str = "ctx-token";

/// A client that offered `offer` (or nothing), with an inflater that keeps its window between messages,
/// as RFC 7692 requires of a client when the server keeps its context.
struct Client {
    stream: TcpStream,
    inflater: Decompress,
}

impl Client {
    fn open(server: &ServerProcess, offer: Option<&str>) -> (Client, String) {
        let (stream, head) = websocket_offering(server.addr, offer);
        let client = Client {
            stream,
            inflater: Decompress::new_with_window_bits(false, 15),
        };
        (client, head)
    }

    fn send(&mut self, payload: &[u8]) {
        self.send_as(0x1, payload);
    }

    fn send_as(&mut self, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&client_frame(true, 0, opcode, payload, true))
            .unwrap();
    }

    /// The next message: (compressed on the wire, its payload's length on the wire, content).
    fn read(&mut self) -> (bool, usize, Vec<u8>) {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        assert_eq!(head[0] & 0xb0, 0x80, "whole messages, RSV2/RSV3 clear");
        let compressed = head[0] & 0x40 != 0;
        if !compressed {
            return (false, len, payload);
        }
        payload.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(1 << 20);
        self.inflater
            .decompress_vec(&payload, &mut out, FlushDecompress::Sync)
            .expect("a valid deflate stream in this connection's context");
        (true, len, out)
    }
}

fn json(seed: u32) -> Vec<u8> {
    let mut text = String::new();
    let mut x = seed;
    while text.len() < 1200 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        text.push_str(&format!(
            "{{\"id\":{},\"user\":\"u{}\",\"price\":{}}},",
            x % 100_000,
            x >> 26,
            (x >> 8) % 1000
        ));
    }
    text.into_bytes()
}

/// Bytes that do not shrink (sent as a binary message).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn gauge(server: &ServerProcess) -> u64 {
    metric_sum(server.addr, "ringws_deflate_context_compressors")
}

fn wait_gauge(server: &ServerProcess, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(server) != want {
        assert!(
            Instant::now() < deadline,
            "gauge stays at {}",
            gauge(server)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_repeated_message_is_far_smaller_on_the_wire() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "1", "--compression", "context"],
    );
    let (mut client, head) =
        Client::open(&server, Some("permessage-deflate; client_max_window_bits"));
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(
            "sec-websocket-extensions: permessage-deflate; client_no_context_takeover\r\n"
        ),
        "{head}"
    );
    // Nothing per connection until its first compressed message.
    assert_eq!(gauge(&server), 0);
    let message = json(1);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        client.send(&message);
        let (compressed, wire, content) = client.read();
        assert!(compressed);
        assert_eq!(content, message);
        sizes.push(wire);
    }
    assert!(sizes[0] < message.len(), "{sizes:?}");
    assert!(sizes[1] * 10 < sizes[0], "{sizes:?}");
    assert!(sizes[2] * 10 < sizes[0], "{sizes:?}");
    assert_eq!(gauge(&server), 1);

    // A message that does not shrink goes plain, and the context stays right for the next ones.
    let plain = noise(600);
    client.send_as(0x2, &plain);
    assert_eq!(client.read(), (false, plain.len(), plain.clone()));
    for message in [json(2), json(1), json(2)] {
        client.send(&message);
        let (compressed, _, content) = client.read();
        assert!(compressed);
        assert_eq!(content, message);
    }

    // The server's window defaults to 11 bits in this mode.
    let (other, head) = Client::open(
        &server,
        Some("permessage-deflate; server_max_window_bits=15"),
    );
    assert!(
        head.to_ascii_lowercase().contains(
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=11\r\n"
        ),
        "{head}"
    );

    // Freed with the connection.
    drop(client);
    drop(other);
    wait_gauge(&server, 0);
}

#[test]
fn the_default_mode_does_not_keep_the_context() {
    // The same client against `--compression on`: every copy costs as much as the first.
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let (mut client, _) = Client::open(&server, Some("permessage-deflate; client_max_window_bits"));
    let message = json(1);
    let mut sizes = Vec::new();
    for _ in 0..2 {
        client.send(&message);
        let (compressed, wire, content) = client.read();
        assert!(compressed);
        assert_eq!(content, message);
        sizes.push(wire);
    }
    assert_eq!(sizes[0], sizes[1]);
    assert_eq!(gauge(&server), 0);
}

/// `POST /publish` (echo mode: to every connection).
fn publish(server: &ServerProcess, body: &[u8]) {
    let mut stream = connect(server.addr);
    let body = String::from_utf8(body.to_vec()).unwrap();
    let (status, head) = http_exchange(
        &mut stream,
        &format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200, "{head}");
}

#[test]
fn publishes_reach_context_no_context_and_plain_receivers_correctly() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--workers",
            "2",
            "--compression",
            "context",
            "--publish-token",
            TOKEN,
            "--publish-in-echo",
        ],
    );
    // (client, keeps the server's context, agreed at all)
    let mut clients: Vec<(Client, bool, bool)> = Vec::new();
    for i in 0..9 {
        let (offer, context, agreed) = match i % 3 {
            0 => (Some("permessage-deflate"), true, true),
            1 => (
                Some("permessage-deflate; server_no_context_takeover"),
                false,
                true,
            ),
            _ => (None, false, false),
        };
        let (client, head) = Client::open(&server, offer);
        assert_eq!(
            head.to_ascii_lowercase().contains("permessage-deflate"),
            agreed,
            "{head}"
        );
        clients.push((client, context, agreed));
    }
    wait_open(|| metrics_text(server.addr), 9, Duration::from_secs(5));
    for round in 0..4 {
        let own = json(10 + round % 2);
        let shared = json(20 + round % 2);
        // Each echoes its own message: compressed with its own context, or the worker's compressor.
        for (index, (client, _, agreed)) in clients.iter_mut().enumerate() {
            client.send(&own);
            let (compressed, _, content) = client.read();
            assert_eq!(compressed, *agreed, "client {index}, round {round}");
            assert_eq!(content, own, "client {index}, round {round}");
        }
        // A publish: compressed once, for the clients without server context; plain for the others.
        publish(&server, &shared);
        for (index, (client, context, agreed)) in clients.iter_mut().enumerate() {
            let (compressed, _, content) = client.read();
            assert_eq!(
                compressed,
                *agreed && !*context,
                "client {index}, round {round}"
            );
            assert_eq!(content, shared, "client {index}, round {round}");
        }
    }
    let text = metrics_text(server.addr);
    assert_eq!(
        metric_sum(server.addr, "ringws_frames_compressed_total"),
        4,
        "{text}"
    );
    assert_eq!(gauge(&server), 3);
}
