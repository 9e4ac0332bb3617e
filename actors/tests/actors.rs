//! The actors on a real journal (sled in a temporary directory) with a manual clock: state comes
//! back by replay, concurrent calls are serialized, failures restart an actor in place.

use std::sync::Arc;

use flotilla_actors::aggregate::{Aggregate, Groups, Policies, Webhooks};
use flotilla_actors::clock::{ManualClock, Timestamp};
use flotilla_actors::domain::group::{
    GroupCommand, GroupEvent, GroupPatch, GroupState, NewGroup, Outcome, Pause,
};
use flotilla_actors::domain::policy::{PolicyCommand, PolicyDefinition};
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::server::{encode_part, part_of, LaunchRequest, ServerReport, PARTS};
use flotilla_actors::domain::webhook::{Secret, WebhookCommand, WebhookEvent};
use flotilla_actors::domain::{Cause, DomainEvent, GroupId, PolicyId, TenantId, WebhookId};
use flotilla_actors::error::Error;
use flotilla_actors::object::{SignatureCheck, SignedCall};
use flotilla_actors::store;
use flotilla_actors::supervisor::{Config, Placement, Supervisor};
use flotilla_journal::{ExpectedVersion, Journal, NewEvent};
use futures::future::join_all;

const START: i64 = 1_795_564_800_000;
const KEY: [u8; 32] = [7; 32];

struct World {
    supervisor: Supervisor,
    journal: Journal,
}

fn world(journal: Journal, clock: ManualClock) -> World {
    world_with(journal, clock, Config::default())
}

fn world_with(journal: Journal, clock: ManualClock, config: Config) -> World {
    let supervisor = Supervisor::start(journal.clone(), Arc::new(clock.clone()), config);
    World {
        supervisor,
        journal,
    }
}

async fn group(w: &World, min: u32, max: u32, desired: u32, cooldown: u32) -> GroupId {
    let id = GroupId::generate();
    let command = GroupCommand::Create(NewGroup {
        id: id.clone(),
        tenant_id: TenantId::new("ten_test"),
        name: "web".into(),
        min_size: min,
        max_size: max,
        desired_capacity: Some(desired),
        cooldown_seconds: Some(cooldown),
        launch: serde_json::json!({"provider": "simulated"}),
        metadata: None,
        metrics_token_hash: String::new(),
    });
    w.supervisor
        .execute::<Groups>(id.as_str(), command)
        .await
        .unwrap();
    id
}

/// The command that makes policy `id` of `group`.
fn new_policy(
    id: &PolicyId,
    group: &GroupId,
    adjustment: i64,
    cooldown: Option<u32>,
) -> PolicyCommand {
    PolicyCommand::Create {
        id: id.clone(),
        group_id: group.clone(),
        tenant_id: TenantId::new("ten_test"),
        definition: PolicyDefinition {
            cooldown_seconds: cooldown,
            ..PolicyDefinition::simple("up", AdjustmentType::Change, adjustment)
        },
    }
}

async fn policy(w: &World, group: &GroupId, adjustment: i64, cooldown: Option<u32>) -> PolicyId {
    let id = PolicyId::generate();
    let command = new_policy(&id, group, adjustment, cooldown);
    w.supervisor
        .execute::<Policies>(id.as_str(), command)
        .await
        .unwrap();
    id
}

/// The command that makes webhook `id` of `policy`, signing with [`KEY`].
fn new_webhook(id: &WebhookId, policy: &PolicyId, group: &GroupId) -> WebhookCommand {
    WebhookCommand::Create {
        id: id.clone(),
        policy_id: policy.clone(),
        group_id: group.clone(),
        tenant_id: TenantId::new("ten_test"),
        name: "alarm".into(),
        secret: Secret::from_bytes(KEY),
    }
}

async fn webhook(w: &World, policy: &PolicyId, group: &GroupId) -> WebhookId {
    let id = WebhookId::generate();
    let command = new_webhook(&id, policy, group);
    w.supervisor
        .execute::<Webhooks>(id.as_str(), command)
        .await
        .unwrap();
    id
}

async fn capacity(w: &World, group: &GroupId) -> u32 {
    let observed = w.supervisor.get::<Groups>(group.as_str()).await.unwrap();
    observed.state.unwrap().desired_capacity
}

