//! The rules the engine enforces on a model file, held against the C++ references: each
//! crafted variant is run by the reference directly (nothing in Rust stops it first), and a
//! rule called the reference's own must make the reference refuse the file or die on it —
//! an assertion or exception it dies of is quoted in the error, not buried under a
//! backtrace. The rules the engine adds of its own accord are run by the reference.

use std::time::Duration;

use bitnet_cpp::{BackendChoice, CppError, Session, SessionOptions};
use bitnet_gguf::GgmlType;
use bitnet_minimodel::crafted::{self, Reference};
use bitnet_minimodel::{Arch, Spec};

/// Load, tokenize the crafted prompt and evaluate it, as cross-validation would.
fn run_directly(path: &std::path::Path) -> Result<(), CppError> {
    let opts = SessionOptions {
        n_ctx: 64,
        // One variant makes llama.cpp loop forever (rope.dimension_count 0 on `bitnet`).
        timeout: Duration::from_secs(30),
        ..SessionOptions::default()
    };
    let mut s = Session::open(path, BackendChoice::Auto, &opts)?;
    let tokens = s.tokenize(crafted::PROMPT, true, false)?;
    s.eval(&tokens)?;
    Ok(())
}

fn check(arch: Arch, qtype: GgmlType, vocab: &str, spm: bool) {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(arch, qtype);
    let vocab = bitnet_fixtures::vocab(vocab);
    let mut wrong = Vec::new();
    for v in crafted::variants(arch, qtype) {
        let path = dir.path().join("crafted.gguf");
        v.write(&spec, &vocab, &path).unwrap();
        let fails = match v.reference {
            Reference::Fails => true,
            Reference::Runs => false,
            Reference::FailsOnSpm => spm,
        };
        match (fails, run_directly(&path)) {
            (true, Err(e @ CppError::Died { .. })) => {
                let msg = e.to_string();
                if !msg.contains("C++ said:") {
                    wrong.push(format!("{}: died without a quoted reason: {msg}", v.name));
                }
            }
            (true, Err(_)) | (false, Ok(())) => {}
            (true, Ok(())) => wrong.push(format!("{}: the reference ran it", v.name)),
            (false, Err(e)) => wrong.push(format!("{}: the reference failed: {e}", v.name)),
        }
    }
    assert!(wrong.is_empty(), "{arch:?}:\n{}", wrong.join("\n\n"));
}

#[test]
fn llama_cpp_on_llama() {
    check(Arch::Llama, GgmlType::F32, "llama-spm", true);
}

#[test]
fn llama_cpp_on_bitnet() {
    check(Arch::Bitnet, GgmlType::TQ2_0, "llama-spm", true);
}

#[test]
fn bitnet_cpp_on_bitnet_b158() {
    check(Arch::BitnetB158, GgmlType::I2_S, "llama-bpe", false);
}
