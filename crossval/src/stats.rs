//! llama-perplexity's corpus statistics (`tools/perplexity/perplexity.cpp`, `--kl-divergence`)
//! between our engine and a C++ reference, from `f32` logits on both sides.
//!
//! llama-perplexity compares a model *Q* against a *base* model whose log-probabilities it
//! stored beforehand, as 16-bit integers (a noise floor of its own). Here Q is our engine, base
//! is the C++ reference, both rows are exact `f32` logits of the same tokens, and every value is
//! computed in `f64`. Each scored token — a position whose next token is known — contributes one
//! [`TokenStat`]:
//!
//! | field | definition |
//! |---|---|
//! | `nll_q`, `nll_base` | `−ln p(next)` on each side, `p = softmax(row)` |
//! | `kl` | `KL(p_base ‖ p_Q)` — the `kl` of [`crate::logits_compare`] |
//! | `p_diff` | Δp = `p_Q(next) − p_base(next)` |
//! | `same_top` | both arg-maxes agree (ties: the lowest id, as llama-perplexity's strict `>`) |
//!
//! [`CorpusStats::from_tokens`] turns a sequence of them into llama-perplexity's summary, with
//! its formulas: for a per-token quantity `x` over `n` tokens, mean `f = Σx/n` with uncertainty
//! `σ = √((Σx²/n − f²)/(n−1))` (0 when `n ≤ 10`); `Mean PPL = exp(f_nll) ± PPL·σ_nll`;
//! `cov = (Σ nll_Q·nll_base/n − f_Q·f_base)/(n−1)` (0 when `n < 10`) and
//! `Cor = cov/(σ_Q σ_base)`; `ln(PPL(Q)/PPL(base)) = f_Q − f_base ± √(σ_Q² + σ_base² − 2cov)`;
//! the ratio is its `exp` ± ratio·σ; `PPL(Q) − PPL(base) ± √(u_Q² + u_base² −
//! 2·PPL(Q)·PPL(base)·cov)`; KL and Δp means with `σ`, and their percentiles interpolated as
//! llama-perplexity does (the index `fraction·(n−1)` in `f32`, the median the mean of the middle
//! two); `RMS Δp = √(mean Δp²) ± σ(Δp²)/(2·RMS)`; `Same top p = k/n ± √(p(1−p)/(n−1))`.
//!
//! Deliberate differences: the sums run in the order of the tokens, one at a time (llama's
//! worker threads add in whatever order they finish), so the same tokens always give the same
//! bits — which is what lets shards of a suite merge into exactly the summary a single run
//! gives; the three uncertainties that are differences of nearly equal terms (the ln ratio,
//! the PPL difference, RMS Δp when Δp is 0 everywhere) are clamped at 0 instead of becoming
//! NaN when the sides agree exactly; and the statistics are computed for any number of tokens
//! (llama-perplexity prints none below 100).

use serde::{Deserialize, Serialize};

use crate::logits_compare::{compare_position, float_repr, log_sum_exp, PositionMetrics};

/// What one scored token contributes to the statistics (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenStat {
    /// `−ln p_Q(next)`.
    pub nll_q: f64,
    /// `−ln p_base(next)`.
    pub nll_base: f64,
    /// `KL(p_base ‖ p_Q)` in nats.
    pub kl: f64,
    /// `p_Q(next) − p_base(next)`.
    pub p_diff: f64,
    /// Both rows have the same arg-max.
    pub same_top: bool,
}

/// Why a token's statistics cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// The two rows differ in length, or are empty.
    #[error("logit rows of {q} (Q) and {base} (base) values cannot be compared")]
    Shape {
        /// Q's row length.
        q: usize,
        /// Base's row length.
        base: usize,
    },
    /// The next token is not in the vocabulary.
    #[error("token {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange {
        /// The token.
        token: u32,
        /// The row length.
        n_vocab: usize,
    },
}

