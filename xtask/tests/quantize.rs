//! `xtask quantize` end to end against the real llama.cpp reference, and the project's test
//! models (`bitnet_cpp::test_models`): llama.cpp's mixes, progress, refusals, exit codes.

#[path = "../../crates/bitnet-cpp/tests/common/mix.rs"]
mod mix;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bitnet_cpp::test_models::{self, Base};
use bitnet_gguf::{GgmlType, GgufFile};

fn xtask() -> Command {
    Command::cargo_bin("xtask").unwrap()
}

/// One run: exit code, stdout, stderr.
fn quantize(
    model: &Path,
    ftype: &str,
    out: &Path,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let o = xtask()
        .arg("quantize")
        .arg("--model")
        .arg(model)
        .args(["--type", ftype, "-o"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn tiny_llama() -> PathBuf {
    test_models::base_path(Base::TinyLlama).unwrap()
}

#[test]
fn quantize_writes_llama_cpps_mix_with_a_progress_line_per_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_llama();
    let out = dir.path().join("q4_k_m.gguf");
    // Lower case, as llama-quantize accepts it.
    let (code, stdout, stderr) = quantize(&base, "q4_k_m", &out, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
    let input = GgufFile::open(&base).unwrap();
    let output = GgufFile::open(&out).unwrap();
    let counts = mix::assert_mix("Q4_K_M", &input, &output);
    let n = output.tensors().len();
    // Not a terminal: one line per tensor, in file order, with both types.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), n, "{stderr}");
    for (i, (line, t)) in lines.iter().zip(output.tensors()).enumerate() {
        let what = if t.ty == GgmlType::F32 {
            "f32 copied".to_string()
        } else {
            format!("f32 → {}", t.ty)
        };
        assert_eq!(*line, format!("[{:>2}/{n}] {} {what}", i + 1, t.name));
    }
    let summary = format!(
        "{} q4_K, {} q6_K",
        counts[&GgmlType::Q4_K],
        counts[&GgmlType::Q6_K]
    );
    assert!(
        stderr.contains(&format!("wrote {}", out.display())),
        "{stderr}"
    );
    assert!(stderr.contains(&summary), "{summary} in {stderr}");
}

#[test]
fn refused_and_unknown_types_exit_2_with_the_accepted_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let base = tiny_llama();
    for (ftype, why) in [
        ("iq2_xxs", "iq2_xxs"),
        ("IQ4_XS", "iq4_xs"),
        ("mxfp4_moe", "mxfp4"),
        ("Q2_K_S", "importance matrix"),
        ("COPY", "not a quantization"),
        ("Q4_K_X", "unknown quantization type"),
    ] {
        let (code, stdout, stderr) = quantize(&base, ftype, &out, &[]);
        assert_eq!(code, Some(2), "{ftype}: {stderr}");
        assert!(stdout.is_empty());
        for needle in [
            why,
            "accepted: Q4_0, Q4_1, Q5_0",
            "Q4_K_M",
            "TQ2_0",
            "IQ4_NL",
        ] {
            assert!(stderr.contains(needle), "{ftype}: {needle:?} in {stderr}");
        }
    }
    assert!(!out.exists());
}

#[test]
fn bad_paths_have_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_llama();
    // Output = input, spelled differently: usage (2), and the input is untouched.
    let before = std::fs::metadata(&base).unwrap().modified().unwrap();
    let same = base
        .parent()
        .unwrap()
        .join(".")
        .join(base.file_name().unwrap());
    let (code, _, stderr) = quantize(&base, "Q8_0", &same, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the output is the input file"), "{stderr}");
    assert_eq!(
        std::fs::metadata(&base).unwrap().modified().unwrap(),
        before
    );
    // A missing or corrupt input: runtime error (3) naming the file.
    let missing = dir.path().join("missing-model.gguf");
    let (code, _, stderr) = quantize(&missing, "Q8_0", &dir.path().join("o.gguf"), &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("missing-model.gguf"), "{stderr}");
    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let (code, _, stderr) = quantize(&corrupt, "Q8_0", &dir.path().join("o.gguf"), &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("corrupt.gguf"), "{stderr}");
    // A directory that does not exist for the output.
    let (code, _, stderr) = quantize(&base, "Q8_0", &dir.path().join("no/dir/o.gguf"), &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn requantizing_needs_the_flag_and_works_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let smollm2 = bitnet_fixtures::smollm2();
    let out = dir.path().join("smollm2-q8_0.gguf");
    let (code, _, stderr) = quantize(&smollm2, "Q8_0", &out, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("requantizing from type q4_1 is disabled"),
        "llama.cpp's own reason: {stderr}"
    );
    assert!(stderr.contains("--allow-requantize"), "the fix: {stderr}");
    assert!(!out.exists(), "no partial output");
    let (code, _, stderr) = quantize(&smollm2, "Q8_0", &out, &["--allow-requantize"]);
    assert_eq!(code, Some(0), "{stderr}");
    mix::assert_mix(
        "Q8_0",
        &GgufFile::open(&smollm2).unwrap(),
        &GgufFile::open(&out).unwrap(),
    );
    assert!(stderr.contains("q4_1 → q8_0"), "{stderr}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[cfg(unix)]
#[test]
fn non_utf8_paths_work_on_the_command_line() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(OsStr::from_bytes(b"entr\xe9e.gguf"));
    std::fs::copy(tiny_llama(), &input).unwrap();
    let output = dir.path().join(OsStr::from_bytes(b"sortie-\xff.gguf"));
    let (code, _, stderr) = quantize(&input, "TQ2_0", &output, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let f = GgufFile::open(&output).unwrap();
    assert!(f.tensors().iter().any(|t| t.ty == GgmlType::TQ2_0));
}

/// The project's test models: every one builds, holds the mix llama-quant.cpp's rules give
/// its base, and is reused rather than rebuilt.
#[test]
fn test_models_have_llama_cpps_mixes_and_are_cached() {
    let models = test_models::all().unwrap();
    assert_eq!(models.len(), 8 + 9 + 2);
    for (base, ftype, path) in &models {
        let input = GgufFile::open(test_models::base_path(*base).unwrap()).unwrap();
        let output = GgufFile::open(path).unwrap();
        let counts = mix::assert_mix(ftype, &input, &output);
        let has = |t: GgmlType| counts.contains_key(&t);
        match (base, *ftype) {
            // The description of SmolLM2 Q4_K_M: q4_K, q6_K, q5_0 (576-wide rows
            // fall back from q4_K) and q8_0 (the tied 576-wide head).
            (Base::Smollm2, "Q4_K_M") => {
                for t in [
                    GgmlType::Q4_K,
                    GgmlType::Q6_K,
                    GgmlType::Q5_0,
                    GgmlType::Q8_0,
                ] {
                    assert!(has(t), "SmolLM2 Q4_K_M without {t}: {counts:?}");
                }
            }
            (Base::TinyBitnet, _) => {
                let head = output
                    .tensors()
                    .iter()
                    .find(|t| t.name == "token_embd.weight")
                    .unwrap()
                    .ty;
                assert_eq!(head, GgmlType::Q6_K, "{ftype}: the tied head");
            }
            _ => {}
        }
    }
    // A second call finds every file up to date and rebuilds nothing.
    let stamps: Vec<_> = models
        .iter()
        .map(|(_, _, p)| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    let again = test_models::all().unwrap();
    for ((_, _, p), stamp) in again.iter().zip(stamps) {
        assert_eq!(
            std::fs::metadata(p).unwrap().modified().unwrap(),
            stamp,
            "{}",
            p.display()
        );
    }
    assert!(matches!(
        test_models::path(Base::Smollm2, "TQ1_0"),
        Err(test_models::TestModelError::NotATestModel { .. })
    ));
}
