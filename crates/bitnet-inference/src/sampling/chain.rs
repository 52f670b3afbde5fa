//! [`Sampler`]: the chain `common_sampler_init` builds — logit biases, the configured samplers
//! in order, then `dist` — with the state it carries between tokens.

use super::candidates::{Candidates, TokenData};
use super::dry::{Dry, DryBreakers};
use super::params::{SamplerType, SamplingParams, RANDOM_SEED};
use super::rng::Mt19937;
use super::stages::{self, Penalties, Xtc};
use super::SamplingError;

/// One link of the chain, with its state. Samplers that llama.cpp would create "empty"
/// (disabled by their parameters) are left out: they neither change candidates nor draw.
#[derive(Debug, Clone)]
enum Stage {
    LogitBias(Vec<(u32, f32)>),
    Penalties(Penalties),
    Dry(Dry),
    TopNSigma(f32),
    TopK(i32),
    Typical {
        p: f32,
        min_keep: usize,
    },
    TopP {
        p: f32,
        min_keep: usize,
    },
    MinP {
        p: f32,
        min_keep: usize,
    },
    // Boxed: its generator is 2.5 KB.
    Xtc(Box<Xtc>),
    Temperature {
        temp: f32,
        delta: f32,
        exponent: f32,
    },
}

/// llama.cpp's sampler chain, reproduced bit for bit: given the same logits, parameters and
/// seed, [`Sampler::sample`] returns the token `llama_sampler_sample` returns.
///
/// The chain is stateful like llama.cpp's: the penalties and DRY remember accepted tokens
/// (feed the prompt through [`Sampler::accept`] first, as `llama-completion` does), and the
/// generators advance with every draw.
///
/// ```
/// use bitnet_inference::sampling::{DryBreakers, Sampler, SamplingParams};
///
/// let params = SamplingParams { seed: 42, ..SamplingParams::default() };
/// let mut sampler = Sampler::new(&params, Vec::new(), DryBreakers::none()).unwrap();
/// for &prompt_token in &[1, 2, 3] {
///     sampler.accept(prompt_token);
/// }
/// let token = sampler.sample(&[0.5, 2.0, 1.5, -1.0]);
/// assert!(token < 4);
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    stages: Vec<Stage>,
    rng: Mt19937,
    seed: u32,
    argmax_only: bool,
    candidates: Candidates,
    buf_sort: Vec<TokenData>,
}

impl Sampler {
    /// Build the chain for `params` (checked with [`SamplingParams::validate`]).
    ///
    /// `logit_bias` is added to the logits first (llama.cpp puts the vocabulary's suppress
    /// tokens there with −∞: see [`super::suppress_tokens`]); `breakers` are DRY's processed
    /// sequence breakers ([`DryBreakers::from_vocab`]), needed only when DRY is enabled. A
    /// [`RANDOM_SEED`] is replaced by a random one (see [`Sampler::seed`]).
    ///
    /// # Errors
    /// What [`SamplingParams::validate`] refuses.
    pub fn new(
        params: &SamplingParams,
        logit_bias: Vec<(u32, f32)>,
        breakers: DryBreakers,
    ) -> Result<Sampler, SamplingError> {
        params.validate()?;
        let seed = if params.seed == RANDOM_SEED {
            random_seed()
        } else {
            params.seed
        };
        let mut stages = Vec::new();
        if !logit_bias.is_empty() {
            stages.push(Stage::LogitBias(logit_bias));
        }
        let mut breakers = Some(breakers);
        for &kind in &params.samplers {
            if let Some(stage) = stage_for(kind, params, seed, &mut breakers) {
                stages.push(stage);
            }
        }
        let argmax_only = reduces_to_argmax(&stages);
        Ok(Sampler {
            stages,
            rng: Mt19937::new(seed),
            seed,
            argmax_only,
            candidates: Candidates::default(),
            buf_sort: Vec::new(),
        })
    }

    /// The seed in use (the random one when the parameters asked for [`RANDOM_SEED`]): run
    /// again with it to get the same tokens.
    pub fn seed(&self) -> u32 {
        self.seed
    }

