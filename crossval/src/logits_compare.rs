//! Per-position comparison of two logits matrices.
//!
//! Both sides are row-major `[n_positions × n_vocab]` `f32` matrices ([`LogitsMatrix`]). For each
//! position `t`, with `a` the Rust row and `b` the C++ (reference) row:
//!
//! | metric | definition |
//! |---|---|
//! | `cosine` | `a·b / (‖a‖ ‖b‖)`, clamped to [-1, 1]; 1 when both rows are all zero, 0 when exactly one is |
//! | `l2` | `‖a − b‖₂` |
//! | `max_abs_diff` | `maxᵢ |aᵢ − bᵢ|` |
//! | `nmse` | `Σ(aᵢ − bᵢ)² / Σbᵢ²`; 0 when both sums are 0, +∞ when only the denominator is |
//! | `kl` | `KL(p_cpp ‖ p_rust) = Σ p_cpp,ᵢ (log p_cpp,ᵢ − log p_rust,ᵢ)` with `p = softmax(row)` |
//! | `top1_match` | the arg-max ids agree (ties: the lowest id wins, as in greedy sampling) |
//! | `top5_overlap` | number of ids present in both top-5 sets, 0..=5 |
//! | `rust_top2`, `cpp_top2` | the runner-up ids (absent for a one-token vocabulary) |
//! | `cpp_top2_margin` | the C++ row's best logit minus its runner-up's |
//! | `ok` | every value finite and `cosine ≥ cos_tol` |
//! | `label` | [`Verdict`]: `match` when ok, else `drift`, `tie-flip` or `wrong` ([`crate::verdict`]) |
//!
//! Positions are independent; inputs of a million values or more are split across the available
//! cores (the result does not depend on the split). All sums are accumulated in `f64`; the softmax is computed stably (log-sum-exp after
//! subtracting the row maximum) and the KL is clamped at 0 against rounding.
//!
//! Non-finite input (NaN or ±∞ anywhere in either row) makes the position not ok; the counts are
//! reported in `rust_non_finite` / `cpp_non_finite` and the metrics that depend on them are NaN.
//! In JSON, non-finite metric values are written as the strings `"NaN"`, `"inf"`, `"-inf"` so
//! that they survive a round trip.
//!
//! Shape errors — an empty vocabulary, a length that is not a multiple of the vocabulary, two
//! different vocabulary sizes, two different position counts, no positions, an invalid
//! tolerance — are [`LogitsCompareError`]s.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::verdict::{classify, TopTwo, Verdict};

/// Which side of the comparison a shape problem is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The Rust engine's logits.
    Rust,
    /// The C++ reference's logits.
    Cpp,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Rust => "Rust",
            Side::Cpp => "C++",
        })
    }
}

/// Why two logits matrices cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogitsCompareError {
    /// A vocabulary size of 0 was given.
    #[error("{side} logits: vocabulary size is 0")]
    EmptyVocab {
        /// The side.
        side: Side,
    },
    /// The data length is not a whole number of rows.
    #[error("{side} logits: {len} values is not a multiple of the vocabulary size {n_vocab}")]
    RaggedRows {
        /// The side.
        side: Side,
        /// Number of values given.
        len: usize,
        /// The vocabulary size given.
        n_vocab: usize,
    },
    /// The two sides have different vocabulary sizes (different models or output heads).
    #[error(
        "vocabulary size mismatch: Rust logits have {rust} entries per position, C++ logits {cpp} \
         (are both sides running the same model?)"
    )]
    VocabMismatch {
        /// Rust vocabulary size.
        rust: usize,
        /// C++ vocabulary size.
        cpp: usize,
    },
    /// The two sides have different numbers of positions.
    #[error("position count mismatch: Rust has {rust} positions, C++ has {cpp}")]
    PositionMismatch {
        /// Rust position count.
        rust: usize,
        /// C++ position count.
        cpp: usize,
    },
    /// There is nothing to compare.
    #[error("no positions to compare")]
    NoPositions,
    /// The cosine tolerance is not a finite number in [-1, 1].
    #[error("cosine tolerance {0} is not a finite number in [-1, 1]")]
    InvalidTolerance(f64),
}

/// A borrowed row-major `[n_positions × n_vocab]` logits matrix.
#[derive(Debug, Clone, Copy)]
pub struct LogitsMatrix<'a> {
    data: &'a [f32],
    n_vocab: usize,
    side: Side,
}

impl<'a> LogitsMatrix<'a> {
    /// Wraps `data` (row-major, `n_vocab` values per position), checking the shape.
    pub fn new(side: Side, data: &'a [f32], n_vocab: usize) -> Result<Self, LogitsCompareError> {
        if n_vocab == 0 {
            return Err(LogitsCompareError::EmptyVocab { side });
        }
        if !data.len().is_multiple_of(n_vocab) {
            return Err(LogitsCompareError::RaggedRows {
                side,
                len: data.len(),
                n_vocab,
            });
        }
        Ok(LogitsMatrix {
            data,
            n_vocab,
            side,
        })
    }

