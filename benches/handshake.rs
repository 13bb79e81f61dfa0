//! Opening handshake cost: parsing a typical browser upgrade request, validating it, and writing the 101.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringws::protocol::handshake::{parse_request, validate_upgrade, write_101, HandshakePolicy};
use std::time::Duration;

const REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: server.example.com:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Sec-WebSocket-Version: 13\r\n\
Origin: https://app.example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Extensions: permessage-deflate\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Connection: keep-alive, Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
Upgrade: websocket\r\n\r\n";

fn handshake(c: &mut Criterion) {
    let origins = vec!["https://app.example.com".to_string()];
    let protocols = vec!["superchat".to_string()];
    let policy = HandshakePolicy {
        allowed_origins: &origins,
        subprotocols: &protocols,
    };
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_request", |b| {
        b.iter(|| parse_request(black_box(REQUEST), 8192).unwrap().unwrap().1)
    });
    let mut out = Vec::with_capacity(256);
    group.bench_function("parse_validate_write_101", |b| {
        b.iter(|| {
            let (request, _) = parse_request(black_box(REQUEST), 8192).unwrap().unwrap();
            let upgrade = validate_upgrade(&request, &policy).unwrap();
            out.clear();
            write_101(&mut out, upgrade.key, upgrade.protocol);
            out.len()
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
    targets = handshake
}
criterion_main!(benches);
