//! The model, its per-sequence state (KV cache, scratch buffers), the evaluation request every
//! caller goes through ([`Eval`]: tokens in, the logits of chosen positions out, an optional
//! observer of intermediate tensors), and the parts of a layer every architecture shares. The
//! layer itself is written out once per architecture (`llama.rs`, `bitnet.rs`,
//! `bitnet_b158.rs`).

use std::path::Path;

use bitnet_gguf::GgufFile;

use bitnet_cpp::run::{EffectiveConfig, RunConfig};

pub(crate) use crate::attention::LayerCache;
use crate::attention::{self, AttendExtras, AttentionPlan, AttentionShape};
use crate::config::{Architecture, ModelConfig};
use crate::numerics::Numerics;
use crate::ops;
use crate::run::{self, ResolvedRun};
use crate::tap::{names, Observer, Tap, TensorName};
use crate::weights::{LayerWeights, MatmulScratch, MatrixRef, Weights};
use crate::InferenceError;

/// A loaded model: the memory-mapped file, its configuration and its resolved weights.
pub struct Model {
    file: GgufFile,
    config: ModelConfig,
    weights: Weights,
    numerics: Numerics,
    #[cfg(feature = "fault-injection")]
    fault: Option<crate::fault::Fault>,
}

/// Reused buffers: after the first call of a given batch size, a forward pass allocates
/// nothing.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub h: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub att: Vec<f32>,
    pub proj: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub mm: MatmulScratch,
    pub rope: Vec<(f32, f32)>,
    pub attention: attention::AttentionScratch,
    /// Attention weights, filled only when an observer wants them.
    pub probs: Vec<f32>,
}

/// The state of one sequence: its run configuration, how many positions are cached, and the
/// cache itself.
#[derive(Debug)]
pub struct State {
    layers: Vec<LayerCache>,
    pos: usize,
    run: ResolvedRun,
    scratch: Scratch,
}

impl State {
    /// Number of positions already evaluated (the next token's position).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The run configuration in effect, as the reference would report it for the same
    /// request.
    pub fn run_config(&self) -> EffectiveConfig {
        self.run.effective
    }

    /// Forget every cached position.
    pub fn reset(&mut self) {
        for l in &mut self.layers {
            l.clear();
        }
        self.pos = 0;
    }
}

/// Which evaluated positions return logits: llama.cpp's per-token `logits` flags. Asking for
/// fewer positions is faster (the last layer's feed-forward block and the output head run on
/// those rows only, as in llama.cpp) and gives the logits the reference gives when asked for
/// the same positions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Outputs {
    /// Every position (cross-validation).
    #[default]
    All,
    /// The last position only (generation, benchmarks).
    Last,
    /// These indices into the evaluated tokens, strictly ascending.
    Positions(Vec<usize>),
}

impl Outputs {
    /// The indices into `n` evaluated tokens whose logits are returned.
    ///
    /// # Errors
    /// [`InferenceError::BadOutputs`] when `Positions` is not strictly ascending or reaches
    /// past the tokens.
    pub fn rows(&self, n: usize) -> Result<Vec<usize>, InferenceError> {
        match self {
            Outputs::All => Ok((0..n).collect()),
            Outputs::Last => Ok(n.checked_sub(1).into_iter().collect()),
            Outputs::Positions(p) => {
                let ascending = p.windows(2).all(|w| w[0] < w[1]);
                if !ascending || p.last().is_some_and(|&i| i >= n) {
                    return Err(InferenceError::BadOutputs(format!(
                        "output positions {p:?} must be strictly ascending indices below {n}"
                    )));
                }
                Ok(p.clone())
            }
        }
    }
}

/// One evaluation request: the tokens, which positions return logits, and an optional
/// observer of the intermediate tensors ([`crate::tap`]). Every caller — generation,
/// benchmarks, cross-validation, divergence location — goes through this one request.
pub struct Eval<'a> {
    tokens: &'a [u32],
    outputs: Outputs,
    observer: Option<&'a mut dyn Observer>,
}

impl<'a> Eval<'a> {
    /// Evaluate `tokens`, returning the logits of every position, observed by nobody.
    pub fn new(tokens: &'a [u32]) -> Self {
        Eval {
            tokens,
            outputs: Outputs::All,
            observer: None,
        }
    }

    /// Return the logits of `outputs` only.
    pub fn outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }

    /// Show the intermediate tensors to `observer` as they are produced.
    pub fn observe(mut self, observer: &'a mut dyn Observer) -> Self {
        self.observer = Some(observer);
        self
    }
}

