//! `--locate`, the labels, teacher-forced steps and the configuration gate, against the real
//! C++ references. Bugs are planted in the engine with the test-only `fault-injection`
//! feature of bitnet-inference (the model's configuration stays right, as a real bug's does),
//! and `--locate` must name the layer and op where each one lives, in text and in JSON.
//!
//! Unless a test says otherwise, both sides run the references' exact configuration
//! (`--exact-reference`: F32 K cache, no flash attention), where every intermediate tensor of
//! ggml's graph exists, the attention weights included.

use std::path::{Path, PathBuf};

use bitnet_crossval::locate::{LocateMode, LocateOptions, LocateTolerance};
use bitnet_crossval::receipt::RunStatus;
use bitnet_crossval::runner::{run_per_token, OutputFormat, PerTokenConfig, PerTokenOutcome};
use bitnet_crossval::validate_receipt;
use bitnet_crossval::verdict::TIE_MARGIN;
use bitnet_gguf::GgmlType;
use bitnet_inference::fault::{arm, Fault};
use bitnet_inference::{Eval, FlashAttn, Model, Outputs, RunChoice};
use bitnet_minimodel::{Arch, Spec};
use serde_json::Value;

const PROMPT: &str = "The quick brown fox jumps over the lazy dog";

/// A tiny model in its own directory (variants of one architecture never share a file, so a
/// fault armed for one cannot reach another test).
fn model(dir: &Path, name: &str, spec: Spec, vocab: &str) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    bitnet_minimodel::write_tiny(&sub, &spec, &bitnet_fixtures::vocab(vocab)).unwrap()
}

fn run(
    model: &Path,
    mode: Option<LocateMode>,
    format: OutputFormat,
    tweak: impl FnOnce(&mut PerTokenConfig),
) -> PerTokenOutcome {
    let mut cfg = PerTokenConfig::new(model, PROMPT);
    cfg.format = format;
    cfg.run = RunChoice {
        exact: true,
        ..RunChoice::default()
    };
    cfg.locate = mode.map(|mode| LocateOptions {
        mode,
        tolerance: LocateTolerance::default(),
    });
    tweak(&mut cfg);
    let out = run_per_token(&cfg, &mut |_| {});
    assert!(
        out.exit_code <= 2,
        "exit {}: {}{}",
        out.exit_code,
        out.stdout,
        out.stderr
    );
    out
}

fn json(out: &PerTokenOutcome) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// `--locate` in text and JSON names `name` (layer, op) as the first divergence, first
/// beyond the tolerance at `position`, with only tensors within the tolerance before it.
fn assert_located(model: &Path, name: &str, layer: Option<u64>, op: &str, position: u64) {
    let text = run(model, Some(LocateMode::First), OutputFormat::Text, |_| {});
    let layer_text = match layer {
        Some(l) => format!("layer {l}"),
        None => "output".to_string(),
    };
    let headline =
        format!("✗ first divergence: {name} ({layer_text}, op {op}), position {position}, shape");
    assert!(
        text.stdout.contains(&headline),
        "{headline}\n{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("the steps just before it:"),
        "{}",
        text.stdout
    );

    let out = run(model, Some(LocateMode::First), OutputFormat::Json, |_| {});
    let doc = json(&out);
    let loc = &doc["locate"];
    let first = &loc["first_divergence"];
    assert_eq!(first["tensor"]["name"], name, "{loc}");
    assert_eq!(first["tensor"]["op"], op);
    assert_eq!(
        first["tensor"]["layer"],
        layer.map_or(Value::Null, Value::from)
    );
    assert_eq!(first["tensor"]["first_position_beyond"], position);
    assert_eq!(first["tensor"]["within"], false);
    assert!(first["tensor"]["metrics"]["nmse"].as_f64().unwrap() > 1e-6);
    let before = first["before"].as_array().unwrap();
    assert!(!before.is_empty() || name == "attn_norm-0");
    assert!(before.iter().all(|t| t["within"] == true), "{before:?}");
    // Every tensor compared before the divergence was within the tolerance: it is the first.
    let tensors = loc["tensors"].as_array().unwrap();
    assert_eq!(tensors.last().unwrap()["name"], name);
    assert!(tensors[..tensors.len() - 1]
        .iter()
        .all(|t| t["within"] == true));
    assert_eq!(loc["stopped_early"], true);
    assert!(loc["engine_only"].as_array().unwrap().is_empty(), "{loc}");
}

