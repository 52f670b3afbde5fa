//! Bad input gives clear errors, never a panic or a guess.

use std::path::Path;

use bitnet_gguf::{Array, GgufWriter, Value};
use bitnet_tokenizers::{load, GgufTokenizer, Tokenizer, TokenizerError};

/// A tiny byte-level BPE vocabulary: the GPT-2 characters of "a", "b", "c", " " (`Ġ`) and
/// their merges. `extra` adds or overrides keys.
fn tiny_bpe(dir: &Path, name: &str, extra: &[(&str, Value)]) -> std::path::PathBuf {
    let strings =
        |v: &[&str]| Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()));
    let mut keys: Vec<(&str, Value)> = vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt-2".into())),
        (
            "tokenizer.ggml.tokens",
            strings(&["a", "b", "c", "Ġ", "ab", "Ġa", "abc"]),
        ),
        ("tokenizer.ggml.merges", strings(&["a b", "Ġ a", "ab c"])),
    ];
    for (k, v) in extra {
        keys.retain(|(key, _)| key != k);
        keys.push((k, v.clone()));
    }
    let mut w = GgufWriter::new();
    for (k, v) in keys {
        w.add_metadata(k, v).unwrap();
    }
    let path = dir.join(name);
    w.write_file(&path).unwrap();
    path
}

#[test]
fn the_tiny_vocabulary_merges_by_rank() {
    let dir = tempfile::tempdir().unwrap();
    let tok = GgufTokenizer::open(tiny_bpe(dir.path(), "v.gguf", &[])).unwrap();
    // "abc" → a b c → (ab) c → (abc); " a" → Ġa.
    assert_eq!(tok.encode("abc a", false, false).unwrap(), [6, 5]);
    assert_eq!(tok.decode(&[6, 5], false).unwrap(), "abc a");
}

#[test]
fn unknown_tokenizer_models_are_refused() {
    // A real WPM vocabulary.
    let err = GgufTokenizer::open(bitnet_fixtures::vocab("bert-bge")).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnsupportedModel { model, .. } if model == "bert"),
        "{err}"
    );
    assert!(err.to_string().contains("not supported"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_bpe(
        dir.path(),
        "x.gguf",
        &[("tokenizer.ggml.model", Value::String("rwkv".into()))],
    );
    assert!(matches!(
        GgufTokenizer::open(path),
        Err(TokenizerError::UnsupportedModel { .. })
    ));
}

#[test]
fn missing_or_malformed_merges_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // No merges key: rebuild without it.
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()))
        .unwrap();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into()])),
    )
    .unwrap();
    let path = dir.path().join("nomerges.gguf");
    w.write_file(&path).unwrap();
    let err = GgufTokenizer::open(&path).unwrap_err();
    assert!(matches!(err, TokenizerError::InvalidMerges { .. }), "{err}");
    assert!(err.to_string().contains("merges"), "{err}");

    let bad = tiny_bpe(
        dir.path(),
        "bad.gguf",
        &[(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(vec!["a b".into(), "abc".into()])),
        )],
    );
    let err = GgufTokenizer::open(bad).unwrap_err();
    assert!(matches!(err, TokenizerError::InvalidMerges { .. }), "{err}");
    assert!(err.to_string().contains("#1"), "{err}");

    let wrong_type = tiny_bpe(
        dir.path(),
        "wt.gguf",
        &[("tokenizer.ggml.merges", Value::U32(3))],
    );
    assert!(matches!(
        GgufTokenizer::open(wrong_type),
        Err(TokenizerError::Gguf { .. })
    ));
}

#[test]
fn unknown_pre_tokenizer_falls_back_to_default_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = tiny_bpe(
        dir.path(),
        "u.gguf",
        &[("tokenizer.ggml.pre", Value::String("no-such-pre".into()))],
    );
    let default = tiny_bpe(
        dir.path(),
        "d.gguf",
        &[("tokenizer.ggml.pre", Value::String("default".into()))],
    );
    let (u, d) = (
        GgufTokenizer::open(unknown).unwrap(),
        GgufTokenizer::open(default).unwrap(),
    );
    assert!(
        u.warnings().iter().any(|w| w.contains("no-such-pre")),
        "{:?}",
        u.warnings()
    );
    assert!(d.warnings().is_empty());
    // The same ids, or the same error for characters the tiny vocabulary cannot spell.
    for text in ["abc a", "a,b  c", "ab12345c"] {
        assert_eq!(
            u.encode(text, false, false).map_err(|e| e.to_string()),
            d.encode(text, false, false).map_err(|e| e.to_string())
        );
    }
    // A pre-tokenizer llama.cpp knows but we do not implement is an error, not a guess.
    let known = tiny_bpe(
        dir.path(),
        "k.gguf",
        &[("tokenizer.ggml.pre", Value::String("tekken".into()))],
    );
    let err = GgufTokenizer::open(known).unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnsupportedPreTokenizer { .. }),
        "{err}"
    );
}

