//! Tokenizers for bitnet-rs: the vocabulary embedded in a GGUF file, tokenized exactly as
//! llama.cpp tokenizes it, and Hugging Face `tokenizer.json` files, behind one [`Tokenizer`]
//! trait.
//!
//! The token parity pre-gate of cross-validation compares our tokens with llama.cpp's, so a
//! difference must always mean a real difference. That decides the design:
//!
//! * **llama.cpp is the specification.** [`GgufTokenizer`] follows `llama-vocab.cpp` step by
//!   step: the same defaults for BOS/EOS/`add_space_prefix` per model and pre-tokenizer type
//!   (the llama-bpe vocabulary has no `add_bos_token` key yet adds BOS), the same special-token
//!   partitioning (longest special text first, with the lstrip/rstrip attributes llama.cpp
//!   assigns, e.g. to Phi-3), the same SPM bigram merging by score with `<0xXX>` byte
//!   fallback, the same BPE merging by rank with Llama-3's `ignore_merges`, and the same
//!   pre-tokenizers. llama.cpp runs the GPT-2, Llama-3, Qwen2 and Qwen3.5 expressions through
//!   hand-written splitters that differ from the regex in corner cases; those are hand-written
//!   here too. The other expressions run through `fancy-regex` on the same "collapsed" text
//!   llama.cpp gives `std::regex` (see the `pretok` module), which reproduces its unicode
//!   category handling exactly.
//! * **One meaning for the two switches.** `encode(text, add_bos, parse_special)`:
//!   - `add_bos` is llama.cpp's `add_special`: add the special tokens *the vocabulary asks
//!     for* — BOS when [`Tokenizer::add_bos_default`] is true, EOS when
//!     [`Tokenizer::add_eos_default`] is true. It never forces a BOS onto a vocabulary that does
//!     not use one (GPT-2), because llama.cpp would not either. Callers who want the
//!     vocabulary's default simply pass `true`.
//!   - `parse_special`: special-token text in the input (`<s>`, `<|begin_of_text|>`) becomes
//!     the special token; when false it is plain text. User-defined tokens are matched either
//!     way, as in llama.cpp.
//! * **Speed without divergence.** BPE merges are indexed by token-id pairs at load time so
//!   the merge loop never allocates; the 128k-token, 280k-merge llama-bpe vocabulary loads in
//!   tens of milliseconds. SPM text is cut only where no token can span the cut (provably the
//!   same result as llama.cpp's one pass over the whole fragment), so repeated words are
//!   tokenized once per call; BPE words are cached likewise. Numbers are in the crate README.
//!
//! # Hugging Face `tokenizer.json` ([`HfTokenizer`])
//!
//! | this crate | HF `tokenizers` |
//! |---|---|
//! | `add_bos = true` | `encode(text, add_special_tokens = true)`: the file's post-processor runs |
//! | `add_bos = false` | `add_special_tokens = false` |
//! | `parse_special = true` | `encode_special_tokens = false` (added tokens are matched) |
//! | `parse_special = false` | `encode_special_tokens = true` (special text is plain text) |
//!
//! Where the two worlds cannot be made identical:
//! * HF's post-processor may add more than BOS (EOS, or nothing at all — the Llama-3
//!   `tokenizer.json` package shipped here adds no BOS while llama.cpp's GGUF of the same
//!   vocabulary does). `add_bos` means "run the post-processor", so for HF the defaults
//!   reported by [`Tokenizer::add_bos_default`] are derived from what that post-processor does.
//! * With `parse_special = false`, HF still matches *non-special* added tokens; llama.cpp
//!   still matches user-defined tokens. These usually coincide but are defined differently.
//! * HF decodes a single byte-level token that is a partial UTF-8 sequence to U+FFFD, whereas
//!   the GGUF backend returns the raw byte from [`Tokenizer::token_to_piece`].
//!
//! # Out of scope
//! WPM (`bert`) and UGM (`t5`) vocabularies are refused with
//! [`TokenizerError::UnsupportedModel`], and pre-tokenizers llama.cpp knows but this crate
//! does not implement with [`TokenizerError::UnsupportedPreTokenizer`]: no guessing.
//! An *unknown* or missing `tokenizer.ggml.pre` falls back to the default pre-tokenizer with a
//! warning on stderr (kept in [`GgufTokenizer::warnings`] too). That is llama.cpp's behaviour
//! for a missing name; the llama.cpp revision this crate follows refuses an unknown *name*
//! outright, and the fallback for that case follows the project's specification instead.
//!
//! # Known differences from llama.cpp
//! * When a vocabulary has several texts llama.cpp recognises as end-of-turn (`<|eot_id|>`
//!   and `<|end_of_text|>`, say) and no `eot_token_id` key, llama.cpp takes the first one in
//!   its hash map's iteration order, which is unspecified; this crate takes the first in
//!   llama.cpp's list order (`<|eot_id|>`, `<|im_end|>`, ... `<|endoftext|>`). For end-of-turn
//!   texts only the reported [`Tokenizer::eot_id`] can differ (all of them are made control
//!   tokens either way). The same rule picks among several fill-in-the-middle look-alikes
//!   (`<PRE>` and `<fim-prefix>`), where the choice also decides which one is forced to
//!   control type.
//! * Where llama.cpp would abort (an SPM byte with no `<0xXX>` token, token texts it cannot
//!   tell apart, a requested BOS the vocabulary lacks) this crate returns an error. Where it
//!   silently drops text (a BPE byte with no token), this crate returns an error too
//!   ([`TokenizerError::Unrepresentable`], naming the characters): a prompt is never quietly
//!   shortened.
//!
//! # Example
//! ```
//! use bitnet_tokenizers::{load, Tokenizer};
//!
//! let tok = load(&bitnet_fixtures::vocab("llama-spm"))?;
//! assert!(tok.add_bos_default());
//! let ids = tok.encode("Hello world", true, false)?;
//! assert_eq!(ids[0], tok.bos_id().unwrap());
//! // BOS renders as nothing unless special tokens are asked for.
//! assert_eq!(tok.decode(&ids, false)?, " Hello world");
//! assert_eq!(tok.decode(&ids[1..], false)?, "Hello world");
//! # Ok::<(), bitnet_tokenizers::TokenizerError>(())
//! ```
#![deny(missing_docs)]

