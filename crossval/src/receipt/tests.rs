//! Tests of the `receipt` module.

use super::validate::is_rfc3339_utc;
use super::*;
use crate::logits_compare::{compare_logits, LogitsMatrix};
use serde_json::Value;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "bitnet-crossval-{name}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    fs::create_dir_all(&d).expect("temp dir");
    d
}

fn sample(dir: &Path) -> Receipt {
    let model = dir.join("model.gguf");
    fs::write(&model, b"GGUF fake model bytes").expect("model");
    let rust = [1.0f32, 2.0, 3.0, 0.5, 0.25, 4.0];
    let cpp = [1.0f32, 2.0, 3.0, 0.5, 0.25, f32::NAN];
    let cmp = compare_logits(
        LogitsMatrix::rust(&rust, 3).expect("shape"),
        LogitsMatrix::cpp(&cpp, 3).expect("shape"),
        0.999,
    )
    .expect("compare");
    Receipt {
        schema_version: RECEIPT_SCHEMA_VERSION.into(),
        status: RunStatus::Diverged,
        error: None,
        warnings: vec!["--no-bos has no effect".into()],
        tool: ToolInfo {
            name: "xtask crossval-per-token".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        timestamp: now_rfc3339(),
        inputs: Inputs {
            model_path: model.to_string_lossy().into_owned(),
            model_sha256: sha256_file(&model).expect("sha"),
            cpp_model_path: None,
            cpp_model_sha256: None,
            tokenizer_path: Some("tokenizer.json".into()),
            prompt: "What's 2+2?\n".into(),
            formatted_prompt: "Q: What's 2+2?\n\nA:".into(),
            system_prompt: None,
            template: "auto".into(),
            template_used: Some("instruct".into()),
            add_bos: true,
            parse_special: false,
        },
        token_parity: Some(TokenParityBlock::new(2, 2, None)),
        positions: cmp.positions,
        decode: vec![DecodeStep {
            step: 0,
            rust_token: 42,
            cpp_token: 42,
            matched: true,
            fed_token: 42,
            label: Verdict::Match,
        }],
        summary: Some(cmp.summary),
        thresholds: Thresholds {
            cos_tol: 0.999,
            max_tokens: 4,
            tie_margin: crate::verdict::TIE_MARGIN,
        },
        cpp_backend: Some(CppBackendInfo {
            backend: "llama".into(),
            library: "llama.cpp via crates.io llama-cpp-sys-2 =0.1.161 (CPU)".into(),
            build_info:
                "llama-cpp-sys-2 0.1.161; GNU 12.2.0 Release; CPU kernels built with -mavx2 (AVX2)"
                    .into(),
            version: "llama-cpp-sys-2 0.1.161 (git e7af607ebd5e), ggml 0.26.0".into(),
            compiler: CompilerInfo {
                id: "GNU".into(),
                version: "12.2.0".into(),
            },
            build_type: "Release".into(),
            cpu_flags: vec!["-march=x86-64".into(), "-mavx2".into()],
            simd: vec!["AVX".into(), "AVX2".into()],
            ggml_options: vec!["GGML_LLAMAFILE".into()],
            system_info: "AVX = 1 | AVX2 = 1".into(),
        }),
        run_configuration: Some(RunConfiguration {
            effective: bitnet_cpp::EffectiveConfig {
                cache_type_k: bitnet_cpp::CacheType::F16,
                cache_type_v: bitnet_cpp::CacheType::F16,
                flash_attn: true,
                n_ubatch: 512,
                threads: 2,
            },
            n_batch: 512,
        }),
        environment: Environment::detect(2),
        config_gate: None,
        locate: None,
    }
}

#[test]
fn written_receipt_validates_and_round_trips() {
    let dir = temp_dir("roundtrip");
    let receipt = sample(&dir);
    let path = dir.join("receipt.json");
    receipt.write(&path).expect("write");
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary file left behind");
    let text = fs::read_to_string(&path).expect("read");
    let value: Value = serde_json::from_str(&text).expect("json");
    validate_receipt(&value).expect("valid receipt");
    assert_eq!(value["schema_version"], "2.3.0");
    assert_eq!(value["run_configuration"]["cache_type_k"], "f16");
    assert_eq!(value["run_configuration"]["flash_attn"], true);
    assert_eq!(value["run_configuration"]["n_batch"], 512);
    assert_eq!(value["status"], "diverged");
    assert_eq!(value["token_parity"]["status"], "ok");
    assert_eq!(value["token_parity"]["first_diff_idx"], Value::Null);
    assert_eq!(value["positions"][1]["cosine"], "NaN");
    assert_eq!(value["decode"][0]["match"], true);
    assert_eq!(value["summary"]["first_divergent_position"], 1);
    let back = Receipt::read(&path).expect("read back");
    assert!(back.positions[1].cosine.is_nan());
    // NaN != NaN: compare the re-serialised documents instead.
    assert_eq!(back.to_json(), receipt.to_json());
    // Overwriting is atomic too.
    receipt.write(&path).expect("rewrite");
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn validator_names_every_missing_required_field() {
    let dir = temp_dir("missing");
    let value = serde_json::to_value(sample(&dir)).expect("value");
    fs::remove_dir_all(&dir).expect("cleanup");
    let mut paths = Vec::new();
    fn collect(v: &Value, prefix: &str, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}/{k}")
                };
                out.push(p.clone());
                collect(child, &p, out);
            }
        }
    }
    collect(&value, "", &mut paths);
    // Fields inside arrays' elements too.
    for (arr, _) in [("positions", 0), ("decode", 0)] {
        for k in value[arr][0].as_object().expect("obj").keys() {
            paths.push(format!("{arr}/0/{k}"));
        }
    }
    assert!(paths.len() > 60, "{paths:?}");
    for p in paths {
        let mut v = value.clone();
        let (parent, key) = p.rsplit_once('/').unwrap_or(("", &p));
        let ptr = if parent.is_empty() {
            String::new()
        } else {
            format!("/{parent}")
        };
        let removed = match v.pointer_mut(&ptr) {
            Some(Value::Object(m)) => m.remove(key),
            _ => None,
        };
        assert!(removed.is_some(), "{p}");
        let err = validate_receipt(&v).expect_err(&p);
        assert!(
            err.contains(key),
            "error for missing {p} does not name it: {err}"
        );
    }
}

