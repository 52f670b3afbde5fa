//! `xtask crossval-per-token` on every crafted variant of tiny models of the three
//! architectures, against the real C++ references: a file either reference would refuse or
//! die on is refused before either side runs (exit 3, the key or tensor named); non-finite
//! logits are reported as such; nothing panics, aborts, hangs, exceeds 2 GB, or exits 0
//! unless the reference agrees.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use bitnet_gguf::GgmlType;
use bitnet_minimodel::crafted::{self, Expect, Outcome};
use bitnet_minimodel::{Arch, Spec};
use serde_json::Value;

const MEMORY: u64 = 2 << 30;
const TIMEOUT: Duration = Duration::from_secs(180);

fn crossval(model: &Path) -> Outcome {
    let args: Vec<OsString> = vec![
        "crossval-per-token".into(),
        "--prompt".into(),
        crafted::PROMPT.into(),
        "--max-tokens".into(),
        "2".into(),
        "--threads".into(),
        "2".into(),
        "--format".into(),
        "json".into(),
        "--model".into(),
        model.into(),
    ];
    crafted::run_limited(
        &assert_cmd::cargo::cargo_bin("xtask"),
        &args,
        MEMORY,
        TIMEOUT,
    )
    .expect("prlimit (util-linux) runs")
}

/// The one JSON document on stdout, or why there is none.
fn document(out: &Outcome) -> Result<Value, String> {
    let mut stream = serde_json::Deserializer::from_str(&out.stdout).into_iter::<Value>();
    let doc = stream
        .next()
        .ok_or("no JSON document")?
        .map_err(|e| e.to_string())?;
    if stream.next().is_some() {
        return Err("more than one JSON document".into());
    }
    Ok(doc)
}

fn check_all(arch: Arch, qtype: GgmlType, vocab: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(arch, qtype);
    let vocab = bitnet_fixtures::vocab(vocab);
    let mut failures = Vec::new();
    for v in crafted::variants(arch, qtype) {
        let path = dir.path().join("crafted.gguf");
        v.write(&spec, &vocab, &path).unwrap();
        let out = crossval(&path);
        let verdict = document(&out).and_then(|doc| {
            let error = doc["error"].as_str().unwrap_or("");
            let ok = match &v.expect {
                Expect::Refused(subject) => out.code == Some(3) && error.contains(subject.as_str()),
                Expect::Runs => out.code == Some(0) && doc["status"] == "ok",
                Expect::NonFinite => {
                    out.code == Some(3)
                        && error.contains("non-finite logits")
                        && error.contains("both sides alike")
                        && error.contains("in the engine they first appear in")
                }
                Expect::Unrepresentable => {
                    out.code == Some(3) && error.contains("cannot represent")
                }
                Expect::SameAsReference => {
                    (out.code == Some(0) && doc["status"] == "ok")
                        || (out.code == Some(3) && error.contains("both sides alike"))
                }
            };
            if ok {
                Ok(doc)
            } else {
                Err("unexpected outcome".into())
            }
        });
        if let Err(why) = verdict {
            failures.push(format!(
                "{} ({}): expected {:?}; {why}; got {}",
                v.name,
                v.rule,
                v.expect,
                out.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the {arch:?} variants failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn llama_f32_variants() {
    check_all(Arch::Llama, GgmlType::F32, "llama-spm");
}

#[test]
fn llama_q8_0_variants() {
    check_all(Arch::Llama, GgmlType::Q8_0, "llama-spm");
}

#[test]
fn bitnet_tq2_0_variants() {
    check_all(Arch::Bitnet, GgmlType::TQ2_0, "llama-spm");
}

#[test]
fn bitnet_b158_i2_s_variants() {
    check_all(Arch::BitnetB158, GgmlType::I2_S, "llama-bpe");
}

/// Text mode tells the same story as JSON for one variant of each item (15, 17, 18, 19, 20):
/// the exit code, and the key, tensor or characters on stderr.
#[test]
fn text_mode_names_the_same_problem() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(Arch::Llama, GgmlType::F32);
    let vocab = bitnet_fixtures::vocab("llama-spm");
    let cases = [
        ("block_count = 2^28", "llama.block_count"),
        ("RMS epsilon NaN", "llama.attention.layer_norm_rms_epsilon"),
        ("duplicate token text", "tokenizer.ggml.tokens"),
        ("vocabulary without byte tokens", "U+1F980"),
        (
            "NaN in every row of the token embedding",
            "both sides alike",
        ),
        ("an unknown extra tensor", "blk.0.mystery.weight"),
    ];
    let variants = crafted::variants(Arch::Llama, GgmlType::F32);
    for (name, needle) in cases {
        let v = variants.iter().find(|v| v.name == name).unwrap();
        let path = dir.path().join("crafted.gguf");
        v.write(&spec, &vocab, &path).unwrap();
        let args: Vec<OsString> = vec![
            "crossval-per-token".into(),
            "--prompt".into(),
            crafted::PROMPT.into(),
            "--max-tokens".into(),
            "2".into(),
            "--model".into(),
            path.into(),
        ];
        let out = crafted::run_limited(
            &assert_cmd::cargo::cargo_bin("xtask"),
            &args,
            MEMORY,
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(out.code, Some(3), "{name}: {}", out.describe());
        assert!(out.stderr.contains(needle), "{name}: {}", out.describe());
    }
}
