//! Cross-validation receipts: a versioned JSON record of one `crossval-per-token` run.
//!
//! A receipt is written with [`Receipt::write`] (atomically: a temporary file in the same
//! directory, flushed and synced, then renamed over the target) and checked with
//! [`validate_receipt`], which implements exactly the schema below. Schema changes bump
//! [`RECEIPT_SCHEMA_VERSION`] (semver: new optional fields → minor, anything else → major).
//!
//! # Schema 2.3.0
//!
//! The document is one JSON object. `?` marks a field that may be `null`. A *metric* is a JSON
//! number, or one of the strings `"NaN"`, `"inf"`, `"-inf"` for a non-finite value.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `schema_version` | string | `"2.3.0"` (2.0.0 receipts lack the `cpp_backend` build fields marked 2.1; 2.0 and 2.1 receipts lack the fields marked 2.2; receipts before 2.3 lack `run_configuration`) |
//! | `status` | string | `ok` (tokens match, every position and greedy step within tolerance; exit 0), `diverged` (tokens match, logits outside the tolerance at a position or greedy step; exit 1), `config_mismatch` (2.2: the configuration pre-gate — the model's hyper-parameters, not the run configuration — failed: nothing was tokenized by the reference or evaluated; exit 2), `token_mismatch` (the pre-gate failed: no logits were compared; exit 2), `vocab_mismatch` (`--cpp-model` has another vocabulary: nothing was tokenized; exit 2), `usage_error` (the request cannot be run as given, a run configuration the model's reference refuses included; exit 2), `error` (runtime error: unreadable or malformed input, the C++ reference failed or resolved the run configuration otherwise than the engine, I/O; exit 3) |
//! | `error` | string? | what went wrong; a string exactly when `status` is `vocab_mismatch`, `usage_error` or `error` |
//! | `warnings[]` | array of strings | flags that had no effect, chat markers that are not single tokens (see [`bitnet_inference::TemplateWarning`]) |
//! | `tool.name` | string | the program that wrote the receipt (e.g. `xtask crossval-per-token`) |
//! | `tool.version` | string | its version |
//! | `timestamp` | string | when the run finished, RFC 3339 UTC: `YYYY-MM-DDTHH:MM:SSZ` |
//! | `inputs.model_path` | string | the model given with `--model` |
//! | `inputs.model_sha256` | string | SHA-256 of that file, 64 lowercase hex digits |
//! | `inputs.cpp_model_path` | string? | the file the C++ reference ran (`--cpp-model`), `null` when it is the same model |
//! | `inputs.cpp_model_sha256` | string? | SHA-256 of `cpp_model_path` (`null` with it) |
//! | `inputs.tokenizer_path` | string? | the HF tokenizer.json of the Rust side, `null` for the GGUF's embedded vocabulary |
//! | `inputs.prompt` | string | the prompt as given |
//! | `inputs.formatted_prompt` | string | the text both sides tokenized (after the template; empty when the run stopped before formatting) |
//! | `inputs.system_prompt` | string? | `--system-prompt`, if any |
//! | `inputs.template` | string | the template requested (`raw`, `instruct`, `llama3-chat`, `chatml`, `auto`, `jinja`) |
//! | `inputs.template_used` | string? | the template applied (for `auto`: the one detected); `null` when the run stopped before formatting |
//! | `inputs.add_bos` | bool | BOS added by the tokenizers (both sides) |
//! | `inputs.parse_special` | bool | special-token text parsed into special ids (both sides) |
//! | `token_parity` | object? | the pre-gate's result; `null` exactly when the pre-gate did not run (then `status` is `vocab_mismatch`, `usage_error` or `error`) |
//! | `token_parity.status` | string | `ok` or `mismatch` |
//! | `token_parity.rust_count` | integer | number of Rust token ids |
//! | `token_parity.cpp_count` | integer | number of C++ token ids |
//! | `token_parity.first_diff_idx` | integer? | first differing index; `null` exactly when `status` is `ok` |
//! | `positions[]` | array | one object per prompt position; empty when no logits were compared |
//! | `positions[].position` | integer | 0-based position |
//! | `positions[].cosine`, `.l2`, `.max_abs_diff`, `.nmse`, `.kl` | metric | see [`crate::logits_compare`] |
//! | `positions[].rust_top1`, `.cpp_top1` | integer | arg-max ids |
//! | `positions[].top1_match` | bool | arg-max ids agree |
//! | `positions[].top5_overlap` | integer | 0..=5 ids shared by the two top-5 sets |
//! | `positions[].rust_non_finite`, `.cpp_non_finite` | integer | NaN/±∞ counts in each row |
//! | `positions[].rust_top2`, `.cpp_top2` | integer? | 2.2: runner-up ids (`null` for a one-token vocabulary) |
//! | `positions[].cpp_top2_margin` | metric | 2.2: the C++ row's best logit minus its runner-up's |
//! | `positions[].ok` | bool | finite and `cosine ≥ thresholds.cos_tol` |
//! | `positions[].label` | string | 2.2: `match` (exactly when `ok`), `drift`, `tie-flip` or `wrong` ([`crate::verdict`]) |
//! | `decode[]` | array | greedy steps after the prompt, in order, teacher-forced: both sides continue from the C++ side's choice ([`crate::steps`]) |
//! | `decode[].step` | integer | 0-based step |
//! | `decode[].rust_token`, `.cpp_token` | integer | the id each side chose from the same prefix |
//! | `decode[].match` | bool | the ids agree |
//! | `decode[].fed_token` | integer | 2.2: the id both sides continued with (the C++ choice) |
//! | `decode[].label` | string | 2.2: the label of the step's logits, as `positions[].label` |
//! | `summary` | object? | `null` when no logits were compared, else: |
//! | `summary.n_positions` | integer | positions compared |
//! | `summary.first_divergent_position` | integer? | first position not ok, `null` if none |
//! | `summary.min_cosine`, `.max_kl`, `.mean_kl`, `.max_abs_diff` | metric | over all positions |
//! | `summary.top1_agreement_rate` | number | 0..=1 |
//! | `summary.cos_tol` | number | the tolerance used |
//! | `summary.all_ok` | bool | every position ok |
//! | `thresholds.cos_tol` | number | the cosine tolerance (`--cos-tol`) |
//! | `thresholds.max_tokens` | integer | greedy steps requested (`--max-tokens`) |
//! | `thresholds.tie_margin` | number | 2.2: the `tie-flip` margin ([`crate::verdict::TIE_MARGIN`]) |
//! | `config_gate` | object? | 2.2: the configuration pre-gate ([`crate::config_gate::ConfigGate`]: `ok`, `facts[]` with `name`, `engine`, `reference`, `source`, `note`, `status`, `tensor_types[]`, `hints[]`); `null` when it did not run |
//! | `locate` | object? | 2.2: the `--locate` report ([`crate::locate::LocateReport`]); `null` without `--locate` or when it did not run |
//! | `cpp_backend` | object? | the C++ reference; `null` when it was never started (then `status` is `vocab_mismatch`, `usage_error` or `error`) |
//! | `cpp_backend.backend` | string | `llama` (upstream llama.cpp) or `bitnet` (Microsoft's bitnet.cpp) |
//! | `cpp_backend.library` | string | the library and the crate that vendors it, as the reference reports it |
//! | `cpp_backend.build_info` | string | one line: version, compiler, build type, the CPU kernels' flags and SIMD extensions |
//! | `cpp_backend.version` | string | 2.1: the vendoring crate, its version and git commit, ggml's version (`llama-cpp-sys-2 0.1.161 (git e7af607ebd5e), ggml 0.26.0`) |
//! | `cpp_backend.compiler.id`, `.version` | string | 2.1: the compiler of the CPU kernels as CMake detected it (`GNU`, `12.2.0`) |
//! | `cpp_backend.build_type` | string | 2.1: CMake build type (`Release`, `RelWithDebInfo`) |
//! | `cpp_backend.cpu_flags[]` | strings | 2.1: the kernels' instruction-selecting compile flags (`-march=x86-64`, `-mavx2`, `-march=native`) |
//! | `cpp_backend.simd[]` | strings | 2.1: SIMD extensions those flags enable, per the compiler (`AVX2`, `FMA`, `AVX512F`) |
//! | `cpp_backend.ggml_options[]` | strings | 2.1: CPU-relevant ggml CMake options that are on (`GGML_LLAMAFILE`, `GGML_NATIVE`) |
//! | `cpp_backend.system_info` | string | `llama_print_system_info()` of the reference |
//! | `run_configuration` | object? | 2.3: the run configuration both sides computed with, as the reference reports it (the run-configuration check found the engine resolved the same); `null` exactly when the reference was never started or the check failed |
//! | `run_configuration.cache_type_k`, `.cache_type_v` | string | 2.3: KV cache types: `f32`, `f16`, `bf16`, `q8_0` |
//! | `run_configuration.flash_attn` | bool | 2.3: flash attention in effect (`auto` resolved) |
//! | `run_configuration.n_batch`, `.n_ubatch` | integer | 2.3: tokens per `llama_decode` call / per micro-batch |
//! | `run_configuration.threads` | integer | 2.3: the reference's threads |
//! | `environment.cpu` | string | CPU model name (`/proc/cpuinfo`), else the architecture |
//! | `environment.threads` | integer | threads used |
//! | `environment.os`, `.arch` | string | `std::env::consts::{OS, ARCH}` |
//!
//! Consistency rules checked by [`validate_receipt`]: `error` is a string iff `status` is
//! `vocab_mismatch`, `usage_error` or `error`; `token_parity` is an object whenever `status`
//! is `ok`, `diverged` or `token_mismatch`, and `cpp_backend` and (2.3) `run_configuration`
//! whenever it is one of those or `config_mismatch`; `token_parity.first_diff_idx` is `null`
//! iff `token_parity.status` is `ok`; `status` is `token_mismatch` iff `token_parity.status`
//! is `mismatch`; `summary` is an object when `status` is `ok` or `diverged`; `status` is
//! `config_mismatch` iff `config_gate.ok` is false; `positions[].label` is `match` iff
//! `positions[].ok`.
//!
//! Changes from 1.0.0 (2.0.0): the statuses `vocab_mismatch` and `usage_error`; `error`,
//! `warnings` and `inputs.template_used` (which replaces `token_parity.template_used`);
//! `token_parity` and `cpp_backend` may be `null` (a 1.0.0 error receipt claimed a token
//! parity `ok` that was never checked, and a backend `unavailable` outside its own schema).
//!
//! Changes from 2.0.0 (2.1.0): the reference's real build facts in `cpp_backend` —
//! `version`, `compiler`, `build_type`, `cpu_flags`, `simd`, `ggml_options` — recorded from
//! the C++ library's CMake configuration when the reference was built, and a `build_info`
//! line made of them. They are required in a 2.1 receipt's `cpp_backend` and read as empty
//! from a 2.0 one; the validator accepts any 2.x.y.
//!
//! Changes from 2.1.0 (2.2.0, additions): the status `config_mismatch`, `config_gate`,
//! `locate`, the labels and runner-ups of `positions[]`, `decode[].fed_token` and `.label`
//! (greedy steps are teacher-forced and no longer stop at a disagreement),
//! `thresholds.tie_margin`. They are required in a 2.2 receipt and absent from older ones.
//!
//! Changes from 2.2.0 (2.3.0, additions): `run_configuration`, the run configuration of the
//! comparison (KV cache types, flash attention, n_batch/n_ubatch, threads; DESIGN.md's
//! "reference configuration"), and `locate.not_computed` (optional: graph tensors neither
//! side forms in that configuration, the attention weights under flash attention). The run
//! configuration is how a model is *run*; `config_gate` is about what the model *is* (its
//! hyper-parameters). `run_configuration` is required (an object or `null`) in a 2.3 receipt
//! and absent from older ones (read as `null`).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config_gate::ConfigGate;
use crate::locate::LocateReport;
use crate::logits_compare::{LogitsSummary, PositionMetrics};
use crate::verdict::Verdict;