#[test]
fn validator_rejects_wrong_types_and_inconsistencies() {
    let dir = temp_dir("types");
    let good = serde_json::to_value(sample(&dir)).expect("value");
    fs::remove_dir_all(&dir).expect("cleanup");
    let cases: Vec<(&str, Value)> = vec![
        ("/schema_version", "1.0.0".into()),
        ("/error", "boom".into()),
        ("/warnings", Value::Array(vec![1.into()])),
        ("/token_parity", Value::Null),
        ("/cpp_backend", Value::Null),
        ("/inputs/template_used", 3.into()),
        ("/status", "fine".into()),
        ("/timestamp", "2026-11-26 21:00:00".into()),
        ("/inputs/model_sha256", "ABC".into()),
        ("/inputs/add_bos", "yes".into()),
        ("/inputs/cpp_model_path", "other.gguf".into()),
        ("/token_parity/status", "mismatch".into()),
        ("/token_parity/first_diff_idx", 3.into()),
        ("/token_parity/rust_count", (-1).into()),
        ("/positions/0/top5_overlap", 6.into()),
        ("/positions/0/cosine", "big".into()),
        ("/decode/0/match", 1.into()),
        ("/summary", Value::Null),
        ("/summary/top1_agreement_rate", 1.5.into()),
        ("/thresholds/cos_tol", "0.999".into()),
        ("/cpp_backend/backend", "onnx".into()),
        ("/cpp_backend/simd", "AVX2".into()),
        ("/cpp_backend/cpu_flags/0", 3.into()),
        ("/cpp_backend/compiler", "GNU 12".into()),
        ("/run_configuration", Value::Null),
        ("/run_configuration/cache_type_v", "q4_0".into()),
        ("/run_configuration/flash_attn", "auto".into()),
        ("/run_configuration/n_ubatch", (-1).into()),
        ("/environment/threads", 2.5.into()),
        ("/positions", Value::Object(Default::default())),
        ("/positions/0/label", "fine".into()),
        ("/positions/0/label", "drift".into()),
        ("/decode/0/label", "close".into()),
        ("/status", "config_mismatch".into()),
        ("/config_gate", "ok".into()),
        ("/locate", 3.into()),
    ];
    for (ptr, bad) in cases {
        let mut v = good.clone();
        *v.pointer_mut(ptr).expect(ptr) = bad;
        assert!(validate_receipt(&v).is_err(), "{ptr} accepted");
    }
    assert!(validate_receipt(&Value::Array(vec![])).is_err());
    // A consistent token-mismatch receipt is valid with no summary and no positions.
    let mut v = good.clone();
    v["status"] = "token_mismatch".into();
    v["token_parity"]["status"] = "mismatch".into();
    v["token_parity"]["first_diff_idx"] = 1.into();
    v["positions"] = Value::Array(vec![]);
    v["decode"] = Value::Array(vec![]);
    v["summary"] = Value::Null;
    validate_receipt(&v).expect("token mismatch receipt");
    // An error before the pre-gate: no token parity, no backend, a message.
    for status in ["error", "usage_error", "vocab_mismatch"] {
        let mut v = good.clone();
        v["status"] = status.into();
        v["error"] = "the model is truncated".into();
        v["token_parity"] = Value::Null;
        v["cpp_backend"] = Value::Null;
        v["run_configuration"] = Value::Null;
        v["positions"] = Value::Array(vec![]);
        v["decode"] = Value::Array(vec![]);
        v["summary"] = Value::Null;
        validate_receipt(&v).expect(status);
        v["error"] = Value::Null;
        assert!(validate_receipt(&v).is_err(), "{status} without a message");
    }
    // A configuration mismatch: the reference started, its gate failed, no token parity.
    let mut v = good.clone();
    v["status"] = "config_mismatch".into();
    v["token_parity"] = Value::Null;
    v["positions"] = Value::Array(vec![]);
    v["decode"] = Value::Array(vec![]);
    v["summary"] = Value::Null;
    v["config_gate"] =
        serde_json::json!({ "ok": false, "facts": [], "tensor_types": [], "hints": [] });
    validate_receipt(&v).expect("config mismatch receipt");
    // The run configuration was checked before the hyper-parameters: it is stated.
    let mut c = v.clone();
    c["run_configuration"] = Value::Null;
    assert!(validate_receipt(&c)
        .unwrap_err()
        .contains("run_configuration"));
    v["config_gate"]["ok"] = true.into();
    assert!(
        validate_receipt(&v).is_err(),
        "a passed gate with config_mismatch"
    );
    // An error after the pre-gate passed keeps its token parity block.
    let mut v = good.clone();
    v["status"] = "error".into();
    v["error"] = "the C++ reference died".into();
    validate_receipt(&v).expect("error after the pre-gate");
}

