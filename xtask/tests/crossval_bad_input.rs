//! Issue 15: bad input to `crossval-per-token` gets a clear error and its documented exit code,
//! in text and JSON mode, against the real references; no panic, no C++ abort, no silently
//! ignored value; `--format json` prints exactly one document whatever fails.

pub mod common;

use assert_cmd::Command;
use bitnet_gguf::GgmlType;
use bitnet_minimodel::Arch;
use common::{crossval, one_json, run, tiny};
use serde_json::Value;

const PROMPT: &str = "The quick brown fox jumps over the lazy dog";

/// The reference was never started (the run stopped before it).
fn reference_not_started(stderr: &str) {
    assert!(
        !stderr.contains("starting the C++ reference"),
        "the reference started: {stderr}"
    );
}

/// Item 1: a non-UTF-8 argument is a usage error (2) with one JSON document, not a panic.
#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_usage_errors() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let bad = OsStr::from_bytes(b"\xff\xfe");
    let mut c = crossval(&model, &["--format", "json", "--prompt"]);
    c.arg(bad);
    let (out, err) = run(&mut c, 2);
    let doc = one_json(out.as_bytes());
    assert_eq!(doc["status"], "usage_error");
    assert!(doc["error"].as_str().unwrap().contains("UTF-8"), "{doc}");
    assert!(!err.contains("panicked"), "{err}");
    // A non-UTF-8 model path with --prompt missing.
    let mut c = Command::cargo_bin("xtask").unwrap();
    c.args(["crossval-per-token", "--format", "json", "--model"])
        .arg(OsStr::from_bytes(b"/tmp/\xff.gguf"));
    let (out, _) = run(&mut c, 2);
    assert_eq!(one_json(out.as_bytes())["status"], "usage_error");
    // Text mode: the same exit code, the reason on stderr, nothing on stdout.
    let mut c = crossval(&model, &["--prompt"]);
    c.arg(bad);
    let (out, err) = run(&mut c, 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("UTF-8") && !err.contains("panicked"), "{err}");
}

/// Item 2: a receipt that cannot be written fails the run (3), and the results are still
/// reported.
#[test]
fn an_unwritable_receipt_fails_the_run_and_keeps_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let missing_dir = dir.path().join("no/such/dir/r.json");
    for target in [missing_dir.as_path(), dir.path()] {
        let mut c = crossval(
            &model,
            &["--prompt", PROMPT, "--format", "json", "--receipt"],
        );
        c.arg(target);
        let (out, _) = run(&mut c, 3);
        let doc = one_json(out.as_bytes());
        assert_eq!(doc["status"], "error", "{}", target.display());
        let error = doc["error"].as_str().unwrap();
        assert!(error.contains("receipt"), "{error}");
        assert!(error.contains("the comparison itself: ok"), "{error}");
        assert!(!doc["positions"].as_array().unwrap().is_empty());
        assert_eq!(doc["summary"]["all_ok"], true);

        let mut c = crossval(&model, &["--prompt", PROMPT, "--receipt"]);
        c.arg(target);
        let (out, err) = run(&mut c, 3);
        assert!(out.contains("✓ match"), "{out}");
        assert!(err.contains("error: receipt"), "{err}");
    }
}

/// Item 3 (and "truncated or not a GGUF file"): an error run's receipt says the pre-gate did
/// not run and no reference started, and validates against the schema.
#[test]
fn an_error_receipt_does_not_claim_token_parity() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &std::fs::read(&model).unwrap()[..1024]).unwrap();
    let receipt = dir.path().join("r.json");
    let mut c = crossval(&truncated, &["--prompt", PROMPT, "--receipt"]);
    c.arg(&receipt);
    let (_, err) = run(&mut c, 3);
    assert!(err.contains("truncated or not a GGUF file"), "{err}");
    let v: Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    bitnet_crossval::receipt::validate_receipt(&v).unwrap();
    assert_eq!(v["status"], "error");
    assert!(v["token_parity"].is_null(), "{v}");
    assert!(v["cpp_backend"].is_null(), "{v}");
    assert!(v["inputs"]["template_used"].is_null(), "{v}");
    assert!(v["error"].as_str().unwrap().contains("truncated"), "{v}");

    let (out, _) = run(
        &mut crossval(&truncated, &["--prompt", PROMPT, "--format", "json"]),
        3,
    );
    let doc = one_json(out.as_bytes());
    assert_eq!(doc["status"], "error");
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("truncated or not a GGUF file"));
}

/// Item 7: an absurd --max-tokens is refused with checked arithmetic (2) before the reference
/// starts, in both formats.
#[test]
fn an_absurd_max_tokens_is_a_usage_error_before_the_reference_starts() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let huge = u64::MAX.to_string();
    let (out, err) = run(
        &mut crossval(&model, &["--prompt", "Hi", "--max-tokens", &huge]),
        2,
    );
    assert!(out.is_empty());
    assert!(err.contains("context is 512 tokens"), "{err}");
    reference_not_started(&err);
    let (out, err) = run(
        &mut crossval(
            &model,
            &["--prompt", "Hi", "--max-tokens", &huge, "--format", "json"],
        ),
        2,
    );
    let doc = one_json(out.as_bytes());
    assert_eq!(doc["status"], "usage_error");
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("--max-tokens 511 or less"));
    reference_not_started(&err);
}

