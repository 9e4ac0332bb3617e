//! Journal benches, each beside its raw-sled baseline in the same run:
//! - durable append with 1 and 32 concurrent writers (baseline: sled insert + flush per append);
//! - full replay scan (baseline: raw sled iteration over the blocks that hold the same records,
//!   not decoded; a block holds a batch of records, so this reads fewer, larger values).
//!
//! `cargo bench --bench journal`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flotilla_journal::{layout, ExpectedVersion, Journal, NewEvent};

/// A payload of about the size a scaling decision has.
fn payload(n: u64) -> serde_json::Value {
    serde_json::json!({
        "policy_id": "pol_6f0c1e0d5b7a4d3c9e2f1a0b",
        "outcome": "executed", "from": n % 10, "to": n % 10 + 1,
        "cause": {"kind": "webhook", "webhook_id": "whk_0123456789abcdef"},
    })
}

fn event(n: u64) -> NewEvent {
    NewEvent::json(
        "policy_executed",
        1,
        1_795_564_800_000 + n as i64,
        &payload(n),
    )
    .unwrap()
}

/// Runs `total` operations split across `writers` threads; returns the wall time.
fn concurrently(writers: usize, total: u64, op: Arc<dyn Fn(usize, u64) + Send + Sync>) -> Duration {
    let per_writer = total.div_ceil(writers as u64);
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let op = op.clone();
            std::thread::spawn(move || {
                for i in 0..per_writer {
                    op(w, i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

fn durable_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_append");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for writers in [1usize, 32] {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        group.bench_with_input(
            BenchmarkId::new("journal", writers),
            &writers,
            |b, &writers| {
                let journal = journal.clone();
                b.iter_custom(|iters| {
                    let journal = journal.clone();
                    concurrently(
                        writers,
                        iters,
                        Arc::new(move |w, i| {
                            let stream = format!("group-{w}");
                            journal
                                .append(&stream, ExpectedVersion::Any, vec![event(i)])
                                .unwrap();
                        }),
                    )
                });
            },
        );

        let raw = sled::open(dir.path().join("raw")).unwrap();
        let tree = raw.open_tree("raw").unwrap();
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        group.bench_with_input(
            BenchmarkId::new("sled_insert_flush", writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    let (raw, tree, next) = (raw.clone(), tree.clone(), next.clone());
                    concurrently(
                        writers,
                        iters,
                        Arc::new(move |_, i| {
                            let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tree.insert(
                                seq.to_be_bytes(),
                                serde_json::to_vec(&payload(i)).unwrap(),
                            )
                            .unwrap();
                            raw.flush().unwrap();
                        }),
                    )
                });
            },
        );
    }
    group.finish();
}

const REPLAY_RECORDS: u64 = 200_000;

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    for chunk in 0..REPLAY_RECORDS / 1000 {
        let events = (0..1000).map(|i| event(chunk * 1000 + i)).collect();
        let stream = format!("group-{}", chunk % 100);
        journal
            .append(&stream, ExpectedVersion::Any, events)
            .unwrap();
    }

    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(REPLAY_RECORDS));
    group.bench_function("journal_read_all", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for record in journal.read_all(1) {
                n += black_box(record.unwrap()).version;
            }
            n
        });
    });
    group.bench_function("journal_verify", |b| b.iter(|| journal.verify().unwrap()));
    let records = journal.raw_tree().expect("a sled journal");
    group.bench_function("sled_iter", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for entry in records.range(layout::block_key(1)..=layout::block_key(u64::MAX)) {
                n += black_box(entry.unwrap()).1.len();
            }
            n
        });
    });
    group.finish();
}

criterion_group!(benches, durable_append, replay);
criterion_main!(benches);