pub use validate::validate_receipt;

mod validate;

/// The schema version this crate writes and validates.
pub const RECEIPT_SCHEMA_VERSION: &str = "2.3.0";

/// Outcome of the run. Each status has exactly one exit code ([`RunStatus::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Tokens match and every position is within tolerance.
    Ok,
    /// Tokens match but logits (or greedy decode) differ.
    Diverged,
    /// The configuration pre-gate failed: nothing was tokenized or evaluated.
    ConfigMismatch,
    /// The pre-gate failed.
    TokenMismatch,
    /// `--cpp-model` has a different vocabulary from `--model`: nothing was tokenized.
    VocabMismatch,
    /// The request cannot be run as given (bad flag values, a prompt longer than the context).
    UsageError,
    /// A runtime error: unreadable or malformed input, the C++ reference failed, I/O.
    Error,
}

impl RunStatus {
    /// The process exit code of this status: 0 ok, 1 diverged, 2 configuration, token or
    /// vocabulary mismatch and usage errors, 3 runtime errors.
    pub fn exit_code(self) -> u8 {
        match self {
            RunStatus::Ok => 0,
            RunStatus::Diverged => 1,
            RunStatus::ConfigMismatch
            | RunStatus::TokenMismatch
            | RunStatus::VocabMismatch
            | RunStatus::UsageError => 2,
            RunStatus::Error => 3,
        }
    }