/// The type and payload of the last record of `group`'s stream.
fn last_record(w: &World, group: &GroupId) -> (String, serde_json::Value) {
    let last = w
        .journal
        .read_stream(group.as_str(), 1)
        .last()
        .unwrap()
        .unwrap();
    let payload = serde_json::from_slice(&last.payload).unwrap();
    (last.event_type, payload)
}

/// A call with `nonce` at `timestamp`, "signed" with `key` (the HMAC itself is the service's).
fn signed_with(key: [u8; 32], nonce: &str, timestamp: Timestamp) -> SignatureCheck {
    let nonce = nonce.to_owned();
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

#[actix::test]
async fn a_policy_execution_survives_a_restart_of_the_whole_system() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let (group_id, policy_id) = {
        let w = world(Journal::open(dir.path()).unwrap(), clock.clone());
        let g = group(&w, 1, 10, 2, 60).await;
        let p = policy(&w, &g, 3, None).await;
        let run = w
            .supervisor
            .execute_policy(&p, Cause::Direct, None)
            .await
            .unwrap();
        assert!(matches!(
            run.outcome,
            Outcome::Executed { from: 2, to: 5, .. }
        ));
        (g, p)
    };
    let w = world(Journal::open(dir.path()).unwrap(), clock.clone());
    assert_eq!(capacity(&w, &group_id).await, 5);
    // The cooldown came back from the event's timestamp, not from a clock read on replay.
    clock.advance_secs(59);
    let run = w
        .supervisor
        .execute_policy(&policy_id, Cause::Direct, None)
        .await
        .unwrap();
    assert_eq!(
        run.outcome,
        Outcome::Cooldown {
            retry_after_seconds: 1
        }
    );
    clock.advance_secs(1);
    let run = w
        .supervisor
        .execute_policy(&policy_id, Cause::Direct, None)
        .await
        .unwrap();
    assert!(matches!(
        run.outcome,
        Outcome::Executed { from: 5, to: 8, .. }
    ));
}

#[actix::test]
async fn thirty_two_concurrent_deliveries_of_one_nonce_accept_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 100, 0, 0).await;
    let p = policy(&w, &g, 1, Some(0)).await;
    let h = webhook(&w, &p, &g).await;
    let timestamp = Timestamp::from_millis(START);
    let calls = (0..32).map(|_| {
        let supervisor = w.supervisor.clone();
        let h = h.clone();
        async move {
            supervisor
                .deliver_webhook(&h, signed_with(KEY, "msg_once", timestamp), None)
                .await
        }
    });
    let results = join_all(calls).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let replayed = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.code() == "replayed"))
        .count();
    assert_eq!((accepted, replayed), (1, 31));
    assert_eq!(capacity(&w, &g).await, 1);
}

#[actix::test]
async fn a_bad_signature_never_records_the_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 100, 0, 0).await;
    let p = policy(&w, &g, 1, Some(0)).await;
    let h = webhook(&w, &p, &g).await;
    let now = Timestamp::from_millis(START);
    let forged = w
        .supervisor
        .deliver_webhook(&h, signed_with([8; 32], "msg_1", now), None)
        .await;
    assert!(matches!(forged, Err(Error::InvalidSignature)));
    let genuine = w
        .supervisor
        .deliver_webhook(&h, signed_with(KEY, "msg_1", now), None)
        .await
        .unwrap();
    assert!(matches!(
        genuine.outcome,
        Outcome::Executed { from: 0, to: 1, .. }
    ));
    // The group's record of it names the webhook as its cause.
    let (event_type, recorded) = last_record(&w, &g);
    assert_eq!(event_type, "policy_executed");
    assert_eq!(recorded["cause"]["type"], "webhook", "{recorded}");
    assert_eq!(recorded["cause"]["webhook_id"], h.as_str(), "{recorded}");
}

