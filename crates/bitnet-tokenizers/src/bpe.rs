//! Byte-level BPE merging (llama.cpp's `llm_tokenizer_bpe_session`).
//!
//! A word is a run of raw bytes; GPT-2's byte-to-unicode map turns each byte into one
//! printable character, which is how the vocabulary and the merges spell them. Because that
//! map is one character per byte, the merge loop can run on byte ranges of the raw word and
//! on token *ids*: the merges are indexed at load time by `(left id, right id)`, each with its
//! rank and the id of the merged text. The loop then never builds a string. Merges whose
//! halves are not both tokens (no real vocabulary has them) are kept by text and consulted
//! only when present, so the result stays identical to llama.cpp's string-keyed lookup.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::unicode::byte_to_char;
use crate::vocab::Vocab;

/// Merge table and byte tokens of a byte-level BPE vocabulary.
#[derive(Debug)]
pub(crate) struct BpeModel {
    /// `(left id, right id)` → `(rank, id of the merged text if it is a token)`.
    merges: FxHashMap<(u32, u32), (u32, Option<u32>)>,
    /// Merges with a half that is not a token, by text: `(left, right)` → rank.
    by_text: FxHashMap<(String, String), u32>,
    /// The token of each raw byte's GPT-2 character.
    byte_ids: [Option<u32>; 256],
    /// Llama-3's `ignore_merges`: a word that is a token as a whole is emitted directly.
    pub(crate) ignore_merges: bool,
}

/// Why a merges array was rejected.
pub(crate) struct BadMerge {
    pub(crate) index: usize,
    pub(crate) entry: String,
}

impl BpeModel {
    /// Index `merges` (rank = position; the first occurrence of a pair wins, as in llama.cpp).
    ///
    /// The text → id lookups (three per merge, 280k merges for Llama-3) are the cost of
    /// loading, so they run on a few threads over chunks of the array; the table is then
    /// filled in rank order.
    pub(crate) fn new(
        vocab: &Vocab,
        merges: &[String],
        ignore_merges: bool,
    ) -> Result<BpeModel, BadMerge> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let chunk = merges.len().div_ceil(threads).max(1);
        let parsed: Vec<Result<Vec<Parsed>, BadMerge>> = std::thread::scope(|s| {
            let handles: Vec<_> = merges
                .chunks(chunk)
                .enumerate()
                .map(|(k, part)| s.spawn(move || parse_merges(vocab, k * chunk, part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("parsing merges does not panic"))
                .collect()
        });
        let mut table = FxHashMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut by_text = FxHashMap::default();
        let mut rank = 0u32;
        for part in parsed {
            for p in part? {
                match p {
                    Parsed::Ids(l, r, merged) => {
                        table.entry((l, r)).or_insert((rank, merged));
                    }
                    Parsed::Text(l, r) => {
                        by_text.entry((l, r)).or_insert(rank);
                    }
                }
                rank += 1;
            }
        }
        let map = byte_to_char();
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = vocab.id(map[b].encode_utf8(&mut [0; 4]));
        }
        Ok(BpeModel {
            merges: table,
            by_text,
            byte_ids,
            ignore_merges,
        })
    }

    /// Number of merges indexed.
    pub(crate) fn n_merges(&self) -> usize {
        self.merges.len() + self.by_text.len()
    }

    /// Tokenize one pre-tokenized word (raw UTF-8 bytes), appending ids to `out`.
    pub(crate) fn tokenize_word(
        &self,
        vocab: &Vocab,
        word: &[u8],
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            encode_bytes(word, &mut scratch.text);
            if let Some(id) = vocab.id(&scratch.text) {
                out.push(id);
                return;
            }
        }
        let syms = &mut scratch.symbols;
        syms.clear();
        for (i, &b) in word.iter().enumerate() {
            syms.push(Sym {
                start: i,
                len: 1,
                id: self.byte_ids[b as usize],
                prev: i.checked_sub(1),
                next: (i + 1 < word.len()).then_some(i + 1),
            });
        }
        let queue = &mut scratch.queue;
        queue.clear();
        for i in 1..syms.len() {
            if let Some((rank, merged)) = self.rank(word, &syms[i - 1], &syms[i], vocab) {
                queue.push(Reverse((rank, i - 1, i, 2, merged)));
            }
        }
        while let Some(Reverse((_, left, right, size, merged))) = queue.pop() {
            let (l, r) = (syms[left], syms[right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue;
            }
            syms[left].len += r.len;
            syms[left].id = merged;
            syms[right].len = 0;
            syms[left].next = r.next;
            if let Some(n) = r.next {
                syms[n].prev = Some(left);
            }
            let cur = syms[left];
            if let Some(p) = cur.prev {
                if let Some((rank, m)) = self.rank(word, &syms[p], &cur, vocab) {
                    queue.push(Reverse((rank, p, left, syms[p].len + cur.len, m)));
                }
            }
            if let Some(n) = cur.next {
                if let Some((rank, m)) = self.rank(word, &cur, &syms[n], vocab) {
                    queue.push(Reverse((rank, left, n, cur.len + syms[n].len, m)));
                }
            }
        }
        let mut i = Some(0);
        while let Some(idx) = i {
            let s = syms[idx];
            match s.id {
                Some(id) => out.push(id),
                None => {
                    // llama.cpp looks each byte of the *encoded* text up as a one-byte token:
                    // only printable ASCII can succeed; the rest is dropped.
                    let mut spelled = true;
                    for &b in &word[s.start..s.start + s.len] {
                        match self.byte_ids[b as usize] {
                            Some(id) if (0x21..=0x7E).contains(&b) => out.push(id),
                            _ => spelled = false,
                        }
                    }
                    if !spelled {
                        record_lost(word, s.start, &mut scratch.lost);
                    }
                }
            }
            i = s.next;
        }
    }

