//! Whose arithmetic the engine reproduces. The two C++ references are different ggml
//! builds, and float results depend on the build: the order of every f32 sum, the width of
//! its vectors, and the precision of the V cache.

use bitnet_quant::{FloatOrder, VectorWidth};

use crate::Architecture;

/// The ggml build whose f32 arithmetic a model's forward pass follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numerics {
    /// Upstream llama.cpp as pinned (`llama-cpp-sys-2`, built for AVX2 whatever the host):
    /// F32 V cache, 8-lane kernels, the newer ggml's f64 tail in `ggml_vec_dot_f32`.
    LlamaCpp,
    /// Microsoft's bitnet.cpp, which `bitnet-llm-sys` builds with `-march=native`: F16 V
    /// cache and the older ggml's kernels at the host's vector width.
    BitnetCpp(VectorWidth),
}

impl Numerics {
    /// The reference that runs `arch` on this machine: bitnet.cpp for `bitnet-b1.58`
    /// (upstream llama.cpp does not know that architecture), llama.cpp for the others.
    pub fn for_architecture(arch: Architecture) -> Numerics {
        match arch {
            Architecture::BitnetB158 => Numerics::BitnetCpp(VectorWidth::host()),
            Architecture::Llama | Architecture::Bitnet => Numerics::LlamaCpp,
        }
    }

    /// Whether the reference caches V in F16 (so V is rounded to F16 before caching).
    pub fn f16_values(self) -> bool {
        matches!(self, Numerics::BitnetCpp(_))
    }

    /// For F32/F16 weights: the summation order of a product with `n_tokens` activations of
    /// `cols` elements, when the engine reproduces it exactly (bitnet.cpp). `None`: the
    /// weight type's default kernels (`bitnet-quant`), which agree with llama.cpp's float
    /// kernels to ~1e-7 relative.
    pub fn float_order(self, n_tokens: usize, cols: usize) -> Option<FloatOrder> {
        match self {
            Numerics::LlamaCpp => None,
            Numerics::BitnetCpp(width) => Some(FloatOrder::for_call(width, n_tokens, cols)),
        }
    }
}
