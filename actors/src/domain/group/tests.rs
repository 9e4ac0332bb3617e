use super::*;
use crate::domain::policy::{Policy, PolicyDefinition};
use crate::domain::route::Route;
use crate::domain::scaling::{Adjustment, AdjustmentType, Constraint};
use serde_json::json;

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn new_group(min_size: u32, max_size: u32, desired: Option<u32>) -> NewGroup {
    NewGroup {
        id: GroupId::new("grp_1"),
        tenant_id: TenantId::new("ten_1"),
        name: "web".into(),
        min_size,
        max_size,
        desired_capacity: desired,
        cooldown_seconds: None,
        launch: json!({"provider": "simulated"}),
        metadata: None,
        metrics_token_hash: String::new(),
    }
}

/// Given the events of a group created with these bounds at `T0`.
fn given_group(min_size: u32, max_size: u32, desired: u32) -> GroupState {
    let events = decide(
        &None,
        &GroupCommand::Create(new_group(min_size, max_size, Some(desired))),
        T0,
    )
    .unwrap();
    replay(&events)
}

/// Decides then applies, returning the new state and the events.
fn when(state: GroupState, cmd: GroupCommand, now: Timestamp) -> (GroupState, Vec<GroupEvent>) {
    let events = decide(&state, &cmd, now).unwrap();
    let state = events.iter().fold(state, apply);
    (state, events)
}

/// An execution of policy `pol_1` of `grp_1` with `adjustment`.
fn execute(adjustment: Adjustment, cooldown_seconds: Option<u32>, cause: Cause) -> GroupCommand {
    let policy = Policy {
        id: PolicyId::new("pol_1"),
        group_id: GroupId::new("grp_1"),
        tenant_id: TenantId::new("ten_1"),
        definition: PolicyDefinition {
            min_adjustment_step: adjustment.min_adjustment_step,
            cooldown_seconds,
            ..PolicyDefinition::simple("p", adjustment.kind, adjustment.value)
        },
        deleted: false,
        created_at: T0,
    };
    GroupCommand::ExecutePolicy {
        route: Route::direct(policy),
        cause,
        breach: None,
    }
}

fn change(value: i64, cooldown_seconds: Option<u32>) -> GroupCommand {
    let adjustment = Adjustment {
        kind: AdjustmentType::Change,
        value,
        min_adjustment_step: None,
    };
    execute(adjustment, cooldown_seconds, Cause::Direct)
}

/// [`change`] by a shadow policy.
fn shadow_change(value: i64) -> GroupCommand {
    let mut command = change(value, None);
    if let GroupCommand::ExecutePolicy { route, .. } = &mut command {
        route.policy.as_mut().unwrap().definition.mode = crate::domain::policy::Mode::Shadow;
    }
    command
}

/// An occurrence at `T0` of a scheduled action of `grp_1` giving these values.
fn run_schedule(max_size: Option<u32>, desired_capacity: Option<u32>) -> GroupCommand {
    let definition = crate::domain::scheduled::ScheduleDefinition {
        name: "night".into(),
        at: Some(T0),
        recurrence: None,
        time_zone: "UTC".into(),
        start_time: None,
        end_time: None,
        min_size: None,
        max_size,
        desired_capacity,
    };
    let scheduled = crate::domain::scheduled::Scheduled {
        id: ScheduleId::new("sch_1"),
        group_id: GroupId::new("grp_1"),
        tenant_id: TenantId::new("ten_1"),
        definition,
        deleted: false,
        created_at: T0,
        since: T0,
        last_run: None,
    };
    GroupCommand::RunSchedule {
        scheduled: Box::new(scheduled),
        occurrence: T0,
    }
}

fn outcome_of(events: &[GroupEvent]) -> &Outcome {
    match events {
        [GroupEvent::PolicyExecuted { outcome, .. }] => outcome,
        other => panic!("expected one policy_executed, got {other:?}"),
    }
}

fn capacity(state: &GroupState) -> u32 {
    state.as_ref().map(|g| g.desired_capacity).unwrap()
}

#[test]
fn a_new_group_starts_at_min_size_with_the_default_cooldown() {
    let events = decide(&None, &GroupCommand::Create(new_group(2, 5, None)), T0).unwrap();
    let group = replay(&events).unwrap();
    assert_eq!(group.desired_capacity, 2);
    assert_eq!(group.cooldown_seconds, DEFAULT_COOLDOWN_SECONDS);
    assert!(!group.pause.any());
    assert_eq!(group.cooldown_until, None);
}

#[test]
fn creating_a_group_twice_is_a_conflict() {
    let state = given_group(1, 3, 1);
    let rejection = decide(&state, &GroupCommand::Create(new_group(1, 3, None)), T0).unwrap_err();
    assert_eq!(rejection.status(), 409);
}

