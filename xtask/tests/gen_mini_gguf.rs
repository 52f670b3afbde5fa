//! `xtask gen-mini-gguf`: determinism, per-architecture metadata and tensors, the vocabulary
//! copied exactly, and clear errors.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bitnet_gguf::{GgmlType, GgufFile, Value};
use predicates::str::contains;

fn gen(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    Command::cargo_bin("xtask")
        .unwrap()
        .arg("gen-mini-gguf")
        .arg("--vocab")
        .arg(bitnet_fixtures::vocab("llama-spm"))
        .args(extra)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    out
}

#[test]
fn same_arguments_give_identical_bytes_and_the_seed_matters() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "bitnet", "bitnet-b1.58"] {
        let a = std::fs::read(gen(dir.path(), "a.gguf", &["--arch", arch])).unwrap();
        let b = std::fs::read(gen(dir.path(), "b.gguf", &["--arch", arch])).unwrap();
        assert!(a == b, "{arch}: two runs differ");
        let c = std::fs::read(gen(dir.path(), "c.gguf", &["--arch", arch, "--seed", "7"])).unwrap();
        assert!(a != c, "{arch}: the seed changed nothing");
    }
}

#[test]
fn llama_model_has_llama_cpp_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = gen(
        dir.path(),
        "llama.gguf",
        &["--arch", "llama", "--layers", "3", "--ffn", "96"],
    );
    let f = GgufFile::open(&path).unwrap();
    let h = f.hparams().unwrap();
    assert_eq!(h.architecture, "llama");
    assert_eq!(
        (
            h.block_count,
            h.embedding_length,
            h.feed_forward_length,
            h.head_count,
            h.head_count_kv
        ),
        (Some(3), Some(64), Some(96), Some(4), Some(2))
    );
    assert_eq!(h.rope_dimension_count, Some(16));
    assert_eq!(h.vocab_size, Some(32000));
    assert_eq!(h.context_length, Some(512));
    let t = |n: &str| f.tensor(n).unwrap_or_else(|| panic!("missing {n}"));
    assert_eq!(t("token_embd.weight").dims, vec![64, 32000]);
    assert_eq!(t("output.weight").dims, vec![64, 32000]);
    assert_eq!(t("blk.2.attn_k.weight").dims, vec![64, 32]);
    assert_eq!(t("blk.2.ffn_down.weight").dims, vec![96, 64]);
    assert_eq!(t("blk.0.attn_norm.weight").ty, GgmlType::F32);
    assert!(f.tensor("blk.0.attn_sub_norm.weight").is_none());
    assert!(f.tensor("blk.3.attn_q.weight").is_none());
    assert_eq!(f.tensors().len(), 3 + 3 * 9);
}

#[test]
fn bitnet_architectures_have_sub_norms_tied_output_and_ternary_weights() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, scales) in [("bitnet", true), ("bitnet-b1.58", false)] {
        let f = GgufFile::open(gen(dir.path(), "b.gguf", &["--arch", arch])).unwrap();
        assert_eq!(f.architecture().unwrap(), arch);
        assert!(f
            .get(&format!("{arch}.attention.layer_norm_rms_epsilon"))
            .is_some());
        assert!(
            f.tensor("output.weight").is_none(),
            "{arch}: output is tied to token_embd"
        );
        assert_eq!(
            f.tensor("blk.1.attn_sub_norm.weight").unwrap().dims,
            vec![64]
        );
        assert_eq!(
            f.tensor("blk.1.ffn_sub_norm.weight").unwrap().dims,
            vec![128]
        );
        assert_eq!(
            f.tensor("blk.0.ffn_up.scale").is_some(),
            scales,
            "{arch}: scale tensors"
        );
        let (info, bytes) = f.tensor_data_by_name("blk.0.attn_q.weight").unwrap();
        assert_eq!(info.ty, GgmlType::F32);
        let mut levels: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()).to_bits())
            .collect();
        levels.sort();
        levels.dedup();
        assert_eq!(levels.len(), 3, "{arch}: weights are ternary");
    }
}

#[test]
fn every_tokenizer_key_is_copied_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for vocab in ["llama-spm", "llama-bpe", "gpt-2"] {
        let out = dir.path().join(format!("{vocab}.gguf"));
        Command::cargo_bin("xtask")
            .unwrap()
            .args(["gen-mini-gguf", "--vocab"])
            .arg(bitnet_fixtures::vocab(vocab))
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        let v = GgufFile::open(bitnet_fixtures::vocab(vocab)).unwrap();
        let m = GgufFile::open(&out).unwrap();
        let keys = |f: &GgufFile| -> Vec<(String, Value)> {
            f.metadata()
                .iter()
                .filter(|(k, _)| k.starts_with("tokenizer."))
                .cloned()
                .collect()
        };
        assert!(!keys(&v).is_empty());
        assert_eq!(keys(&v), keys(&m), "{vocab}");
        let n = v.tokenizer().unwrap().tokens.unwrap().len() as u64;
        assert_eq!(m.tensor("token_embd.weight").unwrap().dims, vec![64, n]);
    }
}

