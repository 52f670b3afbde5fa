//! The engine against the C++ references (real llama.cpp / bitnet.cpp) in every KV cache type ×
//! flash-attention configuration they run: one `RunConfig` value configures both sides, the
//! reference's resolution of it must equal the engine's (`common::session`), and the logits must
//! be bit-identical in a batch and token by token.

pub mod common;

use std::path::Path;

use bitnet_cpp::{BackendChoice, CppError, Session, SessionOptions};
use bitnet_gguf::GgmlType;
use bitnet_inference::{CacheType, FlashAttn, Model, RunConfig};
use bitnet_minimodel::{Arch, Spec};
use common::*;

/// A configuration on one thread: the thread count changes no arithmetic outside llama.cpp's
/// split-KV path (tested with several), and one thread keeps the reference from spinning on a
/// busy machine.
fn run(k: CacheType, v: CacheType, fa: FlashAttn) -> RunConfig {
    RunConfig {
        cache_type_k: k,
        cache_type_v: v,
        flash_attn: fa,
        threads: 1,
        ..RunConfig::default()
    }
}

/// `n` token ids spread over the vocabulary (no text needed to test attention).
fn ids(n: usize) -> Vec<i32> {
    (0..n as i32).map(|i| 100 + (i * 37) % 20_000).collect()
}

/// One reference session running `r`: `tokens` in one batch, then again one token at a time;
/// both bit-identical to the engine.
fn assert_both_paths(path: &Path, choice: BackendChoice, r: &RunConfig, tokens: &[i32]) {
    let mut cpp = session(path, choice, r);
    let c = compare_ids_with(path, &mut cpp, tokens, r);
    assert_eq!(c.max_abs, 0.0, "{r:?} batch: cosine {}", c.min_cos);
    cpp.reset().unwrap();
    let (max_abs, cos) = token_ids_one_by_one(path, &mut cpp, tokens, r);
    assert_eq!(max_abs, 0.0, "{r:?} token by token: cosine {cos}");
}

/// Every K type × V type × flash attention that llama.cpp runs, in a batch and token by
/// token: the float types on a tiny llama (heads of 16: `vec_dot` tails everywhere), and every
/// combination with a Q8_0 cache on a tiny bitnet (heads of 64, so llama.cpp also
/// Hadamard-rotates Q/K and V for the quantized caches).
#[test]
fn tiny_models_match_llama_cpp_in_every_cache_and_flash_attention_configuration() {
    use CacheType::*;
    let dir = tempfile::tempdir().unwrap();
    let tokens = ids(40);
    let llama = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    for k in [F32, F16, Bf16] {
        for v in [F32, F16, Bf16] {
            for fa in [FlashAttn::Off, FlashAttn::On] {
                assert_both_paths(&llama, BackendChoice::Llama, &run(k, v, fa), &tokens);
            }
        }
    }
    let bitnet = tiny(dir.path(), Arch::Bitnet, GgmlType::TQ2_0, "llama-bpe");
    let mut q8 = vec![(F16, F16, FlashAttn::Off), (F16, F16, FlashAttn::On)];
    for t in [F32, F16, Bf16, Q8_0] {
        q8.push((Q8_0, t, FlashAttn::On));
        if t != Q8_0 {
            q8.push((Q8_0, t, FlashAttn::Off));
            q8.push((t, Q8_0, FlashAttn::On));
        }
    }
    for (k, v, fa) in q8 {
        assert_both_paths(&bitnet, BackendChoice::Llama, &run(k, v, fa), &tokens);
    }
}

/// llama.cpp's other two flash-attention paths: a micro-batch of ≥ 64 queries is tiled (f32
/// queries, tiles of 64 cells), and one token over a KV view of ≥ 512 cells (more than 256
/// positions cached) is split into one chunk of cells per thread — so the thread count is part
/// of the arithmetic; 1, 2 and 3 threads give three different chunkings, each reproduced.
#[test]
fn tiled_and_split_kv_flash_attention_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    let tokens = ids(300);
    let m = Model::load(&path).unwrap();
    for threads in [1, 2, 3] {
        for (k, v) in [
            (CacheType::F16, CacheType::F16),
            (CacheType::F32, CacheType::F32),
        ] {
            let r = RunConfig {
                threads,
                ..run(k, v, FlashAttn::On)
            };
            let mut cpp = session(&path, BackendChoice::Llama, &r);
            // 260 positions in one micro-batch (tiled), then single tokens up to 300 (split).
            let expected = cpp.eval(&tokens[..260]).unwrap();
            let mut state = m.new_state_with(&r).unwrap();
            let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
            let got = m.forward(&mut state, &ids[..260]).unwrap();
            assert!(got == expected.data, "{r:?}: tiled batch differs");
            for (i, &t) in tokens[260..].iter().enumerate() {
                let theirs = cpp.decode_next(t).unwrap();
                let ours = m.forward(&mut state, &[t as u32]).unwrap();
                assert!(
                    ours == theirs,
                    "{r:?}: position {} (split KV) cosine {}",
                    260 + i,
                    cosine(&ours, &theirs)
                );
            }
        }
    }
}