#[test]
fn ids_out_of_range_are_errors() {
    let tok = GgufTokenizer::open(bitnet_fixtures::vocab("llama-spm")).unwrap();
    let n = tok.vocab_size() as u32;
    for err in [
        tok.decode(&[1, n], false).unwrap_err(),
        tok.token_to_piece(n + 7, true).unwrap_err(),
    ] {
        assert!(
            matches!(err, TokenizerError::IdOutOfRange { n_vocab, .. } if n_vocab == n as usize),
            "{err}"
        );
    }
    assert!(!tok.is_special(n));
}

#[test]
fn the_loader_picks_the_backend_by_extension() {
    let gguf = load(&bitnet_fixtures::vocab("gpt-2")).unwrap();
    assert!(
        gguf.backend_name().starts_with("gguf/bpe"),
        "{}",
        gguf.backend_name()
    );
    let json = load(&bitnet_fixtures::require(
        bitnet_fixtures::LLAMA3_TOKENIZER_JSON,
    ))
    .unwrap();
    assert!(json.backend_name().starts_with("hf/"));

    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("tokenizer.model");
    std::fs::write(&other, b"whatever").unwrap();
    let err = load(&other).unwrap_err();
    assert!(matches!(err, TokenizerError::UnknownFormat { .. }));
    assert!(err.to_string().contains(".gguf") && err.to_string().contains("tokenizer.json"));

    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"not a gguf file at all").unwrap();
    assert!(matches!(load(&fake), Err(TokenizerError::Gguf { .. })));
    let missing = dir.path().join("missing.json");
    assert!(matches!(load(&missing), Err(TokenizerError::Io { .. })));
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"{\"not\": \"a tokenizer\"}").unwrap();
    assert!(matches!(load(&garbage), Err(TokenizerError::HfLoad { .. })));
}

/// A tiny SPM vocabulary without byte tokens.
fn tiny_spm(dir: &Path) -> std::path::PathBuf {
    let tokens = ["<unk>", "<s>", "</s>", "▁", "H", "e", "l", "o", "▁Hello"];
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("llama".into()))
        .unwrap();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(
            tokens.iter().map(|s| s.to_string()).collect(),
        )),
    )
    .unwrap();
    w.add_metadata(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32((0..tokens.len()).map(|i| i as f32).collect())),
    )
    .unwrap();
    let mut types = vec![1i32; tokens.len()];
    types[0] = 2;
    types[1] = 3;
    types[2] = 3;
    w.add_metadata("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .unwrap();
    let path = dir.join("spm.gguf");
    w.write_file(&path).unwrap();
    path
}

#[test]
fn text_the_vocabulary_cannot_spell_is_an_error_naming_the_characters() {
    let dir = tempfile::tempdir().unwrap();
    // SPM without <0xXX> tokens: llama.cpp aborts on such text.
    let spm = GgufTokenizer::open(tiny_spm(dir.path())).unwrap();
    assert_eq!(spm.encode("Hello", true, false).unwrap()[0], 1);
    let err = spm.encode("Hello 🦀 world", true, false).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, TokenizerError::Unrepresentable { chars, .. } if chars.contains('🦀') && chars.contains('w') && !chars.contains('H')),
        "{msg}"
    );
    assert!(msg.contains("U+1F980") && msg.contains("abort"), "{msg}");
    // BPE without the character's bytes: llama.cpp drops them silently.
    let bpe = GgufTokenizer::open(tiny_bpe(dir.path(), "v.gguf", &[])).unwrap();
    let err = bpe.encode("abc d🦀", false, false).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, TokenizerError::Unrepresentable { chars, .. } if chars == "d🦀"),
        "{msg}"
    );
    assert!(
        msg.contains("drop them silently") && msg.contains("2 characters"),
        "{msg}"
    );
    assert_eq!(bpe.encode("abc a", false, false).unwrap(), [6, 5]);
}

#[test]
fn token_texts_llama_cpp_cannot_tell_apart_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let strings =
        |v: &[&str]| Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()));
    for (tokens, ids) in [
        (
            &["a", "b", "c", "Ġ", "ab", "b", "abc"][..],
            "tokens 1 and 5",
        ),
        (
            &["a", "b", "c", "Ġ", "ab", "a\0z", "abc"][..],
            "tokens 0 and 5",
        ),
    ] {
        let path = tiny_bpe(
            dir.path(),
            "dup.gguf",
            &[("tokenizer.ggml.tokens", strings(tokens))],
        );
        let err = GgufTokenizer::open(&path).unwrap_err().to_string();
        assert!(err.contains(ids) && err.contains("aborts"), "{err}");
    }
}
