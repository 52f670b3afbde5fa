//! The engine against the C++ references, at every position (real llama.cpp / bitnet.cpp), in
//! the exact configuration (F32 K, no flash attention; V F32 for llama.cpp, F16 for
//! bitnet.cpp). The other configurations are in `parity_kv_flash.rs`.

pub mod common;

use bitnet_cpp::BackendChoice;
use bitnet_gguf::GgmlType;
use bitnet_inference::Model;
use bitnet_minimodel::{Arch, Spec};
use bitnet_quant::VectorWidth;
use common::{
    assert_bit_identical, compare, cosine, exact, session, tiny, token_by_token, LONG_PROMPT,
};

#[test]
fn tiny_llama_f32_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    assert_bit_identical(&path, BackendChoice::Llama, "f32");
}

/// The issue asks for ≤ 1e-3; all three are bit-identical in a batch and token by token (F32
/// and F16 products in llama.cpp's tinyBLAS and `vec_dot` orders, ternary ones through its
/// Q8_K kernels).
#[test]
fn tiny_bitnet_models_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for qtype in [GgmlType::F32, GgmlType::TQ2_0, GgmlType::TQ1_0] {
        let path = tiny(dir.path(), Arch::Bitnet, qtype, "llama-bpe");
        assert_bit_identical(&path, BackendChoice::Llama, &qtype.to_string());
    }
}

/// The issue asks for ≤ 1e-3; all three are bit-identical, in a batch and token by token. For
/// Q4_0 that takes llama.cpp's repacked order: on AVX2 it moves Q4_0 weights into interleaved
/// 8×8 blocks (`GGML_CPU_REPACK`) and sums each row's blocks in one accumulator.
#[test]
fn tiny_llama_quantized_models_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for qtype in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
        let path = tiny(dir.path(), Arch::Llama, qtype, "llama-spm");
        assert_bit_identical(&path, BackendChoice::Llama, &qtype.to_string());
    }
}

/// F16 weights and an F16 output head over 32k tokens: bit-identical in a batch and token by
/// token, because the engine sums F16 products in llama.cpp's orders (tinyBLAS with
/// F16-rounded activations for a batch, `vec_dot_f16` for one token).
#[test]
fn tiny_llama_f16_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny(dir.path(), Arch::Llama, GgmlType::F16, "llama-spm");
    assert_bit_identical(&path, BackendChoice::Llama, "f16");
}

/// bitnet-b1.58 with I2_S against Microsoft's bitnet.cpp (8 layers, 37 positions), in one
/// batch and token by token. The issue asks for cosine ≥ 0.9999; the engine reproduces
/// bitnet.cpp's arithmetic (its per-row int8 activations with the fused rounding, the F16 V
/// cache, the F16 attention weights of its one-token path, its AVX-512 kernels' summation
/// orders, the F16 output head's tinyBLAS and `vec_dot` orders), so on the configuration this
/// was built against — an AVX-512 host, where `-march=native` gives bitnet.cpp 16-lane
/// kernels — the logits are bit-identical. Elsewhere the cosine bound still holds.
#[test]
fn tiny_bitnet_b158_i2s_matches_bitnet_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        layers: Some(8),
        ..Spec::new(Arch::BitnetB158, GgmlType::I2_S)
    };
    let path =
        bitnet_minimodel::write_tiny(dir.path(), &spec, &bitnet_fixtures::vocab("llama-bpe"))
            .unwrap();
    let exact = VectorWidth::host() == VectorWidth::Avx512;
    let c = compare(&path, BackendChoice::Auto, LONG_PROMPT_37);
    assert!(c.min_cos >= 0.9999, "min cosine {}", c.min_cos);
    assert_eq!(c.top1, c.n);
    if exact {
        assert_eq!(c.max_abs, 0.0, "batch logits are not bit-identical");
    }

    // Token by token: bitnet.cpp's one-token kernels (gemv, vec_dot) against ours.
    let (max_abs, cos) = token_by_token(&path, BackendChoice::Auto, LONG_PROMPT_37);
    assert!(cos >= 0.9999, "token by token: min cosine {cos}");
    if exact {
        assert_eq!(max_abs, 0.0, "token by token: not bit-identical");
    }
}

/// A prompt of 37 tokens with the llama-bpe vocabulary: long enough to cross the 32-cell
/// padding of the KV view.
const LONG_PROMPT_37: &str =
    "The quick brown fox jumps over the lazy dog, and then it runs far away. Then it \
comes back again to the same place where it started, tired and hungry and happy.";