/// What a layer needs besides its weights and cache: the file's bytes, the config, and
/// whose attention kernels to reproduce.
pub(crate) struct Ctx<'a> {
    pub bytes: &'a [u8],
    pub c: &'a ModelConfig,
    pub numerics: Numerics,
    pub attention: AttentionPlan,
    #[cfg(feature = "fault-injection")]
    pub fault: Option<crate::fault::Fault>,
}

impl Ctx<'_> {
    /// The RMSNorm epsilon of layer `il`'s `ffn_norm`: the model's (a planted fault may
    /// change it in tests).
    #[inline]
    pub fn ffn_norm_eps(&self, il: usize) -> f32 {
        #[cfg(feature = "fault-injection")]
        if let Some(crate::fault::Fault::FfnNormEpsilon { layer, delta }) = self.fault {
            if layer == il {
                return self.c.rms_eps + delta;
            }
        }
        let _ = il;
        self.c.rms_eps
    }

    /// Whether the feed-forward block must apply SiLU instead of relu² (only a planted
    /// fault says so).
    #[inline]
    pub fn silu_instead_of_relu2(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.fault == Some(crate::fault::Fault::SiluInsteadOfRelu2) {
            return true;
        }
        false
    }

    /// RoPE's frequency base: the model's (a planted fault may change it in tests).
    #[inline]
    fn rope_base(&self) -> f32 {
        #[cfg(feature = "fault-injection")]
        if let Some(crate::fault::Fault::RopeBase { factor }) = self.fault {
            return self.c.rope_base * factor;
        }
        self.c.rope_base
    }

    /// How many cached positions beyond itself a token attends to: none under the causal
    /// mask (a planted fault may widen the mask by one in tests).
    #[inline]
    fn extra_visible(&self) -> usize {
        #[cfg(feature = "fault-injection")]
        if self.fault == Some(crate::fault::Fault::CausalMaskOffByOne) {
            return 1;
        }
        0
    }

    /// `out = W · x` for each token row, as the C++ reference computes it.
    pub fn linear(&self, w: &MatrixRef, x: &[f32], mm: &mut MatmulScratch, out: &mut Vec<f32>) {
        w.forward(self.bytes, self.numerics, x, mm, out);
    }

    /// Pre-norm self-attention for the tokens of `io` (starting at position `io.pos0`):
    /// RMSNorm, Q/K/V, RoPE, append K/V to the cache, causal attention. Leaves the heads'
    /// outputs (before the output projection) in `s.att`.
    pub fn self_attention(
        &self,
        lw: &LayerWeights,
        io: &mut LayerIo,
        cache: &mut LayerCache,
        s: &mut Scratch,
    ) {
        let c = self.c;
        let n = io.x.len() / c.dim;
        let pos0 = io.pos0;
        s.h.clear();
        s.h.extend_from_slice(&io.x);
        ops::rms_norm(&mut s.h, &lw.attn_norm, c.rms_eps);
        io.tap(names::ATTN_NORM, &s.h);
        self.linear(&lw.wq, &s.h, &mut s.mm, &mut s.q);
        self.linear(&lw.wk, &s.h, &mut s.mm, &mut s.k);
        self.linear(&lw.wv, &s.h, &mut s.mm, &mut s.v);
        let kv = c.kv_dim();
        for t in 0..n {
            ops::rope_table(pos0 + t, c.rope_dims, self.rope_base(), &mut s.rope);
            ops::rope(
                &mut s.q[t * c.dim..(t + 1) * c.dim],
                c.head_dim,
                c.rope_dims,
                c.rope_style,
                &s.rope,
            );
            ops::rope(
                &mut s.k[t * kv..(t + 1) * kv],
                c.head_dim,
                c.rope_dims,
                c.rope_style,
                &s.rope,
            );
        }
        io.tap(names::QCUR, &s.q);
        io.tap(names::KCUR, &s.k);
        io.tap(names::VCUR, &s.v);
        s.att.clear();
        s.att.resize(n * c.dim, 0.0);
        // The attention weights exist per head only inside `attend`; they are gathered into
        // one tensor (every head's weights over the cache so far, per position) only when an
        // observer asks for them. With flash attention ggml never forms them (no such tensor
        // in the reference's graph either), so they are not offered then.
        let kq_name = match self.numerics {
            Numerics::LlamaCpp => names::KQ_SOFT_MAX,
            Numerics::BitnetCpp(_) => names::KQ_SOFT_MAX_EXT,
        };
        let want_probs = !self.attention.flash_attn && io.wants(kq_name);
        if want_probs {
            s.probs.clear();
            s.probs.resize(n * c.n_heads * (pos0 + n), 0.0);
        }
        attention::append_and_attend(
            &self.attention,
            &mut s.q,
            &mut s.k,
            &mut s.v,
            cache,
            pos0,
            &mut s.attention,
            AttendExtras {
                probs: want_probs.then_some(s.probs.as_mut_slice()),
                extra_visible: self.extra_visible(),
            },
            &mut s.att,
        );
        if want_probs {
            io.show(kq_name, &s.probs);
        }
        // llama.cpp names the heads' output `kqv_out` before it undoes a quantized V cache's
        // rotation (`build_attn`), so the observer sees it there too.
        io.tap(names::KQV_OUT, &s.att);
        attention::unrotate_output(&self.attention, &mut s.att);
    }
}

