//! The run configuration shared by the engine and the references: KV cache types, flash
//! attention, micro-batch size, threads.
//!
//! One [`RunConfig`] value is given to both sides of a comparison. Each side resolves it under
//! its own rules (the reference under llama.cpp's or bitnet.cpp's, the engine under its mirror
//! of them) into an [`EffectiveConfig`], and the two effective configurations are compared
//! before any logits are: a mismatch between what the engine computes and what the reference
//! computes is an error, not a silent difference. The defaults are llama.cpp's own
//! (`llama_context_default_params`: F16 K and V caches, flash attention `auto`), so a comparison
//! out of the box is against llama.cpp as users run it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The type of a KV cache (llama.cpp's `-ctk` / `-ctv` values this project reproduces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheType {
    /// 32-bit float.
    F32,
    /// IEEE half precision (llama.cpp's default).
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit blocks of 32 with an F16 scale.
    Q8_0,
}

impl CacheType {
    /// The name llama.cpp uses (`f32`, `f16`, `bf16`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
            CacheType::Bf16 => "bf16",
            CacheType::Q8_0 => "q8_0",
        }
    }

    /// ggml's type id (`enum ggml_type`), the same in both references' ggml.
    pub fn ggml_id(self) -> i32 {
        match self {
            CacheType::F32 => 0,
            CacheType::F16 => 1,
            CacheType::Q8_0 => 8,
            CacheType::Bf16 => 30,
        }
    }

    /// Whether ggml counts the type as quantized (llama.cpp's rules for V caches and
    /// flash attention depend on it).
    pub fn is_quantized(self) -> bool {
        self == CacheType::Q8_0
    }
}

impl fmt::Display for CacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CacheType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(CacheType::F32),
            "f16" => Ok(CacheType::F16),
            "bf16" => Ok(CacheType::Bf16),
            "q8_0" => Ok(CacheType::Q8_0),
            "q4_0" | "q4_1" | "iq4_nl" | "q5_0" | "q5_1" => Err(format!(
                "cache type {s:?} is one llama.cpp accepts, but this engine does not reproduce it (supported: f32, f16, bf16, q8_0)"
            )),
            _ => Err(format!(
                "unknown cache type {s:?} (valid: f32, f16, bf16, q8_0)"
            )),
        }
    }
}

/// Flash attention as asked for (llama.cpp's `-fa on|off|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashAttn {
    /// Always.
    On,
    /// Never.
    Off,
    /// Where the backend supports it: llama.cpp turns it on for a CPU-only context; bitnet.cpp
    /// has no `auto` and takes its default, off.
    Auto,
}

impl FlashAttn {
    /// `on`, `off` or `auto`.
    pub fn name(self) -> &'static str {
        match self {
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
            FlashAttn::Auto => "auto",
        }
    }
}

impl fmt::Display for FlashAttn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FlashAttn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "on" | "1" | "true" | "enabled" => Ok(FlashAttn::On),
            "off" | "0" | "false" | "disabled" => Ok(FlashAttn::Off),
            "auto" | "-1" => Ok(FlashAttn::Auto),
            _ => Err(format!(
                "unknown flash-attention setting {s:?} (valid: on, off, auto)"
            )),
        }
    }
}

/// llama.cpp's default micro-batch size (`n_ubatch`).
pub const DEFAULT_N_UBATCH: u32 = 512;

/// How a model is run, as asked for. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunConfig {
    /// K cache type.
    pub cache_type_k: CacheType,
    /// V cache type.
    pub cache_type_v: CacheType,
    /// Flash attention.
    pub flash_attn: FlashAttn,
    /// Tokens per micro-batch: a prompt is evaluated in slices of this many tokens (llama.cpp
    /// picks its attention kernels per micro-batch).
    pub n_ubatch: u32,
    /// Threads of the reference; 0 = all available ([`RunConfig::resolved_threads`]). The
    /// engine reproduces the reference's work split where it changes the arithmetic
    /// (llama.cpp's flash attention over ≥ 512 cached cells for one token splits the cells
    /// into one chunk per thread).
    pub threads: u32,
}

