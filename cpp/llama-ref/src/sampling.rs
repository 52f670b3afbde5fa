//! llama.cpp's sampler chain, built as `common_sampler_init` (common/sampling.cpp) builds it:
//! the vocabulary's suppress tokens as a −∞ logit bias, the samplers in the requested order
//! with `common_params_sampling`'s values, then `dist(seed)`. Mirostat, grammars, user logit
//! biases and backend sampling are not part of the protocol.

use std::ffi::CString;

use bitnet_cpp::protocol::SamplerChainSpec;
use llama_cpp_sys_2 as sys;

/// An owned `llama_sampler` chain.
pub struct Chain(*mut sys::llama_sampler);

impl Drop for Chain {
    fn drop(&mut self) {
        // SAFETY: the chain was created by llama_sampler_chain_init and is freed once.
        unsafe { sys::llama_sampler_free(self.0) };
    }
}

impl Chain {
    /// Build the chain for `spec` over `vocab`, refusing what `common_sampler_init` refuses.
    ///
    /// # Safety
    /// `vocab` must be the loaded model's vocabulary.
    pub unsafe fn new(
        vocab: *const sys::llama_vocab,
        spec: &SamplerChainSpec,
    ) -> Result<Chain, String> {
        let r = spec.penalty_repeat;
        if !r.is_finite() || r <= 0.0 || !(1.0 / r).is_finite() {
            return Err("penalty_repeat must be finite and greater than 0".into());
        }
        if !spec.penalty_freq.is_finite() || !spec.penalty_present.is_finite() {
            return Err("penalty_freq and penalty_present must be finite".into());
        }
        let n_vocab = sys::llama_vocab_n_tokens(vocab);
        let min_keep = spec.min_keep as usize;
        let chain = Chain(sys::llama_sampler_chain_init(
            sys::llama_sampler_chain_default_params(),
        ));
        let add = |s: *mut sys::llama_sampler| sys::llama_sampler_chain_add(chain.0, s);

        let mut n_suppress = 0i32;
        let suppress = sys::llama_vocab_get_suppress_tokens(vocab, &mut n_suppress);
        if n_suppress > 0 && !suppress.is_null() {
            let biases: Vec<sys::llama_logit_bias> =
                std::slice::from_raw_parts(suppress, n_suppress as usize)
                    .iter()
                    .map(|&token| sys::llama_logit_bias {
                        token,
                        bias: f32::NEG_INFINITY,
                    })
                    .collect();
            add(sys::llama_sampler_init_logit_bias(
                n_vocab,
                biases.len() as i32,
                biases.as_ptr(),
            ));
        }
        for name in &spec.samplers {
            let s = match name.as_str() {
                "dry" => {
                    let owned: Vec<CString> = spec
                        .dry_sequence_breakers
                        .iter()
                        .map(|b| CString::new(b.as_str()))
                        .collect::<Result<_, _>>()
                        .map_err(|_| "a DRY sequence breaker contains a NUL byte".to_string())?;
                    let ptrs: Vec<*const std::ffi::c_char> =
                        owned.iter().map(|c| c.as_ptr()).collect();
                    sys::llama_sampler_init_dry(
                        vocab,
                        spec.dry_multiplier,
                        spec.dry_base,
                        spec.dry_allowed_length,
                        spec.dry_penalty_last_n,
                        ptrs.as_ptr() as *mut *const std::ffi::c_char,
                        ptrs.len(),
                    )
                }
                "top_k" => sys::llama_sampler_init_top_k(spec.top_k),
                "top_p" => sys::llama_sampler_init_top_p(spec.top_p, min_keep),
                "top_n_sigma" => sys::llama_sampler_init_top_n_sigma(spec.top_n_sigma),
                "min_p" => sys::llama_sampler_init_min_p(spec.min_p, min_keep),
                "xtc" => sys::llama_sampler_init_xtc(
                    spec.xtc_probability,
                    spec.xtc_threshold,
                    min_keep,
                    spec.seed,
                ),
                "typ_p" => sys::llama_sampler_init_typical(spec.typical_p, min_keep),
                "temperature" => sys::llama_sampler_init_temp_ext(
                    spec.temp,
                    spec.dynatemp_range,
                    spec.dynatemp_exponent,
                ),
                "penalties" => sys::llama_sampler_init_penalties(
                    n_vocab,
                    spec.penalty_last_n,
                    spec.penalty_repeat,
                    spec.penalty_freq,
                    spec.penalty_present,
                ),
                other => return Err(format!("unknown sampler {other:?}")),
            };
            add(s);
        }
        add(sys::llama_sampler_init_dist(spec.seed));
        Ok(chain)
    }

    /// `llama_sampler_accept`.
    pub fn accept(&mut self, token: i32) {
        // SAFETY: a live chain.
        unsafe { sys::llama_sampler_accept(self.0, token) };
    }

    /// What `llama_sampler_sample` does with a row of logits: all tokens as candidates,
    /// apply the chain, accept and return its pick.
    pub fn sample_row(&mut self, row: &[f32]) -> Result<i32, String> {
        let mut cur: Vec<sys::llama_token_data> = row
            .iter()
            .enumerate()
            .map(|(id, &logit)| sys::llama_token_data {
                id: id as i32,
                logit,
                p: 0.0,
            })
            .collect();
        let mut arr = sys::llama_token_data_array {
            data: cur.as_mut_ptr(),
            size: cur.len(),
            selected: -1,
            sorted: false,
        };
        // SAFETY: `arr` points into `cur`, which outlives the call; samplers only shrink
        // the size or advance the pointer within it.
        let token = unsafe {
            sys::llama_sampler_apply(self.0, &mut arr);
            if arr.selected < 0 || arr.selected as usize >= arr.size {
                return Err(format!(
                    "the chain selected no candidate (selected {}, {} candidates)",
                    arr.selected, arr.size
                ));
            }
            (*arr.data.add(arr.selected as usize)).id
        };
        self.accept(token);
        Ok(token)
    }

    /// `llama_sampler_sample(chain, ctx, -1)`: sample from the context's last logits.
    ///
    /// # Safety
    /// `ctx` must be a live context whose last decode produced logits.
    pub unsafe fn sample_context(&mut self, ctx: *mut sys::llama_context) -> i32 {
        sys::llama_sampler_sample(self.0, ctx, -1)
    }

    /// `llama_sampler_get_seed`.
    pub fn seed(&self) -> u32 {
        // SAFETY: a live chain.
        unsafe { sys::llama_sampler_get_seed(self.0) }
    }
}