impl TokenStat {
    /// The statistics of one position whose next token is `next`, from Q's and base's logit
    /// rows.
    ///
    /// # Errors
    /// [`StatsError`] for rows of different or zero length, or `next` outside them.
    ///
    /// ```
    /// use bitnet_crossval::stats::TokenStat;
    /// let uniform = [0.0f32; 4];
    /// let s = TokenStat::from_rows(&uniform, &uniform, 2).unwrap();
    /// assert!((s.nll_q - 4f64.ln()).abs() < 1e-12);
    /// assert_eq!((s.kl, s.p_diff, s.same_top), (0.0, 0.0, true));
    /// ```
    pub fn from_rows(q_row: &[f32], base_row: &[f32], next: u32) -> Result<Self, StatsError> {
        let shape = StatsError::Shape {
            q: q_row.len(),
            base: base_row.len(),
        };
        let metrics = compare_position(0, q_row, base_row, 0.0).map_err(|_| shape)?;
        Self::from_metrics(&metrics, q_row, base_row, next)
    }

    /// As [`TokenStat::from_rows`], for a position already compared by
    /// [`crate::logits_compare`] (Q as the Rust side, base as the C++ side): its KL and arg-max
    /// agreement are reused.
    ///
    /// # Errors
    /// As [`TokenStat::from_rows`].
    pub fn from_metrics(
        metrics: &PositionMetrics,
        q_row: &[f32],
        base_row: &[f32],
        next: u32,
    ) -> Result<Self, StatsError> {
        if q_row.len() != base_row.len() || q_row.is_empty() {
            return Err(StatsError::Shape {
                q: q_row.len(),
                base: base_row.len(),
            });
        }
        let t = next as usize;
        if t >= q_row.len() {
            return Err(StatsError::TokenOutOfRange {
                token: next,
                n_vocab: q_row.len(),
            });
        }
        let nll_q = log_sum_exp(q_row) - f64::from(q_row[t]);
        let nll_base = log_sum_exp(base_row) - f64::from(base_row[t]);
        Ok(TokenStat {
            nll_q,
            nll_base,
            kl: metrics.kl,
            p_diff: (-nll_q).exp() - (-nll_base).exp(),
            same_top: metrics.top1_match,
        })
    }
}

/// A value and its uncertainty (one standard error).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The value.
    #[serde(with = "float_repr")]
    pub value: f64,
    /// Its standard error.
    #[serde(with = "float_repr")]
    pub error: f64,
}

/// A distribution's mean and the quantiles llama-perplexity prints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Mean ± standard error.
    pub mean: Estimate,
    /// Largest value.
    #[serde(with = "float_repr")]
    pub maximum: f64,
    /// 99.9th percentile.
    #[serde(with = "float_repr")]
    pub p99_9: f64,
    /// 99th percentile.
    #[serde(with = "float_repr")]
    pub p99: f64,
    /// 95th percentile.
    #[serde(with = "float_repr")]
    pub p95: f64,
    /// 90th percentile.
    #[serde(with = "float_repr")]
    pub p90: f64,
    /// 75th percentile.
    #[serde(with = "float_repr")]
    pub p75: f64,
    /// Median.
    #[serde(with = "float_repr")]
    pub median: f64,
    /// 25th percentile.
    #[serde(with = "float_repr")]
    pub p25: f64,
    /// 10th percentile.
    #[serde(with = "float_repr")]
    pub p10: f64,
    /// 5th percentile.
    #[serde(with = "float_repr")]
    pub p5: f64,
    /// 1st percentile.
    #[serde(with = "float_repr")]
    pub p1: f64,
    /// 0.1th percentile.
    #[serde(with = "float_repr")]
    pub p0_1: f64,
    /// Smallest value.
    #[serde(with = "float_repr")]
    pub minimum: f64,
}