    /// The name used in JSON (`token_mismatch`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Diverged => "diverged",
            RunStatus::ConfigMismatch => "config_mismatch",
            RunStatus::TokenMismatch => "token_mismatch",
            RunStatus::VocabMismatch => "vocab_mismatch",
            RunStatus::UsageError => "usage_error",
            RunStatus::Error => "error",
        }
    }

    /// Whether the run stopped with an error message (`vocab_mismatch`, `usage_error`, `error`).
    pub fn has_error_message(self) -> bool {
        matches!(
            self,
            RunStatus::VocabMismatch | RunStatus::UsageError | RunStatus::Error
        )
    }
}

/// The program that wrote the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// Program name.
    pub name: String,
    /// Program version.
    pub version: String,
}

/// What was compared and how it was tokenized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The model given with `--model`.
    pub model_path: String,
    /// SHA-256 of the model (lowercase hex).
    pub model_sha256: String,
    /// The model the C++ side ran, when different (`--cpp-model`).
    pub cpp_model_path: Option<String>,
    /// SHA-256 of `cpp_model_path`.
    pub cpp_model_sha256: Option<String>,
    /// HF tokenizer.json of the Rust side; `None`: the GGUF's own vocabulary.
    pub tokenizer_path: Option<String>,
    /// The prompt as given.
    pub prompt: String,
    /// The text both sides tokenized.
    pub formatted_prompt: String,
    /// The system prompt, if any.
    pub system_prompt: Option<String>,
    /// The template requested.
    pub template: String,
    /// The template applied (`None`: the run stopped before formatting).
    pub template_used: Option<String>,
    /// BOS added by the tokenizers.
    pub add_bos: bool,
    /// Special tokens parsed.
    pub parse_special: bool,
}

