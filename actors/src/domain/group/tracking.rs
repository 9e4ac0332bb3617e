//! Target tracking on a group (SPEC 2.1): at each closed period of a target-tracking policy's
//! metric, the group decides its capacity from every such policy's recommendation, with the
//! rules of [`crate::domain::tracking`], and journals the decision as a
//! [`GroupEvent::PolicyExecuted`] naming each policy's datapoint, recommendation and proposal.
//!
//! What the group remembers of each policy is a [`Track`]: its latest recommendation, since when
//! its periods are missing, and the recommendations of its stabilization window as
//! change-points. A period whose recommendation is the one before, and whose decision leaves
//! capacity where it is, changes none of that, so it records nothing: an idle group does not
//! grow its journal every period. Its decision is still made, and a later period (a window
//! running out, a fallback coming due) is decided from the same state.
//!
//! Live policies decide together (the largest proposal wins a scale-out; a scale-in needs them
//! all); a shadow policy decides alone and records [`Outcome::Shadow`].

use serde::{Deserialize, Serialize};

use super::execution::execution_outcome;
use super::{Group, GroupEvent, GroupState, Outcome};
use crate::clock::Timestamp;
use crate::domain::policy::{Mode, Policy, MAX_STABILIZATION_SECONDS};
use crate::domain::scaling::{self, Adjustment, AdjustmentType};
use crate::domain::tracking::{combine, recommend, stabilize, Recommendation};
use crate::domain::{Cause, PolicyId, Rejection};

/// A target-tracking policy's part in a [`super::GroupCommand::Track`]: the policy as the
/// evaluator holds it, and the period that closed for it, if one did.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    /// The policy.
    pub policy: Policy,
    /// The period that closed, if one did.
    pub period: Option<Period>,
}

/// A closed period of a policy's metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// When it closed.
    pub end: Timestamp,
    /// Its datapoint; none when it had no sample.
    pub datapoint: Option<f64>,
    /// Why it has none, when the evaluator knows (a query's empty result, say).
    pub note: Option<String>,
}

/// What a group remembers of one target-tracking policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// The end of the latest period recorded.
    pub period_end: Timestamp,
    /// Its recommendation.
    pub recommendation: Recommendation,
    /// The end of the first of the missing periods in a row that run up to now, if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_since: Option<Timestamp>,
    /// The recommended capacities of the last [`MAX_STABILIZATION_SECONDS`] as change-points
    /// (from when each held), oldest first: the last one before that too, still in force then.
    pub history: Vec<(Timestamp, Option<u32>)>,
}

/// One policy's part in a journaled decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackRecord {
    /// The policy.
    pub policy_id: PolicyId,
    /// The period that closed for it; none when its latest recommendation stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end: Option<Timestamp>,
    /// That period's datapoint; none when it had no sample (or none closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoint: Option<f64>,
    /// Missing periods in a row, this one included.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing: u32,
    /// Why this period is missing, when known (a query's reason, SPEC 5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the policy recommends.
    pub recommendation: Recommendation,
    /// What it proposes after its stabilization window; none when it holds.
    pub proposal: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One policy's part, with whether its recommendation changed.
struct Part {
    record: TrackRecord,
    changed: bool,
    mode: Mode,
}