#[actix::test]
async fn two_policies_hitting_one_group_concurrently_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 1000, 0, 0).await;
    let up = policy(&w, &g, 2, Some(0)).await;
    let down = policy(&w, &g, -1, Some(0)).await;
    let calls = (0..100).map(|i| {
        let supervisor = w.supervisor.clone();
        let p = if i % 2 == 0 { up.clone() } else { down.clone() };
        async move { supervisor.execute_policy(&p, Cause::Direct, None).await }
    });
    let results = join_all(calls).await;
    assert!(results.iter().all(std::result::Result::is_ok));
    // 50 × +2 and 50 × −1, in whatever order, never below 0: each saw the one before it.
    let final_capacity = capacity(&w, &g).await;
    let executed: Vec<(u32, u32)> = results
        .iter()
        .filter_map(|r| match r.as_ref().unwrap().outcome {
            Outcome::Executed { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    let net: i64 = executed
        .iter()
        .map(|(f, t)| i64::from(*t) - i64::from(*f))
        .sum();
    assert_eq!(net, i64::from(final_capacity));
    // And the journal agrees with the live actor.
    let rebuilt = store::load::<Groups>(&w.journal, g.as_str()).unwrap();
    assert_eq!(rebuilt.state.unwrap().desired_capacity, final_capacity);
}

#[actix::test]
async fn an_actor_whose_stream_moved_under_it_restarts_with_its_state_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 10, 1, 0).await;
    // Someone else appends to the group's stream (as an import or a second writer would).
    let version = w.journal.stream_version(g.as_str()).unwrap();
    let paused = GroupEvent::Paused {
        scale_in: true,
        scale_out: true,
        at: Timestamp::from_millis(START),
    };
    let record = NewEvent::json("paused", 1, START, &paused).unwrap();
    w.journal
        .append_async(g.as_str(), ExpectedVersion::Exact(version), vec![record])
        .await
        .unwrap();
    // The actor's next append conflicts: it is refused, the actor restarts and replays, and the
    // command is decided again on what it finds, with nothing written twice.
    let retried = w
        .supervisor
        .execute::<Groups>(
            g.as_str(),
            GroupCommand::SetDesired {
                desired_capacity: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(retried.version, version + 2);
    let state = retried.state.unwrap();
    assert_eq!(state.desired_capacity, 3);
    assert!(state.pause.any());
    let observed = w.supervisor.get::<Groups>(g.as_str()).await.unwrap();
    assert_eq!(observed.restarts, 1);
    assert_eq!(w.journal.stream_version(g.as_str()).unwrap(), version + 2);
}

#[actix::test]
async fn a_webhook_call_is_decided_again_however_often_another_node_moves_its_stream_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 10, 1, 0).await;
    let p = policy(&w, &g, 1, Some(0)).await;
    let h = webhook(&w, &p, &g).await;
    let now = Timestamp::from_millis(START);
    // Each of the call's first five decisions, another node accepts a nonce of the same
    // webhook just before this node's append, which then finds the webhook's stream moved.
    let moves = 5;
    let decided = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let check: SignatureCheck = {
        let (journal, stream, decided) = (w.journal.clone(), h.to_string(), decided.clone());
        Arc::new(move |_| {
            let n = decided.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < moves {
                let accepted = WebhookEvent::NonceAccepted {
                    nonce: format!("other_{n}"),
                    expires_at: now.plus_secs(300u32),
                    at: now,
                };
                let record = NewEvent::json(
                    accepted.kind(),
                    WebhookEvent::SCHEMA,
                    now.as_millis(),
                    &accepted,
                )
                .unwrap();
                let (journal, stream) = (journal.clone(), stream.clone());
                // From a thread of its own, as another node's append: this one is an actor's.
                std::thread::spawn(move || {
                    journal
                        .append(&stream, ExpectedVersion::Any, vec![record])
                        .unwrap();
                })
                .join()
                .unwrap();
            }
            Ok(SignedCall {
                nonce: "msg_mine".into(),
                timestamp: now,
                breach: None,
            })
        })
    };
    let execution = w.supervisor.deliver_webhook(&h, check, None).await.unwrap();
    assert!(matches!(execution.outcome, Outcome::Executed { .. }));
    assert_eq!(decided.load(std::sync::atomic::Ordering::SeqCst), moves + 1);
    assert_eq!(capacity(&w, &g).await, 2);
    // The webhook's stream: its creation, the other node's five nonces, then this call's.
    let nonces: Vec<String> = w
        .journal
        .read_stream(h.as_str(), 2)
        .map(|record| {
            match record
                .unwrap()
                .decode::<WebhookEvent>(WebhookEvent::SCHEMA)
                .unwrap()
            {
                WebhookEvent::NonceAccepted { nonce, .. } => nonce,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(
        nonces,
        ["other_0", "other_1", "other_2", "other_3", "other_4", "msg_mine"]
    );
}

#[actix::test]
async fn a_paused_group_records_the_execution_but_does_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 10, 1, 0).await;
    let p = policy(&w, &g, 1, None).await;
    w.supervisor
        .execute::<Groups>(g.as_str(), GroupCommand::Pause(Pause::BOTH))
        .await
        .unwrap();
    let run = w
        .supervisor
        .execute_policy(&p, Cause::Direct, None)
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::Paused);
    assert_eq!(capacity(&w, &g).await, 1);
    assert_eq!(last_record(&w, &g).0, "policy_executed");
}

