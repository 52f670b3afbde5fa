//! When a tensor counts as diverged: one measure and its bound (`--locate-tol`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::metrics::RowMetrics;

/// What `--locate` compares a tensor's rows by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// Normalised mean squared error, as llama.cpp's `test-backend-ops` computes it:
    /// `Σ(a−b)² / Σa²`, a = engine, b = reference (diverged above the bound).
    Nmse,
    /// Cosine similarity (diverged below the bound).
    Cos,
    /// Largest absolute difference (diverged above the bound).
    MaxAbs,
}

impl Measure {
    /// The bound used when `--locate-tol` names the measure without a value, or is absent
    /// (NMSE): ten times `test-backend-ops`' per-op NMSE bound of 1e-7, since a tensor of a
    /// model also carries what the ops before it added; cosine and max |Δ| bounds of the
    /// same strictness for activations of order one.
    pub fn default_bound(self) -> f64 {
        match self {
            Measure::Nmse => 1e-6,
            Measure::Cos => 0.99999,
            Measure::MaxAbs => 1e-3,
        }
    }

    /// `nmse`, `cos` or `max-abs`.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Nmse => "nmse",
            Measure::Cos => "cos",
            Measure::MaxAbs => "max-abs",
        }
    }
}

/// One measure and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocateTolerance {
    /// The measure.
    pub measure: Measure,
    /// Its bound.
    pub bound: f64,
}

impl Default for LocateTolerance {
    fn default() -> Self {
        LocateTolerance {
            measure: Measure::Nmse,
            bound: Measure::Nmse.default_bound(),
        }
    }
}

impl LocateTolerance {
    /// Whether a row is beyond the tolerance (a non-finite difference always is).
    pub fn beyond(&self, m: &RowMetrics) -> bool {
        if !m.finite_match {
            return true;
        }
        match self.measure {
            Measure::Nmse => m.nmse.is_nan() || m.nmse > self.bound,
            Measure::Cos => m.cosine.is_nan() || m.cosine < self.bound,
            Measure::MaxAbs => m.max_abs_diff.is_nan() || m.max_abs_diff > self.bound,
        }
    }
}

/// `nmse ≤ 1e-06`, `cos ≥ 0.99999`, `max-abs ≤ 1e-03`.
impl fmt::Display for LocateTolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.measure {
            Measure::Cos => write!(f, "cos ≥ {}", self.bound),
            m => write!(f, "{} ≤ {:e}", m.name(), self.bound),
        }
    }
}

/// `MEASURE[=VALUE]`: `nmse`, `cos` or `max-abs`, with the measure's default bound when the
/// value is left out.
impl std::str::FromStr for LocateTolerance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        let measure = match name {
            "nmse" => Measure::Nmse,
            "cos" | "cosine" => Measure::Cos,
            "max-abs" | "max_abs" => Measure::MaxAbs,
            _ => {
                return Err(format!(
                    "unknown --locate-tol measure {name:?} (valid: nmse[=V], cos[=V], max-abs[=V])"
                ))
            }
        };
        let bound = match value {
            None => measure.default_bound(),
            Some(v) => v
                .parse::<f64>()
                .map_err(|_| format!("--locate-tol {s}: {v:?} is not a number"))?,
        };
        let valid = match measure {
            Measure::Cos => bound.is_finite() && (-1.0..=1.0).contains(&bound),
            _ => bound.is_finite() && bound >= 0.0,
        };
        if !valid {
            return Err(format!(
                "--locate-tol {s}: the {} bound must be {}",
                measure.name(),
                if measure == Measure::Cos {
                    "between -1 and 1"
                } else {
                    "a finite number ≥ 0"
                }
            ));
        }
        Ok(LocateTolerance { measure, bound })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_parse_with_defaults_per_measure() {
        let t: LocateTolerance = "nmse".parse().unwrap();
        assert_eq!((t.measure, t.bound), (Measure::Nmse, 1e-6));
        let t: LocateTolerance = "cos=0.999".parse().unwrap();
        assert_eq!((t.measure, t.bound), (Measure::Cos, 0.999));
        let t: LocateTolerance = "max-abs=0.5".parse().unwrap();
        assert_eq!((t.measure, t.bound), (Measure::MaxAbs, 0.5));
        assert_eq!(LocateTolerance::default().to_string(), "nmse ≤ 1e-6");
        for bad in [
            "kl",
            "nmse=x",
            "nmse=-1",
            "cos=2",
            "max-abs=inf",
            "nmse=NaN",
        ] {
            assert!(bad.parse::<LocateTolerance>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_measure_decides_by_its_own_direction() {
        let row = RowMetrics {
            nmse: 1e-4,
            max_abs_diff: 0.01,
            cosine: 0.9999,
            finite_match: true,
        };
        let t = |s: &str| s.parse::<LocateTolerance>().unwrap();
        assert!(t("nmse=1e-5").beyond(&row));
        assert!(!t("nmse=1e-3").beyond(&row));
        assert!(t("cos=0.99999").beyond(&row));
        assert!(!t("cos=0.999").beyond(&row));
        assert!(!t("max-abs=0.1").beyond(&row));
        let nan = RowMetrics {
            finite_match: false,
            ..row
        };
        assert!(t("max-abs=1e9").beyond(&nan));
    }
}
