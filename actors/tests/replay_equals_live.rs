//! Replaying the journal must give back exactly what the live actors hold.
//!
//! Random sequences of commands run through the Supervisor against one group, two policies and a
//! webhook on a real journal, with a manual clock and whole-system restarts mixed in. After every
//! step, each object's live state equals its state loaded from the journal (snapshot and the
//! events after it); at the end it also equals the plain fold of every event of its stream,
//! snapshots ignored. Rejections are normal outcomes; a storage fault fails the case.

use std::sync::Arc;

use flotilla_actors::aggregate::{Aggregate, Groups, Policies, Webhooks};
use flotilla_actors::clock::{ManualClock, Timestamp};
use flotilla_actors::domain::group::{GroupCommand, GroupPatch, NewGroup, Pause};
use flotilla_actors::domain::policy::{
    Breach, Mode, PolicyCommand, PolicyDefinition, PolicyPatch, PolicyType, Step,
};
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::webhook::{Secret, WebhookCommand};
use flotilla_actors::domain::{Cause, DomainEvent, GroupId, PolicyId, TenantId, WebhookId};
use flotilla_actors::error::Error;
use flotilla_actors::object::{SignatureCheck, SignedCall};
use flotilla_actors::store;
use flotilla_actors::supervisor::{Config, Supervisor};
use flotilla_journal::Journal;
use proptest::prelude::*;

const START: i64 = 1_795_564_800_000;
const TOLERANCE_SECONDS: u32 = 300;

/// Which key signs a webhook call.
#[derive(Debug, Clone, Copy)]
enum Signer {
    /// The webhook's current secret.
    Current,
    /// The secret before the last rotation (valid during its grace only).
    Previous,
    /// A key the webhook never had.
    Forged,
}

#[derive(Debug, Clone)]
enum Op {
    /// A group update; bounds may be invalid or force the capacity into range.
    Update {
        min_size: Option<u32>,
        max_size: Option<u32>,
        cooldown_seconds: Option<u32>,
    },
    SetDesired(u32),
    /// Pause these directions (scale-in, scale-out).
    Pause(bool, bool),
    Resume,
    /// Execute policy 0 or 1 directly, with a breach this far from a threshold of 50 (a step
    /// policy needs one).
    Execute(usize, Option<f64>),
    /// Replace policy 0's or 1's definition.
    Redefine(usize, PolicyDefinition),
    /// A signed call to the webhook (which executes policy 0). `nonce: None` is a fresh one.
    Deliver {
        nonce: Option<u8>,
        skew_seconds: i64,
        signer: Signer,
    },
    Rotate {
        grace_seconds: Option<u32>,
    },
    Advance(u64),
    Restart,
}

