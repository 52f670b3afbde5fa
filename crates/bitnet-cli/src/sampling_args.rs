//! `bitnet run`'s sampling flags: llama.cpp's names, llama.cpp's defaults (including what the
//! model file recommends in `general.sampling.*`), and the sampler they build.

use bitnet_gguf::GgufHeader;
use bitnet_inference::sampling::{
    apply_model_defaults, suppress_tokens, DryBreakers, ModelSamplingDefaults, Sampler,
    SamplerType, SamplingParams, RANDOM_SEED,
};
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

use crate::run::UsageError;

/// The sampling flags. Each is optional so that an absent flag leaves llama.cpp's default —
/// or the model's `general.sampling.*` value, which llama.cpp prefers to its own default.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Sampling (llama.cpp's sampler chain, flags and defaults)")]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy (the most likely token every step). [default: 0.80, or the
    /// model's general.sampling.temp]
    #[arg(
        long,
        visible_alias = "temperature",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub temp: Option<f32>,
    /// Seed of the random draws: 0..4294967295; -1 or 4294967295 = random (the seed used is
    /// printed on stderr). [default: random]
    #[arg(short = 's', long, value_name = "SEED", allow_negative_numbers = true, value_parser = parse_seed)]
    pub seed: Option<u32>,
    /// Top-k: keep the k most likely tokens; 0 = disabled. [default: 40, or the model's]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub top_k: Option<i32>,
    /// Top-p (nucleus): keep the most likely tokens up to this probability mass; 1.0 =
    /// disabled. [default: 0.95, or the model's]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Min-p: drop tokens less likely than this fraction of the most likely; 0.0 = disabled.
    /// [default: 0.05, or the model's]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Locally typical sampling, parameter p; 1.0 = disabled. [default: 1.00]
    #[arg(
        long,
        visible_alias = "typical-p",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub typical: Option<f32>,
    /// Top-n-sigma: drop logits more than n standard deviations below the largest; -1.0 =
    /// disabled. [default: -1.00]
    #[arg(
        long,
        visible_alias = "top-n-sigma",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub top_nsigma: Option<f32>,
    /// XTC probability: how often XTC removes the most likely tokens; 0.0 = disabled.
    /// [default: 0.00, or the model's]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub xtc_probability: Option<f32>,
    /// XTC threshold: tokens at least this likely are "top choices"; above 0.5 = disabled.
    /// [default: 0.10, or the model's]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub xtc_threshold: Option<f32>,
    /// Last n tokens (prompt included) the repetition penalties look at; 0 = disabled.
    /// [default: 64, or the model's]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub repeat_last_n: Option<i32>,
    /// Repetition penalty: divide positive (multiply negative) logits of recent tokens; 1.0 =
    /// disabled; must be > 0. [default: 1.00, or the model's]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,
    /// Presence penalty: subtracted once from the logit of every recent token; 0.0 =
    /// disabled. [default: 0.00]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty: subtracted per occurrence of a recent token; 0.0 = disabled.
    /// [default: 0.00]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub frequency_penalty: Option<f32>,
    /// DRY multiplier; 0.0 = disabled. [default: 0.00]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub dry_multiplier: Option<f32>,
    /// DRY base (≥ 1): the penalty is multiplier · base^(repeat length − allowed length).
    /// [default: 1.75]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub dry_base: Option<f32>,
    /// Repeats up to this many tokens are not penalised by DRY. [default: 2]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub dry_allowed_length: Option<i32>,
    /// Last n tokens DRY looks at; 0 = disabled. [default: 64]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub dry_penalty_last_n: Option<i32>,
    /// A DRY sequence breaker (repeatable; at most 40 bytes); the first one given replaces
    /// the defaults, "none" removes all. [default: '\n', ':', '"', '*']
    #[arg(long, value_name = "STRING")]
    pub dry_sequence_breaker: Vec<String>,
    /// Dynamic temperature range: the temperature moves within temp ± range with the
    /// entropy; 0.0 = disabled. [default: 0.00]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub dynatemp_range: Option<f32>,
    /// Dynamic temperature exponent. [default: 1.00]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub dynatemp_exp: Option<f32>,
    /// The samplers in order, separated by ';' (names as llama.cpp takes them: top_k,
    /// top-k, topk, nucleus, temp, ...). [default:
    /// penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature, or the model's]
    #[arg(long, value_name = "SAMPLERS", conflicts_with = "sampler_seq")]
    pub samplers: Option<String>,
    /// The samplers in order, one letter each (e d s k y p m x t). [default: edskypmxt]
    #[arg(long, visible_alias = "sampling-seq", value_name = "SEQUENCE")]
    pub sampler_seq: Option<String>,
}

