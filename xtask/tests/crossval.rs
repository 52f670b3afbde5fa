//! `xtask crossval-per-token` and `crossval-tokenizer`, end to end against the real C++
//! references: exit codes, reports, JSON documents.

pub mod common;

use std::path::Path;

use assert_cmd::Command;
use bitnet_gguf::{GgmlType, GgufFile, GgufWriter};
use bitnet_minimodel::Arch;
use common::{crossval, one_json, tiny};
use predicates::prelude::*;
use serde_json::Value;

const PROMPT: &str = "The quick brown fox jumps over the lazy dog";

#[test]
fn matching_tiny_llama_exits_0_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    crossval(&model, &["--prompt", PROMPT])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("✓ t=0 cos="))
        .stdout(predicate::str::contains("✓ match"))
        .stdout(predicate::str::contains("Token Sequence Mismatch").not());
    let out = crossval(&model, &["--prompt", PROMPT, "--format", "json"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let doc = one_json(&out);
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["tokens"]["rust"], doc["tokens"]["cpp"]);
    assert_eq!(doc["tokens"]["rust"][0], 1, "llama-spm adds BOS by default");
    assert!(doc["positions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["ok"] == true));
    assert_eq!(doc["decode"].as_array().unwrap().len(), 4);
    assert!(doc["summary"]["min_cosine"].as_f64().unwrap() > 0.9999);
}

#[test]
fn wrong_tokenizer_json_is_stopped_by_the_pre_gate_with_the_full_report() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let tok = bitnet_fixtures::require(bitnet_fixtures::LLAMA2_MISLABELLED_TOKENIZER_JSON);
    let out = crossval(
        &model,
        &[
            "--prompt",
            "Hello world, it's 2 o'clock",
            "--prompt-template",
            "instruct",
            "--tokenizer",
        ],
    )
    .arg(&tok)
    .assert()
    .code(2)
    .get_output()
    .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    for needle in [
        "Token Sequence Mismatch",
        "Rust tokens:",
        "C++ tokens:",
        "First diff at index:",
        "Suggested fixes:",
        "--prompt-template raw",
        "--dump-ids",
        "Example command",
        "may be a different vocabulary than the model's",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // instruct owes nothing to the model's chat template: no advice to inspect it.
    assert!(!err.contains("bitnet inspect"), "{err}");
    assert!(
        String::from_utf8(out.stdout).unwrap().is_empty(),
        "no logits output after a mismatch"
    );
    let json = crossval(
        &model,
        &["--prompt", "Hello world", "--format", "json", "--tokenizer"],
    )
    .arg(&tok)
    .assert()
    .code(2)
    .get_output()
    .stdout
    .clone();
    let doc = one_json(&json);
    assert_eq!(doc["status"], "token_mismatch");
    assert!(doc["tokens"]["first_diff_idx"].is_u64());
    assert!(doc["positions"].is_null(), "no logits were computed");
    assert!(!doc["suggestions"].as_array().unwrap().is_empty());
}

#[test]
fn different_weights_diverge_with_exit_1_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let b = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 2);
    crossval(&a, &["--prompt", PROMPT, "--cpp-model"])
        .arg(&b)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("✗ diverged"));
    let out = crossval(&a, &["--prompt", PROMPT, "--format", "json", "--cpp-model"])
        .arg(&b)
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let doc = one_json(&out);
    assert_eq!(doc["status"], "diverged");
    assert_eq!(doc["summary"]["first_divergent_position"], 0);
}

