//! The sampling parameters (llama.cpp's `common_params_sampling`), their defaults, the names
//! of the samplers, and the checks llama.cpp applies to them.

use super::dry::check_breaker;
use super::SamplingError;

/// llama.cpp's `LLAMA_DEFAULT_SEED`: "pick a random seed".
pub const RANDOM_SEED: u32 = u32::MAX;

/// One sampler of the chain, by the names llama.cpp's `--samplers` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerType {
    /// `penalties`: repetition, frequency and presence penalties.
    Penalties,
    /// `dry`: the DRY repetition penalty.
    Dry,
    /// `top_n_sigma`: keep logits within n standard deviations of the maximum.
    TopNSigma,
    /// `top_k`: keep the k most likely.
    TopK,
    /// `typ_p`: locally typical sampling.
    TypicalP,
    /// `top_p`: nucleus sampling.
    TopP,
    /// `min_p`: keep tokens at least p times as likely as the most likely.
    MinP,
    /// `xtc`: exclude the top choices, sometimes.
    Xtc,
    /// `temperature`: scale the logits (dynamic with `dynatemp_range > 0`).
    Temperature,
}

impl SamplerType {
    /// llama.cpp's default order: `penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature`.
    pub const DEFAULT_ORDER: [SamplerType; 9] = [
        SamplerType::Penalties,
        SamplerType::Dry,
        SamplerType::TopNSigma,
        SamplerType::TopK,
        SamplerType::TypicalP,
        SamplerType::TopP,
        SamplerType::MinP,
        SamplerType::Xtc,
        SamplerType::Temperature,
    ];

    /// The canonical name (`top_k`, `typ_p`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SamplerType::Penalties => "penalties",
            SamplerType::Dry => "dry",
            SamplerType::TopNSigma => "top_n_sigma",
            SamplerType::TopK => "top_k",
            SamplerType::TypicalP => "typ_p",
            SamplerType::TopP => "top_p",
            SamplerType::MinP => "min_p",
            SamplerType::Xtc => "xtc",
            SamplerType::Temperature => "temperature",
        }
    }

    /// The one-letter name `--sampler-seq` uses (`e d s k y p m x t`).
    pub fn letter(self) -> char {
        match self {
            SamplerType::Penalties => 'e',
            SamplerType::Dry => 'd',
            SamplerType::TopNSigma => 's',
            SamplerType::TopK => 'k',
            SamplerType::TypicalP => 'y',
            SamplerType::TopP => 'p',
            SamplerType::MinP => 'm',
            SamplerType::Xtc => 'x',
            SamplerType::Temperature => 't',
        }
    }

    /// A sampler from any name llama.cpp accepts for it, case-insensitively: the canonical
    /// name, its kebab-case and no-underscore spellings (`top-k`, `topk`), and `nucleus`,
    /// `temp`, `typ`.
    ///
    /// # Errors
    /// [`SamplingError::UnknownSampler`], also for llama.cpp's `infill` and `adaptive_p`,
    /// which this engine does not implement.
    pub fn from_name(name: &str) -> Result<SamplerType, SamplingError> {
        let lower = name.to_ascii_lowercase();
        let found = SamplerType::DEFAULT_ORDER.into_iter().find(|t| {
            let canonical = t.name();
            lower == canonical
                || (canonical.contains('_')
                    && (lower == canonical.replace('_', "-")
                        || lower == canonical.replace('_', "")))
        });
        let alias = match lower.as_str() {
            "nucleus" => Some(SamplerType::TopP),
            "temp" => Some(SamplerType::Temperature),
            "typ" => Some(SamplerType::TypicalP),
            _ => None,
        };
        found
            .or(alias)
            .ok_or_else(|| SamplingError::UnknownSampler(name.to_string()))
    }

    /// A sampler from its letter.
    ///
    /// # Errors
    /// [`SamplingError::UnknownSampler`] for any other character.
    pub fn from_letter(c: char) -> Result<SamplerType, SamplingError> {
        SamplerType::DEFAULT_ORDER
            .into_iter()
            .find(|t| t.letter() == c)
            .ok_or_else(|| SamplingError::UnknownSampler(c.to_string()))
    }

    /// The chain for `--samplers`: names separated by `;`.
    ///
    /// # Errors
    /// [`SamplingError::UnknownSampler`] naming the first unknown entry.
    pub fn parse_names(list: &str) -> Result<Vec<SamplerType>, SamplingError> {
        list.split(';').map(SamplerType::from_name).collect()
    }

    /// The chain for `--sampler-seq`: one letter per sampler.
    ///
    /// # Errors
    /// [`SamplingError::UnknownSampler`] naming the first unknown letter.
    pub fn parse_letters(seq: &str) -> Result<Vec<SamplerType>, SamplingError> {
        seq.chars().map(SamplerType::from_letter).collect()
    }
}