/// llama-perplexity's full `--kl-divergence` summary (see the module documentation). Δp values
/// and probabilities are fractions (llama-perplexity prints them ×100 as percentages).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CorpusStats {
    /// Scored tokens.
    pub n_tokens: usize,
    /// Mean PPL(Q).
    pub ppl_q: Estimate,
    /// Mean PPL(base).
    pub ppl_base: Estimate,
    /// Cor(ln PPL(Q), ln PPL(base)), as a fraction.
    #[serde(with = "float_repr")]
    pub ln_ppl_correlation: f64,
    /// Mean ln(PPL(Q)/PPL(base)).
    pub ln_ppl_ratio: Estimate,
    /// Mean PPL(Q)/PPL(base).
    pub ppl_ratio: Estimate,
    /// Mean PPL(Q) − PPL(base).
    pub ppl_diff: Estimate,
    /// KL(p_base ‖ p_Q) per token, nats.
    pub kl: Distribution,
    /// Δp per token.
    pub p_diff: Distribution,
    /// RMS Δp.
    pub rms_p_diff: Estimate,
    /// Fraction of tokens whose arg-max agrees.
    pub same_top: Estimate,
}

/// The running sums llama-perplexity keeps (`kl_divergence_result`).
#[derive(Default)]
struct Sums {
    nll: f64,
    nll2: f64,
    nll_base: f64,
    nll_base2: f64,
    nll_nll_base: f64,
    kl: f64,
    kl2: f64,
    p_diff: f64,
    p_diff2: f64,
    p_diff4: f64,
    same_top: usize,
}

/// Mean and its standard error from a sum and a sum of squares (llama-perplexity's
/// `mean_and_uncertainty`).
fn mean_and_uncertainty(sum: f64, sum2: f64, n: usize) -> Estimate {
    if n < 1 {
        return Estimate {
            value: 0.0,
            error: 0.0,
        };
    }
    let f = sum / n as f64;
    let var = sum2 / n as f64 - f * f;
    let error = if var > 0.0 && n > 10 {
        (var / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Estimate { value: f, error }
}

/// Covariance of the two means (llama-perplexity's `covariance`).
fn covariance(sum_a: f64, sum_b: f64, sum_ab: f64, n: usize) -> f64 {
    if n < 10 {
        return 0.0;
    }
    let nf = n as f64;
    (sum_ab / nf - (sum_a / nf) * (sum_b / nf)) / (nf - 1.0)
}

/// `√x`, with a value that rounding pushed just below 0 taken as 0.
fn sqrt_clamped(x: f64) -> f64 {
    x.max(0.0).sqrt()
}

/// llama-perplexity's percentile of sorted `values`: the index `fraction·(n−1)` computed in
/// `f32`, linear interpolation with `f32` weights.
fn percentile(sorted: &[f64], fraction: f32) -> f64 {
    let (first, last) = match (sorted.first(), sorted.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => return f64::NAN,
    };
    if fraction <= 0.0 {
        return first;
    }
    if fraction >= 1.0 {
        return last;
    }
    let mut p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    p -= ip as f32;
    let next = sorted[(ip + 1).min(sorted.len() - 1)];
    f64::from(1.0 - p) * sorted[ip] + f64::from(p) * next
}

/// The median: the middle value, or the mean of the middle two.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n.is_multiple_of(2) => 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]),
        _ => sorted[n / 2],
    }
}

fn distribution(mut values: Vec<f64>, mean: Estimate) -> Distribution {
    values.sort_by(f64::total_cmp);
    let v = &values;
    Distribution {
        mean,
        maximum: v.last().copied().unwrap_or(f64::NAN),
        p99_9: percentile(v, 0.999),
        p99: percentile(v, 0.990),
        p95: percentile(v, 0.950),
        p90: percentile(v, 0.900),
        p75: percentile(v, 0.750),
        median: median(v),
        p25: percentile(v, 0.250),
        p10: percentile(v, 0.100),
        p5: percentile(v, 0.050),
        p1: percentile(v, 0.010),
        p0_1: percentile(v, 0.001),
        minimum: v.first().copied().unwrap_or(f64::NAN),
    }
}

