//! Cross-validation receipts: a versioned JSON record of one `crossval-per-token` run.
//!
//! A receipt is written with [`Receipt::write`] (atomically: a temporary file in the same
//! directory, flushed and synced, then renamed over the target) and checked with
//! [`validate_receipt`], which implements exactly the schema below. Schema changes bump
//! [`RECEIPT_SCHEMA_VERSION`] (semver: new optional fields → minor, anything else → major).
//!
//! # Schema 2.1.0
//!
//! The document is one JSON object. `?` marks a field that may be `null`. A *metric* is a JSON
//! number, or one of the strings `"NaN"`, `"inf"`, `"-inf"` for a non-finite value.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `schema_version` | string | `"2.1.0"` |
//! | `status` | string | `ok` (tokens match, every position and greedy step within tolerance; exit 0), `diverged` (tokens match, logits outside the tolerance at a position or greedy step; exit 1), `config_mismatch` (the configuration pre-gate failed: nothing was tokenized or evaluated; exit 2), `token_mismatch` (the pre-gate failed: no logits were compared; exit 2), `vocab_mismatch` (`--cpp-model` has another vocabulary: nothing was tokenized; exit 2), `usage_error` (the request cannot be run as given; exit 2), `error` (runtime error: unreadable or malformed input, the C++ reference failed, I/O; exit 3) |
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
//! | `positions[].rust_top2`, `.cpp_top2` | integer? | runner-up ids (`null` for a one-token vocabulary) |
//! | `positions[].cpp_top2_margin` | metric | the C++ row's best logit minus its runner-up's |
//! | `positions[].ok` | bool | finite and `cosine ≥ thresholds.cos_tol` |
//! | `positions[].label` | string | `match` (exactly when `ok`), `drift`, `tie-flip` or `wrong` ([`crate::verdict`]) |
//! | `decode[]` | array | greedy steps after the prompt, in order, teacher-forced: both sides continue from the C++ side's choice ([`crate::steps`]) |
//! | `decode[].step` | integer | 0-based step |
//! | `decode[].rust_token`, `.cpp_token` | integer | the id each side chose from the same prefix |
//! | `decode[].match` | bool | the ids agree |
//! | `decode[].fed_token` | integer | the id both sides continued with (the C++ choice) |
//! | `decode[].label` | string | the label of the step's logits, as `positions[].label` |
//! | `summary` | object? | `null` when no logits were compared, else: |
//! | `summary.n_positions` | integer | positions compared |
//! | `summary.first_divergent_position` | integer? | first position not ok, `null` if none |
//! | `summary.min_cosine`, `.max_kl`, `.mean_kl`, `.max_abs_diff` | metric | over all positions |
//! | `summary.top1_agreement_rate` | number | 0..=1 |
//! | `summary.cos_tol` | number | the tolerance used |
//! | `summary.all_ok` | bool | every position ok |
//! | `thresholds.cos_tol` | number | the cosine tolerance (`--cos-tol`) |
//! | `thresholds.max_tokens` | integer | greedy steps requested (`--max-tokens`) |
//! | `thresholds.tie_margin` | number | the `tie-flip` margin ([`crate::verdict::TIE_MARGIN`]) |
//! | `config_gate` | object? | the configuration pre-gate ([`crate::config_gate::ConfigGate`]: `ok`, `facts[]` with `name`, `engine`, `reference`, `source`, `note`, `status`, `tensor_types[]`, `hints[]`); `null` when it did not run |
//! | `locate` | object? | the `--locate` report ([`crate::locate::LocateReport`]); `null` without `--locate` or when it did not run |
//! | `cpp_backend` | object? | the C++ reference; `null` when it was never started (then `status` is `vocab_mismatch`, `usage_error` or `error`) |
//! | `cpp_backend.backend` | string | `llama` (upstream llama.cpp) or `bitnet` (Microsoft's bitnet.cpp) |
//! | `cpp_backend.library` | string | the library and its version/commit as the reference reports it |
//! | `cpp_backend.build_info` | string | the reference's build description (compiler, flags) |
//! | `cpp_backend.system_info` | string | `llama_print_system_info()` of the reference |
//! | `environment.cpu` | string | CPU model name (`/proc/cpuinfo`), else the architecture |
//! | `environment.threads` | integer | threads used |
//! | `environment.os`, `.arch` | string | `std::env::consts::{OS, ARCH}` |
//!
//! Consistency rules checked by [`validate_receipt`]: `error` is a string iff `status` is
//! `vocab_mismatch`, `usage_error` or `error`; `token_parity` is an object whenever `status`
//! is `ok`, `diverged` or `token_mismatch`, and `cpp_backend` whenever it is one of those or
//! `config_mismatch`; `token_parity.first_diff_idx` is `null` iff `token_parity.status` is
//! `ok`; `status` is `token_mismatch` iff `token_parity.status` is `mismatch`; `summary` is
//! an object when `status` is `ok` or `diverged`; `status` is `config_mismatch` iff
//! `config_gate.ok` is false; `positions[].label` is `match` iff `positions[].ok`.
//!
//! Changes from 1.0.0: the statuses `vocab_mismatch` and `usage_error`; `error`, `warnings`
//! and `inputs.template_used` (which replaces `token_parity.template_used`); `token_parity`
//! and `cpp_backend` may be `null` (a 1.0.0 error receipt claimed a token parity `ok` that
//! was never checked, and a backend `unavailable` outside its own schema).
//!
//! Changes from 2.0.0 (additions): the status `config_mismatch`, `config_gate`, `locate`,
//! the labels and runner-ups of `positions[]`, `decode[].fed_token` and `.label` (greedy
//! steps are teacher-forced and no longer stop at a disagreement), `thresholds.tie_margin`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config_gate::ConfigGate;
use crate::locate::LocateReport;
use crate::logits_compare::{LogitsSummary, PositionMetrics};
use crate::verdict::Verdict;