fn definition() -> impl Strategy<Value = PolicyDefinition> {
    let kind = prop_oneof![
        (-4i64..=4).prop_map(|a| (AdjustmentType::Change, a, None)),
        ((-150i64..=150), proptest::option::of(1u32..=3)).prop_map(|(a, step)| (
            AdjustmentType::Percent,
            a,
            step
        )),
        (0i64..=14).prop_map(|a| (AdjustmentType::Exact, a, None)),
    ];
    let mode = prop_oneof![3 => Just(Mode::Live), 1 => Just(Mode::Shadow)];
    // A step policy: down one below the threshold, up one within 10 above it, up by the
    // drawn adjustment beyond; with or without a warm-up.
    let steps = |up: i64| {
        vec![
            Step {
                lower: None,
                upper: Some(0.0),
                adjustment: -1,
            },
            Step {
                lower: Some(0.0),
                upper: Some(10.0),
                adjustment: 1,
            },
            Step {
                lower: Some(10.0),
                upper: None,
                adjustment: up,
            },
        ]
    };
    let policy_type = prop_oneof![
        3 => Just((PolicyType::Simple, None)),
        1 => proptest::option::of(0u32..=120).prop_map(|w| (PolicyType::Step, w)),
    ];
    (kind, proptest::option::of(0u32..=90), mode, policy_type).prop_map(
        move |((adjustment_type, adjustment, step), cd, mode, (policy_type, warmup))| {
            let simple = policy_type == PolicyType::Simple;
            // Exact steps may not be negative.
            let up = adjustment.max(1);
            PolicyDefinition {
                name: "policy".into(),
                mode,
                policy_type,
                steps: if simple {
                    Vec::new()
                } else {
                    steps(up)
                        .into_iter()
                        .map(|s| Step {
                            adjustment: if adjustment_type == AdjustmentType::Exact {
                                s.adjustment.max(0)
                            } else {
                                s.adjustment
                            },
                            ..s
                        })
                        .collect()
                },
                warmup_seconds: warmup,
                tracking: None,
                adjustment_type,
                adjustment: if simple { adjustment } else { 0 },
                min_adjustment_step: step,
                cooldown_seconds: if simple { cd } else { None },
            }
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (
            proptest::option::of(0u32..=12),
            proptest::option::of(0u32..=12),
            proptest::option::of(0u32..=120),
        )
            .prop_map(|(min_size, max_size, cooldown_seconds)| Op::Update {
                min_size,
                max_size,
                cooldown_seconds,
            }),
        2 => (0u32..=12).prop_map(Op::SetDesired),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(i, o)| Op::Pause(i, o)),
        1 => Just(Op::Resume),
        6 => (0usize..2, proptest::option::of(-30.0f64..30.0)).prop_map(|(i, d)| Op::Execute(i, d)),
        1 => ((0usize..2), definition()).prop_map(|(i, d)| Op::Redefine(i, d)),
        5 => (
            proptest::option::of(0u8..4),
            -400i64..=400,
            prop_oneof![
                6 => Just(Signer::Current),
                1 => Just(Signer::Previous),
                1 => Just(Signer::Forged),
            ],
        )
            .prop_map(|(nonce, skew_seconds, signer)| Op::Deliver {
                nonce,
                skew_seconds,
                signer,
            }),
        1 => proptest::option::of(0u32..=200).prop_map(|grace_seconds| Op::Rotate { grace_seconds }),
        3 => (0u64..=200).prop_map(Op::Advance),
        1 => Just(Op::Restart),
    ]
}

/// The objects of one case.
struct Ids {
    group: GroupId,
    policies: [PolicyId; 2],
    webhook: WebhookId,
}

struct World {
    dir: tempfile::TempDir,
    clock: ManualClock,
    journal: Journal,
    supervisor: Supervisor,
}

impl World {
    fn open(dir: tempfile::TempDir, clock: ManualClock) -> World {
        let journal = Journal::open(dir.path()).expect("journal opens");
        let supervisor = Supervisor::start(
            journal.clone(),
            Arc::new(clock.clone()),
            Config {
                webhook_tolerance_seconds: TOLERANCE_SECONDS,
                nonce_window_capacity: 3,
                workers: 2,
                ..Config::default()
            },
        );
        World {
            dir,
            clock,
            journal,
            supervisor,
        }
    }

    /// Stops every actor (the supervisor's drop joins its arbiters), closes the journal, and
    /// opens both again on the same directory.
    fn restart(self) -> World {
        let World {
            dir,
            clock,
            journal,
            supervisor,
        } = self;
        drop(supervisor);
        drop(journal);
        World::open(dir, clock)
    }
}

fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

/// A call "signed" with `key` (the HMAC itself is the service's), carrying `nonce` and
/// `timestamp`.
fn signed_with(key: [u8; 32], nonce: String, timestamp: Timestamp) -> SignatureCheck {
    std::sync::Arc::new(move |secrets: &[Secret]| {
        if !secrets.iter().any(|s| s.key() == &key) {
            return Err(Error::InvalidSignature);
        }
        Ok(SignedCall {
            nonce: nonce.clone(),
            timestamp,
            breach: None,
        })
    })
}

/// A rejection or a bad signature is an answer; anything else is a fault of the service.
fn answered<T>(result: Result<T, Error>, step: &Op) {
    match result {
        Ok(_) | Err(Error::Rejected(_) | Error::InvalidSignature) => {}
        Err(fault) => panic!("{step:?} failed with a fault: {fault}"),
    }
}

