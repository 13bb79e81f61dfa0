//! UTF-8 validation throughput: the incremental validator (whole and in 1500-byte pieces) against
//! `std::str::from_utf8`, on ASCII and on mixed multibyte text.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringws::protocol::Utf8Validator;
use std::time::Duration;

fn utf8(c: &mut Criterion) {
    let size = 64 * 1024;
    let ascii: Vec<u8> = b"The quick brown fox jumps over the lazy dog. "
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect();
    let mut mixed = Vec::new();
    while mixed.len() < size {
        mixed.extend_from_slice("ascii, é è ü, κόσμε, 日本語のテキスト, 😀🚀 ".as_bytes());
    }
    for (name, text) in [("ascii", ascii), ("mixed", mixed)] {
        let mut group = c.benchmark_group(format!("utf8/{name}_64KiB"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function("validator_whole", |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(&text)).unwrap();
                v.finish().unwrap();
            })
        });
        group.bench_function("validator_1500B_pieces", |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(&text).chunks(1500) {
                    v.feed(piece).unwrap();
                }
                v.finish().unwrap();
            })
        });
        group.bench_function("std_from_utf8", |b| {
            b.iter(|| std::str::from_utf8(black_box(&text)).is_ok())
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = utf8
}
criterion_main!(benches);
