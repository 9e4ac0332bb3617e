//! Alarm evaluation per tick: N alarms (100k by default; `FLOTILLA_ALARMS_N` to change) over N
//! groups, each with a sample in every period, all due at once, none changing state (the steady
//! state of a fleet): the cost of one tick, beside the bare evaluation of the same windows with
//! the pure `evaluate` (the baseline), so the figure is also a ratio. A tick per period of 60 s
//! costs tick_time / 60 s of a core.
//!
//! Target tracking per tick, the same way: N target-tracking policies (one per group) on 1 s
//! periods, each with a sample in every period at the same value (so no recommendation changes
//! and nothing is journaled: an idle fleet), beside the bare formula (`recommend` then
//! `stabilize`) over the same datapoints.
//!
//! `cargo bench --bench alarms`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flotilla::alarms::{AlarmTable, Evaluator};
use flotilla::projector::Projector;
use flotilla_actors::aggregate::{Alarms, Groups, Policies};
use flotilla_actors::clock::{ManualClock, Timestamp};
use flotilla_actors::domain::alarm::{AlarmCommand, AlarmState, Comparison, NewAlarm, Statistic};
use flotilla_actors::domain::evaluation::evaluate;
use flotilla_actors::domain::group::{GroupCommand, NewGroup};
use flotilla_actors::domain::policy::{PolicyCommand, PolicyDefinition, Tracking};
use flotilla_actors::domain::samples::Sample;
use flotilla_actors::domain::tracking::{recommend, stabilize};
use flotilla_actors::domain::{AlarmId, GroupId, PolicyId, TenantId};
use flotilla_actors::supervisor::{Config, Supervisor};
use flotilla_journal::Journal;
use futures::stream::{self, StreamExt};

const PERIOD: i64 = 60;
const START: i64 = 1_795_564_800;

fn alarms() -> usize {
    std::env::var("FLOTILLA_ALARMS_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn sample(at_secs: i64) -> Sample {
    Sample {
        metric: "cpu".into(),
        value: 0.2,
        timestamp: Timestamp::from_secs(at_secs),
    }
}

fn tick(c: &mut Criterion) {
    let n = alarms();
    let dir = tempfile::tempdir().unwrap();
    let system = actix::System::new();
    let clock = ManualClock::new(Timestamp::from_secs(START));
    let journal = Journal::open(dir.path()).unwrap();
    // The alarm table is fed by the projector, following the journal, as in the service.
    let table = Arc::new(AlarmTable::default());
    let projector = Projector::new(Arc::default(), table.clone());
    journal
        .follow(0, move |records| projector.take_live(records))
        .unwrap();
    let (evaluator, groups, definitions) = system.block_on(async {
        let supervisor = Supervisor::start(journal, Arc::new(clock.clone()), Config::default());
        let evaluator = Evaluator::new(table, supervisor.clone());
        let groups: Vec<GroupId> = (0..n)
            .map(|i| GroupId::new(format!("grp_bench{i}")))
            .collect();
        let created: Vec<_> = stream::iter(groups.iter().cloned())
            .map(|group| {
                let supervisor = supervisor.clone();
                async move {
                    let id = AlarmId::generate();
                    let command = AlarmCommand::Create(NewAlarm {
                        id: id.clone(),
                        tenant_id: TenantId::new("ten_bench"),
                        name: "cpu".into(),
                        group_id: group,
                        metric: "cpu".into(),
                        query: None,
                        statistic: Statistic::Avg,
                        period_seconds: PERIOD as u32,
                        evaluation_periods: 3,
                        datapoints_to_alarm: None,
                        comparison: Comparison::Gt,
                        threshold: 0.8,
                        treat_missing: None,
                        alarm_actions: vec![],
                        ok_actions: vec![],
                        repeat_actions: false,
                    });
                    let executed = supervisor
                        .execute::<Alarms>(id.as_str(), command)
                        .await
                        .unwrap();
                    (id, executed.events, executed.state.unwrap().definition)
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
        let definitions: Vec<_> = created.into_iter().map(|(_, _, d)| d).collect();
        // Three periods of samples, then the first tick: every alarm goes to OK (journaled).
        for p in 0..3 {
            for group in &groups {
                evaluator
                    .table()
                    .ingest(
                        group,
                        &[sample(START + p * PERIOD)],
                        Timestamp::from_secs(START + p * PERIOD),
                    )
                    .unwrap();
            }
        }
        let first = Instant::now();
        let evaluated = evaluator
            .tick(Timestamp::from_secs(START + 3 * PERIOD))
            .await;
        eprintln!(
            "first tick: {evaluated} alarms to OK in {:?}",
            first.elapsed()
        );
        (evaluator, groups, definitions)
    });

    let mut group = c.benchmark_group("alarm_tick");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(n as u64));
    let mut period = 3;
    group.bench_function(format!("evaluator_{n}_alarms"), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // A sample for every group in this period (not timed), then the tick at its end.
                let at = START + period * PERIOD;
                for g in &groups {
                    evaluator
                        .table()
                        .ingest(g, &[sample(at)], Timestamp::from_secs(at))
                        .unwrap();
                }
                period += 1;
                let now = Timestamp::from_secs(START + period * PERIOD);
                let started = Instant::now();
                let evaluated = system.block_on(evaluator.tick(now));
                spent += started.elapsed();
                assert_eq!(evaluated, n);
            }
            spent
        });
    });
    let windows: Vec<Vec<Option<f64>>> = (0..n).map(|_| vec![Some(0.2); 3]).collect();
    group.bench_function(format!("bare_evaluate_{n}_alarms"), |b| {
        b.iter(|| {
            let mut ok = 0;
            for (definition, window) in definitions.iter().zip(&windows) {
                if black_box(evaluate(definition, AlarmState::Ok, window)).next == AlarmState::Ok {
                    ok += 1;
                }
            }
            ok
        });
    });
    group.finish();
}