/// Decides the periods that closed for a group's target-tracking policies (every such policy
/// of the group is in `tracked`, due or not): one decision of the live ones together, and one
/// of each due shadow one, each recorded if its capacity moves or a recommendation changed.
pub(super) fn decide_tracking(
    state: &GroupState,
    tracked: &[Tracked],
    now: Timestamp,
) -> Result<Vec<GroupEvent>, Rejection> {
    let group = match state {
        Some(group) if !group.deleted => group,
        _ => return Err(Rejection::not_found("group")),
    };
    if group.draining {
        return Ok(vec![]);
    }
    let parts: Vec<Part> = tracked
        .iter()
        .filter_map(|tracked| part(group, tracked, now))
        .collect();
    let mut events = Vec::new();
    let live: Vec<&Part> = parts.iter().filter(|p| p.mode == Mode::Live).collect();
    if live.iter().any(|p| p.record.period_end.is_some()) {
        let proposals: Vec<Option<u32>> = live.iter().map(|p| p.record.proposal).collect();
        let capacity = combine(group.desired_capacity, &proposals);
        let (computation, outcome) = decision(group, capacity, now);
        if matches!(outcome, Outcome::Executed { .. }) || live.iter().any(|p| p.changed) {
            // The policy whose proposal decided: the largest (the first of equals).
            let decider = live
                .iter()
                .filter(|p| p.record.proposal == Some(capacity))
                .chain(live.iter().filter(|p| p.record.period_end.is_some()))
                .next()
                .map(|p| p.record.policy_id.clone());
            events.push(GroupEvent::PolicyExecuted {
                policy_id: decider.unwrap_or_else(|| live[0].record.policy_id.clone()),
                cause: Cause::TargetTracking,
                outcome,
                computation,
                breach: None,
                step: None,
                warmup_until: None,
                tracking: live.iter().map(|p| p.record.clone()).collect(),
                at: now,
            });
        }
    }
    for shadow in parts.iter().filter(|p| p.mode == Mode::Shadow && p.changed) {
        let capacity = combine(group.desired_capacity, &[shadow.record.proposal]);
        let (computation, would) = decision(group, capacity, now);
        events.push(GroupEvent::PolicyExecuted {
            policy_id: shadow.record.policy_id.clone(),
            cause: Cause::TargetTracking,
            outcome: Outcome::Shadow {
                from: group.desired_capacity,
                to: computation.result,
                would: Box::new(would),
            },
            computation,
            breach: None,
            step: None,
            warmup_until: None,
            tracking: vec![shadow.record.clone()],
            at: now,
        });
    }
    Ok(events)
}

/// Whether the group's target tracking is at rest: every policy of `tracked` has a
/// recommendation from a datapoint, and proposes exactly it (no stabilization window holds a
/// scale-in back). Then a later period that recommends for each policy what it recommends now
/// decides the same at any time, and records nothing: a caller may skip sending it (as long as
/// the group and the policies stay as they are).
pub fn steady(group: &Group, tracked: &[Tracked], now: Timestamp) -> bool {
    tracked.iter().all(|tracked| {
        let at_rest = Tracked {
            policy: tracked.policy.clone(),
            period: None,
        };
        part(group, &at_rest, now).is_some_and(|part| {
            let record = part.record;
            !matches!(
                record.recommendation,
                Recommendation::Hold | Recommendation::Fallback { .. }
            ) && record.proposal == record.recommendation.capacity()
        })
    })
}

/// The computation and outcome of taking `group` to `capacity` (within its bounds): pause,
/// then whether capacity moves; no cooldown either way.
fn decision(group: &Group, capacity: u32, now: Timestamp) -> (scaling::Computation, Outcome) {
    let adjustment = Adjustment {
        kind: AdjustmentType::Exact,
        value: i64::from(capacity),
        min_adjustment_step: None,
    };
    let computation = scaling::compute(
        group.desired_capacity,
        adjustment,
        group.min_size,
        group.max_size,
    );
    let outcome = execution_outcome(group, &computation, None, now);
    (computation, outcome)
}