/// Everything that decides which token is sampled: llama.cpp's `common_params_sampling`
/// for the samplers this engine implements, with its field meanings and its defaults
/// ([`Default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Seed of the generators (`dist`, `xtc`); [`RANDOM_SEED`] picks one at random.
    pub seed: u32,
    /// The samplers, in order; `dist` (the draw) always follows.
    pub samplers: Vec<SamplerType>,
    /// Keep the k most likely; ≤ 0 keeps all. Default 40.
    pub top_k: i32,
    /// Nucleus mass; ≥ 1 disables. Default 0.95.
    pub top_p: f32,
    /// Minimum probability relative to the most likely; ≤ 0 disables. Default 0.05.
    pub min_p: f32,
    /// XTC's chance of firing; ≤ 0 disables. Default 0.
    pub xtc_probability: f32,
    /// XTC's probability threshold; > 0.5 disables. Default 0.1.
    pub xtc_threshold: f32,
    /// Locally typical mass; ≥ 1 disables. Default 1.
    pub typical_p: f32,
    /// Temperature; ≤ 0 is greedy. Default 0.8.
    pub temp: f32,
    /// Dynamic temperature range (temp ± range); ≤ 0 disables. Default 0.
    pub dynatemp_range: f32,
    /// Dynamic temperature exponent. Default 1.
    pub dynatemp_exponent: f32,
    /// How many recent tokens the penalties look at; 0 disables. Default 64.
    pub penalty_last_n: i32,
    /// Repetition penalty; 1 disables. Default 1.
    pub penalty_repeat: f32,
    /// Frequency penalty; 0 disables. Default 0.
    pub penalty_freq: f32,
    /// Presence penalty; 0 disables. Default 0.
    pub penalty_present: f32,
    /// DRY multiplier; 0 disables. Default 0.
    pub dry_multiplier: f32,
    /// DRY base (≥ 1). Default 1.75.
    pub dry_base: f32,
    /// Repeats longer than this are penalised by DRY. Default 2.
    pub dry_allowed_length: i32,
    /// How many recent tokens DRY looks at; 0 disables. Default 64.
    pub dry_penalty_last_n: i32,
    /// Strings that end a DRY repeat. Default `\n`, `:`, `"`, `*`.
    pub dry_sequence_breakers: Vec<String>,
    /// Top-n-sigma's n; ≤ 0 disables. Default −1.
    pub top_n_sigma: f32,
    /// The fewest candidates top-p, min-p, typical-p and XTC leave (0: no floor). Default 0;
    /// llama.cpp's command line has no flag for it.
    pub min_keep: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            seed: RANDOM_SEED,
            samplers: SamplerType::DEFAULT_ORDER.to_vec(),
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            xtc_probability: 0.0,
            xtc_threshold: 0.10,
            typical_p: 1.0,
            temp: 0.80,
            dynatemp_range: 0.0,
            dynatemp_exponent: 1.0,
            penalty_last_n: 64,
            penalty_repeat: 1.0,
            penalty_freq: 0.0,
            penalty_present: 0.0,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: 64,
            dry_sequence_breakers: ["\n", ":", "\"", "*"].map(String::from).to_vec(),
            top_n_sigma: -1.0,
            min_keep: 0,
        }
    }
}

