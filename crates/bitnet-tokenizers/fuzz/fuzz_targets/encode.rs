//! Feeds arbitrary bytes to the GGUF tokenizers, with and without special-token parsing and
//! BOS: every real vocabulary from the fixtures that the crate supports, plus a tiny BPE
//! vocabulary that cannot spell most text. Encoding must return ids inside the vocabulary or
//! a typed error (never panic, loop or allocate absurdly), and the ids must decode.
//!
//! The first byte picks the vocabulary and the two switches; the rest is the text (invalid
//! UTF-8 is replaced, as any caller holding a `&str` would have it).
#![no_main]

use std::sync::OnceLock;

use bitnet_gguf::{Array, GgufFile, GgufWriter, Value};
use bitnet_tokenizers::{GgufTokenizer, Tokenizer, TokenizerError};
use libfuzzer_sys::fuzz_target;

fn tokenizers() -> &'static [GgufTokenizer] {
    static ALL: OnceLock<Vec<GgufTokenizer>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<GgufTokenizer> = bitnet_fixtures::all_vocab_names()
            .iter()
            .filter_map(|name| GgufTokenizer::open(bitnet_fixtures::vocab(name)).ok())
            .collect();
        all.push(tiny_bpe());
        all
    })
}

/// "a", "b", "c", " " and two merges: almost any text holds characters it cannot spell.
fn tiny_bpe() -> GgufTokenizer {
    let strings =
        |v: &[&str]| Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()));
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()))
        .unwrap();
    w.add_metadata("tokenizer.ggml.pre", Value::String("gpt-2".into()))
        .unwrap();
    w.add_metadata("tokenizer.ggml.tokens", strings(&["a", "b", "c", "Ġ", "ab", "Ġa"]))
        .unwrap();
    w.add_metadata("tokenizer.ggml.merges", strings(&["a b", "Ġ a"]))
        .unwrap();
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    GgufTokenizer::from_header(&file, "tiny.gguf".as_ref()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let all = tokenizers();
    let tok = &all[(pick >> 2) as usize % all.len()];
    let (add_bos, parse_special) = (pick & 1 != 0, pick & 2 != 0);
    let text = String::from_utf8_lossy(text);
    match tok.encode(&text, add_bos, parse_special) {
        Ok(ids) => {
            assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
            tok.decode(&ids, parse_special).unwrap();
        }
        Err(TokenizerError::Unrepresentable { chars, .. }) => {
            assert!(!chars.is_empty());
            assert!(chars.chars().all(|c| text.contains(c) || c == ' '));
        }
        Err(TokenizerError::MissingSpecialToken { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
});
