//! The samplers of llama.cpp's default chain, one function each, in `src/llama-sampler.cpp`'s
//! arithmetic: `float` where it computes in `float`, `double` where it computes in `double`,
//! glibc's `expf`/`logf`/`powf`/`exp`/`pow` (Rust's `f32::exp` and friends call the same
//! libm functions), and no fused multiply-adds (llama.cpp's `src/` is built for baseline
//! x86-64, so GCC cannot contract).

use std::collections::{HashMap, VecDeque};

use super::candidates::{cxx_max, partial_sort_buckets, partial_sort_inplace, softmax};
use super::candidates::{Candidates, TokenData};
use super::cxx_sort;
use super::rng::Mt19937;

/// `logit-bias`: add each bias to its token (llama.cpp uses it for the vocabulary's suppress
/// tokens, with a bias of −∞).
pub(crate) fn logit_bias(cur: &mut Candidates, biases: &[(u32, f32)]) {
    let mut to_search = Vec::new();
    for &(token, bias) in biases {
        let i = token as usize;
        if i < cur.data.len() && cur.data[i].id == token {
            cur.data[i].logit += bias;
        } else {
            to_search.push((token, bias));
        }
    }
    if to_search.is_empty() {
        return;
    }
    for t in &mut cur.data {
        if let Some(&(_, bias)) = to_search.iter().find(|(token, _)| *token == t.id) {
            t.logit += bias;
        }
    }
}

/// `penalties`: repetition (divide positive logits, multiply negative ones), frequency and
/// presence penalties over the last `last_n` accepted tokens.
#[derive(Debug, Clone)]
pub(crate) struct Penalties {
    last_n: usize,
    repeat: f32,
    freq: f32,
    present: f32,
    prev: VecDeque<u32>,
    count: HashMap<u32, i32>,
}

impl Penalties {
    pub fn new(last_n: usize, repeat: f32, freq: f32, present: f32) -> Penalties {
        Penalties {
            last_n,
            repeat,
            freq,
            present,
            prev: VecDeque::with_capacity(last_n),
            count: HashMap::new(),
        }
    }

    pub fn accept(&mut self, token: u32) {
        *self.count.entry(token).or_insert(0) += 1;
        if self.prev.len() >= self.last_n {
            let old = self.prev.pop_front().expect("a full window is not empty");
            let c = self.count.get_mut(&old).expect("counted when pushed");
            *c -= 1;
            if *c == 0 {
                self.count.remove(&old);
            }
        }
        self.prev.push_back(token);
    }

    pub fn apply(&self, cur: &mut Candidates) {
        for t in &mut cur.data {
            let Some(&count) = self.count.get(&t.id) else {
                continue;
            };
            if t.logit <= 0.0 {
                t.logit *= self.repeat;
            } else {
                t.logit /= self.repeat;
            }
            let present = if count > 0 { 1.0f32 } else { 0.0 };
            t.logit -= count as f32 * self.freq + present * self.present;
        }
        cur.sorted = false;
    }
}

/// `top-n-sigma`: mask every logit more than `n` standard deviations below the maximum
/// (mean and deviation over the finite-or-+∞ logits; the squares are summed via `double`).
pub(crate) fn top_n_sigma(cur: &mut Candidates, n: f32) {
    if n <= 0.0 || cur.data.len() <= 1 {
        return;
    }
    let mut max = cur.data[0].logit;
    let mut logits_sum = 0.0f32;
    let mut valid = 0usize;
    for t in &cur.data {
        if t.logit != f32::NEG_INFINITY {
            max = cxx_max(max, t.logit);
            logits_sum += t.logit;
            valid += 1;
        }
    }
    let mean = if valid > 0 {
        logits_sum / valid as f32
    } else {
        0.0
    };
    let mut acc = 0.0f32;
    for t in &cur.data {
        if t.logit != f32::NEG_INFINITY {
            // `acc += pow(logit - mean, 2)`: pow promotes to double, so does the sum.
            let d = (t.logit - mean) as f64;
            acc = (acc as f64 + d * d) as f32;
        }
    }
    let std = if valid > 0 {
        (acc / valid as f32).sqrt()
    } else {
        0.0
    };
    for t in &mut cur.data {
        if t.logit < max - n * std {
            t.logit = f32::NEG_INFINITY;
        }
    }
}

/// `top-k`: keep the `k` largest (sorting them unless already sorted). `k ≤ 0` keeps all.
pub(crate) fn top_k(cur: &mut Candidates, k: i32) {
    if k <= 0 {
        return;
    }
    let k = (k as usize).min(cur.data.len());
    if !cur.sorted {
        partial_sort_inplace(cur, k);
    }
    cur.data.truncate(k);
}