/// The configurations really differ at the reference (so the tests above discriminate): the
/// exact configuration, the F16 cache without flash attention and llama.cpp's defaults give
/// three different sets of logits.
#[test]
fn llama_cpp_configurations_give_different_logits() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    let tokens = ids(40);
    let logits = |r: &RunConfig| {
        session(&path, BackendChoice::Llama, r)
            .eval(&tokens)
            .unwrap()
    };
    let exact = logits(&run(CacheType::F32, CacheType::F32, FlashAttn::Off));
    let f16 = logits(&run(CacheType::F16, CacheType::F16, FlashAttn::Off));
    let defaults = logits(&run(CacheType::F16, CacheType::F16, FlashAttn::Auto));
    assert!(exact != f16 && f16 != defaults && exact != defaults);
}

/// bitnet-b1.58 (Microsoft's I2_S ternary model) against bitnet.cpp: its defaults (F16 K and V
/// caches, no flash attention), its flash attention with F16 caches, and the exact
/// configuration it allows (F32 K, F16 V), in a batch and token by token. Bit-identical on an
/// AVX-512 host (bitnet.cpp's `-march=native` kernels are 16 lanes wide there).
#[test]
fn tiny_bitnet_b158_matches_bitnet_cpp_in_its_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        layers: Some(4),
        ..Spec::new(Arch::BitnetB158, GgmlType::I2_S)
    };
    let path =
        bitnet_minimodel::write_tiny(dir.path(), &spec, &bitnet_fixtures::vocab("llama-bpe"))
            .unwrap();
    let tokens = ids(40);
    for r in [
        RunConfig::default(),
        run(CacheType::F16, CacheType::F16, FlashAttn::On),
        RunConfig::exact(CacheType::F16),
    ] {
        let r = RunConfig { threads: 1, ..r };
        let mut cpp = session(&path, BackendChoice::Auto, &r);
        let c = compare_ids_with(&path, &mut cpp, &tokens, &r);
        cpp.reset().unwrap();
        let (max_abs, cos) = token_ids_one_by_one(&path, &mut cpp, &tokens, &r);
        if bitnet_quant::VectorWidth::host() == bitnet_quant::VectorWidth::Avx512 {
            assert_eq!(c.max_abs, 0.0, "{r:?} batch: cosine {}", c.min_cos);
            assert_eq!(max_abs, 0.0, "{r:?} token by token: cosine {cos}");
        } else {
            assert!(c.min_cos >= 0.9999 && cos >= 0.9999, "{r:?}");
        }
    }
}

/// A combination the reference refuses is refused by the engine too, with the reference's
/// reason: llama.cpp wants flash attention for a quantized V cache and a quantized block that
/// divides the head; bitnet.cpp wants an F16 V cache without flash attention, and its flash
/// attention crashes on an F32 cache.
#[test]
fn refused_configurations_are_refused_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let llama = tiny(dir.path(), Arch::Bitnet, GgmlType::TQ2_0, "llama-bpe");
    let heads_of_16 = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    let b158 = tiny(dir.path(), Arch::BitnetB158, GgmlType::I2_S, "llama-bpe");
    for (path, choice, r, reason) in [
        (
            &heads_of_16,
            BackendChoice::Llama,
            run(CacheType::Q8_0, CacheType::F16, FlashAttn::On),
            "does not divide",
        ),
        (
            &llama,
            BackendChoice::Llama,
            run(CacheType::F16, CacheType::Q8_0, FlashAttn::Off),
            "requires flash_attn",
        ),
        (
            &b158,
            BackendChoice::Auto,
            run(CacheType::F16, CacheType::F32, FlashAttn::Off),
            "requires flash attention",
        ),
        (
            &b158,
            BackendChoice::Auto,
            run(CacheType::F32, CacheType::F16, FlashAttn::On),
            "crashes",
        ),
    ] {
        let engine = Model::load(path).unwrap().new_state_with(&r).unwrap_err();
        assert!(engine.to_string().contains(reason), "{engine}");
        let opts = SessionOptions {
            run: r,
            ..SessionOptions::default()
        };
        match Session::open(path, choice, &opts) {
            Err(CppError::LoadFailed { message, .. }) => {
                assert!(
                    message.contains("flash") || message.contains("V cache"),
                    "{message}"
                )
            }
            Err(e) => panic!("{r:?}: unexpected error {e}"),
            Ok(_) => panic!("{r:?}: the reference accepted a configuration the engine refuses"),
        }
    }
}