/// `--seed`: an unsigned 32-bit seed, with -1 meaning random as in llama.cpp.
fn parse_seed(s: &str) -> Result<u32, String> {
    if s.trim() == "-1" {
        return Ok(RANDOM_SEED);
    }
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("{s:?} is not a seed: expected 0..4294967295, or -1 for a random one"))
}

/// The resolved parameters and what the model contributed to them.
#[derive(Debug, Clone)]
pub struct ResolvedSampling {
    /// llama.cpp's defaults, then the model's recommendations, then the flags.
    pub params: SamplingParams,
    /// What the model file said.
    pub from_model: ModelSamplingDefaults,
}

impl SamplingArgs {
    /// llama.cpp's defaults, overridden by the model's `general.sampling.*` values, overridden
    /// by the flags given — the precedence `llama-completion` applies.
    ///
    /// # Errors
    /// [`UsageError`] for a value llama.cpp would refuse (or silently replace), an unknown
    /// sampler name, or a bad DRY breaker; a runtime error when the model's own sampling
    /// metadata asks for something this engine does not implement.
    pub fn resolve(&self, header: &GgufHeader) -> anyhow::Result<ResolvedSampling> {
        let mut params = SamplingParams::default();
        let from_model = apply_model_defaults(&mut params, header)?;
        self.apply(&mut params)?;
        Ok(ResolvedSampling { params, from_model })
    }

    /// The flags' own errors, before any model is read: [`SamplingArgs::resolve`] can then
    /// fail only because of what the model says.
    ///
    /// # Errors
    /// [`UsageError`] as for [`SamplingArgs::resolve`].
    pub fn check(&self) -> Result<(), UsageError> {
        self.apply(&mut SamplingParams::default())
    }

    /// Set the flags given over `p`, then check the result.
    fn apply(&self, p: &mut SamplingParams) -> Result<(), UsageError> {
        let usage = |e: bitnet_inference::sampling::SamplingError| UsageError(e.to_string());
        if let Some(list) = &self.samplers {
            p.samplers = SamplerType::parse_names(list).map_err(usage)?;
        }
        if let Some(seq) = &self.sampler_seq {
            p.samplers = SamplerType::parse_letters(seq).map_err(usage)?;
        }
        let set_f = |dst: &mut f32, v: Option<f32>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set_f(&mut p.temp, self.temp);
        set_f(&mut p.top_p, self.top_p);
        set_f(&mut p.min_p, self.min_p);
        set_f(&mut p.typical_p, self.typical);
        set_f(&mut p.top_n_sigma, self.top_nsigma);
        set_f(&mut p.xtc_probability, self.xtc_probability);
        set_f(&mut p.xtc_threshold, self.xtc_threshold);
        set_f(&mut p.penalty_repeat, self.repeat_penalty);
        set_f(&mut p.penalty_present, self.presence_penalty);
        set_f(&mut p.penalty_freq, self.frequency_penalty);
        set_f(&mut p.dry_multiplier, self.dry_multiplier);
        set_f(&mut p.dry_base, self.dry_base);
        set_f(&mut p.dynatemp_range, self.dynatemp_range);
        set_f(&mut p.dynatemp_exponent, self.dynatemp_exp);
        if let Some(s) = self.seed {
            p.seed = s;
        }
        if let Some(k) = self.top_k {
            p.top_k = k;
        }
        if let Some(n) = self.repeat_last_n {
            p.penalty_last_n = n;
        }
        if let Some(n) = self.dry_allowed_length {
            p.dry_allowed_length = n;
        }
        if let Some(n) = self.dry_penalty_last_n {
            p.dry_penalty_last_n = n;
        }
        if !self.dry_sequence_breaker.is_empty() {
            // As llama.cpp: the first breaker given clears the defaults; "none" clears all.
            p.dry_sequence_breakers.clear();
            for b in &self.dry_sequence_breaker {
                if b == "none" {
                    p.dry_sequence_breakers.clear();
                } else {
                    p.dry_sequence_breakers.push(b.clone());
                }
            }
        }
        p.validate().map_err(usage)
    }
}