#[test]
fn an_epsilon_change_in_one_ffn_norm_is_located_at_that_layer_and_op() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        layers: Some(4),
        ..Spec::new(Arch::Llama, GgmlType::F32)
    };
    let m = model(dir.path(), "eps", spec, "llama-bpe");
    arm(
        &m,
        Fault::FfnNormEpsilon {
            layer: 2,
            delta: 0.05,
        },
    );
    assert_located(&m, "ffn_norm-2", Some(2), "ffn_norm", 0);

    // The receipt carries the same report, and validates.
    let receipt = dir.path().join("receipt.json");
    let out = run(&m, Some(LocateMode::First), OutputFormat::Json, |c| {
        c.receipt = Some(receipt.clone())
    });
    let doc = json(&out);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
    validate_receipt(&written).unwrap();
    assert_eq!(written["locate"], doc["locate"]);
    assert_eq!(written["config_gate"]["ok"], true);
}

#[test]
fn silu_instead_of_relu_squared_is_located_at_the_activation() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "silu",
        Spec::new(Arch::BitnetB158, GgmlType::I2_S),
        "llama-bpe",
    );
    arm(&m, Fault::SiluInsteadOfRelu2);
    // bitnet.cpp names the gated activation `ffn_out`.
    assert_located(&m, "ffn_out-0", Some(0), "ffn_out", 0);
}

#[test]
fn a_wrong_rope_base_is_located_at_the_queries_from_position_1() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "rope",
        Spec::new(Arch::Llama, GgmlType::F32),
        "llama-bpe",
    );
    arm(&m, Fault::RopeBase { factor: 3.0 });
    // Position 0 rotates by angle 0 whatever the base: the first difference is at 1.
    assert_located(&m, "Qcur-0", Some(0), "Qcur", 1);
}

#[test]
fn an_off_by_one_causal_mask_is_located_at_the_attention_weights() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "mask",
        Spec::new(Arch::Bitnet, GgmlType::TQ2_0),
        "llama-bpe",
    );
    arm(&m, Fault::CausalMaskOffByOne);
    assert_located(&m, "kq_soft_max-0", Some(0), "kq_soft_max", 0);
}

/// Every tensor of a tiny model is bit-identical to the reference's (so `--locate all`
/// reports zero everywhere), with the explicit mappings listed.
#[test]
fn locate_all_reports_zero_difference_on_every_tensor_of_tiny_models() {
    let dir = tempfile::tempdir().unwrap();
    // bitnet.cpp's float orders are reproduced at the host's width; bit for bit measured on
    // AVX-512 hosts (VectorWidth::host()).
    let exact_bitnet_cpp = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq");
    let cases = [
        (Arch::Llama, GgmlType::F32, 14),
        (Arch::Bitnet, GgmlType::TQ2_0, 16),
        (Arch::BitnetB158, GgmlType::I2_S, 16),
    ];
    for (i, (arch, qtype, per_layer)) in cases.into_iter().enumerate() {
        let m = model(
            dir.path(),
            &format!("zero{i}"),
            Spec::new(arch, qtype),
            "llama-bpe",
        );
        let out = run(&m, Some(LocateMode::All), OutputFormat::Json, |_| {});
        let doc = json(&out);
        let loc = &doc["locate"];
        let tensors = loc["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), 2 * per_layer + 2, "{arch:?}: {loc}");
        assert_eq!(loc["tensors_compared"], tensors.len());
        assert!(loc["engine_only"].as_array().unwrap().is_empty(), "{loc}");
        assert!(
            loc["reference_only"].as_array().unwrap().is_empty(),
            "{loc}"
        );
        if arch == Arch::BitnetB158 && !exact_bitnet_cpp {
            // bitnet.cpp's 8-lane float orders are not reproduced bit for bit (parity.rs).
            assert!(tensors
                .iter()
                .all(|t| t["metrics"]["min_cosine"].as_f64().unwrap() > 0.999));
            continue;
        }
        for t in tensors {
            let m = &t["metrics"];
            assert_eq!(m["nmse"], 0.0, "{arch:?} {t}");
            assert_eq!(m["max_abs_diff"], 0.0, "{arch:?} {t}");
            assert_eq!(m["min_cosine"], 1.0, "{arch:?} {t}");
        }
        assert_eq!(loc["first_divergence"], Value::Null);
        let mappings = loc["mappings"].as_array().unwrap();
        let kq = if arch == Arch::BitnetB158 {
            "kq_soft_max_ext"
        } else {
            "kq_soft_max"
        };
        assert!(
            mappings.iter().any(|m| m.as_str().unwrap().starts_with(kq)),
            "{mappings:?}"
        );
        if arch == Arch::Bitnet {
            // upstream bitnet's scales: compared with llama.cpp's separate `_s` ops.
            for op in ["ffn_up", "ffn_gate"] {
                let t = tensors
                    .iter()
                    .find(|t| t["name"] == format!("{op}-0"))
                    .unwrap();
                assert_eq!(t["reference"], format!("{op}_s-0"));
            }
        }
        let text = run(&m, Some(LocateMode::All), OutputFormat::Text, |_| {});
        assert!(
            text.stdout.contains("✓ no tensor beyond nmse ≤ 1e-6"),
            "{}",
            text.stdout
        );
        assert!(text.stdout.contains("✓ layer 1"), "{}", text.stdout);
        assert!(
            text.stdout.contains("mapped explicitly:"),
            "{}",
            text.stdout
        );
    }
}

/// A real model under the default configuration: every one of its 422 tensors compared, and
/// the per-layer profile bounded by the tolerance — in this configuration the engine is
/// bit-identical to llama.cpp on SmolLM2, so the profile is flat zero (trivially monotone).
#[test]
fn smollm2_noise_profile_is_bounded_and_flat() {
    let m = bitnet_fixtures::require(bitnet_fixtures::SMOLLM2);
    let out = run(&m, Some(LocateMode::All), OutputFormat::Json, |c| {
        c.prompt = "The capital of France is".into();
        c.max_tokens = 1;
    });
    assert_eq!(out.status, RunStatus::Ok, "{}", out.stderr);
    let doc = json(&out);
    let loc = &doc["locate"];
    let layers = loc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30 + 1, "30 layers and the output");
    assert_eq!(loc["tensors_compared"], 30 * 14 + 2);
    assert!(loc["engine_only"].as_array().unwrap().is_empty());
    for l in layers {
        let nmse = l["max_nmse"].as_f64().unwrap();
        assert!(nmse.is_finite() && nmse <= 1e-6, "{l}");
        assert_eq!(l["beyond"], 0, "{l}");
        assert_eq!(
            l["max_abs_diff"], 0.0,
            "bit-identical in this configuration: {l}"
        );
    }
}

