//! Q5_0, Q5_1 and IQ4_NL models against the real llama.cpp, in a batch and token by token.
//!
//! llama.cpp sums these types in several orders, and the engine has to be in the right one
//! for every matrix: `vec_dot` for one token; for a batch, tinyBLAS (`llamafile_sgemm`),
//! which for Q5_0 has `vec_dot`'s operations but for IQ4_NL one accumulator instead of two;
//! `vec_dot` again for a Q5_1 batch (tinyBLAS has no Q5_1 kernel); and, for IQ4_NL matrices
//! whose row count is a multiple of 8, the repacked 8×8 order for every token count.

pub mod common;

use bitnet_cpp::BackendChoice;
use bitnet_gguf::GgmlType;
use bitnet_minimodel::{Arch, Spec};
use common::{assert_bit_identical, tiny};

const TYPES: [GgmlType; 3] = [GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL];

/// The default tiny `llama` (every matrix has a multiple of 8 rows, the output head 32000),
/// so llama.cpp repacks every IQ4_NL matrix but the token embedding (f16 here anyway).
#[test]
fn tiny_llama_models_of_each_type_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for qtype in TYPES {
        let path = tiny(dir.path(), Arch::Llama, qtype, "llama-spm");
        assert_bit_identical(&path, BackendChoice::Llama, &qtype.to_string());
    }
}

/// Matrices whose row count is not a multiple of 8, which llama.cpp does not repack: the
/// output head over GPT-2's 50257 tokens, and 12-row K and V projections (hidden size 96,
/// eight heads of 12, one KV head). For IQ4_NL they take `vec_dot` for one token and
/// tinyBLAS for a batch; the other matrices (96 and 192 rows) stay repacked.
#[test]
fn matrices_llama_cpp_does_not_repack_match_too() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = bitnet_fixtures::vocab("gpt-2");
    for qtype in TYPES {
        let spec = Spec {
            dim: Some(96),
            heads: Some(8),
            kv_heads: Some(1),
            ..Spec::new(Arch::Llama, qtype)
        };
        let path = bitnet_minimodel::write_tiny(dir.path(), &spec, &vocab).unwrap();
        let m = bitnet_inference::Model::load(&path).unwrap();
        let rows = |name: &str| m.file().tensor(name).unwrap().dims[1];
        assert_eq!(
            rows("output.weight") % 8,
            1,
            "the output head must not be repacked"
        );
        assert_eq!(rows("blk.0.attn_k.weight"), 12);
        assert_bit_identical(&path, BackendChoice::Llama, &format!("{qtype}, odd rows"));
    }
}