/// A policy's part in the decision at `now`: its recommendation for the period that closed (or
/// the latest, if none did), and its proposal. None for a policy that is not a live
/// target-tracking policy of this group.
fn part(group: &Group, tracked: &Tracked, now: Timestamp) -> Option<Part> {
    let policy = &tracked.policy;
    let settings = policy.definition.tracking.as_ref()?;
    if policy.deleted || policy.group_id != group.id {
        return None;
    }
    let current = group.desired_capacity;
    let track = group.tracks.get(&policy.id);
    // A period at or before the latest recorded one was decided already.
    let due = tracked
        .period
        .as_ref()
        .filter(|period| track.is_none_or(|t| period.end > t.period_end));
    let (record, changed, at) = match due {
        Some(period) => {
            let missing = match (period.datapoint, track.and_then(|t| t.missing_since)) {
                (Some(_), _) => 0,
                (None, None) => 1,
                (None, Some(since)) => {
                    let step = i64::from(settings.period_seconds.max(1)) * 1000;
                    let periods = period.end.saturating_sub(since) / step + 1;
                    u32::try_from(periods).unwrap_or(u32::MAX)
                }
            };
            let recommendation = recommend(&settings.target, current, period.datapoint, missing);
            let changed = track.is_none_or(|t| t.recommendation != recommendation);
            let record = TrackRecord {
                policy_id: policy.id.clone(),
                period_end: Some(period.end),
                datapoint: period.datapoint,
                missing,
                note: period.note.clone().filter(|_| period.datapoint.is_none()),
                recommendation,
                proposal: None,
            };
            (record, changed, period.end)
        }
        None => {
            let recommendation = track.map_or(Recommendation::Hold, |t| t.recommendation);
            let record = TrackRecord {
                policy_id: policy.id.clone(),
                period_end: None,
                datapoint: None,
                missing: 0,
                note: None,
                recommendation,
                proposal: None,
            };
            (record, false, now)
        }
    };
    let proposal = record.recommendation.capacity().map(|recommended| {
        let history = track.map_or(&[][..], |t| &t.history[..]);
        let mut window = window(history, at, settings.scale_in_stabilization_seconds);
        window.push(recommended);
        stabilize(current, recommended, &window, settings.disable_scale_in)
    });
    Some(Part {
        record: TrackRecord { proposal, ..record },
        changed,
        mode: policy.definition.mode,
    })
}

/// The recommended capacities of `history` in force during the `seconds` before `at`: the one
/// in force when the window opened, and every later one.
fn window(history: &[(Timestamp, Option<u32>)], at: Timestamp, seconds: u32) -> Vec<u32> {
    if seconds == 0 {
        return vec![];
    }
    let start = at.as_millis().saturating_sub(i64::from(seconds) * 1000);
    let inside = history.partition_point(|(t, _)| t.as_millis() <= start);
    history[inside.saturating_sub(1)..]
        .iter()
        .filter_map(|(_, capacity)| *capacity)
        .collect()
}