/// Steps compare the two sides on the reference's prefix: after the picks differ, both
/// continue with the reference's token, so later steps still compare (and here agree again),
/// while the engine running on its own continues differently.
#[test]
fn greedy_steps_are_teacher_forced() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        seed: 3,
        ..Spec::new(Arch::Llama, GgmlType::F32)
    };
    let m = model(dir.path(), "tf", spec, "llama-bpe");
    arm(&m, Fault::RopeBase { factor: 3.0 });
    let out = run(&m, None, OutputFormat::Json, |c| c.max_tokens = 8);
    let doc = json(&out);
    let steps = doc["decode"].as_array().unwrap();
    assert_eq!(steps.len(), 8, "teacher forcing never stops early");
    let tok = |s: &Value, k: &str| s[k].as_u64().unwrap() as u32;
    let first = steps
        .iter()
        .position(|s| s["match"] == false)
        .expect("a differing step");
    assert!(first + 2 < steps.len(), "steps follow the first difference");
    assert_eq!(doc["first_differing_step"]["step"], first);
    assert!(steps[first + 1..].iter().any(|s| s["match"] == true));
    for s in steps {
        assert_eq!(s["fed_token"], s["cpp_token"]);
    }

    // Each Rust pick is the engine's arg-max on the prompt plus the reference's picks.
    let engine = Model::load(&m).unwrap();
    let prompt: Vec<u32> = doc["tokens"]["rust"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let fed: Vec<u32> = steps.iter().map(|s| tok(s, "fed_token")).collect();
    // In the run's configuration (the exact one).
    let exact = RunChoice {
        exact: true,
        ..RunChoice::default()
    }
    .config_for(engine.numerics(), 0);
    for (k, s) in steps.iter().enumerate() {
        let mut ids = prompt.clone();
        ids.extend_from_slice(&fed[..k]);
        let logits = engine
            .eval(
                &mut engine.new_state_with(&exact).unwrap(),
                Eval::new(&ids).outputs(Outputs::Last),
            )
            .unwrap();
        assert_eq!(
            bitnet_inference::ops::argmax(&logits),
            tok(s, "rust_token"),
            "step {k}"
        );
    }
    // Free-running, the engine would have gone its own way from the first difference on.
    let free = engine
        .generate_greedy(&prompt, 8, |_| false, |_| {})
        .unwrap();
    assert_eq!(free[..first], fed[..first]);
    assert_eq!(free[first], tok(&steps[first], "rust_token"));
    assert_ne!(free, fed, "free-running would compare other prefixes");
}

