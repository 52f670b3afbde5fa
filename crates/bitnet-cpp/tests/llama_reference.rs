//! The upstream llama.cpp reference (`cpp/llama-ref`), for real: tokenization against the
//! HF-generated vectors, logits of tiny and real models, chat templates.

mod common;

use bitnet_cpp::protocol::{ChatMessage, FactSource};
use bitnet_cpp::{Backend, BackendChoice, Session, SessionOptions};
use bitnet_gguf::GgmlType;
use bitnet_minimodel::Arch;
use common::*;

fn vocab_session(name: &str) -> Session {
    let opts = SessionOptions {
        vocab_only: true,
        ..SessionOptions::default()
    };
    Session::open(&bitnet_fixtures::vocab(name), BackendChoice::Llama, &opts).unwrap()
}

#[test]
fn tokenization_matches_the_test_vectors() {
    for name in ["llama-spm", "llama-bpe"] {
        let mut s = vocab_session(name);
        assert_eq!(s.backend(), Backend::Llama);
        let vectors = bitnet_fixtures::test_vectors(name);
        assert!(vectors.len() >= 46);
        for (text, expected) in &vectors {
            let got = s.tokenize(text, false, false).unwrap();
            let got: Vec<u32> = got.iter().map(|&t| t as u32).collect();
            assert_eq!(&got, expected, "{name}: {text:?}");
        }
    }
}

#[test]
fn add_special_follows_the_reported_bos_default() {
    for name in ["llama-spm", "llama-bpe", "gpt-2"] {
        let mut s = vocab_session(name);
        let v = s.vocab_info().unwrap();
        let with = s.tokenize("Hello world", true, false).unwrap();
        let without = s.tokenize("Hello world", false, false).unwrap();
        if v.add_bos {
            assert_eq!(with[0], v.bos, "{name}");
            assert_eq!(&with[1..], &without[..], "{name}");
        } else {
            assert_eq!(with, without, "{name}");
        }
    }
    // llama-bpe has no add_bos key, yet llama.cpp adds BOS: the default is derived.
    let v = vocab_session("llama-bpe").vocab_info().unwrap();
    assert!(v.add_bos);
    assert_eq!(v.vocab_type, "bpe");
    let v = vocab_session("llama-spm").vocab_info().unwrap();
    assert_eq!((v.bos, v.eos, v.vocab_type.as_str()), (1, 2, "spm"));
}

#[test]
fn special_tokens_parse_only_when_asked() {
    let mut s = vocab_session("llama-bpe");
    let parsed = s.tokenize("<|begin_of_text|>Hi", false, true).unwrap();
    assert_eq!(parsed[0], 128000);
    let plain = s.tokenize("<|begin_of_text|>Hi", false, false).unwrap();
    assert!(!plain.contains(&128000));
    assert_eq!(
        s.token_to_piece(128000, true).unwrap(),
        b"<|begin_of_text|>"
    );
    assert_eq!(s.token_to_piece(128000, false).unwrap(), b"");
}

#[test]
fn tiny_models_batch_equals_incremental_and_sessions_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let models = [
        tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm"),
        tiny(dir.path(), Arch::Bitnet, GgmlType::F32, "llama-bpe"),
        tiny(dir.path(), Arch::Bitnet, GgmlType::TQ2_0, "llama-bpe"),
    ];
    // f32 weights: the pure floating-point noise floor. TQ2_0: activations are quantized to
    // Q8_K per row, and a last-bit difference can flip one int8 rounding (measured 1.3e-4).
    for (model, floor) in models.iter().zip([1e-4, 1e-4, 5e-4]) {
        let mut s = open(model, BackendChoice::Auto);
        assert_eq!(s.backend(), Backend::Llama);
        let tokens = s
            .tokenize("The quick brown fox jumps over the lazy dog", true, false)
            .unwrap();
        assert!(tokens.len() > 8);
        let (worst, _) = batch_vs_incremental(&mut s, &tokens);
        assert!(
            worst <= floor,
            "{}: batch vs token-by-token differ by {worst}",
            model.display()
        );
        let first = s.eval(&tokens).unwrap();
        drop(s);
        let mut again = open(model, BackendChoice::Llama);
        assert_eq!(
            again.eval(&tokens).unwrap(),
            first,
            "{}: two sessions differ",
            model.display()
        );
    }
}