/// `typical`: locally typical sampling — keep the tokens whose surprise is closest to the
/// entropy until their probability mass exceeds `p`.
pub(crate) fn typical(cur: &mut Candidates, p: f32, min_keep: usize) {
    if p >= 1.0 {
        return;
    }
    softmax(cur, true);
    let mut entropy = 0.0f32;
    for t in &cur.data {
        entropy += -t.p * t.p.ln();
    }
    let shifted: Vec<f32> = cur
        .data
        .iter()
        .map(|t| (-t.p.ln() - entropy).abs())
        .collect();
    let mut indices: Vec<usize> = (0..cur.data.len()).collect();
    cxx_sort::sort(&mut indices, &mut |&a, &b| shifted[a] < shifted[b]);
    let mut cum_sum = 0.0f32;
    let mut last_idx = indices.len();
    for (i, &idx) in indices.iter().enumerate() {
        cum_sum += cur.data[idx].p;
        if cum_sum > p && (min_keep == 0 || i + 1 >= min_keep) {
            last_idx = i + 1;
            break;
        }
    }
    let kept: Vec<TokenData> = indices[..last_idx].iter().map(|&i| cur.data[i]).collect();
    cur.data = kept;
    cur.sorted = false;
}

/// `top-p` (nucleus): keep the most likely tokens until their probability reaches `p`.
///
/// Unsorted and larger than 1024, llama.cpp first bucket-sorts only the top 256 and sorts
/// everything only if those do not reach `p`; the kept tokens are the same either way, but
/// the order of tied logits is not, so this follows it.
pub(crate) fn top_p(cur: &mut Candidates, p: f32, min_keep: usize, buf_sort: &mut Vec<TokenData>) {
    if p >= 1.0 {
        return;
    }
    softmax(cur, false);
    let size = cur.data.len();
    let mut k = size;
    let mut use_buf = false;
    if !cur.sorted && size > 1024 {
        k = 256.min(size);
        partial_sort_buckets(&cur.data, k, buf_sort);
        use_buf = true;
    } else if !cur.sorted {
        partial_sort_inplace(cur, k);
    }
    let mut cum_sum = 0.0f32;
    let mut last_idx = size;
    for i in 0..size {
        let pi = if use_buf {
            buf_sort[i].p
        } else {
            cur.data[i].p
        };
        cum_sum += pi;
        if cum_sum >= p && i + 1 >= min_keep {
            last_idx = i + 1;
            break;
        }
        if !cur.sorted && i == k - 1 {
            k = size;
            partial_sort_buckets(&cur.data, k, buf_sort);
        }
    }
    if !cur.sorted {
        cur.data[..last_idx].copy_from_slice(&buf_sort[..last_idx]);
        cur.sorted = true;
    }
    cur.data.truncate(last_idx);
}

/// `min-p`: keep the tokens whose probability is at least `p` times the largest.
pub(crate) fn min_p(cur: &mut Candidates, p: f32, min_keep: usize) {
    if p <= 0.0 || cur.data.is_empty() {
        return;
    }
    if !cur.sorted {
        let mut max_logit = -f32::MAX;
        for t in &cur.data {
            max_logit = cxx_max(max_logit, t.logit);
        }
        let min_logit = max_logit + p.ln();
        let filtered: Vec<TokenData> = cur
            .data
            .iter()
            .copied()
            .filter(|t| t.logit >= min_logit)
            .collect();
        if !filtered.is_empty() && filtered.len() >= min_keep {
            cur.data = filtered;
            return;
        }
        let n = cur.data.len();
        partial_sort_inplace(cur, n);
    }
    let min_logit = cur.data[0].logit + p.ln();
    let mut i = 1;
    while i < cur.data.len() {
        if cur.data[i].logit < min_logit && i >= min_keep {
            break;
        }
        i += 1;
    }
    cur.data.truncate(i);
}

/// `xtc`: with probability `probability`, drop every token above `threshold` except the
/// least likely of them. Its own generator, seeded like `dist`.
#[derive(Debug, Clone)]
pub(crate) struct Xtc {
    pub probability: f32,
    pub threshold: f32,
    pub min_keep: usize,
    pub rng: Mt19937,
}

impl Xtc {
    pub fn apply(&mut self, cur: &mut Candidates) {
        if self.probability <= 0.0 || self.threshold > 0.5 || cur.data.len() < 2 {
            return;
        }
        let chance = self.rng.uniform_f32();
        if chance > self.probability {
            return;
        }
        softmax(cur, true);
        let mut pos_last = 0;
        for (i, t) in cur.data.iter().enumerate() {
            if t.p >= self.threshold {
                pos_last = i;
            } else {
                break;
            }
        }
        if cur.data.len() - pos_last >= self.min_keep && pos_last > 0 {
            cur.data.drain(..pos_last);
        }
    }
}