    /// The Rust side's matrix.
    pub fn rust(data: &'a [f32], n_vocab: usize) -> Result<Self, LogitsCompareError> {
        Self::new(Side::Rust, data, n_vocab)
    }

    /// The C++ side's matrix.
    pub fn cpp(data: &'a [f32], n_vocab: usize) -> Result<Self, LogitsCompareError> {
        Self::new(Side::Cpp, data, n_vocab)
    }

    /// Values per position.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Number of positions (rows).
    pub fn n_positions(&self) -> usize {
        self.data.len() / self.n_vocab
    }

    /// The side this matrix belongs to.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Row `t`.
    pub fn row(&self, t: usize) -> &'a [f32] {
        &self.data[t * self.n_vocab..(t + 1) * self.n_vocab]
    }
}

/// Serde helpers writing non-finite `f64`s as the strings `"NaN"`, `"inf"`, `"-inf"`.
pub mod float_repr {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `v` as a JSON number, or as `"NaN"`/`"inf"`/`"-inf"` when not finite.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    /// Accepts what [`serialize`] writes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(f64),
            Str(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Str(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"NaN\", \"inf\" or \"-inf\", found {other:?}"
                ))),
            },
        }
    }
}

/// The metrics of one position (see the module docs for the definitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionMetrics {
    /// Position index (0-based).
    pub position: usize,
    /// Cosine similarity.
    #[serde(with = "float_repr")]
    pub cosine: f64,
    /// L2 norm of the difference.
    #[serde(with = "float_repr")]
    pub l2: f64,
    /// Largest absolute difference.
    #[serde(with = "float_repr")]
    pub max_abs_diff: f64,
    /// Normalised mean squared error `Σ(a−b)²/Σb²` (b = C++).
    #[serde(with = "float_repr")]
    pub nmse: f64,
    /// KL(p_cpp ‖ p_rust) in nats.
    #[serde(with = "float_repr")]
    pub kl: f64,
    /// Arg-max id of the Rust row.
    pub rust_top1: u32,
    /// Arg-max id of the C++ row.
    pub cpp_top1: u32,
    /// The arg-max ids agree.
    pub top1_match: bool,
    /// Ids shared by the two top-5 sets (0..=5; fewer than 5 when the vocabulary is smaller).
    pub top5_overlap: u8,
    /// Second-best id of the Rust row.
    pub rust_top2: Option<u32>,
    /// Second-best id of the C++ row.
    pub cpp_top2: Option<u32>,
    /// The C++ row's best logit minus its second best (`inf` without a second).
    #[serde(with = "float_repr")]
    pub cpp_top2_margin: f64,
    /// Number of NaN/±∞ values in the Rust row.
    pub rust_non_finite: usize,
    /// Number of NaN/±∞ values in the C++ row.
    pub cpp_non_finite: usize,
    /// Within tolerance: all finite and `cosine ≥ cos_tol`.
    pub ok: bool,
    /// What kind of difference this is (`match` exactly when `ok`).
    pub label: Verdict,
}

/// Summary over all positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitsSummary {
    /// Number of positions compared.
    pub n_positions: usize,
    /// The first position that is not ok (cosine below tolerance or non-finite), if any.
    pub first_divergent_position: Option<usize>,
    /// Smallest cosine (NaN if any cosine is NaN).
    #[serde(with = "float_repr")]
    pub min_cosine: f64,
    /// Largest KL (NaN if any KL is NaN).
    #[serde(with = "float_repr")]
    pub max_kl: f64,
    /// Mean KL.
    #[serde(with = "float_repr")]
    pub mean_kl: f64,
    /// Fraction of positions whose arg-max agrees (0..=1).
    pub top1_agreement_rate: f64,
    /// Largest absolute difference over all positions.
    #[serde(with = "float_repr")]
    pub max_abs_diff: f64,
    /// The tolerance used.
    pub cos_tol: f64,
    /// Every position is ok.
    pub all_ok: bool,
}

/// The result of [`compare_logits`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitsComparison {
    /// One entry per position, in order.
    pub positions: Vec<PositionMetrics>,
    /// The summary.
    pub summary: LogitsSummary,
}

impl LogitsComparison {
    /// Every position is within tolerance.
    pub fn ok(&self) -> bool {
        self.summary.all_ok
    }

    /// What the NaN/±∞ values in the two matrices say, when there are any.
    pub fn non_finite(&self) -> Option<NonFinite> {
        let rust: Vec<usize> = self
            .positions
            .iter()
            .filter(|p| p.rust_non_finite > 0)
            .map(|p| p.position)
            .collect();
        let cpp: Vec<usize> = self
            .positions
            .iter()
            .filter(|p| p.cpp_non_finite > 0)
            .map(|p| p.position)
            .collect();
        if rust.is_empty() && cpp.is_empty() {
            return None;
        }
        let alike = self
            .positions
            .iter()
            .all(|p| p.rust_non_finite == p.cpp_non_finite);
        Some(if alike {
            NonFinite::BothAlike { positions: rust }
        } else {
            NonFinite::Differ { rust, cpp }
        })
    }
}

