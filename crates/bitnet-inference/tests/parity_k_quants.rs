//! K-quant models against the real llama.cpp: bit-identical logits in one batch and token by
//! token.

pub mod common;

use bitnet_cpp::BackendChoice;
use bitnet_gguf::{GgmlType, GgufFile, GgufWriter};
use bitnet_minimodel::{Arch, Spec};
use common::{assert_bit_identical, compare, tiny, token_by_token, LONG_PROMPT};

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

/// SmolLM2 (real weights, 30 layers) with its `ffn_down` matrices re-encoded as a k-quant —
/// the only ones whose rows (1536) k-quant blocks can tile; llama-quantize's Q4_K_M uses q4_K
/// and q6_K there — is bit-identical to llama.cpp at every position of the long prompt and
/// token by token.
#[test]
fn smollm2_with_k_quant_ffn_down_matches_llama_cpp() {
    let src = GgufFile::open(bitnet_fixtures::smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let mut w = GgufWriter::new();
        for (k, v) in src.metadata() {
            if k != "general.alignment" {
                w.add_metadata(k.clone(), v.clone()).unwrap();
            }
        }
        for t in src.tensors() {
            let bytes = src.tensor_data(t);
            if t.name.ends_with("ffn_down.weight") {
                let mut values = vec![0f32; t.n_elements() as usize];
                bitnet_quant::decode(t.ty, bytes, &mut values).unwrap();
                let encoded = bitnet_quant::encode(ty, &values, t.dims[0] as usize).unwrap();
                w.add_tensor(t.name.clone(), &t.dims, ty, encoded).unwrap();
            } else {
                w.add_tensor(t.name.clone(), &t.dims, t.ty, bytes.to_vec())
                    .unwrap();
            }
        }
        let path = dir.path().join(format!("smollm2-ffn_down-{ty}.gguf"));
        w.write_file(&path).unwrap();
        let c = compare(&path, BackendChoice::Llama, LONG_PROMPT);
        assert_eq!(c.max_abs, 0.0, "{ty}: cosine {}", c.min_cos);
        let (max_abs, cos) =
            token_by_token(&path, BackendChoice::Llama, "The capital of France is");
        assert_eq!(max_abs, 0.0, "{ty} token by token: cosine {cos}");
    }
}