/// The sampler for `params` on this model: the vocabulary's suppress tokens as a −∞ bias,
/// DRY's breakers tokenized against the vocabulary when DRY is on.
///
/// # Errors
/// [`UsageError`] for a DRY breaker that cannot be processed; a runtime error for a malformed
/// suppress-token list or a model that asks for Mirostat while sampling (temperature > 0).
pub fn build_sampler(
    resolved: &ResolvedSampling,
    header: &GgufHeader,
    tokenizer: &GgufTokenizer,
) -> anyhow::Result<Sampler> {
    let p = &resolved.params;
    if let (Some(version), true) = (resolved.from_model.mirostat, p.temp > 0.0) {
        anyhow::bail!(
            "the model asks for Mirostat {version} sampling (general.sampling.mirostat), which \
             this engine does not implement; run greedy with --temp 0"
        );
    }
    let n_vocab = tokenizer.vocab_size();
    let bias = suppress_tokens(header, n_vocab)?;
    let breakers = if p.dry_enabled() {
        let mut failure = None;
        let breakers = DryBreakers::from_vocab(
            &p.dry_sequence_breakers,
            n_vocab,
            |id| tokenizer.detokenize_bytes(&[id], true).unwrap_or_default(),
            |text| {
                tokenizer.encode(text, false, false).unwrap_or_else(|e| {
                    failure.get_or_insert(e.to_string());
                    Vec::new()
                })
            },
        )
        .map_err(|e| UsageError(e.to_string()))?;
        if let Some(e) = failure {
            anyhow::bail!("DRY sequence breakers: the tokenizer failed: {e}");
        }
        breakers
    } else {
        DryBreakers::none()
    };
    Ok(Sampler::new(p, bias, breakers).map_err(|e| UsageError(e.to_string()))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_gguf::{GgufWriter, Value};

    fn header(entries: Vec<(&str, Value)>) -> GgufHeader {
        let mut w = GgufWriter::new();
        for (k, v) in entries {
            w.add_metadata(k, v).unwrap();
        }
        GgufHeader::parse(&w.to_bytes()).unwrap()
    }

    #[test]
    fn flags_override_the_model_which_overrides_llama_cpp() {
        let h = header(vec![
            ("general.sampling.temp", Value::F32(0.6)),
            ("general.sampling.top_k", Value::I32(20)),
        ]);
        let args = SamplingArgs {
            top_k: Some(5),
            ..SamplingArgs::default()
        };
        let r = args.resolve(&h).unwrap();
        assert_eq!(r.params.temp, 0.6);
        assert_eq!(r.params.top_k, 5);
        assert_eq!(r.params.top_p, 0.95);
        let plain = SamplingArgs::default().resolve(&header(vec![])).unwrap();
        assert_eq!(plain.params, SamplingParams::default());
    }

    #[test]
    fn breakers_replace_the_defaults_and_none_clears() {
        let args = SamplingArgs {
            dry_sequence_breaker: vec!["a".into(), "none".into(), "b".into(), "c".into()],
            ..SamplingArgs::default()
        };
        let r = args.resolve(&header(vec![])).unwrap();
        assert_eq!(r.params.dry_sequence_breakers, ["b", "c"]);
    }

    #[test]
    fn seeds_as_llama_cpp_writes_them() {
        assert_eq!(parse_seed("-1"), Ok(RANDOM_SEED));
        assert_eq!(parse_seed("4294967295"), Ok(RANDOM_SEED));
        assert_eq!(parse_seed("42"), Ok(42));
        assert!(parse_seed("4294967296").is_err());
        assert!(parse_seed("-2").is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            SamplingArgs {
                repeat_penalty: Some(0.0),
                ..SamplingArgs::default()
            },
            SamplingArgs {
                samplers: Some("top_k;bogus".into()),
                ..SamplingArgs::default()
            },
            SamplingArgs {
                dry_base: Some(0.9),
                ..SamplingArgs::default()
            },
        ] {
            let err = args.resolve(&header(vec![])).unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{err}");
        }
    }
}
