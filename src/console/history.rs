//! A group's history for the console, folded from its journal stream with the domain's own
//! `apply`: its desired and active capacity and bounds over a range of time, the instants its
//! policies executed, and its decisions, each with the servers launched and deleted because of
//! it. Pure: the console reads the records, this decides what they show.
//!
//! A fold hands back where it stood at the start of each day it crossed ([`DayStart`]): the
//! console keeps those, and a later page folds from the one before its range instead of from
//! the stream's first record, so its cost follows the range it shows, not the group's age.

use std::collections::HashMap;

use flotilla_actors::domain::group::{apply, CapacityChange, GroupEvent, GroupState};
use flotilla_actors::domain::server::ServerState;
use serde::{Deserialize, Serialize};

/// One record of the group's stream.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Its journal sequence number.
    pub seq: u64,
    /// Its version in the group's stream.
    pub version: u64,
    /// When it was recorded (ms since the epoch).
    pub at_ms: i64,
    /// The event.
    pub event: GroupEvent,
}

/// The group's capacity from an instant on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// From when (ms since the epoch).
    pub at_ms: i64,
    /// Its desired capacity.
    pub desired: u32,
    /// Its servers running.
    pub active: u32,
    /// Its lower bound.
    pub min: u32,
    /// Its upper bound.
    pub max: u32,
}

/// A policy execution that changed (or, in shadow mode, would have changed) the capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// When.
    pub at_ms: i64,
    /// The capacity it led to (or would have).
    pub to: u32,
    /// Whether it was a shadow policy's, which changed nothing.
    pub shadow: bool,
    /// The policy.
    pub policy_id: String,
}

/// A decision about the group (an execution, a schedule, a direct change, a pause), with the
/// servers launched and deleted because of it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The decision's record.
    pub record: Recorded,
    /// Servers whose launch it asked for.
    pub launched: Vec<String>,
    /// Servers whose deletion it asked for.
    pub deleted: Vec<String>,
}

/// What the console shows of a group over `[from_ms, to_ms]`.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The range's start.
    pub from_ms: i64,
    /// The range's end.
    pub to_ms: i64,
    /// The capacity at the range's start (if the group existed), then at each change in it.
    pub points: Vec<Point>,
    /// The executions in the range, oldest first.
    pub markers: Vec<Marker>,
    /// The decisions in the range, newest first.
    pub entries: Vec<Entry>,
}

/// Whether `event` is a decision the timeline shows as an entry of its own: what servers do is
/// shown under the decision that asked for it, or, for a failure or a replacement, as its own.
fn is_entry(event: &GroupEvent) -> bool {
    match event {
        GroupEvent::ServerLaunchRequested {
            because,
            replacement,
            ..
        } => because.is_none() || *replacement,
        GroupEvent::ServerDeleteRequested { because, .. } => because.is_none(),
        GroupEvent::ServerLaunched { .. }
        | GroupEvent::ServerActive { .. }
        | GroupEvent::ServerDeleted { .. }
        | GroupEvent::MetricsTokenRotated { .. } => false,
        _ => true,
    }
}

/// The capacity change a decision made, as the servers' events name it.
fn change_of(event: &GroupEvent) -> Option<(i64, u32, u32)> {
    use flotilla_actors::domain::group::Outcome;
    match event {
        GroupEvent::PolicyExecuted {
            outcome: Outcome::Executed { from, to, .. },
            at,
            ..
        }
        | GroupEvent::ScheduleRan {
            outcome: Outcome::Executed { from, to, .. },
            at,
            ..
        }
        | GroupEvent::CapacityChanged { from, to, at, .. } => Some((at.as_millis(), *from, *to)),
        _ => None,
    }
}

fn key(change: &CapacityChange) -> (i64, u32, u32) {
    (change.at.as_millis(), change.from, change.to)
}

