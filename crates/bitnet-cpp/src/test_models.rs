//! The project's real-world test models: GGUF files made by llama.cpp's own quantizer, with
//! exactly the tensor mixes a user's `llama-quantize` produces, built on first use into
//! `target/test-models/` (or `$BITNET_TEST_MODELS_DIR`) and reused afterwards. They are
//! never committed: each is rebuilt when missing or older than its base.
//!
//! | base | file types |
//! |---|---|
//! | SmolLM2-135M-Instruct (the Q4_1 fixture, so requantized) | Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q5_0, Q5_1, Q8_0 |
//! | a generated f32 `llama` model | every K-quant mix: Q2_K, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M, Q6_K |
//! | a generated f32 upstream `bitnet` model | TQ1_0, TQ2_0 (llama.cpp gives their tied head q6_K) |
//!
//! The generated bases are 4 layers wide enough (256, FFN 512) for every row to be whole
//! 256-element super-blocks, so the K-quant and ternary mixes are the real ones, not their
//! fallbacks; they use the llama-spm vocabulary (32,000 tokens), the smallest real one. A base
//! is regenerated on each call and replaced only when its bytes changed, so a change to the
//! generator invalidates the quantized files made from it.
//!
//! ```no_run
//! use bitnet_cpp::test_models::{self, Base};
//! let q4_k_m = test_models::path(Base::Smollm2, "Q4_K_M").unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use bitnet_minimodel::{Arch, GenError, Spec};

use crate::quantize::{self, Ftype, QuantizeError, QuantizeOptions};

/// Environment variable that overrides the cache directory (see [`cache_dir`]).
pub const TEST_MODELS_DIR_ENV: &str = "BITNET_TEST_MODELS_DIR";

/// The model a test model is quantized from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Base {
    /// SmolLM2-135M-Instruct Q4_1 (the fixture; requantized).
    Smollm2,
    /// A generated f32 `llama` model (untied output head).
    TinyLlama,
    /// A generated f32 upstream `bitnet` model (tied output head, scale tensors).
    TinyBitnet,
}

impl Base {
    /// Every base.
    pub const ALL: [Base; 3] = [Base::Smollm2, Base::TinyLlama, Base::TinyBitnet];

    /// The stem of its files (`smollm2-135m-instruct`).
    pub fn name(self) -> &'static str {
        match self {
            Base::Smollm2 => "smollm2-135m-instruct",
            Base::TinyLlama => "tiny-llama",
            Base::TinyBitnet => "tiny-bitnet",
        }
    }

    /// The llama-quantize file types this project builds from it.
    pub fn mixes(self) -> &'static [&'static str] {
        match self {
            Base::Smollm2 => &[
                "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q5_0", "Q5_1", "Q8_0",
            ],
            Base::TinyLlama => &[
                "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M",
                "Q6_K",
            ],
            Base::TinyBitnet => &["TQ1_0", "TQ2_0"],
        }
    }

    /// The generator's description of a generated base (`None` for SmolLM2).
    pub fn spec(self) -> Option<Spec> {
        let arch = match self {
            Base::Smollm2 => return None,
            Base::TinyLlama => Arch::Llama,
            Base::TinyBitnet => Arch::Bitnet,
        };
        Some(Spec {
            layers: Some(4),
            dim: Some(256),
            ffn: Some(512),
            ..Spec::new(arch, bitnet_gguf::GgmlType::F32)
        })
    }

    /// The vocabulary fixture a generated base is built on.
    pub const VOCAB: &'static str = "llama-spm";
}

/// Everything that can go wrong building a test model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestModelError {
    /// A fixture file is not in the cache.
    #[error("missing fixture {}: run `{}`", path.display(), bitnet_fixtures::FETCH_COMMAND)]
    MissingFixture {
        /// Where it was expected.
        path: PathBuf,
    },
    /// `ftype` is not one this project builds from `base`.
    #[error("{ftype} is not a test-model type of {base:?} (those are: {})", base.mixes().join(", "))]
    NotATestModel {
        /// The base.
        base: Base,
        /// The type asked for.
        ftype: String,
    },
    /// Generating a base failed.
    #[error("generating {}: {source}", path.display())]
    Generate {
        /// The base file.
        path: PathBuf,
        /// Why.
        source: GenError,
    },
    /// Quantizing failed.
    #[error("quantizing {}: {source}", path.display())]
    Quantize {
        /// The output file.
        path: PathBuf,
        /// Why (boxed: the quantizer's error is large).
        source: Box<QuantizeError>,
    },
    /// A file-system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where the test models live: `$BITNET_TEST_MODELS_DIR`, else `target/test-models` in the
