//! The vocabulary gate of `--cpp-model`: logits are compared id by id, so the file the C++
//! reference runs must have the same vocabulary as the model the engine runs.
//!
//! Checked twice, both before anything is tokenized:
//! 1. [`VocabFingerprint::of`] both GGUF files (token count, BOS/EOS ids as stored, tokenizer
//!    model and pre-tokenizer, SHA-256 of the token texts) and [`compare`] them, before the
//!    reference starts;
//! 2. once the reference has loaded its file, [`compare_reference`] checks what the reference
//!    itself reports (its token count and BOS/EOS ids, llama.cpp's defaults applied) against
//!    the engine's view of `--model`.
//!
//! A difference is a [`VocabMismatch`]: the run stops with exit code 2 and a report that names
//! both files and every difference.

use std::fmt;
use std::path::Path;

use bitnet_gguf::{GgufError, GgufFile};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What identifies a vocabulary, read from a GGUF file's `tokenizer.*` keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VocabFingerprint {
    /// The file (as displayed).
    pub path: String,
    /// `tokenizer.ggml.model` (`llama`, `gpt2`, ...).
    pub model: Option<String>,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// Number of tokens.
    pub n_tokens: usize,
    /// `tokenizer.ggml.bos_token_id` as stored.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id` as stored.
    pub eos: Option<u32>,
    /// SHA-256 (lowercase hex) of the token texts, each preceded by its length (u64 LE).
    pub tokens_sha256: String,
}

impl VocabFingerprint {
    /// The fingerprint of `file` (opened from `path`).
    ///
    /// # Errors
    /// A `tokenizer.*` key stored with the wrong type.
    pub fn of(file: &GgufFile, path: &Path) -> Result<Self, GgufError> {
        let t = file.tokenizer()?;
        let tokens = t.tokens.unwrap_or_default();
        let mut hasher = Sha256::new();
        for text in tokens {
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        Ok(VocabFingerprint {
            path: path.display().to_string(),
            model: t.model.map(str::to_string),
            pre: t.pre.map(str::to_string),
            n_tokens: tokens.len(),
            bos: t.bos_id,
            eos: t.eos_id,
            tokens_sha256: hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
    }

    fn describe(&self) -> String {
        let id = |v: Option<u32>| v.map_or_else(|| "(absent)".to_string(), |v| v.to_string());
        format!(
            "{} tokens, BOS {}, EOS {}, tokenizer {}/{}, token texts sha256 {}",
            self.n_tokens,
            id(self.bos),
            id(self.eos),
            self.model.as_deref().unwrap_or("(absent)"),
            self.pre.as_deref().unwrap_or("(absent)"),
            &self.tokens_sha256[..16]
        )
    }
}

/// One way two vocabularies differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VocabDifference {
    /// What differs (`token count`, `BOS id`, ...).
    pub what: &'static str,
    /// The value for `--model`.
    pub model: String,
    /// The value for `--cpp-model` (or the reference's view of it).
    pub cpp_model: String,
}

/// `--model` and `--cpp-model` have different vocabularies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VocabMismatch {
    /// `--model` (as displayed).
    pub model: String,
    /// `--cpp-model` (as displayed).
    pub cpp_model: String,
    /// Where the second side's facts come from: the file, or the C++ reference's view of it.
    pub source: &'static str,
    /// `--model`'s fingerprint, when the files were compared.
    pub model_fingerprint: Option<Box<VocabFingerprint>>,
    /// `--cpp-model`'s fingerprint, when the files were compared.
    pub cpp_model_fingerprint: Option<Box<VocabFingerprint>>,
    /// Every difference found.
    pub differences: Vec<VocabDifference>,
}

impl VocabMismatch {
    /// The report's body: what each file holds (when read from the files) and what to do.
    pub fn details(&self) -> String {
        let mut s = String::new();
        if let Some(a) = &self.model_fingerprint {
            s.push_str(&format!("  --model     {}: {}\n", a.path, a.describe()));
        }
        if let Some(b) = &self.cpp_model_fingerprint {
            s.push_str(&format!("  --cpp-model {}: {}\n", b.path, b.describe()));
        }
        s.push_str(
            "Logits are compared token id by token id, so both files need the same vocabulary: \
             give --cpp-model a file made from the same model as --model (for example the f32 \
             original it was quantized from), or leave --cpp-model out.\n",
        );
        s
    }
}

impl fmt::Display for VocabMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self
            .differences
            .iter()
            .map(|d| format!("{} {} vs {}", d.what, d.model, d.cpp_model))
            .collect();
        write!(
            f,
            "vocabulary mismatch: --model {} and --cpp-model {} ({}) differ: {}",
            self.model,
            self.cpp_model,
            self.source,
            list.join(", ")
        )
    }
}

impl std::error::Error for VocabMismatch {}