/// The same ternary weights stored as I2_S (one f32 scale per tensor) and as TQ2_0 (an f16
/// scale per 256 weights) decode to identical values. Given the same int8 activation codes,
/// the two kernels agree up to the scale's rounding (`bitnet-quant`'s
/// `i2_s_and_tq2_0_agree_up_to_the_scale_rounding`); in a model each type brings its own
/// activation quantization (per-row int8 vs Q8_K blocks of 256, as bitnet.cpp and llama.cpp
/// do), so the logits agree to cosine ≥ 0.999 rather than bit for bit.
#[test]
fn i2s_and_tq2_0_hold_the_same_ternary_weights() {
    let dir = tempfile::tempdir().unwrap();
    let i2s = Model::load(tiny(
        dir.path(),
        Arch::BitnetB158,
        GgmlType::I2_S,
        "llama-spm",
    ))
    .unwrap();
    let tq2 = Model::load(tiny(
        dir.path(),
        Arch::BitnetB158,
        GgmlType::TQ2_0,
        "llama-spm",
    ))
    .unwrap();
    for name in ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"] {
        let decode = |m: &Model| {
            let (info, bytes) = m.file().tensor_data_by_name(name).unwrap();
            let mut out = vec![0f32; info.n_elements() as usize];
            bitnet_quant::decode(info.ty, bytes, &mut out).unwrap();
            out
        };
        assert_eq!(decode(&i2s), decode(&tq2), "{name}");
    }
    let tokens: Vec<u32> = vec![1, 450, 4996, 17354, 1701, 29916, 432, 17204];
    let a = i2s.eval_logits_all_positions(&tokens).unwrap();
    let b = tq2.eval_logits_all_positions(&tokens).unwrap();
    let v = i2s.config().n_vocab;
    for i in 0..tokens.len() {
        let cos = cosine(&a[i * v..(i + 1) * v], &b[i * v..(i + 1) * v]);
        assert!(cos >= 0.999, "position {i}: cosine {cos}");
    }
}

/// SmolLM2 (real weights: 30 layers, Q4_1 with Q8_1 activations, a Q8_0 output head): the
/// logits of all 64 positions are bit-identical to llama.cpp's. That takes every f32 step in
/// ggml's order (attention dots, softmax and SiLU with ggml's vector `exp`, RoPE's fused
/// multiply-adds): a last-bit difference anywhere flips an int8 activation rounding a layer
/// later and grows over 30 layers to cosine ~0.995.
#[test]
fn smollm2_matches_llama_cpp_at_every_position() {
    let model = bitnet_fixtures::smollm2();
    let run = exact(&model);
    let mut cpp = session(&model, BackendChoice::Llama, &run);
    let mut tokens = cpp.tokenize(LONG_PROMPT, true, false).unwrap();
    assert!(tokens.len() >= 64, "{} tokens", tokens.len());
    tokens.truncate(64);
    let expected = cpp.eval(&tokens).unwrap();
    let m = Model::load(&model).unwrap();
    let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    let got = m
        .forward(&mut m.new_state_with(&run).unwrap(), &ids)
        .unwrap();
    let v = m.config().n_vocab;
    for i in 0..tokens.len() {
        let (a, b) = (&got[i * v..(i + 1) * v], expected.row(i));
        assert!(a == b, "position {i}: cosine {}", cosine(a, b));
    }
}

/// The 40-token greedy continuation of "The capital of France is" equals llama.cpp's token for
/// token. llama.cpp decodes one token at a time with other attention kernels than a batch
/// (`ggml_vec_dot_f32` instead of tinyBLAS for weights × V); the engine follows it, so its
/// token-by-token logits are bit-identical too.
#[test]
fn smollm2_greedy_continuation_equals_llama_cpp() {
    let model = bitnet_fixtures::smollm2();
    let run = exact(&model);
    let mut cpp = session(&model, BackendChoice::Llama, &run);
    let prompt = cpp
        .tokenize("The capital of France is", true, false)
        .unwrap();
    let logits = cpp.eval(&prompt).unwrap();
    let mut next = bitnet_cpp::protocol::argmax(logits.row(prompt.len() - 1));
    let mut theirs = Vec::new();
    for _ in 0..40 {
        theirs.push(next as u32);
        next = bitnet_cpp::protocol::argmax(&cpp.decode_next(next).unwrap());
    }
    let m = Model::load(&model).unwrap();
    let ids: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
    let ours = m
        .generate_greedy_with(&run, &ids, 40, |_| false, |_| {})
        .unwrap();
    let text: Vec<u8> = ours
        .iter()
        .flat_map(|&t| cpp.token_to_piece(t as i32, false).unwrap())
        .collect();
    eprintln!("continuation: {:?}", String::from_utf8_lossy(&text));
    assert!(String::from_utf8_lossy(&text).starts_with(" Paris."));
    assert_eq!(ours, theirs);
}