    /// Tell the stateful samplers that `token` is now part of the text (a prompt token, or
    /// one that was generated): `llama_sampler_accept`.
    pub fn accept(&mut self, token: u32) {
        for stage in &mut self.stages {
            match stage {
                Stage::Penalties(p) => p.accept(token),
                Stage::Dry(d) => d.accept(token),
                _ => {}
            }
        }
    }

    /// Choose the next token from one row of logits and accept it
    /// (`llama_sampler_sample`).
    ///
    /// At temperature 0 with no sampler that can change which token is largest (penalties,
    /// DRY, typical-p, XTC, a logit bias, a dynamic temperature), llama.cpp's chain keeps the
    /// largest logit: this takes it directly (the first on an exact tie, where llama.cpp's
    /// unstable sort may prefer another).
    ///
    /// # Panics
    /// On an empty row.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        assert!(!logits.is_empty(), "sampling from no logits");
        let token = if self.argmax_only {
            crate::ops::argmax(logits)
        } else {
            self.run_chain(logits)
        };
        self.accept(token);
        token
    }

    fn run_chain(&mut self, logits: &[f32]) -> u32 {
        let cur = &mut self.candidates;
        cur.reset(logits);
        for stage in &mut self.stages {
            match stage {
                Stage::LogitBias(b) => stages::logit_bias(cur, b),
                Stage::Penalties(p) => p.apply(cur),
                Stage::Dry(d) => d.apply(cur),
                Stage::TopNSigma(n) => stages::top_n_sigma(cur, *n),
                Stage::TopK(k) => stages::top_k(cur, *k),
                Stage::Typical { p, min_keep } => stages::typical(cur, *p, *min_keep),
                Stage::TopP { p, min_keep } => {
                    stages::top_p(cur, *p, *min_keep, &mut self.buf_sort)
                }
                Stage::MinP { p, min_keep } => stages::min_p(cur, *p, *min_keep),
                Stage::Xtc(x) => x.apply(cur),
                Stage::Temperature {
                    temp,
                    delta,
                    exponent,
                } => stages::temperature_ext(cur, *temp, *delta, *exponent),
            }
        }
        stages::dist(cur, &mut self.rng);
        let selected = cur
            .selected
            .expect("the default samplers never leave zero candidates");
        cur.data[selected].id
    }
}

/// The stage `common_sampler_init` adds for `kind`, or `None` where llama.cpp adds an empty
/// sampler.
fn stage_for(
    kind: SamplerType,
    p: &SamplingParams,
    seed: u32,
    breakers: &mut Option<DryBreakers>,
) -> Option<Stage> {
    let min_keep = p.min_keep;
    match kind {
        SamplerType::Penalties => p.penalties_enabled().then(|| {
            Stage::Penalties(Penalties::new(
                p.penalty_last_n as usize,
                p.penalty_repeat,
                p.penalty_freq,
                p.penalty_present,
            ))
        }),
        SamplerType::Dry => p.dry_enabled().then(|| {
            // A chain naming DRY twice gets the breakers twice.
            let b = breakers.clone().unwrap_or_default();
            Stage::Dry(Dry::new(
                p.dry_multiplier,
                p.dry_base,
                p.dry_allowed_length,
                p.dry_penalty_last_n as usize,
                b,
            ))
        }),
        SamplerType::TopNSigma => (p.top_n_sigma > 0.0).then_some(Stage::TopNSigma(p.top_n_sigma)),
        SamplerType::TopK => (p.top_k > 0).then_some(Stage::TopK(p.top_k)),
        SamplerType::TypicalP => (p.typical_p < 1.0).then_some(Stage::Typical {
            p: p.typical_p,
            min_keep,
        }),
        SamplerType::TopP => (p.top_p < 1.0).then_some(Stage::TopP {
            p: p.top_p,
            min_keep,
        }),
        SamplerType::MinP => (p.min_p > 0.0).then_some(Stage::MinP {
            p: p.min_p,
            min_keep,
        }),
        SamplerType::Xtc => (p.xtc_probability > 0.0 && p.xtc_threshold <= 0.5).then(|| {
            Stage::Xtc(Box::new(Xtc {
                probability: p.xtc_probability,
                threshold: p.xtc_threshold,
                min_keep,
                rng: Mt19937::new(seed),
            }))
        }),
        SamplerType::Temperature => {
            (!(p.temp == 1.0 && p.dynatemp_range <= 0.0)).then_some(Stage::Temperature {
                temp: p.temp,
                delta: p.dynatemp_range,
                exponent: p.dynatemp_exponent,
            })
        }
    }
}