async fn assert_live_equals_loaded<A: Aggregate>(w: &World, id: &str, step: &Op) {
    let live = w.supervisor.get::<A>(id).await.expect("live state");
    let loaded = store::load::<A>(&w.journal, id).expect("loaded state");
    assert_eq!(live.state, loaded.state, "{} {id} after {step:?}", A::KIND);
    assert_eq!(
        live.version,
        loaded.version,
        "{} {id} after {step:?}",
        A::KIND
    );
}

fn folded<A: Aggregate>(journal: &Journal, id: &str) -> A::State {
    journal
        .read_stream(id, 1)
        .map(|record| {
            record
                .expect("record reads")
                .decode::<A::Event>(A::Event::SCHEMA)
                .expect("event decodes")
        })
        .fold(A::State::default(), |state, event| A::apply(state, &event))
}

async fn setup(w: &World, definitions: &[PolicyDefinition; 2], desired: u32) -> Ids {
    let tenant = TenantId::new("ten_prop");
    let group = GroupId::generate();
    let created = w
        .supervisor
        .execute::<Groups>(
            group.as_str(),
            GroupCommand::Create(NewGroup {
                id: group.clone(),
                tenant_id: tenant.clone(),
                name: "web".into(),
                min_size: 0,
                max_size: 10,
                desired_capacity: Some(desired),
                cooldown_seconds: Some(30),
                launch: serde_json::json!({"provider": "simulated"}),
                metadata: None,
                metrics_token_hash: String::new(),
            }),
        )
        .await;
    created.expect("group created");
    let mut policies = Vec::new();
    for definition in definitions {
        let id = PolicyId::generate();
        let command = PolicyCommand::Create {
            id: id.clone(),
            group_id: group.clone(),
            tenant_id: tenant.clone(),
            definition: definition.clone(),
        };
        w.supervisor
            .execute::<Policies>(id.as_str(), command)
            .await
            .expect("policy created");
        policies.push(id);
    }
    let webhook = WebhookId::generate();
    let command = WebhookCommand::Create {
        id: webhook.clone(),
        policy_id: policies[0].clone(),
        group_id: group.clone(),
        tenant_id: tenant,
        name: "hook".into(),
        secret: Secret::from_bytes(key(1)),
    };
    w.supervisor
        .execute::<Webhooks>(webhook.as_str(), command)
        .await
        .expect("webhook created");
    Ids {
        group,
        policies: policies.try_into().expect("two policies"),
        webhook,
    }
}