/// Result of the token parity pre-gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenParityStatus {
    /// Identical sequences.
    Ok,
    /// Different sequences.
    Mismatch,
}

/// The `token_parity` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenParityBlock {
    /// `ok` or `mismatch`.
    pub status: TokenParityStatus,
    /// Number of Rust ids.
    pub rust_count: usize,
    /// Number of C++ ids.
    pub cpp_count: usize,
    /// First differing index (`None` iff ok).
    pub first_diff_idx: Option<usize>,
}

impl TokenParityBlock {
    /// Builds the block from the two sequences' lengths and the pre-gate's answer.
    pub fn new(rust_count: usize, cpp_count: usize, first_diff_idx: Option<usize>) -> Self {
        TokenParityBlock {
            status: if first_diff_idx.is_some() {
                TokenParityStatus::Mismatch
            } else {
                TokenParityStatus::Ok
            },
            rust_count,
            cpp_count,
            first_diff_idx,
        }
    }
}

/// One greedy decode step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeStep {
    /// 0-based step after the prompt.
    pub step: usize,
    /// The Rust side's choice.
    pub rust_token: u32,
    /// The C++ side's choice.
    pub cpp_token: u32,
    /// Both chose the same id.
    #[serde(rename = "match")]
    pub matched: bool,
    /// The id both continued with: the C++ side's choice (teacher forcing).
    pub fed_token: u32,
    /// The label of the step's logits.
    pub label: Verdict,
}

/// Tolerances in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Cosine tolerance.
    pub cos_tol: f64,
    /// Greedy steps requested.
    pub max_tokens: usize,
    /// The `tie-flip` margin.
    pub tie_margin: f64,
}

/// The C++ reference that produced the reference side, and how it was built.
///
/// The build fields (schema 1.1) default to empty when reading a 1.0 receipt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CppBackendInfo {
    /// `llama` or `bitnet`.
    pub backend: String,
    /// Library and the crate that vendors it.
    pub library: String,
    /// One line: version, compiler, build type, the CPU kernels' flags and SIMD extensions.
    pub build_info: String,
    /// Vendoring crate, its version and commit, ggml's version.
    #[serde(default)]
    pub version: String,
    /// The compiler of the CPU kernels.
    #[serde(default)]
    pub compiler: CompilerInfo,
    /// CMake build type.
    #[serde(default)]
    pub build_type: String,
    /// The kernels' instruction-selecting compile flags.
    #[serde(default)]
    pub cpu_flags: Vec<String>,
    /// SIMD extensions those flags enable.
    #[serde(default)]
    pub simd: Vec<String>,
    /// CPU-relevant ggml CMake options that are on.
    #[serde(default)]
    pub ggml_options: Vec<String>,
    /// `llama_print_system_info()`.
    pub system_info: String,
}

