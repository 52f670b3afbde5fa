//! Helpers shared by the parity test files: tiny generated models, and the comparison of the
//! engine's logits with a C++ reference's, in one batch and token by token.
//! Each test file declares it `pub mod common;`, so the helpers it does not call are its public
//! items, not dead code.

use std::path::{Path, PathBuf};

use bitnet_cpp::{BackendChoice, Session, SessionOptions};
use bitnet_gguf::GgmlType;
use bitnet_inference::{Model, RunConfig};
use bitnet_minimodel::{Arch, Spec};

/// A tiny generated model of `arch` with `qtype` matrices on the vocabulary fixture `vocab`.
pub fn tiny(dir: &Path, arch: Arch, qtype: GgmlType, vocab: &str) -> PathBuf {
    bitnet_minimodel::write_tiny(dir, &Spec::new(arch, qtype), &bitnet_fixtures::vocab(vocab))
        .unwrap()
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// How the engine's logits compare with the reference's over a prompt.
pub struct Compared {
    /// Largest |Δlogit|.
    pub max_abs: f32,
    /// Smallest cosine over positions.
    pub min_cos: f64,
    /// Positions whose top-1 agrees.
    pub top1: usize,
    /// Positions compared.
    pub n: usize,
}

/// The reference's exact configuration for the model at `path` (F32 K, no flash attention;
/// V as the reference allows: F32 for llama.cpp, F16 for bitnet.cpp).
pub fn exact(path: &Path) -> RunConfig {
    let numerics = Model::load(path).unwrap().numerics();
    RunConfig::exact(numerics.exact_value_cache())
}

/// A reference session running `run`; checks that the reference resolved it as the engine
/// does (the run-configuration check of every comparison).
pub fn session(model: &Path, choice: BackendChoice, run: &RunConfig) -> Session {
    let opts = SessionOptions {
        run: *run,
        ..SessionOptions::default()
    };
    let cpp = Session::open(model, choice, &opts).unwrap();
    let engine = Model::load(model).unwrap().new_state_with(run).unwrap();
    assert_eq!(
        cpp.effective_config(),
        Some(engine.run_config()),
        "the reference and the engine resolve {run:?} differently"
    );
    cpp
}

/// Evaluate `prompt` in one batch on both sides in the exact configuration and compare every
/// position.
pub fn compare(model: &Path, choice: BackendChoice, prompt: &str) -> Compared {
    compare_with(model, choice, prompt, &exact(model))
}

/// Evaluate `prompt` in one batch on both sides running `run` and compare every position.
pub fn compare_with(
    model: &Path,
    choice: BackendChoice,
    prompt: &str,
    run: &RunConfig,
) -> Compared {
    let mut cpp = session(model, choice, run);
    let tokens = cpp.tokenize(prompt, true, false).unwrap();
    compare_ids_with(model, &mut cpp, &tokens, run)
}

/// Evaluate `tokens` in one batch on both sides (the reference already running `run`) and
/// compare every position.
pub fn compare_ids_with(
    model: &Path,
    cpp: &mut Session,
    tokens: &[i32],
    run: &RunConfig,
) -> Compared {
    let expected = cpp.eval(tokens).unwrap();
    let m = Model::load(model).unwrap();
    let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    let mut state = m.new_state_with(run).unwrap();
    let got = m.forward(&mut state, &ids).unwrap();
    let v = m.config().n_vocab;
    assert_eq!(got.len(), expected.data.len());
    let mut c = Compared {
        max_abs: 0.0,
        min_cos: 1.0,
        top1: 0,
        n: tokens.len(),
    };
    for i in 0..tokens.len() {
        let (a, b) = (&got[i * v..(i + 1) * v], expected.row(i));
        c.max_abs = c.max_abs.max(
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max),
        );
        c.min_cos = c.min_cos.min(cosine(a, b));
        c.top1 += usize::from(bitnet_inference::ops::argmax(a) == bitnet_inference::ops::argmax(b));
    }
    eprintln!(
        "{} ({}): max |Δ| {:.3e}, min cosine {:.8}, top-1 {}/{}",
        model.display(),
        state.run_config(),
        c.max_abs,
        c.min_cos,
        c.top1,
        c.n
    );
    c
}

/// The default prompt of the parity tests.
pub const PROMPT: &str = "The quick brown fox jumps over the lazy dog, and then it runs far away.";

/// Both paths against the reference on `PROMPT` in the exact configuration: every position of
/// one batch, then every token decoded one at a time, bit for bit.
pub fn assert_bit_identical(path: &Path, choice: BackendChoice, what: &str) {
    assert_bit_identical_with(path, choice, what, &exact(path));
}

/// [`assert_bit_identical`] running `run`.
pub fn assert_bit_identical_with(path: &Path, choice: BackendChoice, what: &str, run: &RunConfig) {
    let c = compare_with(path, choice, PROMPT, run);
    assert_eq!(c.max_abs, 0.0, "{what}: cosine {}", c.min_cos);
    assert_eq!(c.top1, c.n, "{what}");
    let (max_abs, cos) = token_by_token_with(path, choice, PROMPT, run);
    assert_eq!(max_abs, 0.0, "{what} token by token: cosine {cos}");
}

/// Decode `prompt` one token at a time on both sides in the exact configuration; the largest
/// |Δlogit| and the smallest cosine over all tokens.
pub fn token_by_token(path: &Path, choice: BackendChoice, prompt: &str) -> (f32, f64) {
    token_by_token_with(path, choice, prompt, &exact(path))
}

/// [`token_by_token`] running `run`.
pub fn token_by_token_with(
    path: &Path,
    choice: BackendChoice,
    prompt: &str,
    run: &RunConfig,
) -> (f32, f64) {
    let mut cpp = session(path, choice, run);
    let tokens = cpp.tokenize(prompt, true, false).unwrap();
    token_ids_one_by_one(path, &mut cpp, &tokens, run)
}

/// Decode `tokens` one at a time on both sides (the reference already running `run`, its cache
/// empty); the largest |Δlogit| and the smallest cosine over all tokens.
pub fn token_ids_one_by_one(
    path: &Path,
    cpp: &mut Session,
    tokens: &[i32],
    run: &RunConfig,
) -> (f32, f64) {
    let m = Model::load(path).unwrap();
    let mut state = m.new_state_with(run).unwrap();
    let (mut max_abs, mut min_cos) = (0f32, 1f64);
    for &t in tokens {
        let theirs = cpp.decode_next(t).unwrap();
        let ours = m.forward(&mut state, &[t as u32]).unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            max_abs = max_abs.max((a - b).abs());
        }
        min_cos = min_cos.min(cosine(&ours, &theirs));
    }
    (max_abs, min_cos)
}

/// 64 tokens of ordinary English for the real-model checks.
pub const LONG_PROMPT: &str = "In the early morning the harbour was quiet. Fishermen checked their nets, gulls circled \
above the boats, and the smell of salt and diesel drifted over the water while the town slowly woke up and the \
first bakery opened its doors to the waiting customers outside. Later, a ferry arrived from the island, \
carrying tourists, bicycles, crates of vegetables and a very nervous dog";
