//! Alarm evaluation as CloudWatch does it (SPEC section 5): the datapoints of the last N closed
//! periods decide the next state, and a transition decides the actions. Pure: no clock, no I/O.
//!
//! # The rule
//!
//! Take the last N datapoints (N = `evaluation_periods`, M = `datapoints_to_alarm`), oldest
//! first. A present datapoint *breaches* when `value <comparison> threshold` holds
//! ([`Comparison::breaches`]; NaN never breaches). A missing one (a period without samples)
//! counts by `treat_missing`:
//!
//! | `treat_missing` | a missing datapoint |
//! | --- | --- |
//! | `breaching` | counts as breaching |
//! | `not_breaching` | counts as not breaching |
//! | `missing`, `ignore` | is skipped: it counts as neither |
//!
//! With `b` breaching and `k` skipped among the N:
//!
//! 1. `b >= M` → ALARM.
//! 2. otherwise `b + k < M` → OK: even if every skipped period had breached, M breaches would be
//!    impossible (equivalently, more than `N - M` counted as not breaching).
//! 3. otherwise the window cannot decide: INSUFFICIENT_DATA with `missing`, the current state
//!    with `ignore`. (With `breaching` and `not_breaching` nothing is skipped, so rule 3 never
//!    applies.) In particular, all N missing gives INSUFFICIENT_DATA with `missing` and keeps the
//!    state with `ignore`, as SPEC 5 says.
//!
//! # Actions
//!
//! [`actions`]: a transition into ALARM runs `alarm_actions`, into OK `ok_actions`; staying in
//! ALARM runs `alarm_actions` again only when `repeat_actions` is set and a repeat is due.
//! INSUFFICIENT_DATA has no actions.

use std::fmt::Write as _;

use super::alarm::{AlarmDefinition, AlarmState, Comparison, TreatMissing};
use super::PolicyId;

/// What an evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The state the alarm should be in (the current one when nothing changes).
    pub next: AlarmState,
    /// Why, naming the datapoints that decided it; lowercase and deterministic.
    pub reason: String,
    /// How many of the N counted as breaching (missing ones included under `breaching`).
    pub breaching: usize,
    /// How many of the N were counted at all (all but the skipped missing ones).
    pub considered: usize,
    /// The deciding datapoint: the latest present one of the window, which a step policy the
    /// alarm executes chooses its step by (SPEC 2.1).
    pub value: Option<f64>,
}

/// Evaluates an alarm in state `current` over `datapoints`, the last closed periods oldest first
/// (`None` for a missing one), by the rule of the module documentation.
///
/// The window is the last N entries of `datapoints`; when fewer than N are given, the absent
/// older ones are missing.
pub fn evaluate(
    definition: &AlarmDefinition,
    current: AlarmState,
    datapoints: &[Option<f64>],
) -> Evaluation {
    let Counts {
        n,
        m,
        missing,
        breaching,
        skipped,
    } = counts(definition, datapoints);
    let given = &datapoints[datapoints.len().saturating_sub(n)..];
    let window: Vec<Option<f64>> = std::iter::repeat_n(None, n - given.len())
        .chain(given.iter().copied())
        .collect();
    let considered = n - skipped;

    let measured = format!(
        "{breaching} of the last {n} datapoints {} were {} the threshold ({})",
        list(&window),
        words(definition.comparison),
        definition.threshold
    );
    let missing_note = match (missing, definition.treat_missing) {
        (0, _) => String::new(),
        (k, TreatMissing::Breaching) => format!("; {k} missing, counted as breaching"),
        (k, TreatMissing::NotBreaching) => format!("; {k} missing, counted as not breaching"),
        (k, TreatMissing::Missing | TreatMissing::Ignore) => format!("; {k} missing, skipped"),
    };

    let next = next_of(definition, current, breaching, skipped, m);
    let reason = if breaching >= m {
        format!("{measured}{missing_note}")
    } else if breaching + skipped < m {
        format!("{measured}, fewer than the {m} needed{missing_note}")
    } else {
        let mut reason = if missing == n {
            format!("the last {n} datapoints were all missing")
        } else {
            format!("{measured}{missing_note}: too few datapoints to tell whether {m} breach")
        };
        if definition.treat_missing == TreatMissing::Ignore {
            let _ = write!(reason, "; the state stays {}", name(current));
        }
        reason
    };
    Evaluation {
        next,
        reason,
        breaching,
        considered,
        value: window.iter().rev().flatten().next().copied(),
    }
}

