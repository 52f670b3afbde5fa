//! What the `xtask` integration tests share: tiny models on real vocabularies, the
//! `crossval-per-token` command, and the "exactly one JSON document" check. Each test binary
//! declares it `pub mod common;`, so the helpers it does not call are its public items, not dead code.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bitnet_gguf::GgmlType;
use bitnet_minimodel::{Arch, Spec};
use serde_json::Value;

/// A tiny random-weight model on the real vocabulary `vocab` (a `bitnet_fixtures::vocab` name).
pub fn tiny(dir: &Path, arch: Arch, qtype: GgmlType, vocab: &str, seed: u64) -> PathBuf {
    tiny_on(dir, arch, qtype, &bitnet_fixtures::vocab(vocab), seed)
}

/// A tiny random-weight model on the vocabulary of the GGUF file `vocab`.
pub fn tiny_on(dir: &Path, arch: Arch, qtype: GgmlType, vocab: &Path, seed: u64) -> PathBuf {
    let spec = Spec {
        seed,
        ..Spec::new(arch, qtype)
    };
    bitnet_minimodel::write_tiny(dir, &spec, vocab).unwrap()
}

/// A tiny llama f32 model on the `vocab` vocabulary whose `tokenizer.chat_template` is
/// `template`, written into the subdirectory `name` of `dir`.
pub fn tiny_with_chat_template(dir: &Path, vocab: &str, template: &str, name: &str) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let spec = Spec {
        chat_template: Some(template.to_string()),
        ..Spec::new(Arch::Llama, GgmlType::F32)
    };
    bitnet_minimodel::write_tiny(&sub, &spec, &bitnet_fixtures::vocab(vocab)).unwrap()
}

/// `xtask crossval-per-token --model MODEL EXTRA...`.
pub fn crossval(model: &Path, extra: &[&str]) -> Command {
    let mut c = Command::cargo_bin("xtask").unwrap();
    c.arg("crossval-per-token")
        .arg("--model")
        .arg(model)
        .args(extra);
    c
}

/// stdout must be exactly one JSON document.
pub fn one_json(out: &[u8]) -> Value {
    let text = std::str::from_utf8(out).unwrap();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let doc = stream.next().expect("a JSON document").expect("valid JSON");
    assert!(
        stream.next().is_none(),
        "more than one JSON document: {text}"
    );
    doc
}

/// Runs `command` expecting `code`; returns (stdout, stderr).
pub fn run(command: &mut Command, code: i32) -> (String, String) {
    let out = command.assert().code(code).get_output().clone();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