/// The schema version this crate writes and validates.
pub const RECEIPT_SCHEMA_VERSION: &str = "2.1.0";

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

/// The C++ reference that produced the reference side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CppBackendInfo {
    /// `llama` or `bitnet`.
    pub backend: String,
    /// Library and version/commit.
    pub library: String,
    /// Build description.
    pub build_info: String,
    /// `llama_print_system_info()`.
    pub system_info: String,
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

// ---------------------------------------------------------------------------------------------
// Validator

type Obj = serde_json::Map<String, Value>;

/// The labels of [`Verdict`].
const LABELS: &[&str] = &["match", "drift", "tie-flip", "wrong"];

fn field<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<&'a Value, String> {
    o.get(key)
        .ok_or_else(|| format!("{ctx}.{key}: missing required field"))
}

fn obj<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<&'a Obj, String> {
    field(o, ctx, key)?
        .as_object()
        .ok_or_else(|| format!("{ctx}.{key}: expected an object"))
}

fn string<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<&'a str, String> {
    field(o, ctx, key)?
        .as_str()
        .ok_or_else(|| format!("{ctx}.{key}: expected a string"))
}

fn opt_string<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<Option<&'a str>, String> {
    match field(o, ctx, key)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(format!("{ctx}.{key}: expected a string or null")),
    }
}

fn boolean(o: &Obj, ctx: &str, key: &str) -> Result<bool, String> {
    field(o, ctx, key)?
        .as_bool()
        .ok_or_else(|| format!("{ctx}.{key}: expected a boolean"))
}

fn uint(o: &Obj, ctx: &str, key: &str) -> Result<u64, String> {
    field(o, ctx, key)?
        .as_u64()
        .ok_or_else(|| format!("{ctx}.{key}: expected a non-negative integer"))
}

fn opt_uint(o: &Obj, ctx: &str, key: &str) -> Result<Option<u64>, String> {
    match field(o, ctx, key)? {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{ctx}.{key}: expected a non-negative integer or null")),
    }
}

fn number(o: &Obj, ctx: &str, key: &str) -> Result<f64, String> {
    field(o, ctx, key)?
        .as_f64()
        .ok_or_else(|| format!("{ctx}.{key}: expected a number"))
}

fn metric(o: &Obj, ctx: &str, key: &str) -> Result<(), String> {
    match field(o, ctx, key)? {
        Value::Number(_) => Ok(()),
        Value::String(s) if matches!(s.as_str(), "NaN" | "inf" | "-inf") => Ok(()),
        _ => Err(format!(
            "{ctx}.{key}: expected a number or \"NaN\"/\"inf\"/\"-inf\""
        )),
    }
}

fn one_of(o: &Obj, ctx: &str, key: &str, allowed: &[&str]) -> Result<String, String> {
    let s = string(o, ctx, key)?;
    if allowed.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("{ctx}.{key}: {s:?} is not one of {allowed:?}"))
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
}

