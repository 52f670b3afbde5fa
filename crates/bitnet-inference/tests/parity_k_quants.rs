//! K-quant models against the real llama.cpp: bit-identical logits in one batch and token by
//! token.

mod common;

use bitnet_cpp::BackendChoice;
use bitnet_gguf::GgmlType;
use bitnet_minimodel::{Arch, Spec};
use common::{assert_bit_identical, tiny};

/// Every k-quant as the `llama` model's matrices (output head included; the token embedding
/// is f16). llama.cpp runs `ggml_vec_dot_q*_K_q8_K` on them, except Q4_K: its CPU backend
/// repacks those matrices (all of whose row counts are multiples of 8 here), multiplying a
/// single token with `ggml_gemv_q4_K_8x8_q8_K` and the prompt's whole groups of four tokens
/// with `ggml_gemm_q4_K_8x8_q8_K` — the batch below has both, four groups and two leftovers.
#[test]
fn tiny_llama_k_quant_models_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for qtype in [
        GgmlType::Q6_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q3_K,
        GgmlType::Q2_K,
    ] {
        let path = tiny(dir.path(), Arch::Llama, qtype, "llama-spm");
        assert_bit_identical(&path, BackendChoice::Llama, &qtype.to_string());
    }
}

/// Q4_K matrices whose row count is not a multiple of 8 stay plain in llama.cpp (the key and
/// value projections here: one KV head of 4 dimensions), so they take `vec_dot` while the
/// other matrices are repacked.
#[test]
fn q4_k_matrices_llama_cpp_cannot_repack_match_too() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        heads: Some(64),
        kv_heads: Some(1),
        ..Spec::new(Arch::Llama, GgmlType::Q4_K)
    };
    let path =
        bitnet_minimodel::write_tiny(dir.path(), &spec, &bitnet_fixtures::vocab("llama-spm"))
            .unwrap();
    assert_bit_identical(&path, BackendChoice::Llama, "q4_K, 4-row K/V");
}

/// What llama-quantize makes of a BitNet model: ternary TQ1_0 / TQ2_0 layers and the tied
/// output head (the token embedding) in q6_K — looked up by rows for the input, multiplied
/// with Q8_K activations for the logits. A q4_K tied head checks that llama.cpp does not
/// repack the token embedding even where it doubles as the output head (it keeps it in the
/// plain CPU buffer for row lookups).
#[test]
fn tiny_bitnet_with_a_k_quant_tied_head_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for (qtype, embd, vocab) in [
        (GgmlType::TQ1_0, GgmlType::Q6_K, "llama-bpe"),
        (GgmlType::TQ2_0, GgmlType::Q6_K, "llama-bpe"),
        (GgmlType::TQ2_0, GgmlType::Q4_K, "llama-spm"),
    ] {
        let spec = Spec {
            embd_type: Some(embd),
            ..Spec::new(Arch::Bitnet, qtype)
        };
        let path = bitnet_minimodel::write_tiny(dir.path(), &spec, &bitnet_fixtures::vocab(vocab))
            .unwrap();
        assert_bit_identical(
            &path,
            BackendChoice::Llama,
            &format!("{qtype} with a {embd} head"),
        );
    }
}