#[actix::test]
async fn unknown_and_malformed_ids_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(
        Journal::open(dir.path()).unwrap(),
        ManualClock::new(Timestamp::from_millis(START)),
    );
    let missing = w
        .supervisor
        .execute_policy(&PolicyId::new("pol_nope"), Cause::Direct, None)
        .await;
    assert_eq!(missing.unwrap_err().status(), 404);
    let wrong_kind = w.supervisor.get::<Groups>("pol_123").await;
    assert_eq!(wrong_kind.unwrap_err().status(), 404);
    let spaces = w.supervisor.get::<Groups>("grp_ has spaces").await;
    assert_eq!(spaces.unwrap_err().status(), 404);
    let unknown = w.supervisor.get::<Groups>("grp_unknown").await.unwrap();
    assert!(unknown.state.is_none());
}

#[actix::test]
async fn a_caller_that_finds_a_dead_actor_does_not_unregister_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 10, 0, 0).await;
    let p = policy(&w, &g, 1, Some(0)).await;
    let h = webhook(&w, &p, &g).await;
    let first = w.supervisor.address::<Webhooks>(h.as_str()).unwrap();

    // The webhook's actor dies (its signature check panics, once) while a read waits in its
    // mailbox.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(Some(wait));
    let check: flotilla_actors::object::SignatureCheck = std::sync::Arc::new(move |_| {
        let first_call = wait.lock().unwrap().take();
        if let Some(wait) = first_call {
            let _ = wait.recv();
            panic!("a signature check that panics");
        }
        Err(Error::InvalidSignature)
    });
    let mut delivery = Box::pin(w.supervisor.deliver_webhook(&h, check, None));
    assert!(futures::poll!(delivery.as_mut()).is_pending());
    let mut read = Box::pin(w.supervisor.get::<Webhooks>(h.as_str()));
    assert!(futures::poll!(read.as_mut()).is_pending());
    go.send(()).unwrap();
    for _ in 0..5_000 {
        if !first.connected() {
            break;
        }
        actix::clock::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(!first.connected(), "the first actor is gone");

    // Another caller starts its successor before the waiting read learns of the death.
    let successor = w.supervisor.address::<Webhooks>(h.as_str()).unwrap();
    // The delivery was sent again, to the successor, and answered there: never a 503.
    assert!(matches!(delivery.await, Err(Error::InvalidSignature)));
    let observed = read.await.unwrap();
    assert!(observed.state.is_some());

    // The read retried on the successor; it did not replace it with a second live actor.
    let now_registered = w.supervisor.address::<Webhooks>(h.as_str()).unwrap();
    assert!(successor.connected());
    assert!(
        now_registered == successor,
        "two live actors for one object: the registry forgot a healthy one"
    );
}

#[actix::test]
async fn a_webhook_with_a_large_nonce_window_is_snapshotted_less_often() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 1, 0, 0).await;
    let p = policy(&w, &g, 1, Some(0)).await;
    let h = webhook(&w, &p, &g).await;
    let now = Timestamp::from_millis(START);
    // The webhook's stream: its creation, then one nonce per call, none expiring.
    for call in 1..=2000 {
        w.supervisor
            .deliver_webhook(&h, signed_with(KEY, &format!("msg_{call}"), now), None)
            .await
            .unwrap();
    }
    // Every 64 events while the window is small, then every quarter of the window: the last
    // snapshot is at version 1896 (it would be 1984 at every 64), where the window held 1895
    // nonces; copying all of them every 64 calls would cost more than the calls themselves.
    let snapshot = w.journal.load_snapshot(h.as_str()).unwrap().unwrap();
    assert_eq!(snapshot.version, 1896);
    let state: flotilla_actors::domain::webhook::WebhookState =
        serde_json::from_slice(&snapshot.state).unwrap();
    assert_eq!(state.unwrap().nonces.len(), 1895);
    // Replayed from that snapshot, the window is whole.
    let loaded = store::load::<Webhooks>(&w.journal, h.as_str()).unwrap();
    assert_eq!(loaded.version, 2001);
    assert_eq!(loaded.state.unwrap().nonces.len(), 2000);
}

