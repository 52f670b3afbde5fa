//! The engine's sampling parameters in the reference protocol's form, so the two sides can be
//! handed the same chain: [`chain_spec`] turns a [`SamplingParams`] into the
//! [`SamplerChainSpec`] the llama reference builds `llama-completion`'s chain from.

use bitnet_cpp::protocol::SamplerChainSpec;
use bitnet_inference::sampling::SamplingParams;

/// The reference's description of the chain `params` describes (same seed, samplers in the
/// same order by their canonical names, same values).
///
/// ```
/// use bitnet_inference::sampling::SamplingParams;
///
/// let spec = bitnet_crossval::sampling::chain_spec(&SamplingParams { seed: 42, ..Default::default() });
/// assert_eq!(spec.seed, 42);
/// assert_eq!(spec.samplers.join(";"), "penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature");
/// ```
pub fn chain_spec(params: &SamplingParams) -> SamplerChainSpec {
    let p = params;
    SamplerChainSpec {
        seed: p.seed,
        samplers: p.samplers.iter().map(|s| s.name().to_string()).collect(),
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        xtc_probability: p.xtc_probability,
        xtc_threshold: p.xtc_threshold,
        typical_p: p.typical_p,
        temp: p.temp,
        dynatemp_range: p.dynatemp_range,
        dynatemp_exponent: p.dynatemp_exponent,
        penalty_last_n: p.penalty_last_n,
        penalty_repeat: p.penalty_repeat,
        penalty_freq: p.penalty_freq,
        penalty_present: p.penalty_present,
        dry_multiplier: p.dry_multiplier,
        dry_base: p.dry_base,
        dry_allowed_length: p.dry_allowed_length,
        dry_penalty_last_n: p.dry_penalty_last_n,
        dry_sequence_breakers: p.dry_sequence_breakers.clone(),
        top_n_sigma: p.top_n_sigma,
        min_keep: p.min_keep as u32,
    }
}
