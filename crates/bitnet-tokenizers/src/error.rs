//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading a tokenizer or using it.
///
/// Loading errors name the file and say what is accepted; encode/decode errors name the
/// offending id. None of them is a panic: a corrupt vocabulary is the user's file, not our bug.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The file could not be read as a GGUF file.
    #[error("{path}: {}", gguf_reason(.source))]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What the GGUF reader found wrong.
        source: bitnet_gguf::GgufError,
    },
    /// The GGUF metadata did not describe a usable vocabulary (missing tokens, bad arrays, ...).
    #[error("{path}: invalid vocabulary: {reason}")]
    InvalidVocab {
        /// The file (or `<memory>` for metadata built in memory).
        path: PathBuf,
        /// What was wrong, and what to do about it.
        reason: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer family this crate does not implement.
    #[error(
        "{path}: unsupported tokenizer model `{model}`: bitnet-tokenizers implements `llama` (SPM) \
         and `gpt2` (BPE); WPM (`bert`), UGM (`t5`) and others are not supported"
    )]
    UnsupportedModel {
        /// The file.
        path: PathBuf,
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer llama.cpp knows but this crate does not
    /// implement (guessing would silently produce different tokens).
    #[error(
        "{path}: pre-tokenizer `{pre}` is known to llama.cpp but not implemented by bitnet-tokenizers; \
         supported: {supported}"
    )]
    UnsupportedPreTokenizer {
        /// The file.
        path: PathBuf,
        /// The value of `tokenizer.ggml.pre`.
        pre: String,
        /// The names that are supported, comma separated.
        supported: String,
    },
    /// The BPE merges are missing or malformed.
    #[error("{path}: {reason}")]
    InvalidMerges {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A Hugging Face `tokenizer.json` (or GPT-2 encoder/merges pair) could not be loaded.
    #[error("{path}: cannot load Hugging Face tokenizer: {reason}")]
    HfLoad {
        /// The file.
        path: PathBuf,
        /// The tokenizers crate's message.
        reason: String,
    },
    /// The Hugging Face tokenizer failed while encoding or decoding.
    #[error("Hugging Face tokenizer: {0}")]
    Hf(String),
    /// The loader does not know what kind of tokenizer a path holds.
    #[error(
        "{path}: cannot tell which tokenizer this is: expected a `.gguf` model or vocabulary, \
         or a Hugging Face `tokenizer.json` (`.json`)"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read at all.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A token id passed to `decode` or `token_to_piece` is not in the vocabulary.
    #[error(
        "token id {id} is out of range: the vocabulary has {n_vocab} tokens (ids 0..{n_vocab})"
    )]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// The text holds characters the vocabulary cannot spell: no token for them and no byte
    /// token to fall back on. llama.cpp aborts on such text (SPM) or silently drops it (BPE);
    /// here it is an error, so no prompt is ever quietly shortened.
    #[error(
        "the vocabulary cannot represent {} in the text: it has no token for {} and no byte \
         tokens to spell {}; llama.cpp would {llama_cpp}. Remove {} from the text, or use a \
         model whose vocabulary has byte tokens",
        describe_chars(chars),
        if chars.chars().count() == 1 { "it" } else { "them" },
        if chars.chars().count() == 1 { "it" } else { "them" },
        if chars.chars().count() == 1 { "it" } else { "them" }
    )]
    Unrepresentable {
        /// The distinct characters that would be lost, in order of appearance.
        chars: String,
        /// What llama.cpp does with them: "abort (std::out_of_range)" or "drop them silently".
        llama_cpp: &'static str,
    },
    /// BOS (or EOS) was requested but the vocabulary has none.
    #[error("the vocabulary has no {which} token, but adding one was requested")]
    MissingSpecialToken {
        /// `"BOS"` or `"EOS"`.
        which: &'static str,
    },
}

/// The GGUF reader's message without the path it repeats for I/O errors (ours names it first).
fn gguf_reason(e: &bitnet_gguf::GgufError) -> String {
    match e {
        bitnet_gguf::GgufError::Io { source, .. } => format!("cannot read: {source}"),
        other => other.to_string(),
    }
}

/// `"🦀" (U+1F980)`, or a list of such for several characters.
fn describe_chars(chars: &str) -> String {
    let parts: Vec<String> = chars
        .chars()
        .map(|c| format!("{:?} (U+{:04X})", c.to_string(), c as u32))
        .collect();
    let n = parts.len();
    let word = if n == 1 { "character" } else { "characters" };
    format!("{n} {word}: {}", parts.join(", "))
}