impl CppBackendInfo {
    /// What a reference reports about itself ([`bitnet_cpp::protocol::BuildFacts`]).
    pub fn from_build(b: &bitnet_cpp::protocol::BuildFacts) -> Self {
        let c = &b.compiled;
        CppBackendInfo {
            backend: b.backend.clone(),
            library: b.library.clone(),
            build_info: b.summary(),
            version: c.version.to_string(),
            compiler: CompilerInfo {
                id: c.compiler.id.clone(),
                version: c.compiler.version.clone(),
            },
            build_type: c.build_type.clone(),
            cpu_flags: c.cpu_flags.clone(),
            simd: c.simd.clone(),
            ggml_options: c.ggml_options.clone(),
            system_info: b.system_info.clone(),
        }
    }
}

/// A compiler as CMake identifies it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompilerInfo {
    /// `GNU`, `Clang`, …
    pub id: String,
    /// `12.2.0`.
    pub version: String,
}

/// The run configuration both sides computed with (schema 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfiguration {
    /// The reference's resolution of the run configuration (`auto` flash attention decided).
    #[serde(flatten)]
    pub effective: bitnet_cpp::EffectiveConfig,
    /// Tokens per `llama_decode` call at the reference.
    pub n_batch: u32,
}

impl std::fmt::Display for RunConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, n_batch {}", self.effective, self.n_batch)
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// CPU model name.
    pub cpu: String,
    /// Threads used.
    pub threads: usize,
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub arch: String,
}

impl Environment {
    /// This machine, with `threads` threads.
    pub fn detect(threads: usize) -> Self {
        Environment {
            cpu: cpu_model(),
            threads,
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

/// A cross-validation receipt (see the module docs for the schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// [`RECEIPT_SCHEMA_VERSION`].
    pub schema_version: String,
    /// Outcome.
    pub status: RunStatus,
    /// What went wrong (`Some` exactly when [`RunStatus::has_error_message`]).
    pub error: Option<String>,
    /// Warnings: flags without effect, markers that are not single tokens.
    pub warnings: Vec<String>,
    /// Who wrote it.
    pub tool: ToolInfo,
    /// RFC 3339 UTC time.
    pub timestamp: String,
    /// Inputs.
    pub inputs: Inputs,
    /// The pre-gate's result (`None`: the pre-gate did not run).
    pub token_parity: Option<TokenParityBlock>,
    /// Per-position metrics.
    pub positions: Vec<PositionMetrics>,
    /// Greedy decode steps.
    pub decode: Vec<DecodeStep>,
    /// Summary (`None` when no logits were compared).
    pub summary: Option<LogitsSummary>,
    /// Tolerances.
    pub thresholds: Thresholds,
    /// The C++ reference (`None`: it was never started).
    pub cpp_backend: Option<CppBackendInfo>,
    /// The run configuration (`None`: the reference was never started, or the
    /// run-configuration check failed; absent from receipts before 2.3).
    #[serde(default)]
    pub run_configuration: Option<RunConfiguration>,
    /// The machine.
    pub environment: Environment,
    /// The configuration pre-gate (`None`: it did not run).
    pub config_gate: Option<ConfigGate>,
    /// The `--locate` report (`None`: not asked for, or it did not run).
    pub locate: Option<LocateReport>,
}

/// Errors writing or reading a receipt.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// File-system error.
    #[error("receipt {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// (De)serialisation error.
    #[error("receipt {path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

impl Receipt {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serialising these plain data types cannot fail: every map key is a string and the
        // non-finite floats go through `float_repr`.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Writes the receipt atomically: to a temporary file next to `path`, synced, then renamed.
    pub fn write(&self, path: &Path) -> Result<(), ReceiptError> {
        let io_err = |source| ReceiptError::Io {
            path: path.to_path_buf(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|source| ReceiptError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "receipt.json".into());
        // Unique per process and per call, so concurrent writers never share a temporary file.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{}.{seq}", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err)
    }

    /// Reads a receipt written by [`Receipt::write`].
    pub fn read(path: &Path) -> Result<Self, ReceiptError> {
        let text = fs::read_to_string(path).map_err(|source| ReceiptError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ReceiptError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// SHA-256 of a file's contents, lowercase hex, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `time` as RFC 3339 UTC with second precision (`1970-01-01T00:00:00Z`); times before the
/// epoch are clamped to it.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The current time as [`rfc3339_utc`].
pub fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now())
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The CPU model name from `/proc/cpuinfo` (`model name`), else the architecture name.
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests;
