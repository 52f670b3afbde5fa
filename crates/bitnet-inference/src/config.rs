//! Model hyper-parameters from GGUF metadata.

use bitnet_gguf::GgufFile;

use crate::InferenceError;

/// The supported architectures (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// llama.cpp's `llama`.
    Llama,
    /// Upstream llama.cpp's `bitnet`.
    Bitnet,
    /// Microsoft bitnet.cpp's `bitnet-b1.58`.
    BitnetB158,
}

impl Architecture {
    /// The `general.architecture` string.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Bitnet => "bitnet",
            Architecture::BitnetB158 => "bitnet-b1.58",
        }
    }

    /// The feed-forward activation the architecture's graph applies to the gate: `silu`
    /// (`llama`, upstream `bitnet`) or `relu_sqr` (bitnet.cpp's `bitnet-b1.58`) — the names
    /// the references' graph facts use.
    pub fn ffn_activation(self) -> &'static str {
        match self {
            Architecture::Llama | Architecture::Bitnet => "silu",
            Architecture::BitnetB158 => "relu_sqr",
        }
    }
}

/// How RoPE pairs the elements of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)` (ggml's NORM; `llama`).
    Norm,
    /// Split halves `(i, i + n/2)` (ggml's NEOX; `bitnet`, `bitnet-b1.58`).
    Neox,
}

/// Everything the forward pass needs to know about the model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Architecture,
    /// Vocabulary size (rows of the output head).
    pub n_vocab: usize,
    /// Hidden size.
    pub dim: usize,
    /// Layers.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Feed-forward size.
    pub ffn_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// Rotated dimensions per head.
    pub rope_dims: usize,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// Trained context length.
    pub context_length: usize,
}

impl ModelConfig {
    /// Read the configuration of a model file.
    ///
    /// # Errors
    /// [`InferenceError::UnsupportedArchitecture`] or [`InferenceError::BadConfig`] naming the
    /// missing or inconsistent key.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig, InferenceError> {
        let arch_name = file.architecture()?;
        let arch = match arch_name {
            "llama" => Architecture::Llama,
            "bitnet" => Architecture::Bitnet,
            "bitnet-b1.58" => Architecture::BitnetB158,
            other => return Err(InferenceError::UnsupportedArchitecture(other.to_string())),
        };
        let h = file.hparams()?;
        let need = |v: Option<u64>, key: &str| {
            v.filter(|&x| x > 0).map(|x| x as usize).ok_or_else(|| {
                InferenceError::BadConfig(format!("{arch_name}.{key} is missing or zero"))
            })
        };
        let dim = need(h.embedding_length, "embedding_length")?;
        let n_heads = need(h.head_count, "attention.head_count")?;
        let n_kv_heads = h.head_count_kv.map(|x| x as usize).unwrap_or(n_heads);
        if dim % n_heads != 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(InferenceError::BadConfig(format!(
                "{n_heads} heads / {n_kv_heads} KV heads do not divide hidden size {dim}"
            )));
        }
        let head_dim = dim / n_heads;
        let n_vocab = match file.tokenizer()?.tokens {
            Some(t) => t.len(),
            None => need(h.vocab_size, "vocab_size")?,
        };
        let rope_dims = h
            .rope_dimension_count
            .map(|x| x as usize)
            .unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(InferenceError::BadConfig(format!(
                "{arch_name}.rope.dimension_count {rope_dims} does not fit head size {head_dim} (it must be even and at most the head size)"
            )));
        }
        Ok(ModelConfig {
            arch,
            n_vocab,
            dim,
            n_layers: need(h.block_count, "block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: need(h.feed_forward_length, "feed_forward_length")?,
            rms_eps: h.rms_norm_eps.ok_or_else(|| {
                InferenceError::BadConfig(format!(
                    "{arch_name}.attention.layer_norm_rms_epsilon is missing"
                ))
            })?,
            rope_base: h.rope_freq_base.unwrap_or(10_000.0),
            rope_dims,
            rope_style: match arch {
                Architecture::Llama => RopeStyle::Norm,
                Architecture::Bitnet | Architecture::BitnetB158 => RopeStyle::Neox,
            },
            context_length: h.context_length.map(|x| x as usize).unwrap_or(4096),
        })
    }

    /// Size of the keys (and values) of one position in one layer.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
