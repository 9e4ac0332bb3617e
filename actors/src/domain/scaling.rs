//! The pinned scaling arithmetic of SPEC section 2, as pure functions.
//!
//! Let `c` be the group's desired capacity:
//! - `change`: new = c + adjustment;
//! - `exact`: new = adjustment;
//! - `percent`: delta = c × adjustment / 100; a delta whose magnitude is strictly between 0 and
//!   1 becomes ±1, otherwise it is truncated toward zero; with `min_adjustment_step` s, a
//!   non-zero delta of magnitude below s becomes ±s;
//! - new is then clamped to [min_size, max_size].
//!
//! Integer math only: c × adjustment is exact in `i128`, `/` truncates toward zero, and "between
//! 0 and 1" is `0 < |c × adjustment| < 100`.
//!
//! A zero delta stays zero, even with a step: at c = 0 (or adjustment 0) a percent policy does not
//! move the group (0 × anything is 0), and the step only magnifies a move, it never creates one.
//! The result is still clamped, so a group at 0 below a raised `min_size` goes up to it.

use serde::{Deserialize, Serialize};

/// How a policy's `adjustment` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentType {
    /// Add the adjustment (may be negative).
    Change,
    /// Add the adjustment percent of the current capacity (may be negative).
    Percent,
    /// Set the capacity to the adjustment.
    Exact,
}

/// What a policy asks of its group; the policy actor sends it with each execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    /// How `value` is read.
    pub kind: AdjustmentType,
    /// The adjustment.
    pub value: i64,
    /// For `percent` only: the smallest magnitude of a non-zero delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_adjustment_step: Option<u32>,
}

/// One constraint that changed the computed capacity, in the order applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "constraint", rename_all = "snake_case")]
pub enum Constraint {
    /// A percent delta between 0 and 1 in magnitude became ±1.
    RoundedToOne {
        /// The delta before: ±1.
        delta: i64,
    },
    /// A percent delta smaller than `min_adjustment_step` became ±step.
    MinStep {
        /// The step applied.
        step: u32,
        /// The delta before the step.
        delta_before: i64,
    },
    /// A step policy's scale-out during its warm-up added only what exceeds the capacity still
    /// warming up.
    WarmingUp {
        /// The capacity still warming up.
        warming: u32,
        /// The delta before.
        delta_before: i64,
    },
    /// The capacity was raised to `min_size`.
    ClampedToMin {
        /// The group's `min_size`.
        min_size: u32,
    },
    /// The capacity was lowered to `max_size`.
    ClampedToMax {
        /// The group's `max_size`.
        max_size: u32,
    },
}

/// The whole computation of one execution: enough to answer "why did it scale, or not?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Computation {
    /// The capacity before, `c`.
    pub current: u32,
    /// The policy's adjustment.
    pub adjustment: Adjustment,
    /// The capacity computed before clamping (after rounding and the step); may lie outside
    /// the bounds, or even be negative.
    pub raw: i64,
    /// The constraints applied, in order.
    pub constraints: Vec<Constraint>,
    /// The capacity after every constraint.
    pub result: u32,
}

/// Computes the new capacity of a group at `current` within `[min_size, max_size]`.
///
/// `min_size <= max_size` is the group's invariant; if it were broken, `max_size` wins.
pub fn compute(current: u32, adjustment: Adjustment, min_size: u32, max_size: u32) -> Computation {
    compute_warming(current, adjustment, 0, min_size, max_size)
}

/// [`compute`], less `warming` servers of a scale-out (SPEC 2.1's warm-up): a positive delta
/// adds only what exceeds the capacity still warming up.
pub fn compute_warming(
    current: u32,
    adjustment: Adjustment,
    warming: u32,
    min_size: u32,
    max_size: u32,
) -> Computation {
    let c = i128::from(current);
    let value = i128::from(adjustment.value);
    let mut constraints = Vec::new();

    let raw = match adjustment.kind {
        AdjustmentType::Change => c + value,
        AdjustmentType::Exact => value,
        AdjustmentType::Percent => {
            let scaled = c * value;
            let mut delta = if scaled != 0 && scaled.abs() < 100 {
                let one = scaled.signum();
                constraints.push(Constraint::RoundedToOne {
                    delta: saturate(one),
                });
                one
            } else {
                scaled / 100
            };
            if let Some(step) = adjustment.min_adjustment_step {
                let step_wide = i128::from(step);
                if delta != 0 && delta.abs() < step_wide {
                    constraints.push(Constraint::MinStep {
                        step,
                        delta_before: saturate(delta),
                    });
                    delta = delta.signum() * step_wide;
                }
            }
            c + delta
        }
    };
    let raw = if warming > 0 && raw > c {
        let delta = raw - c;
        constraints.push(Constraint::WarmingUp {
            warming,
            delta_before: saturate(delta),
        });
        c + (delta - i128::from(warming)).max(0)
    } else {
        raw
    };

    let result = if raw > i128::from(max_size) {
        constraints.push(Constraint::ClampedToMax { max_size });
        max_size
    } else if raw < i128::from(min_size) {
        constraints.push(Constraint::ClampedToMin { min_size });
        min_size
    } else {
        // Within [min_size, max_size], so it fits in a u32.
        u32::try_from(raw).unwrap_or(max_size)
    };

    Computation {
        current,
        adjustment,
        raw: saturate(raw),
        constraints,
        result,
    }
}

