//! A scheduled action (SPEC 2.2): at an instant, or at each occurrence of a cron recurrence in
//! a time zone, a group's bounds and desired capacity become the values given. When it runs is
//! decided by [`super::schedule`]'s rules; what a run does to the group is the group's business
//! ([`super::group::GroupCommand::RunSchedule`]). The schedule records each occurrence it ran
//! ([`ScheduledEvent::Ran`]) in the same append as the group's record of it, so an occurrence
//! runs exactly once, across a crash or a restart.

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::group::MAX_GROUP_SIZE;
use super::schedule::{self, Recurrence, When};
use super::{validate_renamed, DomainEvent, GroupId, Rejection, ScheduleId, TenantId};
use crate::clock::Timestamp;

/// The time zone of a recurrence that names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// A scheduled action's definition, the part a create sets and an update replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDefinition {
    /// 1 to 255 characters.
    pub name: String,
    /// A one-off action's instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// A recurring action's 5-field cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<String>,
    /// The IANA time zone the recurrence is read in.
    pub time_zone: String,
    /// No occurrence before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// No occurrence after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// The group's new lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u32>,
    /// The group's new upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u32>,
    /// The group's new desired capacity (clamped to the resulting bounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_capacity: Option<u32>,
}

impl ScheduleDefinition {
    /// When it runs. Fails (a 400 naming the field) for a bad cron expression or time zone.
    pub fn when(&self) -> Result<When, Rejection> {
        match (&self.at, &self.recurrence) {
            (Some(at), None) => Ok(When::At(*at)),
            (None, Some(expression)) => Ok(When::Recurring {
                recurrence: Box::new(Recurrence::parse(expression, &self.time_zone)?),
                start: self.start_time,
                end: self.end_time,
            }),
            (Some(_), Some(_)) => Err(Rejection::invalid(
                "at",
                "a schedule runs at an instant or on a recurrence, not both",
            )),
            (None, None) => Err(Rejection::invalid(
                "recurrence",
                "a schedule needs at or recurrence",
            )),
        }
    }
}

/// A scheduled action as its events built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    /// Its id.
    pub id: ScheduleId,
    /// The group it changes.
    pub group_id: GroupId,
    /// Its owner.
    pub tenant_id: TenantId,
    /// What it does, and when.
    #[serde(flatten)]
    pub definition: ScheduleDefinition,
    /// Whether it was deleted.
    pub deleted: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// Occurrences up to this instant are done with: the latest run, or its latest creation or
    /// change (an occurrence from before a change is not run for it).
    pub since: Timestamp,
    /// The latest occurrence run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Timestamp>,
}

impl Scheduled {
    /// The occurrence to run at `now`, if one is due (the latest not yet run).
    pub fn due(&self, now: Timestamp) -> Option<Timestamp> {
        self.definition.when().ok()?.due(self.since, now)
    }

    /// Its next occurrence after `now`.
    pub fn next_run(&self, now: Timestamp) -> Option<Timestamp> {
        self.definition.when().ok()?.next_run(now)
    }
}

/// A scheduled action's state: `None` until its `Created` event.
pub type ScheduledState = Option<Scheduled>;

/// A change to a scheduled action: each present field replaces the current one; `Some(None)`
/// clears an optional one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchedulePatch {
    /// A new name.
    pub name: Option<String>,
    /// A new instant, or `Some(None)` to clear it.
    pub at: Option<Option<Timestamp>>,
    /// A new recurrence, or `Some(None)` to clear it.
    pub recurrence: Option<Option<String>>,
    /// A new time zone.
    pub time_zone: Option<String>,
    /// A new start, or `Some(None)` to clear it.
    pub start_time: Option<Option<Timestamp>>,
    /// A new end, or `Some(None)` to clear it.
    pub end_time: Option<Option<Timestamp>>,
    /// A new lower bound, or `Some(None)` to clear it.
    pub min_size: Option<Option<u32>>,
    /// A new upper bound, or `Some(None)` to clear it.
    pub max_size: Option<Option<u32>>,
    /// A new desired capacity, or `Some(None)` to clear it.
    pub desired_capacity: Option<Option<u32>>,
}