fn server_of(event: &GroupEvent) -> Option<&str> {
    match event {
        GroupEvent::ServerLaunchRequested { server_id, .. }
        | GroupEvent::ServerLaunched { server_id, .. }
        | GroupEvent::ServerActive { server_id, .. }
        | GroupEvent::ServerFailed { server_id, .. }
        | GroupEvent::ServerDeleteRequested { server_id, .. }
        | GroupEvent::ServerDeleted { server_id, .. }
        | GroupEvent::ServerDeleteFailed { server_id, .. } => Some(server_id),
        _ => None,
    }
}

fn is_active(state: &GroupState, server: &str) -> bool {
    state
        .as_ref()
        .and_then(|group| group.servers.get(server))
        .is_some_and(|s| s.state == ServerState::Active)
}

/// A day of the service clock, in ms.
pub const DAY_MS: i64 = 86_400_000;

/// Where a fold stood after one record of the stream: a later fold may start there instead of
/// at the stream's first record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The record's version in the stream.
    pub version: u64,
    /// The latest time a record up to it was recorded at (each writer stamps records with its
    /// own clock, so times may go back a little from one record to the next).
    pub at_ms: i64,
    /// The group as of it.
    pub state: GroupState,
    /// Its servers active then.
    pub active: u32,
}

/// Where a fold stood at the start of day `day` (days since the epoch): after the last record
/// before the first recorded on that day or later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayStart {
    /// The day.
    pub day: i64,
    /// The fold then.
    pub resume: Resume,
}

/// Folds the group's records, oldest first, into what the console shows of `[from_ms, to_ms]`.
/// The cost is one `apply` per record, and the active count is kept as it goes (never counted
/// over the servers), so a group of 10,000 servers costs what a small one does per record.
pub fn fold(records: impl IntoIterator<Item = Recorded>, from_ms: i64, to_ms: i64) -> History {
    fold_from(None, records, (from_ms, to_ms), i64::MAX).0
}

