//! `xtask bench` end to end on a tiny model, against the real llama.cpp reference.

use std::path::Path;

use assert_cmd::Command;
use bitnet_gguf::GgmlType;
use bitnet_minimodel::{Arch, Spec};

fn tiny(dir: &Path) -> std::path::PathBuf {
    bitnet_minimodel::write_tiny(
        dir,
        &Spec::new(Arch::Llama, GgmlType::Q8_0),
        &bitnet_fixtures::vocab("llama-spm"),
    )
    .unwrap()
}

fn xtask() -> Command {
    Command::cargo_bin("xtask").unwrap()
}

/// A fake `llama-bench` that prints what `-o json` prints, so the comparison with the user's
/// own llama-bench is tested without building one.
fn fake_llama_bench(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("llama-bench");
    std::fs::write(
        &path,
        r#"#!/bin/sh
echo "$@" > "$(dirname "$0")/args"
cat <<'EOF'
[{"build_commit":"fake","cpu_info":"test cpu","type_k":"f16","type_v":"f16","flash_attn":-1,"n_prompt":16,"n_gen":0,"avg_ts":200.0,"stddev_ts":4.0},
 {"build_commit":"fake","n_prompt":0,"n_gen":4,"avg_ts":50.0,"stddev_ts":1.0}]
EOF
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn json_report_has_both_engines_with_deviations_host_and_llama_bench() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let lb = fake_llama_bench(dir.path());
    let out = xtask()
        .args(["bench", "--prompt-tokens", "16", "--gen-tokens", "4"])
        .args(["--repetitions", "3", "--threads", "2", "--format", "json"])
        .args(["--config", "default"])
        .arg("--model")
        .arg(&model)
        .arg("--llama-bench")
        .arg(&lb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for side in ["rust", "cpp"] {
        for key in ["pp_tps", "tg_tps"] {
            let v = r[side][key].as_f64().unwrap();
            assert!(v > 0.0 && v.is_finite(), "{side}.{key} = {v}");
        }
        for key in ["pp_sd", "tg_sd"] {
            assert!(r[side][key].as_f64().unwrap() >= 0.0, "{side}.{key}");
        }
        assert!(r[side]["peak_rss_kib"].as_u64().unwrap() > 0, "{side}");
        assert!(!r[side]["cpu_features"].as_str().unwrap().is_empty());
    }
    let ratio = r["ratio"]["pp_tps"].as_f64().unwrap();
    let expected = r["rust"]["pp_tps"].as_f64().unwrap() / r["cpp"]["pp_tps"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9 * expected);
    assert_eq!(r["repetitions"], 3);
    assert_eq!(r["cpp_backend"], "llama");
    assert!(r["host"]["cpus"].as_u64().unwrap() >= 1);
    assert!(r["host"]["quiet"].is_boolean());
    // Both engines ran llama.cpp's defaults (flash attention `auto` resolved to on).
    let c = &r["configuration"];
    assert_eq!(
        (c["cache_type_k"].as_str(), c["cache_type_v"].as_str()),
        (Some("f16"), Some("f16"))
    );
    assert_eq!(
        (c["flash_attn"].as_bool(), c["threads"].as_u64()),
        (Some(true), Some(2))
    );
    // The user's llama-bench ran with our sizes, repetitions, threads and configuration, and
    // is compared.
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    for expected in [
        "-p 16", "-n 4", "-r 3", "-t 2", "-ctk f16", "-ctv f16", "-fa auto", "-ub 512", "-o json",
    ] {
        assert!(args.contains(expected), "llama-bench args {args:?}");
    }
    assert_eq!(r["llama_bench"]["pp_tps"], 200.0);
    assert_eq!(r["llama_bench"]["build"]["build_commit"], "fake");
    let lb_ratio = r["llama_bench"]["ratio"]["tg_tps"].as_f64().unwrap();
    assert!((lb_ratio - r["rust"]["tg_tps"].as_f64().unwrap() / 50.0).abs() < 1e-9);
}

#[test]
fn text_report_names_the_method_and_cpu_features() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let out = xtask()
        .args(["bench", "--prompt-tokens", "8", "--gen-tokens", "2"])
        .args(["--repetitions", "1", "--threads", "1", "--config", "exact"])
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "configuration: K cache f32, V cache f32, flash attention off, n_ubatch 512, 1 thread",
        "method: llama-bench",
        "pp8 t/s",
        "tg2 t/s",
        "cpu (rust):",
        "cpu (c++):",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn bad_counts_are_usage_errors_and_a_failing_llama_bench_is_a_runtime_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    // Bad counts, and a run configuration llama.cpp refuses (a quantized V cache needs flash
    // attention).
    // `--config` names a whole configuration, so it cannot be combined with the flags that
    // set its parts.
    let bad_args: [&[&str]; 7] = [
        &["--repetitions", "0"],
        &["--prompt-tokens", "0"],
        &["-ub", "0"],
        &["-ctv", "q8_0", "-fa", "off"],
        &["--config", "exact", "-fa", "on"],
        &["--config", "default", "--exact-reference"],
        &["--config", "fast"],
    ];
    for bad in bad_args {
        xtask()
            .arg("bench")
            .args(bad)
            .arg("--model")
            .arg(&model)
            .assert()
            .code(2);
    }
    let out = xtask()
        .args([
            "bench",
            "--prompt-tokens",
            "4",
            "--gen-tokens",
            "1",
            "--repetitions",
            "1",
        ])
        .arg("--model")
        .arg(&model)
        .args(["--llama-bench", "/bin/false"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/bin/false exited"));
}