#[test]
fn schema_2_0_receipts_without_build_fields_still_validate_and_read() {
    let dir = temp_dir("v20");
    let mut v = serde_json::to_value(sample(&dir)).expect("value");
    v["schema_version"] = "2.0.0".into();
    v.as_object_mut()
        .expect("object")
        .remove("run_configuration");
    let be = v["cpp_backend"].as_object_mut().expect("object");
    for k in [
        "version",
        "compiler",
        "build_type",
        "cpu_flags",
        "simd",
        "ggml_options",
    ] {
        be.remove(k);
    }
    validate_receipt(&v).expect("a 2.0 receipt is valid");
    let path = dir.join("old.json");
    fs::write(&path, v.to_string()).expect("write");
    let back = Receipt::read(&path).expect("a 2.0 receipt reads");
    assert_eq!(back.run_configuration, None);
    let be = back.cpp_backend.expect("backend");
    assert!(be.simd.is_empty() && be.version.is_empty());
    // The same document claiming 2.1 lacks required fields.
    v["schema_version"] = "2.1.0".into();
    assert!(validate_receipt(&v).unwrap_err().contains("version"));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn schema_2_2_receipts_without_a_run_configuration_still_validate() {
    let dir = temp_dir("v22");
    let mut v = serde_json::to_value(sample(&dir)).expect("value");
    fs::remove_dir_all(&dir).expect("cleanup");
    v.as_object_mut()
        .expect("object")
        .remove("run_configuration");
    v["schema_version"] = "2.2.0".into();
    validate_receipt(&v).expect("a 2.2 receipt is valid");
    // A 2.3 receipt must state it.
    v["schema_version"] = "2.3.0".into();
    assert!(validate_receipt(&v)
        .unwrap_err()
        .contains("run_configuration"));
}

#[test]
fn schema_2_1_receipts_without_the_locate_fields_still_validate() {
    let dir = temp_dir("v21");
    let mut v = serde_json::to_value(sample(&dir)).expect("value");
    v["schema_version"] = "2.1.0".into();
    let root = v.as_object_mut().expect("object");
    root.remove("config_gate");
    root.remove("locate");
    root.remove("run_configuration");
    v["thresholds"]
        .as_object_mut()
        .expect("object")
        .remove("tie_margin");
    for k in ["rust_top2", "cpp_top2", "cpp_top2_margin", "label"] {
        for p in v["positions"].as_array_mut().expect("array") {
            p.as_object_mut().expect("object").remove(k);
        }
    }
    for k in ["fed_token", "label"] {
        v["decode"][0].as_object_mut().expect("object").remove(k);
    }
    validate_receipt(&v).expect("a 2.1 receipt is valid");
    // A 2.1 receipt cannot have 2.2's status.
    let mut c = v.clone();
    c["status"] = "config_mismatch".into();
    assert!(validate_receipt(&c).unwrap_err().contains("2.2"));
    // The same document claiming 2.2 lacks required fields.
    v["schema_version"] = "2.2.0".into();
    assert!(validate_receipt(&v).is_err());
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn timestamps_are_rfc3339_utc() {
    use std::time::Duration;
    let at = |s: u64| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    assert!(is_rfc3339_utc(&now_rfc3339()));
    assert_eq!(
        rfc3339_utc(UNIX_EPOCH - Duration::from_secs(5)),
        "1970-01-01T00:00:00Z"
    );
}

#[test]
fn sha256_of_known_content() {
    let dir = temp_dir("sha");
    let f = dir.join("abc");
    fs::write(&f, b"abc").expect("write");
    assert_eq!(
        sha256_file(&f).expect("sha"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(sha256_file(&dir.join("missing")).is_err());
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn write_reports_unwritable_path() {
    let dir = temp_dir("unwritable");
    let receipt = sample(&dir);
    let target = dir.join("no/such/dir/receipt.json");
    let err = receipt.write(&target).expect_err("must fail");
    assert!(
        err.to_string().contains("no/such/dir/receipt.json"),
        "{err}"
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn environment_and_parity_block() {
    let env = Environment::detect(3);
    assert_eq!(env.threads, 3);
    assert!(!env.cpu.is_empty());
    let b = TokenParityBlock::new(4, 5, Some(4));
    assert_eq!(b.status, TokenParityStatus::Mismatch);
    assert_eq!(
        TokenParityBlock::new(4, 4, None).status,
        TokenParityStatus::Ok
    );
    for (s, code) in [
        (RunStatus::Ok, 0),
        (RunStatus::Diverged, 1),
        (RunStatus::TokenMismatch, 2),
        (RunStatus::VocabMismatch, 2),
        (RunStatus::UsageError, 2),
        (RunStatus::Error, 3),
    ] {
        assert_eq!(s.exit_code(), code);
        assert_eq!(serde_json::to_value(s).unwrap(), s.name());
    }
}