impl SamplingParams {
    /// Check the values llama.cpp would refuse or that could only be a mistake.
    ///
    /// llama.cpp refuses a repeat penalty that is not finite and positive (or whose inverse
    /// overflows), non-finite frequency and presence penalties, and negative repeat / DRY
    /// windows. Where llama.cpp silently replaces a value this refuses it instead: a
    /// negative or non-finite temperature (clamped to 0 there), a DRY base below 1 (ignored
    /// there), empty or over-long DRY breakers (skipped or truncated there), and any other
    /// non-finite number.
    ///
    /// # Errors
    /// [`SamplingError::OutOfRange`] naming the llama.cpp flag, or
    /// [`SamplingError::BadDryBreaker`].
    pub fn validate(&self) -> Result<(), SamplingError> {
        let range = |flag: &'static str, value: String, expected: &'static str| {
            Err(SamplingError::OutOfRange {
                flag,
                value,
                expected,
            })
        };
        let finite = [
            ("--top-p", self.top_p),
            ("--min-p", self.min_p),
            ("--xtc-probability", self.xtc_probability),
            ("--xtc-threshold", self.xtc_threshold),
            ("--typical", self.typical_p),
            ("--dynatemp-range", self.dynatemp_range),
            ("--dynatemp-exp", self.dynatemp_exponent),
            ("--presence-penalty", self.penalty_present),
            ("--frequency-penalty", self.penalty_freq),
            ("--dry-multiplier", self.dry_multiplier),
            ("--top-nsigma", self.top_n_sigma),
        ];
        for (flag, v) in finite {
            if !v.is_finite() {
                return range(flag, v.to_string(), "a finite number");
            }
        }
        if !(self.temp.is_finite() && self.temp >= 0.0) {
            return range(
                "--temp",
                self.temp.to_string(),
                "a finite number ≥ 0 (0 = greedy)",
            );
        }
        let r = self.penalty_repeat;
        if !(r.is_finite() && r > 0.0 && (1.0 / r).is_finite()) {
            return range(
                "--repeat-penalty",
                r.to_string(),
                "a finite number > 0 (1 = disabled)",
            );
        }
        if self.penalty_last_n < 0 {
            return range(
                "--repeat-last-n",
                self.penalty_last_n.to_string(),
                "an integer ≥ 0 (0 = disabled)",
            );
        }
        if !(self.dry_base.is_finite() && self.dry_base >= 1.0) {
            return range(
                "--dry-base",
                self.dry_base.to_string(),
                "a finite number ≥ 1",
            );
        }
        if self.dry_penalty_last_n < 0 {
            return range(
                "--dry-penalty-last-n",
                self.dry_penalty_last_n.to_string(),
                "an integer ≥ 0 (0 = disabled)",
            );
        }
        for b in &self.dry_sequence_breakers {
            check_breaker(b)?;
        }
        Ok(())
    }

    /// Whether the penalties sampler does anything (llama.cpp replaces it by an empty one
    /// otherwise).
    pub fn penalties_enabled(&self) -> bool {
        self.penalty_last_n > 0
            && !(self.penalty_repeat == 1.0
                && self.penalty_freq == 0.0
                && self.penalty_present == 0.0)
    }

    /// Whether DRY does anything, and so needs its breakers processed.
    pub fn dry_enabled(&self) -> bool {
        self.dry_multiplier != 0.0 && self.dry_base >= 1.0 && self.dry_penalty_last_n > 0
    }

    /// The chain as llama.cpp prints it (`--samplers` syntax).
    pub fn samplers_string(&self) -> String {
        let names: Vec<&str> = self.samplers.iter().map(|s| s.name()).collect();
        names.join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_as_llama_cpp_accepts_them() {
        for (name, t) in [
            ("top_k", SamplerType::TopK),
            ("TOP-K", SamplerType::TopK),
            ("topk", SamplerType::TopK),
            ("nucleus", SamplerType::TopP),
            ("temp", SamplerType::Temperature),
            ("typ", SamplerType::TypicalP),
            ("typ-p", SamplerType::TypicalP),
            ("top-n-sigma", SamplerType::TopNSigma),
            ("penalties", SamplerType::Penalties),
        ] {
            assert_eq!(SamplerType::from_name(name).unwrap(), t, "{name}");
        }
        for bad in ["", "top k", "infill", "adaptive_p", "greedy"] {
            assert!(SamplerType::from_name(bad).is_err(), "{bad:?}");
        }
        // No dashless alias without an underscore to remove: "dry" only.
        assert!(SamplerType::from_name("d-ry").is_err());
    }

    #[test]
    fn default_chain_round_trips_through_names_and_letters() {
        let p = SamplingParams::default();
        assert_eq!(
            p.samplers_string(),
            "penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature"
        );
        assert_eq!(
            SamplerType::parse_names(&p.samplers_string()).unwrap(),
            p.samplers
        );
        assert_eq!(SamplerType::parse_letters("edskypmxt").unwrap(), p.samplers);
        assert!(SamplerType::parse_letters("kq").is_err());
    }

    #[test]
    fn validation_refuses_what_llama_cpp_refuses_or_replaces() {
        assert!(SamplingParams::default().validate().is_ok());
        let bad: [fn(&mut SamplingParams); 9] = [
            |p| p.temp = -0.5,
            |p| p.temp = f32::NAN,
            |p| p.penalty_repeat = 0.0,
            |p| p.penalty_repeat = 1e-40,
            |p| p.penalty_last_n = -1,
            |p| p.dry_base = 0.5,
            |p| p.dry_penalty_last_n = -2,
            |p| p.top_p = f32::INFINITY,
            |p| p.dry_sequence_breakers = vec![String::new()],
        ];
        for (i, set) in bad.iter().enumerate() {
            let mut p = SamplingParams::default();
            set(&mut p);
            assert!(p.validate().is_err(), "case {i}: {p:?}");
        }
    }
}
