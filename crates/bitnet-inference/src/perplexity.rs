//! Perplexity as llama.cpp's `llama-perplexity` computes it (`tools/perplexity/perplexity.cpp`,
//! the default mode without `--ppl-stride`).
//!
//! The text is tokenized once, with the vocabulary's BOS (`add_special`, no special-token
//! parsing). It is cut into `n_chunk = ⌊n_tokens / n_ctx⌋` consecutive windows of `n_ctx`
//! tokens (at least two windows' worth of tokens are required); each window is evaluated from an
//! empty cache, in batches of `n_batch` tokens, with its first token replaced by BOS when the
//! vocabulary adds BOS. Only the second half is scored, so that every scored token has context:
//! the logits of positions `first = n_ctx/2 … n_ctx−2` predict the tokens after them,
//! `n_ctx − 1 − first` per window. The running perplexity after each window is
//! `exp(Σ nll / count)`; the final estimate's error is `PPL · √((mean(nll²) − mean(nll)²)/(count−1))`.
//!
//! [`Plan`] is the windowing, shared with the cross-validation suite, which evaluates the same
//! windows on both sides; [`nll`] is llama-perplexity's arithmetic for one token (an `f32`
//! `expf` per logit summed in `f64`); [`run`] evaluates the windows on this engine.
//!
//! llama-perplexity puts several windows into one batch as separate sequences when `n_batch`
//! is a multiple of `n_ctx` larger than it; this engine evaluates one window at a time, which
//! is the same computation, so `n_batch` must not exceed `n_ctx` here.

use crate::{Eval, InferenceError, Model, Outputs};

/// Why a perplexity run cannot be planned or computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PerplexityError {
    /// The context is too small to score anything.
    #[error("a context of {0} tokens scores nothing: use at least 4")]
    ContextTooSmall(usize),
    /// The batch is empty or larger than the context.
    #[error(
        "a batch of {n_batch} tokens with a context of {n_ctx}: the batch must be between 1 \
         and the context (this engine evaluates one window at a time)"
    )]
    BadBatch {
        /// The batch size asked for.
        n_batch: usize,
        /// The context.
        n_ctx: usize,
    },
    /// Not enough text (llama-perplexity's own rule: two windows' worth of tokens).
    #[error(
        "the text tokenizes to only {n_tokens} tokens; a context of {n_ctx} needs at least {} \
         (use a longer text or a smaller context)",
        2 * n_ctx
    )]
    TooFewTokens {
        /// Tokens in the text.
        n_tokens: usize,
        /// The context.
        n_ctx: usize,
    },
    /// A chunk limit of 0.
    #[error("a chunk limit of 0 evaluates nothing: give at least 1")]
    NoChunks,
    /// The vocabulary adds EOS (llama-perplexity refuses such vocabularies too).
    #[error("the vocabulary adds EOS after every text: perplexity as llama-perplexity computes it needs one that does not")]
    AddsEos,
    /// The engine failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// The windows of a text: how many, how long, which positions are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    n_ctx: usize,
    n_chunks: usize,
    n_batch: usize,
}

impl Plan {
    /// The plan for `n_tokens` tokens, windows of `n_ctx`, batches of `n_batch` (at most
    /// `n_ctx`), and at most `max_chunks` windows.
    ///
    /// # Errors
    /// [`PerplexityError::ContextTooSmall`], [`PerplexityError::BadBatch`],
    /// [`PerplexityError::NoChunks`], [`PerplexityError::TooFewTokens`].
    ///
    /// ```
    /// use bitnet_inference::perplexity::Plan;
    /// let plan = Plan::new(1000, 128, 128, None).unwrap();
    /// assert_eq!(plan.n_chunks(), 7);
    /// assert_eq!(plan.first(), 64);
    /// assert_eq!(plan.scored_per_chunk(), 63);
    /// assert!(Plan::new(200, 128, 128, None).is_err()); // fewer than 2 × 128 tokens
    /// ```
    pub fn new(
        n_tokens: usize,
        n_ctx: usize,
        n_batch: usize,
        max_chunks: Option<usize>,
    ) -> Result<Plan, PerplexityError> {
        if n_ctx < 4 {
            return Err(PerplexityError::ContextTooSmall(n_ctx));
        }
        if n_batch == 0 || n_batch > n_ctx {
            return Err(PerplexityError::BadBatch { n_batch, n_ctx });
        }
        if max_chunks == Some(0) {
            return Err(PerplexityError::NoChunks);
        }
        if n_tokens < 2 * n_ctx {
            return Err(PerplexityError::TooFewTokens { n_tokens, n_ctx });
        }
        let all = n_tokens / n_ctx;
        Ok(Plan {
            n_ctx,
            n_chunks: max_chunks.map_or(all, |m| m.min(all)),
            n_batch,
        })
    }

