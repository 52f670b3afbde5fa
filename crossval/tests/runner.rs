//! The runner, driven as a library: the pre-gate stops before any evaluation.

use bitnet_crossval::receipt::RunStatus;
use bitnet_crossval::runner::{run_per_token, OutputFormat, PerTokenConfig};
use bitnet_gguf::GgmlType;
use bitnet_inference::TemplateType;
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
