//! The token table shared by the SPM and BPE models: texts, scores, attributes, text → id.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// llama.cpp's `llama_token_attr` bits.
pub(crate) mod attr {
    pub(crate) const UNKNOWN: u32 = 1 << 0;
    pub(crate) const UNUSED: u32 = 1 << 1;
    pub(crate) const NORMAL: u32 = 1 << 2;
    pub(crate) const CONTROL: u32 = 1 << 3;
    pub(crate) const USER_DEFINED: u32 = 1 << 4;
    pub(crate) const BYTE: u32 = 1 << 5;
    pub(crate) const LSTRIP: u32 = 1 << 7;
    pub(crate) const RSTRIP: u32 = 1 << 8;

    /// Attribute of a GGUF `tokenizer.ggml.token_type` value (llama.cpp's `llama_token_type`).
    pub(crate) fn from_token_type(t: i32) -> u32 {
        match t {
            1 => NORMAL,
            2 => UNKNOWN,
            3 => CONTROL,
            4 => USER_DEFINED,
            5 => UNUSED,
            6 => BYTE,
            _ => 0, // UNDEFINED
        }
    }
}

/// Invariant: `offsets` has one entry per id plus one, and `arena[offsets[i]..offsets[i + 1]]`
/// is the text of id `i`; `scores` and `attrs` have one entry per id; `by_text` maps every
/// text to its id (the last id when a text repeats, as llama.cpp's `token_to_id[word] = i`
/// does).
///
/// All texts live in one contiguous arena and the text → id index stores only ids (4 bytes
/// each): loading copies each token once, and the ~2 MB working set of a lookup stays in cache,
/// which is what makes indexing 280k merges fast.
#[derive(Debug)]
pub(crate) struct Vocab {
    arena: String,
    offsets: Vec<u32>,
    pub(crate) scores: Vec<f32>,
    pub(crate) attrs: Vec<u32>,
    by_text: HashTable<u32>,
    spm_bytes: [Option<u32>; 256],
}

impl Vocab {
    /// Build from the GGUF token list; empty texts become `[EMPTY_i]` as in llama.cpp.
    pub(crate) fn new(tokens: &[String], scores: Vec<f32>, attrs: Vec<u32>) -> Vocab {
        let mut arena = String::with_capacity(tokens.iter().map(String::len).sum());
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        offsets.push(0u32);
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                arena.push_str(&format!("[EMPTY_{i}]"));
            } else {
                arena.push_str(t);
            }
            offsets.push(u32::try_from(arena.len()).expect("vocabulary texts under 4 GiB"));
        }
        let text =
            |id: u32| &arena[offsets[id as usize] as usize..offsets[id as usize + 1] as usize];
        let mut by_text = HashTable::with_capacity(tokens.len());
        for i in 0..tokens.len() as u32 {
            let t = text(i);
            let h = FxBuildHasher.hash_one(t);
            match by_text.find_mut(h, |&id: &u32| text(id) == t) {
                Some(slot) => *slot = i,
                None => {
                    by_text.insert_unique(h, i, |&id: &u32| FxBuildHasher.hash_one(text(id)));
                }
            }
        }
        let mut v = Vocab {
            arena,
            offsets,
            scores,
            attrs,
            by_text,
            spm_bytes: [None; 256],
        };
        for b in 0..=255u8 {
            v.spm_bytes[b as usize] = v.id(&format!("<0x{b:02X}>")).or_else(|| {
                // llama.cpp falls back to the byte itself as a one-character token.
                std::str::from_utf8(&[b]).ok().and_then(|s| v.id(s))
            });
        }
        v
    }

    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The text of `id`.
    ///
    /// # Panics
    /// If `id` is out of range (callers check first).
    #[inline]
    pub(crate) fn text(&self, id: u32) -> &str {
        let (a, b) = (self.offsets[id as usize], self.offsets[id as usize + 1]);
        &self.arena[a as usize..b as usize]
    }

    /// All `(id, text)` pairs in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        (0..self.len() as u32).map(|id| (id, self.text(id)))
    }

    #[inline]
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        let h = FxBuildHasher.hash_one(text);
        self.by_text.find(h, |&id| self.text(id) == text).copied()
    }

    #[inline]
    pub(crate) fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    #[inline]
    pub(crate) fn attr(&self, id: u32) -> u32 {
        self.attrs[id as usize]
    }

    /// The SPM byte-fallback token of `b`: `<0xXX>`, else the byte as a one-character token.
    #[inline]
    pub(crate) fn spm_byte_token(&self, b: u8) -> Option<u32> {
        self.spm_bytes[b as usize]
    }
}
