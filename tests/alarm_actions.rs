//! Alarm actions exactly once (SPEC 5): a crash between an alarm's transition and its actions
//! neither loses nor repeats them. The transition is recorded (and acknowledged) as the
//! evaluator records it, then everything in memory is dropped before the actions run; after the
//! restart the evaluator completes them: one execution, never zero, never two, however often it
//! starts again.

mod common;

use common::world::{self, World};
use flotilla::alarms::Evaluator;
use flotilla_actors::aggregate::{Alarms, Groups, Policies, Tenants};
use flotilla_actors::clock::{ManualClock, Timestamp};
use flotilla_actors::domain::alarm::{AlarmCommand, AlarmState, Comparison, NewAlarm, Statistic};
use flotilla_actors::domain::group::GroupEvent;
use flotilla_actors::domain::policy::{PolicyCommand, PolicyDefinition, Tracking};
use flotilla_actors::domain::tenant::TenantCommand;
use flotilla_actors::domain::{AlarmId, Cause, DomainEvent, GroupId, PolicyId, TenantId};

struct Ids {
    group: GroupId,
    policies: [PolicyId; 2],
    alarm: AlarmId,
}

/// A group at 0 (no cooldown), two +1 policies, and an alarm whose actions are both.
fn setup(w: &World) -> Ids {
    let tenant = TenantId::generate();
    let created = TenantCommand::Create {
        id: tenant.clone(),
        name: "acme".into(),
        token_hash: format!("{:064x}", 1),
    };
    assert!(w.run::<Tenants>(tenant.as_str(), created));
    let group = GroupId::generate();
    let created = world::new_group(&group, &tenant, format!("{:064x}", 2));
    assert!(w.run::<Groups>(group.as_str(), created));
    let policies = [PolicyId::generate(), PolicyId::generate()];
    for policy in &policies {
        let created = world::new_policy(policy, &group, &tenant);
        assert!(w.run::<Policies>(policy.as_str(), created));
    }
    let alarm = AlarmId::generate();
    let created = new_alarm(&alarm, tenant, &group, "cpu", policies.to_vec());
    assert!(w.run::<Alarms>(alarm.as_str(), created));
    Ids {
        group,
        policies,
        alarm,
    }
}

/// The creation of alarm `id` of `tenant`'s group `group`: `metric`'s average over 60 s above
/// 0.5 for one period takes `actions`.
fn new_alarm(
    id: &AlarmId,
    tenant: TenantId,
    group: &GroupId,
    metric: &str,
    actions: Vec<PolicyId>,
) -> AlarmCommand {
    AlarmCommand::Create(NewAlarm {
        id: id.clone(),
        tenant_id: tenant,
        name: metric.into(),
        group_id: group.clone(),
        metric: metric.into(),
        query: None,
        statistic: Statistic::Avg,
        period_seconds: 60,
        evaluation_periods: 1,
        datapoints_to_alarm: None,
        comparison: Comparison::Gt,
        threshold: 0.5,
        treat_missing: None,
        alarm_actions: actions,
        ok_actions: vec![],
        repeat_actions: false,
    })
}

/// The evaluator over the world's alarm table, as the service builds it.
fn evaluator_of(w: &World) -> Evaluator {
    Evaluator::new(w.projector.alarms().clone(), w.supervisor().clone())
}

/// The group's policy executions caused by `alarm`, as the journal holds them.
fn executions(w: &World, ids: &Ids) -> Vec<PolicyId> {
    w.journal()
        .read_stream(ids.group.as_str(), 1)
        .map(|record| record.unwrap().decode(GroupEvent::SCHEMA).unwrap())
        .filter_map(|event: GroupEvent| match event {
            GroupEvent::PolicyExecuted {
                policy_id,
                cause: Cause::Alarm { alarm_id, .. },
                ..
            } if alarm_id == ids.alarm => Some(policy_id),
            _ => None,
        })
        .collect()
}

/// Records the alarm's transition into ALARM exactly as the evaluator does, without its
/// actions: what a crash right after that append leaves behind.
fn transition_then_crash(w: World, ids: &Ids) -> World {
    let breach = AlarmCommand::Evaluate {
        datapoints: vec![Some(0.9)],
        note: None,
    };
    assert!(w.run::<Alarms>(ids.alarm.as_str(), breach));
    assert!(executions(&w, ids).is_empty());
    w.restart(false)
}

#[test]
fn a_crash_between_a_transition_and_its_actions_gives_one_execution_of_each_after_restart() {
    let clock = ManualClock::new(Timestamp::from_secs(1_795_564_800));
    let w = World::open(tempfile::tempdir().unwrap(), clock);
    let ids = setup(&w);
    let w = transition_then_crash(w, &ids);

    // The start's first tick completes the transition: each action once.
    let evaluator = evaluator_of(&w);
    w.system.block_on(evaluator.complete());
    assert_eq!(executions(&w, &ids), ids.policies.to_vec());
    let capacity = |w: &World| {
        let supervisor = w.supervisor().clone();
        let group = ids.group.clone();
        w.system.block_on(async move {
            let observed = supervisor.get::<Groups>(group.as_str()).await.unwrap();
            observed.state.unwrap().desired_capacity
        })
    };
    assert_eq!(capacity(&w), 2);

    // Completing again, restarting (with or without a checkpoint) and completing again: nothing
    // more.
    w.system.block_on(evaluator.complete());
    drop(evaluator);
    let w = w.restart(true);
    let evaluator = evaluator_of(&w);
    w.system.block_on(evaluator.complete());
    drop(evaluator);
    let w = w.restart(false);
    let evaluator = evaluator_of(&w);
    w.system.block_on(evaluator.complete());
    assert_eq!(executions(&w, &ids), ids.policies.to_vec());
    assert_eq!(capacity(&w), 2);
    assert!(w.projector.alarms().pending(|_| true).is_empty());
}