fn saturate(wide: i128) -> i64 {
    i64::try_from(wide).unwrap_or(if wide < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percent(value: i64) -> Adjustment {
        Adjustment {
            kind: AdjustmentType::Percent,
            value,
            min_adjustment_step: None,
        }
    }

    fn percent_with_step(value: i64, step: u32) -> Adjustment {
        Adjustment {
            min_adjustment_step: Some(step),
            ..percent(value)
        }
    }

    fn change(value: i64) -> Adjustment {
        Adjustment {
            kind: AdjustmentType::Change,
            value,
            min_adjustment_step: None,
        }
    }

    fn exact(value: i64) -> Adjustment {
        Adjustment {
            kind: AdjustmentType::Exact,
            value,
            min_adjustment_step: None,
        }
    }

    /// Given a capacity and bounds, when the adjustment is computed, then the result is expected.
    #[test]
    fn the_pinned_arithmetic_table_holds() {
        // (current, adjustment, min, max, expected)
        let table = [
            (10, percent(25), 0, 100, 12),
            (10, percent(-25), 0, 100, 8),
            (2, percent(10), 0, 100, 3),
            (2, percent(-10), 0, 100, 1),
            (10, percent_with_step(10, 3), 0, 100, 13),
            (10, percent_with_step(-10, 3), 0, 100, 7),
            (10, percent_with_step(50, 3), 0, 100, 15),
            (0, percent(50), 0, 100, 0),
            (0, percent_with_step(50, 2), 0, 100, 0),
            (0, percent(50), 1, 100, 1),
            (10, percent(200), 0, 20, 20),
            (10, percent(-100), 2, 20, 2),
            (3, change(2), 1, 10, 5),
            (3, change(20), 1, 10, 10),
            (3, change(-5), 1, 10, 1),
            (3, exact(7), 1, 10, 7),
            (3, exact(50), 1, 10, 10),
            (3, exact(0), 1, 10, 1),
            (3, change(i64::MAX), 1, 10, 10),
            (3, change(i64::MIN), 1, 10, 1),
            (10_000, percent(i64::MAX), 0, 10_000, 10_000),
        ];
        for (current, adjustment, min, max, expected) in table {
            let computed = compute(current, adjustment, min, max);
            assert_eq!(
                computed.result, expected,
                "{current} with {adjustment:?} in [{min}, {max}]"
            );
        }
    }

    #[test]
    fn a_percent_increase_of_25_on_10_gives_12() {
        let computed = compute(10, percent(25), 0, 100);
        assert_eq!(computed.result, 12);
        assert_eq!(computed.raw, 12);
        assert!(computed.constraints.is_empty());
    }

    #[test]
    fn a_percent_decrease_of_25_on_10_gives_8_by_truncating_toward_zero() {
        assert_eq!(compute(10, percent(-25), 0, 100).result, 8);
    }

    #[test]
    fn a_percent_increase_of_10_on_2_rounds_the_small_delta_up_to_1() {
        let computed = compute(2, percent(10), 0, 100);
        assert_eq!(computed.result, 3);
        assert_eq!(
            computed.constraints,
            vec![Constraint::RoundedToOne { delta: 1 }]
        );
    }

    #[test]
    fn a_percent_decrease_of_10_on_2_rounds_the_small_delta_to_minus_1() {
        let computed = compute(2, percent(-10), 0, 100);
        assert_eq!(computed.result, 1);
        assert_eq!(
            computed.constraints,
            vec![Constraint::RoundedToOne { delta: -1 }]
        );
    }

    #[test]
    fn a_percent_increase_of_10_on_10_with_step_3_gives_13() {
        let computed = compute(10, percent_with_step(10, 3), 0, 100);
        assert_eq!(computed.result, 13);
        assert_eq!(
            computed.constraints,
            vec![Constraint::MinStep {
                step: 3,
                delta_before: 1
            }]
        );
    }

    #[test]
    fn a_percent_of_a_zero_capacity_stays_zero_even_with_a_step() {
        let computed = compute(0, percent_with_step(50, 2), 0, 100);
        assert_eq!(computed.raw, 0);
        assert_eq!(computed.result, 0);
        assert!(computed.constraints.is_empty());
    }

    #[test]
    fn a_result_above_max_size_is_clamped_and_the_raw_value_kept() {
        let computed = compute(8, change(5), 1, 10);
        assert_eq!(computed.raw, 13);
        assert_eq!(computed.result, 10);
        assert_eq!(
            computed.constraints,
            vec![Constraint::ClampedToMax { max_size: 10 }]
        );
    }

    #[test]
    fn a_negative_change_past_min_size_is_clamped_to_min_size() {
        let computed = compute(3, change(-5), 2, 10);
        assert_eq!(computed.raw, -2);
        assert_eq!(computed.result, 2);
        assert_eq!(
            computed.constraints,
            vec![Constraint::ClampedToMin { min_size: 2 }]
        );
    }

    #[test]
    fn an_exact_capacity_outside_the_bounds_is_clamped() {
        assert_eq!(compute(5, exact(1), 2, 10).result, 2);
        assert_eq!(compute(5, exact(11), 2, 10).result, 10);
    }

    #[test]
    fn a_computation_serializes_its_constraints_by_name() {
        let computed = compute(10, percent_with_step(10, 3), 0, 12);
        let json = serde_json::to_value(&computed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "current": 10,
                "adjustment": {"kind": "percent", "value": 10, "min_adjustment_step": 3},
                "raw": 13,
                "constraints": [
                    {"constraint": "min_step", "step": 3, "delta_before": 1},
                    {"constraint": "clamped_to_max", "max_size": 12}
                ],
                "result": 12
            })
        );
    }
}
