//! The Hugging Face backend against the same HF-generated test vectors, and the two switches.

use bitnet_tokenizers::{GgufTokenizer, HfTokenizer, Tokenizer};

fn assert_vectors(tok: &dyn Tokenizer, name: &str) {
    let vectors = bitnet_fixtures::test_vectors(name);
    assert_eq!(vectors.len(), 46);
    let bad: Vec<String> = vectors
        .iter()
        .filter_map(|(text, expected)| {
            let got = tok.encode(text, false, false).unwrap();
            (&got != expected).then(|| format!("{text:?}: expected {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} vectors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn llama3_json() -> std::path::PathBuf {
    bitnet_fixtures::require(bitnet_fixtures::LLAMA3_TOKENIZER_JSON)
}

#[test]
fn llama3_tokenizer_json_passes_the_llama_bpe_vectors() {
    let tok = HfTokenizer::from_file(llama3_json()).unwrap();
    assert_eq!(tok.vocab_size(), 128256);
    assert_vectors(&tok, "llama-bpe");
}

#[test]
fn gpt2_encoder_and_merges_pass_the_gpt2_vectors() {
    let tok = HfTokenizer::from_gpt2_files(
        bitnet_fixtures::require(bitnet_fixtures::GPT2_ENCODER_JSON),
        bitnet_fixtures::require(bitnet_fixtures::GPT2_VOCAB_BPE),
    )
    .unwrap();
    assert_vectors(&tok, "gpt-2");
    let eot = tok.encode("<|endoftext|>", false, true).unwrap();
    assert_eq!(eot, [50256]);
    assert!(tok.is_special(50256));
}

#[test]
fn parse_special_means_the_same_on_both_backends() {
    let hf = HfTokenizer::from_file(llama3_json()).unwrap();
    let gguf = GgufTokenizer::open(bitnet_fixtures::vocab("llama-bpe")).unwrap();
    for text in [
        "<|begin_of_text|>Hello",
        "Hi <|eot_id|> there <|start_header_id|>user<|end_header_id|>\n\nx",
    ] {
        for parse_special in [false, true] {
            assert_eq!(
                hf.encode(text, false, parse_special).unwrap(),
                gguf.encode(text, false, parse_special).unwrap(),
                "{text:?} parse_special={parse_special}"
            );
        }
    }
    let parsed = hf.encode("<|begin_of_text|>Hello", false, true).unwrap();
    assert_eq!(parsed[0], 128000);
    assert!(!hf
        .encode("<|begin_of_text|>Hello", false, false)
        .unwrap()
        .contains(&128000));
    assert_eq!(hf.decode(&parsed, false).unwrap(), "Hello");
    assert_eq!(hf.decode(&parsed, true).unwrap(), "<|begin_of_text|>Hello");
}

#[test]
fn add_bos_runs_the_post_processor() {
    // The shipped Llama-3 tokenizer.json's post-processor adds nothing.
    let plain = HfTokenizer::from_file(llama3_json()).unwrap();
    assert!(!plain.add_bos_default());
    assert_eq!(
        plain.encode("Hello", true, false).unwrap(),
        plain.encode("Hello", false, false).unwrap()
    );
    assert_eq!(plain.bos_id(), Some(128000), "found by its text");

    // Derive the `_1` variant: a TemplateProcessing post-processor that prepends BOS.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(llama3_json()).unwrap()).unwrap();
    json["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}}
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let hf = HfTokenizer::from_file(&path).unwrap();
    assert!(hf.add_bos_default() && !hf.add_eos_default());
    assert_eq!(hf.bos_id(), Some(128000));

    // Same meaning as the GGUF backend's add_bos (llama.cpp's add_special): one BOS.
    let gguf = GgufTokenizer::open(bitnet_fixtures::vocab("llama-bpe")).unwrap();
    for text in ["", "Hello world", "<|begin_of_text|>Hello"] {
        for parse_special in [false, true] {
            assert_eq!(
                hf.encode(text, true, parse_special).unwrap(),
                gguf.encode(text, true, parse_special).unwrap(),
                "{text:?} parse_special={parse_special}"
            );
        }
    }
    assert_eq!(hf.encode("", true, false).unwrap(), [128000]);
}

#[test]
fn the_mislabelled_tokenizer_loads_and_reports_its_own_bos() {
    // Mistral's vocabulary sold as Llama-2: it loads fine; its post-processor adds <s> (id 1).
    let tok = HfTokenizer::from_file(bitnet_fixtures::require(
        bitnet_fixtures::LLAMA2_MISLABELLED_TOKENIZER_JSON,
    ))
    .unwrap();
    assert!(tok.add_bos_default());
    assert_eq!(tok.bos_id(), Some(1));
    let ids = tok.encode("Hello world", true, false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello world");
    assert!(tok.decode(&[tok.vocab_size() as u32], false).is_err());
}