#[test]
fn invalid_groups_are_refused_naming_the_field() {
    let cases: Vec<(NewGroup, &str)> = vec![
        (
            NewGroup {
                name: "".into(),
                ..new_group(0, 1, None)
            },
            "name",
        ),
        (
            NewGroup {
                name: "x".repeat(256),
                ..new_group(0, 1, None)
            },
            "name",
        ),
        (new_group(3, 2, None), "min_size"),
        (new_group(0, MAX_GROUP_SIZE + 1, None), "max_size"),
        (new_group(1, 3, Some(4)), "desired_capacity"),
        (new_group(1, 3, Some(0)), "desired_capacity"),
        (
            NewGroup {
                cooldown_seconds: Some(86_400 * 7 + 1),
                ..new_group(0, 1, None)
            },
            "cooldown_seconds",
        ),
        (
            NewGroup {
                launch: json!({"provider": "ec2"}),
                ..new_group(0, 1, None)
            },
            "launch.provider",
        ),
        (
            NewGroup {
                launch: json!({"command": ["x"]}),
                ..new_group(0, 1, None)
            },
            "launch.provider",
        ),
        (
            NewGroup {
                launch: json!("process"),
                ..new_group(0, 1, None)
            },
            "launch",
        ),
    ];
    for (new, field) in cases {
        match decide(&None, &GroupCommand::Create(new.clone()), T0) {
            Err(Rejection::Invalid { field: got, .. }) => assert_eq!(got, field, "{new:?}"),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
}

#[test]
fn the_largest_group_and_longest_cooldown_are_allowed() {
    let new = NewGroup {
        cooldown_seconds: Some(86_400 * 7),
        ..new_group(0, MAX_GROUP_SIZE, Some(MAX_GROUP_SIZE))
    };
    assert!(decide(&None, &GroupCommand::Create(new), T0).is_ok());
}

#[test]
fn commands_on_a_missing_or_deleted_group_are_not_found() {
    assert_eq!(
        decide(&None, &GroupCommand::Pause(Pause::BOTH), T0)
            .unwrap_err()
            .status(),
        404
    );
    let (deleted, _) = when(given_group(1, 3, 1), GroupCommand::Delete, T0);
    for cmd in [
        GroupCommand::Pause(Pause::BOTH),
        GroupCommand::Delete,
        change(1, None),
    ] {
        assert_eq!(decide(&deleted, &cmd, T0).unwrap_err().status(), 404);
    }
}

#[test]
fn an_execution_that_changes_capacity_starts_the_policy_cooldown() {
    let (state, events) = when(given_group(1, 10, 2), change(3, Some(60)), T0);
    assert_eq!(
        outcome_of(&events),
        &Outcome::Executed {
            from: 2,
            to: 5,
            cooldown_until: Some(T0.plus_secs(60u32))
        }
    );
    assert_eq!(capacity(&state), 5);
    assert_eq!(state.unwrap().cooldown_until, Some(T0.plus_secs(60u32)));
}

#[test]
fn without_a_policy_cooldown_the_group_cooldown_applies() {
    let (state, _) = when(given_group(1, 10, 2), change(1, None), T0);
    assert_eq!(state.unwrap().cooldown_until, Some(T0.plus_secs(300u32)));
}

#[test]
fn one_millisecond_before_the_cooldown_ends_the_outcome_is_cooldown_with_retry_after_1() {
    let (state, _) = when(given_group(1, 10, 2), change(1, Some(60)), T0);
    let before_end = T0.plus_secs(60u32).plus_millis(-1);
    let (after, events) = when(state.clone(), change(1, Some(60)), before_end);
    assert_eq!(
        outcome_of(&events),
        &Outcome::Cooldown {
            retry_after_seconds: 1
        }
    );
    assert_eq!(after, state, "a cooldown outcome changes nothing");
}

#[test]
fn a_cooldown_retry_after_is_rounded_up_to_whole_seconds() {
    let (state, _) = when(given_group(1, 10, 2), change(1, Some(60)), T0);
    let (_, events) = when(state, change(1, None), T0.plus_millis(500));
    assert_eq!(
        outcome_of(&events),
        &Outcome::Cooldown {
            retry_after_seconds: 60
        }
    );
}

#[test]
fn exactly_when_the_cooldown_ends_a_policy_executes() {
    let (state, _) = when(given_group(1, 10, 2), change(1, Some(60)), T0);
    let (state, events) = when(state, change(1, Some(60)), T0.plus_secs(60u32));
    assert!(matches!(
        outcome_of(&events),
        Outcome::Executed { from: 3, to: 4, .. }
    ));
    assert_eq!(capacity(&state), 4);
}

#[test]
fn an_execution_at_a_bound_is_no_change_and_starts_no_cooldown() {
    let (state, events) = when(given_group(1, 3, 3), change(2, Some(60)), T0);
    assert_eq!(outcome_of(&events), &Outcome::NoChange { capacity: 3 });
    assert_eq!(state.as_ref().unwrap().cooldown_until, None);
    let (_, events) = when(state, change(-1, Some(60)), T0.plus_millis(1));
    assert!(matches!(
        outcome_of(&events),
        Outcome::Executed { from: 3, to: 2, .. }
    ));
}

#[test]
fn a_paused_group_executes_nothing_until_resumed() {
    let (paused, _) = when(given_group(1, 10, 2), GroupCommand::Pause(Pause::BOTH), T0);
    let (after, events) = when(paused.clone(), change(3, None), T0);
    assert_eq!(outcome_of(&events), &Outcome::Paused);
    assert_eq!(after, paused);
    let (resumed, _) = when(after, GroupCommand::Resume, T0);
    let (state, _) = when(resumed, change(3, None), T0);
    assert_eq!(capacity(&state), 5);
}

#[test]
fn a_paused_direction_executes_nothing_while_the_other_still_does() {
    let scale_in = Pause {
        scale_in: true,
        scale_out: false,
    };
    let (paused, events) = when(given_group(1, 10, 4), GroupCommand::Pause(scale_in), T0);
    assert_eq!(
        events,
        [GroupEvent::Paused {
            scale_in: true,
            scale_out: false,
            at: T0
        }]
    );
    let (after, events) = when(paused.clone(), change(-2, None), T0);
    assert_eq!(outcome_of(&events), &Outcome::Paused);
    assert_eq!(capacity(&after), 4);
    let (after, events) = when(paused, change(2, None), T0);
    assert!(matches!(
        outcome_of(&events),
        Outcome::Executed { from: 4, to: 6, .. }
    ));
    assert_eq!(capacity(&after), 6);

    // The reverse, and an execution that would change nothing is `no_change`, not `paused`.
    let scale_out = Pause {
        scale_in: false,
        scale_out: true,
    };
    let (paused, _) = when(given_group(1, 10, 4), GroupCommand::Pause(scale_out), T0);
    let (_, events) = when(paused.clone(), change(1, None), T0);
    assert_eq!(outcome_of(&events), &Outcome::Paused);
    let (_, events) = when(paused.clone(), change(0, None), T0);
    assert_eq!(outcome_of(&events), &Outcome::NoChange { capacity: 4 });
    let (after, _) = when(paused, change(-1, None), T0);
    assert_eq!(capacity(&after), 3);
}

#[test]
fn a_pause_names_a_direction_and_an_old_paused_event_means_both() {
    assert!(decide(
        &given_group(1, 10, 2),
        &GroupCommand::Pause(Pause::default()),
        T0
    )
    .is_err());
    let old: GroupEvent = serde_json::from_value(json!({"type": "paused", "at": T0})).unwrap();
    assert_eq!(
        old,
        GroupEvent::Paused {
            scale_in: true,
            scale_out: true,
            at: T0
        }
    );
}

#[test]
fn a_shadow_policy_records_what_it_would_have_done_and_leaves_capacity_and_cooldown_alone() {
    let given = given_group(1, 10, 2);
    let (after, events) = when(given.clone(), shadow_change(3), T0);
    assert_eq!(
        outcome_of(&events),
        &Outcome::Shadow {
            from: 2,
            to: 5,
            would: Box::new(Outcome::Executed {
                from: 2,
                to: 5,
                cooldown_until: Some(T0.plus_secs(DEFAULT_COOLDOWN_SECONDS))
            })
        }
    );
    assert_eq!(capacity(&after), 2);
    assert_eq!(after.as_ref().unwrap().cooldown_until, None);
    // A live execution right after is not cooling down.
    let (after, _) = when(after, change(1, None), T0);
    assert_eq!(capacity(&after), 3);
    // During the live one's cooldown, the shadow says it would have waited.
    let (_, events) = when(after.clone(), shadow_change(1), T0);
    assert!(
        matches!(outcome_of(&events), Outcome::Shadow { from: 3, to: 4, would } if matches!(**would, Outcome::Cooldown { .. })),
        "{events:?}"
    );
    // Paused, it would have been paused.
    let (paused, _) = when(after, GroupCommand::Pause(Pause::BOTH), T0);
    let (_, events) = when(paused, shadow_change(-1), T0);
    assert!(
        matches!(outcome_of(&events), Outcome::Shadow { would, .. } if **would == Outcome::Paused),
        "{events:?}"
    );
}

/// An execution of step policy `pol_1` (`adjustment_type`, `steps`, warm-up) at breach
/// `value` against a threshold of 50.
fn step_execution(
    adjustment_type: AdjustmentType,
    steps: &[(Option<f64>, Option<f64>, i64)],
    warmup_seconds: Option<u32>,
    value: Option<f64>,
) -> GroupCommand {
    let mut command = change(0, None);
    if let GroupCommand::ExecutePolicy { route, breach, .. } = &mut command {
        let definition = &mut route.policy.as_mut().unwrap().definition;
        definition.policy_type = crate::domain::policy::PolicyType::Step;
        definition.adjustment_type = adjustment_type;
        definition.steps = steps
            .iter()
            .map(|&(lower, upper, adjustment)| crate::domain::policy::Step {
                lower,
                upper,
                adjustment,
            })
            .collect();
        definition.warmup_seconds = warmup_seconds;
        *breach = value.map(|metric_value| crate::domain::policy::Breach {
            metric_value,
            breach_threshold: 50.0,
        });
    }
    command
}

#[test]
fn step_policies_follow_awss_worked_example_around_a_threshold_of_50() {
    // ASG user guide: PercentChangeInCapacity, scale-out [0,10)→0, [10,20)→+10, [20,∞)→+30;
    // scale-in (−10,0]→0, (−20,−10]→−10, (−∞,−20]→−30.
    let out = [
        (Some(0.0), Some(10.0), 0),
        (Some(10.0), Some(20.0), 10),
        (Some(20.0), None, 30),
    ];
    let r#in = [
        (None, Some(-20.0), -30),
        (Some(-20.0), Some(-10.0), -10),
        (Some(-10.0), Some(0.0), 0),
    ];
    let percent = AdjustmentType::Percent;
    let mut state = given_group(0, 100, 10);
    for (policy, metric, expected) in [
        (&out[..], 60.0, 11),
        (&out[..], 70.0, 14),
        (&r#in[..], 40.0, 13),
        (&r#in[..], 30.0, 10),
    ] {
        let (after, events) = when(
            state,
            step_execution(percent, policy, None, Some(metric)),
            T0,
        );
        assert_eq!(capacity(&after), expected, "metric {metric}: {events:?}");
        // No cooldown: the next one executes at the same instant.
        assert!(
            matches!(
                outcome_of(&events),
                Outcome::Executed {
                    cooldown_until: None,
                    ..
                }
            ),
            "{events:?}"
        );
        state = after;
    }
    // The step chosen for a metric (threshold 50): the bounds' inclusivity (60 is in [10, 20)
    // above the threshold, 40 in (−20, −10] below); exactly at the threshold, a step starting
    // there if there is one, else one ending there, as AWS's bounds give both the threshold;
    // and none for a breach no step covers, which changes nothing and says so.
    for (steps, metric, chosen) in [
        (&out[..], 59.999, Some(0)),
        (&r#in[..], 40.0, Some(1)),
        (&out[..], 50.0, Some(0)),
        (&r#in[..], 50.0, Some(2)),
        (&out[..], 45.0, None),
    ] {
        let (_, events) = when(
            state.clone(),
            step_execution(percent, steps, None, Some(metric)),
            T0,
        );
        let GroupEvent::PolicyExecuted { step, outcome, .. } = &events[0] else {
            panic!("{events:?}");
        };
        assert_eq!(*step, chosen, "metric {metric}");
        if chosen.is_none() {
            assert!(matches!(outcome, Outcome::NoChange { .. }), "{outcome:?}");
        }
    }
    // Without a breach there is no step to choose.
    assert_eq!(
        decide(&state, &step_execution(percent, &out, None, None), T0),
        Err(Rejection::MetricValueRequired)
    );
}

#[test]
fn a_step_scale_out_during_its_warm_up_adds_only_what_exceeds_the_capacity_warming_up() {
    // Application Auto Scaling's example: +2, then within the warm-up a step of +3 adds 1.
    let steps = [(Some(0.0), Some(10.0), 2), (Some(10.0), None, 3)];
    let change = AdjustmentType::Change;
    let (state, _) = when(
        given_group(0, 100, 4),
        step_execution(change, &steps, Some(300), Some(55.0)),
        T0,
    );
    assert_eq!(capacity(&state), 6);
    let later = T0.plus_secs(60u32);
    let (state, events) = when(
        state,
        step_execution(change, &steps, Some(300), Some(65.0)),
        later,
    );
    assert_eq!(capacity(&state), 7);
    let GroupEvent::PolicyExecuted { computation, .. } = &events[0] else {
        panic!()
    };
    assert!(
        computation.constraints.contains(&Constraint::WarmingUp {
            warming: 2,
            delta_before: 3
        }),
        "{computation:?}"
    );
    // A breach in the first step again, still warming up: nothing more.
    let (state, events) = when(
        state,
        step_execution(change, &steps, Some(300), Some(55.0)),
        later,
    );
    assert_eq!(outcome_of(&events), &Outcome::NoChange { capacity: 7 });
    // Once warm, a step adds its whole adjustment.
    let warm = T0.plus_secs(400u32);
    let (state, _) = when(
        state,
        step_execution(change, &steps, Some(300), Some(55.0)),
        warm,
    );
    assert_eq!(capacity(&state), 9);
}

#[test]
fn pausing_a_paused_group_records_nothing() {
    let (paused, _) = when(given_group(1, 10, 2), GroupCommand::Pause(Pause::BOTH), T0);
    assert_eq!(
        decide(&paused, &GroupCommand::Pause(Pause::BOTH), T0),
        Ok(vec![])
    );
    assert_eq!(
        decide(&given_group(1, 10, 2), &GroupCommand::Resume, T0),
        Ok(vec![])
    );
}

#[test]
fn the_computation_explains_a_clamped_execution() {
    let (_, events) = when(given_group(1, 4, 3), change(5, None), T0);
    let GroupEvent::PolicyExecuted { computation, .. } = &events[0] else {
        panic!("expected policy_executed");
    };
    assert_eq!(computation.raw, 8);
    assert_eq!(
        computation.constraints,
        vec![Constraint::ClampedToMax { max_size: 4 }]
    );
}

#[test]
fn lowering_max_size_below_capacity_clamps_it_without_cooldown() {
    let patch = GroupPatch {
        max_size: Some(3),
        ..GroupPatch::default()
    };
    let (state, events) = when(given_group(1, 10, 6), GroupCommand::Update(patch), T0);
    assert_eq!(events.len(), 2);
    assert!(matches!(
        &events[1],
        GroupEvent::CapacityChanged {
            from: 6,
            to: 3,
            cause: Cause::Bounds,
            ..
        }
    ));
    let group = state.unwrap();
    assert_eq!((group.max_size, group.desired_capacity), (3, 3));
    assert_eq!(group.cooldown_until, None);
}

#[test]
fn raising_min_size_above_capacity_raises_it_and_a_policy_may_run_at_once() {
    let patch = GroupPatch {
        min_size: Some(4),
        ..GroupPatch::default()
    };
    let (state, _) = when(given_group(1, 10, 2), GroupCommand::Update(patch), T0);
    assert_eq!(capacity(&state), 4);
    let (state, _) = when(state, change(1, None), T0);
    assert_eq!(capacity(&state), 5);
}

#[test]
fn an_update_that_changes_nothing_records_nothing() {
    let patch = GroupPatch {
        min_size: Some(1),
        ..GroupPatch::default()
    };
    assert_eq!(
        decide(&given_group(1, 10, 2), &GroupCommand::Update(patch), T0),
        Ok(vec![])
    );
}

#[test]
fn an_update_is_validated_against_the_merged_configuration() {
    let patch = GroupPatch {
        min_size: Some(11),
        ..GroupPatch::default()
    };
    let rejection = decide(&given_group(1, 10, 2), &GroupCommand::Update(patch), T0).unwrap_err();
    assert!(matches!(
        rejection,
        Rejection::Invalid {
            field: "min_size",
            ..
        }
    ));
    let patch = GroupPatch {
        launch: Some(json!({"provider": "nope"})),
        ..GroupPatch::default()
    };
    let rejection = decide(&given_group(1, 10, 2), &GroupCommand::Update(patch), T0).unwrap_err();
    assert!(matches!(
        rejection,
        Rejection::Invalid {
            field: "launch.provider",
            ..
        }
    ));
}

#[test]
fn setting_the_desired_capacity_must_stay_within_bounds_and_starts_no_cooldown() {
    let state = given_group(1, 10, 2);
    let rejection = decide(
        &state,
        &GroupCommand::SetDesired {
            desired_capacity: 11,
        },
        T0,
    )
    .unwrap_err();
    assert!(matches!(
        rejection,
        Rejection::Invalid {
            field: "desired_capacity",
            ..
        }
    ));
    let (state, _) = when(
        state,
        GroupCommand::SetDesired {
            desired_capacity: 7,
        },
        T0,
    );
    let group = state.unwrap();
    assert_eq!((group.desired_capacity, group.cooldown_until), (7, None));
}

#[test]
fn a_policy_executed_event_serializes_with_its_outcome_inline() {
    let (_, events) = when(given_group(1, 10, 2), change(1, Some(60)), T0);
    let json = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(json["type"], "policy_executed");
    assert_eq!(json["outcome"], "executed");
    assert_eq!(json["from"], 2);
    assert_eq!(json["to"], 3);
    assert_eq!(json["cause"], json!({"type": "direct"}));
    assert_eq!(json["at"], T0.as_millis());
    assert_eq!(events[0].kind(), "policy_executed");
    let back: GroupEvent = serde_json::from_value(json).unwrap();
    assert_eq!(back, events[0]);
}

#[test]
fn a_cooldown_outcome_serializes_its_retry_after() {
    let outcome = Outcome::Cooldown {
        retry_after_seconds: 7,
    };
    assert_eq!(
        serde_json::to_value(outcome).unwrap(),
        json!({"outcome": "cooldown", "retry_after_seconds": 7})
    );
    assert_eq!(
        serde_json::to_value(Outcome::Paused).unwrap(),
        json!({"outcome": "paused"})
    );
    assert_eq!(
        serde_json::to_value(Outcome::NoChange { capacity: 3 }).unwrap(),
        json!({"outcome": "no_change", "capacity": 3})
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn launch() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"provider": "simulated"})),
            Just(json!({"provider": "process", "command": ["sleep", "60"]})),
            Just(json!({"provider": "teleport"})),
        ]
    }

    fn adjustment() -> impl Strategy<Value = Adjustment> {
        (
            prop_oneof![
                Just(AdjustmentType::Change),
                Just(AdjustmentType::Percent),
                Just(AdjustmentType::Exact)
            ],
            -150i64..150,
            proptest::option::of(1u32..4),
        )
            .prop_map(|(kind, value, min_adjustment_step)| Adjustment {
                kind,
                value,
                min_adjustment_step,
            })
    }

    fn cause() -> impl Strategy<Value = Cause> {
        prop_oneof![
            Just(Cause::Direct),
            Just(Cause::Schedule { schedule_id: None }),
            Just(Cause::Webhook {
                webhook_id: "whk_1".into()
            }),
            Just(Cause::Alarm {
                alarm_id: "alm_1".into(),
                reason: "cpu > 0.8".into()
            }),
        ]
    }

    fn command() -> impl Strategy<Value = GroupCommand> {
        prop_oneof![
            1 => (0u32..6, 0u32..12, proptest::option::of(0u32..12), proptest::option::of(0u32..5), launch())
                .prop_map(|(min_size, max_size, desired, cooldown, launch)| {
                    GroupCommand::Create(NewGroup { cooldown_seconds: cooldown, launch, ..new_group(min_size, max_size, desired) })
                }),
            2 => (proptest::option::of(0u32..6), proptest::option::of(0u32..12), proptest::option::of(0u32..5), proptest::option::of(launch()))
                .prop_map(|(min_size, max_size, cooldown_seconds, launch)| {
                    GroupCommand::Update(GroupPatch { min_size, max_size, cooldown_seconds, launch, ..GroupPatch::default() })
                }),
            1 => (0u32..12).prop_map(|desired_capacity| GroupCommand::SetDesired { desired_capacity }),
            1 => (any::<bool>(), any::<bool>()).prop_map(|(scale_in, scale_out)| GroupCommand::Pause(Pause { scale_in, scale_out })),
            1 => Just(GroupCommand::Resume),
            1 => Just(GroupCommand::Delete),
            16 => (adjustment(), proptest::option::of(0u32..4), cause()).prop_map(|(adjustment, cooldown_seconds, cause)| {
                execute(adjustment, cooldown_seconds, cause)
            }),
        ]
    }

    proptest! {
        #[test]
        fn live_state_equals_the_replay_of_its_events_across_restarts_and_json(
            steps in proptest::collection::vec((0i64..3_000, proptest::bool::weighted(0.1), command()), 1..60)
        ) {
            let mut now = T0;
            let mut live: GroupState = None;
            let mut journal: Vec<GroupEvent> = Vec::new();
            for (advance, restart, cmd) in steps {
                now = now.plus_millis(advance);
                if restart {
                    // A restart rebuilds the state from the journal alone.
                    live = replay(&journal);
                }
                let Ok(events) = decide(&live, &cmd, now) else { continue };
                for event in events {
                    live = apply(live, &event);
                    journal.push(event);
                }
                if let Some(group) = live.as_ref().filter(|g| !g.deleted) {
                    prop_assert!(group.min_size <= group.desired_capacity);
                    prop_assert!(group.desired_capacity <= group.max_size);
                }
            }
            prop_assert_eq!(&replay(&journal), &live);
            let lines: Vec<String> = journal.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
            let decoded: Vec<GroupEvent> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
            prop_assert_eq!(&decoded, &journal);
            prop_assert_eq!(replay(&decoded), live);
        }
    }
}

fn when_ok(state: GroupState, command: GroupCommand) -> GroupState {
    let events = decide(&state, &command, T0).unwrap();
    events.iter().fold(state, apply)
}

fn launch(ids: &[&str]) -> GroupCommand {
    GroupCommand::LaunchServers(
        ids.iter()
            .map(|id| LaunchRequest {
                server_id: (*id).into(),
                metrics_token_hash: format!("hash-{id}"),
            })
            .collect(),
    )
}

fn report(reports: Vec<ServerReport>) -> GroupCommand {
    GroupCommand::ReportServers(reports)
}

fn launched(id: &str) -> ServerReport {
    ServerReport::Launched {
        server_id: id.into(),
        provider: json!({"pid": 7}),
    }
}

fn server_state(state: &GroupState, id: &str) -> Option<ServerState> {
    state.as_ref().unwrap().servers.get(id).map(|s| s.state)
}

#[test]
fn launches_and_what_the_provider_did_need_the_lease_but_deletions_alone_do_not() {
    let group = given_group(0, 5, 2);
    let owners = |command: &GroupCommand| leased_by("grp_1", &group, command);
    assert_eq!(owners(&launch(&["a"])), Some("grp_1".to_owned()));
    assert_eq!(
        owners(&report(vec![launched("a")])),
        Some("grp_1".to_owned())
    );
    let deleted = || ServerReport::Deleted {
        server_id: "a".into(),
    };
    assert_eq!(
        owners(&report(vec![deleted(), launched("b")])),
        Some("grp_1".to_owned())
    );
    assert_eq!(owners(&report(vec![deleted()])), None);
    assert_eq!(owners(&GroupCommand::Drain), None);
}

#[test]
fn launches_beyond_the_desired_capacity_record_nothing() {
    let (state, events) = when(given_group(0, 5, 2), launch(&["a", "b", "c"]), T0);
    assert_eq!(events.len(), 2);
    assert_eq!(server_state(&state, "a"), Some(ServerState::Pending));
    assert_eq!(server_state(&state, "c"), None);
}

#[test]
fn a_launched_server_becomes_active_only_once_it_has_a_handle() {
    let (state, _) = when(given_group(0, 5, 1), launch(&["a"]), T0);
    let active = ServerReport::Active {
        server_id: "a".into(),
    };
    let (state, events) = when(state, report(vec![active.clone()]), T0);
    assert!(events.is_empty(), "no handle yet: {events:?}");
    let (state, _) = when(state, report(vec![launched("a"), active]), T0);
    let server = &state.as_ref().unwrap().servers["a"];
    assert_eq!(server.state, ServerState::Active);
    assert_eq!(server.provider.value(), json!({"pid": 7}));
    assert_eq!(state.unwrap().count(ServerState::Active), 1);
}

#[test]
fn a_failed_slot_is_launched_again_only_after_its_backoff() {
    let (state, _) = when(given_group(0, 5, 1), launch(&["a"]), T0);
    let failed = ServerReport::Failed {
        server_id: "a".into(),
        reason: "no such file".into(),
    };
    let (state, _) = when(state, report(vec![failed.clone()]), T0);
    assert_eq!(server_state(&state, "a"), Some(ServerState::Failed));
    let (state, events) = when(state, launch(&["a"]), T0.plus_millis(999));
    assert!(events.is_empty());
    let (state, events) = when(state, launch(&["a"]), T0.plus_secs(1u32));
    assert_eq!(events.len(), 1);
    let (state, _) = when(state, report(vec![failed]), T0.plus_secs(1u32));
    let (_, events) = when(state, launch(&["a"]), T0.plus_secs(2u32));
    assert!(events.is_empty(), "the second failure waits 2 s");
}

#[test]
fn failures_never_lower_the_desired_capacity_below_min_size() {
    let (state, _) = when(given_group(2, 5, 2), launch(&["a", "b"]), T0);
    let failed = |id: &str| ServerReport::Failed {
        server_id: id.into(),
        reason: "exited".into(),
    };
    let (state, _) = when(state, report(vec![failed("a"), failed("b")]), T0);
    assert_eq!(capacity(&state), 2);
    let plan = crate::domain::server::plan(
        &state.as_ref().unwrap().servers,
        2,
        T0.plus_secs(1u32),
        &crate::domain::server::Sweep::ALL,
        None,
    );
    assert_eq!(plan.relaunch, vec!["a", "b"]);
}

#[test]
fn a_removal_deletes_no_more_servers_than_exceed_the_target_when_it_is_decided() {
    let (state, _) = when(given_group(0, 5, 3), launch(&["a", "b", "c"]), T0);
    // Planned when the target was 1; the target rose to 2 before the removal was decided.
    let (state, _) = when(
        state,
        GroupCommand::SetDesired {
            desired_capacity: 2,
        },
        T0,
    );
    let planned = GroupCommand::DeleteServers(vec!["a".into(), "b".into()]);
    let (state, events) = when(state, planned.clone(), T0);
    assert_eq!(events.len(), 1);
    assert_eq!(server_state(&state, "a"), Some(ServerState::Deleting));
    assert_eq!(server_state(&state, "b"), Some(ServerState::Pending));
    // Decided again, the same removal finds nothing in excess.
    assert_eq!(decide(&state, &planned, T0).unwrap(), vec![]);
}

#[test]
fn a_group_with_servers_is_deleted_only_after_draining_them() {
    let (state, _) = when(given_group(0, 5, 1), launch(&["a"]), T0);
    assert_eq!(
        decide(&state, &GroupCommand::Delete, T0)
            .unwrap_err()
            .status(),
        409
    );
    // Before it drains, the same occurrence and execution would move its capacity.
    let ran = decide(&state, &run_schedule(Some(4), Some(3)), T0).unwrap();
    assert!(
        matches!(
            ran.as_slice(),
            [GroupEvent::ScheduleRan {
                outcome: Outcome::Executed { from: 1, to: 3, .. },
                refused: None,
                ..
            }]
        ),
        "{ran:?}"
    );
    let executed = decide(&state, &change(1, None), T0).unwrap();
    assert!(matches!(
        outcome_of(&executed),
        Outcome::Executed { to: 2, .. }
    ));
    let (state, _) = when(state, GroupCommand::Drain, T0);
    // A delete says it is under way, not to force it.
    let refused = decide(&state, &GroupCommand::Delete, T0).unwrap_err();
    assert!(
        refused.to_string().contains("is being deleted: 1 servers"),
        "{refused}"
    );
    let (state, events) = when(state, launch(&["b"]), T0);
    assert!(events.is_empty(), "nothing launches while draining");
    // Its capacity and pause no longer change; its launch still may.
    for change in [
        GroupCommand::SetDesired {
            desired_capacity: 3,
        },
        GroupCommand::Pause(Pause {
            scale_in: true,
            scale_out: true,
        }),
        GroupCommand::Resume,
        GroupCommand::Update(GroupPatch {
            max_size: Some(4),
            ..GroupPatch::default()
        }),
    ] {
        let refused = decide(&state, &change, T0).unwrap_err();
        assert_eq!(refused.status(), 409, "{change:?}");
    }
    // Nor do its policies execute, live or shadow: a conflict, recorded nowhere.
    for execution in [change(1, None), shadow_change(1)] {
        let refused = decide(&state, &execution, T0).unwrap_err();
        assert_eq!(refused.status(), 409, "{execution:?}");
    }
    // A scheduled action's occurrence is recorded as refused, and changes nothing.
    let (after, events) = when(state.clone(), run_schedule(Some(4), Some(3)), T0);
    match events.as_slice() {
        [GroupEvent::ScheduleRan {
            outcome, refused, ..
        }] => {
            assert_eq!(*outcome, Outcome::NoChange { capacity: 1 });
            assert_eq!(refused.as_deref(), Some("the group is being deleted"));
        }
        other => panic!("expected one schedule_ran, got {other:?}"),
    }
    assert_eq!(after, state);
    let group = state.as_ref().unwrap();
    let relaunch = GroupPatch {
        launch: Some(json!({"provider": "simulated"})),
        // The whole group sent back: its bounds as they are change nothing.
        min_size: Some(group.min_size),
        max_size: Some(group.max_size),
        ..GroupPatch::default()
    };
    assert!(decide(&state, &GroupCommand::Update(relaunch), T0).is_ok());
    let (state, _) = when(state, GroupCommand::DeleteServers(vec!["a".into()]), T0);
    assert_eq!(server_state(&state, "a"), Some(ServerState::Deleting));
    let deleted = ServerReport::Deleted {
        server_id: "a".into(),
    };
    let (state, _) = when(state, report(vec![deleted]), T0);
    let (state, _) = when(state, GroupCommand::Delete, T0);
    assert!(state.unwrap().deleted);
}

#[test]
fn server_events_replay_to_the_same_state_and_old_snapshots_still_decode() {
    let mut events = decide(&None, &GroupCommand::Create(new_group(0, 3, Some(2))), T0).unwrap();
    let mut state = replay(&events);
    for cmd in [launch(&["a", "b"]), report(vec![launched("a")])] {
        let more = decide(&state, &cmd, T0).unwrap();
        state = more.iter().fold(state, apply);
        events.extend(more);
    }
    assert_eq!(replay(&events), state);
    let mut old = serde_json::to_value(given_group(0, 3, 1)).unwrap();
    old.as_object_mut().unwrap().remove("servers");
    old.as_object_mut().unwrap().remove("draining");
    let decoded: GroupState = serde_json::from_value(old).unwrap();
    assert!(decoded.unwrap().servers.is_empty());
}

#[test]
fn a_group_with_servers_cannot_change_its_provider() {
    let mut group = given_group(0, 5, 1);
    group = when_ok(group, launch(&["srv_1"]));
    let patch = GroupPatch {
        launch: Some(serde_json::json!({"provider": "http", "url": "http://127.0.0.1:1"})),
        ..GroupPatch::default()
    };
    let refused = decide(&group, &GroupCommand::Update(patch.clone()), T0);
    assert!(
        matches!(refused, Err(Rejection::Conflict { .. })),
        "{refused:?}"
    );
    group.as_mut().unwrap().servers = Servers::new();
    assert!(decide(&group, &GroupCommand::Update(patch), T0).is_ok());
}

#[test]
fn metadata_or_launch_over_64_kib_of_json_is_413_naming_the_field_on_create_and_update() {
    use crate::domain::MAX_FIELD_JSON_BYTES;
    // A string that makes `{"k":"..."}` exactly `bytes` long.
    let map_of = |bytes: usize| {
        let mut map = Map::new();
        map.insert("k".into(), json!("x".repeat(bytes - 8)));
        map
    };
    assert_eq!(
        serde_json::to_vec(&map_of(MAX_FIELD_JSON_BYTES))
            .unwrap()
            .len(),
        MAX_FIELD_JSON_BYTES
    );
    let at_limit = NewGroup {
        metadata: Some(map_of(MAX_FIELD_JSON_BYTES)),
        ..new_group(0, 3, None)
    };
    assert!(decide(&None, &GroupCommand::Create(at_limit), T0).is_ok());
    let over = NewGroup {
        metadata: Some(map_of(MAX_FIELD_JSON_BYTES + 1)),
        ..new_group(0, 3, None)
    };
    let refused = decide(&None, &GroupCommand::Create(over), T0).unwrap_err();
    assert_eq!((refused.status(), refused.code()), (413, "too_large"));
    assert!(
        refused.to_string().starts_with("metadata is 65537 bytes"),
        "{refused}"
    );

    let group = given_group(0, 3, 0);
    let mut launch = json!({"provider": "simulated"});
    launch["seed"] = json!("x".repeat(MAX_FIELD_JSON_BYTES));
    let patch = GroupPatch {
        launch: Some(launch),
        ..GroupPatch::default()
    };
    let refused = decide(&group, &GroupCommand::Update(patch), T0).unwrap_err();
    assert_eq!(refused.status(), 413);
    assert!(refused.to_string().starts_with("launch is"), "{refused}");
}

#[test]
fn a_launch_names_the_change_it_answers_and_a_relaunch_says_it_replaces() {
    let group = given_group(0, 5, 0);
    let (group, _) = when(group, change(2, Some(0)), T0);
    let launch = |id: &str| LaunchRequest {
        server_id: id.into(),
        metrics_token_hash: String::new(),
    };
    let (group, events) = when(
        group,
        GroupCommand::LaunchServers(vec![launch("srv_a")]),
        T0,
    );
    let [GroupEvent::ServerLaunchRequested {
        because: Some(because),
        replacement: false,
        ..
    }] = events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert_eq!(
        (because.from, because.to, &because.cause),
        (0, 2, &Cause::Direct)
    );

    let failed = ServerReport::Failed {
        server_id: "srv_a".into(),
        reason: "exited".into(),
    };
    let (group, _) = when(group, GroupCommand::ReportServers(vec![failed]), T0);
    let later = T0.plus_secs(60u32);
    let (_, events) = when(
        group,
        GroupCommand::LaunchServers(vec![launch("srv_a")]),
        later,
    );
    assert!(
        matches!(
            events.as_slice(),
            [GroupEvent::ServerLaunchRequested {
                replacement: true,
                because: Some(_),
                ..
            }]
        ),
        "{events:?}"
    );
}
