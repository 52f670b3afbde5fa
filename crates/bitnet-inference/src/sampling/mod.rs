//! Sampling as llama.cpp samples: its default sampler chain, its parameters and defaults, and
//! its random number generator, so that the same logits and seed give the same tokens as
//! `llama-completion --seed N`.
//!
//! llama.cpp's `common_sampler_init` builds a chain — a logit bias for the vocabulary's
//! suppress tokens, then `penalties; dry; top_n_sigma; top_k; typ_p; top_p; min_p; xtc;
//! temperature` (reorderable) — and ends it with `dist`, which draws one
//! `std::uniform_real_distribution<double>` number from a `std::mt19937` seeded with the seed
//! and walks the candidates' cumulative probabilities. [`Sampler`] is that chain.
//!
//! "The same tokens" is a bit-level promise, and three things make it one:
//! - **the generator**: libstdc++'s `std::mt19937` and its `generate_canonical`, which builds
//!   a `double` from two 32-bit draws ([`rng`]);
//! - **the sorts**: the samplers sort candidates with `std::sort` and `std::partial_sort`,
//!   which are unstable; where logits tie, their order decides the pick, so libstdc++'s exact
//!   algorithms are reproduced ([`cxx_sort`]), as is llama.cpp's own bucket sort;
//! - **the arithmetic**: each sampler computes in `float` or `double` exactly where
//!   llama.cpp's does, with glibc's `expf`/`logf`/`powf` (which Rust's `f32` methods call).
//!
//! Sampling parameters can also come from the model file (`general.sampling.*`,
//! [`apply_model_defaults`]), and a vocabulary may suppress tokens ([`suppress_tokens`]).
//! DRY needs its sequence breakers tokenized against the vocabulary ([`DryBreakers`]).
//!
//! Not implemented: Mirostat (which replaces the chain), the `infill` and `adaptive_p`
//! samplers, grammars, and user logit biases.

mod candidates;
mod chain;
pub mod cxx_sort;
mod dry;
mod model_defaults;
mod params;
pub mod rng;
mod stages;

pub use chain::Sampler;
pub use dry::{DryBreakers, MAX_BREAKER_BYTES};
pub use model_defaults::{apply_model_defaults, suppress_tokens, ModelSamplingDefaults};
pub use params::{SamplerType, SamplingParams, RANDOM_SEED};

/// Everything that can be wrong with sampling parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplingError {
    /// A parameter outside the range llama.cpp accepts.
    #[error("{flag} {value}: expected {expected}")]
    OutOfRange {
        /// The llama.cpp flag that sets it.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A sampler name or letter llama.cpp does not know (or that this engine does not
    /// implement: `infill`, `adaptive_p`).
    #[error("unknown sampler {0:?} (known: penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature; letters e d s k y p m x t)")]
    UnknownSampler(String),
    /// A DRY sequence breaker that cannot be used.
    #[error("DRY sequence breaker: {0}")]
    BadDryBreaker(String),
    /// The model asks for a kind of sampling this engine does not implement.
    #[error("{0}, which this engine does not implement")]
    Unsupported(String),
    /// A sampling-related key of the model has the wrong type.
    #[error("{0}")]
    BadModel(String),
}
