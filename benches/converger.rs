//! The converger's cost on `simulated` servers (no provider latency), beside a baseline:
//! - `converge_1000`: a group created at 1,000 and reconciled until all 1,000 are active (one
//!   pass launches them all: two batched appends; a second marks them active);
//! - `plan_1000`: the pure plan over a converged group of 1,000, every server watched;
//! - `quiet_pass_N`: one reconcile pass over a converged group of N servers, as a tick makes it
//!   (a read of the group, the plan, up to [`ACTIVE_CHECKS_PER_PASS`] status calls, no append), for
//!   N = 256 (one sweep's budget: the baseline), 5,000 and 10,000 (the largest group): a pass
//!   should cost the same whatever the group's size;
//! - `quiet_plan_N`: the plan of that pass alone;
//! - `scale_in_plan_N`: the plan of a pass that removes 10 of those N servers, beside
//!   `scale_in_sort_N`, the baseline: the same 10 found by ordering every slot, as the plan did
//!   before [`first_to_terminate`].
//!
//! `cargo bench --bench converger`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use flotilla::converger::{Converger, ACTIVE_CHECKS_PER_PASS};
use flotilla::index::Index;
use flotilla::providers::Providers;
use flotilla_actors::aggregate::Groups;
use flotilla_actors::clock::{Clock, SystemClock};
use flotilla_actors::domain::group::{Group, GroupCommand, NewGroup};
use flotilla_actors::domain::server::{
    first_to_terminate, plan, termination_order, ServerState, Sweep,
};
use flotilla_actors::domain::{GroupId, TenantId};
use flotilla_actors::supervisor::{Config, Supervisor};
use flotilla_journal::Journal;

/// The quiet groups' sizes: one sweep's budget ([`ACTIVE_CHECKS_PER_PASS`]), then 5,000 and the
/// largest a group may be (10,000).
const QUIET_SIZES: [u32; 3] = [256, 5_000, 10_000];

/// The servers a scale-in removes in `scale_in_plan_N`.
const SCALE_IN: u32 = 10;

fn new_group(id: &GroupId, desired: u32) -> NewGroup {
    NewGroup {
        id: id.clone(),
        tenant_id: TenantId::new("ten_bench"),
        name: "web".into(),
        min_size: 0,
        max_size: 10_000,
        desired_capacity: Some(desired),
        cooldown_seconds: Some(0),
        launch: serde_json::json!({"provider": "simulated"}),
        metadata: None,
        metrics_token_hash: String::new(),
    }
}

async fn create(supervisor: &Supervisor, id: &GroupId, desired: u32) {
    supervisor
        .execute::<Groups>(id.as_str(), GroupCommand::Create(new_group(id, desired)))
        .await
        .unwrap();
}

/// Reconciles group `id` until `size` of its servers are active; answers it then.
async fn converge(
    supervisor: &Supervisor,
    converger: &Converger,
    id: &GroupId,
    size: u32,
) -> Group {
    loop {
        converger.reconcile(id).await.unwrap();
        let state = supervisor
            .get::<Groups>(id.as_str())
            .await
            .unwrap()
            .state
            .unwrap();
        if state.count(ServerState::Active) == size {
            return state;
        }
    }
}

fn converger(c: &mut Criterion) {
    let system = actix::System::new();
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (supervisor, converger) = system.block_on(async {
        let supervisor = Supervisor::start(journal, clock.clone(), Config::default());
        let providers = Arc::new(Providers::new(clock, None));
        let converger = Converger::new(
            supervisor.clone(),
            Arc::new(Index::default()),
            providers,
            "http://127.0.0.1:0/v1/metrics".into(),
            Arc::default(),
        );
        (supervisor, converger)
    });
    let mut group = c.benchmark_group("converger");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));

    group.bench_function("converge_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = GroupId::generate();
                system.block_on(async {
                    create(&supervisor, &id, 1000).await;
                    let started = Instant::now();
                    converge(&supervisor, &converger, &id, 1000).await;
                    total += started.elapsed();
                });
            }
            total
        });
    });

    let id = GroupId::generate();
    let state = system.block_on(async {
        create(&supervisor, &id, 1000).await;
        converge(&supervisor, &converger, &id, 1000).await
    });
    let now = supervisor.clock().now();
    group.bench_function("plan_1000", |b| {
        b.iter(|| plan(&state.servers, state.target(), now, &Sweep::ALL, None));
    });

    // A quiet group's pass, as ticks make it once a second, over group sizes: one sweep's
    // budget of servers (the baseline), then larger groups, which should cost the same.
    for size in QUIET_SIZES {
        let id = GroupId::generate();
        let state = system.block_on(async {
            create(&supervisor, &id, size).await;
            converge(&supervisor, &converger, &id, size).await
        });
        group.bench_function(format!("quiet_pass_{size}"), |b| {
            b.iter(|| system.block_on(converger.reconcile(&id)).unwrap());
        });
        let sweep = Sweep {
            after: String::new(),
            budget: ACTIVE_CHECKS_PER_PASS,
        };
        group.bench_function(format!("quiet_plan_{size}"), |b| {
            b.iter(|| plan(&state.servers, state.target(), now, &sweep, None));
        });
        let fewer = state.target() - SCALE_IN;
        assert_eq!(
            plan(&state.servers, fewer, now, &sweep, None).remove.len(),
            SCALE_IN as usize
        );
        group.bench_function(format!("scale_in_plan_{size}"), |b| {
            b.iter(|| plan(&state.servers, fewer, now, &sweep, None));
        });
        group.bench_function(format!("scale_in_sort_{size}"), |b| {
            b.iter(|| {
                termination_order(state.servers.values())
                    .into_iter()
                    .take(SCALE_IN as usize)
                    .count()
            });
        });
        // What the plan's remove is, against what ordering every slot gives.
        let first: Vec<_> = first_to_terminate(&state.servers, SCALE_IN as usize);
        let sorted: Vec<_> = termination_order(state.servers.values());
        assert!(first.iter().zip(&sorted).all(|(a, b)| a.id == b.id));
    }
    group.finish();
}

criterion_group!(benches, converger);
criterion_main!(benches);