impl Default for RunConfig {
    /// llama.cpp's defaults (`llama_context_default_params`): F16 K and V caches, flash
    /// attention `auto`, micro-batches of 512, all available threads.
    fn default() -> Self {
        RunConfig {
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
            flash_attn: FlashAttn::Auto,
            n_ubatch: DEFAULT_N_UBATCH,
            threads: 0,
        }
    }
}

impl RunConfig {
    /// The cleanest numerics a reference offers: F32 K cache, flash attention off, and the
    /// V cache in `value_type` (F32 for llama.cpp; bitnet.cpp refuses anything but F16
    /// without flash attention).
    pub fn exact(value_type: CacheType) -> RunConfig {
        RunConfig {
            cache_type_k: CacheType::F32,
            cache_type_v: value_type,
            flash_attn: FlashAttn::Off,
            ..RunConfig::default()
        }
    }

    /// The thread count both sides use: `threads`, or all available when it is 0.
    pub fn resolved_threads(&self) -> u32 {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        }
    }

    /// This configuration with the thread count resolved (what is sent to a reference, so
    /// that both sides count the same threads).
    pub fn with_resolved_threads(mut self) -> RunConfig {
        self.threads = self.resolved_threads();
        self
    }
}

/// A run configuration as resolved by one side: what it computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EffectiveConfig {
    /// K cache type.
    pub cache_type_k: CacheType,
    /// V cache type.
    pub cache_type_v: CacheType,
    /// Whether flash attention runs (`auto` resolved).
    pub flash_attn: bool,
    /// Tokens per micro-batch.
    pub n_ubatch: u32,
    /// Threads.
    pub threads: u32,
}

impl fmt::Display for EffectiveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "K cache {}, V cache {}, flash attention {}, n_ubatch {}, {} thread{}",
            self.cache_type_k,
            self.cache_type_v,
            if self.flash_attn { "on" } else { "off" },
            self.n_ubatch,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unsupported_types_say_why() {
        for t in [
            CacheType::F32,
            CacheType::F16,
            CacheType::Bf16,
            CacheType::Q8_0,
        ] {
            assert_eq!(t.name().parse::<CacheType>(), Ok(t));
        }
        for f in [FlashAttn::On, FlashAttn::Off, FlashAttn::Auto] {
            assert_eq!(f.name().parse::<FlashAttn>(), Ok(f));
        }
        assert!("q4_0"
            .parse::<CacheType>()
            .unwrap_err()
            .contains("does not reproduce"));
        assert!("f8".parse::<CacheType>().unwrap_err().contains("valid"));
        assert!("maybe".parse::<FlashAttn>().is_err());
    }

    /// The ids and names sent to the references are ggml's, as the GGUF reader's table of
    /// ggml types has them.
    #[cfg(feature = "client")]
    #[test]
    fn cache_types_are_ggml_types() {
        for t in [
            CacheType::F32,
            CacheType::F16,
            CacheType::Bf16,
            CacheType::Q8_0,
        ] {
            let g = bitnet_gguf::GgmlType::from_id(t.ggml_id() as u32).unwrap();
            assert_eq!(g.name(), t.name());
            assert_eq!(g.is_quantized(), t.is_quantized());
        }
    }

    #[test]
    fn defaults_are_llama_cpps() {
        let d = RunConfig::default();
        assert_eq!(
            (d.cache_type_k, d.cache_type_v),
            (CacheType::F16, CacheType::F16)
        );
        assert_eq!(d.flash_attn, FlashAttn::Auto);
        assert_eq!(d.n_ubatch, 512);
        assert!(d.with_resolved_threads().threads >= 1);
        let e = RunConfig::exact(CacheType::F32);
        assert_eq!(
            (e.cache_type_k, e.flash_attn),
            (CacheType::F32, FlashAttn::Off)
        );
    }
}