/// What can be asked of a scheduled action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduledCommand {
    /// Create it.
    Create {
        /// The id, generated by the caller.
        id: ScheduleId,
        /// The group it changes (whose existence the caller checked).
        group_id: GroupId,
        /// The owner.
        tenant_id: TenantId,
        /// What it does, and when.
        definition: ScheduleDefinition,
    },
    /// Change it.
    Update(SchedulePatch),
    /// Delete it.
    Delete,
    /// Record that `occurrence` ran (refused as replayed once it, or a later one, has).
    Run {
        /// The occurrence.
        occurrence: Timestamp,
    },
}

/// What happened to a scheduled action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScheduledEvent {
    /// It was created.
    Created {
        /// Its id.
        id: ScheduleId,
        /// Its group.
        group_id: GroupId,
        /// Its owner.
        tenant_id: TenantId,
        /// What it does, and when.
        #[serde(flatten)]
        definition: ScheduleDefinition,
        /// When.
        at_time: Timestamp,
    },
    /// Its definition changed; the whole new definition.
    Updated {
        /// What it does now.
        #[serde(flatten)]
        definition: ScheduleDefinition,
        /// When.
        at_time: Timestamp,
    },
    /// It was deleted.
    Deleted {
        /// When.
        at_time: Timestamp,
    },
    /// An occurrence ran (the group's record of it is in the same append).
    Ran {
        /// The occurrence.
        occurrence: Timestamp,
        /// When it ran.
        at_time: Timestamp,
    },
}

impl DomainEvent for ScheduledEvent {
    const SCHEMA: u16 = 1;

    fn kind(&self) -> &'static str {
        match self {
            ScheduledEvent::Created { .. } => "created",
            ScheduledEvent::Updated { .. } => "updated",
            ScheduledEvent::Deleted { .. } => "deleted",
            ScheduledEvent::Ran { .. } => "ran",
        }
    }
}

/// Decides what a command does to a scheduled action at `now`. Holds every rule.
pub fn decide(
    state: &ScheduledState,
    cmd: &ScheduledCommand,
    now: Timestamp,
) -> Result<Vec<ScheduledEvent>, Rejection> {
    if let ScheduledCommand::Create {
        id,
        group_id,
        tenant_id,
        definition,
    } = cmd
    {
        if state.is_some() {
            return Err(Rejection::already_exists("schedule"));
        }
        validate(definition, Some(now), None)?;
        return Ok(vec![ScheduledEvent::Created {
            id: id.clone(),
            group_id: group_id.clone(),
            tenant_id: tenant_id.clone(),
            definition: definition.clone(),
            at_time: now,
        }]);
    }
    let scheduled = match state {
        Some(scheduled) if !scheduled.deleted => scheduled,
        _ => return Err(Rejection::not_found("schedule")),
    };
    match cmd {
        ScheduledCommand::Create { .. } => Err(Rejection::already_exists("schedule")),
        ScheduledCommand::Update(patch) => {
            let current = &scheduled.definition;
            let definition = ScheduleDefinition {
                name: patch.name.clone().unwrap_or_else(|| current.name.clone()),
                at: patch.at.unwrap_or(current.at),
                recurrence: patch
                    .recurrence
                    .clone()
                    .unwrap_or_else(|| current.recurrence.clone()),
                time_zone: patch
                    .time_zone
                    .clone()
                    .unwrap_or_else(|| current.time_zone.clone()),
                start_time: patch.start_time.unwrap_or(current.start_time),
                end_time: patch.end_time.unwrap_or(current.end_time),
                min_size: patch.min_size.unwrap_or(current.min_size),
                max_size: patch.max_size.unwrap_or(current.max_size),
                desired_capacity: patch.desired_capacity.unwrap_or(current.desired_capacity),
            };
            let mut definition = definition;
            if definition.recurrence.is_none() && patch.time_zone.is_none() {
                // Switching to a one-off: the recurrence's zone goes with it.
                definition.time_zone = DEFAULT_TIME_ZONE.to_owned();
            }
            if definition == *current {
                return Ok(vec![]);
            }
            let timing_changed = !same_timing(current, &definition);
            let new_timing = timing_changed.then_some(now);
            validate(&definition, new_timing, Some(&current.name))?;
            Ok(vec![ScheduledEvent::Updated {
                definition,
                at_time: now,
            }])
        }
        ScheduledCommand::Delete => Ok(vec![ScheduledEvent::Deleted { at_time: now }]),
        ScheduledCommand::Run { occurrence } if *occurrence <= scheduled.since => {
            Err(Rejection::Replayed)
        }
        ScheduledCommand::Run { occurrence } => Ok(vec![ScheduledEvent::Ran {
            occurrence: *occurrence,
            at_time: now,
        }]),
    }
}