/// `temp` (llama.cpp's `llama_sampler_temp_impl`): divide by the temperature; at `temp ≤ 0`
/// keep only the first largest logit (every other becomes −∞).
pub(crate) fn temperature(cur: &mut Candidates, temp: f32) {
    if cur.data.is_empty() {
        return;
    }
    if temp <= 0.0 {
        let mut max_i = 0;
        let mut max_l = cur.data[0].logit;
        for i in 1..cur.data.len() {
            if cur.data[i].logit > max_l {
                cur.data[max_i].logit = f32::NEG_INFINITY;
                max_i = i;
                max_l = cur.data[i].logit;
            } else {
                cur.data[i].logit = f32::NEG_INFINITY;
            }
        }
        return;
    }
    for t in &mut cur.data {
        t.logit /= temp;
    }
}

/// `temp-ext`: the temperature, or with `delta > 0` a dynamic one in
/// [`temp − delta`, `temp + delta`] chosen by the normalised entropy raised to `exponent`
/// (probabilities recomputed in `double` afterwards, as llama.cpp does).
pub(crate) fn temperature_ext(cur: &mut Candidates, temp: f32, delta: f32, exponent: f32) {
    if delta <= 0.0 {
        temperature(cur, temp);
        return;
    }
    let min_temp = cxx_max(0.0, temp - delta);
    let max_temp = temp + delta;
    if cur.data.len() <= 1 {
        return;
    }
    let max_entropy = -(1.0f32 / cur.data.len() as f32).ln();
    softmax(cur, true);
    let mut entropy = 0.0f32;
    for t in &cur.data {
        if t.p > 0.0 {
            entropy -= t.p * t.p.ln();
        }
    }
    let normalized = entropy / max_entropy;
    let dyn_temp = min_temp + (max_temp - min_temp) * normalized.powf(exponent);
    temperature(cur, dyn_temp);
    let max_l = cur.data[0].logit as f64;
    let mut cum_sum = 0.0f64;
    for t in &mut cur.data {
        let p = (t.logit as f64 - max_l).exp();
        t.p = p as f32;
        cum_sum += p;
    }
    for t in &mut cur.data {
        t.p = (t.p as f64 / cum_sum) as f32;
    }
}