/// What a layer reads and writes besides its weights and cache: the residual stream, the
/// positions of its rows, and which rows the layer keeps for the output.
pub(crate) struct LayerIo<'t, 'o> {
    /// The layer's index.
    pub il: usize,
    /// The residual stream: one row of `dim` per entry of `positions`.
    pub x: Vec<f32>,
    /// Position of the first evaluated token.
    pub pos0: usize,
    /// The sequence position of each row of `x`.
    pub positions: Vec<usize>,
    /// In the last layer, the rows (indices into the evaluated tokens) whose logits were
    /// asked for; `None` elsewhere.
    pub keep: Option<&'t [usize]>,
    tap: &'t mut Tap<'o>,
}

impl LayerIo<'_, '_> {
    /// Show `data` (one row per current position) to the observer as this layer's `op`.
    #[inline]
    pub fn tap(&mut self, op: &'static str, data: &[f32]) {
        let row_len = data.len() / self.positions.len().max(1);
        self.tap.emit(
            TensorName::layer(op, self.il),
            &self.positions,
            row_len,
            data,
        );
    }

    /// Whether the observer wants this layer's `op` (for a tensor assembled only when asked;
    /// then show it with [`LayerIo::show`]).
    #[inline]
    pub fn wants(&mut self, op: &'static str) -> bool {
        self.tap.wants(TensorName::layer(op, self.il))
    }

    /// Show this layer's `op` (one row per current position), which the observer wants.
    pub fn show(&mut self, op: &'static str, data: &[f32]) {
        let row_len = data.len() / self.positions.len().max(1);
        self.tap.show(
            TensorName::layer(op, self.il),
            &self.positions,
            row_len,
            data,
        );
    }

    /// Show the residual stream to the observer as this layer's `op`.
    #[inline]
    pub fn tap_residual(&mut self, op: &'static str) {
        let row_len = self.x.len() / self.positions.len().max(1);
        self.tap.emit(
            TensorName::layer(op, self.il),
            &self.positions,
            row_len,
            &self.x,
        );
    }

    /// Between the attention block and the feed-forward block of the last layer, keep only
    /// the rows whose logits were asked for, in the residual stream and in `block_out` (the
    /// attention block's output): llama.cpp does the same (`inp_out_ids`), so the last
    /// feed-forward block and the output head run on the output rows only — which also
    /// decides which of ggml's kernels they use.
    pub fn keep_output_rows(&mut self, block_out: &mut Vec<f32>) {
        let Some(keep) = self.keep else { return };
        if keep.len() == self.positions.len() {
            return;
        }
        let dim = self.x.len() / self.positions.len();
        gather_rows(&mut self.x, dim, keep);
        gather_rows(block_out, dim, keep);
        let kept: Vec<usize> = keep.iter().map(|&i| self.positions[i]).collect();
        self.positions = kept;
    }
}

/// Keep rows `keep` (ascending indices) of `rows` (rows of `width`), in order, in place.
fn gather_rows(rows: &mut Vec<f32>, width: usize, keep: &[usize]) {
    for (to, &from) in keep.iter().enumerate() {
        if to != from {
            rows.copy_within(from * width..(from + 1) * width, to * width);
        }
    }
    rows.truncate(keep.len() * width);
}

/// `x += y`.
pub(crate) fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