/// The version of `group`'s snapshot, and of each of its parts (none if it is saved whole).
fn snapshot_parts(w: &World, group: &GroupId) -> (u64, Option<Vec<u64>>) {
    let snapshot = w.journal.load_snapshot(group.as_str()).unwrap().unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&snapshot.state).unwrap();
    let parts = saved.get("parts").map(|parts| {
        parts
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    });
    (snapshot.version, parts)
}

/// `group`'s state folded from its first event, no snapshot.
fn replayed(w: &World, group: &GroupId) -> GroupState {
    w.journal
        .read_stream(group.as_str(), 1)
        .fold(GroupState::default(), |state, record| {
            let event: GroupEvent = record.unwrap().decode(GroupEvent::SCHEMA).unwrap();
            Groups::apply(state, &event)
        })
}

#[actix::test]
async fn a_large_group_s_snapshot_saves_again_only_the_parts_whose_servers_changed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock.clone());
    let g = group(&w, 600, 600, 600, 0).await;
    let p = policy(&w, &g, 1, Some(0)).await;
    let ids: Vec<String> = (0..600u128)
        .map(|i| {
            format!(
                "srv_{:032x}",
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            )
        })
        .collect();
    let launches = ids
        .iter()
        .map(|id| LaunchRequest {
            server_id: id.clone(),
            metrics_token_hash: format!("hash-{id}"),
        })
        .collect();
    w.supervisor
        .execute::<Groups>(g.as_str(), GroupCommand::LaunchServers(launches))
        .await
        .unwrap();
    // 600 launches at once: a snapshot is due (every as many events as servers), every part
    // saved with it.
    let launched = w.journal.stream_version(g.as_str()).unwrap();
    assert_eq!(
        snapshot_parts(&w, &g),
        (launched, Some(vec![launched; PARTS]))
    );

    // 600 calls that leave the servers as they are: the next snapshot saves only its head.
    for _ in 0..600 {
        w.supervisor
            .execute_policy(&p, Cause::Direct, None)
            .await
            .unwrap();
    }
    assert_eq!(
        snapshot_parts(&w, &g),
        (launched + 600, Some(vec![launched; PARTS]))
    );

    // One server fails: the next snapshot saves its part again, and only that one.
    let calls = |w: &World, n: usize| {
        let (supervisor, p) = (w.supervisor.clone(), p.clone());
        async move {
            for _ in 0..n {
                supervisor
                    .execute_policy(&p, Cause::Direct, None)
                    .await
                    .unwrap();
            }
        }
    };
    let fail = |id: &str| {
        GroupCommand::ReportServers(vec![ServerReport::Failed {
            server_id: id.to_owned(),
            reason: "exited".into(),
        }])
    };
    w.supervisor
        .execute::<Groups>(g.as_str(), fail(&ids[7]))
        .await
        .unwrap();
    calls(&w, 599).await;
    let mut expected = vec![launched; PARTS];
    expected[part_of(&ids[7])] = launched + 1200;
    assert_eq!(
        snapshot_parts(&w, &g),
        (launched + 1200, Some(expected.clone()))
    );

    // Another fails, and the system restarts before the next snapshot: the actor that saves
    // it, loaded from the last, still knows which part changed.
    let other = ids
        .iter()
        .find(|id| part_of(id) != part_of(&ids[7]))
        .unwrap();
    w.supervisor
        .execute::<Groups>(g.as_str(), fail(other))
        .await
        .unwrap();
    let journal = w.journal.clone();
    drop(w);
    let w = world(journal, clock);
    calls(&w, 599).await;
    let last = launched + 1800;
    expected[part_of(other)] = last;
    assert_eq!(snapshot_parts(&w, &g), (last, Some(expected)));

    // Loaded from its parts, the group is what its events make of it, and what its actor has.
    let loaded = store::load::<Groups>(&w.journal, g.as_str()).unwrap();
    assert_eq!((loaded.snapshot_version, loaded.version), (last, last));
    assert!(loaded.parts.is_some());
    let live = w.supervisor.get::<Groups>(g.as_str()).await.unwrap().state;
    assert_eq!(loaded.state, replayed(&w, &g));
    assert_eq!(loaded.state, live);
    assert_eq!(loaded.state.as_ref().unwrap().servers.len(), 600);

    // Another writer (another node) saves the group's snapshot in parts of its own: the
    // actor's next snapshot sees a head it did not save and saves every part again, where it
    // would otherwise name versions of parts saved over.
    let servers = &live.as_ref().unwrap().servers;
    let theirs: Vec<(usize, Vec<u8>)> = (0..PARTS)
        .map(|part| (part, encode_part(servers, part).unwrap()))
        .collect();
    let mut head: serde_json::Value =
        serde_json::from_slice(&w.journal.load_snapshot(g.as_str()).unwrap().unwrap().state)
            .unwrap();
    head["parts"] = serde_json::json!(vec![last; PARTS]);
    let head = serde_json::to_vec(&head).unwrap();
    let over = w.journal.stored_snapshot(g.as_str()).unwrap();
    assert!(w
        .journal
        .save_snapshot_parts(g.as_str(), last, &theirs, &head, over.as_ref())
        .unwrap());
    assert_eq!(snapshot_parts(&w, &g), (last, Some(vec![last; PARTS])));
    calls(&w, 600).await;
    assert_eq!(
        snapshot_parts(&w, &g),
        (last + 600, Some(vec![last + 600; PARTS]))
    );
    let loaded = store::load::<Groups>(&w.journal, g.as_str()).unwrap();
    assert_eq!(loaded.snapshot_version, last + 600);
    assert_eq!(loaded.state, replayed(&w, &g));

    // A snapshot saved whole (as before parts) still loads.
    let whole = serde_json::to_vec(&live).unwrap();
    w.journal.save_snapshot(g.as_str(), last, &whole).unwrap();
    let loaded = store::load::<Groups>(&w.journal, g.as_str()).unwrap();
    assert_eq!((loaded.snapshot_version, loaded.parts), (last, None));
    assert_eq!(loaded.version, last + 600);
    assert_eq!(loaded.state, replayed(&w, &g));

    // The group shrinks below the size worth splitting: its next snapshot is whole, and the
    // parts its last one in parts saved, which nothing names any more, are removed.
    let named = vec![last + 600; PARTS];
    assert!(w
        .journal
        .load_snapshot_parts(g.as_str(), last + 600, &named)
        .unwrap()
        .is_some());
    let smaller = GroupPatch {
        min_size: Some(200),
        desired_capacity: Some(200),
        ..GroupPatch::default()
    };
    w.supervisor
        .execute::<Groups>(g.as_str(), GroupCommand::Update(smaller))
        .await
        .unwrap();
    let gone = &ids[..400];
    w.supervisor
        .execute::<Groups>(g.as_str(), GroupCommand::DeleteServers(gone.to_vec()))
        .await
        .unwrap();
    let deleted = gone
        .iter()
        .map(|id| ServerReport::Deleted {
            server_id: id.clone(),
        })
        .collect();
    w.supervisor
        .execute::<Groups>(g.as_str(), GroupCommand::ReportServers(deleted))
        .await
        .unwrap();
    // Saved whole with the last of the removals.
    let shrunk = w.journal.stream_version(g.as_str()).unwrap();
    assert!(shrunk >= last + 600 + 800);
    assert_eq!(snapshot_parts(&w, &g), (shrunk, None));
    assert!(
        w.journal
            .load_snapshot_parts(g.as_str(), last + 600, &named)
            .unwrap()
            .is_none(),
        "the parts are still there"
    );
    let loaded = store::load::<Groups>(&w.journal, g.as_str()).unwrap();
    assert_eq!((loaded.snapshot_version, loaded.version), (shrunk, shrunk));
    assert_eq!(loaded.state.as_ref().unwrap().servers.len(), 200);
    assert_eq!(loaded.state, replayed(&w, &g));
}