    /// Tokens per window.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens per evaluation batch.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Windows evaluated.
    pub fn n_chunks(&self) -> usize {
        self.n_chunks
    }

    /// The first position of a window whose logits are used (`n_ctx / 2`).
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }

    /// Tokens scored per window (`n_ctx − 1 − first`).
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first()
    }

    /// The positions of a window whose logits are asked for, as llama-perplexity flags them:
    /// `first … n_ctx−1` (the last one predicts past the window and is not scored).
    pub fn output_positions(&self) -> Vec<usize> {
        (self.first()..self.n_ctx).collect()
    }

    /// The tokens of window `chunk` as the text has them (before the BOS substitution).
    ///
    /// # Panics
    /// If `chunk` is not below [`Plan::n_chunks`] or `tokens` is shorter than the plan's text.
    pub fn window<'a, T>(&self, tokens: &'a [T], chunk: usize) -> &'a [T] {
        assert!(chunk < self.n_chunks, "chunk {chunk} of {}", self.n_chunks);
        &tokens[chunk * self.n_ctx..(chunk + 1) * self.n_ctx]
    }

    /// Window `chunk` as it is evaluated: its first token replaced by `bos` when the vocabulary
    /// adds BOS (`Some`), as llama-perplexity does for every window.
    ///
    /// # Panics
    /// As [`Plan::window`].
    pub fn evaluated_window(&self, tokens: &[u32], chunk: usize, bos: Option<u32>) -> Vec<u32> {
        let mut w = self.window(tokens, chunk).to_vec();
        if let Some(b) = bos {
            w[0] = b;
        }
        w
    }

    /// The scored tokens of window `chunk`: the ones after positions `first … n_ctx−2`.
    ///
    /// # Panics
    /// As [`Plan::window`].
    pub fn targets<'a, T>(&self, tokens: &'a [T], chunk: usize) -> &'a [T] {
        &self.window(tokens, chunk)[self.first() + 1..]
    }
}

/// `−ln p(target)` for one row of logits, with llama-perplexity's arithmetic: the maximum and
/// each `exp(x − max)` in `f32` (`expf`), their sum in `f64`, then
/// `−((x_target − max) − ln Σ)`.
///
/// # Panics
/// If `target` is outside `row`.
pub fn nll(row: &[f32], target: u32) -> f64 {
    let max = row.iter().copied().fold(row[0], f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from((x - max).exp())).sum();
    -(f64::from(row[target as usize] - max) - sum.ln())
}

/// Running sums of the negative log-likelihoods, and the perplexity they give.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accumulator {
    nll: f64,
    nll2: f64,
    count: usize,
}

impl Accumulator {
    /// Add one token's negative log-likelihood.
    pub fn add(&mut self, nll: f64) {
        self.nll += nll;
        self.nll2 += nll * nll;
        self.count += 1;
    }

    /// Tokens scored so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Mean negative log-likelihood (NaN before any token).
    pub fn mean_nll(&self) -> f64 {
        self.nll / self.count as f64
    }

    /// `exp(mean nll)`, the running perplexity llama-perplexity prints after each window.
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }

    /// The final estimate's error, `PPL · √((mean(nll²) − mean(nll)²)/(count−1))`; `None` when
    /// the variance is not positive (llama-perplexity then prints an error instead).
    pub fn error(&self) -> Option<f64> {
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        (var > 0.0 && self.count > 1).then(|| (var / (n - 1.0)).sqrt() * mean.exp())
    }
}

/// What one evaluated window contributed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkResult {
    /// 0-based window index.
    pub chunk: usize,
    /// The negative log-likelihood of each scored token, in order.
    pub nll: Vec<f64>,
    /// The running perplexity after this window.
    pub running_ppl: f64,
}