#[test]
fn receipt_is_written_and_valid() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let path = dir.path().join("receipt.json");
    crossval(&model, &["--prompt", PROMPT, "--receipt"])
        .arg(&path)
        .assert()
        .code(0);
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    bitnet_crossval::receipt::validate_receipt(&v).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["token_parity"]["status"], "ok");
    assert_eq!(v["inputs"]["model_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["cpp_backend"]["backend"], "llama");
}

#[test]
fn llama3_chat_on_llama_bpe_has_exactly_one_bos_and_matches() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-bpe", 1);
    let out = crossval(
        &model,
        &[
            "--prompt",
            "What is 2+2?",
            "--prompt-template",
            "llama3-chat",
            "--system-prompt",
            "Be brief.",
            "--format",
            "json",
        ],
    )
    .assert()
    .code(0)
    .get_output()
    .stdout
    .clone();
    let doc = one_json(&out);
    let ids: Vec<u64> = doc["tokens"]["rust"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids[0], 128000);
    assert_eq!(
        ids.iter().filter(|&&t| t == 128000).count(),
        1,
        "exactly one BOS"
    );
    assert_eq!(doc["tokens"]["rust"], doc["tokens"]["cpp"]);
    assert_eq!(doc["parse_special"], true);
    assert_eq!(doc["add_bos"], false);
}

#[test]
fn instruct_formatting_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let out = crossval(
        &model,
        &[
            "--prompt",
            "What is 2+2?",
            "--prompt-template",
            "instruct",
            "--system-prompt",
            "Be brief.",
            "--format",
            "json",
        ],
    )
    .assert()
    .code(0)
    .get_output()
    .stdout
    .clone();
    let doc = one_json(&out);
    assert_eq!(
        doc["formatted_prompt"],
        "System: Be brief.\n\nQ: What is 2+2?\nA:"
    );
    assert_eq!(doc["add_bos"], true);
    assert_eq!(doc["parse_special"], false);
}

/// SmolLM2 with its own ChatML template, at the default tolerance: the engine's logits are
/// bit-identical to llama.cpp's, prompt and greedy steps alike.
#[test]
fn smollm2_auto_and_jinja_detect_chatml_and_match() {
    let model = bitnet_fixtures::smollm2();
    for template in ["auto", "jinja"] {
        let out = crossval(
            &model,
            &[
                "--prompt",
                "What is the capital of France?",
                "--prompt-template",
                template,
                "--format",
                "json",
            ],
        )
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
        let doc = one_json(&out);
        assert_eq!(doc["tokens"]["rust"], doc["tokens"]["cpp"], "{template}");
        assert!(
            doc["formatted_prompt"]
                .as_str()
                .unwrap()
                .contains("<|im_start|>user\nWhat is the capital of France?<|im_end|>"),
            "{template}"
        );
        if template == "auto" {
            assert_eq!(doc["template"], "chatml");
        }
        assert_eq!(doc["status"], "ok");
        assert_eq!(doc["summary"]["min_cosine"], 1.0, "{template}");
        assert_eq!(doc["decode"].as_array().unwrap().len(), 4);
    }
}

