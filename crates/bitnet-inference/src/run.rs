//! How the engine resolves a [`RunConfig`] for a model: the rules of the reference it
//! reproduces, mirrored, so that the engine refuses what the reference refuses (with the
//! reference's reason) and runs what the reference runs.
//!
//! - llama.cpp (`llama_init_from_model` in the pinned llama-cpp-sys-2): flash attention `auto`
//!   is on for a CPU-only context (the CPU backend runs `FLASH_ATTN_EXT`, so
//!   `resolve_fused_ops` enables it); a quantized V cache needs flash attention (`auto` turns
//!   it on, `off` is refused); with flash attention a quantized cache type's block must divide
//!   the head size. Its flash-attention graph casts an F32 K or V cache to F16
//!   (`build_attn_mha`), so F32 under flash attention computes as F16.
//! - bitnet.cpp (`llama_new_context_with_model` in bitnet-llm-sys 1.0.2): no `auto` (its
//!   default, off, is taken); a V cache other than F16 needs flash attention; its flash
//!   attention crashes on an F32 K or V cache (refused here, and by its reference process).

use bitnet_cpp::run::{CacheType, EffectiveConfig, FlashAttn, RunConfig};

use crate::numerics::Numerics;
use crate::InferenceError;

/// The configuration a state runs with: the reference's resolution of a [`RunConfig`], plus
/// what the engine derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRun {
    /// What the reference would report for the same request.
    pub effective: EffectiveConfig,
    /// The K cache as the attention kernels read it (F32 becomes F16 under llama.cpp's flash
    /// attention).
    pub keys: CacheType,
    /// The V cache as the attention kernels read it.
    pub values: CacheType,
}

/// A run configuration as a user asks for it: the reference's defaults, or with `exact` its
/// exact configuration, with any field overridden (`None` keeps the preset's). Which reference
/// decides the exact preset's V cache, so a choice becomes a [`RunConfig`] for a model with
/// [`RunChoice::config_for`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunChoice {
    /// Start from the exact configuration (F32 K, no flash attention; V as the reference
    /// allows) instead of the defaults.
    pub exact: bool,
    /// K cache type.
    pub cache_type_k: Option<CacheType>,
    /// V cache type.
    pub cache_type_v: Option<CacheType>,
    /// Flash attention.
    pub flash_attn: Option<FlashAttn>,
    /// Tokens per micro-batch.
    pub n_ubatch: Option<u32>,
}

impl RunChoice {
    /// The configuration this choice means for a model whose reference is `numerics`, run with
    /// `threads` threads (0 = all available).
    pub fn config_for(&self, numerics: Numerics, threads: u32) -> RunConfig {
        let base = if self.exact {
            RunConfig::exact(numerics.exact_value_cache())
        } else {
            RunConfig::default()
        };
        RunConfig {
            cache_type_k: self.cache_type_k.unwrap_or(base.cache_type_k),
            cache_type_v: self.cache_type_v.unwrap_or(base.cache_type_v),
            flash_attn: self.flash_attn.unwrap_or(base.flash_attn),
            n_ubatch: self.n_ubatch.unwrap_or(base.n_ubatch),
            threads,
        }
    }
}

fn refused(message: String) -> InferenceError {
    InferenceError::RunConfig(message)
}

/// Resolve `run` for a model with heads of `head_dim` whose arithmetic follows `numerics`.
///
/// # Errors
/// [`InferenceError::RunConfig`] for a combination the reference refuses (its reason) or
/// one the engine does not reproduce.
pub fn resolve(
    run: &RunConfig,
    numerics: Numerics,
    head_dim: usize,
) -> Result<ResolvedRun, InferenceError> {
    if run.n_ubatch == 0 {
        return Err(refused("n_ubatch must be at least 1".into()));
    }
    let (k, v) = (run.cache_type_k, run.cache_type_v);
    let flash_attn = match numerics {
        Numerics::LlamaCpp => llama_cpp_flash_attn(run, head_dim)?,
        Numerics::BitnetCpp(_) => bitnet_cpp_flash_attn(run)?,
    };
    let read_as = |t: CacheType| {
        if flash_attn && t == CacheType::F32 && numerics == Numerics::LlamaCpp {
            CacheType::F16
        } else {
            t
        }
    };
    let resolved = ResolvedRun {
        effective: EffectiveConfig {
            cache_type_k: k,
            cache_type_v: v,
            flash_attn,
            n_ubatch: run.n_ubatch,
            threads: run.resolved_threads(),
        },
        keys: read_as(k),
        values: read_as(v),
    };
    if let Some(why) = not_reproduced(&resolved, numerics) {
        return Err(refused(format!(
            "{} is a configuration {} runs, but the engine does not reproduce it: {why}",
            resolved.effective,
            numerics.reference_name()
        )));
    }
    Ok(resolved)
}

fn llama_cpp_flash_attn(run: &RunConfig, head_dim: usize) -> Result<bool, InferenceError> {
    let (k, v) = (run.cache_type_k, run.cache_type_v);
    let flash_attn = match run.flash_attn {
        FlashAttn::On => true,
        // A CPU-only context supports the fused op, so `auto` resolves to on; a quantized V
        // cache forces it on before that.
        FlashAttn::Auto => true,
        FlashAttn::Off => {
            if v.is_quantized() {
                return Err(refused(format!(
                    "llama.cpp: quantized V cache ({v}) requires flash_attn to be enabled"
                )));
            }
            false
        }
    };
    for (which, t) in [("K", k), ("V", v)] {
        let block = if t.is_quantized() { 32 } else { 1 };
        if !head_dim.is_multiple_of(block) {
            return Err(refused(format!(
                "llama.cpp: {which} cache type {t} with block size {block} does not divide n_embd_head={head_dim}"
            )));
        }
    }
    Ok(flash_attn)
}

