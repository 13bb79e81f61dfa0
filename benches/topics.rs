//! The topic table under a big topic: every subscriber of one topic closing (a mass disconnect), every one
//! unsubscribing, and one delivery pass over the subscribers (the publish path), at 1,000, 10,000 and
//! 100,000 subscribers. Removal is meant to cost the same per subscriber at every size.

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use ringws::topics::TopicTable;
use std::time::Duration;

const SIZES: [u32; 3] = [1_000, 10_000, 100_000];

/// A table with `subscribers` subscribers of "big", each also holding a topic of its own.
fn table_with(subscribers: u32) -> TopicTable<u32> {
    let mut table = TopicTable::new(4);
    for s in 0..subscribers {
        table.subscribe(s, "big").unwrap();
        table.subscribe(s, &format!("own.{s}")).unwrap();
    }
    table
}

fn topics(c: &mut Criterion) {
    let mut group = c.benchmark_group("topics");
    group.sample_size(10);
    for size in SIZES {
        group.throughput(Throughput::Elements(size.into()));
        group.bench_with_input(BenchmarkId::new("close_all", size), &size, |b, &size| {
            b.iter_batched(
                || table_with(size),
                |mut table| {
                    for s in 0..size {
                        black_box(table.remove_subscriber(s));
                    }
                    table
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_with_input(
            BenchmarkId::new("unsubscribe_all", size),
            &size,
            |b, &size| {
                b.iter_batched(
                    || table_with(size),
                    |mut table| {
                        for s in 0..size {
                            black_box(table.unsubscribe(s, "big"));
                        }
                        table
                    },
                    BatchSize::LargeInput,
                )
            },
        );
        let table = table_with(size);
        group.bench_with_input(BenchmarkId::new("deliver", size), &size, |b, _| {
            b.iter(|| {
                for s in table.subscribers(black_box("big")) {
                    black_box(s);
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = topics
}
criterion_main!(benches);