fn tracking(c: &mut Criterion) {
    let n = alarms();
    let dir = tempfile::tempdir().unwrap();
    let system = actix::System::new();
    let clock = ManualClock::new(Timestamp::from_secs(START));
    let journal = Journal::open(dir.path()).unwrap();
    let table = Arc::new(AlarmTable::default());
    let projector = Projector::new(Arc::default(), table.clone());
    journal
        .follow(0, move |records| projector.take_live(records))
        .unwrap();
    let settings = Tracking {
        period_seconds: 1,
        ..Tracking::new("cpu", 0.5)
    };
    let (evaluator, groups) = system.block_on(async {
        let supervisor = Supervisor::start(journal, Arc::new(clock.clone()), Config::default());
        let evaluator = Evaluator::new(table, supervisor.clone());
        let groups: Vec<GroupId> = (0..n)
            .map(|i| GroupId::new(format!("grp_bench{i}")))
            .collect();
        stream::iter(groups.iter().cloned())
            .for_each_concurrent(256, |group| {
                let supervisor = supervisor.clone();
                let settings = settings.clone();
                async move {
                    let create = GroupCommand::Create(NewGroup {
                        id: group.clone(),
                        tenant_id: TenantId::new("ten_bench"),
                        name: "workers".into(),
                        min_size: 1,
                        max_size: 100,
                        desired_capacity: Some(4),
                        cooldown_seconds: None,
                        launch: serde_json::json!({"provider": "simulated"}),
                        metadata: None,
                        metrics_token_hash: String::new(),
                    });
                    supervisor
                        .execute::<Groups>(group.as_str(), create)
                        .await
                        .unwrap();
                    let id = PolicyId::generate();
                    let create = PolicyCommand::Create {
                        id: id.clone(),
                        group_id: group,
                        tenant_id: TenantId::new("ten_bench"),
                        definition: PolicyDefinition::target_tracking("follow", settings),
                    };
                    supervisor
                        .execute::<Policies>(id.as_str(), create)
                        .await
                        .unwrap();
                }
            })
            .await;
        (evaluator, groups)
    });
    // One period of samples at the target, then the first tick: every group records its first
    // recommendation (journaled); from then on nothing changes.
    let mut second = 1;
    let mut period = |evaluator: &Evaluator| {
        let at = START + second;
        for g in &groups {
            evaluator
                .table()
                .ingest(g, &[sample_of(at, 0.5)], Timestamp::from_secs(at))
                .unwrap();
        }
        second += 1;
        Timestamp::from_secs(START + second)
    };
    let now = period(&evaluator);
    let first = Instant::now();
    let due = system.block_on(evaluator.tick(now));
    eprintln!(
        "first tracking tick: {due} policies recorded in {:?}",
        first.elapsed()
    );

    let mut group = c.benchmark_group("tracking_tick");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("evaluator_{n}_policies"), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let now = period(&evaluator);
                let started = Instant::now();
                let due = system.block_on(evaluator.tick(now));
                spent += started.elapsed();
                assert_eq!(due, n);
            }
            spent
        });
    });
    let datapoints: Vec<f64> = (0..n).map(|i| 0.5 + (i % 3) as f64 * 0.01).collect();
    let window = [4u32, 4, 4];
    group.bench_function(format!("bare_formula_{n}_policies"), |b| {
        b.iter(|| {
            let mut total = 0u64;
            for value in &datapoints {
                let r = recommend(&settings.target, 4, Some(*value), 0);
                let capacity = r.capacity().unwrap();
                total += u64::from(stabilize(4, capacity, black_box(&window), false));
            }
            total
        });
    });
    group.finish();
}

fn sample_of(at_secs: i64, value: f64) -> Sample {
    Sample {
        value,
        ..sample(at_secs)
    }
}

criterion_group!(benches, tick, tracking);
criterion_main!(benches);