/// The state [`evaluate`] would move to, without composing its reason (no allocation): what an
/// evaluator checks for every alarm at every period, composing reasons only for changes.
pub fn next_state(
    definition: &AlarmDefinition,
    current: AlarmState,
    datapoints: &[Option<f64>],
) -> AlarmState {
    let counts = counts(definition, datapoints);
    next_of(
        definition,
        current,
        counts.breaching,
        counts.skipped,
        counts.m,
    )
}

/// What a window of datapoints counts to.
struct Counts {
    n: usize,
    m: usize,
    missing: usize,
    breaching: usize,
    skipped: usize,
}

/// Counts the last N datapoints (absent older ones are missing) by the alarm's rules.
fn counts(definition: &AlarmDefinition, datapoints: &[Option<f64>]) -> Counts {
    let n = definition.evaluation_periods as usize;
    let m = definition.datapoints_to_alarm as usize;
    let given = &datapoints[datapoints.len().saturating_sub(n)..];
    let missing = n - given.len() + given.iter().filter(|point| point.is_none()).count();
    let present_breaching = given
        .iter()
        .flatten()
        .filter(|value| {
            definition
                .comparison
                .breaches(**value, definition.threshold)
        })
        .count();
    let (breaching, skipped) = match definition.treat_missing {
        TreatMissing::Breaching => (present_breaching + missing, 0),
        TreatMissing::NotBreaching => (present_breaching, 0),
        TreatMissing::Missing | TreatMissing::Ignore => (present_breaching, missing),
    };
    Counts {
        n,
        m,
        missing,
        breaching,
        skipped,
    }
}

/// The rule: at least M breaching → ALARM; M breaches impossible → OK; otherwise undecided.
fn next_of(
    definition: &AlarmDefinition,
    current: AlarmState,
    breaching: usize,
    skipped: usize,
    m: usize,
) -> AlarmState {
    if breaching >= m {
        AlarmState::Alarm
    } else if breaching + skipped < m {
        AlarmState::Ok
    } else if definition.treat_missing == TreatMissing::Ignore {
        current
    } else {
        AlarmState::InsufficientData
    }
}

/// The policies to execute when an evaluation moves an alarm `from` one state `to` another (or
/// leaves it where it was, `from == to`).
///
/// - into ALARM from another state: `alarm_actions`;
/// - into OK from another state: `ok_actions`;
/// - staying in ALARM: `alarm_actions` when the definition's `repeat_actions` is set and
///   `repeat` holds — `repeat` says a repeat is due at this evaluation (the evaluator passes it
///   once per closed period, so that evaluations for other reasons, an update say, do not repeat);
/// - anything else, including every move into INSUFFICIENT_DATA: nothing.
pub fn actions(
    definition: &AlarmDefinition,
    from: AlarmState,
    to: AlarmState,
    repeat: bool,
) -> Vec<PolicyId> {
    match (from, to) {
        (AlarmState::Alarm, AlarmState::Alarm) if repeat && definition.repeat_actions => {
            definition.alarm_actions.clone()
        }
        (AlarmState::Alarm, AlarmState::Alarm) => vec![],
        (_, AlarmState::Alarm) => definition.alarm_actions.clone(),
        (AlarmState::Ok, AlarmState::Ok) => vec![],
        (_, AlarmState::Ok) => definition.ok_actions.clone(),
        (_, AlarmState::InsufficientData) => vec![],
    }
}

