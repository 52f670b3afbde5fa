//! Shared by the reference tests: tiny models and logit comparisons.

use std::path::{Path, PathBuf};

use bitnet_cpp::{Backend, BackendChoice, CacheType, RunConfig, Session, SessionOptions};
use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_minimodel::{Arch, Spec};

/// Write a tiny model on a real vocabulary into `dir`.
pub fn tiny(dir: &Path, arch: Arch, qtype: GgmlType, vocab: &str) -> PathBuf {
    bitnet_minimodel::write_tiny(dir, &Spec::new(arch, qtype), &bitnet_fixtures::vocab(vocab))
        .unwrap()
}

/// A session in the reference's exact configuration (F32 K cache, no flash attention; F32 V
/// for llama.cpp, F16 V for bitnet.cpp, which allows nothing else without flash attention):
/// the configuration the facts these tests record were measured in.
pub fn open(model: &Path, choice: BackendChoice) -> Session {
    let backend = choice.resolve(&GgufFile::open(model).unwrap()).unwrap();
    let values = match backend {
        Backend::Llama => CacheType::F32,
        Backend::Bitnet => CacheType::F16,
    };
    let opts = SessionOptions {
        run: RunConfig::exact(values),
        ..SessionOptions::default()
    };
    Session::open(model, choice, &opts).unwrap_or_else(|e| panic!("{}: {e}", model.display()))
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Evaluate `tokens` in one batch and again one token at a time; return the largest
/// difference between the two and the smallest cosine, after checking shapes and finiteness.
pub fn batch_vs_incremental(s: &mut Session, tokens: &[i32]) -> (f32, f64) {
    let batch = s.eval(tokens).unwrap();
    assert_eq!(batch.n_tokens, tokens.len());
    assert_eq!(batch.n_vocab, s.n_vocab());
    assert_eq!(batch.data.len(), tokens.len() * s.n_vocab());
    assert!(
        batch.data.iter().all(|v| v.is_finite()),
        "non-finite logits"
    );
    let spread = batch.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        spread > 1e-3,
        "logits are all ~0: the model computes nothing"
    );
    let first = s.eval(&tokens[..1]).unwrap();
    let mut worst = max_abs_diff(first.row(0), batch.row(0));
    let mut min_cos = cosine(first.row(0), batch.row(0));
    for (i, &t) in tokens.iter().enumerate().skip(1) {
        let row = s.decode_next(t).unwrap();
        worst = worst.max(max_abs_diff(&row, batch.row(i)));
        min_cos = min_cos.min(cosine(&row, batch.row(i)));
    }
    (worst, min_cos)
}
