//! Policy executions through the actors, each beside its journal baseline in the same run:
//! - `actors/N`: N concurrent callers, each on its own group, calling
//!   `Supervisor::execute_policy` (policy actor → group actor → durable append → apply);
//! - `journal_append_async/N`: the same number of durable `Journal::append_async` of the very
//!   event such an execution records, from N concurrent callers on N streams.
//!
//! The ratio of the two is what the actors cost over the journal's group commit.
//!
//! `cargo bench --bench actors`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flotilla_actors::aggregate::{Groups, Policies};
use flotilla_actors::clock::{Clock, SystemClock, Timestamp};
use flotilla_actors::domain::group::{self, GroupCommand, NewGroup, Outcome};
use flotilla_actors::domain::policy::{Policy, PolicyCommand, PolicyDefinition};
use flotilla_actors::domain::route::Route;
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::{Cause, GroupId, PolicyId, TenantId};
use flotilla_actors::store;
use flotilla_actors::supervisor::{Config, Supervisor};
use flotilla_journal::{ExpectedVersion, Journal, NewEvent};
use futures::future::join_all;

fn new_group(id: &GroupId) -> NewGroup {
    NewGroup {
        id: id.clone(),
        tenant_id: TenantId::new("ten_bench"),
        name: "web".into(),
        min_size: 0,
        max_size: 10_000,
        desired_capacity: Some(0),
        cooldown_seconds: Some(0),
        launch: serde_json::json!({"provider": "simulated"}),
        metadata: None,
        metrics_token_hash: String::new(),
    }
}

fn definition(adjustment: i64) -> PolicyDefinition {
    PolicyDefinition {
        cooldown_seconds: Some(0),
        ..PolicyDefinition::simple("step", AdjustmentType::Change, adjustment)
    }
}

/// The journal record of one executed policy, exactly as the group's actor writes it.
fn executed_record() -> NewEvent {
    let now = Timestamp::from_millis(1_795_564_800_000);
    let id = GroupId::generate();
    let created = group::decide(&None, &GroupCommand::Create(new_group(&id)), now).unwrap();
    let state = created.iter().fold(None, group::apply);
    let policy = Policy {
        id: PolicyId::generate(),
        group_id: id.clone(),
        tenant_id: TenantId::new("ten_bench"),
        definition: definition(1),
        deleted: false,
        created_at: now,
    };
    let command = GroupCommand::ExecutePolicy {
        route: Route::direct(policy),
        cause: Cause::Direct,
        breach: None,
    };
    let events = group::decide(&state, &command, now).unwrap();
    store::records::<Groups>(&events, now).unwrap().remove(0)
}

/// Splits `iters` over `callers` concurrent tasks; returns the wall time of them all.
async fn concurrently<F, Fut>(callers: usize, iters: u64, call: F) -> Duration
where
    F: Fn(usize, u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let per_caller = iters.div_ceil(callers as u64);
    let start = Instant::now();
    join_all((0..callers).map(|c| {
        let call = &call;
        async move {
            for i in 0..per_caller {
                call(c, i).await;
            }
        }
    }))
    .await;
    start.elapsed()
}

/// One group per caller, each with a +1 and a −1 policy (cooldown 0): alternating them, every
/// call executes (0 → 1 → 0 ...).
async fn groups_with_policies(supervisor: &Supervisor, n: usize) -> Vec<[PolicyId; 2]> {
    let mut policies = Vec::new();
    for _ in 0..n {
        let group = GroupId::generate();
        let command = GroupCommand::Create(new_group(&group));
        supervisor
            .execute::<Groups>(group.as_str(), command)
            .await
            .unwrap();
        let mut pair = Vec::new();
        for adjustment in [1, -1] {
            let id = PolicyId::generate();
            let command = PolicyCommand::Create {
                id: id.clone(),
                group_id: group.clone(),
                tenant_id: TenantId::new("ten_bench"),
                definition: definition(adjustment),
            };
            supervisor
                .execute::<Policies>(id.as_str(), command)
                .await
                .unwrap();
            pair.push(id);
        }
        policies.push(pair.try_into().unwrap());
    }
    policies
}

fn policy_execution(c: &mut Criterion) {
    let mut bench = c.benchmark_group("policy_execution");
    bench.sample_size(10);
    bench.warm_up_time(Duration::from_secs(1));
    bench.measurement_time(Duration::from_secs(5));
    bench.throughput(Throughput::Elements(1));
    for callers in [1usize, 32] {
        {
            let system = actix::System::new();
            let dir = tempfile::tempdir().unwrap();
            let journal = Journal::open(dir.path()).unwrap();
            let record = executed_record();
            bench.bench_with_input(
                BenchmarkId::new("journal_append_async", callers),
                &callers,
                |b, &callers| {
                    b.iter_custom(|iters| {
                        system.block_on(concurrently(callers, iters, |caller, _| {
                            let (journal, record) = (&journal, record.clone());
                            async move {
                                let stream = format!("grp_bench{caller}");
                                journal
                                    .append_async(&stream, ExpectedVersion::Any, vec![record])
                                    .await
                                    .unwrap();
                            }
                        }))
                    });
                },
            );
        }
        {
            let system = actix::System::new();
            let dir = tempfile::tempdir().unwrap();
            let journal = Journal::open(dir.path()).unwrap();
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let (supervisor, policies) = system.block_on(async {
                let supervisor = Supervisor::start(journal, clock, Config::default());
                let policies = groups_with_policies(&supervisor, callers).await;
                (supervisor, policies)
            });
            bench.bench_with_input(
                BenchmarkId::new("actors", callers),
                &callers,
                |b, &callers| {
                    b.iter_custom(|iters| {
                        // Each caller starts with its +1 policy; an odd count per caller leaves
                        // its group at 1, which the −1 policy then brings back down.
                        system.block_on(concurrently(callers, iters, |caller, i| {
                            let (supervisor, policy) =
                                (&supervisor, &policies[caller][(i % 2) as usize]);
                            async move {
                                let run = supervisor
                                    .execute_policy(policy, Cause::Direct, None)
                                    .await
                                    .unwrap();
                                assert!(matches!(run.outcome, Outcome::Executed { .. }));
                            }
                        }))
                    });
                },
            );
            drop(supervisor);
        }
    }
    bench.finish();
}

criterion_group!(benches, policy_execution);
criterion_main!(benches);