/// Non-finite logits, classified. Either way there are no numbers to compare at those
/// positions; which case it is tells the user where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonFinite {
    /// Both sides have exactly as many NaN/±∞ values at every position: the engine reproduces
    /// the reference's arithmetic, and the model itself produces them (non-finite weights or
    /// hyper-parameters).
    BothAlike {
        /// The positions with non-finite values.
        positions: Vec<usize>,
    },
    /// The sides differ: a real numerical difference.
    Differ {
        /// Positions where the Rust logits have non-finite values.
        rust: Vec<usize>,
        /// Positions where the C++ logits have non-finite values.
        cpp: Vec<usize>,
    },
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |p: &[usize]| {
            let shown: Vec<String> = p.iter().take(16).map(usize::to_string).collect();
            let more = if p.len() > 16 { ", …" } else { "" };
            if p.is_empty() {
                "none".to_string()
            } else {
                format!("{}{more}", shown.join(", "))
            }
        };
        match self {
            NonFinite::BothAlike { positions } => write!(
                f,
                "non-finite logits (NaN/±inf) on both sides alike, at positions {}: the engine \
                 reproduces the C++ reference, and the model itself produces them (its weights \
                 or hyper-parameters hold non-finite values); there is nothing to compare",
                list(positions)
            ),
            NonFinite::Differ { rust, cpp } => write!(
                f,
                "non-finite logits (NaN/±inf): Rust at positions {}, C++ at positions {}",
                list(rust),
                list(cpp)
            ),
        }
    }
}

fn check_tolerance(cos_tol: f64) -> Result<(), LogitsCompareError> {
    if cos_tol.is_finite() && (-1.0..=1.0).contains(&cos_tol) {
        Ok(())
    } else {
        Err(LogitsCompareError::InvalidTolerance(cos_tol))
    }
}

/// Compares every position of two logits matrices with one cosine tolerance.
pub fn compare_logits(
    rust: LogitsMatrix<'_>,
    cpp: LogitsMatrix<'_>,
    cos_tol: f64,
) -> Result<LogitsComparison, LogitsCompareError> {
    check_tolerance(cos_tol)?;
    if rust.n_vocab != cpp.n_vocab {
        return Err(LogitsCompareError::VocabMismatch {
            rust: rust.n_vocab,
            cpp: cpp.n_vocab,
        });
    }
    let n = rust.n_positions();
    if n != cpp.n_positions() {
        return Err(LogitsCompareError::PositionMismatch {
            rust: n,
            cpp: cpp.n_positions(),
        });
    }
    if n == 0 {
        return Err(LogitsCompareError::NoPositions);
    }
    let positions = all_metrics(&rust, &cpp, cos_tol);
    let summary = summarize(&positions, cos_tol);
    Ok(LogitsComparison { positions, summary })
}

/// Compares one pair of rows (e.g. a greedy decode step) as position `position`.
pub fn compare_position(
    position: usize,
    rust_row: &[f32],
    cpp_row: &[f32],
    cos_tol: f64,
) -> Result<PositionMetrics, LogitsCompareError> {
    check_tolerance(cos_tol)?;
    if rust_row.len() != cpp_row.len() {
        return Err(LogitsCompareError::VocabMismatch {
            rust: rust_row.len(),
            cpp: cpp_row.len(),
        });
    }
    if rust_row.is_empty() {
        return Err(LogitsCompareError::EmptyVocab { side: Side::Rust });
    }
    Ok(metrics(position, rust_row, cpp_row, cos_tol))
}