#[test]
fn f16_and_bf16_hold_the_same_weights_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    let f32m = GgufFile::open(gen(dir.path(), "f32.gguf", &[])).unwrap();
    let f16m = GgufFile::open(gen(dir.path(), "f16.gguf", &["--qtype", "f16"])).unwrap();
    let name = "blk.1.ffn_gate.weight";
    let (_, a) = f32m.tensor_data_by_name(name).unwrap();
    let (info, b) = f16m.tensor_data_by_name(name).unwrap();
    assert_eq!(info.ty, GgmlType::F16);
    for (x, y) in a.chunks_exact(4).zip(b.chunks_exact(2)) {
        let x = f32::from_le_bytes(x.try_into().unwrap());
        let y = half::f16::from_le_bytes([y[0], y[1]]);
        assert_eq!(half::f16::from_f32(x), y);
    }
    // Norms stay f32 whatever the qtype.
    assert_eq!(f16m.tensor("output_norm.weight").unwrap().ty, GgmlType::F32);
    let bf = GgufFile::open(gen(dir.path(), "bf16.gguf", &["--qtype", "bf16"])).unwrap();
    assert_eq!(bf.tensor(name).unwrap().ty, GgmlType::BF16);
}

/// A llama-quantize-like ternary model: TQ2_0 layers and a q6_K token embedding, which the
/// tied architectures also use as the output head; the q6_K blocks need 256-element rows.
#[test]
fn embedding_type_sets_the_tied_head_type() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--arch",
        "bitnet",
        "--qtype",
        "tq2_0",
        "--embd-type",
        "q6_K",
    ];
    let f = GgufFile::open(gen(dir.path(), "t.gguf", &args)).unwrap();
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ty, GgmlType::Q6_K);
    assert_eq!(embd.dims[0], 256);
    assert!(f.tensor("output.weight").is_none());
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().ty, GgmlType::TQ2_0);
    // Without the flag a quantized model keeps an f16 embedding.
    let f = GgufFile::open(gen(dir.path(), "u.gguf", &["--qtype", "q4_K"])).unwrap();
    assert_eq!(f.tensor("token_embd.weight").unwrap().ty, GgmlType::F16);
    assert_eq!(f.tensor("output.weight").unwrap().ty, GgmlType::Q4_K);
}

#[test]
fn preset_bitnet_2b_has_the_2b_4t_shape() {
    use clap::Parser;
    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        a: xtask::gen_mini::Args,
    }
    let w = W::parse_from([
        "x",
        "--preset",
        "bitnet-2b",
        "--vocab",
        "v.gguf",
        "-o",
        "o.gguf",
    ]);
    let s = w.a.spec().shape().unwrap();
    assert_eq!(
        (s.layers, s.dim, s.ffn, s.heads, s.kv_heads),
        (30, 2560, 6912, 20, 5)
    );
    assert_eq!(s.rope_base, 500_000.0);
    let w = W::parse_from([
        "x",
        "--preset",
        "bitnet-2b",
        "--layers",
        "2",
        "--vocab",
        "v",
        "-o",
        "o",
    ]);
    assert_eq!(w.a.spec().shape().unwrap().layers, 2);
}

#[test]
fn bad_arguments_are_usage_errors_and_bad_files_runtime_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let vocab = bitnet_fixtures::vocab("llama-spm");
    let run = |args: &[&str], vocab: &Path| {
        Command::cargo_bin("xtask")
            .unwrap()
            .arg("gen-mini-gguf")
            .arg("--vocab")
            .arg(vocab)
            .arg("-o")
            .arg(&out)
            .args(args)
            .assert()
    };
    run(&["--heads", "3"], &vocab)
        .code(2)
        .stderr(contains("not divisible by --heads 3"));
    run(&["--heads", "4", "--kv-heads", "3"], &vocab)
        .code(2)
        .stderr(contains("--kv-heads"));
    run(&["--qtype", "iq2_xxs"], &vocab)
        .code(2)
        .stderr(contains("no encoder"));
    run(&["--embd-type", "iq2_xxs"], &vocab)
        .code(2)
        .stderr(contains("no encoder"));
    run(&["--embd-type", "q6_K", "--dim", "128"], &vocab)
        .code(2)
        .stderr(contains("row granularity of the embedding type q6_K"));
    run(&["--qtype", "nonsense"], &vocab)
        .code(2)
        .stderr(contains("unknown ggml type"));
    run(&["--arch", "gpt5"], &vocab).code(2);
    run(&[], Path::new("/nonexistent/vocab.gguf"))
        .code(3)
        .stderr(contains("/nonexistent/vocab.gguf"));
    let not_gguf = dir.path().join("not.gguf");
    std::fs::write(&not_gguf, b"hello").unwrap();
    run(&[], &not_gguf)
        .code(3)
        .stderr(contains("not a GGUF file"));
    // A model without a vocabulary is refused: it could not be tokenized.
    let model = gen(dir.path(), "m.gguf", &[]);
    let mut w = bitnet_gguf::GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .unwrap();
    std::fs::write(&model, w.to_bytes()).unwrap();
    run(&[], &model)
        .code(3)
        .stderr(contains("no tokenizer.ggml.tokens"));
    assert!(!out.exists(), "no output is written on failure");
}
