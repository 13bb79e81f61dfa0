//! Broadcast and pub/sub with permessage-deflate: a message is compressed at most once, whatever the
//! number of receivers and workers; receivers that agreed get the compressed frame (RSV1), the others the
//! plain one, all with the same content, in order.

mod common;

use common::*;
use ringws::protocol::deflate::Inflater;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const OFFER: &str = "permessage-deflate; client_max_window_bits";

fn open(server: &ServerProcess, path: &str, offer: bool) -> TcpStream {
    let mut stream = connect(server.addr);
    let mut request = upgrade_request(path);
    if offer {
        request = request.replacen(
            "\r\n\r\n",
            &format!("\r\nSec-WebSocket-Extensions: {OFFER}\r\n\r\n"),
            1,
        );
    }
    let (status, head) = http_exchange(&mut stream, &request);
    assert_eq!(status, 101, "{head}");
    assert_eq!(
        head.to_ascii_lowercase().contains("permessage-deflate"),
        offer,
        "{head}"
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// One server message: (compressed on the wire, opcode, content).
fn read_message(stream: &mut TcpStream) -> (bool, u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    assert_eq!(head[0] & 0xb0, 0x80, "whole messages, RSV2/RSV3 clear");
    let compressed = head[0] & 0x40 != 0;
    if compressed {
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        inflater.inflate(&payload, &mut out, 1 << 20).unwrap();
        inflater.finish(&mut out, 1 << 20).unwrap();
        payload = out;
    }
    (compressed, head[0] & 0x0f, payload)
}

fn json(i: usize) -> String {
    (0..30)
        .map(|j| {
            format!(
                "{{\"message\":{i},\"row\":{j},\"symbol\":\"RNG\",\"price\":{}}},",
                100 + j
            )
        })
        .collect()
}

/// `ringws_websockets_open` of each worker.
fn open_per_worker(text: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| l.starts_with("ringws_websockets_open{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect()
}

#[test]
fn a_broadcast_is_compressed_once_for_every_receiver_on_two_workers() {
    let server = ServerProcess::start(ringws_binary(), &["--mode", "broadcast", "--workers", "2"]);
    // Connections are spread over the workers by the kernel: open until both workers hold some.
    let mut clients: Vec<(TcpStream, bool)> = Vec::new();
    for i in 0..64 {
        clients.push((open(&server, "/", i % 2 == 0), i % 2 == 0));
        if i >= 15 {
            wait_open(
                || metrics_text(server.addr),
                clients.len() as u64,
                Duration::from_secs(5),
            );
            if open_per_worker(&metrics_text(server.addr))
                .iter()
                .all(|&n| n >= 4)
            {
                break;
            }
        }
    }
    let per_worker = open_per_worker(&metrics_text(server.addr));
    assert!(
        per_worker.len() == 2 && per_worker.iter().all(|&n| n >= 4),
        "{per_worker:?}"
    );
    const MESSAGES: usize = 20;
    for i in 0..MESSAGES {
        let message = json(i);
        // Sent plain by an offering client: the server compresses the broadcast itself.
        let sender = &mut clients[0].0;
        sender
            .write_all(&client_frame(true, 0, 0x1, message.as_bytes(), true))
            .unwrap();
        for (index, (client, offered)) in clients.iter_mut().enumerate() {
            let (compressed, opcode, content) = read_message(client);
            assert_eq!(compressed, *offered, "client {index}, message {i}");
            assert_eq!(opcode, 0x1);
            assert_eq!(content, message.as_bytes(), "client {index}, message {i}");
        }
    }
    let text = metrics_text(server.addr);
    assert_eq!(
        metric(&text, "ringws_frames_encoded_total"),
        MESSAGES as u64,
        "{text}"
    );
    assert_eq!(
        metric(&text, "ringws_frames_compressed_total"),
        MESSAGES as u64,
        "{text}"
    );
    assert_eq!(
        metric(&text, "ringws_deliveries_total"),
        (MESSAGES * clients.len()) as u64
    );
}

#[test]
fn a_publish_reaches_compressing_and_plain_subscribers_compressed_once() {
    let server = ServerProcess::start(ringws_binary(), &["--mode", "pubsub", "--workers", "2"]);
    let mut subscribers: Vec<(TcpStream, bool)> = (0..12)
        .map(|i| (open(&server, "/?topic=prices", i % 3 != 0), i % 3 != 0))
        .collect();
    let mut publisher = open(&server, "/", true);
    wait_open(|| metrics_text(server.addr), 13, Duration::from_secs(5));
    for i in 0..5 {
        let data = json(i);
        let command = format!(
            "{{\"op\":\"pub\",\"topic\":\"prices\",\"data\":{:?}}}",
            data
        );
        publisher
            .write_all(&client_frame(true, 0, 0x1, command.as_bytes(), true))
            .unwrap();
        for (index, (client, offered)) in subscribers.iter_mut().enumerate() {
            let (compressed, _, content) = read_message(client);
            assert_eq!(compressed, *offered, "subscriber {index}, message {i}");
            assert_eq!(content, data.as_bytes(), "subscriber {index}, message {i}");
        }
    }
    let text = metrics_text(server.addr);
    assert_eq!(metric(&text, "ringws_frames_compressed_total"), 5, "{text}");
}