#[actix::test]
async fn a_nonce_is_recorded_in_the_same_append_as_its_execution_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 5, 0, 0).await;
    let p = policy(&w, &g, 1, Some(0)).await;
    let h = webhook(&w, &p, &g).await;
    let now = Timestamp::from_millis(START);

    w.supervisor
        .deliver_webhook(&h, signed_with(KEY, "msg_1", now), None)
        .await
        .unwrap();
    let records: Vec<_> = w.journal.read_all(1).map(|r| r.unwrap()).collect();
    let executed = records
        .iter()
        .find(|r| r.event_type == "policy_executed")
        .unwrap();
    let nonce = records
        .iter()
        .find(|r| r.event_type == "nonce_accepted")
        .unwrap();
    // One append: the group's record, then the nonce's, nothing between them.
    assert_eq!(nonce.seq, executed.seq + 1);
    assert_eq!(nonce.stream, h.as_str());

    // The group is gone: the execution is refused, and the nonce was never written, so the
    // webhook's stream did not move.
    let before = w.journal.stream_version(h.as_str()).unwrap();
    w.supervisor
        .execute::<Groups>(g.as_str(), GroupCommand::Delete)
        .await
        .unwrap();
    let refused = w
        .supervisor
        .deliver_webhook(&h, signed_with(KEY, "msg_2", now), None)
        .await;
    assert!(
        matches!(refused, Err(ref e) if e.code() == "not_found"),
        "{refused:?}"
    );
    assert_eq!(w.journal.stream_version(h.as_str()).unwrap(), before);
    // ...and the webhook's actor did not remember it either.
    let observed = w.supervisor.get::<Webhooks>(h.as_str()).await.unwrap();
    assert_eq!(observed.version, before);
    assert_eq!(observed.state.unwrap().nonces.len(), 1);
}

