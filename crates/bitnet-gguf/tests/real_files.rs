//! The reader on real files from the package registries (`cargo run -p xtask -- fixtures`).

use bitnet_gguf::{GgmlType, GgufFile};

#[test]
fn every_llama_cpp_vocabulary_opens_and_has_consistent_tokenizer_arrays() {
    for name in bitnet_fixtures::all_vocab_names() {
        let path = bitnet_fixtures::vocab(name);
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            f.tensors().is_empty(),
            "{name}: vocabulary files carry no tensors"
        );
        let t = f.tokenizer().unwrap();
        let n = t
            .tokens
            .unwrap_or_else(|| panic!("{name}: no tokens"))
            .len();
        assert!(n > 1000, "{name}: {n} tokens");
        if let Some(scores) = t.scores {
            assert_eq!(scores.len(), n, "{name}: scores");
        }
        if let Some(types) = t.token_type {
            assert_eq!(types.len(), n, "{name}: token types");
        }
        for id in [t.bos_id, t.eos_id, t.unk_id].into_iter().flatten() {
            assert!((id as usize) < n, "{name}: special id {id} out of range");
        }
        assert!(f.architecture().is_ok(), "{name}: no general.architecture");
    }
}

#[test]
fn llama_spm_vocabulary_facts() {
    let f = GgufFile::open(bitnet_fixtures::vocab("llama-spm")).unwrap();
    let t = f.tokenizer().unwrap();
    assert_eq!(t.model, Some("llama"));
    let tokens = t.tokens.unwrap();
    assert_eq!(tokens.len(), 32000);
    assert_eq!(t.bos_id, Some(1));
    assert_eq!(t.eos_id, Some(2));
    assert_eq!(tokens[1], "<s>");
    assert_eq!(tokens[2], "</s>");
    assert_eq!(tokens[3], "<0x00>");
}

#[test]
fn llama_bpe_vocabulary_facts() {
    let f = GgufFile::open(bitnet_fixtures::vocab("llama-bpe")).unwrap();
    let t = f.tokenizer().unwrap();
    assert_eq!(t.model, Some("gpt2"));
    assert_eq!(t.pre, Some("llama-bpe"));
    let tokens = t.tokens.unwrap();
    assert_eq!(tokens.len(), 128256);
    assert_eq!(tokens[t.bos_id.unwrap() as usize], "<|begin_of_text|>");
    assert_eq!(t.merges.unwrap().len(), 280147);
    // The llama-bpe vocabulary stores no add_bos key: llama.cpp's default applies.
    assert_eq!(t.add_bos, None);
}

#[test]
fn smollm2_model_facts() {
    let path = bitnet_fixtures::smollm2();
    let f = GgufFile::open(&path).unwrap();
    let h = f.hparams().unwrap();
    assert_eq!(h.architecture, "llama");
    assert_eq!(h.block_count, Some(30));
    assert_eq!(h.embedding_length, Some(576));
    assert_eq!(h.head_count, Some(9));
    assert_eq!(h.head_count_kv, Some(3));
    let t = f.tokenizer().unwrap();
    assert_eq!(t.model, Some("gpt2"));
    assert_eq!(t.pre, Some("smollm"));
    assert_eq!(t.tokens.unwrap().len(), 49152);
    assert!(t.chat_template.unwrap().contains("<|im_start|>"));
    assert!(f.tensors().iter().any(|t| t.ty == GgmlType::Q4_1));
    // Every tensor's bytes are inside the file and addressable without copying.
    let total: u64 = f
        .tensors()
        .iter()
        .map(|t| f.tensor_data(t).len() as u64)
        .sum();
    assert!(total > 60_000_000 && total < f.file_size());
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.dims, vec![576, 49152]);
}