/// A definition is valid: a name; exactly one of `at` and `recurrence` (5 fields, with a real
/// time zone, and a start before its end); at least one value to set, each a group size, and
/// the bounds in order. With `now` (a new time rule), `at` must be in the future and a
/// recurrence must have an occurrence left. A name replacing `current_name` unchanged is not
/// judged again.
fn validate(
    definition: &ScheduleDefinition,
    now: Option<Timestamp>,
    current_name: Option<&str>,
) -> Result<(), Rejection> {
    validate_renamed("name", &definition.name, current_name)?;
    // With a new time rule only: one an older build took stays until its rule changes.
    let times = [
        ("at", definition.at),
        ("start_time", definition.start_time),
        ("end_time", definition.end_time),
    ];
    for (field, at) in times.into_iter().filter(|_| now.is_some()) {
        if let Some(at) = at.filter(|at| !(schedule::EARLIEST..=schedule::LATEST).contains(at)) {
            return Err(Rejection::invalid(
                field,
                format!(
                    "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z, is {}",
                    rfc3339(at)
                ),
            ));
        }
    }
    let when = definition.when()?;
    if let Some(at) = definition.at {
        if now.is_some_and(|now| at <= now) {
            return Err(Rejection::invalid(
                "at",
                format!("must be in the future, is {}", rfc3339(at)),
            ));
        }
        let recurring = [
            (definition.time_zone != DEFAULT_TIME_ZONE, "time_zone"),
            (definition.start_time.is_some(), "start_time"),
            (definition.end_time.is_some(), "end_time"),
        ];
        if let Some((_, field)) = recurring.into_iter().find(|(set, _)| *set) {
            return Err(Rejection::invalid(field, "belongs to a recurring schedule"));
        }
    }
    if let (Some(start), Some(end)) = (definition.start_time, definition.end_time) {
        if start >= end {
            return Err(Rejection::invalid(
                "end_time",
                format!("must be after start_time ({})", rfc3339(start)),
            ));
        }
    }
    if let Some(now) = now.filter(|_| definition.recurrence.is_some()) {
        if when.next_run(now).is_none() {
            let field = if definition.end_time.is_some() {
                "end_time"
            } else {
                "recurrence"
            };
            return Err(Rejection::invalid(
                field,
                "the recurrence has no occurrence left",
            ));
        }
    }
    let values = [
        ("min_size", definition.min_size),
        ("max_size", definition.max_size),
        ("desired_capacity", definition.desired_capacity),
    ];
    if values.iter().all(|(_, value)| value.is_none()) {
        return Err(Rejection::invalid(
            "desired_capacity",
            "a schedule sets at least one of min_size, max_size and desired_capacity",
        ));
    }
    for (field, value) in values {
        if let Some(value) = value.filter(|v| *v > MAX_GROUP_SIZE) {
            return Err(Rejection::invalid(
                field,
                format!("must be at most {MAX_GROUP_SIZE}, is {value}"),
            ));
        }
    }
    if let (Some(min), Some(max)) = (definition.min_size, definition.max_size) {
        if min > max {
            return Err(Rejection::invalid(
                "min_size",
                format!("must be at most max_size ({max}), is {min}"),
            ));
        }
    }
    Ok(())
}

/// An instant as RFC 3339, for messages.
fn rfc3339(at: Timestamp) -> String {
    DateTime::from_timestamp_millis(at.as_millis())
        .map_or_else(|| at.as_millis().to_string(), |t| t.to_rfc3339())
}

/// Whether two definitions run at the same times.
fn same_timing(a: &ScheduleDefinition, b: &ScheduleDefinition) -> bool {
    (&a.at, &a.recurrence, &a.time_zone, a.start_time, a.end_time)
        == (&b.at, &b.recurrence, &b.time_zone, b.start_time, b.end_time)
}

