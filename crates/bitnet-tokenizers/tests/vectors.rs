//! llama.cpp's HF-generated tokenizer test vectors (`ggml-vocab-*.gguf.inp/.out`, made with
//! add_special = false, parse_special = false) against the GGUF-embedded tokenizers.

use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

use bitnet_fixtures::SPM_BPE_VOCABS_WITH_VECTORS as VOCABS;

/// Encode every vector of `name`; a list of the failures (empty when all pass).
fn failures(name: &str) -> (usize, Vec<String>) {
    let tok = GgufTokenizer::open(bitnet_fixtures::vocab(name))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let vectors = bitnet_fixtures::test_vectors(name);
    let mut bad = Vec::new();
    for (i, (text, expected)) in vectors.iter().enumerate() {
        let got = tok.encode(text, false, false).expect("encode");
        if &got != expected {
            bad.push(format!(
                "{name} #{i} {text:?}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    (vectors.len(), bad)
}

macro_rules! vocab_test {
    ($fn:ident, $name:literal, $count:literal) => {
        #[test]
        fn $fn() {
            let (n, bad) = failures($name);
            assert_eq!(n, $count, "number of vectors of {}", $name);
            assert!(
                bad.is_empty(),
                "{} of {n} vectors differ:\n{}",
                bad.len(),
                bad.join("\n")
            );
        }
    };
}

vocab_test!(llama_spm, "llama-spm", 46);
vocab_test!(phi_3, "phi-3", 46);
vocab_test!(gpt_2, "gpt-2", 46);
vocab_test!(llama_bpe, "llama-bpe", 46);
vocab_test!(qwen2, "qwen2", 46);
vocab_test!(qwen35, "qwen35", 50);
vocab_test!(deepseek_llm, "deepseek-llm", 46);
vocab_test!(deepseek_coder, "deepseek-coder", 46);
vocab_test!(falcon, "falcon", 46);
vocab_test!(mpt, "mpt", 46);
vocab_test!(starcoder, "starcoder", 46);
vocab_test!(refact, "refact", 46);
vocab_test!(command_r, "command-r", 46);

#[test]
fn the_list_covers_every_spm_and_bpe_vocabulary_with_vectors() {
    // bert-bge (WPM) and gemma-4 (SentencePiece-style BPE) are out of scope.
    let mut expected: Vec<&str> = bitnet_fixtures::VOCABS_WITH_VECTORS
        .iter()
        .copied()
        .filter(|v| !matches!(*v, "bert-bge" | "gemma-4"))
        .collect();
    let mut ours = VOCABS.to_vec();
    expected.sort_unstable();
    ours.sort_unstable();
    assert_eq!(ours, expected);
}