/// Item 10: negative numbers reach the value checks instead of being taken for flags.
#[test]
fn negative_numbers_are_values() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let (out, _) = run(
        &mut crossval(
            &model,
            &["--prompt", PROMPT, "--cos-tol", "-0.5", "--format", "json"],
        ),
        0,
    );
    assert_eq!(one_json(out.as_bytes())["thresholds"]["cos_tol"], -0.5);
    let (out, _) = run(
        &mut crossval(&model, &["--prompt", PROMPT, "--cos-tol", "-0.5"]),
        0,
    );
    assert!(out.contains("tolerance -0.5"), "{out}");
    let (_, err) = run(
        &mut crossval(&model, &["--prompt", "x", "--cos-tol", "-2"]),
        2,
    );
    assert!(err.contains("between -1 and 1"), "{err}");
    for args in [
        ["--prompt", "x", "--max-tokens", "-1"],
        ["--prompt", "x", "--threads", "-2"],
    ] {
        let (_, err) = run(&mut crossval(&model, &args), 2);
        assert!(err.contains("invalid value '-"), "{args:?}: {err}");
        let mut json = crossval(&model, &args);
        json.args(["--format", "json"]);
        let (out, _) = run(&mut json, 2);
        assert_eq!(one_json(out.as_bytes())["status"], "usage_error");
    }
}

/// Item 11: a prompt longer than the context is a usage error (2) with the numbers, decided
/// from the engine's token count before the reference starts; a huge prompt is refused from its
/// size, before anything is tokenized.
#[test]
fn a_prompt_longer_than_the_context_is_a_usage_error_before_the_reference_starts() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let long = "word ".repeat(600);
    let (_, err) = run(&mut crossval(&model, &["--prompt", &long]), 2);
    assert!(err.contains("the prompt is 60"), "{err}");
    assert!(err.contains("context is 512"), "{err}");
    assert!(err.contains("shorten the prompt"), "{err}");
    reference_not_started(&err);
    let (out, err) = run(
        &mut crossval(&model, &["--prompt", &long, "--format", "json"]),
        2,
    );
    let doc = one_json(out.as_bytes());
    assert_eq!(doc["status"], "usage_error");
    assert!(doc["error"].as_str().unwrap().contains("512"));
    assert!(doc["positions"].is_null());
    reference_not_started(&err);
    // Just fits with fewer greedy steps: the message says how many.
    let fits = "word ".repeat(500);
    let (_, err) = run(
        &mut crossval(&model, &["--prompt", &fits, "--max-tokens", "100"]),
        2,
    );
    assert!(err.contains("use --max-tokens"), "{err}");

    // (One argument holds at most 128 KiB on Linux; chat templates render more, see
    // crossval_templates.rs.)
    let huge = "x".repeat(100_000);
    let (out, err) = run(
        &mut crossval(&model, &["--prompt", &huge, "--format", "json"]),
        2,
    );
    let error = one_json(out.as_bytes())["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("100000 bytes, at least"), "{error}");
    reference_not_started(&err);
}

/// Item 12: a --cpp-model with another vocabulary is reported as such (2), naming both files,
/// before anything is tokenized; its receipt says so too.
#[test]
fn a_cpp_model_with_another_vocabulary_is_a_vocabulary_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let spm = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let other = dir.path().join("bpe");
    std::fs::create_dir_all(&other).unwrap();
    let bpe = tiny(&other, Arch::Llama, GgmlType::F32, "llama-bpe", 1);
    let receipt = dir.path().join("r.json");
    let mut c = crossval(&spm, &["--prompt", PROMPT, "--receipt"]);
    c.arg(&receipt).arg("--cpp-model").arg(&bpe);
    let (out, err) = run(&mut c, 2);
    assert!(out.is_empty());
    for needle in [
        "Vocabulary mismatch",
        &format!("--model {}", spm.display()),
        &format!("--cpp-model {}", bpe.display()),
        "token count 32000 vs 128256",
        "the same vocabulary",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    assert!(!err.contains("bitnet inspect"), "{err}");
    reference_not_started(&err);
    let v: Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    bitnet_crossval::receipt::validate_receipt(&v).unwrap();
    assert_eq!(v["status"], "vocab_mismatch");
    assert!(v["token_parity"].is_null());

    let mut c = crossval(
        &spm,
        &["--prompt", PROMPT, "--format", "json", "--cpp-model"],
    );
    c.arg(&bpe);
    let (out, _) = run(&mut c, 2);
    let doc = one_json(out.as_bytes());
    assert_eq!(doc["status"], "vocab_mismatch");
    let what: Vec<&str> = doc["vocab_mismatch"]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["what"].as_str().unwrap())
        .collect();
    assert!(
        what.contains(&"token count") && what.contains(&"BOS id"),
        "{what:?}"
    );
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains(&bpe.display().to_string()));
}

/// Progress goes to stderr (one line per stage off a terminal); stdout stays one document.
#[test]
fn progress_goes_to_stderr_and_json_stays_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let (out, err) = run(
        &mut crossval(&model, &["--prompt", PROMPT, "--format", "json"]),
        0,
    );
    assert_eq!(one_json(out.as_bytes())["status"], "ok");
    for stage in [
        "crossval: loading",
        "crossval: starting the C++ reference",
        "Rust engine: evaluating ",
        "crossval: C++ reference: evaluating ",
        "crossval: greedy steps",
    ] {
        assert!(err.contains(stage), "missing {stage:?} in {err}");
    }
    assert!(!err.contains('\x1b'), "no terminal control off a terminal");
}