/// Records what an event says. Holds no rules.
pub fn apply(state: ScheduledState, event: &ScheduledEvent) -> ScheduledState {
    if let ScheduledEvent::Created {
        id,
        group_id,
        tenant_id,
        definition,
        at_time,
    } = event
    {
        return Some(Scheduled {
            id: id.clone(),
            group_id: group_id.clone(),
            tenant_id: tenant_id.clone(),
            definition: definition.clone(),
            deleted: false,
            created_at: *at_time,
            since: *at_time,
            last_run: None,
        });
    }
    let mut scheduled = state?;
    match event {
        ScheduledEvent::Created { .. } => {}
        ScheduledEvent::Updated {
            definition,
            at_time,
        } => {
            // A new time rule starts from the change; a rename or new values keep the old one's
            // progress, so an occurrence due and not yet run still runs.
            if !same_timing(&scheduled.definition, definition) {
                scheduled.since = scheduled.since.max(*at_time);
            }
            scheduled.definition = definition.clone();
        }
        ScheduledEvent::Deleted { .. } => scheduled.deleted = true,
        ScheduledEvent::Ran { occurrence, .. } => {
            scheduled.since = scheduled.since.max(*occurrence);
            scheduled.last_run = Some(*occurrence);
        }
    }
    Some(scheduled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn at(offset_secs: u64, desired: u32) -> ScheduleDefinition {
        ScheduleDefinition {
            name: "morning".into(),
            at: Some(T0.plus_secs(offset_secs)),
            recurrence: None,
            time_zone: DEFAULT_TIME_ZONE.into(),
            start_time: None,
            end_time: None,
            min_size: None,
            max_size: None,
            desired_capacity: Some(desired),
        }
    }

    fn create(definition: ScheduleDefinition) -> ScheduledCommand {
        ScheduledCommand::Create {
            id: ScheduleId::new("sch_1"),
            group_id: GroupId::new("grp_1"),
            tenant_id: TenantId::new("ten_1"),
            definition,
        }
    }

    fn field(result: Result<Vec<ScheduledEvent>, Rejection>) -> &'static str {
        match result {
            Err(Rejection::Invalid { field, .. }) => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn an_occurrence_runs_once_and_a_missed_one_is_the_latest() {
        let events = decide(&None, &create(at(60, 5)), T0).unwrap();
        let state = events.iter().fold(None, apply);
        let scheduled = state.as_ref().unwrap();
        assert_eq!(scheduled.due(T0.plus_secs(59u64)), None);
        assert_eq!(scheduled.next_run(T0), Some(T0.plus_secs(60u64)));
        let occurrence = scheduled.due(T0.plus_secs(3600u64)).unwrap();
        assert_eq!(occurrence, T0.plus_secs(60u64));
        let run = ScheduledCommand::Run { occurrence };
        let events = decide(&state, &run, T0.plus_secs(3600u64)).unwrap();
        let state = events.iter().fold(state, apply);
        assert_eq!(decide(&state, &run, T0), Err(Rejection::Replayed));
        assert_eq!(state.as_ref().unwrap().due(T0.plus_secs(7200u64)), None);

        // Every hour on the hour, down for three hours: only the latest runs.
        let hourly = ScheduleDefinition {
            at: None,
            recurrence: Some("0 * * * *".into()),
            ..at(0, 5)
        };
        let state = decide(&None, &create(hourly), T0)
            .unwrap()
            .iter()
            .fold(None, apply);
        let later = T0.plus_secs((3 * 3600 + 120) as u64);
        let due = state.as_ref().unwrap().due(later).unwrap();
        assert_eq!(due.as_millis() % 3_600_000, 0);
        assert!(later.saturating_sub(due) < 3_600_000);
    }

    #[test]
    fn a_rename_keeps_a_due_occurrence_and_a_new_rule_starts_from_its_change() {
        let hourly = ScheduleDefinition {
            at: None,
            recurrence: Some("0 * * * *".into()),
            ..at(0, 5)
        };
        let state = decide(&None, &create(hourly), T0)
            .unwrap()
            .iter()
            .fold(None, apply);
        let hour = Timestamp::from_millis((T0.as_millis() / 3_600_000 + 1) * 3_600_000);
        let rename = SchedulePatch {
            name: Some("renamed".into()),
            ..SchedulePatch::default()
        };
        let later = hour.plus_millis(200);
        let renamed = decide(&state, &ScheduledCommand::Update(rename), later)
            .unwrap()
            .iter()
            .fold(state.clone(), apply);
        assert_eq!(renamed.as_ref().unwrap().due(later), Some(hour));
        let moved = SchedulePatch {
            recurrence: Some(Some("30 * * * *".into())),
            ..SchedulePatch::default()
        };
        let moved = decide(&state, &ScheduledCommand::Update(moved), later)
            .unwrap()
            .iter()
            .fold(state, apply);
        assert_eq!(moved.as_ref().unwrap().due(later), None);
    }

    #[test]
    fn a_recurrence_may_run_from_1970_to_the_last_instant_rfc_3339_can_write() {
        let edges = ScheduleDefinition {
            at: None,
            recurrence: Some("0 9 * * *".into()),
            start_time: Some(schedule::EARLIEST),
            end_time: Some(schedule::LATEST),
            ..at(60, 1)
        };
        assert!(decide(&None, &create(edges), T0).is_ok());
    }

    #[test]
    fn a_time_an_older_build_took_stays_until_the_rule_changes() {
        let hourly = ScheduleDefinition {
            at: None,
            recurrence: Some("0 * * * *".into()),
            start_time: Some(Timestamp::from_millis(-1000)),
            ..at(0, 5)
        };
        let created = ScheduledEvent::Created {
            id: ScheduleId::new("sch_1"),
            group_id: GroupId::new("grp_1"),
            tenant_id: TenantId::new("ten_1"),
            definition: hourly,
            at_time: T0,
        };
        let state = apply(None, &created);
        let rename = SchedulePatch {
            name: Some("renamed".into()),
            ..SchedulePatch::default()
        };
        assert!(decide(&state, &ScheduledCommand::Update(rename), T0).is_ok());
        let retimed = SchedulePatch {
            recurrence: Some(Some("30 * * * *".into())),
            ..SchedulePatch::default()
        };
        let refused = decide(&state, &ScheduledCommand::Update(retimed), T0);
        assert_eq!(field(refused), "start_time");
    }

    #[test]
    fn bad_schedules_name_their_field() {
        let cases = [
            (at(0, 1), "at"),
            (
                ScheduleDefinition {
                    recurrence: Some("0 9 * * *".into()),
                    ..at(60, 1)
                },
                "at",
            ),
            (
                ScheduleDefinition {
                    at: None,
                    ..at(60, 1)
                },
                "recurrence",
            ),
            (
                ScheduleDefinition {
                    at: None,
                    recurrence: Some("0 0 9 * * *".into()),
                    ..at(60, 1)
                },
                "recurrence",
            ),
            (
                ScheduleDefinition {
                    at: None,
                    recurrence: Some("0 9 * * *".into()),
                    time_zone: "Mars/Olympus".into(),
                    ..at(60, 1)
                },
                "time_zone",
            ),
            (
                ScheduleDefinition {
                    desired_capacity: None,
                    ..at(60, 1)
                },
                "desired_capacity",
            ),
            (
                ScheduleDefinition {
                    min_size: Some(5),
                    max_size: Some(2),
                    ..at(60, 1)
                },
                "min_size",
            ),
            (
                ScheduleDefinition {
                    time_zone: "Europe/Paris".into(),
                    ..at(60, 1)
                },
                "time_zone",
            ),
            // Past what RFC 3339 can write, or before 1970: every view of the schedule writes
            // its times, and an earlier build took them and could then write none of its views.
            (
                ScheduleDefinition {
                    at: Some(schedule::LATEST.plus_millis(1)),
                    ..at(60, 1)
                },
                "at",
            ),
            (
                ScheduleDefinition {
                    at: None,
                    recurrence: Some("0 9 * * *".into()),
                    start_time: Some(Timestamp::from_millis(-1000)),
                    ..at(60, 1)
                },
                "start_time",
            ),
            (
                ScheduleDefinition {
                    at: None,
                    recurrence: Some("0 9 * * *".into()),
                    end_time: Some(schedule::LATEST.plus_millis(1)),
                    ..at(60, 1)
                },
                "end_time",
            ),
        ];
        for (definition, expected) in cases {
            assert_eq!(
                field(decide(&None, &create(definition.clone()), T0)),
                expected,
                "{definition:?}"
            );
        }
    }
}