/// The labels, end to end: a widened causal mask gives drifting positions, a near tie
/// flipped and real differences; each label agrees with its definition.
#[test]
fn labels_follow_their_definitions_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        seed: 1,
        ..Spec::new(Arch::Llama, GgmlType::F32)
    };
    let m = model(dir.path(), "labels", spec, "llama-bpe");
    arm(&m, Fault::CausalMaskOffByOne);
    let out = run(&m, None, OutputFormat::Json, |c| c.max_tokens = 8);
    assert_eq!(out.exit_code, 1);
    let doc = json(&out);
    let mut rows: Vec<&Value> = doc["positions"].as_array().unwrap().iter().collect();
    rows.extend(
        doc["decode"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["metrics"]),
    );
    let mut seen = std::collections::BTreeSet::new();
    for r in rows {
        let label = r["label"].as_str().unwrap();
        seen.insert(label.to_string());
        let ok = r["ok"] == true;
        let same = r["rust_top1"] == r["cpp_top1"];
        let swapped = r["rust_top2"] == r["cpp_top1"] && r["cpp_top2"] == r["rust_top1"];
        let near = r["cpp_top2_margin"].as_f64().unwrap() < TIE_MARGIN;
        let expected = if ok {
            "match"
        } else if same {
            "drift"
        } else if swapped && near {
            "tie-flip"
        } else {
            "wrong"
        };
        assert_eq!(label, expected, "{r}");
    }
    for label in ["drift", "tie-flip", "wrong"] {
        assert!(seen.contains(label), "no {label} in {seen:?}");
    }
    let text = run(&m, None, OutputFormat::Text, |c| c.max_tokens = 8);
    assert!(text.stdout.contains("[tie-flip]"), "{}", text.stdout);
    assert!(
        text.stdout.contains(
            "greedy (teacher-forced): the choices first differ at step 1, labelled tie-flip"
        ),
        "{}",
        text.stdout
    );
}

#[test]
fn the_configuration_gate_stops_another_model_with_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let ours = model(
        dir.path(),
        "a",
        Spec::new(Arch::Llama, GgmlType::F32),
        "llama-bpe",
    );
    let other = model(
        dir.path(),
        "b",
        Spec {
            rope_base: Some(500_000.0),
            ..Spec::new(Arch::Llama, GgmlType::F32)
        },
        "llama-bpe",
    );
    let text = run(&ours, Some(LocateMode::First), OutputFormat::Text, |c| {
        c.cpp_model = Some(other.clone())
    });
    assert_eq!(text.status, RunStatus::ConfigMismatch);
    assert_eq!(text.exit_code, 2);
    assert!(!text.logits_evaluated);
    assert!(
        text.stderr.contains("Configuration mismatch"),
        "{}",
        text.stderr
    );
    let line = text
        .stderr
        .lines()
        .find(|l| l.contains("rope_freq_base"))
        .unwrap();
    assert!(
        line.contains('✗') && line.contains("10000") && line.contains("500000"),
        "{line}"
    );
    assert!(
        text.stderr.contains("fix: rope_freq_base: 10000 in"),
        "{}",
        text.stderr
    );
    assert!(text.stderr.contains("--locate refused"), "{}", text.stderr);

    let out = run(&ours, None, OutputFormat::Json, |c| {
        c.cpp_model = Some(other.clone())
    });
    let doc = json(&out);
    assert_eq!(doc["status"], "config_mismatch");
    let facts = doc["config_gate"]["facts"].as_array().unwrap();
    let differing: Vec<&str> = facts
        .iter()
        .filter(|f| f["status"] == "differs")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(differing, ["rope_freq_base"]);
    let rope = facts
        .iter()
        .find(|f| f["name"] == "rope_freq_base")
        .unwrap();
    assert_eq!(rope["source"], "graph", "read from the reference's RoPE op");
    assert_eq!(doc["positions"], Value::Null);
    // The run configuration (how the model is run) is another thing, checked before the
    // gate (what the model is): stated, and as asked.
    assert_eq!(doc["run_configuration"]["flash_attn"], false, "{doc:#}");
    assert_eq!(doc["run_configuration"]["cache_type_k"], "f32", "{doc:#}");
}

