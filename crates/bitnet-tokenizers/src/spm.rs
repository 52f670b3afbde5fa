//! SentencePiece-style merging (llama.cpp's `llm_tokenizer_spm_session`).
//!
//! The text (already space-escaped with `▁`) starts as one symbol per UTF-8 character. Every
//! adjacent pair whose concatenation is a vocabulary token is a candidate; the candidate with
//! the highest token score is merged first (ties: the leftmost), and the new neighbours become
//! candidates. Symbols that end up not being tokens fall back to `<0xXX>` byte tokens.
//!
//! llama.cpp runs this over a whole fragment at once. Splitting the text first is exact when
//! no token can span the cut: [`Segmenter`] cuts before a `▁` whose preceding character never
//! precedes a `▁` inside any token of the vocabulary. No bigram across such a cut can ever be
//! a token, so no merge crosses it, and merges on either side do not influence each other
//! (the score order is per candidate; ties are broken by position, which preserves the order
//! within each side). The pieces can then be cached, which makes repeated words cheap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::vocab::Vocab;

/// Where SPM text may be cut without changing the result (see the module documentation).
#[derive(Debug)]
pub(crate) struct Segmenter {
    /// Characters that directly precede a `▁` inside some token.
    joins_space: Vec<char>,
}

impl Segmenter {
    pub(crate) fn new(vocab: &Vocab) -> Segmenter {
        let mut joins_space = Vec::new();
        for (_, t) in vocab.iter() {
            let mut prev = None;
            for c in t.chars() {
                if c == '\u{2581}' {
                    if let Some(p) = prev {
                        if !joins_space.contains(&p) {
                            joins_space.push(p);
                        }
                    }
                }
                prev = Some(c);
            }
        }
        Segmenter { joins_space }
    }

    /// Call `f` on consecutive pieces of `text` that can be tokenized independently.
    pub(crate) fn for_each<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let mut start = 0;
        let mut prev: Option<char> = None;
        for (i, c) in text.char_indices() {
            if c == '\u{2581}' && i > start {
                if let Some(p) = prev {
                    if !self.joins_space.contains(&p) {
                        f(&text[start..i]);
                        start = i;
                    }
                }
            }
            prev = Some(c);
        }
        if start < text.len() {
            f(&text[start..]);
        }
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Greater = merged first: higher score, then smaller left index (llama.cpp's comparator).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Reusable buffers for [`tokenize`].
#[derive(Default)]
pub(crate) struct Scratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
    /// Characters no token or byte token could spell (llama.cpp would abort on them).
    pub lost: String,
}

/// Tokenize one escaped fragment, appending ids to `out`.
pub(crate) fn tokenize(vocab: &Vocab, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) {
    if text.is_empty() {
        return;
    }
    let symbols = &mut scratch.symbols;
    symbols.clear();
    for (i, (start, c)) in text.char_indices().enumerate() {
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    if let Some(last) = symbols.last_mut() {
        last.next = None;
    }

    let queue = &mut scratch.queue;
    queue.clear();
    let try_add =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: usize, right: usize| {
            let (l, r) = (symbols[left], symbols[right]);
            let piece = &text[l.start..r.start + r.len];
            if let Some(id) = vocab.id(piece) {
                queue.push(Bigram {
                    left,
                    right,
                    score: vocab.score(id),
                    size: piece.len(),
                });
            }
        };
    for i in 1..symbols.len() {
        try_add(symbols, queue, i - 1, i);
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
            continue;
        }
        symbols[bigram.left].len += r.len;
        symbols[bigram.right].len = 0;
        symbols[bigram.left].next = r.next;
        if let Some(n) = r.next {
            symbols[n].prev = Some(bigram.left);
        }
        if let Some(p) = symbols[bigram.left].prev {
            try_add(symbols, queue, p, bigram.left);
        }
        if let Some(n) = symbols[bigram.left].next {
            try_add(symbols, queue, bigram.left, n);
        }
    }

    let mut i = Some(0);
    while let Some(idx) = i {
        let s = symbols[idx];
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for c in piece.chars() {
                    let mut buf = [0u8; 4];
                    let mut spelled = true;
                    for &b in c.encode_utf8(&mut buf).as_bytes() {
                        match vocab.spm_byte_token(b) {
                            Some(id) => out.push(id),
                            None => spelled = false,
                        }
                    }
                    if !spelled && !scratch.lost.contains(c) {
                        scratch.lost.push(c);
                    }
                }
            }
        }
        i = s.next;
    }
}