#[test]
fn bitnet_tq2_0_matches_on_the_llama_backend() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Bitnet, GgmlType::TQ2_0, "llama-bpe", 1);
    let out = crossval(&model, &["--prompt", PROMPT, "--format", "json"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    assert_eq!(one_json(&out)["cpp_backend"]["backend"], "llama");
}

#[test]
fn bitnet_b158_i2s_uses_bitnet_cpp_and_refuses_the_llama_backend() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::BitnetB158, GgmlType::I2_S, "llama-bpe", 1);
    let out = crossval(&model, &["--prompt", PROMPT, "--format", "json"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let doc = one_json(&out);
    assert_eq!(doc["cpp_backend"]["backend"], "bitnet");
    crossval(&model, &["--prompt", PROMPT, "--cpp-backend", "llama"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--cpp-backend bitnet"));
    let out = crossval(
        &model,
        &[
            "--prompt",
            PROMPT,
            "--cpp-backend",
            "llama",
            "--format",
            "json",
        ],
    )
    .assert()
    .code(3)
    .get_output()
    .stdout
    .clone();
    let doc = one_json(&out);
    assert_eq!(doc["status"], "error");
    assert!(doc["error"].as_str().unwrap().contains("bitnet"));
}

#[test]
fn bad_input_has_documented_exit_codes_and_json_stays_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    crossval(&model, &["--prompt", PROMPT, "--prompt-template", "llama4"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "raw, instruct, llama3-chat, chatml, auto, jinja",
        ));
    crossval(&model, &["--prompt", ""])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("empty"));
    crossval(Path::new("/nonexistent/model.gguf"), &["--prompt", "x"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("/nonexistent/model.gguf"));
    let corrupt = dir.path().join("corrupt.gguf");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    crossval(&corrupt, &["--prompt", "x"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("truncated"));
    for (args, code) in [
        (vec!["--prompt", "", "--format", "json"], 2),
        (
            vec![
                "--prompt",
                "x",
                "--prompt-template",
                "llama4",
                "--format",
                "json",
            ],
            2,
        ),
        (
            vec!["--prompt", "x", "--format", "json", "--cos-tol", "7"],
            2,
        ),
    ] {
        let out = crossval(&model, &args)
            .assert()
            .code(code)
            .get_output()
            .stdout
            .clone();
        assert_eq!(one_json(&out)["status"], "usage_error", "{args:?}");
    }
    for m in [Path::new("/nonexistent/model.gguf"), corrupt.as_path()] {
        let out = crossval(m, &["--prompt", "x", "--format", "json"])
            .assert()
            .code(3)
            .get_output()
            .stdout
            .clone();
        assert_eq!(one_json(&out)["status"], "error");
    }
}

#[test]
fn crossval_tokenizer_random_texts_match_on_real_vocabularies() {
    for vocab in [
        bitnet_fixtures::vocab("llama-spm"),
        bitnet_fixtures::vocab("llama-bpe"),
        bitnet_fixtures::vocab("gpt-2"),
        bitnet_fixtures::smollm2(),
    ] {
        for special in [false, true] {
            let mut c = Command::cargo_bin("xtask").unwrap();
            c.args([
                "crossval-tokenizer",
                "--random",
                "2000",
                "--format",
                "json",
                "--model",
            ])
            .arg(&vocab);
            if special {
                c.arg("--parse-special");
            }
            let out = c.assert().get_output().clone();
            let doc = one_json(&out.stdout);
            assert_eq!(doc["total"], 2000);
            assert_eq!(
                doc["mismatches"],
                0,
                "{} parse_special={special}: {}",
                vocab.display(),
                doc["reported"]
            );
            assert_eq!(out.status.code(), Some(0));
        }
    }
}

#[test]
fn crossval_tokenizer_reports_mismatches_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts.jsonl");
    std::fs::write(&texts, "\"Hello world\"\n\"it's 2 o'clock\"\n").unwrap();
    let mut c = Command::cargo_bin("xtask").unwrap();
    c.args(["crossval-tokenizer", "--format", "json", "--texts"])
        .arg(&texts)
        .arg("--model")
        .arg(bitnet_fixtures::vocab("llama-spm"));
    c.arg("--tokenizer").arg(bitnet_fixtures::require(
        bitnet_fixtures::LLAMA2_MISLABELLED_TOKENIZER_JSON,
    ));
    let out = c.assert().code(2).get_output().stdout.clone();
    let doc = one_json(&out);
    assert_eq!(doc["total"], 2);
    assert!(doc["mismatches"].as_u64().unwrap() >= 1);
    std::fs::write(&texts, "not json\n").unwrap();
    let mut c = Command::cargo_bin("xtask").unwrap();
    c.args(["crossval-tokenizer", "--texts"])
        .arg(&texts)
        .arg("--model")
        .arg(bitnet_fixtures::vocab("llama-spm"));
    c.assert()
        .code(3)
        .stderr(predicate::str::contains("not a JSON string"));
}

/// The Llama-3 tokenizer.json adds no BOS in its post-processor, while the model's vocabulary
/// (llama-bpe) does: the gate says so and suggests --no-bos, which then matches.
#[test]
fn a_tokenizer_json_without_the_models_bos_is_caught_and_no_bos_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-bpe", 1);
    let tok = bitnet_fixtures::require(bitnet_fixtures::LLAMA3_TOKENIZER_JSON);
    crossval(&model, &["--prompt", "Hello world", "--tokenizer"])
        .arg(&tok)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("First diff at index: 0"))
        .stderr(predicate::str::contains("starts only the C++ tokens"))
        .stderr(predicate::str::contains("--no-bos"));
    crossval(
        &model,
        &["--prompt", "Hello world", "--no-bos", "--tokenizer"],
    )
    .arg(&tok)
    .assert()
    .code(0);
}