/// Whether the chain can only ever return the largest logit: a greedy temperature, and
/// before or after it only samplers that neither change logits nor can drop the top token.
fn reduces_to_argmax(stages: &[Stage]) -> bool {
    let mut greedy = false;
    for stage in stages {
        match stage {
            Stage::Temperature { temp, delta, .. } if *temp <= 0.0 && *delta <= 0.0 => {
                greedy = true
            }
            Stage::TopNSigma(_) | Stage::TopK(_) | Stage::TopP { .. } | Stage::MinP { .. } => {}
            _ => return false,
        }
    }
    greedy
}

/// A random seed other than [`RANDOM_SEED`] itself (so printing it reproduces the run),
/// from the standard library's per-process random hasher keys and the clock.
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        let seed = h.finish() as u32;
        if seed != RANDOM_SEED {
            return seed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(seed: u32) -> SamplingParams {
        SamplingParams {
            seed,
            ..SamplingParams::default()
        }
    }

    fn logits(n: usize, salt: u32) -> Vec<f32> {
        let mut s = salt.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2000) as f32 / 100.0 - 10.0
            })
            .collect()
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let rows: Vec<Vec<f32>> = (0..20).map(|i| logits(500, i)).collect();
        let run = |seed| {
            let mut s = Sampler::new(&seeded(seed), Vec::new(), DryBreakers::none()).unwrap();
            rows.iter().map(|r| s.sample(r)).collect::<Vec<u32>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let p = SamplingParams {
            temp: 0.0,
            ..seeded(1)
        };
        let mut s = Sampler::new(&p, Vec::new(), DryBreakers::none()).unwrap();
        assert!(s.argmax_only);
        let row = logits(300, 5);
        assert_eq!(s.sample(&row), crate::ops::argmax(&row));
        // A repetition penalty can move the maximum: then the whole chain runs.
        let p = SamplingParams {
            temp: 0.0,
            penalty_repeat: 1.5,
            ..seeded(1)
        };
        let s = Sampler::new(&p, Vec::new(), DryBreakers::none()).unwrap();
        assert!(!s.argmax_only);
    }

    #[test]
    fn greedy_chain_with_penalties_avoids_the_repeated_token() {
        let p = SamplingParams {
            temp: 0.0,
            penalty_repeat: 100.0,
            ..seeded(1)
        };
        let mut s = Sampler::new(&p, Vec::new(), DryBreakers::none()).unwrap();
        s.accept(1);
        assert_eq!(s.sample(&[0.0, 3.0, 2.0]), 2);
    }

    #[test]
    fn random_seed_is_reported_and_reproduces_the_run() {
        let rows: Vec<Vec<f32>> = (0..10).map(|i| logits(200, i)).collect();
        let mut a = Sampler::new(&seeded(RANDOM_SEED), Vec::new(), DryBreakers::none()).unwrap();
        assert_ne!(a.seed(), RANDOM_SEED);
        let mut b = Sampler::new(&seeded(a.seed()), Vec::new(), DryBreakers::none()).unwrap();
        for r in &rows {
            assert_eq!(a.sample(r), b.sample(r));
        }
    }

    #[test]
    fn suppressed_tokens_are_never_sampled() {
        let p = SamplingParams {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            temp: 5.0,
            ..seeded(3)
        };
        let mut s = Sampler::new(&p, vec![(0, f32::NEG_INFINITY)], DryBreakers::none()).unwrap();
        for _ in 0..200 {
            assert_ne!(s.sample(&[10.0, 0.0, 0.0]), 0);
        }
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let p = SamplingParams {
            penalty_repeat: -1.0,
            ..seeded(1)
        };
        assert!(Sampler::new(&p, Vec::new(), DryBreakers::none()).is_err());
    }
}