/// [`fold`] of `[from_ms, to_ms]` from `start` (the stream's first record when none), given the
/// records after it; answers with the history the start of each day from `first_day` on that
/// the fold went into or past, up to `to_ms`'s. A fold from a start before `from_ms` shows what
/// the whole fold shows.
pub fn fold_from(
    start: Option<Resume>,
    records: impl IntoIterator<Item = Recorded>,
    (from_ms, to_ms): (i64, i64),
    first_day: i64,
) -> (History, Vec<DayStart>) {
    let mut history = History {
        from_ms,
        to_ms,
        ..History::default()
    };
    let mut days = Vec::new();
    let mut state: GroupState = None;
    let mut active: u32 = 0;
    let mut before: Option<Point> = None;
    // The latest time of a record folded, and the last one's version.
    let mut last: Option<(i64, u64)> = None;
    // Where the fold stands is the start of each day after the latest time's, to `day`'s.
    let into =
        |days: &mut Vec<DayStart>, last: (i64, u64), day: i64, state: &GroupState, active| {
            if state.is_none() {
                return;
            }
            for day in (last.0.div_euclid(DAY_MS) + 1).max(first_day)..=day {
                days.push(DayStart {
                    day,
                    resume: Resume {
                        version: last.1,
                        at_ms: last.0,
                        state: state.clone(),
                        active,
                    },
                });
            }
        };
    if let Some(start) = start {
        if let Some(group) = &start.state {
            before = Some(Point {
                at_ms: from_ms,
                desired: group.desired_capacity,
                active: start.active,
                min: group.min_size,
                max: group.max_size,
            });
        }
        (state, active, last) = (
            start.state,
            start.active,
            Some((start.at_ms, start.version)),
        );
    }
    // The entries in the range by the capacity change they made, for their servers.
    let mut by_change: HashMap<(i64, u32, u32), usize> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    for record in records {
        if record.at_ms > to_ms {
            break;
        }
        if let Some(last) = last {
            into(
                &mut days,
                last,
                record.at_ms.div_euclid(DAY_MS),
                &state,
                active,
            );
        }
        last = Some((
            last.map_or(record.at_ms, |(latest, _)| latest.max(record.at_ms)),
            record.version,
        ));
        let touched = server_of(&record.event).map(str::to_owned);
        let was = touched.as_deref().is_some_and(|s| is_active(&state, s));
        state = apply(state, &record.event);
        let now = touched.as_deref().is_some_and(|s| is_active(&state, s));
        match (was, now) {
            (false, true) => active += 1,
            (true, false) => active = active.saturating_sub(1),
            _ => {}
        }
        let Some(group) = &state else { continue };
        let point = Point {
            at_ms: record.at_ms.max(from_ms),
            desired: group.desired_capacity,
            active,
            min: group.min_size,
            max: group.max_size,
        };
        if record.at_ms < from_ms {
            before = Some(point);
            continue;
        }
        if let Some(start) = before.take() {
            history.points.push(Point {
                at_ms: from_ms,
                ..start
            });
        }
        let same = |last: &Point| {
            (last.desired, last.active, last.min, last.max)
                == (point.desired, point.active, point.min, point.max)
        };
        match history.points.last_mut() {
            Some(last) if same(last) => {}
            Some(last) if last.at_ms == point.at_ms => *last = point,
            _ => history.points.push(point),
        }
        marker(&record, &mut history.markers);
        // The servers a decision in the range asked for.
        match &record.event {
            GroupEvent::ServerLaunchRequested {
                server_id,
                because: Some(change),
                replacement: false,
                ..
            } => {
                if let Some(&i) = by_change.get(&key(change)) {
                    entries[i].launched.push(server_id.clone());
                }
            }
            GroupEvent::ServerDeleteRequested {
                server_id,
                because: Some(change),
                ..
            } => {
                if let Some(&i) = by_change.get(&key(change)) {
                    entries[i].deleted.push(server_id.clone());
                }
            }
            _ => {}
        }
        if is_entry(&record.event) {
            if let Some(change) = change_of(&record.event) {
                by_change.insert(change, entries.len());
            }
            entries.push(Entry {
                record,
                launched: Vec::new(),
                deleted: Vec::new(),
            });
        }
    }
    // The days after the last record folded, to `to_ms`'s, start where the fold stands (a
    // later record is after `to_ms`): a quiet group's next page need not fold its past again.
    if let Some(last) = last {
        into(&mut days, last, to_ms.div_euclid(DAY_MS), &state, active);
    }
    // A group whose last change came before the range stood as it was all along.
    if let Some(start) = before {
        history.points.push(Point {
            at_ms: from_ms,
            ..start
        });
    }
    entries.reverse();
    history.entries = entries;
    (history, days)
}