#[test]
fn a_crash_after_one_of_two_actions_completes_only_the_other() {
    let clock = ManualClock::new(Timestamp::from_secs(1_795_564_800));
    let w = World::open(tempfile::tempdir().unwrap(), clock);
    let ids = setup(&w);
    let breach = AlarmCommand::Evaluate {
        datapoints: vec![Some(0.9)],
        note: None,
    };
    assert!(w.run::<Alarms>(ids.alarm.as_str(), breach));
    // The first action is taken (its record and its execution in one append), then a crash.
    let supervisor = w.supervisor().clone();
    let (alarm, first) = (ids.alarm.clone(), ids.policies[0].clone());
    w.system
        .block_on(async move { supervisor.take_alarm_action(&alarm, 1, &first).await })
        .unwrap();
    let w = w.restart(false);

    let evaluator = evaluator_of(&w);
    w.system.block_on(evaluator.complete());
    assert_eq!(executions(&w, &ids), ids.policies.to_vec());
    // Taking an action again is refused by the alarm: its nonce is spent.
    let supervisor = w.supervisor().clone();
    let (alarm, first) = (ids.alarm.clone(), ids.policies[0].clone());
    let again = w
        .system
        .block_on(async move { supervisor.take_alarm_action(&alarm, 1, &first).await });
    assert_eq!(
        again.err().map(|e| e.code()),
        Some("replayed"),
        "an action taken twice"
    );
    assert_eq!(executions(&w, &ids).len(), 2);
}

#[test]
fn an_action_whose_policy_was_deleted_is_done_with_not_tried_for_ever() {
    let clock = ManualClock::new(Timestamp::from_secs(1_795_564_800));
    let w = World::open(tempfile::tempdir().unwrap(), clock);
    let ids = setup(&w);
    assert!(w.run::<Policies>(ids.policies[1].as_str(), PolicyCommand::Delete));
    let w = transition_then_crash(w, &ids);
    let evaluator = evaluator_of(&w);
    w.system.block_on(evaluator.complete());
    assert_eq!(executions(&w, &ids), vec![ids.policies[0].clone()]);
    assert!(w.projector.alarms().pending(|_| true).is_empty());
    let supervisor = w.supervisor().clone();
    let alarm = ids.alarm.clone();
    let state = w.system.block_on(async move {
        let observed = supervisor.get::<Alarms>(alarm.as_str()).await.unwrap();
        observed.state.unwrap().state
    });
    assert_eq!(state, AlarmState::Alarm);
}

#[test]
fn an_action_naming_a_target_tracking_policy_is_done_with_not_tried_for_ever() {
    // The API refuses such an action now; a journal an older build wrote may hold one.
    let clock = ManualClock::new(Timestamp::from_secs(1_795_564_800));
    let w = World::open(tempfile::tempdir().unwrap(), clock);
    let ids = setup(&w);
    let tracking = PolicyId::generate();
    let created = PolicyCommand::Create {
        id: tracking.clone(),
        group_id: ids.group.clone(),
        tenant_id: tenant_of(&w, &ids),
        definition: PolicyDefinition::target_tracking("follow", Tracking::new("queue", 100.0)),
    };
    assert!(w.run::<Policies>(tracking.as_str(), created));
    let alarm = AlarmId::generate();
    let created = new_alarm(
        &alarm,
        tenant_of(&w, &ids),
        &ids.group,
        "queue",
        vec![tracking.clone()],
    );
    assert!(w.run::<Alarms>(alarm.as_str(), created));
    let breach = AlarmCommand::Evaluate {
        datapoints: vec![Some(0.9)],
        note: None,
    };
    assert!(w.run::<Alarms>(alarm.as_str(), breach));
    let supervisor = w.supervisor().clone();
    let taken = w.system.block_on(async move {
        let first = supervisor.take_alarm_action(&alarm, 1, &tracking).await;
        let again = supervisor.take_alarm_action(&alarm, 1, &tracking).await;
        (first.err().map(|e| e.code()), again.err().map(|e| e.code()))
    });
    // Refused as the execution it is, and recorded as taken: a second try is a replay.
    assert_eq!(taken, (Some("conflict"), Some("replayed")));
    assert!(executions(&w, &ids).is_empty());
}

/// The tenant of the group `ids` set up.
fn tenant_of(w: &World, ids: &Ids) -> TenantId {
    let (supervisor, group) = (w.supervisor().clone(), ids.group.clone());
    w.system.block_on(async move {
        let observed = supervisor.get::<Groups>(group.as_str()).await.unwrap();
        observed.state.unwrap().tenant_id
    })
}
