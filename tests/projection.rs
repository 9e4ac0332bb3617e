//! Read models follow the journal: random commands run through the real actors, with restarts
//! (some from a checkpoint) mixed in, and after every step the read models the live projector
//! built (told each append by the journal) equal those a fresh projector rebuilds from the
//! journal alone, as a second process following it would.

mod common;

use std::sync::Arc;

use common::world::{self, World};
use flotilla::projector::{self, Checkpoint, Projector};
use flotilla_actors::aggregate::{Alarms, Groups, Policies, Tenants, Webhooks};
use flotilla_actors::clock::{ManualClock, Timestamp};
use flotilla_actors::domain::alarm::{AlarmCommand, AlarmPatch, Comparison, NewAlarm, Statistic};
use flotilla_actors::domain::group::{GroupCommand, LaunchRequest, ServerReport};
use flotilla_actors::domain::policy::PolicyCommand;
use flotilla_actors::domain::tenant::TenantCommand;
use flotilla_actors::domain::webhook::WebhookCommand;
use flotilla_actors::domain::{AlarmId, GroupId, PolicyId, TenantId, WebhookId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Tenant,
    Group(usize),
    Policy(usize),
    Webhook(usize),
    Alarm(usize),
    AlarmPeriod(usize, u32),
    AlarmEvaluate(usize, Vec<Option<f64>>),
    Launch(usize, u32),
    DeleteServers(usize),
    DeleteGroup(usize),
    DeletePolicy(usize),
    Revoke(usize),
    DeleteAlarm(usize),
    RotateTenantToken(usize),
    RotateMetricsToken(usize),
    Advance(u64),
    /// Restart; with `true`, move the checkpoint to the head first.
    Restart(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let datapoint = proptest::option::of(prop_oneof![Just(0.1), Just(0.9)]);
    prop_oneof![
        2 => Just(Op::Tenant),
        3 => (0usize..4).prop_map(Op::Group),
        3 => (0usize..6).prop_map(Op::Policy),
        3 => (0usize..6).prop_map(Op::Webhook),
        3 => (0usize..6).prop_map(Op::Alarm),
        1 => ((0usize..6), (1u32..120)).prop_map(|(i, p)| Op::AlarmPeriod(i, p)),
        3 => ((0usize..6), proptest::collection::vec(datapoint, 3)).prop_map(|(i, d)| Op::AlarmEvaluate(i, d)),
        2 => ((0usize..6), (0u32..4)).prop_map(|(i, n)| Op::Launch(i, n)),
        1 => (0usize..6).prop_map(Op::DeleteServers),
        1 => (0usize..6).prop_map(Op::DeleteGroup),
        1 => (0usize..6).prop_map(Op::DeletePolicy),
        1 => (0usize..6).prop_map(Op::Revoke),
        1 => (0usize..6).prop_map(Op::DeleteAlarm),
        1 => (0usize..6).prop_map(Op::RotateTenantToken),
        1 => (0usize..6).prop_map(Op::RotateMetricsToken),
        1 => (0u64..100).prop_map(Op::Advance),
        1 => any::<bool>().prop_map(Op::Restart),
    ]
}

/// The read models as live, and as rebuilt from the journal alone.
fn both(w: &World) -> (Checkpoint, Checkpoint) {
    let rebuilt = Projector::new(Arc::default(), Arc::default());
    let head = w.journal().head().unwrap();
    rebuilt.replay(w.journal(), head.seq, 2).unwrap();
    assert_eq!(w.projector.seq(), head.seq, "the live projector lags");
    (w.projector.save(), rebuilt.save())
}

/// Ids created so far, by kind (deleted ones stay: commands on them are refused).
#[derive(Default)]
struct Ids {
    tenants: Vec<TenantId>,
    groups: Vec<(TenantId, GroupId)>,
    policies: Vec<(TenantId, GroupId, PolicyId)>,
    webhooks: Vec<WebhookId>,
    alarms: Vec<AlarmId>,
    tokens: u64,
}

impl Ids {
    fn token(&mut self) -> String {
        self.tokens += 1;
        format!("{:064x}", self.tokens)
    }
}

fn pick<T>(items: &[T], i: usize) -> Option<&T> {
    (!items.is_empty()).then(|| &items[i % items.len()])
}

fn step(w: &World, ids: &mut Ids, op: &Op) {
    match op {
        Op::Tenant => {
            let id = TenantId::generate();
            let token_hash = ids.token();
            let name = "acme".into();
            let created = TenantCommand::Create {
                id: id.clone(),
                name,
                token_hash,
            };
            if w.run::<Tenants>(id.as_str(), created) {
                ids.tenants.push(id);
            }
        }
        Op::Group(i) => {
            let Some(tenant) = pick(&ids.tenants, *i).cloned() else {
                return;
            };
            let id = GroupId::generate();
            let command = world::new_group(&id, &tenant, ids.token());
            if w.run::<Groups>(id.as_str(), command) {
                ids.groups.push((tenant, id));
            }
        }
        Op::Policy(i) => {
            let Some((tenant, group)) = pick(&ids.groups, *i).cloned() else {
                return;
            };
            let id = PolicyId::generate();
            let command = world::new_policy(&id, &group, &tenant);
            if w.run::<Policies>(id.as_str(), command) {
                ids.policies.push((tenant, group, id));
            }
        }
        Op::Webhook(i) => {
            let Some((tenant, group, policy)) = pick(&ids.policies, *i).cloned() else {
                return;
            };
            let id = WebhookId::generate();
            let command = WebhookCommand::Create {
                id: id.clone(),
                policy_id: policy,
                group_id: group,
                tenant_id: tenant,
                name: "hook".into(),
                secret: flotilla::token::generate_secret(),
            };
            if w.run::<Webhooks>(id.as_str(), command) {
                ids.webhooks.push(id);
            }
        }
        Op::Alarm(i) => {
            let Some((tenant, group, policy)) = pick(&ids.policies, *i).cloned() else {
                return;
            };
            let id = AlarmId::generate();
            let command = AlarmCommand::Create(NewAlarm {
                id: id.clone(),
                tenant_id: tenant,
                name: "cpu".into(),
                group_id: group,
                metric: "cpu".into(),
                query: None,
                statistic: Statistic::Avg,
                period_seconds: 60,
                evaluation_periods: 3,
                datapoints_to_alarm: Some(2),
                comparison: Comparison::Gt,
                threshold: 0.5,
                treat_missing: None,
                alarm_actions: vec![policy],
                ok_actions: vec![],
                repeat_actions: false,
            });
            if w.run::<Alarms>(id.as_str(), command) {
                ids.alarms.push(id);
            }
        }
        Op::AlarmPeriod(i, period_seconds) => {
            if let Some(id) = pick(&ids.alarms, *i) {
                let patch = AlarmPatch {
                    period_seconds: Some(*period_seconds),
                    ..AlarmPatch::default()
                };
                w.run::<Alarms>(id.as_str(), AlarmCommand::Update(patch));
            }
        }
        Op::AlarmEvaluate(i, datapoints) => {
            if let Some(id) = pick(&ids.alarms, *i) {
                let datapoints = datapoints.clone();
                w.run::<Alarms>(
                    id.as_str(),
                    AlarmCommand::Evaluate {
                        datapoints,
                        note: None,
                    },
                );
            }
        }
        Op::Launch(i, n) => {
            if let Some((_, group)) = pick(&ids.groups, *i).cloned() {
                let desired = GroupCommand::SetDesired {
                    desired_capacity: *n,
                };
                w.run::<Groups>(group.as_str(), desired);
                let requests = (0..*n)
                    .map(|_| LaunchRequest {
                        server_id: format!("srv_{}", ids.token()),
                        metrics_token_hash: ids.token(),
                    })
                    .collect();
                w.run::<Groups>(group.as_str(), GroupCommand::LaunchServers(requests));
            }
        }
        Op::DeleteServers(i) => {
            if let Some((_, group)) = pick(&ids.groups, *i) {
                let servers = w.group_servers(group);
                w.run::<Groups>(group.as_str(), GroupCommand::Drain);
                w.run::<Groups>(group.as_str(), GroupCommand::DeleteServers(servers.clone()));
                let reports = servers
                    .into_iter()
                    .map(|server_id| ServerReport::Deleted { server_id })
                    .collect();
                w.run::<Groups>(group.as_str(), GroupCommand::ReportServers(reports));
            }
        }
        Op::DeleteGroup(i) => {
            if let Some((_, group)) = pick(&ids.groups, *i) {
                w.run::<Groups>(group.as_str(), GroupCommand::Delete);
            }
        }
        Op::DeletePolicy(i) => {
            if let Some((_, _, policy)) = pick(&ids.policies, *i) {
                w.run::<Policies>(policy.as_str(), PolicyCommand::Delete);
            }
        }
        Op::Revoke(i) => {
            if let Some(webhook) = pick(&ids.webhooks, *i) {
                w.run::<Webhooks>(webhook.as_str(), WebhookCommand::Revoke);
            }
        }
        Op::DeleteAlarm(i) => {
            if let Some(alarm) = pick(&ids.alarms, *i) {
                w.run::<Alarms>(alarm.as_str(), AlarmCommand::Delete);
            }
        }
        Op::RotateTenantToken(i) => {
            if let Some(tenant) = pick(&ids.tenants, *i).cloned() {
                let token_hash = ids.token();
                w.run::<Tenants>(tenant.as_str(), TenantCommand::RotateToken { token_hash });
            }
        }
        Op::RotateMetricsToken(i) => {
            if let Some((_, group)) = pick(&ids.groups, *i).cloned() {
                let metrics_token_hash = ids.token();
                let rotate = GroupCommand::RotateMetricsToken { metrics_token_hash };
                w.run::<Groups>(group.as_str(), rotate);
            }
        }
        Op::Advance(secs) => w.clock.advance_secs(*secs),
        Op::Restart(_) => unreachable!("handled by the caller"),
    }
}

fn run_case(ops: Vec<Op>) {
    let clock = ManualClock::new(Timestamp::from_secs(1_795_564_800));
    let mut w = World::open(tempfile::tempdir().unwrap(), clock);
    let mut ids = Ids::default();
    for op in &ops {
        match op {
            Op::Restart(checkpoint) => w = w.restart(*checkpoint),
            op => step(&w, &mut ids, op),
        }
        let (live, rebuilt) = both(&w);
        assert_eq!(live, rebuilt, "after {op:?}");
    }
    // The commands did build something, or the property says little.
    let (live, _) = both(&w);
    if ids.groups.len() > 1 {
        assert!(!live.index.is_empty(), "nothing was indexed");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_read_models_built_live_equal_those_rebuilt_from_the_journal(
        ops in proptest::collection::vec(op(), 20..80),
    ) {
        run_case(ops);
    }
}

/// A checkpoint taken while serving, restored, and followed by more appends, equals a rebuild.
#[test]
fn a_checkpoint_restored_then_followed_equals_a_rebuild_from_the_start() {
    let ops = vec![
        Op::Tenant,
        Op::Group(0),
        Op::Policy(0),
        Op::Webhook(0),
        Op::Alarm(0),
        Op::Launch(0, 3),
        Op::Restart(true),
        Op::AlarmEvaluate(0, vec![Some(0.9), Some(0.9), Some(0.9)]),
        Op::Revoke(0),
        Op::DeleteServers(0),
        Op::Restart(true),
        Op::DeleteAlarm(0),
        Op::DeletePolicy(0),
        Op::DeleteGroup(0),
        Op::Restart(false),
    ];
    run_case(ops);
}

/// The live checkpoint: saved at the last record the follower took in, and only past the last
/// one; what it saved restores the read models as they were then.
#[test]
fn a_live_checkpoint_is_the_read_models_at_the_last_record_taken_in() {
    let clock = ManualClock::new(Timestamp::from_secs(1_795_564_800));
    let w = World::open(tempfile::tempdir().unwrap(), clock);
    let opened = w.journal().head().unwrap();
    // Nothing taken in since the start's checkpoint: nothing to save.
    assert_eq!(
        w.projector
            .checkpoint_live(w.journal(), opened.seq)
            .unwrap(),
        None
    );
    let mut ids = Ids::default();
    for op in [Op::Tenant, Op::Group(0), Op::Launch(0, 3), Op::Policy(0)] {
        step(&w, &mut ids, &op);
    }
    let head = w.journal().head().unwrap();
    assert!(head.seq > opened.seq);
    let saved = w
        .projector
        .checkpoint_live(w.journal(), opened.seq)
        .unwrap();
    assert_eq!(saved, Some(head));
    assert_eq!(
        w.projector.checkpoint_live(w.journal(), head.seq).unwrap(),
        None
    );
    let (stored, bytes) = w
        .journal()
        .load_checkpoint(projector::CHECKPOINT)
        .unwrap()
        .unwrap();
    assert_eq!(stored, head);
    let checkpoint: Checkpoint = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(checkpoint, w.projector.save());
    assert!(!checkpoint.index.is_empty());
}