/// Compares the two files' fingerprints: `Ok` when token count, BOS/EOS ids, tokenizer model,
/// pre-tokenizer and token texts all agree.
///
/// # Errors
/// A [`VocabMismatch`] listing every difference.
pub fn compare(model: &VocabFingerprint, cpp: &VocabFingerprint) -> Result<(), VocabMismatch> {
    let mut differences = Vec::new();
    let mut check = |what: &'static str, a: String, b: String| {
        if a != b {
            differences.push(VocabDifference {
                what,
                model: a,
                cpp_model: b,
            });
        }
    };
    let id = |v: Option<u32>| v.map_or_else(|| "(absent)".to_string(), |v| v.to_string());
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".to_string());
    check(
        "token count",
        model.n_tokens.to_string(),
        cpp.n_tokens.to_string(),
    );
    check("BOS id", id(model.bos), id(cpp.bos));
    check("EOS id", id(model.eos), id(cpp.eos));
    check("tokenizer model", text(&model.model), text(&cpp.model));
    check("pre-tokenizer", text(&model.pre), text(&cpp.pre));
    check(
        "token texts (sha256)",
        model.tokens_sha256.clone(),
        cpp.tokens_sha256.clone(),
    );
    if differences.is_empty() {
        return Ok(());
    }
    Err(VocabMismatch {
        model: model.path.clone(),
        cpp_model: cpp.path.clone(),
        source: "as stored in the files",
        model_fingerprint: Some(Box::new(model.clone())),
        cpp_model_fingerprint: Some(Box::new(cpp.clone())),
        differences,
    })
}

/// The engine's view of `--model`'s vocabulary, and the reference's view of `--cpp-model`'s:
/// token count and BOS/EOS ids (`None`/negative: none), llama.cpp's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocabView {
    /// Number of tokens.
    pub n_tokens: usize,
    /// BOS id.
    pub bos: Option<u32>,
    /// EOS id.
    pub eos: Option<u32>,
}

/// Compares what the C++ reference reports for `--cpp-model` with the engine's view of
/// `--model`.
///
/// # Errors
/// A [`VocabMismatch`] listing every difference.
pub fn compare_reference(
    model: &Path,
    engine: VocabView,
    cpp_model: &Path,
    reference: VocabView,
) -> Result<(), VocabMismatch> {
    let id = |v: Option<u32>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    let mut differences = Vec::new();
    for (what, a, b) in [
        (
            "token count",
            engine.n_tokens.to_string(),
            reference.n_tokens.to_string(),
        ),
        ("BOS id", id(engine.bos), id(reference.bos)),
        ("EOS id", id(engine.eos), id(reference.eos)),
    ] {
        if a != b {
            differences.push(VocabDifference {
                what,
                model: a,
                cpp_model: b,
            });
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(VocabMismatch {
        model: model.display().to_string(),
        cpp_model: cpp_model.display().to_string(),
        source: "as the C++ reference loaded it",
        model_fingerprint: None,
        cpp_model_fingerprint: None,
        differences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: usize, bos: Option<u32>, sha: &str) -> VocabFingerprint {
        VocabFingerprint {
            path: format!("m{n}.gguf"),
            model: Some("llama".into()),
            pre: Some("default".into()),
            n_tokens: n,
            bos,
            eos: Some(2),
            tokens_sha256: sha.repeat(64 / sha.len()),
        }
    }

    #[test]
    fn identical_fingerprints_pass_and_differences_are_all_listed() {
        assert_eq!(
            compare(&fp(10, Some(1), "ab"), &fp(10, Some(1), "ab")),
            Ok(())
        );
        let e = compare(&fp(10, Some(1), "ab"), &fp(12, None, "cd")).unwrap_err();
        let what: Vec<&str> = e.differences.iter().map(|d| d.what).collect();
        assert_eq!(what, ["token count", "BOS id", "token texts (sha256)"]);
        let line = e.to_string();
        assert!(line.contains("--model m10.gguf"), "{line}");
        assert!(line.contains("--cpp-model m12.gguf"), "{line}");
        assert!(line.contains("BOS id 1 vs (absent)"), "{line}");
        assert!(!line.contains('\n'));
        let report = e.details();
        assert!(report.contains("10 tokens, BOS 1, EOS 2"), "{report}");
        assert!(report.contains("the same vocabulary"), "{report}");
    }

    #[test]
    fn the_reference_view_is_compared_too() {
        let v = |n, bos| VocabView {
            n_tokens: n,
            bos,
            eos: Some(2),
        };
        let (a, b) = (Path::new("a.gguf"), Path::new("b.gguf"));
        assert_eq!(
            compare_reference(a, v(5, Some(1)), b, v(5, Some(1))),
            Ok(())
        );
        let e = compare_reference(a, v(5, Some(1)), b, v(7, None)).unwrap_err();
        assert_eq!(e.differences.len(), 2);
        assert!(e.to_string().contains("as the C++ reference loaded it"));
    }
}
