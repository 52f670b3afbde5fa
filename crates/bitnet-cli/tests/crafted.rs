//! `bitnet run` on every crafted variant of tiny models of the three architectures: no
//! variant panics, aborts, hangs, exceeds 2 GB, or exits 0 unless it is a valid model.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use bitnet_gguf::GgmlType;
use bitnet_minimodel::crafted::{self, Expect, Outcome};
use bitnet_minimodel::{Arch, Spec};

const MEMORY: u64 = 2 << 30;
const TIMEOUT: Duration = Duration::from_secs(120);

fn run(model: &Path) -> Outcome {
    let args: Vec<OsString> = vec![
        "run".into(),
        "--prompt".into(),
        crafted::PROMPT.into(),
        "-n".into(),
        "2".into(),
        "--threads".into(),
        "2".into(),
        "--model".into(),
        model.into(),
    ];
    crafted::run_limited(
        &assert_cmd::cargo::cargo_bin("bitnet"),
        &args,
        MEMORY,
        TIMEOUT,
    )
    .expect("prlimit (util-linux) runs")
}

/// Every failure of one architecture, reported together.
fn check_all(arch: Arch, qtype: GgmlType, vocab: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(arch, qtype);
    let vocab = bitnet_fixtures::vocab(vocab);
    let mut failures = Vec::new();
    for v in crafted::variants(arch, qtype) {
        let path = dir.path().join("crafted.gguf");
        v.write(&spec, &vocab, &path).unwrap();
        let out = run(&path);
        let ok = match &v.expect {
            Expect::Refused(subject) => {
                out.code == Some(3) && out.stderr.contains(subject.as_str())
            }
            Expect::Runs => out.code == Some(0),
            Expect::NonFinite => {
                out.code == Some(3)
                    && out.stderr.contains("not finite")
                    && out.stderr.contains("they first appear in")
            }
            Expect::Unrepresentable => {
                out.code == Some(3) && out.stderr.contains("cannot represent")
            }
            Expect::SameAsReference => {
                out.code == Some(0) || (out.code == Some(3) && out.stderr.contains("not finite"))
            }
        };
        if !ok {
            failures.push(format!(
                "{} ({}): expected {:?}, got {}",
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
