//! Target tracking's rules (SPEC 2.1), as pure functions: what one policy recommends for one
//! closed period, how scale-in is stabilized over a window, and how the recommendations of
//! several policies on one group combine. The group decides with them and journals each
//! decision with the numbers behind it; nothing here keeps state.
//!
//! - `average`: recommended = ceil(c × value / target), and no change while
//!   |value / target − 1| ≤ tolerance (the Kubernetes HPA's rule and default tolerance, 0.1).
//! - `total`: recommended = ceil(value / target); at c = 0 only a value above the activation
//!   threshold recommends anything (KEDA's activation), so a group scales to and from zero.
//! - A missing period is never read as 0: the policy holds, or after `fallback_after_periods`
//!   missing periods in a row goes to its fallback capacity (or to at least it).
//! - Scale-out takes the first period's recommendation; scale-in goes to the highest
//!   recommendation of the stabilization window (the HPA's downscale stabilization), never
//!   while scale-in is disabled.
//! - Several policies: the largest proposal wins a scale-out; a scale-in needs every policy to
//!   propose less, and goes to the largest proposal (AWS's rule for target tracking).

use serde::{Deserialize, Serialize};

/// How a target-tracking policy reads its metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A per-server figure such as CPU: capacity scales with value / target.
    #[default]
    Average,
    /// A group total such as a queue's depth: capacity = value / target.
    Total,
}

/// What a target-tracking policy does when a period has no datapoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingData {
    /// Recommend nothing: the group stays where it is.
    #[default]
    Hold,
    /// After `fallback_after_periods` missing periods, recommend `fallback_capacity`.
    Fallback,
    /// After `fallback_after_periods` missing periods, recommend at least `fallback_capacity`.
    FallbackIfHigher,
}

/// A target-tracking policy's settings, as the rules read them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// The metric's target (> 0).
    pub target: f64,
    /// How the metric is read (`target_kind` in the API and the journal).
    #[serde(rename = "target_kind")]
    pub kind: TargetKind,
    /// `average`: the relative distance from the target within which nothing changes.
    pub tolerance: f64,
    /// `total`: at capacity 0, the value a period must exceed to recommend any capacity.
    pub activation_threshold: f64,
    /// What a missing period does.
    pub missing_data: MissingData,
    /// The capacity a fallback recommends.
    pub fallback_capacity: u32,
    /// Missing periods in a row before a fallback.
    pub fallback_after_periods: u32,
}

/// What one policy recommends for one period, and why.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "because", rename_all = "snake_case")]
pub enum Recommendation {
    /// The formula's capacity.
    Formula {
        /// The capacity.
        capacity: u32,
    },
    /// `average`: the value is within the tolerance of the target; the current capacity.
    WithinTolerance {
        /// The capacity (the current one).
        capacity: u32,
    },
    /// `total` at capacity 0: the value did not exceed the activation threshold.
    NotActivated {
        /// The capacity (0).
        capacity: u32,
    },
    /// The period is missing and the policy holds: no recommendation.
    Hold,
    /// The period is missing, for long enough to fall back.
    Fallback {
        /// The capacity.
        capacity: u32,
    },
}

impl Recommendation {
    /// The recommended capacity; none when the policy holds.
    pub fn capacity(self) -> Option<u32> {
        match self {
            Recommendation::Formula { capacity }
            | Recommendation::WithinTolerance { capacity }
            | Recommendation::NotActivated { capacity }
            | Recommendation::Fallback { capacity } => Some(capacity),
            Recommendation::Hold => None,
        }
    }
}

/// A ceiling as a capacity: never negative, and saturating far above any group's size.
fn ceil_capacity(x: f64) -> u32 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let ceiled = x.ceil();
    if ceiled >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // Within [1, u32::MAX) and whole.
        ceiled as u32
    }
}

/// What `target` recommends at capacity `current` for a period whose datapoint is `value`
/// (`None`: missing), the `missing`-th missing period in a row counting this one.
pub fn recommend(
    target: &Target,
    current: u32,
    value: Option<f64>,
    missing: u32,
) -> Recommendation {
    let Some(value) = value else {
        if target.missing_data == MissingData::Hold || missing < target.fallback_after_periods {
            return Recommendation::Hold;
        }
        let capacity = match target.missing_data {
            MissingData::FallbackIfHigher => current.max(target.fallback_capacity),
            _ => target.fallback_capacity,
        };
        return Recommendation::Fallback { capacity };
    };
    match target.kind {
        TargetKind::Average => {
            let ratio = value / target.target;
            // Inclusive, as the HPA's `isWithin`; the slack absorbs binary rounding (0.55 / 0.5
            // is 1.1000000000000000888), so a value exactly at the edge is within.
            if (ratio - 1.0).abs() <= target.tolerance + 1e-9 {
                return Recommendation::WithinTolerance { capacity: current };
            }
            Recommendation::Formula {
                capacity: ceil_capacity(f64::from(current) * ratio),
            }
        }
        TargetKind::Total => {
            if current == 0 && value <= target.activation_threshold {
                return Recommendation::NotActivated { capacity: 0 };
            }
            Recommendation::Formula {
                capacity: ceil_capacity(value / target.target),
            }
        }
    }
}