impl CorpusStats {
    /// The summary of `tokens`, in their order; `None` when there are none.
    ///
    /// ```
    /// use bitnet_crossval::stats::{CorpusStats, TokenStat};
    /// let t = TokenStat { nll_q: 2.0, nll_base: 2.0, kl: 0.0, p_diff: 0.0, same_top: true };
    /// let s = CorpusStats::from_tokens(&[t; 20]).unwrap();
    /// assert!((s.ppl_q.value - 2f64.exp()).abs() < 1e-12);
    /// assert_eq!(s.ln_ppl_ratio.error, 0.0); // not NaN when the sides agree exactly
    /// assert_eq!(s.same_top.value, 1.0);
    /// ```
    pub fn from_tokens(tokens: &[TokenStat]) -> Option<CorpusStats> {
        let n = tokens.len();
        if n == 0 {
            return None;
        }
        let mut s = Sums::default();
        for t in tokens {
            s.nll += t.nll_q;
            s.nll2 += t.nll_q * t.nll_q;
            s.nll_base += t.nll_base;
            s.nll_base2 += t.nll_base * t.nll_base;
            s.nll_nll_base += t.nll_q * t.nll_base;
            s.kl += t.kl;
            s.kl2 += t.kl * t.kl;
            s.p_diff += t.p_diff;
            let d2 = t.p_diff * t.p_diff;
            s.p_diff2 += d2;
            s.p_diff4 += d2 * d2;
            s.same_top += usize::from(t.same_top);
        }
        let log_ppl = mean_and_uncertainty(s.nll, s.nll2, n);
        let log_ppl_base = mean_and_uncertainty(s.nll_base, s.nll_base2, n);
        let cov = covariance(s.nll, s.nll_base, s.nll_nll_base, n);
        let ppl_q = log_ppl.value.exp();
        let ppl_base = log_ppl_base.value.exp();
        let ppl_q_error = ppl_q * log_ppl.error;
        let ppl_base_error = ppl_base * log_ppl_base.error;
        let ln_ratio = log_ppl.value - log_ppl_base.value;
        let ln_ratio_error =
            sqrt_clamped(log_ppl.error.powi(2) + log_ppl_base.error.powi(2) - 2.0 * cov);
        let ratio = ln_ratio.exp();
        let p_diff_mse = mean_and_uncertainty(s.p_diff2, s.p_diff4, n);
        let rms = p_diff_mse.value.sqrt();
        let same_top = s.same_top as f64 / n as f64;
        Some(CorpusStats {
            n_tokens: n,
            ppl_q: Estimate {
                value: ppl_q,
                error: ppl_q_error,
            },
            ppl_base: Estimate {
                value: ppl_base,
                error: ppl_base_error,
            },
            ln_ppl_correlation: cov / (log_ppl.error * log_ppl_base.error),
            ln_ppl_ratio: Estimate {
                value: ln_ratio,
                error: ln_ratio_error,
            },
            ppl_ratio: Estimate {
                value: ratio,
                error: ratio * ln_ratio_error,
            },
            ppl_diff: Estimate {
                value: ppl_q - ppl_base,
                error: sqrt_clamped(
                    ppl_q_error.powi(2) + ppl_base_error.powi(2) - 2.0 * ppl_q * ppl_base * cov,
                ),
            },
            kl: distribution(
                tokens.iter().map(|t| t.kl).collect(),
                mean_and_uncertainty(s.kl, s.kl2, n),
            ),
            p_diff: distribution(
                tokens.iter().map(|t| t.p_diff).collect(),
                mean_and_uncertainty(s.p_diff, s.p_diff2, n),
            ),
            rms_p_diff: Estimate {
                value: rms,
                error: if rms > 0.0 {
                    0.5 / rms * p_diff_mse.error
                } else {
                    0.0
                },
            },
            same_top: Estimate {
                value: same_top,
                error: if n > 1 {
                    (same_top * (1.0 - same_top) / (n - 1) as f64).sqrt()
                } else {
                    0.0
                },
            },
        })
    }