#[actix::test]
async fn an_idle_actor_stops_and_its_object_comes_back_whole_on_the_next_message() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let config = Config {
        idle_after_seconds: Some(60),
        ..Config::default()
    };
    let w = world_with(Journal::open(dir.path()).unwrap(), clock.clone(), config);
    let g = group(&w, 1, 10, 2, 600).await;
    let p = policy(&w, &g, 3, None).await;
    let run = w
        .supervisor
        .execute_policy(&p, Cause::Direct, None)
        .await
        .unwrap();
    assert!(matches!(
        run.outcome,
        Outcome::Executed { from: 2, to: 5, .. }
    ));
    assert_eq!(w.supervisor.resident(), 2);

    // 59 s of the service clock: a sweep (one tick of the service's idle loop) lets none go.
    clock.advance_secs(59);
    assert_eq!(w.supervisor.let_go_of_idle().await, 2);
    assert_eq!(w.supervisor.resident(), 2);

    // 60 s: the next sweep stops both.
    clock.advance_secs(1);
    w.supervisor.let_go_of_idle().await;
    assert_eq!(w.supervisor.resident(), 0);

    // The next message brings the group back, its 600 s cooldown included (from the journal).
    assert_eq!(capacity(&w, &g).await, 5);
    assert_eq!(w.supervisor.resident(), 1);
    let run = w
        .supervisor
        .execute_policy(&p, Cause::Direct, None)
        .await
        .unwrap();
    assert!(
        matches!(run.outcome, Outcome::Cooldown { .. }),
        "{:?}",
        run.outcome
    );
}