/// repository.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os(TEST_MODELS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-models"),
    }
}

/// One build at a time in a process: tests running in parallel ask for the same files.
static BUILDING: Mutex<()> = Mutex::new(());

/// The path of `base` quantized as `ftype` (one of [`Base::mixes`]), built first when it is
/// missing or older than its base.
///
/// # Errors
/// A type that is not one of the base's mixes, a missing fixture, or a failure generating,
/// quantizing or writing.
pub fn path(base: Base, ftype: &str) -> Result<PathBuf, TestModelError> {
    let not_ours = || TestModelError::NotATestModel {
        base,
        ftype: ftype.to_string(),
    };
    let name = base
        .mixes()
        .iter()
        .find(|m| m.eq_ignore_ascii_case(ftype))
        .ok_or_else(not_ours)?;
    let ftype = Ftype::find(name).ok_or_else(not_ours)?;
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let source = base_path_locked(base)?;
    let dir = cache_dir();
    // SmolLM2's base is a fixture, so nothing else may have made the directory yet.
    std::fs::create_dir_all(&dir).map_err(|source| TestModelError::Io {
        path: dir.clone(),
        source,
    })?;
    let out = dir.join(format!("{}-{}.gguf", base.name(), ftype.name));
    if modified(&out).is_some_and(|t| Some(t) >= modified(&source)) {
        return Ok(out);
    }
    eprintln!(
        "building test model {} (llama.cpp's quantizer, first use)",
        out.display()
    );
    let opts = QuantizeOptions {
        allow_requantize: base == Base::Smollm2,
        ..QuantizeOptions::default()
    };
    quantize::quantize(&source, &out, ftype, &opts, &mut |_| {}).map_err(|source| {
        TestModelError::Quantize {
            path: out.clone(),
            source: Box::new(source),
        }
    })?;
    Ok(out)
}

/// Every test model, built as needed: `(base, file type, path)`.
///
/// # Errors
/// The first failure of [`path`].
pub fn all() -> Result<Vec<(Base, &'static str, PathBuf)>, TestModelError> {
    let mut models = Vec::new();
    for base in Base::ALL {
        for &ftype in base.mixes() {
            models.push((base, ftype, path(base, ftype)?));
        }
    }
    Ok(models)
}

/// The unquantized base: the SmolLM2 fixture, or the generated f32 model (regenerated and
/// replaced when the generator's output changed).
///
/// # Errors
/// A missing fixture, or a failure generating or writing.
pub fn base_path(base: Base) -> Result<PathBuf, TestModelError> {
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    base_path_locked(base)
}

fn base_path_locked(base: Base) -> Result<PathBuf, TestModelError> {
    let fixture = |name: &str| {
        let p = bitnet_fixtures::fixtures_dir().join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(TestModelError::MissingFixture { path: p })
        }
    };
    let Some(spec) = base.spec() else {
        return fixture(bitnet_fixtures::SMOLLM2);
    };
    let vocab = fixture(&format!("ggml-vocab-{}.gguf", Base::VOCAB))?;
    let dir = cache_dir();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TestModelError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let out = dir.join(format!("{}-f32.gguf", base.name()));
    let generate = |source| TestModelError::Generate {
        path: out.clone(),
        source,
    };
    let bytes = bitnet_minimodel::build(&spec, &vocab)
        .map_err(generate)?
        .to_bytes();
    if std::fs::read(&out).is_ok_and(|old| old == bytes) {
        return Ok(out);
    }
    // Unique per process so that two test binaries building at once never share a file.
    let temp = dir.join(format!(
        ".{}-f32.gguf.{}.partial",
        base.name(),
        std::process::id()
    ));
    std::fs::write(&temp, &bytes).map_err(io(&temp))?;
    std::fs::rename(&temp, &out).map_err(io(&out))?;
    Ok(out)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