/// Metrics of every position; large inputs are split across the available cores (each position
/// is computed independently, so the result does not depend on the split).
fn all_metrics(
    rust: &LogitsMatrix<'_>,
    cpp: &LogitsMatrix<'_>,
    cos_tol: f64,
) -> Vec<PositionMetrics> {
    /// Below this many values per side, threads cost more than they save.
    const PARALLEL_MIN_VALUES: usize = 1 << 20;
    let n = rust.n_positions();
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(n);
    let one = |t: usize| metrics(t, rust.row(t), cpp.row(t), cos_tol);
    if threads <= 1 || rust.data.len() < PARALLEL_MIN_VALUES {
        return (0..n).map(one).collect();
    }
    let per_thread = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(per_thread)
            .map(|start| {
                let end = (start + per_thread).min(n);
                scope.spawn(move || (start..end).map(one).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

fn summarize(positions: &[PositionMetrics], cos_tol: f64) -> LogitsSummary {
    // NaN-propagating min/max: f64::min/max would silently drop a NaN.
    let nan_min = |acc: f64, v: f64| {
        if acc.is_nan() || v.is_nan() {
            f64::NAN
        } else {
            acc.min(v)
        }
    };
    let nan_max = |acc: f64, v: f64| {
        if acc.is_nan() || v.is_nan() {
            f64::NAN
        } else {
            acc.max(v)
        }
    };
    let n = positions.len();
    LogitsSummary {
        n_positions: n,
        first_divergent_position: positions.iter().find(|p| !p.ok).map(|p| p.position),
        min_cosine: positions
            .iter()
            .map(|p| p.cosine)
            .fold(f64::INFINITY, nan_min),
        max_kl: positions.iter().map(|p| p.kl).fold(0.0, nan_max),
        mean_kl: positions.iter().map(|p| p.kl).sum::<f64>() / n.max(1) as f64,
        top1_agreement_rate: positions.iter().filter(|p| p.top1_match).count() as f64
            / n.max(1) as f64,
        max_abs_diff: positions.iter().map(|p| p.max_abs_diff).fold(0.0, nan_max),
        cos_tol,
        all_ok: positions.iter().all(|p| p.ok),
    }
}

/// The five largest values of a row with their ids, best first (ties: lower id first).
#[derive(Clone, Copy)]
struct Top5 {
    ids: [u32; 5],
    vals: [f32; 5],
    len: usize,
}

impl Top5 {
    fn new() -> Self {
        Top5 {
            ids: [0; 5],
            vals: [f32::NEG_INFINITY; 5],
            len: 0,
        }
    }

    #[inline]
    fn push(&mut self, id: u32, v: f32) {
        // Strict `>` keeps the earlier (lower) id on ties; NaN never enters.
        if v.is_nan() || (self.len == 5 && v <= self.vals[4]) {
            return;
        }
        let mut i = if self.len < 5 {
            self.len += 1;
            self.len - 1
        } else {
            4
        };
        while i > 0 && v > self.vals[i - 1] {
            self.vals[i] = self.vals[i - 1];
            self.ids[i] = self.ids[i - 1];
            i -= 1;
        }
        self.vals[i] = v;
        self.ids[i] = id;
    }

    fn ids(&self) -> &[u32] {
        &self.ids[..self.len]
    }

    /// The best two ids and the margin between them.
    fn top_two(&self) -> TopTwo {
        TopTwo {
            first: self
                .ids
                .first()
                .copied()
                .filter(|_| self.len > 0)
                .unwrap_or(0),
            second: (self.len > 1).then_some(self.ids[1]),
            margin: if self.len > 1 {
                self.vals[0] as f64 - self.vals[1] as f64
            } else {
                f64::INFINITY
            },
        }
    }
}

/// Per-row statistics gathered in the first pass.
struct RowPass {
    dot: f64,
    norm_a: f64,
    norm_b: f64,
    diff_sq: f64,
    max_abs_diff: f64,
    max_a: f32,
    max_b: f32,
    non_finite_a: usize,
    non_finite_b: usize,
}

/// Runs `$body` (an `#[inline(always)]` function) compiled for AVX2 when the CPU has it, else for
/// the baseline target. The arithmetic and its order are identical in both builds (no FMA
/// contraction, same lane structure), so the results are bit-identical; AVX2 only doubles the
/// vector width of the `f64` lanes.
macro_rules! dispatch_avx2 {
    ($avx2:ident, $body:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2($($arg: $ty),*) -> $ret {
            $body($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of
                // a `target_feature(enable = "avx2")` function.
                return unsafe { $avx2($($arg),*) };
            }
        }
        $body($($arg),*)
    }};
}

fn first_pass(a: &[f32], b: &[f32]) -> RowPass {
    dispatch_avx2!(first_pass_avx2, first_pass_body, (a: &[f32], b: &[f32]) -> RowPass)
}

#[inline(always)]
fn first_pass_body(a: &[f32], b: &[f32]) -> RowPass {
    const LANES: usize = 8;
    let mut dot = [0f64; LANES];
    let mut na = [0f64; LANES];
    let mut nb = [0f64; LANES];
    let mut dsq = [0f64; LANES];
    let mut mad = [0f64; LANES];
    let mut ma = [f32::NEG_INFINITY; LANES];
    let mut mb = [f32::NEG_INFINITY; LANES];
    let mut nfa = 0usize;
    let mut nfb = 0usize;
    let mut step = |l: usize, x: f32, y: f32| {
        let (xd, yd) = (f64::from(x), f64::from(y));
        let d = xd - yd;
        dot[l] += xd * yd;
        na[l] += xd * xd;
        nb[l] += yd * yd;
        dsq[l] += d * d;
        // `>` is false for NaN: NaNs are counted below instead.
        if d.abs() > mad[l] {
            mad[l] = d.abs();
        }
        if x > ma[l] {
            ma[l] = x;
        }
        if y > mb[l] {
            mb[l] = y;
        }
        nfa += usize::from(!x.is_finite());
        nfb += usize::from(!y.is_finite());
    };
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            step(l, xa[l], xb[l]);
        }
    }
    for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        step(l, x, y);
    }
    RowPass {
        dot: dot.iter().sum(),
        norm_a: na.iter().sum(),
        norm_b: nb.iter().sum(),
        diff_sq: dsq.iter().sum(),
        max_abs_diff: mad.iter().copied().fold(0.0, f64::max),
        max_a: ma.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        max_b: mb.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        non_finite_a: nfa,
        non_finite_b: nfb,
    }
}

