//! Whose arithmetic the engine reproduces. The two C++ references are different ggml
//! builds, and float results depend on the build: the order of every f32 sum, the width of
//! its vectors, and which run configurations it accepts.

use bitnet_quant::float_order::Ggml;
use bitnet_quant::{FloatOrder, VectorWidth};

use crate::Architecture;

/// The ggml build whose f32 arithmetic a model's forward pass follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numerics {
    /// Upstream llama.cpp as pinned (`llama-cpp-sys-2`, built for AVX2 whatever the host):
    /// 8-lane kernels.
    LlamaCpp,
    /// Microsoft's bitnet.cpp, which `bitnet-llm-sys` builds with `-march=native`: the older
    /// ggml's kernels at the host's vector width.
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

    /// The vector width of the reference's float kernels (llama-cpp-sys-2 builds ggml for
    /// AVX2 whatever the host, GGML_NATIVE=OFF).
    pub fn width(self) -> VectorWidth {
        match self {
            Numerics::LlamaCpp => VectorWidth::Avx2,
            Numerics::BitnetCpp(width) => width,
        }
    }

    /// The reference's name (`llama.cpp`, `bitnet.cpp`).
    pub fn reference_name(self) -> &'static str {
        match self {
            Numerics::LlamaCpp => "llama.cpp",
            Numerics::BitnetCpp(_) => "bitnet.cpp",
        }
    }

    /// The V cache type of the reference's exact configuration (F32 K, no flash attention):
    /// F32 for llama.cpp; bitnet.cpp runs without flash attention only with an F16 V cache.
    pub fn exact_value_cache(self) -> bitnet_cpp::run::CacheType {
        match self {
            Numerics::LlamaCpp => bitnet_cpp::run::CacheType::F32,
            Numerics::BitnetCpp(_) => bitnet_cpp::run::CacheType::F16,
        }
    }

    /// For F32/F16 weights: the summation order the reference uses for a product of
    /// `n_tokens` activations with a `rows × cols` matrix.
    pub fn float_order(self, n_tokens: usize, rows: usize, cols: usize) -> FloatOrder {
        let ggml = match self {
            Numerics::LlamaCpp => Ggml::LlamaCpp,
            Numerics::BitnetCpp(_) => Ggml::BitnetCpp,
        };
        FloatOrder::for_call(self.width(), ggml, n_tokens, rows, cols)
    }
}