    /// The three blocks llama-perplexity prints, in its layout. PPL lines keep its fixed
    /// format; KL and Δp values are printed in scientific notation, because between an engine
    /// and its reference they are often far below the 6 decimals llama-perplexity shows.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let est = |e: Estimate| format!("{:10.6} ± {:10.6}", e.value, e.error);
        let sci = |v: f64| format!("{v:>13.6e}");
        let pct = |v: f64| format!("{:>10.3e} %", 100.0 * v);
        s.push_str("====== Perplexity statistics ======\n");
        s.push_str(&format!(
            "Mean PPL(Q)                   : {}\n",
            est(self.ppl_q)
        ));
        s.push_str(&format!(
            "Mean PPL(base)                : {}\n",
            est(self.ppl_base)
        ));
        s.push_str(&format!(
            "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%\n",
            100.0 * self.ln_ppl_correlation
        ));
        s.push_str(&format!(
            "Mean ln(PPL(Q)/PPL(base))     : {}\n",
            est(self.ln_ppl_ratio)
        ));
        s.push_str(&format!(
            "Mean PPL(Q)/PPL(base)         : {}\n",
            est(self.ppl_ratio)
        ));
        s.push_str(&format!(
            "Mean PPL(Q)-PPL(base)         : {}\n",
            est(self.ppl_diff)
        ));
        s.push_str("\n====== KL divergence statistics ======\n");
        let k = &self.kl;
        s.push_str(&format!(
            "Mean    KLD: {} ± {}\n",
            sci(k.mean.value),
            sci(k.mean.error)
        ));
        for (label, v) in [
            ("Maximum", k.maximum),
            ("99.9%  ", k.p99_9),
            ("99.0%  ", k.p99),
            ("95.0%  ", k.p95),
            ("90.0%  ", k.p90),
            ("Median ", k.median),
            ("10.0%  ", k.p10),
            (" 5.0%  ", k.p5),
            (" 1.0%  ", k.p1),
            (" 0.1%  ", k.p0_1),
            ("Minimum", k.minimum),
        ] {
            s.push_str(&format!("{label} KLD: {}\n", sci(v)));
        }
        s.push_str("\n====== Token probability statistics ======\n");
        let d = &self.p_diff;
        s.push_str(&format!(
            "Mean    Δp: {} ± {}\n",
            pct(d.mean.value),
            pct(d.mean.error)
        ));
        for (label, v) in [
            ("Maximum", d.maximum),
            ("99.9%  ", d.p99_9),
            ("99.0%  ", d.p99),
            ("95.0%  ", d.p95),
            ("90.0%  ", d.p90),
            ("75.0%  ", d.p75),
            ("Median ", d.median),
            ("25.0%  ", d.p25),
            ("10.0%  ", d.p10),
            (" 5.0%  ", d.p5),
            (" 1.0%  ", d.p1),
            (" 0.1%  ", d.p0_1),
            ("Minimum", d.minimum),
        ] {
            s.push_str(&format!("{label} Δp: {}\n", pct(v)));
        }
        s.push_str(&format!(
            "RMS Δp    : {} ± {}\n",
            pct(self.rms_p_diff.value),
            pct(self.rms_p_diff.error)
        ));
        s.push_str(&format!(
            "Same top p: {:6.3} ± {:5.3} %\n",
            100.0 * self.same_top.value,
            100.0 * self.same_top.error
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn known_kl_and_delta_p_from_constructed_logits() {
        // p_base = (1/2, 1/4, 1/4), p_Q = (1/4, 1/2, 1/4); the next token is 0.
        let base = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let q = [0.25f32.ln(), 0.5f32.ln(), 0.25f32.ln()];
        let s = TokenStat::from_rows(&q, &base, 0).unwrap();
        let ln2 = std::f64::consts::LN_2;
        // KL = 1/2 ln 2 + 1/4 ln(1/2) + 1/4 ln 1 = ln2 / 4.
        assert!(close(s.kl, ln2 / 4.0, 1e-7), "{}", s.kl);
        assert!(close(s.nll_q, 2.0 * ln2, 1e-7), "{}", s.nll_q);
        assert!(close(s.nll_base, ln2, 1e-7), "{}", s.nll_base);
        assert!(close(s.p_diff, -0.25, 1e-7), "{}", s.p_diff);
        assert!(!s.same_top);
    }

    #[test]
    fn shifting_a_row_changes_nothing() {
        let base = [1.0f32, 2.0, 3.0, 4.0];
        let q = [0.5f32, 2.5, 3.0, 3.5];
        let a = TokenStat::from_rows(&q, &base, 2).unwrap();
        let shifted: Vec<f32> = q.iter().map(|x| x + 1000.0).collect();
        let b = TokenStat::from_rows(&shifted, &base, 2).unwrap();
        assert!(close(a.nll_q, b.nll_q, 1e-5));
        assert!(close(a.kl, b.kl, 1e-5));
        assert!(close(a.p_diff, b.p_diff, 1e-5));
        // Direct softmax for the next token.
        let z: f64 = q.iter().map(|&x| f64::from(x).exp()).sum();
        assert!(close(a.nll_q, z.ln() - 3.0, 1e-12));
    }

    #[test]
    fn ties_take_the_lowest_id_on_both_sides() {
        // Q's maximum is tied between ids 1 and 2: id 1 is its top.
        let q = [0.0f32, 3.0, 3.0, 1.0];
        assert!(
            TokenStat::from_rows(&q, &[0.0, 5.0, 4.0, 0.0], 0)
                .unwrap()
                .same_top
        );
        assert!(
            !TokenStat::from_rows(&q, &[0.0, 4.0, 5.0, 0.0], 0)
                .unwrap()
                .same_top
        );
        // Both tied the same way: the same top.
        assert!(TokenStat::from_rows(&q, &q, 3).unwrap().same_top);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(matches!(
            TokenStat::from_rows(&[0.0; 3], &[0.0; 4], 0),
            Err(StatsError::Shape { q: 3, base: 4 })
        ));
        assert!(matches!(
            TokenStat::from_rows(&[0.0; 3], &[0.0; 3], 3),
            Err(StatsError::TokenOutOfRange { .. })
        ));
        assert!(TokenStat::from_rows(&[], &[], 0).is_err());
    }

    /// Constructed per-token values and a direct computation of every statistic.
    fn constructed(n: usize) -> Vec<TokenStat> {
        (0..n)
            .map(|i| {
                let x = i as f64;
                TokenStat {
                    nll_q: 2.0 + (x * 0.37).sin(),
                    nll_base: 2.0 + (x * 0.37).sin() * 0.9 + 0.01 * (x * 1.3).cos(),
                    kl: 1e-3 * (1.0 + (x * 0.11).cos()),
                    p_diff: 0.02 * (x * 0.53).sin(),
                    same_top: i % 7 != 3,
                }
            })
            .collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// Standard error of the mean, two-pass: √(Σ(x−x̄)²/(n(n−1))).
    fn sem(v: &[f64]) -> f64 {
        let m = mean(v);
        let n = v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n * (n - 1.0))).sqrt()
    }

    #[test]
    fn summary_matches_a_direct_computation() {
        let t = constructed(200);
        let s = CorpusStats::from_tokens(&t).unwrap();
        let nq: Vec<f64> = t.iter().map(|t| t.nll_q).collect();
        let nb: Vec<f64> = t.iter().map(|t| t.nll_base).collect();
        let n = nq.len() as f64;
        let (mq, mb) = (mean(&nq), mean(&nb));
        assert!(close(s.ppl_q.value, mq.exp(), 1e-12));
        assert!(close(s.ppl_q.error, mq.exp() * sem(&nq), 1e-9));
        assert!(close(s.ppl_base.value, mb.exp(), 1e-12));
        // Covariance of the means, two-pass.
        let cov = nq
            .iter()
            .zip(&nb)
            .map(|(a, b)| (a - mq) * (b - mb))
            .sum::<f64>()
            / (n * (n - 1.0));
        let cor = cov / (sem(&nq) * sem(&nb));
        assert!(close(s.ln_ppl_correlation, cor, 1e-9));
        let d: Vec<f64> = nq.iter().zip(&nb).map(|(a, b)| a - b).collect();
        assert!(close(s.ln_ppl_ratio.value, mq - mb, 1e-12));
        // The uncertainty of a difference of means is the SEM of the differences.
        assert!(close(s.ln_ppl_ratio.error, sem(&d), 1e-6));
        assert!(close(s.ppl_ratio.value, (mq - mb).exp(), 1e-12));
        assert!(close(s.ppl_diff.value, mq.exp() - mb.exp(), 1e-12));

        let kl: Vec<f64> = t.iter().map(|t| t.kl).collect();
        assert!(close(s.kl.mean.value, mean(&kl), 1e-12));
        assert!(close(s.kl.mean.error, sem(&kl), 1e-9));
        let mut sorted = kl.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(s.kl.maximum, sorted[199]);
        assert_eq!(s.kl.minimum, sorted[0]);
        assert_eq!(s.kl.median, 0.5 * (sorted[99] + sorted[100]));

        let dp: Vec<f64> = t.iter().map(|t| t.p_diff).collect();
        assert!(close(s.p_diff.mean.value, mean(&dp), 1e-9));
        let sq: Vec<f64> = dp.iter().map(|x| x * x).collect();
        let rms = mean(&sq).sqrt();
        assert!(close(s.rms_p_diff.value, rms, 1e-12));
        assert!(close(s.rms_p_diff.error, sem(&sq) / (2.0 * rms), 1e-6));

        let k = t.iter().filter(|t| t.same_top).count() as f64;
        assert_eq!(s.same_top.value, k / n);
        assert!(close(
            s.same_top.error,
            ((k / n) * (1.0 - k / n) / (n - 1.0)).sqrt(),
            1e-12
        ));
    }

    #[test]
    fn percentiles_interpolate_as_llama_perplexity() {
        // 101 values 0..=100: each percentile is its own index.
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 0.05), 5.0);
        assert_eq!(percentile(&v, 0.0), 0.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        // Between two values: linear interpolation.
        let w = [0.0, 10.0];
        assert!((percentile(&w, 0.25) - 2.5).abs() < 1e-6);
        // Median: the middle value, or the mean of the middle two.
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn few_tokens_have_no_uncertainty_as_in_llama_perplexity() {
        let t = constructed(10);
        let s = CorpusStats::from_tokens(&t).unwrap();
        assert_eq!(s.ppl_q.error, 0.0);
        assert_eq!(s.kl.mean.error, 0.0);
        assert!(CorpusStats::from_tokens(&[]).is_none());
    }

    #[test]
    fn identical_sides_give_zeros_not_nan() {
        let rows: Vec<[f32; 5]> = (0..40)
            .map(|i| {
                let x = i as f32;
                [x.sin(), (x * 0.3).cos(), 0.5, -x.cos(), (x * 0.7).sin()]
            })
            .collect();
        let t: Vec<TokenStat> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| TokenStat::from_rows(r, r, (i % 5) as u32).unwrap())
            .collect();
        let s = CorpusStats::from_tokens(&t).unwrap();
        assert_eq!(s.ppl_q, s.ppl_base);
        assert_eq!(s.ln_ppl_ratio.value, 0.0);
        assert_eq!(s.ln_ppl_ratio.error, 0.0);
        assert_eq!(s.ppl_diff.error, 0.0);
        assert_eq!(s.kl.maximum, 0.0);
        assert_eq!(s.p_diff.maximum, 0.0);
        assert_eq!(s.rms_p_diff.error, 0.0);
        assert_eq!(s.same_top.value, 1.0);
        assert!((s.ln_ppl_correlation - 1.0).abs() < 1e-9);
        let text = s.render_text();
        assert!(!text.contains("NaN"), "{text}");
        assert!(text.contains("Same top p: 100.000 ± 0.000 %"), "{text}");
    }

    #[test]
    fn the_summary_depends_only_on_the_token_sequence() {
        let t = constructed(300);
        let a = serde_json::to_string(&CorpusStats::from_tokens(&t)).unwrap();
        let b = serde_json::to_string(&CorpusStats::from_tokens(&t.clone())).unwrap();
        assert_eq!(a, b);
        let back: CorpusStats = serde_json::from_str(&a).unwrap();
        assert_eq!(back.n_tokens, 300);
    }
}
