//! DRY ("don't repeat yourself"): penalise the tokens that would extend a sequence already
//! repeated in the recent context, exponentially in the repeat's length — llama.cpp's
//! `llama_sampler_dry`, itself ported from KoboldCpp.
//!
//! Sequence breakers (by default `\n`, `:`, `"`, `*`) end a repeat. llama.cpp turns each
//! breaker string into "head token → tail token sequences" over the whole vocabulary once, at
//! start-up ([`DryBreakers::from_vocab`]); that needs the tokenizer, which this crate does
//! not depend on, so the caller passes its detokenizer and tokenizer in.

use std::collections::{HashMap, VecDeque};

use super::candidates::{cxx_f32_to_i32, Candidates};
use super::SamplingError;

/// Breakers longer than this many bytes are refused (llama.cpp truncates them).
pub const MAX_BREAKER_BYTES: usize = 40;
/// A breaker's tail is tokenized to at most this many tokens (llama.cpp's `MAX_SEQ_LEN`).
const MAX_TAIL_TOKENS: usize = 20;

/// The processed sequence breakers: for each head token, the tails that complete a breaker
/// after it (an empty tail: the head token alone contains a breaker).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DryBreakers {
    by_head: HashMap<u32, Vec<Vec<u32>>>,
}

impl DryBreakers {
    /// No breakers: repeats run as long as the penalty window.
    pub fn none() -> DryBreakers {
        DryBreakers::default()
    }

    /// llama.cpp's `get_overlapping_token_sequences` for each breaker: a token whose text
    /// contains the breaker is a head with an empty tail; a token whose text ends with a
    /// proper prefix of the breaker is a head whose tail is the tokenization of the rest
    /// (at most 20 tokens, no BOS, no special-token parsing).
    ///
    /// `detokenize(id)` is llama.cpp's `detokenize({id}, special = true)`; `tokenize(text)`
    /// is `tokenize(text, add_special = false, parse_special = false)`.
    ///
    /// # Errors
    /// [`SamplingError::BadDryBreaker`] for an empty breaker, one longer than 40 bytes, or a
    /// tail that starts inside a multi-byte character (llama.cpp would tokenize the broken
    /// UTF-8; this engine's tokenizers take text).
    pub fn from_vocab(
        breakers: &[String],
        n_vocab: usize,
        mut detokenize: impl FnMut(u32) -> Vec<u8>,
        mut tokenize: impl FnMut(&str) -> Vec<u32>,
    ) -> Result<DryBreakers, SamplingError> {
        for b in breakers {
            check_breaker(b)?;
        }
        let mut out = DryBreakers::default();
        if breakers.is_empty() {
            return Ok(out);
        }
        let words: Vec<Vec<u8>> = (0..n_vocab as u32).map(&mut detokenize).collect();
        for breaker in breakers {
            let pattern = breaker.as_bytes();
            for (id, word) in words.iter().enumerate() {
                let id = id as u32;
                if contains(word, pattern) {
                    out.add(id, Vec::new());
                    continue;
                }
                // Every occurrence of the breaker's first byte that starts a match running
                // to the end of the word.
                for pos in 0..word.len() {
                    if word[pos] != pattern[0] {
                        continue;
                    }
                    let overlap = word.len() - pos;
                    if overlap >= pattern.len() || word[pos..] != pattern[..overlap] {
                        continue;
                    }
                    let rest = std::str::from_utf8(&pattern[overlap..]).map_err(|_| {
                        SamplingError::BadDryBreaker(format!(
                            "{breaker:?}: token {id} ends inside one of its characters, and the \
                             rest cannot be tokenized as text"
                        ))
                    })?;
                    let mut tail = tokenize(rest);
                    tail.truncate(MAX_TAIL_TOKENS);
                    out.add(id, tail);
                }
            }
        }
        Ok(out)
    }

    fn add(&mut self, head: u32, tail: Vec<u32>) {
        let tails = self.by_head.entry(head).or_default();
        if !tails.contains(&tail) {
            tails.push(tail);
        }
    }

    fn tails(&self, head: u32) -> Option<&[Vec<u32>]> {
        self.by_head.get(&head).map(Vec::as_slice)
    }

    /// Number of head tokens.
    pub fn len(&self) -> usize {
        self.by_head.len()
    }

