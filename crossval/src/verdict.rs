//! Verdicts a user can act on: what kind of difference a position or greedy step shows.
//!
//! The tolerance alone decides ✓/✗ and the exit code; the label explains a ✗:
//!
//! | label | meaning | what to do |
//! |---|---|---|
//! | `match` | within tolerance | nothing |
//! | `drift` | outside the tolerance, both sides still pick the same token | numeric noise or a small bug: `--locate` shows where it grows |
//! | `tie-flip` | the picks differ, but the reference's two best tokens are within [`TIE_MARGIN`] and each side's pick is the other's runner-up | a near tie broken by noise: harmless for greedy text, look at the drift behind it |
//! | `wrong` | anything else: the picks differ for real, or a row is not finite | a real bug: `--locate` names the first diverging tensor |

use serde::{Deserialize, Serialize};

/// The reference's top-2 margin (logits of its best minus its second-best token) below which
/// two swapped picks are a tie: the runner-up then has at least e^-0.1 ≈ 90% of the best
/// token's probability.
pub const TIE_MARGIN: f64 = 0.1;

/// The label of one position or greedy step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Within tolerance.
    Match,
    /// Outside the tolerance, same top-1.
    Drift,
    /// The top-1 differs, the reference's top-2 margin is below [`TIE_MARGIN`] and each
    /// side's choice is the other's runner-up.
    TieFlip,
    /// Anything else.
    Wrong,
}

impl Verdict {
    /// The label as printed and serialised (`match`, `drift`, `tie-flip`, `wrong`).
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::Drift => "drift",
            Verdict::TieFlip => "tie-flip",
            Verdict::Wrong => "wrong",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One side's two best tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopTwo {
    /// The best token.
    pub first: u32,
    /// The runner-up (`None` for a one-token vocabulary).
    pub second: Option<u32>,
    /// Best logit minus the runner-up's (`+∞` without a runner-up).
    pub margin: f64,
}

/// Label a position from its tolerance check and the two sides' best tokens.
pub fn classify(within_tolerance: bool, finite: bool, rust: TopTwo, cpp: TopTwo) -> Verdict {
    if within_tolerance {
        return Verdict::Match;
    }
    if !finite {
        return Verdict::Wrong;
    }
    if rust.first == cpp.first {
        return Verdict::Drift;
    }
    let swapped = rust.second == Some(cpp.first) && cpp.second == Some(rust.first);
    if swapped && cpp.margin < TIE_MARGIN {
        Verdict::TieFlip
    } else {
        Verdict::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(first: u32, second: u32, margin: f64) -> TopTwo {
        TopTwo {
            first,
            second: Some(second),
            margin,
        }
    }

    #[test]
    fn within_tolerance_is_a_match_whatever_the_picks() {
        assert_eq!(
            classify(true, true, top(1, 2, 0.0), top(2, 1, 0.01)),
            Verdict::Match
        );
    }

    #[test]
    fn the_labels_outside_the_tolerance() {
        assert_eq!(
            classify(false, true, top(7, 3, 2.0), top(7, 9, 2.0)),
            Verdict::Drift
        );
        assert_eq!(
            classify(false, true, top(1, 2, 0.02), top(2, 1, 0.05)),
            Verdict::TieFlip
        );
        // Swapped, but the reference was sure: a real difference.
        assert_eq!(
            classify(false, true, top(1, 2, 0.02), top(2, 1, 0.5)),
            Verdict::Wrong
        );
        // A near tie, but the runner-ups are not each other's picks.
        assert_eq!(
            classify(false, true, top(1, 5, 0.02), top(2, 1, 0.05)),
            Verdict::Wrong
        );
        assert_eq!(
            classify(false, false, top(7, 3, 2.0), top(7, 9, 2.0)),
            Verdict::Wrong
        );
    }

    #[test]
    fn labels_print_and_serialise_alike() {
        for v in [
            Verdict::Match,
            Verdict::Drift,
            Verdict::TieFlip,
            Verdict::Wrong,
        ] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.label());
        }
    }
}