/// Evaluate the plan's windows of `tokens` on `model` (the BOS substitution with `bos`) and
/// score them, calling `on_chunk` after each window. Returns the accumulated sums.
///
/// # Errors
/// [`PerplexityError::AddsEos`] is the caller's to check; here only
/// [`PerplexityError::Inference`] (an id outside the vocabulary, a window past the model's
/// context).
pub fn run(
    model: &Model,
    tokens: &[u32],
    plan: &Plan,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(&ChunkResult),
) -> Result<Accumulator, PerplexityError> {
    let v = model.config().n_vocab;
    let first = plan.first();
    let mut acc = Accumulator::default();
    let mut state = model.new_state();
    let mut rows = Vec::with_capacity((plan.n_ctx() - first) * v);
    for chunk in 0..plan.n_chunks() {
        let window = plan.evaluated_window(tokens, chunk, bos);
        state.reset();
        rows.clear();
        for (b, batch) in window.chunks(plan.n_batch()).enumerate() {
            let start = b * plan.n_batch();
            let outputs: Vec<usize> = (0..batch.len()).filter(|&i| start + i >= first).collect();
            if outputs.is_empty() {
                // Only the cache matters for a batch before the scored half; the last row's
                // logits are the cheapest to ask for, and are dropped.
                model.eval(&mut state, Eval::new(batch).outputs(Outputs::Last))?;
            } else {
                let logits = model.eval(
                    &mut state,
                    Eval::new(batch).outputs(Outputs::Positions(outputs)),
                )?;
                rows.extend_from_slice(&logits);
            }
        }
        let nll: Vec<f64> = plan
            .targets(tokens, chunk)
            .iter()
            .enumerate()
            .map(|(j, &t)| self::nll(&rows[j * v..(j + 1) * v], t))
            .collect();
        for &x in &nll {
            acc.add(x);
        }
        on_chunk(&ChunkResult {
            chunk,
            nll,
            running_ppl: acc.perplexity(),
        });
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_follows_llama_perplexity() {
        let p = Plan::new(1030, 256, 64, None).unwrap();
        assert_eq!(p.n_chunks(), 4);
        assert_eq!(p.first(), 128);
        assert_eq!(p.scored_per_chunk(), 127);
        assert_eq!(p.output_positions().len(), 128);
        let tokens: Vec<u32> = (0..1030).collect();
        assert_eq!(p.window(&tokens, 1)[0], 256);
        assert_eq!(p.evaluated_window(&tokens, 1, Some(7))[..2], [7, 257]);
        assert_eq!(p.evaluated_window(&tokens, 1, None)[0], 256);
        let t = p.targets(&tokens, 2);
        assert_eq!((t.len(), t[0], *t.last().unwrap()), (127, 512 + 129, 767));
        assert_eq!(Plan::new(1030, 256, 64, Some(2)).unwrap().n_chunks(), 2);
        assert_eq!(Plan::new(1030, 256, 64, Some(9)).unwrap().n_chunks(), 4);
    }

    #[test]
    fn plan_refuses_what_cannot_be_scored() {
        assert!(matches!(
            Plan::new(511, 256, 256, None),
            Err(PerplexityError::TooFewTokens {
                n_tokens: 511,
                n_ctx: 256
            })
        ));
        assert!(Plan::new(512, 256, 256, None).is_ok());
        assert!(matches!(
            Plan::new(512, 256, 257, None),
            Err(PerplexityError::BadBatch { .. })
        ));
        assert!(matches!(
            Plan::new(512, 256, 0, None),
            Err(PerplexityError::BadBatch { .. })
        ));
        assert!(matches!(
            Plan::new(512, 3, 3, None),
            Err(PerplexityError::ContextTooSmall(3))
        ));
        assert!(matches!(
            Plan::new(512, 256, 256, Some(0)),
            Err(PerplexityError::NoChunks)
        ));
    }

    #[test]
    fn nll_is_the_negative_log_softmax() {
        let row = [1.0f32, 2.0, 3.0, 0.5];
        let z: f64 = row.iter().map(|&x| f64::from(x).exp()).sum();
        for t in 0..4 {
            let direct = z.ln() - f64::from(row[t]);
            assert!((nll(&row, t as u32) - direct).abs() < 1e-6);
        }
        assert!((nll(&[0.0; 8], 3) - 8f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn accumulator_gives_llama_perplexity_estimate() {
        let mut a = Accumulator::default();
        let xs = [1.0, 2.0, 3.0, 4.0];
        for x in xs {
            a.add(x);
        }
        assert_eq!(a.count(), 4);
        assert_eq!(a.perplexity(), 2.5f64.exp());
        // Population variance 1.25; √(1.25/3)·e^2.5.
        let want = (1.25f64 / 3.0).sqrt() * 2.5f64.exp();
        assert!((a.error().unwrap() - want).abs() < 1e-12);
        let mut same = Accumulator::default();
        same.add(1.0);
        same.add(1.0);
        assert_eq!(same.error(), None);
    }
}