fn top5(row: &[f32]) -> Top5 {
    let mut t = Top5::new();
    for (i, &v) in row.iter().enumerate() {
        t.push(i as u32, v);
    }
    t
}

fn metrics(position: usize, a: &[f32], b: &[f32], cos_tol: f64) -> PositionMetrics {
    let p = first_pass(a, b);
    let finite = p.non_finite_a == 0 && p.non_finite_b == 0;
    let (ta, tb) = (top5(a), top5(b));
    let top5_overlap = ta.ids().iter().filter(|id| tb.ids().contains(id)).count() as u8;
    let rust_top1 = ta.ids().first().copied().unwrap_or(0);
    let cpp_top1 = tb.ids().first().copied().unwrap_or(0);

    let (cosine, l2, max_abs_diff, nmse, kl) = if finite {
        let cosine = if p.norm_a == 0.0 && p.norm_b == 0.0 {
            1.0
        } else if p.norm_a == 0.0 || p.norm_b == 0.0 {
            0.0
        } else {
            (p.dot / (p.norm_a * p.norm_b).sqrt()).clamp(-1.0, 1.0)
        };
        let nmse = if p.norm_b > 0.0 {
            p.diff_sq / p.norm_b
        } else if p.diff_sq == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        (
            cosine,
            p.diff_sq.sqrt(),
            p.max_abs_diff,
            nmse,
            kl_cpp_rust(a, b, p.max_a, p.max_b),
        )
    } else {
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN)
    };
    PositionMetrics {
        position,
        cosine,
        l2,
        max_abs_diff,
        nmse,
        kl,
        rust_top1,
        cpp_top1,
        top1_match: finite && rust_top1 == cpp_top1,
        top5_overlap,
        rust_top2: ta.top_two().second,
        cpp_top2: tb.top_two().second,
        cpp_top2_margin: tb.top_two().margin,
        rust_non_finite: p.non_finite_a,
        cpp_non_finite: p.non_finite_b,
        ok: finite && cosine >= cos_tol,
        label: classify(
            finite && cosine >= cos_tol,
            finite,
            ta.top_two(),
            tb.top_two(),
        ),
    }
}

/// KL(softmax(b) ‖ softmax(a)) for finite rows, stable and accumulated in f64.
///
/// With `la = a − LSE(a)`, `lb = b − LSE(b)` and `Σ p_b = 1`:
/// `KL = Σ p_b (b − a) − LSE(b) + LSE(a)`, where `p_b = exp(b − max_b) / Z_b`.
fn kl_cpp_rust(a: &[f32], b: &[f32], max_a: f32, max_b: f32) -> f64 {
    dispatch_avx2!(
        kl_avx2,
        kl_body,
        (a: &[f32], b: &[f32], max_a: f32, max_b: f32) -> f64
    )
}

#[inline(always)]
fn kl_body(a: &[f32], b: &[f32], max_a: f32, max_b: f32) -> f64 {
    const LANES: usize = 4;
    let (ma, mb) = (f64::from(max_a), f64::from(max_b));
    let mut za = [0f64; LANES];
    let mut zb = [0f64; LANES];
    let mut weighted = [0f64; LANES];
    let mut step = |l: usize, x: f32, y: f32| {
        let (x, y) = (f64::from(x), f64::from(y));
        let eb = exp_non_positive(y - mb);
        za[l] += exp_non_positive(x - ma);
        zb[l] += eb;
        weighted[l] += eb * (y - x);
    };
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            step(l, xa[l], xb[l]);
        }
    }
    for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        step(l, x, y);
    }
    let (za, zb): (f64, f64) = (za.iter().sum(), zb.iter().sum());
    let weighted: f64 = weighted.iter().sum();
    let lse_a = ma + za.ln();
    let lse_b = mb + zb.ln();
    (weighted / zb - lse_b + lse_a).max(0.0)
}

/// `ln Σ exp(rowᵢ)` for a finite, non-empty row, stable (the maximum is subtracted first) and
/// accumulated in `f64` with the same `exp` as the KL above; −∞ for an empty row. The
/// statistics ([`crate::stats`]) turn a logit into a log-probability with it.
pub(crate) fn log_sum_exp(row: &[f32]) -> f64 {
    dispatch_avx2!(lse_avx2, lse_body, (row: &[f32]) -> f64)
}

#[inline(always)]
fn lse_body(row: &[f32]) -> f64 {
    const LANES: usize = 4;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = f64::from(max);
    let mut z = [0f64; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            z[l] += exp_non_positive(f64::from(c[l]) - m);
        }
    }
    for (l, &x) in chunks.remainder().iter().enumerate() {
        z[l] += exp_non_positive(f64::from(x) - m);
    }
    m + z.iter().sum::<f64>().ln()
}