/// With flash attention on, neither ggml's graph nor the engine forms the attention weights:
/// `--locate` compares every other tensor and says why `kq_soft_max` is not among them, in
/// text, JSON and the receipt.
#[test]
fn locate_under_flash_attention_says_the_attention_weights_are_not_computed() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "flash",
        Spec::new(Arch::Llama, GgmlType::F32),
        "llama-bpe",
    );
    let flash = |c: &mut PerTokenConfig| {
        c.run = RunChoice {
            flash_attn: Some(FlashAttn::On),
            ..RunChoice::default()
        }
    };
    let receipt = dir.path().join("receipt.json");
    let out = run(&m, Some(LocateMode::All), OutputFormat::Json, |c| {
        flash(c);
        c.receipt = Some(receipt.clone());
    });
    assert_eq!(out.exit_code, 0, "{}{}", out.stdout, out.stderr);
    let doc = json(&out);
    assert_eq!(doc["run_configuration"]["flash_attn"], true, "{doc:#}");
    let loc = &doc["locate"];
    let names: Vec<&str> = loc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // The Llama graph's 14 tensors per layer but the weights, over two layers, then 2.
    assert_eq!(names.len(), 2 * 13 + 2, "{loc}");
    assert!(names.iter().all(|n| !n.starts_with("kq_soft_max")), "{loc}");
    assert!(names.contains(&"kqv_out-1"), "{loc}");
    let not_computed = loc["not_computed"].as_array().unwrap();
    assert_eq!(not_computed.len(), 1, "{loc}");
    assert!(
        not_computed[0]
            .as_str()
            .unwrap()
            .starts_with("kq_soft_max: flash attention is on"),
        "{loc}"
    );
    assert!(loc["engine_only"].as_array().unwrap().is_empty(), "{loc}");
    assert!(
        loc["reference_only"].as_array().unwrap().is_empty(),
        "{loc}"
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
    validate_receipt(&written).unwrap();
    assert_eq!(written["locate"], doc["locate"]);

    let text = run(&m, Some(LocateMode::First), OutputFormat::Text, flash);
    assert!(
        text.stdout
            .contains("not computed in this configuration: kq_soft_max: flash attention is on"),
        "{}",
        text.stdout
    );
}

/// `--cpp-model` with the f32 original of a quantized model: hyper-parameters identical,
/// tensor types listed and allowed.
#[test]
fn different_tensor_types_are_listed_and_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = model(
        dir.path(),
        "q8",
        Spec::new(Arch::Llama, GgmlType::Q8_0),
        "llama-bpe",
    );
    let f32 = model(
        dir.path(),
        "f32",
        Spec::new(Arch::Llama, GgmlType::F32),
        "llama-bpe",
    );
    let text = run(&q8, None, OutputFormat::Text, |c| {
        c.cpp_model = Some(f32.clone())
    });
    assert_ne!(text.status, RunStatus::ConfigMismatch, "{}", text.stderr);
    assert!(
        text.stdout
            .contains("config: hyper-parameters identical; tensor types differ (allowed):"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("× q8_0 here, f32 in --cpp-model"),
        "{}",
        text.stdout
    );
    let out = run(&q8, None, OutputFormat::Json, |c| {
        c.cpp_model = Some(f32.clone())
    });
    let gate = &json(&out)["config_gate"];
    assert_eq!(gate["ok"], true);
    let types = gate["tensor_types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["tensor"] == "blk.0.attn_q.weight"
        && t["engine"] == "q8_0"
        && t["reference"] == "f32"));
}

#[test]
fn locate_is_refused_when_the_tokens_differ() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "spm",
        Spec::new(Arch::Llama, GgmlType::F32),
        "llama-spm",
    );
    let tok = bitnet_fixtures::require(bitnet_fixtures::LLAMA2_MISLABELLED_TOKENIZER_JSON);
    let set_tok = |c: &mut PerTokenConfig| c.tokenizer = Some(tok.clone());
    let text = run(&m, Some(LocateMode::All), OutputFormat::Text, set_tok);
    assert_eq!(text.status, RunStatus::TokenMismatch);
    assert!(text.stderr.contains("Token Sequence Mismatch"));
    assert!(
        text.stderr
            .contains("--locate refused: the token sequences differ"),
        "{}",
        text.stderr
    );
    let out = run(&m, Some(LocateMode::All), OutputFormat::Json, |c| {
        c.tokenizer = Some(tok.clone())
    });
    let doc = json(&out);
    assert_eq!(out.exit_code, 2);
    assert!(doc["locate"]["refused"]
        .as_str()
        .unwrap()
        .contains("token sequences differ"));
}
