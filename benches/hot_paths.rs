//! The hot paths of a webhook call, each beside its baseline in the same run:
//! - signature verification (parse the headers, HMAC-SHA256 over the raw bytes, constant-time
//!   compare) beside a bare HMAC-SHA256 of the same bytes;
//! - the nonce window (check, then remember, with pruning) beside a bare `HashSet` insert;
//! - decide + apply of a policy execution on a group beside the bare scaling arithmetic.
//!
//! Journal append and replay, beside raw sled, are `cargo bench --bench journal`.
//!
//! `cargo bench --bench hot_paths`

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flotilla::signature::{sign, Call};
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::group::{self, GroupCommand, NewGroup};
use flotilla_actors::domain::nonce_window::NonceWindow;
use flotilla_actors::domain::policy::{Policy, PolicyDefinition};
use flotilla_actors::domain::route::Route;
use flotilla_actors::domain::scaling::{compute, Adjustment, AdjustmentType};
use flotilla_actors::domain::{Cause, GroupId, PolicyId, TenantId};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const KEY: [u8; 32] = [7; 32];
const BODY: &[u8] = br#"{"alarm":"cpu-high","value":0.93,"group":"grp_6f0c1e0d5b7a4d3c"}"#;

fn signatures(c: &mut Criterion) {
    let mut group = c.benchmark_group("signature");
    group.throughput(Throughput::Elements(1));
    let signature = sign(&KEY, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_795_564_800, BODY);
    group.bench_function("verify", |b| {
        b.iter(|| {
            let call = Call::parse(
                Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                Some("1795564800"),
                Some(&signature),
            )
            .unwrap();
            black_box(call.verify([KEY.as_slice()], black_box(BODY)).unwrap())
        });
    });
    group.bench_function("bare_hmac", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&KEY).unwrap();
            mac.update(b"msg_p5jXN8AQM9LWM0D4loKWxJek.1795564800.");
            mac.update(black_box(BODY));
            black_box(mac.finalize().into_bytes())
        });
    });
    group.finish();
}

fn nonces(c: &mut Criterion) {
    let mut group = c.benchmark_group("nonce_window");
    group.throughput(Throughput::Elements(1));
    // A window kept at about 1,000 live nonces: each new one expires 1,000 steps later.
    group.bench_function("check_and_remember", |b| {
        let mut window = NonceWindow::new();
        let mut i = 0i64;
        b.iter(|| {
            i += 1;
            let nonce = format!("msg_{i}");
            let now = Timestamp::from_millis(i);
            window.check(&nonce, now, 10_000).unwrap();
            window.remember(&nonce, Timestamp::from_millis(i + 1000), now);
        });
    });
    group.bench_function("bare_hashset_insert", |b| {
        let mut set = HashSet::new();
        let mut i = 0i64;
        b.iter(|| {
            i += 1;
            let nonce = format!("msg_{i}");
            set.insert(nonce);
            if set.len() > 1000 {
                set.clear();
            }
        });
    });
    group.finish();
}

fn decide_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_apply");
    group.throughput(Throughput::Elements(1));
    let now = Timestamp::from_secs(1_795_564_800);
    let create = GroupCommand::Create(NewGroup {
        id: GroupId::new("grp_bench"),
        tenant_id: TenantId::new("ten_bench"),
        name: "web".into(),
        min_size: 0,
        max_size: 1000,
        desired_capacity: Some(10),
        cooldown_seconds: Some(0),
        launch: serde_json::json!({"provider": "simulated"}),
        metadata: None,
        metrics_token_hash: String::new(),
    });
    let state = group::decide(&None, &create, now)
        .unwrap()
        .iter()
        .fold(None, group::apply);
    let adjustment = Adjustment {
        kind: AdjustmentType::Percent,
        value: 25,
        min_adjustment_step: Some(2),
    };
    let policy = Policy {
        id: PolicyId::new("pol_bench"),
        group_id: state.as_ref().unwrap().id.clone(),
        tenant_id: TenantId::new("ten_bench"),
        definition: PolicyDefinition {
            min_adjustment_step: adjustment.min_adjustment_step,
            cooldown_seconds: Some(0),
            ..PolicyDefinition::simple("up", adjustment.kind, adjustment.value)
        },
        deleted: false,
        created_at: now,
    };
    let execute = GroupCommand::ExecutePolicy {
        route: Route::direct(policy),
        cause: Cause::Direct,
        breach: None,
    };
    group.bench_function("policy_execution", |b| {
        b.iter_batched(
            || state.clone(),
            |state| {
                let events = group::decide(&state, &execute, now).unwrap();
                events.iter().fold(state, group::apply)
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("bare_scaling_arithmetic", |b| {
        b.iter(|| black_box(compute(black_box(10), adjustment, 0, 1000)));
    });
    group.finish();
}

criterion_group!(benches, signatures, nonces, decide_apply);
criterion_main!(benches);