#[test]
fn smollm2_logits_and_chat_template() {
    let model = bitnet_fixtures::smollm2();
    let mut s = open(&model, BackendChoice::Auto);
    let info = s.build_info().unwrap();
    assert_eq!(info.backend, "llama");
    assert!(info.library.contains("0.1.161"));
    assert_eq!(s.n_vocab(), 49152);
    let tokens = s.tokenize("The capital of France is", true, false).unwrap();
    assert_eq!(tokens.len(), 5, "SmolLM2's vocabulary adds no BOS");
    // Measured: this pin decodes one token at a time with other attention kernels than a
    // batch (weights × V through `ggml_vec_dot_f32` instead of tinyBLAS), so its two paths
    // agree bit for bit only while the sums coincide (the first four positions here) and then
    // drift (max |Δ| 0.7, cosine ≥ 0.998): each layer's Q8_1 activation rounding amplifies the
    // last-bit differences. bitnet-inference reproduces both paths exactly.
    let batch = s.eval(&tokens).unwrap();
    let first = s.eval(&tokens[..1]).unwrap();
    assert_eq!(first.row(0), batch.row(0));
    for (i, &t) in tokens.iter().enumerate().skip(1) {
        let row = s.decode_next(t).unwrap();
        if i < 4 {
            assert_eq!(&row[..], batch.row(i), "position {i}");
        }
        assert!(cosine(&row, batch.row(i)) > 0.998, "position {i}");
        assert_eq!(
            bitnet_cpp::protocol::argmax(&row),
            bitnet_cpp::protocol::argmax(batch.row(i))
        );
    }
    // Greedy continuation starts with " Paris".
    let logits = s.eval(&tokens).unwrap();
    let next = bitnet_cpp::protocol::argmax(logits.row(tokens.len() - 1));
    assert_eq!(
        String::from_utf8(s.token_to_piece(next, false).unwrap()).unwrap(),
        " Paris"
    );

    let chat = [
        ChatMessage {
            role: "system".into(),
            content: "You are brief.".into(),
        },
        ChatMessage {
            role: "user".into(),
            content: "Hi!".into(),
        },
    ];
    let text = s.apply_chat_template(&chat, true, None).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn two_sessions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    let mut a = open(&model, BackendChoice::Llama);
    let mut b = open(&model, BackendChoice::Llama);
    assert_ne!(a.pid(), b.pid());
    let t = a.tokenize("two at once", true, false).unwrap();
    assert_eq!(a.eval(&t).unwrap(), b.eval(&t).unwrap());
}

/// llama.cpp's view of SmolLM2: getters, metadata and its graph (SwiGLU, the tied head).
#[test]
fn model_facts_of_smollm2_come_from_getters_metadata_and_the_graph() {
    let mut s = open(&bitnet_fixtures::smollm2(), BackendChoice::Llama);
    let f = s.model_facts().unwrap();
    assert_eq!(f.architecture.value.as_deref(), Some("llama"));
    assert_eq!(f.architecture.source, FactSource::Metadata);
    assert_eq!(
        (f.n_layer.value, f.n_layer.source),
        (Some(30), FactSource::Api)
    );
    assert_eq!(f.n_embd.value, Some(576));
    assert_eq!((f.n_head.value, f.n_head_kv.value), (Some(9), Some(3)));
    assert_eq!(f.head_dim.value, Some(64));
    assert_eq!(f.n_ff.value, Some(1536));
    assert_eq!(f.n_vocab.value, Some(49152));
    assert_eq!(f.rope_type.value.as_deref(), Some("norm"));
    assert_eq!(f.rope_freq_base.source, FactSource::Graph);
    assert_eq!(f.rope_freq_base.value, Some(100_000.0));
    assert_eq!(f.ffn_activation.value.as_deref(), Some("silu"));
    assert_eq!(f.output_head.value.as_deref(), Some("token_embd.weight"));
}

/// Capturing streams the last node of each wanted name in graph order — after RoPE for
/// `Qcur`, the scaled product for upstream bitnet's `ffn_up_s` — and changes no logit.
#[test]
fn capture_streams_final_nodes_in_graph_order_and_leaves_logits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Bitnet, GgmlType::TQ2_0, "llama-bpe");
    let mut s = open(&model, BackendChoice::Llama);
    let tokens = s.tokenize("The quick brown fox", true, false).unwrap();
    let plain = s.eval(&tokens).unwrap();
    let ops: Vec<String> = ["Qcur", "ffn_up_s", "kq_soft_max", "l_out", "result_norm"]
        .map(String::from)
        .to_vec();
    let mut stream = s.eval_capture(&tokens, &ops).unwrap();
    let mut seen = Vec::new();
    while let Some((frame, values)) = stream.next_tensor().unwrap() {
        assert_eq!(values.len() as u64, frame.n_elements());
        assert_eq!(frame.dtype, "f32");
        seen.push((frame.name, frame.op));
    }
    assert_eq!(
        stream.finish().unwrap(),
        plain,
        "capturing changed the logits"
    );
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Qcur-0",
            "kq_soft_max-0",
            "ffn_up_s-0",
            "l_out-0",
            "Qcur-1",
            "kq_soft_max-1",
            "ffn_up_s-1",
            "l_out-1",
            "result_norm"
        ]
    );
    assert_eq!(
        seen[0].1, "ROPE",
        "the queries after RoPE, not the projection"
    );
    // The session is as usable as before.
    assert_eq!(s.eval(&tokens).unwrap(), plain);
}