/// The greedy continuation of `prompt` by the reference running `r` (`n` tokens).
fn reference_greedy(cpp: &mut Session, prompt: &[i32], n: usize) -> Vec<u32> {
    let logits = cpp.eval(prompt).unwrap();
    let mut next = bitnet_cpp::protocol::argmax(logits.row(prompt.len() - 1));
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next as u32);
        next = bitnet_cpp::protocol::argmax(&cpp.decode_next(next).unwrap());
    }
    out
}

/// SmolLM2 (real weights): the 40-token greedy continuation of "The capital of France is" is
/// the reference's token for token under llama.cpp's defaults (F16 caches, flash attention) and
/// under the exact configuration — and the two configurations continue differently, which is
/// why a report must say which one it compared.
#[test]
fn smollm2_greedy_continuations_equal_llama_cpps_under_defaults_and_exact() {
    let model = bitnet_fixtures::smollm2();
    let m = Model::load(&model).unwrap();
    let mut texts = Vec::new();
    for r in [RunConfig::default(), RunConfig::exact(CacheType::F32)] {
        let mut cpp = session(&model, BackendChoice::Llama, &r);
        let prompt = cpp
            .tokenize("The capital of France is", true, false)
            .unwrap();
        let theirs = reference_greedy(&mut cpp, &prompt, 40);
        let ids: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
        let ours = m
            .generate_greedy_with(&r, &ids, 40, |_| false, |_| {})
            .unwrap();
        let text: Vec<u8> = ours
            .iter()
            .flat_map(|&t| cpp.token_to_piece(t as i32, false).unwrap())
            .collect();
        let text = String::from_utf8_lossy(&text).into_owned();
        eprintln!("{r:?}: {text:?}");
        assert!(text.starts_with(" Paris."), "{text:?}");
        assert_eq!(ours, theirs, "{r:?}");
        texts.push(text);
    }
    assert_ne!(texts[0], texts[1]);
}

/// SmolLM2 under llama.cpp's defaults over a long context: 300 prompt positions in one
/// micro-batch (tiled flash attention) bit-identical at every position, then single tokens at
/// positions 300–323, whose KV view of 512 cells takes the split-KV path over two threads.
#[test]
fn smollm2_long_context_takes_every_flash_attention_path_bit_identically() {
    let model = bitnet_fixtures::smollm2();
    let r = RunConfig {
        threads: 2,
        ..RunConfig::default()
    };
    let mut cpp = session(&model, BackendChoice::Llama, &r);
    let text = [LONG_PROMPT; 6].join(" ");
    let mut tokens = cpp.tokenize(&text, true, false).unwrap();
    assert!(tokens.len() >= 300, "{} tokens", tokens.len());
    tokens.truncate(300);
    let expected = cpp.eval(&tokens).unwrap();
    let m = Model::load(&model).unwrap();
    let mut state = m.new_state_with(&r).unwrap();
    let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    let got = m.forward(&mut state, &ids).unwrap();
    let v = m.config().n_vocab;
    for i in 0..tokens.len() {
        let (a, b) = (&got[i * v..(i + 1) * v], expected.row(i));
        assert!(a == b, "position {i}: cosine {}", cosine(a, b));
    }
    let mut next = bitnet_inference::ops::argmax(&got[(tokens.len() - 1) * v..]);
    for step in 0..24 {
        let theirs = cpp.decode_next(next as i32).unwrap();
        let ours = m.forward(&mut state, &[next]).unwrap();
        assert!(
            ours == theirs,
            "position {}: cosine {}",
            300 + step,
            cosine(&ours, &theirs)
        );
        next = bitnet_inference::ops::argmax(&ours);
    }
}
