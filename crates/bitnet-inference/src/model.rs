//! The model, its per-sequence state (KV cache, scratch buffers), and the parts of a layer
//! every architecture shares. The layer itself is written out once per architecture
//! (`llama.rs`, `bitnet.rs`, `bitnet_b158.rs`).

use std::path::Path;

use bitnet_gguf::GgufFile;

use bitnet_cpp::run::{EffectiveConfig, RunConfig};

pub(crate) use crate::attention::LayerCache;
use crate::attention::{self, AttentionPlan, AttentionShape};
use crate::config::{Architecture, ModelConfig};
use crate::numerics::Numerics;
use crate::ops;
use crate::run::{self, ResolvedRun};
use crate::weights::{LayerWeights, MatmulScratch, MatrixRef, Weights};
use crate::InferenceError;

/// A loaded model: the memory-mapped file, its configuration and its resolved weights.
pub struct Model {
    file: GgufFile,
    config: ModelConfig,
    weights: Weights,
    numerics: Numerics,
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

/// What a layer needs besides its weights and cache: the file's bytes, the config, and
/// whose attention kernels to reproduce.
pub(crate) struct Ctx<'a> {
    pub bytes: &'a [u8],
    pub c: &'a ModelConfig,
    pub numerics: Numerics,
    pub attention: AttentionPlan,
}

impl Ctx<'_> {
    /// `out = W · x` for each token row, as the C++ reference computes it.
    pub fn linear(&self, w: &MatrixRef, x: &[f32], mm: &mut MatmulScratch, out: &mut Vec<f32>) {
        w.forward(self.bytes, self.numerics, x, mm, out);
    }

    /// Pre-norm self-attention for `n` tokens starting at `pos0`: RMSNorm, Q/K/V, RoPE,
    /// append K/V to the cache, causal attention. Leaves the heads' outputs (before the
    /// output projection) in `s.att`.
    pub fn self_attention(
        &self,
        lw: &LayerWeights,
        x: &[f32],
        pos0: usize,
        cache: &mut LayerCache,
        s: &mut Scratch,
    ) {
        let c = self.c;
        let n = x.len() / c.dim;
        s.h.clear();
        s.h.extend_from_slice(x);
        ops::rms_norm(&mut s.h, &lw.attn_norm, c.rms_eps);
        self.linear(&lw.wq, &s.h, &mut s.mm, &mut s.q);
        self.linear(&lw.wk, &s.h, &mut s.mm, &mut s.k);
        self.linear(&lw.wv, &s.h, &mut s.mm, &mut s.v);
        let kv = c.kv_dim();
        for t in 0..n {
            ops::rope_table(pos0 + t, c.rope_dims, c.rope_base, &mut s.rope);
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
        s.att.clear();
        s.att.resize(n * c.dim, 0.0);
        attention::append_and_attend(
            &self.attention,
            &mut s.q,
            &mut s.k,
            &mut s.v,
            cache,
            pos0,
            &mut s.attention,
            &mut s.att,
        );
    }
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
    /// tensor or one of the wrong shape.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, InferenceError> {
        let file = GgufFile::open(path)?;
        let config = ModelConfig::from_gguf(&file)?;
        let weights = Weights::load(&file, &config)?;
        let numerics = Numerics::for_architecture(config.arch);
        Ok(Model {
            file,
            config,
            weights,
            numerics,
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
            layers: vec![LayerCache::default(); self.config.n_layers],
            pos: 0,
            run,
            scratch: Scratch::default(),
        })
    }

    /// Evaluate `tokens` after the positions already in `state`, in one batch; returns the
    /// logits of every new position (`tokens.len()` rows of `n_vocab`).
    ///
    /// # Errors
    /// [`InferenceError::TokenOutOfRange`] for an id outside the vocabulary,
    /// [`InferenceError::ContextFull`] past the trained context length.
    pub fn forward(&self, state: &mut State, tokens: &[u32]) -> Result<Vec<f32>, InferenceError> {
        let c = &self.config;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(InferenceError::TokenOutOfRange {
                token: t,
                n_vocab: c.n_vocab,
            });
        }
        if state.pos + tokens.len() > c.context_length {
            return Err(InferenceError::ContextFull {
                needed: state.pos + tokens.len(),
                context: c.context_length,
            });
        }
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
        };
        // The reference evaluates a batch in micro-batches and picks its kernels for each.
        let mut logits = Vec::with_capacity(tokens.len() * c.n_vocab);
        for ubatch in tokens.chunks(run.effective.n_ubatch as usize) {
            logits.extend(self.forward_ubatch(&ctx, state, ubatch));
        }
        Ok(logits)
    }

    /// One micro-batch through every layer and the output head.
    fn forward_ubatch(&self, ctx: &Ctx, state: &mut State, tokens: &[u32]) -> Vec<f32> {
        let c = ctx.c;
        let w = &self.weights;
        let mut x = vec![0f32; tokens.len() * c.dim];
        for (row, &t) in x.chunks_exact_mut(c.dim).zip(tokens) {
            w.token_embd.row(ctx.bytes, t as usize, row);
        }
        let layer = match c.arch {
            Architecture::Llama => crate::llama::layer,
            Architecture::Bitnet => crate::bitnet::layer,
            Architecture::BitnetB158 => crate::bitnet_b158::layer,
        };
        for (lw, cache) in w.layers.iter().zip(&mut state.layers) {
            layer(ctx, lw, &mut x, state.pos, cache, &mut state.scratch);
        }
        ops::rms_norm(&mut x, &w.output_norm, c.rms_eps);
        let mut logits = Vec::new();
        ctx.linear(&w.output, &x, &mut state.scratch.mm, &mut logits);
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
        let logits = self.forward(&mut state, prompt)?;
        let mut next = ops::argmax(&logits[logits.len() - v..]);
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