/// Checks the `token_parity` object; returns its status.
fn token_parity(tp: &Obj) -> Result<String, String> {
    let t = "token_parity";
    let tp_status = one_of(tp, t, "status", &["ok", "mismatch"])?;
    let rust_count = uint(tp, t, "rust_count")?;
    let cpp_count = uint(tp, t, "cpp_count")?;
    let diff = opt_uint(tp, t, "first_diff_idx")?;
    match (tp_status.as_str(), diff) {
        ("ok", Some(_)) => {
            Err("token_parity.first_diff_idx: must be null when status is ok".into())
        }
        ("mismatch", None) => {
            Err("token_parity.first_diff_idx: required when status is mismatch".into())
        }
        ("ok", None) if rust_count != cpp_count => {
            Err("token_parity: status ok but rust_count != cpp_count".into())
        }
        _ => Ok(tp_status),
    }
}

/// Checks a receipt against the documented schema (every required field, its type, and the
/// consistency rules). Returns the first problem found, naming the field.
pub fn validate_receipt(v: &Value) -> Result<(), String> {
    let root = v.as_object().ok_or("receipt: expected a JSON object")?;
    let r = "receipt";
    let version = string(root, r, "schema_version")?;
    if version.split('.').next() != Some("2") || version.split('.').count() != 3 {
        return Err(format!(
            "receipt.schema_version: {version:?} is not a 2.x.y version"
        ));
    }
    let status = one_of(
        root,
        r,
        "status",
        &[
            "ok",
            "diverged",
            "config_mismatch",
            "token_mismatch",
            "vocab_mismatch",
            "usage_error",
            "error",
        ],
    )?;
    // The statuses of a run that got as far as the token pre-gate; the configuration gate
    // comes before it, with the reference already started.
    let gated = matches!(status.as_str(), "ok" | "diverged" | "token_mismatch");
    let started = gated || status == "config_mismatch";
    let error = opt_string(root, r, "error")?;
    if error.is_some() == started {
        return Err(format!(
            "receipt.error: must be a string exactly when status is vocab_mismatch, usage_error or error (status {status:?})"
        ));
    }
    let warnings = field(root, r, "warnings")?
        .as_array()
        .ok_or("receipt.warnings: expected an array")?;
    if warnings.iter().any(|w| !w.is_string()) {
        return Err("receipt.warnings: expected an array of strings".into());
    }

    let tool = obj(root, r, "tool")?;
    string(tool, "tool", "name")?;
    string(tool, "tool", "version")?;

    let ts = string(root, r, "timestamp")?;
    if !is_rfc3339_utc(ts) {
        return Err(format!(
            "receipt.timestamp: {ts:?} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)"
        ));
    }

    let inputs = obj(root, r, "inputs")?;
    let i = "inputs";
    string(inputs, i, "model_path")?;
    let sha = string(inputs, i, "model_sha256")?;
    if !is_sha256(sha) {
        return Err(format!(
            "inputs.model_sha256: {sha:?} is not 64 lowercase hex digits"
        ));
    }
    let cpp_model = opt_string(inputs, i, "cpp_model_path")?;
    let cpp_sha = opt_string(inputs, i, "cpp_model_sha256")?;
    if cpp_model.is_some() != cpp_sha.is_some() || cpp_sha.is_some_and(|s| !is_sha256(s)) {
        return Err(
            "inputs.cpp_model_sha256: must be a sha256 exactly when cpp_model_path is set".into(),
        );
    }
    opt_string(inputs, i, "tokenizer_path")?;
    string(inputs, i, "prompt")?;
    string(inputs, i, "formatted_prompt")?;
    opt_string(inputs, i, "system_prompt")?;
    string(inputs, i, "template")?;
    opt_string(inputs, i, "template_used")?;
    boolean(inputs, i, "add_bos")?;
    boolean(inputs, i, "parse_special")?;

    let tp_status = match field(root, r, "token_parity")? {
        Value::Null if gated => {
            return Err(format!(
                "receipt.token_parity: required when status is {status:?}"
            ))
        }
        Value::Null => None,
        Value::Object(tp) => Some(token_parity(tp)?),
        _ => return Err("receipt.token_parity: expected an object or null".into()),
    };
    if (status == "token_mismatch") != (tp_status.as_deref() == Some("mismatch")) {
        return Err(format!(
            "receipt.status: {status:?} inconsistent with token_parity.status {tp_status:?}"
        ));
    }

    let positions = field(root, r, "positions")?
        .as_array()
        .ok_or("receipt.positions: expected an array")?;
    for (k, p) in positions.iter().enumerate() {
        let ctx = format!("positions[{k}]");
        let p = p
            .as_object()
            .ok_or_else(|| format!("{ctx}: expected an object"))?;
        uint(p, &ctx, "position")?;
        for m in ["cosine", "l2", "max_abs_diff", "nmse", "kl"] {
            metric(p, &ctx, m)?;
        }
        uint(p, &ctx, "rust_top1")?;
        uint(p, &ctx, "cpp_top1")?;
        boolean(p, &ctx, "top1_match")?;
        if uint(p, &ctx, "top5_overlap")? > 5 {
            return Err(format!("{ctx}.top5_overlap: must be 0..=5"));
        }
        uint(p, &ctx, "rust_non_finite")?;
        uint(p, &ctx, "cpp_non_finite")?;
        opt_uint(p, &ctx, "rust_top2")?;
        opt_uint(p, &ctx, "cpp_top2")?;
        metric(p, &ctx, "cpp_top2_margin")?;
        let ok = boolean(p, &ctx, "ok")?;
        let label = one_of(p, &ctx, "label", LABELS)?;
        if ok != (label == "match") {
            return Err(format!(
                "{ctx}.label: {label:?} inconsistent with ok = {ok}"
            ));
        }
    }

    let decode = field(root, r, "decode")?
        .as_array()
        .ok_or("receipt.decode: expected an array")?;
    for (k, d) in decode.iter().enumerate() {
        let ctx = format!("decode[{k}]");
        let d = d
            .as_object()
            .ok_or_else(|| format!("{ctx}: expected an object"))?;
        uint(d, &ctx, "step")?;
        uint(d, &ctx, "rust_token")?;
        uint(d, &ctx, "cpp_token")?;
        boolean(d, &ctx, "match")?;
        uint(d, &ctx, "fed_token")?;
        one_of(d, &ctx, "label", LABELS)?;
    }

    match field(root, r, "summary")? {
        Value::Null => {
            if status == "ok" || status == "diverged" {
                return Err(format!(
                    "receipt.summary: required when status is {status:?}"
                ));
            }
        }
        Value::Object(s) => {
            let c = "summary";
            uint(s, c, "n_positions")?;
            opt_uint(s, c, "first_divergent_position")?;
            for m in ["min_cosine", "max_kl", "mean_kl", "max_abs_diff"] {
                metric(s, c, m)?;
            }
            let rate = number(s, c, "top1_agreement_rate")?;
            if !(0.0..=1.0).contains(&rate) {
                return Err("summary.top1_agreement_rate: must be within 0..=1".into());
            }
            number(s, c, "cos_tol")?;
            boolean(s, c, "all_ok")?;
        }
        _ => return Err("receipt.summary: expected an object or null".into()),
    }

    let th = obj(root, r, "thresholds")?;
    number(th, "thresholds", "cos_tol")?;
    uint(th, "thresholds", "max_tokens")?;
    number(th, "thresholds", "tie_margin")?;

    let gate_ok = match field(root, r, "config_gate")? {
        Value::Null => None,
        Value::Object(g) => {
            field(g, "config_gate", "facts")?
                .as_array()
                .ok_or("config_gate.facts: expected an array")?;
            field(g, "config_gate", "tensor_types")?
                .as_array()
                .ok_or("config_gate.tensor_types: expected an array")?;
            Some(boolean(g, "config_gate", "ok")?)
        }
        _ => return Err("receipt.config_gate: expected an object or null".into()),
    };
    if (status == "config_mismatch") != (gate_ok == Some(false)) {
        return Err(format!(
            "receipt.status: {status:?} inconsistent with config_gate.ok {gate_ok:?}"
        ));
    }
    match field(root, r, "locate")? {
        Value::Null => {}
        Value::Object(l) => {
            one_of(l, "locate", "mode", &["first", "all"])?;
            uint(l, "locate", "tensors_compared")?;
            field(l, "locate", "tensors")?
                .as_array()
                .ok_or("locate.tensors: expected an array")?;
        }
        _ => return Err("receipt.locate: expected an object or null".into()),
    }

    match field(root, r, "cpp_backend")? {
        Value::Null if started => {
            return Err(format!(
                "receipt.cpp_backend: required when status is {status:?}"
            ))
        }
        Value::Null => {}
        Value::Object(be) => {
            one_of(be, "cpp_backend", "backend", &["llama", "bitnet"])?;
            string(be, "cpp_backend", "library")?;
            string(be, "cpp_backend", "build_info")?;
            string(be, "cpp_backend", "system_info")?;
        }
        _ => return Err("receipt.cpp_backend: expected an object or null".into()),
    }

    let env = obj(root, r, "environment")?;
    string(env, "environment", "cpu")?;
    uint(env, "environment", "threads")?;
    string(env, "environment", "os")?;
    string(env, "environment", "arch")?;
    Ok(())
}

#[cfg(test)]
mod tests;