    /// Whether there are no breakers.
    pub fn is_empty(&self) -> bool {
        self.by_head.is_empty()
    }
}

/// A breaker must be non-empty and at most [`MAX_BREAKER_BYTES`] long.
pub(crate) fn check_breaker(b: &str) -> Result<(), SamplingError> {
    if b.is_empty() {
        return Err(SamplingError::BadDryBreaker(
            "an empty sequence breaker (use \"none\" for no breakers)".into(),
        ));
    }
    if b.len() > MAX_BREAKER_BYTES {
        return Err(SamplingError::BadDryBreaker(format!(
            "{b:?} is {} bytes; a sequence breaker is at most {MAX_BREAKER_BYTES}",
            b.len()
        )));
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The DRY sampler's state: its parameters, the breakers and the last accepted tokens.
#[derive(Debug, Clone)]
pub(crate) struct Dry {
    multiplier: f32,
    base: f32,
    allowed_length: i32,
    penalty_last_n: usize,
    breakers: DryBreakers,
    last_tokens: VecDeque<u32>,
}

impl Dry {
    pub fn new(
        multiplier: f32,
        base: f32,
        allowed_length: i32,
        penalty_last_n: usize,
        breakers: DryBreakers,
    ) -> Dry {
        Dry {
            multiplier,
            base,
            allowed_length,
            penalty_last_n,
            breakers,
            last_tokens: VecDeque::with_capacity(penalty_last_n),
        }
    }

    pub fn accept(&mut self, token: u32) {
        if self.last_tokens.len() == self.penalty_last_n {
            self.last_tokens.pop_front();
        }
        self.last_tokens.push_back(token);
    }

    /// The `i`-th most recent token (0 = the last one), as llama.cpp's `ring_buffer::rat`.
    fn rat(&self, i: usize) -> u32 {
        self.last_tokens[self.last_tokens.len() - 1 - i]
    }

    pub fn apply(&self, cur: &mut Candidates) {
        let last_n_repeat = self.last_tokens.len().min(self.penalty_last_n) as i32;
        if last_n_repeat <= self.allowed_length {
            return;
        }
        let n = last_n_repeat as usize;
        if n == 0 {
            // Only reachable with a negative allowed length: nothing to look at.
            cur.sorted = false;
            return;
        }

        // Step 1: the most recent breaker limits how far back a repeat may reach.
        let mut rep_limit = last_n_repeat;
        for i in 0..n {
            let Some(tails) = self.breakers.tails(self.rat(i)) else {
                continue;
            };
            let mut longest_match: i32 = -1;
            for tail in tails {
                let seq_len = tail.len() as i32;
                if seq_len > longest_match && seq_len <= i as i32 {
                    let matched = (0..tail.len()).all(|off| tail[off] == self.rat(i - off - 1));
                    if matched {
                        longest_match = seq_len;
                    }
                }
            }
            if longest_match >= 0 {
                rep_limit = i as i32 - longest_match;
                break;
            }
        }
        if rep_limit < self.allowed_length {
            return;
        }

        // Step 2: for each position, the length of the suffix of the context that also ends
        // there (the Z-algorithm run backwards), capped at rep_limit.
        let mut repeat_count = vec![0i32; n];
        let last = n - 1;
        let (mut lt, mut rt) = (0usize, 0usize);
        for k in 1..n {
            if k > rt {
                let mut len = 0;
                while len + k < n && self.rat(len) == self.rat(len + k) {
                    len += 1;
                }
                repeat_count[last - k] = (len as i32).min(rep_limit);
                if len > 0 {
                    lt = k;
                    rt = k + len - 1;
                }
            } else {
                let p = k - lt;
                let right_part_len = (rt - k + 1) as i32;
                if repeat_count[last - p] < right_part_len {
                    repeat_count[last - k] = repeat_count[last - p].min(rep_limit);
                } else {
                    let mut i = rt + 1;
                    while i < n && self.rat(i) == self.rat(i - k) {
                        i += 1;
                    }
                    repeat_count[last - k] = ((i - k) as i32).min(rep_limit);
                    lt = k;
                    rt = i - 1;
                }
            }
        }

        // Step 3: the token after each repeat would extend it; keep the longest per token.
        let mut max_repeat: HashMap<u32, i32> = HashMap::new();
        for (i, &repeat_len) in repeat_count.iter().enumerate().take(n - 1) {
            if repeat_len >= self.allowed_length {
                let token = self.rat(n - 2 - i);
                let best = max_repeat.entry(token).or_insert(repeat_len);
                if *best < repeat_len {
                    *best = repeat_len;
                }
            }
        }

        // Step 4: penalise, multiplier · base^(length − allowed), the exponent capped so the
        // power stays below FLT_MAX.
        #[allow(clippy::excessive_precision)]
        const FLOAT_MAX_LOG: f32 = 88.722_839_1;
        let max_exponent = if self.base > 1.000_001 {
            cxx_f32_to_i32(FLOAT_MAX_LOG / self.base.ln())
        } else {
            0
        };
        for t in &mut cur.data {
            let Some(&repeat) = max_repeat.get(&t.id) else {
                continue;
            };
            let single_token_breaker = self
                .breakers
                .tails(t.id)
                .is_some_and(|tails| tails.iter().any(Vec::is_empty));
            if single_token_breaker {
                continue;
            }
            let mut exp = repeat - self.allowed_length;
            if max_exponent > 0 && exp > max_exponent {
                exp = max_exponent;
            }
            // std::pow(float, int) promotes both to double.
            let penalty = (self.multiplier as f64 * (self.base as f64).powf(exp as f64)) as f32;
            t.logit -= penalty;
        }
        cur.sorted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dry(breakers: DryBreakers, tokens: &[u32]) -> Dry {
        let mut d = Dry::new(1.0, 2.0, 2, 64, breakers);
        for &t in tokens {
            d.accept(t);
        }
        d
    }

    #[test]
    fn the_token_that_would_extend_a_repeat_is_penalised() {
        // Context a b c x a b c: emitting x again would make the repeat "a b c x" 4 long;
        // the current repeat "a b c" is 3, so the penalty is 1 · 2^(3 − 2) = 2.
        let d = dry(DryBreakers::none(), &[1, 2, 3, 9, 1, 2, 3]);
        let mut c = Candidates::from_logits(&[0.0; 10]);
        d.apply(&mut c);
        for t in &c.data {
            let expect = if t.id == 9 { -2.0 } else { 0.0 };
            assert_eq!(t.logit, expect, "token {}", t.id);
        }
    }

    #[test]
    fn a_breaker_in_the_context_stops_the_repeat() {
        let mut by_head = HashMap::new();
        by_head.insert(3u32, vec![Vec::new()]);
        let d = dry(DryBreakers { by_head }, &[1, 2, 3, 9, 1, 2, 3]);
        let mut c = Candidates::from_logits(&[0.0; 10]);
        d.apply(&mut c);
        assert!(c.data.iter().all(|t| t.logit == 0.0));
    }

    #[test]
    fn breakers_from_a_vocabulary() {
        // Token texts: 0 "a", 1 "b:", 2 "x\"", 3 "ab", 4 "\"y".
        let words: Vec<&[u8]> = vec![b"a", b"b:", b"x\"", b"ab", b"\"y"];
        let b = DryBreakers::from_vocab(
            &[":".to_string(), "\"y".to_string()],
            words.len(),
            |id| words[id as usize].to_vec(),
            |text| match text {
                "y" => vec![7],
                _ => panic!("unexpected tail {text:?}"),
            },
        )
        .unwrap();
        assert_eq!(b.tails(1), Some(&[Vec::new()][..]));
        assert_eq!(b.tails(2), Some(&[vec![7]][..]));
        assert_eq!(b.tails(4), Some(&[Vec::new()][..]));
        assert_eq!(b.tails(0), None);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn bad_breakers_are_refused() {
        let long = "x".repeat(41);
        for bad in ["", long.as_str()] {
            let err = DryBreakers::from_vocab(&[bad.to_string()], 1, |_| vec![], |_| vec![]);
            assert!(
                matches!(err, Err(SamplingError::BadDryBreaker(_))),
                "{bad:?}"
            );
        }
        // A token ending in the first byte of "é" leaves half a character to tokenize.
        let err = DryBreakers::from_vocab(&["é".to_string()], 1, |_| vec![b'z', 0xc3], |_| vec![]);
        assert!(matches!(err, Err(SamplingError::BadDryBreaker(_))));
    }
}