fn bitnet_cpp_flash_attn(run: &RunConfig) -> Result<bool, InferenceError> {
    let (k, v) = (run.cache_type_k, run.cache_type_v);
    // No `auto` in this fork: its default is off.
    let flash_attn = run.flash_attn == FlashAttn::On;
    if !flash_attn && v != CacheType::F16 {
        return Err(refused(format!(
            "bitnet.cpp: a {v} V cache requires flash attention (it runs without flash attention only with an f16 V cache)"
        )));
    }
    if flash_attn {
        if let Some((which, _)) = [("K", k), ("V", v)]
            .into_iter()
            .find(|&(_, t)| t == CacheType::F32)
        {
            return Err(refused(format!(
                "bitnet.cpp's flash attention cannot read an F32 {which} cache (its ggml has no F32 conversion for that kernel and the process crashes): use an f16 {which} cache or flash attention off"
            )));
        }
    }
    Ok(flash_attn)
}

/// Why the engine cannot reproduce a resolved configuration the reference accepts, if so.
fn not_reproduced(r: &ResolvedRun, numerics: Numerics) -> Option<&'static str> {
    use CacheType::*;
    match numerics {
        Numerics::LlamaCpp => None,
        Numerics::BitnetCpp(_) => match (r.effective.flash_attn, r.keys, r.values) {
            (false, F32 | F16, F16) | (true, F16, F16) => None,
            _ => Some("for bitnet.cpp it reproduces f32 or f16 K caches with an f16 V cache"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_quant::VectorWidth;

    fn run(k: CacheType, v: CacheType, fa: FlashAttn) -> RunConfig {
        RunConfig {
            cache_type_k: k,
            cache_type_v: v,
            flash_attn: fa,
            threads: 3,
            ..RunConfig::default()
        }
    }

    #[test]
    fn llama_cpp_defaults_resolve_to_f16_with_flash_attention() {
        let r = resolve(&RunConfig::default(), Numerics::LlamaCpp, 64).unwrap();
        assert!(r.effective.flash_attn);
        assert_eq!((r.keys, r.values), (CacheType::F16, CacheType::F16));
        let exact = resolve(&RunConfig::exact(CacheType::F32), Numerics::LlamaCpp, 64).unwrap();
        assert!(!exact.effective.flash_attn);
        assert_eq!((exact.keys, exact.values), (CacheType::F32, CacheType::F32));
        // F32 under flash attention is read as F16.
        let f32_fa = run(CacheType::F32, CacheType::F32, FlashAttn::On);
        let r = resolve(&f32_fa, Numerics::LlamaCpp, 64).unwrap();
        assert_eq!((r.keys, r.values), (CacheType::F16, CacheType::F16));
        assert_eq!(r.effective.cache_type_k, CacheType::F32);
        assert_eq!(r.effective.threads, 3);
    }

    #[test]
    fn llama_cpp_refusals_are_mirrored() {
        let q8v = run(CacheType::F16, CacheType::Q8_0, FlashAttn::Off);
        let e = resolve(&q8v, Numerics::LlamaCpp, 64).unwrap_err();
        assert!(e.to_string().contains("requires flash_attn"), "{e}");
        let q8k = run(CacheType::Q8_0, CacheType::F16, FlashAttn::On);
        let e = resolve(&q8k, Numerics::LlamaCpp, 16).unwrap_err();
        assert!(e.to_string().contains("does not divide"), "{e}");
        let auto_q8v = run(CacheType::F16, CacheType::Q8_0, FlashAttn::Auto);
        assert!(
            resolve(&auto_q8v, Numerics::LlamaCpp, 64)
                .unwrap()
                .effective
                .flash_attn
        );
    }

    #[test]
    fn choices_start_from_the_references_presets() {
        let b = Numerics::BitnetCpp(VectorWidth::Avx2);
        let exact = RunChoice {
            exact: true,
            ..RunChoice::default()
        };
        assert_eq!(
            exact.config_for(Numerics::LlamaCpp, 0).cache_type_v,
            CacheType::F32
        );
        assert_eq!(exact.config_for(b, 0).cache_type_v, CacheType::F16);
        assert_eq!(exact.config_for(b, 0).flash_attn, FlashAttn::Off);
        assert_eq!(exact.config_for(b, 2).threads, 2);
        let tweaked = RunChoice {
            flash_attn: Some(FlashAttn::Off),
            n_ubatch: Some(64),
            ..RunChoice::default()
        };
        let c = tweaked.config_for(Numerics::LlamaCpp, 0);
        assert_eq!(
            (c.cache_type_k, c.flash_attn, c.n_ubatch),
            (CacheType::F16, FlashAttn::Off, 64)
        );
    }

    #[test]
    fn bitnet_cpp_rules_are_mirrored() {
        let b = Numerics::BitnetCpp(VectorWidth::Avx2);
        let d = resolve(&RunConfig::default(), b, 64).unwrap();
        assert!(!d.effective.flash_attn, "bitnet.cpp has no auto: off");
        let f32v = run(CacheType::F32, CacheType::F32, FlashAttn::Off);
        assert!(resolve(&f32v, b, 64)
            .unwrap_err()
            .to_string()
            .contains("requires flash attention"));
        let f32_fa = run(CacheType::F32, CacheType::F16, FlashAttn::On);
        assert!(resolve(&f32_fa, b, 64)
            .unwrap_err()
            .to_string()
            .contains("crashes"));
        assert!(resolve(&RunConfig::exact(CacheType::F16), b, 64).is_ok());
    }
}