/// Records a decision's records into the group's tracks.
pub(super) fn apply_records(group: &mut Group, records: &[TrackRecord]) {
    for record in records {
        let Some(end) = record.period_end else {
            continue;
        };
        let track = group
            .tracks
            .entry(record.policy_id.clone())
            .or_insert_with(|| Track {
                period_end: end,
                recommendation: record.recommendation,
                missing_since: None,
                history: Vec::new(),
            });
        let capacity = record.recommendation.capacity();
        if track
            .history
            .last()
            .is_none_or(|(_, last)| *last != capacity)
        {
            track.history.push((end, capacity));
        }
        track.period_end = end;
        track.recommendation = record.recommendation;
        track.missing_since = match record.datapoint {
            Some(_) => None,
            None => track.missing_since.or(Some(end)),
        };
        // Keep what the longest window can read: the change-points after its start, and the
        // one in force at it.
        let start = end
            .as_millis()
            .saturating_sub(i64::from(MAX_STABILIZATION_SECONDS) * 1000);
        let inside = track
            .history
            .partition_point(|(t, _)| t.as_millis() <= start);
        track.history.drain(..inside.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::group::{apply, decide, replay, GroupCommand, NewGroup};
    use crate::domain::policy::{PolicyDefinition, Tracking};
    use crate::domain::tracking::{Target, TargetKind};
    use crate::domain::{GroupId, TenantId};
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp::from_secs(1_700_000_040);

    fn minute(n: i64) -> Timestamp {
        Timestamp::from_secs(1_700_000_040 + 60 * n)
    }

    fn group(min_size: u32, max_size: u32, desired: u32) -> (GroupState, Vec<GroupEvent>) {
        let new = NewGroup {
            id: GroupId::new("grp_1"),
            tenant_id: TenantId::new("ten_1"),
            name: "workers".into(),
            min_size,
            max_size,
            desired_capacity: Some(desired),
            cooldown_seconds: None,
            launch: serde_json::json!({"provider": "simulated"}),
            metadata: None,
            metrics_token_hash: String::new(),
        };
        let events = decide(&None, &GroupCommand::Create(new), T0).unwrap();
        (replay(&events), events)
    }

    fn policy(id: &str, tracking: Tracking) -> Policy {
        Policy {
            id: PolicyId::new(id),
            group_id: GroupId::new("grp_1"),
            tenant_id: TenantId::new("ten_1"),
            definition: PolicyDefinition::target_tracking(id, tracking),
            deleted: false,
            created_at: T0,
        }
    }

    fn cpu(target: f64, window: u32) -> Tracking {
        Tracking {
            scale_in_stabilization_seconds: window,
            ..Tracking::new("cpu", target)
        }
    }

    /// `policies` with the period that closed at `end`, each with its datapoint (None: not due).
    fn track(policies: &[(&Policy, Option<Option<f64>>)], end: Timestamp) -> GroupCommand {
        GroupCommand::Track(
            policies
                .iter()
                .map(|(policy, due)| Tracked {
                    policy: (*policy).clone(),
                    period: due.map(|datapoint| Period {
                        end,
                        datapoint,
                        note: None,
                    }),
                })
                .collect(),
        )
    }

    fn when(
        state: GroupState,
        cmd: &GroupCommand,
        now: Timestamp,
    ) -> (GroupState, Vec<GroupEvent>) {
        let events = decide(&state, cmd, now).unwrap();
        (events.iter().fold(state, apply), events)
    }

    fn capacity(state: &GroupState) -> u32 {
        state.as_ref().unwrap().desired_capacity
    }

    #[test]
    fn the_hpas_example_doubles_a_group_at_twice_its_target() {
        let (state, _) = group(1, 10, 2);
        let p = policy("pol_a", cpu(0.5, 300));
        let (state, events) = when(
            state,
            &track(&[(&p, Some(Some(0.9)))], minute(1)),
            minute(1),
        );
        assert_eq!(capacity(&state), 4);
        let GroupEvent::PolicyExecuted {
            outcome,
            tracking,
            cause,
            ..
        } = &events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!(*cause, Cause::TargetTracking);
        assert!(matches!(
            outcome,
            Outcome::Executed {
                from: 2,
                to: 4,
                cooldown_until: None
            }
        ));
        assert_eq!(tracking[0].datapoint, Some(0.9));
        assert_eq!(
            tracking[0].recommendation,
            Recommendation::Formula { capacity: 4 }
        );
    }

    #[test]
    fn scale_in_is_held_by_the_window_then_allowed_and_a_resent_period_does_nothing() {
        let (state, _) = group(1, 10, 6);
        let p = policy("pol_a", cpu(0.5, 120));
        // 0.5 on 6: within tolerance (6); then 0.25 on 6: 3, held by the 6 of the window.
        let (state, _) = when(
            state,
            &track(&[(&p, Some(Some(0.5)))], minute(1)),
            minute(1),
        );
        let (state, events) = when(
            state,
            &track(&[(&p, Some(Some(0.25)))], minute(2)),
            minute(2),
        );
        assert_eq!(capacity(&state), 6);
        assert_eq!(events.len(), 1, "the change of recommendation is recorded");
        // The same period again: decided already.
        let (state, events) = when(
            state,
            &track(&[(&p, Some(Some(0.1)))], minute(2)),
            minute(2),
        );
        assert!(events.is_empty());
        let (state, events) = when(
            state,
            &track(&[(&p, Some(Some(0.25)))], minute(3)),
            minute(3),
        );
        assert!(
            events.is_empty(),
            "an unchanged recommendation that moves nothing: {events:?}"
        );
        assert_eq!(capacity(&state), 6);
        // At minute 4 the 6 (from minute 1) has left the 120 s window.
        let (state, _) = when(
            state,
            &track(&[(&p, Some(Some(0.25)))], minute(4)),
            minute(4),
        );
        assert_eq!(capacity(&state), 3);
    }

    #[test]
    fn several_policies_scale_out_to_the_largest_and_in_only_when_all_agree() {
        let (state, _) = group(1, 20, 4);
        let a = policy("pol_a", cpu(0.5, 0));
        let b = policy(
            "pol_b",
            Tracking {
                target: Target {
                    kind: TargetKind::Total,
                    ..Tracking::new("queue", 100.0).target
                },
                scale_in_stabilization_seconds: 0,
                ..Tracking::new("queue", 100.0)
            },
        );
        // a: 0.75 on 4 → 6; b: 300 → 3. Out to 6, decided by a.
        let cmd = track(
            &[(&a, Some(Some(0.75))), (&b, Some(Some(300.0)))],
            minute(1),
        );
        let (state, events) = when(state, &cmd, minute(1));
        assert_eq!(capacity(&state), 6);
        let GroupEvent::PolicyExecuted {
            policy_id,
            tracking,
            ..
        } = &events[0]
        else {
            panic!();
        };
        assert_eq!(policy_id.as_str(), "pol_a");
        assert_eq!(tracking.len(), 2);
        // a: 0.25 on 6 → 3; b (not due) still proposes 3: both lower, in to 3.
        let cmd = track(&[(&a, Some(Some(0.25))), (&b, None)], minute(2));
        let (state, _) = when(state, &cmd, minute(2));
        assert_eq!(capacity(&state), 3);
        // b now asks 5, a 1: not all agree to go in, b wins out.
        let cmd = track(&[(&a, Some(Some(0.1))), (&b, Some(Some(500.0)))], minute(3));
        let (state, _) = when(state, &cmd, minute(3));
        assert_eq!(capacity(&state), 5);
        // A policy no longer in the command (deleted) holds nothing back.
        let cmd = track(&[(&a, Some(Some(0.1)))], minute(4));
        let (state, _) = when(state, &cmd, minute(4));
        assert_eq!(capacity(&state), 1);
    }

    #[test]
    fn disable_scale_in_never_lowers_capacity() {
        let (state, _) = group(1, 10, 5);
        let p = policy(
            "pol_a",
            Tracking {
                disable_scale_in: true,
                ..cpu(0.5, 0)
            },
        );
        let (state, _) = when(
            state,
            &track(&[(&p, Some(Some(0.1)))], minute(1)),
            minute(1),
        );
        assert_eq!(capacity(&state), 5);
        let (state, _) = when(
            state,
            &track(&[(&p, Some(Some(1.0)))], minute(2)),
            minute(2),
        );
        assert_eq!(capacity(&state), 10);
    }

    proptest! {
        #[test]
        fn tracking_stays_in_bounds_waits_out_its_window_and_replays_as_decided(
            (min, max) in (0u32..5).prop_flat_map(|min| (Just(min), min..12)),
            start in 0u32..12,
            window_minutes in 0i64..6,
            periods in proptest::collection::vec(
                (1i64..3, proptest::option::of(0.0f64..2.0)),
                1..40,
            ),
        ) {
            let start = start.clamp(min, max);
            let (mut state, mut journal) = group(min, max, start);
            let p = policy("pol_a", cpu(0.5, u32::try_from(window_minutes * 60).unwrap()));
            // Every period's recommendation, recorded or not: (minute, capacity).
            let mut recommended: Vec<(i64, u32)> = Vec::new();
            let mut at = 0;
            for (gap, datapoint) in periods {
                at += gap;
                let before = capacity(&state);
                if let Some(value) = datapoint {
                    let r = crate::domain::tracking::recommend(&p.definition.tracking.as_ref().unwrap().target, before, Some(value), 0);
                    recommended.push((at, r.capacity().unwrap()));
                }
                let (next, events) = when(state, &track(&[(&p, Some(datapoint))], minute(at)), minute(at));
                state = next;
                journal.extend(events);
                let after = capacity(&state);
                prop_assert!((min..=max).contains(&after), "{after} outside [{min}, {max}]");
                if after < before {
                    let highest = recommended
                        .iter()
                        .filter(|(m, _)| *m >= at - window_minutes)
                        .map(|(_, c)| *c)
                        .max()
                        .unwrap();
                    prop_assert!(after >= highest.min(before).max(min), "in to {after} below the window's {highest}");
                }
                prop_assert_eq!(&replay(&journal), &state);
            }
        }
    }
}