impl Model {
    /// Map and validate a GGUF file, read its configuration and resolve its weights.
    ///
    /// # Errors
    /// An unreadable or corrupt file, an unsupported architecture or tensor type, a missing
    /// tensor or one of the wrong shape, a file the C++ references would refuse or die on
    /// ([`crate::rules`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Model, InferenceError> {
        #[cfg(feature = "fault-injection")]
        let fault = crate::fault::armed_for(path.as_ref());
        let file = GgufFile::open(path)?;
        // The references' rules first: nothing below sizes anything from a count they have
        // not checked.
        let config = crate::rules::check_model_file(&file)?;
        let weights = Weights::load(&file, &config)?;
        let numerics = Numerics::for_architecture(config.arch);
        Ok(Model {
            file,
            config,
            weights,
            numerics,
            #[cfg(feature = "fault-injection")]
            fault,
        })
    }

    /// Whose arithmetic this model reproduces (the C++ reference that runs it here).
    pub fn numerics(&self) -> Numerics {
        self.numerics
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The weight tensor the output head multiplies by: `output.weight`, or
    /// `token_embd.weight` when the output is tied to the embedding.
    pub fn output_head(&self) -> &str {
        self.weights.output.name()
    }

    /// The underlying file (metadata, tokenizer keys).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// A fresh, empty sequence state in the reference's default configuration
    /// ([`RunConfig::default`]: llama.cpp's defaults, which bitnet.cpp shares but for flash
    /// attention, off there).
    pub fn new_state(&self) -> State {
        // The defaults (F16 caches, non-quantized) resolve for every model and reference.
        self.new_state_with(&RunConfig::default())
            .expect("the default run configuration resolves for every model")
    }

    /// A fresh, empty sequence state running as `run` says: KV cache types, flash attention,
    /// micro-batch size, and the reference's thread count (which decides how llama.cpp splits
    /// one token's flash attention over a long cache).
    ///
    /// # Errors
    /// [`InferenceError::RunConfig`] for a combination the model's reference refuses (with
    /// its reason) or one the engine does not reproduce.
    pub fn new_state_with(&self, run: &RunConfig) -> Result<State, InferenceError> {
        let run = run::resolve(run, self.numerics, self.config.head_dim)?;
        Ok(State {
            layers: vec![LayerCache::default(); self.weights.layers.len()],
            pos: 0,
            run,
            scratch: Scratch::default(),
        })
    }

    /// Evaluate `tokens` after the positions already in `state`, in one batch; returns the
    /// logits of every new position (`tokens.len()` rows of `n_vocab`).
    ///
    /// # Errors
    /// As [`Model::eval`].
    pub fn forward(&self, state: &mut State, tokens: &[u32]) -> Result<Vec<f32>, InferenceError> {
        self.eval(state, Eval::new(tokens))
    }

    /// Evaluate a request after the positions already in `state`, in one batch (split into
    /// micro-batches of the state's `n_ubatch`, as the reference splits it): every token
    /// enters the KV cache; the logits of the positions `request` asks for come back, in
    /// order (`rows × n_vocab`), computed as the reference computes them when it is asked for
    /// the same positions; the observer, if any, sees each intermediate tensor it wants.
    ///
    /// # Errors
    /// [`InferenceError::TokenOutOfRange`] for an id outside the vocabulary,
    /// [`InferenceError::ContextFull`] past the trained context length,
    /// [`InferenceError::BadOutputs`] for output positions that are not ascending indices
    /// into the tokens.
    pub fn eval(&self, state: &mut State, request: Eval<'_>) -> Result<Vec<f32>, InferenceError> {
        let c = &self.config;
        let tokens = request.tokens;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(InferenceError::TokenOutOfRange {
                token: t,
                n_vocab: c.n_vocab,
            });
        }
        let needed = state.pos.checked_add(tokens.len());
        if needed.is_none_or(|n| n > c.context_length) {
            return Err(InferenceError::ContextFull {
                needed: needed.unwrap_or(usize::MAX),
                context: c.context_length,
            });
        }
        let keep = request.outputs.rows(tokens.len())?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let run = state.run;
        let ctx = Ctx {
            bytes: self.file.bytes(),
            c,
            numerics: self.numerics,
            attention: AttentionPlan {
                shape: AttentionShape {
                    n_heads: c.n_heads,
                    n_kv_heads: c.n_kv_heads,
                    head_dim: c.head_dim,
                },
                numerics: self.numerics,
                keys: run.keys,
                values: run.values,
                flash_attn: run.effective.flash_attn,
                threads: run.effective.threads as usize,
            },
            #[cfg(feature = "fault-injection")]
            fault: self.fault,
        };
        let mut tap = Tap::new(request.observer);
        // The reference evaluates a batch in micro-batches and picks its kernels for each;
        // each micro-batch keeps its own output rows through the last layer.
        let n_ubatch = run.effective.n_ubatch as usize;
        let mut logits = Vec::with_capacity(keep.len() * c.n_vocab);
        for (u, ubatch) in tokens.chunks(n_ubatch).enumerate() {
            let base = u * n_ubatch;
            let keep_here: Vec<usize> = keep
                .iter()
                .filter(|&&i| (base..base + ubatch.len()).contains(&i))
                .map(|&i| i - base)
                .collect();
            logits.extend(self.forward_ubatch(&ctx, state, ubatch, &keep_here, &mut tap));
        }
        Ok(logits)
    }

    /// One micro-batch through every layer and the output head; the logits of the rows
    /// `keep` (indices into `tokens`).
    fn forward_ubatch(
        &self,
        ctx: &Ctx,
        state: &mut State,
        tokens: &[u32],
        keep: &[usize],
        tap: &mut Tap<'_>,
    ) -> Vec<f32> {
        let c = ctx.c;
        let w = &self.weights;
        let mut io = LayerIo {
            il: 0,
            x: vec![0f32; tokens.len() * c.dim],
            pos0: state.pos,
            positions: (state.pos..state.pos + tokens.len()).collect(),
            keep: None,
            tap,
        };
        for (row, &t) in io.x.chunks_exact_mut(c.dim).zip(tokens) {
            w.token_embd.row(ctx.bytes, t as usize, row);
        }
        let layer = match c.arch {
            Architecture::Llama => crate::llama::layer,
            Architecture::Bitnet => crate::bitnet::layer,
            Architecture::BitnetB158 => crate::bitnet_b158::layer,
        };
        let last = w.layers.len().saturating_sub(1);
        for (il, (lw, cache)) in w.layers.iter().zip(&mut state.layers).enumerate() {
            io.il = il;
            io.keep = (il == last).then_some(keep);
            layer(ctx, lw, &mut io, cache, &mut state.scratch);
        }
        let LayerIo {
            mut x,
            positions,
            tap,
            ..
        } = io;
        ops::rms_norm(&mut x, &w.output_norm, c.rms_eps);
        tap.emit(
            TensorName::output(names::RESULT_NORM),
            &positions,
            c.dim,
            &x,
        );
        let mut logits = Vec::new();
        ctx.linear(&w.output, &x, &mut state.scratch.mm, &mut logits);
        tap.emit(
            TensorName::output(names::RESULT_OUTPUT),
            &positions,
            c.n_vocab,
            &logits,
        );
        state.pos += tokens.len();
        logits
    }

    /// Logits for every position of `tokens`, from an empty state, in one batched pass.
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn eval_logits_all_positions(&self, tokens: &[u32]) -> Result<Vec<f32>, InferenceError> {
        let mut state = self.new_state();
        self.forward(&mut state, tokens)
    }

    /// Greedy continuation: evaluate `prompt`, then pick the most likely token `n` times (or
    /// until `stop` says so), calling `on_token` with each. Returns the generated ids.
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        n: usize,
        stop: impl FnMut(u32) -> bool,
        on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>, InferenceError> {
        self.generate_greedy_with(&RunConfig::default(), prompt, n, stop, on_token)
    }

    /// [`Model::generate_greedy`] running as `run` says.
    ///
    /// # Errors
    /// As [`Model::new_state_with`] and [`Model::forward`].
    pub fn generate_greedy_with(
        &self,
        run: &RunConfig,
        prompt: &[u32],
        n: usize,
        mut stop: impl FnMut(u32) -> bool,
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>, InferenceError> {
        let v = self.config.n_vocab;
        let mut state = self.new_state_with(run)?;
        let logits = self.eval(&mut state, Eval::new(prompt).outputs(Outputs::Last))?;
        let mut next = ops::argmax(&logits[logits.len().saturating_sub(v)..]);
        let mut out = Vec::new();
        for i in 0..n {
            if stop(next) {
                break;
            }
            out.push(next);
            on_token(next);
            if i + 1 == n {
                break;
            }
            let logits = self.forward(&mut state, &[next])?;
            next = ops::argmax(&logits);
        }
        Ok(out)
    }
}
