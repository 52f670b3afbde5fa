//! The per-op measures of `--locate`: NMSE as llama.cpp's `test-backend-ops` computes it,
//! largest absolute difference, cosine — per row (one position) and for the whole tensor.

use serde::{Deserialize, Serialize};

use crate::logits_compare::float_repr;

/// One row (one token position) of a tensor, engine against reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowMetrics {
    /// `Σ(a−b)² / Σa²` (a = engine, b = reference), each square taken in f32 and summed in
    /// f64, as `test-backend-ops`' `nmse`; 0 when both sums are 0, +∞ when only the
    /// denominator is.
    pub nmse: f64,
    /// `max |a−b|`.
    pub max_abs_diff: f64,
    /// Cosine similarity (1 when both rows are zero, 0 when one is).
    pub cosine: f64,
    /// No NaN on either side, and every infinite (or ±FLT_MAX) value matched by one of the
    /// same sign on the other: `test-backend-ops`' checks before its NMSE.
    pub finite_match: bool,
}

/// A whole tensor, engine against reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TensorMetrics {
    /// NMSE over every element (as [`RowMetrics::nmse`]).
    #[serde(with = "float_repr")]
    pub nmse: f64,
    /// Largest absolute difference.
    #[serde(with = "float_repr")]
    pub max_abs_diff: f64,
    /// Smallest cosine of a row.
    #[serde(with = "float_repr")]
    pub min_cosine: f64,
}

/// The running sums of one comparison.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    diff_sq: f64,
    engine_sq: f64,
    reference_sq: f64,
    dot: f64,
    max_abs: f64,
    mismatch: bool,
    /// Some pair of values differs (an identical row has cosine exactly 1, not 1 − ε).
    differs: bool,
}

fn inf_or_max(v: f32) -> bool {
    v.is_infinite() || v.abs() == f32::MAX
}

impl Sums {
    fn add(&mut self, a: &[f32], b: &[f32]) {
        for (&x, &y) in a.iter().zip(b) {
            if x.is_nan()
                || y.is_nan()
                || inf_or_max(x) != inf_or_max(y)
                || (inf_or_max(x) && x.is_sign_negative() != y.is_sign_negative())
            {
                self.mismatch = true;
            }
            self.differs |= x != y;
            let d = x - y;
            self.diff_sq += (d * d) as f64;
            self.engine_sq += (x * x) as f64;
            self.reference_sq += y as f64 * y as f64;
            self.dot += x as f64 * y as f64;
            let ad = (x as f64 - y as f64).abs();
            if ad > self.max_abs || ad.is_nan() {
                self.max_abs = ad;
            }
        }
    }

    fn nmse(&self) -> f64 {
        if self.engine_sq > 0.0 {
            self.diff_sq / self.engine_sq
        } else if self.diff_sq == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    }

    fn cosine(&self) -> f64 {
        let identical = !self.differs && !self.mismatch;
        if identical || (self.engine_sq == 0.0 && self.reference_sq == 0.0) {
            1.0
        } else if self.engine_sq == 0.0 || self.reference_sq == 0.0 {
            0.0
        } else {
            (self.dot / (self.engine_sq * self.reference_sq).sqrt()).clamp(-1.0, 1.0)
        }
    }
}

/// Compare one row.
pub fn row_metrics(engine: &[f32], reference: &[f32]) -> RowMetrics {
    let mut s = Sums::default();
    s.add(engine, reference);
    RowMetrics {
        nmse: s.nmse(),
        max_abs_diff: s.max_abs,
        cosine: s.cosine(),
        finite_match: !s.mismatch,
    }
}

/// Compare two tensors of `rows` equal rows: the whole-tensor metrics and each row's.
pub fn tensor_metrics(
    engine: &[f32],
    reference: &[f32],
    row_len: usize,
) -> (TensorMetrics, Vec<RowMetrics>) {
    let mut total = Sums::default();
    let mut rows = Vec::new();
    for (a, b) in engine
        .chunks(row_len.max(1))
        .zip(reference.chunks(row_len.max(1)))
    {
        let mut s = Sums::default();
        s.add(a, b);
        total.diff_sq += s.diff_sq;
        total.engine_sq += s.engine_sq;
        total.reference_sq += s.reference_sq;
        total.dot += s.dot;
        total.mismatch |= s.mismatch;
        total.differs |= s.differs;
        if s.max_abs > total.max_abs || s.max_abs.is_nan() {
            total.max_abs = s.max_abs;
        }
        rows.push(RowMetrics {
            nmse: s.nmse(),
            max_abs_diff: s.max_abs,
            cosine: s.cosine(),
            finite_match: !s.mismatch,
        });
    }
    let min_cosine = rows.iter().map(|r| r.cosine).fold(f64::INFINITY, |m, c| {
        if c.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.min(c)
        }
    });
    (
        TensorMetrics {
            nmse: total.nmse(),
            max_abs_diff: total.max_abs,
            min_cosine: if rows.is_empty() { 1.0 } else { min_cosine },
        },
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmse_divides_by_the_engine_side_as_test_backend_ops() {
        let m = row_metrics(&[1.0, 1.0], &[1.0, 0.0]);
        assert_eq!(m.nmse, 0.5);
        assert_eq!(m.max_abs_diff, 1.0);
        assert!((m.cosine - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert!(m.finite_match);
        let same = row_metrics(&[0.5, -2.0, 3.0], &[0.5, -2.0, 3.0]);
        assert_eq!((same.nmse, same.max_abs_diff, same.cosine), (0.0, 0.0, 1.0));
        // Identical rows have cosine exactly 1, however their sums round.
        let v: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 1.7).collect();
        assert_eq!(row_metrics(&v, &v).cosine, 1.0);
        assert_eq!(row_metrics(&[0.0], &[0.0]).nmse, 0.0);
        assert_eq!(row_metrics(&[0.0], &[1.0]).nmse, f64::INFINITY);
    }

    #[test]
    fn non_finite_values_must_match() {
        assert!(!row_metrics(&[f32::NAN], &[f32::NAN]).finite_match);
        assert!(row_metrics(&[f32::INFINITY], &[f32::MAX]).finite_match);
        assert!(!row_metrics(&[f32::INFINITY], &[f32::NEG_INFINITY]).finite_match);
        assert!(!row_metrics(&[f32::INFINITY], &[1.0]).finite_match);
    }

    #[test]
    fn tensors_sum_over_every_row() {
        let (t, rows) = tensor_metrics(&[1.0, 0.0, 1.0, 1.0], &[1.0, 0.0, 1.0, 0.0], 2);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].nmse, 0.0);
        assert_eq!(rows[1].nmse, 0.5);
        assert_eq!(t.nmse, 1.0 / 3.0);
        assert_eq!(t.max_abs_diff, 1.0);
        assert_eq!(t.min_cosine, rows[1].cosine);
    }
}