fn marker(record: &Recorded, markers: &mut Vec<Marker>) {
    use flotilla_actors::domain::group::Outcome;
    let GroupEvent::PolicyExecuted {
        policy_id, outcome, ..
    } = &record.event
    else {
        return;
    };
    let (to, shadow) = match outcome {
        Outcome::Executed { to, .. } => (*to, false),
        Outcome::Shadow { to, .. } => (*to, true),
        _ => return,
    };
    markers.push(Marker {
        at_ms: record.at_ms,
        to,
        shadow,
        policy_id: policy_id.as_str().to_owned(),
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flotilla_actors::clock::Timestamp;
    use flotilla_actors::domain::group::Outcome;
    use flotilla_actors::domain::scaling::{Adjustment, AdjustmentType, Computation};
    use flotilla_actors::domain::{Cause, GroupId, PolicyId, TenantId, WebhookId};
    use serde_json::json;

    const T0: i64 = 1_795_000_000_000;

    struct Stream {
        records: Vec<Recorded>,
    }

    impl Stream {
        fn at(&mut self, at_ms: i64, event: GroupEvent) -> &mut Self {
            let version = self.records.len() as u64 + 1;
            self.records.push(Recorded {
                seq: version * 10,
                version,
                at_ms,
                event,
            });
            self
        }
    }

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// Group grp_1 of tenant ten_1, 0 to 10 servers, made at `at` with `desired`.
    pub(crate) fn created(at: i64, desired: u32) -> GroupEvent {
        GroupEvent::Created {
            id: GroupId::new("grp_1"),
            tenant_id: TenantId::new("ten_1"),
            name: "web".into(),
            min_size: 0,
            max_size: 10,
            desired_capacity: desired,
            cooldown_seconds: 0,
            launch: json!({"provider": "simulated"}),
            metadata: serde_json::Map::new(),
            metrics_token_hash: String::new(),
            at: ts(at),
        }
    }

    fn executed(at: i64, from: u32, to: u32, shadow: bool) -> GroupEvent {
        let outcome = if shadow {
            Outcome::Shadow {
                from,
                to,
                would: Box::new(Outcome::Executed {
                    from,
                    to,
                    cooldown_until: None,
                }),
            }
        } else {
            Outcome::Executed {
                from,
                to,
                cooldown_until: None,
            }
        };
        GroupEvent::PolicyExecuted {
            policy_id: PolicyId::new("pol_1"),
            cause: Cause::Webhook {
                webhook_id: WebhookId::new("wh_1"),
            },
            outcome,
            computation: Computation {
                current: from,
                adjustment: Adjustment {
                    kind: AdjustmentType::Change,
                    value: i64::from(to) - i64::from(from),
                    min_adjustment_step: None,
                },
                raw: i64::from(to),
                constraints: Vec::new(),
                result: to,
            },
            breach: None,
            step: None,
            warmup_until: None,
            tracking: Vec::new(),
            at: ts(at),
        }
    }

    fn launch(at: i64, id: &str, because: Option<(i64, u32, u32)>) -> GroupEvent {
        GroupEvent::ServerLaunchRequested {
            server_id: id.into(),
            metrics_token_hash: String::new(),
            at: ts(at),
            because: because.map(|(at, from, to)| CapacityChange {
                from,
                to,
                cause: Cause::Webhook {
                    webhook_id: WebhookId::new("wh_1"),
                },
                at: ts(at),
            }),
            replacement: false,
        }
    }

    fn active(at: i64, id: &str) -> GroupEvent {
        GroupEvent::ServerActive {
            server_id: id.into(),
            at: ts(at),
        }
    }

    #[test]
    fn the_capacity_before_the_range_starts_the_plot_and_each_change_in_it_adds_a_point() {
        let mut stream = Stream {
            records: Vec::new(),
        };
        // Given a group made with 1 before the range, and a webhook's +1 in it, whose server
        // comes up a little later...
        stream
            .at(T0, created(T0, 1))
            .at(T0 + 10, launch(T0 + 10, "srv_a", Some((T0, 0, 1))))
            .at(T0 + 20, active(T0 + 20, "srv_a"))
            .at(T0 + 1_000, executed(T0 + 1_000, 1, 2, false))
            .at(
                T0 + 1_010,
                launch(T0 + 1_010, "srv_b", Some((T0 + 1_000, 1, 2))),
            )
            .at(T0 + 1_500, active(T0 + 1_500, "srv_b"))
            .at(T0 + 2_000, executed(T0 + 2_000, 2, 5, true));
        // ...when the range starts between them...
        let history = fold(stream.records, T0 + 500, T0 + 3_000);
        // ...the plot starts at the range's start with what stood then, and moves at each change.
        let points: Vec<(i64, u32, u32)> = history
            .points
            .iter()
            .map(|p| (p.at_ms - T0, p.desired, p.active))
            .collect();
        assert_eq!(points, [(500, 1, 1), (1_000, 2, 1), (1_500, 2, 2)]);
        assert!(history.points.iter().all(|p| (p.min, p.max) == (0, 10)));
        // Both executions are marked, the shadow one as such, at what it would have made.
        let markers: Vec<(i64, u32, bool)> = history
            .markers
            .iter()
            .map(|m| (m.at_ms - T0, m.to, m.shadow))
            .collect();
        assert_eq!(markers, [(1_000, 2, false), (2_000, 5, true)]);
        // The timeline has the two executions, newest first, the first with its server.
        assert_eq!(history.entries.len(), 2);
        assert_eq!(history.entries[0].record.at_ms, T0 + 2_000);
        assert!(history.entries[0].launched.is_empty());
        assert_eq!(history.entries[1].launched, ["srv_b"]);
    }

    #[test]
    fn a_group_unchanged_in_the_range_is_one_point_at_its_start_and_nothing_after_it_shows() {
        let mut stream = Stream {
            records: Vec::new(),
        };
        stream
            .at(T0, created(T0, 3))
            .at(T0 + 9_000, executed(T0 + 9_000, 3, 4, false));
        let history = fold(stream.records, T0 + 1_000, T0 + 2_000);
        assert_eq!(
            history.points,
            [Point {
                at_ms: T0 + 1_000,
                desired: 3,
                active: 0,
                min: 0,
                max: 10
            }]
        );
        assert!(history.markers.is_empty());
        assert!(history.entries.is_empty());
        // A group made after the range shows nothing at all.
        let mut later = Stream {
            records: Vec::new(),
        };
        later.at(T0 + 5_000, created(T0 + 5_000, 3));
        assert!(fold(later.records, T0, T0 + 1_000).points.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A page folded from a day's start the console kept shows what the whole fold shows.
        #[test]
        fn a_fold_from_a_kept_day_start_shows_what_the_whole_fold_shows(
            // Times mostly go forward, and sometimes back a little (writers' clocks differ).
            steps in proptest::collection::vec((0..5u8, -(DAY_MS / 8)..(DAY_MS / 3)), 1..60),
            from in 0..(6 * DAY_MS),
            span in 1..(3 * DAY_MS),
        ) {
            let mut stream = Stream { records: Vec::new() };
            let mut at = T0;
            stream.at(at, created(at, 1));
            let (mut desired, mut servers) = (1u32, 0usize);
            for (kind, gap) in steps {
                at += gap;
                let server = format!("srv_{servers}");
                let event = match kind {
                    0 => {
                        let to = (desired + 1) % 10;
                        let event = executed(at, desired, to, false);
                        desired = to;
                        event
                    }
                    1 => executed(at, desired, (desired + 3) % 10, true),
                    2 => {
                        servers += 1;
                        launch(at, &server, Some((at, desired, desired)))
                    }
                    3 => active(at, &format!("srv_{}", servers.saturating_sub(1))),
                    _ => GroupEvent::ServerFailed {
                        server_id: format!("srv_{}", servers.saturating_sub(1)),
                        reason: "exited".into(),
                        at: ts(at),
                    },
                };
                stream.at(at, event);
            }
            let (from_ms, to_ms) = (T0 + from, T0 + from + span);
            let (whole, days) = fold_from(None, stream.records.clone(), (from_ms, to_ms), i64::MIN);
            for start in days.iter().filter(|d| d.day * DAY_MS <= from_ms) {
                let after = stream
                    .records
                    .iter()
                    .filter(|r| r.version > start.resume.version)
                    .cloned();
                let (part, later) =
                    fold_from(Some(start.resume.clone()), after, (from_ms, to_ms), i64::MIN);
                proptest::prop_assert_eq!(format!("{part:?}"), format!("{whole:?}"));
                // The days it went into from there are the same starts.
                let expected: Vec<&DayStart> = days
                    .iter()
                    .filter(|d| d.resume.version >= start.resume.version)
                    .collect();
                proptest::prop_assert_eq!(later.iter().collect::<Vec<_>>(), expected);
            }
        }
    }
}