async fn run_case(definitions: [PolicyDefinition; 2], desired: u32, ops: Vec<Op>) {
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let mut w = World::open(tempfile::tempdir().expect("tempdir"), clock);
    let ids = setup(&w, &definitions, desired).await;
    // The keys the test knows: the webhook's current one and the one before it.
    let (mut current, mut previous) = (1u8, 0u8);
    let mut fresh = 0u32;
    for step in &ops {
        match step {
            Op::Update {
                min_size,
                max_size,
                cooldown_seconds,
            } => {
                let patch = GroupPatch {
                    min_size: *min_size,
                    max_size: *max_size,
                    cooldown_seconds: *cooldown_seconds,
                    ..GroupPatch::default()
                };
                let result = w
                    .supervisor
                    .execute::<Groups>(ids.group.as_str(), GroupCommand::Update(patch))
                    .await;
                answered(result, step);
            }
            Op::SetDesired(desired_capacity) => {
                let command = GroupCommand::SetDesired {
                    desired_capacity: *desired_capacity,
                };
                let result = w
                    .supervisor
                    .execute::<Groups>(ids.group.as_str(), command)
                    .await;
                answered(result, step);
            }
            Op::Pause(..) | Op::Resume => {
                let command = match step {
                    Op::Pause(scale_in, scale_out) => GroupCommand::Pause(Pause {
                        scale_in: *scale_in,
                        scale_out: *scale_out,
                    }),
                    _ => GroupCommand::Resume,
                };
                let result = w
                    .supervisor
                    .execute::<Groups>(ids.group.as_str(), command)
                    .await;
                answered(result, step);
            }
            Op::Execute(i, distance) => {
                let breach = distance.map(|d| Breach {
                    metric_value: 50.0 + d,
                    breach_threshold: 50.0,
                });
                let result = w
                    .supervisor
                    .execute_policy(&ids.policies[*i], Cause::Direct, breach)
                    .await;
                answered(result, step);
            }
            Op::Redefine(i, definition) => {
                let patch = PolicyPatch {
                    name: Some(definition.name.clone()),
                    mode: Some(definition.mode),
                    steps: Some(definition.steps.clone()),
                    warmup_seconds: Some(definition.warmup_seconds),
                    tracking: Default::default(),
                    adjustment_type: Some(definition.adjustment_type),
                    adjustment: Some(definition.adjustment),
                    min_adjustment_step: Some(definition.min_adjustment_step),
                    cooldown_seconds: Some(definition.cooldown_seconds),
                };
                let result = w
                    .supervisor
                    .execute::<Policies>(ids.policies[*i].as_str(), PolicyCommand::Update(patch))
                    .await;
                answered(result, step);
            }
            Op::Deliver {
                nonce,
                skew_seconds,
                signer,
            } => {
                let nonce = match nonce {
                    Some(n) => format!("msg_repeat_{n}"),
                    None => {
                        fresh += 1;
                        format!("msg_fresh_{fresh}")
                    }
                };
                let key = match signer {
                    Signer::Current => key(current),
                    Signer::Previous => key(previous),
                    Signer::Forged => key(255),
                };
                let timestamp = w.clock.now_plus_secs(*skew_seconds);
                let result = w
                    .supervisor
                    .deliver_webhook(&ids.webhook, signed_with(key, nonce, timestamp), None)
                    .await;
                answered(result, step);
            }
            Op::Rotate { grace_seconds } => {
                let next = current + 1;
                let command = WebhookCommand::Rotate {
                    new_secret: Secret::from_bytes(key(next)),
                    grace_seconds: *grace_seconds,
                };
                let result = w
                    .supervisor
                    .execute::<Webhooks>(ids.webhook.as_str(), command)
                    .await;
                if result.is_ok() {
                    (previous, current) = (current, next);
                }
                answered(result, step);
            }
            Op::Advance(secs) => w.clock.advance_secs(*secs),
            Op::Restart => w = w.restart(),
        }
        assert_live_equals_loaded::<Groups>(&w, ids.group.as_str(), step).await;
        for policy in &ids.policies {
            assert_live_equals_loaded::<Policies>(&w, policy.as_str(), step).await;
        }
        assert_live_equals_loaded::<Webhooks>(&w, ids.webhook.as_str(), step).await;
        let group = w.supervisor.get::<Groups>(ids.group.as_str()).await;
        let group = group.expect("group").state.expect("group exists");
        assert!(
            (group.min_size..=group.max_size).contains(&group.desired_capacity),
            "capacity {} out of [{}, {}] after {step:?}",
            group.desired_capacity,
            group.min_size,
            group.max_size
        );
    }
    let live = w.supervisor.get::<Groups>(ids.group.as_str()).await;
    assert_eq!(
        live.expect("group").state,
        folded::<Groups>(&w.journal, ids.group.as_str())
    );
    for policy in &ids.policies {
        let live = w.supervisor.get::<Policies>(policy.as_str()).await;
        assert_eq!(
            live.expect("policy").state,
            folded::<Policies>(&w.journal, policy.as_str())
        );
    }
    let live = w.supervisor.get::<Webhooks>(ids.webhook.as_str()).await;
    assert_eq!(
        live.expect("webhook").state,
        folded::<Webhooks>(&w.journal, ids.webhook.as_str())
    );
}

/// `now + secs`, for a call's timestamp that may lie before or after the clock.
trait NowPlus {
    fn now_plus_secs(&self, secs: i64) -> Timestamp;
}

impl NowPlus for ManualClock {
    fn now_plus_secs(&self, secs: i64) -> Timestamp {
        use flotilla_actors::clock::Clock;
        self.now().plus_millis(secs * 1_000)
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_journal_replayed_equals_the_live_actors_through_restarts(
        definitions in (definition(), definition()),
        desired in 0u32..=10,
        ops in proptest::collection::vec(op(), 30..160),
    ) {
        let definitions = [definitions.0, definitions.1];
        actix::System::new().block_on(run_case(definitions, desired, ops));
    }
}