/// A policy's proposal at capacity `current`, from this period's `recommended` capacity and the
/// recommendations of its stabilization window (`window`, this one included): a scale-out at
/// once; a scale-in to the window's highest, never below it, and never while `disable_scale_in`.
pub fn stabilize(current: u32, recommended: u32, window: &[u32], disable_scale_in: bool) -> u32 {
    if recommended >= current {
        return recommended;
    }
    if disable_scale_in {
        return current;
    }
    let highest = window.iter().copied().max().unwrap_or(recommended);
    highest.max(recommended).min(current)
}

/// The group's capacity from every policy's proposal (`None`: the policy holds): the largest
/// proposal if any is above `current`; the largest if all are below it; else `current`.
pub fn combine(current: u32, proposals: &[Option<u32>]) -> u32 {
    let largest = proposals.iter().flatten().copied().max();
    match largest {
        Some(largest) if largest > current => largest,
        Some(largest) if proposals.iter().all(|p| p.is_some_and(|p| p < current)) => largest,
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn average(target: f64) -> Target {
        Target {
            target,
            kind: TargetKind::Average,
            tolerance: 0.1,
            activation_threshold: 0.0,
            missing_data: MissingData::Hold,
            fallback_capacity: 0,
            fallback_after_periods: 3,
        }
    }

    fn total(target: f64, activation_threshold: f64) -> Target {
        Target {
            kind: TargetKind::Total,
            activation_threshold,
            ..average(target)
        }
    }

    #[test]
    fn average_follows_the_hpas_ceil_rule_and_tolerance() {
        // HPA doc: desired = ceil(current × value / target).
        let cpu = average(0.5);
        assert_eq!(
            recommend(&cpu, 2, Some(0.9), 0),
            Recommendation::Formula { capacity: 4 }
        );
        assert_eq!(
            recommend(&cpu, 4, Some(0.2), 0),
            Recommendation::Formula { capacity: 2 }
        );
        assert_eq!(
            recommend(&cpu, 3, Some(0.6), 0),
            Recommendation::Formula { capacity: 4 }
        );
        // Within 10 % of the target, inclusive at both ends: the current capacity.
        for value in [0.45, 0.5, 0.55] {
            assert_eq!(
                recommend(&cpu, 7, Some(value), 0),
                Recommendation::WithinTolerance { capacity: 7 },
                "{value}"
            );
        }
        assert_eq!(
            recommend(&cpu, 10, Some(0.56), 0),
            Recommendation::Formula { capacity: 12 }
        );
        // With no servers there is nothing to average: it stays at 0.
        assert_eq!(
            recommend(&cpu, 0, Some(0.9), 0),
            Recommendation::Formula { capacity: 0 }
        );
    }

    #[test]
    fn total_scales_to_and_from_zero_past_the_activation_threshold() {
        let queue = total(100.0, 0.0);
        assert_eq!(
            recommend(&queue, 3, Some(0.0), 0),
            Recommendation::Formula { capacity: 0 }
        );
        assert_eq!(
            recommend(&queue, 0, Some(0.0), 0),
            Recommendation::NotActivated { capacity: 0 }
        );
        assert_eq!(
            recommend(&queue, 0, Some(250.0), 0),
            Recommendation::Formula { capacity: 3 }
        );
        assert_eq!(
            recommend(&queue, 3, Some(250.0), 0),
            Recommendation::Formula { capacity: 3 }
        );
        // KEDA: activation needs a value strictly above the threshold.
        let gated = total(10.0, 50.0);
        assert_eq!(
            recommend(&gated, 0, Some(50.0), 0),
            Recommendation::NotActivated { capacity: 0 }
        );
        assert_eq!(
            recommend(&gated, 0, Some(51.0), 0),
            Recommendation::Formula { capacity: 6 }
        );
        // Above zero the threshold plays no part.
        assert_eq!(
            recommend(&gated, 2, Some(40.0), 0),
            Recommendation::Formula { capacity: 4 }
        );
    }

    #[test]
    fn a_missing_period_is_never_zero_it_holds_or_falls_back_after_enough_of_them() {
        let hold = average(0.5);
        for missing in 1..10 {
            assert_eq!(recommend(&hold, 4, None, missing), Recommendation::Hold);
        }
        let fallback = Target {
            missing_data: MissingData::Fallback,
            fallback_capacity: 2,
            ..average(0.5)
        };
        assert_eq!(recommend(&fallback, 4, None, 2), Recommendation::Hold);
        assert_eq!(
            recommend(&fallback, 4, None, 3),
            Recommendation::Fallback { capacity: 2 }
        );
        let higher = Target {
            missing_data: MissingData::FallbackIfHigher,
            ..fallback
        };
        assert_eq!(
            recommend(&higher, 4, None, 3),
            Recommendation::Fallback { capacity: 4 }
        );
        assert_eq!(
            recommend(&higher, 1, None, 3),
            Recommendation::Fallback { capacity: 2 }
        );
    }

    #[test]
    fn scale_in_waits_for_the_highest_recommendation_of_the_window_then_goes() {
        // At 6: recommendations 6, 3, 2 within the window hold the group at 6.
        assert_eq!(stabilize(6, 3, &[6, 3], false), 6);
        assert_eq!(stabilize(6, 2, &[6, 3, 2], false), 6);
        // Once the 6 has left the window, the highest is 3: the group goes to 3.
        assert_eq!(stabilize(6, 2, &[3, 2], false), 3);
        // A scale-out is never held.
        assert_eq!(stabilize(3, 5, &[2, 2, 5], false), 5);
        // Scale-in disabled: never below the current capacity.
        assert_eq!(stabilize(6, 1, &[1], true), 6);
    }

    #[test]
    fn several_policies_combine_by_awss_rule() {
        // Scale-out if any asks for more, to the largest.
        assert_eq!(combine(4, &[Some(3), Some(6), Some(5)]), 6);
        // Scale-in only when all ask for less, to the largest of them.
        assert_eq!(combine(4, &[Some(2), Some(3)]), 3);
        assert_eq!(combine(4, &[Some(2), Some(4)]), 4);
        // A policy that holds agrees to no scale-in, but does not stop a scale-out.
        assert_eq!(combine(4, &[Some(2), None]), 4);
        assert_eq!(combine(4, &[Some(7), None]), 7);
        assert_eq!(combine(4, &[None]), 4);
    }

    proptest! {
        #[test]
        fn a_recommendation_never_falls_as_the_value_rises(
            target in prop_oneof![1e-300f64..1e300, Just(f64::MIN_POSITIVE)],
            current in any::<u32>(),
            a in any::<f64>().prop_filter("finite", |v| v.is_finite()),
            b in any::<f64>().prop_filter("finite", |v| v.is_finite()),
            kind in prop_oneof![Just(TargetKind::Average), Just(TargetKind::Total)],
        ) {
            // Without a tolerance (which answers the current capacity near the target), a
            // higher value never recommends less, for any numbers.
            let t = Target { kind, tolerance: 0.0, ..average(target) };
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let at = |v| recommend(&t, current, Some(v), 0).capacity().unwrap();
            prop_assert!(at(low) <= at(high), "{} > {}", at(low), at(high));
        }

        #[test]
        fn stabilization_never_scales_in_below_the_windows_highest_nor_out_of_nothing(
            current in 0u32..100,
            window in proptest::collection::vec(0u32..100, 1..10),
            disable in any::<bool>(),
        ) {
            let recommended = *window.last().unwrap();
            let proposal = stabilize(current, recommended, &window, disable);
            if recommended >= current {
                prop_assert_eq!(proposal, recommended);
            } else {
                prop_assert!(proposal <= current);
                prop_assert!(proposal >= recommended);
                let highest = *window.iter().max().unwrap();
                prop_assert!(proposal >= highest.min(current));
                if disable {
                    prop_assert_eq!(proposal, current);
                }
            }
        }

        #[test]
        fn combining_never_scales_in_past_any_policys_proposal(
            current in 0u32..100,
            proposals in proptest::collection::vec(proptest::option::of(0u32..100), 1..6),
        ) {
            let capacity = combine(current, &proposals);
            for proposal in proposals.iter().flatten() {
                if capacity < current {
                    prop_assert!(capacity >= *proposal);
                }
            }
            if proposals.iter().flatten().any(|p| *p > current) {
                prop_assert_eq!(capacity, proposals.iter().flatten().copied().max().unwrap());
            }
        }
    }
}