mod bpe;
mod error;
mod gguf;
mod hf;
mod pretok;
mod spm;
mod unicode;
mod vocab;

use std::path::Path;

pub use error::TokenizerError;
pub use gguf::{GgufTokenizer, SpecialIds};
pub use hf::HfTokenizer;

/// A tokenizer: text to token ids and back, with the vocabulary's special tokens and defaults.
///
/// Implementations are immutable after loading and can be shared between threads.
pub trait Tokenizer: Send + Sync + std::fmt::Debug {
    /// Token ids of `text`.
    ///
    /// `add_bos` is llama.cpp's `add_special`: add BOS (and EOS) when the vocabulary's own
    /// defaults ask for them (see the crate documentation). `parse_special`: match special-token
    /// text in `text` as special tokens. Empty text gives no tokens (plus BOS when asked).
    ///
    /// # Errors
    /// [`TokenizerError::MissingSpecialToken`] when the vocabulary asks for BOS/EOS but has
    /// none; [`TokenizerError::Hf`] when the HF backend fails.
    fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError>;

    /// Text of `ids` (invalid UTF-8 from partial byte tokens becomes U+FFFD). `special`: render
    /// control tokens (BOS, EOS, ...) as their text instead of nothing.
    ///
    /// # Errors
    /// [`TokenizerError::IdOutOfRange`] for an id outside the vocabulary.
    fn decode(&self, ids: &[u32], special: bool) -> Result<String, TokenizerError>;

    /// The bytes token `id` stands for (a byte token gives one raw byte). `special`: render
    /// control tokens as their text instead of nothing.
    ///
    /// # Errors
    /// [`TokenizerError::IdOutOfRange`] for an id outside the vocabulary.
    fn token_to_piece(&self, id: u32, special: bool) -> Result<Vec<u8>, TokenizerError>;

    /// Number of tokens (valid ids are `0..vocab_size()`).
    fn vocab_size(&self) -> usize;

    /// Beginning-of-sequence id.
    fn bos_id(&self) -> Option<u32>;

    /// End-of-sequence id.
    fn eos_id(&self) -> Option<u32>;

    /// End-of-turn id (`<|eot_id|>`, `<|im_end|>`, ...).
    fn eot_id(&self) -> Option<u32>;

    /// Unknown-token id.
    fn unk_id(&self) -> Option<u32>;

    /// Whether the vocabulary adds BOS by default (llama.cpp's `llama_vocab_get_add_bos`).
    fn add_bos_default(&self) -> bool;

    /// Whether the vocabulary adds EOS by default.
    fn add_eos_default(&self) -> bool;

    /// Whether `id` is a special (control or unknown) token: rendered only when asked.
    fn is_special(&self, id: u32) -> bool;

    /// A short name of the backend for reports, e.g. `gguf/bpe (pre=llama-bpe)`.
    fn backend_name(&self) -> String;
}

/// Load the tokenizer at `path`, choosing the backend by extension: `.gguf` → the embedded
/// vocabulary ([`GgufTokenizer`]); `.json` → a Hugging Face `tokenizer.json` ([`HfTokenizer`]).
///
/// # Errors
/// [`TokenizerError::UnknownFormat`] for any other extension (the message says what is
/// accepted); otherwise the backend's loading errors.
pub fn load(path: &Path) -> Result<Box<dyn Tokenizer>, TokenizerError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("gguf") => Ok(Box::new(GgufTokenizer::open(path)?)),
        Some("json") => Ok(Box::new(HfTokenizer::from_file(path)?)),
        _ => Err(TokenizerError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}