    /// Rank of merging two adjacent symbols and the id of the result.
    #[inline]
    fn rank(&self, word: &[u8], l: &Sym, r: &Sym, vocab: &Vocab) -> Option<(u32, Option<u32>)> {
        if let (Some(a), Some(b)) = (l.id, r.id) {
            return self.merges.get(&(a, b)).copied();
        }
        if self.by_text.is_empty() {
            return None;
        }
        let mut left = String::new();
        encode_bytes(&word[l.start..l.start + l.len], &mut left);
        let mut right = String::new();
        encode_bytes(&word[r.start..r.start + r.len], &mut right);
        let rank = *self.by_text.get(&(left.clone(), right.clone()))?;
        left.push_str(&right);
        Some((rank, vocab.id(&left)))
    }
}

/// One merge, resolved to ids where its halves are tokens.
enum Parsed {
    /// Left id, right id, id of the joined text.
    Ids(u32, u32, Option<u32>),
    /// Halves that are not both tokens, by text.
    Text(String, String),
}

/// Resolve `part`, whose first entry has rank `base`.
fn parse_merges(vocab: &Vocab, base: usize, part: &[String]) -> Result<Vec<Parsed>, BadMerge> {
    let mut out = Vec::with_capacity(part.len());
    let mut joined = String::new();
    for (i, entry) in part.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte.
        let split = entry
            .as_bytes()
            .iter()
            .skip(1)
            .position(|&b| b == b' ')
            .map(|p| p + 1)
            .ok_or_else(|| BadMerge {
                index: base + i,
                entry: entry.clone(),
            })?;
        let (left, right) = (&entry[..split], &entry[split + 1..]);
        out.push(match (vocab.id(left), vocab.id(right)) {
            (Some(l), Some(r)) => {
                joined.clear();
                joined.push_str(left);
                joined.push_str(right);
                Parsed::Ids(l, r, vocab.id(&joined))
            }
            _ => Parsed::Text(left.to_string(), right.to_string()),
        });
    }
    Ok(out)
}

/// Add the character of `word` that contains byte `at` to `lost`, once.
fn record_lost(word: &[u8], at: usize, lost: &mut String) {
    // Words are slices of a `str` cut at character boundaries, so the character starts at
    // the last non-continuation byte at or before `at`.
    let start = (0..=at)
        .rev()
        .find(|&i| word[i] & 0xC0 != 0x80)
        .unwrap_or(at);
    let len = match word[start] {
        b if b < 0x80 => 1,
        b if b >= 0xF0 => 4,
        b if b >= 0xE0 => 3,
        _ => 2,
    };
    let end = (start + len).min(word.len());
    if let Ok(s) = std::str::from_utf8(&word[start..end]) {
        for c in s.chars() {
            if !lost.contains(c) {
                lost.push(c);
            }
        }
    }
}

/// GPT-2 byte-to-unicode encoding of `bytes` into `out` (cleared first).
pub(crate) fn encode_bytes(bytes: &[u8], out: &mut String) {
    let map = byte_to_char();
    out.clear();
    out.extend(bytes.iter().map(|&b| map[b as usize]));
}

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    id: Option<u32>,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Reusable buffers for [`BpeModel::tokenize_word`].
#[derive(Default)]
pub(crate) struct Scratch {
    text: String,
    symbols: Vec<Sym>,
    /// `(rank, left, right, size, merged id)`, smallest rank then smallest left first.
    #[allow(clippy::type_complexity)]
    queue: BinaryHeap<Reverse<(u32, usize, usize, usize, Option<u32>)>>,
    /// Characters whose bytes no token could spell (llama.cpp drops them silently).
    pub lost: String,
}
