//! Small-frame throughput (frames/s): the server's `MessageReader` decoding masked client frames, and the
//! encoders writing server frames.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringws::protocol::frame::{encode_frame, encode_header, OpCode};
use ringws::protocol::{Event, MessageReader, ReaderLimits, Role};
use std::time::Duration;

const FRAMES: usize = 1000;

fn client_stream(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..FRAMES {
        encode_frame(
            &mut out,
            true,
            op,
            payload,
            Some([i as u8, 0x5a, 0xc3, 0x11]),
        );
    }
    out
}

fn frame(c: &mut Criterion) {
    let limits = ReaderLimits::default();
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(FRAMES as u64));

    for (name, op, payload) in [
        (
            "decode_binary_16B",
            OpCode::Binary,
            &b"0123456789abcdef"[..],
        ),
        ("decode_text_16B", OpCode::Text, &b"hello, websocket"[..]),
        ("decode_text_125B", OpCode::Text, &[b'x'; 125][..]),
    ] {
        let source = client_stream(op, payload);
        let mut input = source.clone();
        group.bench_function(name, |b| {
            b.iter(|| {
                // Unmasking is in place: start every round from the masked bytes.
                input.copy_from_slice(&source);
                let mut reader = MessageReader::new(Role::Server);
                let mut bytes = 0usize;
                reader
                    .feed(black_box(&mut input), &limits, |event| {
                        if let Event::Message { payload, .. } = event {
                            bytes += payload.len();
                        }
                    })
                    .unwrap();
                assert_eq!(bytes, FRAMES * payload.len());
            })
        });
    }

    let payload = b"0123456789abcdef";
    let mut out = Vec::with_capacity(FRAMES * 32);
    group.bench_function("encode_frame_server_16B", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..FRAMES {
                encode_frame(&mut out, true, OpCode::Text, black_box(payload), None);
            }
        })
    });
    group.bench_function("encode_frame_client_16B", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..FRAMES {
                encode_frame(
                    &mut out,
                    true,
                    OpCode::Binary,
                    black_box(payload),
                    Some([i as u8, 1, 2, 3]),
                );
            }
        })
    });
    group.bench_function("encode_header", |b| {
        let mut header = [0u8; 14];
        b.iter(|| {
            let mut total = 0;
            for i in 0..FRAMES {
                total += encode_header(
                    &mut header,
                    true,
                    OpCode::Binary,
                    black_box(i as u64 * 97),
                    None,
                );
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = frame
}
criterion_main!(benches);