/// `dist`: softmax in `float` with the sum in `double`, one `uniform_real_distribution<double>`
/// draw, and the first candidate whose running sum reaches `draw × sum`.
pub(crate) fn dist(cur: &mut Candidates, rng: &mut Mt19937) {
    if cur.data.is_empty() {
        cur.selected = None;
        return;
    }
    cur.selected = Some(0);
    if cur.data.len() == 1 {
        // llama.cpp draws anyway, to stay aligned with its backend sampling.
        rng.uniform_f64();
        cur.data[0].p = 1.0;
        return;
    }
    let mut max_l = cur.data[0].logit;
    if !cur.sorted {
        for t in &cur.data[1..] {
            max_l = cxx_max(max_l, t.logit);
        }
    }
    let mut sum_cum = 0.0f64;
    for t in &mut cur.data {
        let p = (t.logit - max_l).exp();
        t.p = p;
        sum_cum += p as f64;
    }
    let rnd = rng.uniform_f64();
    let sum_tgt = sum_cum * rnd;
    let mut sum_run = 0.0f64;
    let mut found = None;
    for (i, t) in cur.data.iter_mut().enumerate() {
        if found.is_none() {
            sum_run += t.p as f64;
            if sum_run >= sum_tgt {
                found = Some(i);
            }
        }
        t.p = (t.p as f64 / sum_cum) as f32;
    }
    // Unreachable with finite logits; llama.cpp falls back to the last candidate.
    cur.selected = Some(found.unwrap_or(cur.data.len() - 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(c: &Candidates) -> Vec<u32> {
        c.data.iter().map(|t| t.id).collect()
    }

    #[test]
    fn penalties_count_a_sliding_window() {
        let mut p = Penalties::new(2, 2.0, 0.5, 0.25);
        for t in [3, 3, 1] {
            p.accept(t);
        }
        // Window: [3, 1] — token 3 once, token 1 once, token 0 never.
        let mut c = Candidates::from_logits(&[1.0, 4.0, -2.0, 8.0]);
        p.apply(&mut c);
        let got: Vec<f32> = c.data.iter().map(|t| t.logit).collect();
        assert_eq!(got, [1.0, 4.0 / 2.0 - 0.75, -2.0, 8.0 / 2.0 - 0.75]);
    }

    #[test]
    fn greedy_temperature_keeps_the_first_maximum_only() {
        let mut c = Candidates::from_logits(&[1.0, 5.0, 5.0, 2.0]);
        temperature(&mut c, 0.0);
        let got: Vec<f32> = c.data.iter().map(|t| t.logit).collect();
        assert_eq!(
            got,
            [f32::NEG_INFINITY, 5.0, f32::NEG_INFINITY, f32::NEG_INFINITY]
        );
    }

    #[test]
    fn top_k_and_min_p_trim_from_the_bottom() {
        let mut c = Candidates::from_logits(&[0.0, 3.0, 1.0, 2.0, -5.0]);
        top_k(&mut c, 3);
        assert_eq!(ids(&c), [1, 3, 2]);
        // p(2)/p(1) = e^-2 ≈ 0.135 < 0.2: token 2 goes.
        min_p(&mut c, 0.2, 0);
        assert_eq!(ids(&c), [1, 3]);
    }

    #[test]
    fn min_p_keeps_the_input_order_when_unsorted() {
        let mut c = Candidates::from_logits(&[2.0, -9.0, 3.0]);
        min_p(&mut c, 0.05, 0);
        assert_eq!(ids(&c), [0, 2]);
        assert!(!c.sorted);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut buf = Vec::new();
        let mut c = Candidates::from_logits(&[0.0, 2.0, 1.0, -3.0]);
        top_p(&mut c, 0.8, 0, &mut buf);
        // softmax ≈ [0.087, 0.644, 0.237, 0.032]: 0.644 + 0.237 ≥ 0.8.
        assert_eq!(ids(&c), [1, 2]);
        assert!(c.sorted);
    }

    #[test]
    fn top_p_on_a_large_vocabulary_sorts_only_what_it_needs() {
        let logits: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 5000) as f32 / 500.0)
            .collect();
        let mut buf = Vec::new();
        let mut c = Candidates::from_logits(&logits);
        top_p(&mut c, 0.5, 0, &mut buf);
        assert!(c.sorted && !c.data.is_empty());
        assert!(c.data.windows(2).all(|w| w[0].logit >= w[1].logit));
        let mass: f32 = c.data.iter().map(|t| t.p).sum();
        assert!(mass >= 0.5);
        // Large p: the first 256 are not enough, the full sort runs.
        let mut c = Candidates::from_logits(&logits);
        top_p(&mut c, 0.9999, 0, &mut buf);
        assert!(c.data.len() > 256);
        assert!(c.data.windows(2).all(|w| w[0].logit >= w[1].logit));
    }

    #[test]
    fn typical_keeps_tokens_near_the_entropy() {
        let mut c = Candidates::from_logits(&[5.0, 4.9, 0.0, -20.0]);
        typical(&mut c, 0.5, 0);
        assert!(!c.data.is_empty() && c.data.len() < 4);
        assert!(!ids(&c).contains(&3));
    }

    #[test]
    fn xtc_removes_the_top_choices_when_it_fires() {
        let mut c = Candidates::from_logits(&[3.0, 3.0, 2.9, -4.0]);
        let mut x = Xtc {
            probability: 1.0,
            threshold: 0.1,
            min_keep: 0,
            rng: Mt19937::new(1),
        };
        x.apply(&mut c);
        // Three tokens above 0.1: the two most likely go, the third stays.
        assert_eq!(c.data.len(), 2);
        assert_eq!(c.data[0].id, 2);
    }

    #[test]
    fn dist_picks_by_cumulative_probability() {
        let mut rng = Mt19937::new(42);
        let mut probe = rng.clone();
        let r = probe.uniform_f64();
        let mut c = Candidates::from_logits(&[0.0, 0.0, 0.0, 0.0]);
        dist(&mut c, &mut rng);
        // Four equal candidates: index ⌊4r⌋ (up to rounding at the boundaries).
        assert_eq!(c.selected, Some(((r * 4.0).ceil() as usize).max(1) - 1));
        assert!(c.data.iter().all(|t| t.p == 0.25));
    }

    #[test]
    fn top_n_sigma_masks_the_tail() {
        let mut c = Candidates::from_logits(&[10.0, 9.5, 0.0, 0.1, -0.2, 0.05]);
        top_n_sigma(&mut c, 1.0);
        let kept: Vec<u32> = c
            .data
            .iter()
            .filter(|t| t.logit.is_finite())
            .map(|t| t.id)
            .collect();
        assert_eq!(kept, [0, 1]);
    }

    #[test]
    fn dynamic_temperature_renormalises() {
        let mut c = Candidates::from_logits(&[1.0, 2.0, 3.0]);
        temperature_ext(&mut c, 1.0, 0.5, 1.0);
        let total: f32 = c.data.iter().map(|t| t.p).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(c.data[0].id, 2);
    }

    #[test]
    fn logit_bias_finds_shuffled_tokens() {
        let mut c = Candidates::from_logits(&[1.0, 2.0, 3.0]);
        c.data.swap(0, 2);
        logit_bias(&mut c, &[(1, -1.0), (2, f32::NEG_INFINITY)]);
        assert_eq!(c.data[0].logit, f32::NEG_INFINITY);
        assert_eq!(c.data[1].logit, 1.0);
    }
}
