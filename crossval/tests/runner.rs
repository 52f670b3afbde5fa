//! The runner, driven as a library: the pre-gate stops before any evaluation; the run
//! configuration is gated and stated.

use bitnet_crossval::receipt::RunStatus;
use bitnet_crossval::runner::{run_per_token, OutputFormat, PerTokenConfig};
use bitnet_gguf::GgmlType;
use bitnet_inference::{RunChoice, TemplateType};
use bitnet_minimodel::{Arch, Spec};

fn tiny(dir: &std::path::Path) -> std::path::PathBuf {
    let spec = Spec::new(Arch::Llama, GgmlType::F32);
    bitnet_minimodel::write_tiny(dir, &spec, &bitnet_fixtures::vocab("llama-spm")).unwrap()
}

#[test]
fn a_token_mismatch_evaluates_no_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PerTokenConfig::new(tiny(dir.path()), "Hello world");
    cfg.tokenizer = Some(bitnet_fixtures::require(
        bitnet_fixtures::LLAMA2_MISLABELLED_TOKENIZER_JSON,
    ));
    let mut steps = Vec::new();
    let out = run_per_token(&cfg, &mut |m| steps.push(m.to_string()));
    assert_eq!(out.status, RunStatus::TokenMismatch);
    assert_eq!(out.exit_code, 2);
    assert!(
        !out.logits_evaluated,
        "logits were computed after the pre-gate refused"
    );
    assert!(steps.iter().all(|s| !s.contains("evaluating")), "{steps:?}");
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("Token Sequence Mismatch"));
}

#[test]
fn matching_tokens_go_straight_to_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PerTokenConfig::new(tiny(dir.path()), "Hello world");
    cfg.template = TemplateType::Instruct;
    cfg.format = OutputFormat::Json;
    cfg.max_tokens = 2;
    let out = run_per_token(&cfg, &mut |_| {});
    assert_eq!(out.status, RunStatus::Ok, "{}", out.stderr);
    assert!(out.logits_evaluated);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        doc["positions"].as_array().unwrap().len(),
        doc["tokens"]["rust"].as_array().unwrap().len()
    );
    assert!(!out.stderr.contains("Token Sequence Mismatch"));
}

/// A receipt is only written when it can satisfy its schema: a model that cannot be read (and
/// so not hashed) gets an error on stderr, not a receipt with an empty sha256.
#[test]
fn no_receipt_without_a_readable_model() {
    let dir = tempfile::tempdir().unwrap();
    let receipt = dir.path().join("r.json");
    let mut cfg = PerTokenConfig::new(dir.path().join("missing.gguf"), "Hello");
    cfg.receipt = Some(receipt.clone());
    let out = run_per_token(&cfg, &mut |_| {});
    assert_eq!(out.exit_code, 3);
    assert!(!receipt.exists());
    assert!(out.stderr.contains("cannot hash"), "{}", out.stderr);
}

/// The run configuration: one request configures both sides, the reference's resolution of it
/// passes the run-configuration check, and the text header, the JSON document and the receipt
/// state it (flash attention `auto` resolved by llama.cpp to on; the exact preset off).
#[test]
fn the_configuration_both_sides_ran_is_stated_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let receipt = dir.path().join("r.json");
    for (exact, flash, k) in [(false, true, "f16"), (true, false, "f32")] {
        let mut cfg = PerTokenConfig::new(&model, "Hello world");
        cfg.run = RunChoice {
            exact,
            ..RunChoice::default()
        };
        cfg.threads = Some(1);
        cfg.max_tokens = 2;
        let text = run_per_token(&cfg, &mut |_| {});
        assert_eq!(text.status, RunStatus::Ok, "{}", text.stderr);
        let header = format!("run configuration: K cache {k}, V cache {k}, flash attention {}, n_ubatch 512, 1 thread, n_batch", if flash { "on" } else { "off" });
        assert!(text.stdout.contains(&header), "{}", text.stdout);
        cfg.format = OutputFormat::Json;
        cfg.receipt = Some(receipt.clone());
        let json = run_per_token(&cfg, &mut |_| {});
        let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
        bitnet_crossval::receipt::validate_receipt(&r).unwrap();
        for c in [&doc["run_configuration"], &r["run_configuration"]] {
            assert_eq!(c["cache_type_k"], k);
            assert_eq!(c["flash_attn"], flash);
            assert_eq!(c["threads"], 1);
            assert_eq!(c["n_ubatch"], 512);
            assert!(c["n_batch"].as_u64().unwrap() >= 64);
        }
        // The real build facts beside it: the pinned llama.cpp's CPU kernels are AVX2 ones.
        assert!(
            r["cpp_backend"]["simd"]
                .as_array()
                .unwrap()
                .contains(&"AVX2".into()),
            "{}",
            r["cpp_backend"]
        );
    }
}

/// A configuration the reference refuses is a usage error (exit 2) with its reason, before any
/// reference is started.
#[test]
fn a_refused_configuration_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PerTokenConfig::new(tiny(dir.path()), "Hello world");
    cfg.run = RunChoice {
        cache_type_v: Some(bitnet_cpp::CacheType::Q8_0),
        flash_attn: Some(bitnet_cpp::FlashAttn::Off),
        ..RunChoice::default()
    };
    let out = run_per_token(&cfg, &mut |_| {});
    assert_eq!(out.exit_code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("requires flash_attn"), "{}", out.stderr);
    assert!(!out.logits_evaluated);
}

/// SmolLM2 (real weights), the prompt: max |Δ| 0 at every position and in every greedy
/// step, under llama.cpp's defaults and under the exact configuration.
#[test]
fn smollm2_crossval_is_bit_identical_under_defaults_and_exact() {
    for exact in [false, true] {
        let mut cfg = PerTokenConfig::new(bitnet_fixtures::smollm2(), "The capital of France is");
        cfg.run = RunChoice {
            exact,
            ..RunChoice::default()
        };
        cfg.format = OutputFormat::Json;
        cfg.max_tokens = 8;
        let out = run_per_token(&cfg, &mut |_| {});
        assert_eq!(out.status, RunStatus::Ok, "{}", out.stderr);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(doc["summary"]["max_abs_diff"], 0.0, "exact={exact}");
        assert_eq!(doc["run_configuration"]["flash_attn"], !exact);
        assert_eq!(doc["decode"].as_array().unwrap().len(), 8);
    }
}