/// The run-configuration flags, spelled as llama.cpp spells them, configure both sides; the
/// report's header and the JSON document state what the reference resolved.
#[test]
fn run_configuration_flags_configure_both_sides_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    crossval(
        &model,
        &[
            "--prompt",
            PROMPT,
            "-ctk",
            "bf16",
            "-fa",
            "on",
            "--threads",
            "1",
        ],
    )
    .assert()
    .code(0)
    .stdout(predicate::str::contains(
        "configuration: K cache bf16, V cache f16, flash attention on, n_ubatch 512, 1 thread",
    ));
    let out = crossval(
        &model,
        &[
            "--prompt",
            PROMPT,
            "--exact-reference",
            "-ub",
            "4",
            "--format",
            "json",
        ],
    )
    .assert()
    .code(0)
    .get_output()
    .stdout
    .clone();
    let doc = one_json(&out);
    let c = &doc["run_configuration"];
    assert_eq!(
        (c["cache_type_k"].as_str(), c["cache_type_v"].as_str()),
        (Some("f32"), Some("f32"))
    );
    assert_eq!(
        (c["flash_attn"].as_bool(), c["n_ubatch"].as_u64()),
        (Some(false), Some(4))
    );
    crossval(&model, &["--prompt", PROMPT, "-ctv", "q8_0", "-fa", "off"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("requires flash_attn"));
    // A bad value is a usage error, and JSON mode still prints exactly one document.
    let out = crossval(
        &model,
        &["--prompt", PROMPT, "-ub", "0", "--format", "json"],
    )
    .assert()
    .code(2)
    .stderr(predicate::str::contains("--ubatch-size must be at least 1"))
    .get_output()
    .stdout
    .clone();
    assert_eq!(one_json(&out)["status"], "usage_error");
}

#[cfg(unix)]
#[test]
fn a_non_utf8_model_path_reaches_the_reference() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join(OsStr::from_bytes(b"mod\xe8le-\xff.gguf"));
    std::fs::rename(
        tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1),
        &model,
    )
    .unwrap();
    crossval(&model, &["--prompt", PROMPT]).assert().code(0);
    let out = crossval(&model, &["--prompt", PROMPT, "--format", "json"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    assert_eq!(one_json(&out)["status"], "ok");
}

#[test]
fn an_unsupported_tensor_type_is_exit_3_naming_type_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    // MXFP4: a type llama.cpp multiplies and the engine never will.
    let tensor = "blk.0.attn_q.weight";
    let file =
        GgufFile::open(tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1)).unwrap();
    let dims = &file.tensor(tensor).unwrap().dims;
    let zeros = vec![0; GgmlType::MXFP4.tensor_bytes(dims).unwrap() as usize];
    let mut w = GgufWriter::from_file(&file).unwrap();
    w.replace_tensor(tensor, dims, GgmlType::MXFP4, zeros)
        .unwrap();
    let model = dir.path().join("llama-with-mxfp4.gguf");
    w.write_file(&model).unwrap();
    let out = crossval(&model, &["--prompt", PROMPT])
        .assert()
        .code(3)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(tensor) && err.contains("mxfp4"), "{err}");
    let out = crossval(&model, &["--prompt", PROMPT, "--format", "json"])
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let doc = one_json(&out);
    assert_eq!(doc["status"], "error");
    let msg = doc["error"].as_str().unwrap();
    assert!(msg.contains(tensor) && msg.contains("mxfp4"), "{msg}");
}

