//! The bitnet-rs engine: load a GGUF model (`llama`, upstream `bitnet`, Microsoft's
//! `bitnet-b1.58`), evaluate a prompt in one batched pass, decode with a KV cache, generate
//! greedily or sample as llama.cpp samples ([`sampling`]).
//!
//! Every caller goes through one evaluation request, [`Eval`]: token ids in; the logits of the
//! positions asked for ([`Outputs`]: all for cross-validation, the last for generation and
//! benchmarks) out; optionally an [`Observer`] that sees the intermediate tensors under
//! llama.cpp's graph names ([`tap`]) as the pass produces them.
//!
//! The point of this engine is to be checkable against the C++ references, so every step is
//! computed the way ggml computes it: activations are quantized exactly as ggml quantizes them
//! before a quantized matmul (`bitnet-quant`), RMSNorm sums in f64, RoPE builds its angle
//! table by repeated f32 multiplication, softmax sums in f64, and every float sum follows the
//! lane order of the reference's kernels. Which reference a model follows is [`Numerics`]:
//! llama.cpp for `llama` and `bitnet`, bitnet.cpp (the host's vector width) for
//! `bitnet-b1.58`. How a sequence runs — KV cache types, flash attention, micro-batch size,
//! the reference's thread count — is a [`RunConfig`], the same value the reference process
//! receives ([`run`]; [`Model::new_state_with`]), llama.cpp's defaults unless asked otherwise.
//! The weights are views over the memory map (no copy of the model); the per-sequence
//! [`State`] owns the KV cache (in the configured types) and reusable scratch buffers.
//!
//! Each architecture's layer is written out in its own file, top to bottom; what they share
//! (self-attention, linear layers) lives in `model.rs`, the attention kernels of each C++
//! reference in `attention/`, the other arithmetic in `ops.rs`.
#![deny(missing_docs)]

pub mod attention;
mod bitnet;
mod bitnet_b158;
pub mod config;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod llama;
mod model;
pub mod numerics;
pub mod ops;
pub mod perplexity;
pub mod rules;
pub mod run;
pub mod sampling;
pub mod tap;
pub mod template;
mod weights;

pub use bitnet_cpp::run::{CacheType, EffectiveConfig, FlashAttn, RunConfig};
pub use config::{Architecture, ModelConfig, RopeStyle};
pub use model::{Eval, Model, Outputs, State};
pub use numerics::Numerics;
pub use rules::check_model_file;
pub use run::RunChoice;
pub use tap::{graph_ops, FirstNonFinite, NonFiniteAt, Observer, Tapped, TensorName};
pub use template::{
    format_prompt, template_warnings, FormattedPrompt, ModelChatInfo, TemplateError, TemplateType,
    TemplateWarning,
};

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// The file is unreadable or not a valid GGUF.
    #[error(transparent)]
    Gguf(#[from] bitnet_gguf::GgufError),
    /// `general.architecture` is not one this engine runs.
    #[error("architecture {0:?} is not supported (supported: llama, bitnet, bitnet-b1.58)")]
    UnsupportedArchitecture(String),
    /// Hyper-parameters missing or inconsistent.
    #[error("bad model configuration: {0}")]
    BadConfig(String),
    /// A tensor the architecture needs is absent.
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    /// A tensor has the wrong shape or unreadable data.
    #[error("bad tensor: {0}")]
    BadTensor(String),
    /// A matrix type the engine has no kernel for (the message lists
    /// [`bitnet_quant::WeightType::ALL`]).
    #[error(
        "tensor {tensor:?} has type {ty}, which the engine cannot multiply (supported: {list})",
        list = bitnet_quant::WeightType::names()
    )]
    UnsupportedTensorType {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: bitnet_gguf::GgmlType,
    },
    /// The file breaks a rule a C++ reference enforces (or holds a value no model can have):
    /// see [`rules`].
    #[error("{subject}: {problem}")]
    Refused {
        /// The key or tensor.
        subject: String,
        /// What is wrong, and who says so.
        problem: String,
    },
    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary (size {n_vocab})")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// A run configuration the model's reference refuses, or one the engine does not
    /// reproduce.
    #[error("{0}")]
    RunConfig(String),
    /// Output positions that are not ascending indices into the evaluated tokens.
    #[error("{0}")]
    BadOutputs(String),
    /// More positions than the model's context.
    #[error("{needed} positions exceed the context length {context}")]
    ContextFull {
        /// Positions asked for.
        needed: usize,
        /// The limit.
        context: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unsupported-type message names the tensor, its type, and every type the engine can
    /// multiply, from bitnet-quant's one list.
    #[test]
    fn unsupported_type_message_lists_the_supported_types() {
        let e = InferenceError::UnsupportedTensorType {
            tensor: "blk.0.ffn_down.weight".into(),
            ty: bitnet_gguf::GgmlType::Q6_K,
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("tensor \"blk.0.ffn_down.weight\" has type q6_K"),
            "{msg}"
        );
        for w in bitnet_quant::WeightType::ALL {
            assert!(msg.contains(w.ggml().name()), "{msg} lacks {:?}", w);
        }
        assert!(
            msg.contains("q5_0, q5_1") && msg.contains("iq4_nl"),
            "{msg}"
        );
    }
}
