//! A scheduled action's occurrence on its group (SPEC 2.2): the bounds and desired capacity
//! become the values it gives (desired clamped to the resulting bounds), with no cooldown; a
//! pause of the direction the capacity would move in holds the whole occurrence. Every
//! occurrence is recorded as one [`GroupEvent::ScheduleRan`], whatever came of it; on a group
//! being deleted, as refused.

use super::execution::Outcome;
use super::{GroupEvent, GroupState, Pause};
use crate::clock::Timestamp;
use crate::domain::scheduled::Scheduled;
use crate::domain::Rejection;

/// Runs `occurrence` of `scheduled` on the group `state`.
pub(super) fn decide_run(
    state: &GroupState,
    scheduled: &Scheduled,
    occurrence: Timestamp,
    now: Timestamp,
) -> Result<Vec<GroupEvent>, Rejection> {
    let group = match state {
        Some(group) if !group.deleted => group,
        _ => return Err(Rejection::not_found("group")),
    };
    if scheduled.deleted || scheduled.group_id != group.id {
        return Err(Rejection::not_found("schedule"));
    }
    let d = &scheduled.definition;
    let min_size = d.min_size.unwrap_or(group.min_size);
    let max_size = d.max_size.unwrap_or(group.max_size);
    let from = group.desired_capacity;
    let (outcome, refused) = if group.draining {
        // Its servers go whatever its capacity: the occurrence would take effect nowhere.
        let refused = "the group is being deleted".to_string();
        (Outcome::NoChange { capacity: from }, Some(refused))
    } else if min_size > max_size {
        // One bound given, beyond the other as the group has it: the occurrence changes nothing.
        let refused = format!("min_size {min_size} would be above max_size {max_size}");
        (Outcome::NoChange { capacity: from }, Some(refused))
    } else {
        let to = d.desired_capacity.unwrap_or(from).clamp(min_size, max_size);
        let outcome = if group.pause == Pause::BOTH || group.pause.holds(from, to) {
            Outcome::Paused
        } else if to == from {
            Outcome::NoChange { capacity: from }
        } else {
            Outcome::Executed {
                from,
                to,
                cooldown_until: None,
            }
        };
        (outcome, None)
    };
    Ok(vec![GroupEvent::ScheduleRan {
        schedule_id: scheduled.id.clone(),
        occurrence,
        min_size,
        max_size,
        outcome,
        refused,
        at: now,
    }])
}