#[actix::test]
async fn an_execution_decided_with_a_policy_since_deleted_is_refused_whole_and_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    let w = world(Journal::open(dir.path()).unwrap(), clock);
    let g = group(&w, 0, 10, 0, 0).await;
    let p = policy(&w, &g, 1, Some(0)).await;
    let read = w.supervisor.get::<Policies>(p.as_str()).await.unwrap();

    // The policy is deleted after the execution read it, before the group records it.
    w.supervisor
        .execute::<Policies>(p.as_str(), PolicyCommand::Delete)
        .await
        .unwrap();
    let stale = GroupCommand::ExecutePolicy {
        route: flotilla_actors::domain::route::Route::direct(read.state.clone().unwrap()),
        cause: Cause::Direct,
        breach: None,
    };
    let guard = store::unchanged(p.as_str(), read.version);
    let head = w.journal.head().unwrap().seq;
    let addr = w.supervisor.address::<Groups>(g.as_str()).unwrap();
    let refused = addr
        .send(flotilla_actors::object::ExecuteAlong(stale, vec![guard]))
        .await
        .unwrap();
    assert_eq!(
        refused
            .err()
            .and_then(|e| e.conflict_on().map(str::to_owned)),
        Some(p.to_string()),
        "the append is refused on the policy's stream"
    );
    assert_eq!(w.journal.head().unwrap().seq, head, "nothing was written");
    let group_now = w.supervisor.get::<Groups>(g.as_str()).await.unwrap();
    assert_eq!(
        group_now.restarts, 0,
        "the group's own state was never in doubt"
    );

    // Through the supervisor, the execution is decided again with the policy as it now is.
    let run = w.supervisor.execute_policy(&p, Cause::Direct, None).await;
    assert_eq!(run.err().map(|e| e.code()), Some("not_found"));
    assert_eq!(group_now.state.unwrap().desired_capacity, 0);
}

/// A webhook, its policy and its group: made as the API makes them (the policy and webhook
/// started on their group's arbiter), then, once let go as idle, started again by a call
/// (placed by what the service's index knows): `groups` groups, each with a policy and a
/// webhook, whose groups `known` learns as they are made.
async fn placed_routes(
    w: &World,
    known: &std::sync::Mutex<std::collections::HashMap<String, GroupId>>,
    groups: usize,
) -> Vec<(GroupId, PolicyId, WebhookId)> {
    let mut routes = Vec::new();
    for _ in 0..groups {
        let g = group(w, 0, 100, 0, 0).await;
        let p = PolicyId::generate();
        let command = new_policy(&p, &g, 1, None);
        w.supervisor
            .execute_in::<Policies>(&g, p.as_str(), command)
            .await
            .unwrap();
        let h = WebhookId::generate();
        let command = new_webhook(&h, &p, &g);
        w.supervisor
            .execute_in::<Webhooks>(&g, h.as_str(), command)
            .await
            .unwrap();
        let mut known = known.lock().unwrap();
        known.insert(p.to_string(), g.clone());
        known.insert(h.to_string(), g.clone());
        routes.push((g, p, h));
    }
    routes
}

#[actix::test]
async fn a_webhook_its_policy_and_its_group_run_on_one_arbiter() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START));
    // What the service's index would answer: the group of each policy and webhook made.
    let known = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let placement = {
        let known = known.clone();
        Placement(Arc::new(move |id: &str| {
            known.lock().unwrap().get(id).cloned()
        }))
    };
    let config = Config {
        workers: 8,
        idle_after_seconds: Some(60),
        placement: Some(placement),
        ..Config::default()
    };
    let w = world_with(Journal::open(dir.path()).unwrap(), clock.clone(), config);
    let routes = placed_routes(&w, &known, 8).await;
    let threads = |(g, p, h): &(GroupId, PolicyId, WebhookId)| {
        let of = |id: &str| w.supervisor.thread_of(id).expect("resident");
        (of(g.as_str()), of(p.as_str()), of(h.as_str()))
    };
    let mut spread = std::collections::HashSet::new();
    for route in &routes {
        let (group, policy, webhook) = threads(route);
        assert_eq!(
            (policy, webhook),
            (group, group),
            "made on its group's arbiter"
        );
        spread.insert(group);
    }
    // Groups are still spread over the arbiters (8 groups on 1 of 8 arbiters: 1 in 8^7).
    assert!(spread.len() > 1);

    // Let go as idle, then brought back by a webhook call: each starts where its group is.
    clock.advance_secs(60);
    w.supervisor.let_go_of_idle().await;
    assert_eq!(w.supervisor.resident(), 0);
    for (i, route) in routes.iter().enumerate() {
        let now = Timestamp::from_millis(START + 60_000);
        let call = signed_with(KEY, &format!("n{i}"), now);
        let run = w
            .supervisor
            .deliver_webhook(&route.2, call, None)
            .await
            .unwrap();
        assert!(
            matches!(run.outcome, Outcome::Executed { .. }),
            "{:?}",
            run.outcome
        );
        let (group, policy, webhook) = threads(route);
        assert_eq!(
            (policy, webhook),
            (group, group),
            "started on its group's arbiter"
        );
    }
}
