//! Unmasking throughput of every kernel against the byte-at-a-time loop and a plain copy of the same bytes
//! (the physical reference), at 64 B, 1 KiB, 64 KiB and 1 MiB; and unmasking into an assembly buffer: a copy
//! then an unmask in place (two passes) against `extend_unmasked` and every copying kernel (one pass).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringws::protocol::mask::{
    apply_mask, apply_mask_scalar, available_copy_kernels, available_kernels, extend_unmasked,
};
use std::time::Duration;

fn mask(c: &mut Criterion) {
    let key = [0x12, 0x34, 0x56, 0x78];
    for size in [64usize, 1024, 64 * 1024, 1024 * 1024] {
        let mut group = c.benchmark_group(format!("mask/{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let source: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut buf = source.clone();
        group.bench_function("copy", |b| {
            b.iter(|| buf.copy_from_slice(black_box(&source)))
        });
        group.bench_function("byte_loop", |b| {
            b.iter(|| apply_mask_scalar(black_box(&mut buf), key, 1))
        });
        for (name, kernel) in available_kernels() {
            group.bench_function(BenchmarkId::new("kernel", name), |b| {
                b.iter(|| kernel(black_box(&mut buf), key, 1))
            });
        }
        group.bench_function("apply_mask", |b| {
            b.iter(|| apply_mask(black_box(&mut buf), key, 1))
        });
        // Into an assembly buffer whose room is reserved (as the reader reserves it from the header).
        let mut assembly: Vec<u8> = Vec::with_capacity(size);
        group.bench_function("copy_then_apply_mask", |b| {
            b.iter(|| {
                assembly.clear();
                assembly.extend_from_slice(black_box(&source));
                apply_mask(&mut assembly, key, 1);
            })
        });
        group.bench_function("extend_unmasked", |b| {
            b.iter(|| {
                assembly.clear();
                extend_unmasked(&mut assembly, black_box(&source), key, 1);
            })
        });
        for (name, kernel) in available_copy_kernels() {
            group.bench_function(BenchmarkId::new("copy_kernel", name), |b| {
                b.iter(|| {
                    assembly.clear();
                    kernel(
                        &mut assembly.spare_capacity_mut()[..size],
                        black_box(&source),
                        key,
                        1,
                    );
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = mask
}
criterion_main!(benches);