#[test]
fn json_and_receipt_carry_the_references_real_build() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let receipt = dir.path().join("receipt.json");
    let out = crossval(
        &model,
        &["--prompt", PROMPT, "--format", "json", "--receipt"],
    )
    .arg(&receipt)
    .assert()
    .code(0)
    .get_output()
    .stdout
    .clone();
    let doc = one_json(&out);
    let saved: Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    bitnet_crossval::receipt::validate_receipt(&saved).unwrap();
    assert_eq!(saved["schema_version"], "2.3.0");
    for be in [&doc["cpp_backend"], &saved["cpp_backend"]] {
        let id = be["compiler"]["id"].as_str().unwrap();
        let version = be["compiler"]["version"].as_str().unwrap();
        assert!(!id.is_empty() && version.contains('.'), "{be}");
        let has = |key: &str, item: &str| {
            be[key]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_str() == Some(item))
        };
        assert!(has("cpu_flags", "-mavx2") && has("simd", "AVX2"), "{be}");
        let version_line = be["version"].as_str().unwrap();
        assert!(version_line.contains("llama-cpp-sys-2 0.1.161"), "{be}");
        let line = be["build_info"].as_str().unwrap();
        assert!(
            line.contains(id) && line.contains(version) && line.contains("AVX2"),
            "{line}"
        );
        assert!(be["system_info"].as_str().unwrap().contains("AVX2"), "{be}");
    }
    assert_eq!(doc["cpp_backend"], saved["cpp_backend"]);
    let text = crossval(&model, &["--prompt", PROMPT])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(text).unwrap();
    let build = text
        .lines()
        .find_map(|l| l.strip_prefix("C++ build: "))
        .unwrap_or_else(|| panic!("no build line in:\n{text}"));
    assert_eq!(build, doc["cpp_backend"]["build_info"].as_str().unwrap());
}

/// `--locate` through the binary: one JSON document with the report; its flags are checked.
#[test]
fn locate_flags_reach_the_report_and_bad_values_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let out = crossval(
        &model,
        &[
            "--prompt",
            PROMPT,
            "--format",
            "json",
            "--locate",
            "all",
            "--locate-tol",
            "max-abs=0.5",
        ],
    )
    .assert()
    .code(0)
    .get_output()
    .stdout
    .clone();
    let doc = one_json(&out);
    assert_eq!(doc["locate"]["mode"], "all");
    assert_eq!(doc["locate"]["tolerance"]["measure"], "max-abs");
    assert_eq!(doc["locate"]["tolerance"]["bound"], 0.5);
    // llama.cpp's defaults run flash attention: no attention weights in either graph, which
    // the report says instead of comparing them.
    assert_eq!(doc["locate"]["tensors_compared"], 2 * 13 + 2);
    let not_computed = doc["locate"]["not_computed"].as_array().unwrap();
    assert!(
        not_computed.len() == 1
            && not_computed[0]
                .as_str()
                .unwrap()
                .starts_with("kq_soft_max: flash attention is on"),
        "{not_computed:?}"
    );
    assert_eq!(doc["config_gate"]["ok"], true);
    crossval(&model, &["--prompt", PROMPT, "--locate"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "locate: the first tensor beyond nmse ≤ 1e-6",
        ))
        .stdout(predicate::str::contains("✓ no tensor beyond"));
    for bad in [
        vec!["--locate-tol", "nmse=1e-3"],
        vec!["--locate", "everything"],
        vec!["--locate", "--locate-tol", "kl"],
        vec!["--locate", "--locate-tol", "cos=2"],
    ] {
        let mut args = vec!["--prompt", PROMPT];
        args.extend(bad.iter().copied());
        crossval(&model, &args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("locate"));
    }
}