/// `[0.91, missing, 0.97]`: each value in Rust's shortest round-trip form.
fn list(window: &[Option<f64>]) -> String {
    let items: Vec<String> = window
        .iter()
        .map(|point| match point {
            Some(value) => value.to_string(),
            None => "missing".to_owned(),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn words(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::Gt => "greater than",
        Comparison::Ge => "greater than or equal to",
        Comparison::Lt => "less than",
        Comparison::Le => "less than or equal to",
    }
}

fn name(state: AlarmState) -> &'static str {
    match state {
        AlarmState::InsufficientData => "insufficient_data",
        AlarmState::Ok => "ok",
        AlarmState::Alarm => "alarm",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alarm::Statistic;
    use crate::domain::GroupId;

    use AlarmState::{Alarm, InsufficientData, Ok};

    /// An alarm on cpu: `m` of `n` periods greater than 0.8, missing data by `treat_missing`.
    fn given_alarm(m: u32, n: u32, treat_missing: TreatMissing) -> AlarmDefinition {
        AlarmDefinition {
            name: "cpu high".into(),
            group_id: GroupId::new("grp_1"),
            metric: "cpu".into(),
            query: None,
            statistic: Statistic::Avg,
            period_seconds: 60,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            comparison: Comparison::Gt,
            threshold: 0.8,
            treat_missing,
            alarm_actions: vec![PolicyId::new("pol_out")],
            ok_actions: vec![PolicyId::new("pol_in")],
            repeat_actions: false,
        }
    }

    const HIGH: Option<f64> = Some(0.9);
    const LOW: Option<f64> = Some(0.1);
    const GAP: Option<f64> = None;

    #[test]
    fn three_breaching_of_three_alarm_with_the_datapoints_named() {
        let definition = given_alarm(3, 3, TreatMissing::Missing);
        let evaluation = evaluate(&definition, Ok, &[Some(0.91), Some(0.95), Some(0.97)]);
        assert_eq!(
            evaluation,
            Evaluation {
                next: Alarm,
                reason: "3 of the last 3 datapoints [0.91, 0.95, 0.97] were greater than the threshold (0.8)".into(),
                breaching: 3,
                considered: 3,
                value: Some(0.97),
            }
        );
    }

    #[test]
    fn m_of_n_decides_with_and_without_gaps() {
        // (m, n, datapoints, current, expected next, breaching, considered)
        let cases = [
            (2, 3, vec![HIGH, GAP, HIGH], Ok, Alarm, 2, 2),
            (2, 3, vec![LOW, GAP, LOW], Alarm, Ok, 0, 2),
            (2, 3, vec![HIGH, GAP, LOW], Ok, InsufficientData, 1, 2),
            (2, 3, vec![HIGH, LOW, HIGH], Ok, Alarm, 2, 3),
            (2, 3, vec![HIGH, LOW, LOW], Alarm, Ok, 1, 3),
            (1, 3, vec![GAP, GAP, HIGH], Ok, Alarm, 1, 1),
            (3, 3, vec![HIGH, HIGH, GAP], Ok, InsufficientData, 2, 2),
            (3, 3, vec![LOW, GAP, GAP], Alarm, Ok, 0, 1),
            (3, 5, vec![HIGH, HIGH, LOW, LOW, HIGH], Ok, Alarm, 3, 5),
            (3, 5, vec![HIGH, LOW, LOW, LOW, HIGH], Alarm, Ok, 2, 5),
        ];
        for (m, n, points, current, next, breaching, considered) in cases {
            let evaluation = evaluate(&given_alarm(m, n, TreatMissing::Missing), current, &points);
            assert_eq!(
                (evaluation.next, evaluation.breaching, evaluation.considered),
                (next, breaching, considered),
                "{m} of {n} over {points:?}"
            );
        }
    }

    #[test]
    fn every_treat_missing_mode_over_all_missing_and_partly_missing_windows() {
        use TreatMissing::{Breaching, Ignore, Missing, NotBreaching};
        // 2 of 3; (mode, datapoints, current, expected next)
        let cases = [
            (Missing, vec![GAP, GAP, GAP], Alarm, InsufficientData),
            (Missing, vec![GAP, GAP, GAP], Ok, InsufficientData),
            (Ignore, vec![GAP, GAP, GAP], Alarm, Alarm),
            (Ignore, vec![GAP, GAP, GAP], Ok, Ok),
            (
                Ignore,
                vec![GAP, GAP, GAP],
                InsufficientData,
                InsufficientData,
            ),
            (Breaching, vec![GAP, GAP, GAP], Ok, Alarm),
            (NotBreaching, vec![GAP, GAP, GAP], Alarm, Ok),
            // Partly missing and decided: every mode agrees where the present data settle it.
            (Missing, vec![HIGH, GAP, HIGH], Ok, Alarm),
            (Ignore, vec![HIGH, GAP, HIGH], Ok, Alarm),
            (Missing, vec![LOW, GAP, LOW], Alarm, Ok),
            (Ignore, vec![LOW, GAP, LOW], Alarm, Ok),
            // Partly missing and undecided by the present data.
            (Missing, vec![HIGH, GAP, LOW], Alarm, InsufficientData),
            (Ignore, vec![HIGH, GAP, LOW], Alarm, Alarm),
            (Ignore, vec![HIGH, GAP, LOW], Ok, Ok),
            (Breaching, vec![HIGH, GAP, LOW], Ok, Alarm),
            (NotBreaching, vec![HIGH, GAP, LOW], Alarm, Ok),
        ];
        for (mode, points, current, next) in cases {
            let evaluation = evaluate(&given_alarm(2, 3, mode), current, &points);
            assert_eq!(
                evaluation.next, next,
                "{mode:?} from {current:?} over {points:?}"
            );
        }
    }

    #[test]
    fn missing_datapoints_are_counted_as_their_mode_says() {
        let cases = [
            (TreatMissing::Missing, 1, 2),
            (TreatMissing::Ignore, 1, 2),
            (TreatMissing::Breaching, 2, 3),
            (TreatMissing::NotBreaching, 1, 3),
        ];
        for (mode, breaching, considered) in cases {
            let evaluation = evaluate(&given_alarm(3, 3, mode), Ok, &[HIGH, GAP, LOW]);
            assert_eq!(
                (evaluation.breaching, evaluation.considered),
                (breaching, considered),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn a_datapoint_equal_to_the_threshold_breaches_only_an_inclusive_comparison() {
        let cases = [
            (Comparison::Gt, Ok),
            (Comparison::Ge, Alarm),
            (Comparison::Lt, Ok),
            (Comparison::Le, Alarm),
        ];
        for (comparison, next) in cases {
            let definition = AlarmDefinition {
                comparison,
                ..given_alarm(1, 1, TreatMissing::Missing)
            };
            let evaluation = evaluate(&definition, InsufficientData, &[Some(0.8)]);
            assert_eq!(evaluation.next, next, "{comparison:?}");
        }
    }

    #[test]
    fn each_comparison_breaches_on_its_side_of_the_threshold() {
        let cases = [
            (Comparison::Gt, 0.81, Alarm),
            (Comparison::Gt, 0.79, Ok),
            (Comparison::Ge, 0.79, Ok),
            (Comparison::Lt, 0.79, Alarm),
            (Comparison::Lt, 0.81, Ok),
            (Comparison::Le, 0.81, Ok),
        ];
        for (comparison, value, next) in cases {
            let definition = AlarmDefinition {
                comparison,
                ..given_alarm(1, 1, TreatMissing::Missing)
            };
            let evaluation = evaluate(&definition, InsufficientData, &[Some(value)]);
            assert_eq!(evaluation.next, next, "{value} {comparison:?}");
        }
    }

    #[test]
    fn the_window_is_the_last_n_datapoints_and_absent_older_ones_are_missing() {
        let definition = given_alarm(2, 2, TreatMissing::Missing);
        let longer = evaluate(&definition, Ok, &[LOW, LOW, HIGH, HIGH]);
        assert_eq!(longer.next, Alarm);
        let shorter = evaluate(&definition, Ok, &[HIGH]);
        assert_eq!(shorter.next, InsufficientData);
        assert_eq!(shorter.considered, 1);
    }

    #[test]
    fn reasons_name_the_datapoints_and_how_missing_ones_counted() {
        let cases = [
            (
                given_alarm(2, 3, TreatMissing::Missing),
                vec![LOW, GAP, LOW],
                Alarm,
                "0 of the last 3 datapoints [0.1, missing, 0.1] were greater than the threshold (0.8), fewer than the 2 needed; 1 missing, skipped",
            ),
            (
                given_alarm(2, 3, TreatMissing::Breaching),
                vec![HIGH, GAP, LOW],
                Ok,
                "2 of the last 3 datapoints [0.9, missing, 0.1] were greater than the threshold (0.8); 1 missing, counted as breaching",
            ),
            (
                given_alarm(2, 3, TreatMissing::NotBreaching),
                vec![HIGH, GAP, LOW],
                Alarm,
                "1 of the last 3 datapoints [0.9, missing, 0.1] were greater than the threshold (0.8), fewer than the 2 needed; 1 missing, counted as not breaching",
            ),
            (
                given_alarm(2, 3, TreatMissing::Missing),
                vec![HIGH, GAP, LOW],
                Ok,
                "1 of the last 3 datapoints [0.9, missing, 0.1] were greater than the threshold (0.8); 1 missing, skipped: too few datapoints to tell whether 2 breach",
            ),
            (
                given_alarm(2, 3, TreatMissing::Missing),
                vec![GAP, GAP, GAP],
                Ok,
                "the last 3 datapoints were all missing",
            ),
            (
                given_alarm(2, 3, TreatMissing::Ignore),
                vec![GAP, GAP, GAP],
                Alarm,
                "the last 3 datapoints were all missing; the state stays alarm",
            ),
        ];
        for (definition, points, current, reason) in cases {
            assert_eq!(evaluate(&definition, current, &points).reason, reason);
        }
    }

    #[test]
    fn actions_run_on_transitions_into_alarm_or_ok_and_on_due_repeats() {
        let out = vec![PolicyId::new("pol_out")];
        let inn = vec![PolicyId::new("pol_in")];
        let none: Vec<PolicyId> = vec![];
        // (repeat_actions, from, to, repeat due, expected)
        let cases = [
            (false, Ok, Alarm, false, &out),
            (false, InsufficientData, Alarm, false, &out),
            (false, Alarm, Ok, false, &inn),
            (false, InsufficientData, Ok, false, &inn),
            (false, Alarm, InsufficientData, true, &none),
            (false, Ok, InsufficientData, true, &none),
            (true, Alarm, InsufficientData, true, &none),
            (false, Ok, Ok, true, &none),
            (true, Ok, Ok, true, &none),
            (false, Alarm, Alarm, true, &none),
            (true, Alarm, Alarm, false, &none),
            (true, Alarm, Alarm, true, &out),
            (true, Ok, Alarm, false, &out),
        ];
        for (repeat_actions, from, to, repeat, expected) in cases {
            let definition = AlarmDefinition {
                repeat_actions,
                ..given_alarm(1, 1, TreatMissing::Missing)
            };
            assert_eq!(
                &actions(&definition, from, to, repeat),
                expected,
                "repeat_actions {repeat_actions}, {from:?} → {to:?}, repeat due {repeat}"
            );
        }
    }

    #[test]
    fn next_state_always_agrees_with_evaluate() {
        let values = [None, Some(0.5), Some(0.8), Some(0.9)];
        let modes = [
            TreatMissing::Missing,
            TreatMissing::Breaching,
            TreatMissing::NotBreaching,
            TreatMissing::Ignore,
        ];
        let states = [
            AlarmState::InsufficientData,
            AlarmState::Ok,
            AlarmState::Alarm,
        ];
        for mode in modes {
            for m in 1..=3 {
                let definition = given_alarm(m, 3, mode);
                for a in values {
                    for b in values {
                        for c in values {
                            for window in [vec![a, b, c], vec![b, c], vec![]] {
                                for current in states {
                                    assert_eq!(
                                        next_state(&definition, current, &window),
                                        evaluate(&definition, current, &window).next,
                                        "{mode:?} m={m} {window:?} from {current:?}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