/// `exp(x)` for finite `x ≤ 0` (a logit minus its row maximum), to within 2 ulp, written without
/// branches or library calls so that the compiler can vectorise the softmax loops.
///
/// `x = k·ln2 + r` with `k` an integer (rounded with the 1.5·2⁵² trick) and `|r| ≤ ln2/2`;
/// `exp(r)` by its Taylor polynomial of degree 13 (truncation error < 5e-18); `2^k` built from
/// its exponent bits. Below −708 the result is flushed to 0 (the true value is < 3.3e-308, and
/// the sums it feeds are ≥ 1).
#[inline(always)]
fn exp_non_positive(x: f64) -> f64 {
    // fdlibm's split of ln 2: LN2_HI has 32 significant bits, so k·LN2_HI is exact.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
    const INV_FACT: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let xc = x.max(-708.0);
    let shifted = xc * INV_LN2 + ROUND;
    let k = shifted - ROUND;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let mut p = INV_FACT[13];
    for c in INV_FACT[..13].iter().rev() {
        p = p * r + c;
    }
    // The low bits of `shifted` hold k (two's complement); k + 1023 is the biased exponent.
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    let y = p * scale;
    if x < -708.0 {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &[f32], b: &[f32], n_vocab: usize, tol: f64) -> LogitsComparison {
        compare_logits(
            LogitsMatrix::rust(a, n_vocab).expect("rust shape"),
            LogitsMatrix::cpp(b, n_vocab).expect("cpp shape"),
            tol,
        )
        .expect("compare")
    }

    fn naive_kl(a: &[f32], b: &[f32]) -> f64 {
        let soft = |x: &[f32]| {
            let z: f64 = x.iter().map(|&v| f64::from(v).exp()).sum();
            x.iter()
                .map(|&v| f64::from(v).exp() / z)
                .collect::<Vec<f64>>()
        };
        let (pa, pb) = (soft(a), soft(b));
        pb.iter().zip(&pa).map(|(q, p)| q * (q / p).ln()).sum()
    }

    #[test]
    fn identical_rows_are_perfect() {
        let a = [0.5, -1.0, 3.0, 2.0, 0.0, 1.0, -2.0];
        let c = cmp(&a, &a, 7, 0.999);
        let p = &c.positions[0];
        assert_eq!(p.cosine, 1.0);
        assert_eq!((p.l2, p.max_abs_diff, p.nmse), (0.0, 0.0, 0.0));
        assert!(p.kl.abs() < 1e-15);
        assert!(p.top1_match && p.ok);
        assert_eq!((p.rust_top1, p.top5_overlap), (2, 5));
        assert!(c.ok());
    }

    #[test]
    fn known_values() {
        let c = cmp(&[1.0, 0.0], &[0.0, 1.0], 2, 0.5);
        let p = &c.positions[0];
        assert_eq!(p.cosine, 0.0);
        assert!((p.l2 - 2f64.sqrt()).abs() < 1e-15);
        assert_eq!(p.max_abs_diff, 1.0);
        assert_eq!(p.nmse, 2.0);
        assert!(!p.top1_match && !p.ok);
        assert_eq!((p.rust_top1, p.cpp_top1, p.top5_overlap), (0, 1, 2));
        // KL(p_cpp || p_rust) with p_cpp = [1/4, 3/4]... check against the closed form.
        let a = [0.0f32, 0.0];
        let b = [3f32.ln(), 0.0];
        let kl = cmp(&a, &b, 2, 0.0).positions[0].kl;
        let want = 0.75 * (1.5f64).ln() + 0.25 * (0.5f64).ln();
        assert!((kl - want).abs() < 1e-7, "{kl} vs {want}");
    }

    #[test]
    fn kl_matches_naive_and_is_directional() {
        let a = [0.1f32, 2.0, -1.0, 0.7, 3.3];
        let b = [0.0f32, 2.5, -0.5, 0.1, 2.9];
        let kl = cmp(&a, &b, 5, 0.0).positions[0].kl;
        assert!((kl - naive_kl(&a, &b)).abs() < 1e-12);
        let reverse = cmp(&b, &a, 5, 0.0).positions[0].kl;
        assert!((reverse - naive_kl(&b, &a)).abs() < 1e-12);
        assert!(
            (kl - reverse).abs() > 1e-6,
            "KL must be p_cpp || p_rust, not symmetric"
        );
    }

    #[test]
    fn kl_is_stable_for_huge_logits_and_shift_invariant() {
        let a = [1000.0f32, 999.0, 990.0];
        let b = [1005.0f32, 1004.0, 995.0];
        let p = &cmp(&a, &b, 3, 0.0).positions[0];
        assert!(p.kl.is_finite() && p.kl < 1e-12, "{}", p.kl);
        assert!(p.cosine < 1.0);
        let small = cmp(&[10.0, 9.0], &[9.0, 10.0], 2, 0.0).positions[0].kl;
        let big = cmp(&[1010.0, 1009.0], &[1009.0, 1010.0], 2, 0.0).positions[0].kl;
        assert!((small - big).abs() < 1e-9 && small > 0.0);
    }

    #[test]
    fn zero_vectors_are_defined() {
        let p = &cmp(&[0.0; 4], &[0.0; 4], 4, 0.999).positions[0];
        assert_eq!((p.cosine, p.nmse, p.kl), (1.0, 0.0, 0.0));
        assert!(p.ok);
        let p = &cmp(&[1.0, 0.0, 0.0, 0.0], &[0.0; 4], 4, 0.999).positions[0];
        assert_eq!(p.cosine, 0.0);
        assert_eq!(p.nmse, f64::INFINITY);
        assert!(!p.ok);
    }

    #[test]
    fn non_finite_values_are_never_ok_and_are_counted() {
        let a = [1.0, f32::NAN, 2.0, 0.5];
        let b = [1.0, 0.0, f32::INFINITY, 0.5];
        let c = cmp(
            &[&a[..], &[1.0, 2.0, 3.0, 4.0]].concat(),
            &[&b[..], &[1.0, 2.0, 3.0, 4.0]].concat(),
            4,
            0.9,
        );
        let p = &c.positions[0];
        assert!(!p.ok && !p.top1_match);
        assert!(p.cosine.is_nan() && p.kl.is_nan());
        assert_eq!((p.rust_non_finite, p.cpp_non_finite), (1, 1));
        assert!(c.positions[1].ok);
        assert_eq!(c.summary.first_divergent_position, Some(0));
        assert!(c.summary.min_cosine.is_nan() && !c.summary.all_ok);
        let json = serde_json::to_string(p).expect("json");
        assert!(json.contains("\"cosine\":\"NaN\""), "{json}");
        let back: PositionMetrics = serde_json::from_str(&json).expect("parse");
        assert!(back.cosine.is_nan() && back.rust_non_finite == 1);
    }

    #[test]
    fn top5_overlap_and_ties() {
        // Rust top-5: ids 0..5; C++ top-5: ids 2,3,4,5,6 → overlap 3.
        let a = [9.0, 8.0, 7.0, 6.0, 5.0, 1.0, 0.0, -1.0];
        let b = [0.0, 0.0, 7.0, 6.0, 5.0, 8.0, 9.0, -1.0];
        assert_eq!(cmp(&a, &b, 8, 0.0).positions[0].top5_overlap, 3);
        // Ties: the lowest id wins the arg-max and the top-5 places.
        let t = [1.0; 8];
        let p = &cmp(&t, &t, 8, 0.0).positions[0];
        assert_eq!((p.rust_top1, p.cpp_top1, p.top5_overlap), (0, 0, 5));
        let c = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0];
        let p = &cmp(&t, &c, 8, 0.0).positions[0];
        assert_eq!((p.rust_top1, p.cpp_top1, p.top5_overlap), (0, 7, 4));
        // Vocabulary smaller than 5.
        assert_eq!(
            cmp(&[1.0, 2.0], &[2.0, 1.0], 2, 0.0).positions[0].top5_overlap,
            2
        );
    }

    #[test]
    fn summary_and_single_tolerance() {
        let a = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        // cos 1, cos 1/√5 (and a different arg-max), cos 1.
        let b = [1.0, 0.0, 1.0, 2.0, 2.0, 0.0];
        let c = cmp(&a, &b, 2, 0.9);
        let ok: Vec<bool> = c.positions.iter().map(|p| p.ok).collect();
        assert_eq!(ok, [true, false, true]);
        let s = &c.summary;
        assert_eq!(s.n_positions, 3);
        assert_eq!(s.first_divergent_position, Some(1));
        assert!((s.min_cosine - 0.2f64.sqrt()).abs() < 1e-12);
        assert!((s.top1_agreement_rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.max_abs_diff, 2.0);
        let kls: Vec<f64> = c.positions.iter().map(|p| p.kl).collect();
        assert!((s.mean_kl - kls.iter().sum::<f64>() / 3.0).abs() < 1e-15);
        assert_eq!(s.max_kl, kls.iter().copied().fold(0.0, f64::max));
        assert!(!c.ok());
        // cosine exactly at the tolerance is ok.
        let at = cmp(&a, &b, 2, 0.2f64.sqrt() - 1e-12);
        assert!(at.ok() && at.summary.first_divergent_position.is_none());
    }

    #[test]
    fn shape_errors_are_typed() {
        let a = [0.0f32; 6];
        assert_eq!(
            LogitsMatrix::rust(&a, 0).unwrap_err(),
            LogitsCompareError::EmptyVocab { side: Side::Rust }
        );
        assert_eq!(
            LogitsMatrix::cpp(&a, 4).unwrap_err(),
            LogitsCompareError::RaggedRows {
                side: Side::Cpp,
                len: 6,
                n_vocab: 4
            }
        );
        let r = LogitsMatrix::rust(&a, 3).expect("shape");
        let c = LogitsMatrix::cpp(&a, 2).expect("shape");
        let e = compare_logits(r, c, 0.9).unwrap_err();
        assert_eq!(e, LogitsCompareError::VocabMismatch { rust: 3, cpp: 2 });
        assert!(e.to_string().contains("vocabulary size mismatch"));
        let c = LogitsMatrix::cpp(&a[..3], 3).expect("shape");
        assert_eq!(
            compare_logits(r, c, 0.9).unwrap_err(),
            LogitsCompareError::PositionMismatch { rust: 2, cpp: 1 }
        );
        let empty = LogitsMatrix::cpp(&[], 3).expect("shape");
        assert_eq!(
            compare_logits(LogitsMatrix::rust(&[], 3).expect("shape"), empty, 0.9).unwrap_err(),
            LogitsCompareError::NoPositions
        );
        for bad in [f64::NAN, 1.5, -2.0] {
            assert!(matches!(
                compare_logits(r, r, bad),
                Err(LogitsCompareError::InvalidTolerance(_))
            ));
        }
        assert_eq!(
            compare_position(0, &a[..2], &a[..3], 0.9).unwrap_err(),
            LogitsCompareError::VocabMismatch { rust: 2, cpp: 3 }
        );
        assert!(compare_position(4, &a[..3], &a[..3], 0.9).expect("row").ok);
    }

    #[test]
    fn large_inputs_give_the_same_result_as_row_by_row() {
        let vocab = 70_001;
        let rows = 17;
        let a: Vec<f32> = (0..vocab * rows)
            .map(|i| ((i as f32) * 0.37).sin() * 6.0)
            .collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| x + (i % 7) as f32 * 1e-3)
            .collect();
        let c = cmp(&a, &b, vocab, 0.999);
        assert_eq!(c.positions.len(), rows);
        for (t, p) in c.positions.iter().enumerate() {
            let row = |m: &[f32]| m[t * vocab..(t + 1) * vocab].to_vec();
            let single = compare_position(t, &row(&a), &row(&b), 0.999).expect("row");
            assert_eq!(*p, single, "position {t}");
        }
    }

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -708.0 * f64::from(i) / 200_000.0;
            let (got, want) = (exp_non_positive(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        for x in [
            0.0,
            -1e-300,
            -1e-12,
            -0.3465,
            -0.3466,
            -std::f64::consts::LN_2,
            -1.0,
            -20.5,
            -707.9,
        ] {
            let (got, want) = (exp_non_positive(x), f64::exp(x));
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-16, "worst relative error {worst:e}");
        assert_eq!(exp_non_positive(0.0), 1.0);
        assert_eq!(exp_non_positive(-709.0), 0.0);
        assert_eq!(exp_non_positive(-1e6), 0.0);
    }

    #[test]
    fn dispatched_kernels_are_bit_identical_to_the_baseline() {
        let a: Vec<f32> = (0..10_007)
            .map(|i| ((i as f32) * 0.71).cos() * 9.0)
            .collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| x - (i % 5) as f32 * 1e-3)
            .collect();
        let (ma, mb) = (9.0f32, 9.0f32);
        assert_eq!(
            kl_cpp_rust(&a, &b, ma, mb).to_bits(),
            kl_body(&a, &b, ma, mb).to_bits()
        );
        let (p, q) = (first_pass(&a, &b), first_pass_body(&a, &b));
        assert_eq!(p.dot.to_bits(), q.dot.to_bits());
        assert_eq!(p.diff_sq.to_bits(), q.diff_sq.to_bits());
        assert_eq!(
            (p.max_a, p.max_b, p.max_abs_diff),
            (q.max_a, q.max_b, q.max_abs_diff)
        );
    }

    #[test]
    fn matrix_accessors() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = LogitsMatrix::rust(&a, 3).expect("shape");
        assert_eq!((m.n_vocab(), m.n_positions(), m.side()), (3, 2, Side::Rust));
        assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
    }

    proptest::proptest! {
        #[test]
        fn metric_invariants(
            rows in proptest::collection::vec((-30.0f32..30.0, -30.0f32..30.0), 1..300),
        ) {
            let (a, b): (Vec<f32>, Vec<f32>) = rows.into_iter().unzip();
            let n = a.len();
            let p = &cmp(&a, &b, n, 0.999).positions[0];
            proptest::prop_assert!((-1.0..=1.0).contains(&p.cosine));
            proptest::prop_assert!(p.kl >= 0.0 && p.l2 >= 0.0 && p.nmse >= 0.0);
            proptest::prop_assert!(p.max_abs_diff <= p.l2 + 1e-9);
            proptest::prop_assert!(usize::from(p.top5_overlap) <= n.min(5));
            proptest::prop_assert!((p.kl - naive_kl(&a, &b)).abs() < 1e-9 * (1.0 + p.kl));
            let same = &cmp(&a, &a, n, 0.999).positions[0];
            proptest::prop_assert!(same.ok && same.kl.abs() < 1e-12);
            proptest::prop_assert_eq!(usize::from(same.top5_overlap), n.min(5));
        }
    }
}
