//! `bitnet inspect`: what a GGUF file contains, at a glance or as JSON.
//!
//! The command answers the questions that come up first when a port disagrees with
//! llama.cpp: which architecture and hyper-parameters the file declares, which tokenizer and
//! special tokens it carries, whether `add_bos` is *stored* (an absent flag means "llama.cpp
//! decides", which is not the same as `false`), what the chat template says, and how the
//! tensor bytes are split by type.
//!
//! [`InspectReport`] is the data; [`InspectReport::to_text`] and [`InspectReport::to_json`]
//! are its two renderings; [`run`] is the whole command (open, report, render, map errors to
//! an exit code). Absent values are `None` in the report and `null` in JSON, never a default.
//!
//! The JSON schema is stable: every key below is always present.
//!
//! ```text
//! {
//!   "path": string, "file_size": int, "gguf_version": int, "metadata_count": int,
//!   "architecture": string|null, "name": string|null,
//!   "hparams": { "context_length", "embedding_length", "block_count",
//!                "feed_forward_length", "head_count", "head_count_kv",
//!                "rope_dimension_count", "vocab_size": int|[int]|null,
//!                "rms_norm_eps", "rope_freq_base": number|null },
//!   "tokenizer": { "model", "pre": string|null, "vocab_size", "merges_count": int|null,
//!                  "bos", "eos", "eot", "unk", "pad": {"id": int, "text": string|null}|null,
//!                  "add_bos", "add_eos", "add_space_prefix": bool|null,
//!                  "chat_template": string|null },
//!   "tensors": { "count": int, "total_bytes": int,
//!                "by_type": [ {"type": string, "count": int, "bytes": int} ] }
//! }
//! ```
//!
//! An integer hyper-parameter is an array when the file stores one value per layer (see
//! [`HparamInt`]). On error, JSON mode prints `{"path": string, "error": string}` instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use bitnet_gguf::{Array, GgmlType, GgufError, GgufFile, TokenizerMetadata};
use serde::Serialize;

use crate::{exit, CommandOutput};

/// How many lines of the chat template text mode shows.
pub const TEMPLATE_PREVIEW_LINES: usize = 5;
/// Longest template line (in characters) text mode shows before cutting it with `…`.
pub const TEMPLATE_PREVIEW_WIDTH: usize = 100;

/// Output format of the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned `key: value` lines for people.
    Text,
    /// One pretty-printed JSON document for programs.
    Json,
}

/// Everything `bitnet inspect` reports about one GGUF file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectReport {
    /// The path as the user gave it.
    pub path: String,
    /// File size in bytes.
    pub file_size: u64,
    /// GGUF format version (2 or 3).
    pub gguf_version: u32,
    /// Number of metadata key/value pairs.
    pub metadata_count: usize,
    /// `general.architecture`, when stored.
    pub architecture: Option<String>,
    /// `general.name`, when stored.
    pub name: Option<String>,
    /// The `<architecture>.*` hyper-parameters (all absent when the architecture is).
    pub hparams: Hparams,
    /// The `tokenizer.*` metadata.
    pub tokenizer: TokenizerReport,
    /// Tensor count and bytes, in total and by type.
    pub tensors: TensorSummary,
}

/// An integer hyper-parameter: one value, or one value per layer.
///
/// llama.cpp accepts per-layer arrays for head counts and feed-forward sizes (Gemma 4
/// stores `attention.head_count_kv` that way), so any integer key here may be an array.
/// JSON shows it as stored: a number or an array of numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HparamInt {
    /// One value for the whole model.
    Single(u64),
    /// One value per layer, in layer order.
    PerLayer(Vec<u64>),
}

impl HparamInt {
    /// How many values a per-layer array shows in text mode before `…`.
    const PREVIEW: usize = 8;

    /// Read `key` as an integer or an array of integers; `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] for any other type, [`GgufError::OutOfRange`] for a
    /// negative value.
    pub fn read(file: &GgufFile, key: &str) -> Result<Option<HparamInt>, GgufError> {
        let unsigned = |v: i128| {
            u64::try_from(v).map_err(|_| GgufError::OutOfRange {
                key: key.to_string(),
                value: v,
                expected: "u64",
            })
        };
        let Some(value) = file.get(key) else {
            return Ok(None);
        };
        if let Some(v) = value.as_i128() {
            return unsigned(v).map(|v| Some(HparamInt::Single(v)));
        }
        let wrong_type = || GgufError::WrongType {
            key: key.to_string(),
            expected: "integer or array of integers",
            found: value.value_type(),
        };
        let array = value.as_array().ok_or_else(wrong_type)?;
        let values = integers(array).ok_or_else(wrong_type)?;
        let values = values.into_iter().map(unsigned).collect::<Result<_, _>>()?;
        Ok(Some(HparamInt::PerLayer(values)))
    }
}

impl std::fmt::Display for HparamInt {
    /// `8`, or `per layer [8, 8, 2, …] (30 values)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HparamInt::Single(v) => write!(f, "{v}"),
            HparamInt::PerLayer(values) => {
                let shown: Vec<String> = values
                    .iter()
                    .take(Self::PREVIEW)
                    .map(u64::to_string)
                    .collect();
                let more = if values.len() > Self::PREVIEW {
                    ", …"
                } else {
                    ""
                };
                write!(
                    f,
                    "per layer [{}{more}] ({} values)",
                    shown.join(", "),
                    values.len()
                )
            }
        }
    }
}

/// The elements of an integer array, whatever integer type stored them.
fn integers(array: &Array) -> Option<Vec<i128>> {
    fn widen<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
        v.iter().map(|&x| x.into()).collect()
    }
    Some(match array {
        Array::U8(v) => widen(v),
        Array::I8(v) => widen(v),
        Array::U16(v) => widen(v),
        Array::I16(v) => widen(v),
        Array::U32(v) => widen(v),
        Array::I32(v) => widen(v),
        Array::U64(v) => widen(v),
        Array::I64(v) => widen(v),
        _ => return None,
    })
}

/// Model hyper-parameters as stored under `<architecture>.*`; `None` when absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Hparams {
    /// `context_length`.
    pub context_length: Option<HparamInt>,
    /// `embedding_length`.
    pub embedding_length: Option<HparamInt>,
    /// `block_count`.
    pub block_count: Option<HparamInt>,
    /// `feed_forward_length`.
    pub feed_forward_length: Option<HparamInt>,
    /// `attention.head_count`.
    pub head_count: Option<HparamInt>,
    /// `attention.head_count_kv`.
    pub head_count_kv: Option<HparamInt>,
    /// `attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: Option<f32>,
    /// `rope.freq_base`.
    pub rope_freq_base: Option<f32>,
    /// `rope.dimension_count`.
    pub rope_dimension_count: Option<HparamInt>,
    /// `vocab_size`, when the writer stored it (many do not).
    pub vocab_size: Option<HparamInt>,
}

impl Hparams {
    /// `(name, value)` pairs in display order; values already formatted, `None` if absent.
    /// Read the `<architecture>.*` keys.
    ///
    /// # Errors
    /// A key stored with a type it cannot have (see [`HparamInt::read`], and
    /// [`bitnet_gguf::GgufHeader::get_f32`] for the float keys).
    pub fn read(file: &GgufFile, architecture: &str) -> Result<Hparams, GgufError> {
        let key = |suffix: &str| format!("{architecture}.{suffix}");
        let int = |suffix: &str| HparamInt::read(file, &key(suffix));
        Ok(Hparams {
            context_length: int("context_length")?,
            embedding_length: int("embedding_length")?,
            block_count: int("block_count")?,
            feed_forward_length: int("feed_forward_length")?,
            head_count: int("attention.head_count")?,
            head_count_kv: int("attention.head_count_kv")?,
            rms_norm_eps: file.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_freq_base: file.get_f32(&key("rope.freq_base"))?,
            rope_dimension_count: int("rope.dimension_count")?,
            vocab_size: int("vocab_size")?,
        })
    }

    fn rows(&self) -> Vec<(&'static str, Option<String>)> {
        let int = |v: &Option<HparamInt>| v.as_ref().map(HparamInt::to_string);
        let float = |v: Option<f32>| v.map(|x| x.to_string());
        vec![
            ("context_length", int(&self.context_length)),
            ("embedding_length", int(&self.embedding_length)),
            ("block_count", int(&self.block_count)),
            ("feed_forward_length", int(&self.feed_forward_length)),
            ("head_count", int(&self.head_count)),
            ("head_count_kv", int(&self.head_count_kv)),
            ("rms_norm_eps", float(self.rms_norm_eps)),
            ("rope_freq_base", float(self.rope_freq_base)),
            ("rope_dimension_count", int(&self.rope_dimension_count)),
            ("vocab_size", int(&self.vocab_size)),
        ]
    }
}

/// A special token id and, when the vocabulary holds that id, its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecialToken {
    /// The id as stored.
    pub id: u32,
    /// `tokenizer.ggml.tokens[id]`; `None` when there is no vocabulary or the id is outside it.
    pub text: Option<String>,
}

/// The tokenizer metadata; every field is `None` when the file does not store it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenizerReport {
    /// `tokenizer.ggml.model` (`llama` = SentencePiece, `gpt2` = byte-level BPE, ...).
    pub model: Option<String>,
    /// `tokenizer.ggml.pre` (the BPE pre-tokenizer).
    pub pre: Option<String>,
    /// Number of entries in `tokenizer.ggml.tokens`.
    pub vocab_size: Option<usize>,
    /// Number of entries in `tokenizer.ggml.merges`.
    pub merges_count: Option<usize>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<SpecialToken>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<SpecialToken>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<SpecialToken>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<SpecialToken>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<SpecialToken>,
    /// `tokenizer.ggml.add_bos_token` as stored (absent: llama.cpp applies its own default).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token` as stored.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` as stored.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`, whole.
    pub chat_template: Option<String>,
}

impl TokenizerReport {
    fn from_metadata(t: &TokenizerMetadata<'_>) -> TokenizerReport {
        let special = |id: Option<u32>| {
            id.map(|id| SpecialToken {
                id,
                text: t.tokens.and_then(|tokens| tokens.get(id as usize)).cloned(),
            })
        };
        TokenizerReport {
            model: t.model.map(str::to_string),
            pre: t.pre.map(str::to_string),
            vocab_size: t.tokens.map(<[String]>::len),
            merges_count: t.merges.map(<[String]>::len),
            bos: special(t.bos_id),
            eos: special(t.eos_id),
            eot: special(t.eot_id),
            unk: special(t.unk_id),
            pad: special(t.pad_id),
            add_bos: t.add_bos,
            add_eos: t.add_eos,
            add_space_prefix: t.add_space_prefix,
            chat_template: t.chat_template.map(str::to_string),
        }
    }
}

/// Count and bytes of the tensors of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeSummary {
    /// ggml's lower-case type name (`f32`, `q4_1`, `i2_s`).
    #[serde(rename = "type")]
    pub ty: String,
    /// Number of tensors of this type.
    pub count: u64,
    /// Their data size in bytes.
    pub bytes: u64,
}

/// Tensor totals. Invariant: `count` and `total_bytes` are the sums over `by_type`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TensorSummary {
    /// Number of tensors (0 for a vocabulary-only file).
    pub count: u64,
    /// Sum of all tensor data sizes in bytes (padding excluded).
    pub total_bytes: u64,
    /// One entry per type present, in ggml type-id order.
    pub by_type: Vec<TypeSummary>,
}

impl TensorSummary {
    fn from_file(file: &GgufFile) -> TensorSummary {
        let mut by_id: BTreeMap<u32, (GgmlType, u64, u64)> = BTreeMap::new();
        for t in file.tensors() {
            let entry = by_id.entry(t.ty.id()).or_insert((t.ty, 0, 0));
            entry.1 += 1;
            entry.2 += t.size;
        }
        let by_type: Vec<TypeSummary> = by_id
            .into_values()
            .map(|(ty, count, bytes)| TypeSummary {
                ty: ty.name().to_string(),
                count,
                bytes,
            })
            .collect();
        TensorSummary {
            count: by_type.iter().map(|t| t.count).sum(),
            total_bytes: by_type.iter().map(|t| t.bytes).sum(),
            by_type,
        }
    }
}

/// Why a file could not be inspected.
#[derive(Debug)]
pub struct InspectError {
    /// The path as the user gave it.
    pub path: String,
    /// What the GGUF reader found.
    pub source: GgufError,
}

impl InspectError {
    /// The reason alone, on one line, without repeating the path.
    pub fn reason(&self) -> String {
        let text = match &self.source {
            // The reader's own message repeats the path; the error line already names it.
            GgufError::Io { source, .. } => format!("cannot read: {source}"),
            other => other.to_string(),
        };
        text.replace(['\n', '\r'], " ")
    }
}

impl std::fmt::Display for InspectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason())
    }
}

impl std::error::Error for InspectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl InspectReport {
    /// Open and validate `path`, then build its report.
    ///
    /// # Errors
    /// [`InspectError`] when the file cannot be read, is not a valid GGUF v2/v3 file, or
    /// stores a key the report needs with the wrong type.
    pub fn open(path: &Path) -> Result<InspectReport, InspectError> {
        let shown = path.display().to_string();
        let wrap = |source| InspectError {
            path: shown.clone(),
            source,
        };
        let file = GgufFile::open(path).map_err(wrap)?;
        InspectReport::from_file(&file, &shown).map_err(wrap)
    }

    /// Build the report of an already opened file; `path` is only echoed back.
    ///
    /// A missing `general.architecture` is not an error (vocabulary-only files may lack it):
    /// the architecture and every hyper-parameter are then reported as absent.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] / [`GgufError::OutOfRange`] when a key is stored with a type
    /// the report cannot use (e.g. a string `context_length`).
    pub fn from_file(file: &GgufFile, path: &str) -> Result<InspectReport, GgufError> {
        let architecture = file.get_str("general.architecture")?.map(str::to_string);
        let hparams = match &architecture {
            None => Hparams::default(),
            Some(arch) => Hparams::read(file, arch)?,
        };
        Ok(InspectReport {
            path: path.to_string(),
            file_size: file.file_size(),
            gguf_version: file.version,
            metadata_count: file.metadata().len(),
            architecture,
            name: file.get_str("general.name")?.map(str::to_string),
            hparams,
            tokenizer: TokenizerReport::from_metadata(&file.tokenizer()?),
            tensors: TensorSummary::from_file(file),
        })
    }

    /// The report as one pretty-printed JSON document (no trailing newline).
    pub fn to_json(&self) -> String {
        // Every field is a string, an integer, a float, a bool or null: cannot fail.
        serde_json::to_string_pretty(self).expect("the report serializes to JSON")
    }

    /// The report as aligned `key: value` lines, ending with a newline.
    pub fn to_text(&self) -> String {
        let mut rows = Rows::default();
        rows.field("file", &self.path);
        rows.field(
            "file size",
            &format!("{} ({} bytes)", human_bytes(self.file_size), self.file_size),
        );
        rows.field("gguf version", &self.gguf_version.to_string());
        rows.field("metadata keys", &self.metadata_count.to_string());
        rows.field("architecture", &or_absent(self.architecture.as_deref()));
        rows.field("name", &or_absent(self.name.as_deref()));

        let hparams = self.hparams.rows();
        if hparams.iter().all(|(_, v)| v.is_none()) {
            rows.field("hyper-parameters", ABSENT);
        } else {
            rows.heading("hyper-parameters");
            for (key, value) in hparams {
                rows.sub(key, &or_absent(value.as_deref()));
            }
        }

        let t = &self.tokenizer;
        rows.heading("tokenizer");
        rows.sub("model", &or_absent(t.model.as_deref()));
        rows.sub("pre", &or_absent(t.pre.as_deref()));
        rows.sub(
            "tokens",
            &or_absent(t.vocab_size.map(|n| n.to_string()).as_deref()),
        );
        rows.sub(
            "merges",
            &or_absent(t.merges_count.map(|n| n.to_string()).as_deref()),
        );
        for (key, token) in [
            ("bos", &t.bos),
            ("eos", &t.eos),
            ("eot", &t.eot),
            ("unk", &t.unk),
            ("pad", &t.pad),
        ] {
            rows.sub(key, &special_token_text(token.as_ref(), t.vocab_size));
        }
        for (key, flag) in [
            ("add_bos", t.add_bos),
            ("add_eos", t.add_eos),
            ("add_space_prefix", t.add_space_prefix),
        ] {
            let value = flag.map(|b| b.to_string());
            rows.sub(key, &or_absent(value.as_deref()));
        }

        match t.chat_template.as_deref() {
            None => rows.field("chat template", ABSENT),
            Some(template) => {
                let (summary, preview) = template_preview(template);
                rows.field("chat template", &summary);
                preview.into_iter().for_each(|line| rows.raw(line));
            }
        }

        let s = &self.tensors;
        if s.count == 0 {
            rows.field("tensors", "0 (vocabulary only)");
        } else {
            let summary = format!("{} ({})", s.count, human_bytes(s.total_bytes));
            rows.field("tensors", &summary);
            tensor_table(&s.by_type)
                .into_iter()
                .for_each(|line| rows.raw(line));
        }
        rows.render()
    }
}

/// Run `bitnet inspect PATH` in the given format: the whole command as a value.
///
/// Success: the report on stdout, exit 0. Failure: one line `error: PATH: REASON` on stderr,
/// exit 3; in JSON mode stdout also carries `{"path": ..., "error": REASON}` so that it holds
/// exactly one JSON document either way.
pub fn run(path: &Path, format: Format) -> CommandOutput {
    match (InspectReport::open(path), format) {
        (Ok(report), Format::Text) => CommandOutput {
            stdout: report.to_text(),
            stderr: String::new(),
            code: exit::SUCCESS,
        },
        (Ok(report), Format::Json) => CommandOutput {
            stdout: report.to_json() + "\n",
            stderr: String::new(),
            code: exit::SUCCESS,
        },
        (Err(e), format) => {
            let stdout = match format {
                Format::Text => String::new(),
                Format::Json => {
                    let doc = ErrorDoc {
                        path: &e.path,
                        error: &e.reason(),
                    };
                    serde_json::to_string_pretty(&doc).expect("strings serialize") + "\n"
                }
            };
            CommandOutput {
                stdout,
                stderr: format!("error: {e}\n"),
                code: exit::RUNTIME,
            }
        }
    }
}

/// The JSON document printed on stdout when inspection fails.
#[derive(Serialize)]
struct ErrorDoc<'a> {
    path: &'a str,
    error: &'a str,
}

const ABSENT: &str = "(absent)";

fn or_absent(value: Option<&str>) -> String {
    value.unwrap_or(ABSENT).to_string()
}

fn special_token_text(token: Option<&SpecialToken>, vocab_size: Option<usize>) -> String {
    match (token, vocab_size) {
        (None, _) => ABSENT.to_string(),
        (
            Some(SpecialToken {
                id,
                text: Some(text),
            }),
            _,
        ) => format!("{id} {text:?}"),
        (Some(SpecialToken { id, text: None }), Some(n)) => {
            format!("{id} (out of range: the vocabulary has {n} tokens)")
        }
        (Some(SpecialToken { id, text: None }), None) => id.to_string(),
    }
}

/// `"N lines, B bytes"` and the preview lines (indented, `| `-quoted, then
/// `(M more lines)`) of a chat template.
fn template_preview(template: &str) -> (String, Vec<String>) {
    let lines: Vec<&str> = template.lines().collect();
    let plural = if lines.len() == 1 { "" } else { "s" };
    let summary = format!("{} line{plural}, {} bytes", lines.len(), template.len());
    let mut preview: Vec<String> = lines
        .iter()
        .take(TEMPLATE_PREVIEW_LINES)
        .map(|line| format!("  | {}", clip_line(line, TEMPLATE_PREVIEW_WIDTH)))
        .collect();
    if lines.len() > TEMPLATE_PREVIEW_LINES {
        let more = lines.len() - TEMPLATE_PREVIEW_LINES;
        let plural = if more == 1 { "" } else { "s" };
        preview.push(format!("  ({more} more line{plural})"));
    }
    (summary, preview)
}

/// At most `width` characters of `line`, control characters escaped, `…` when cut.
fn clip_line(line: &str, width: usize) -> String {
    let mut out = String::new();
    for (i, c) in line.chars().enumerate() {
        if i == width {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The by-type table: a `type count bytes` header, then one line per type, indented.
fn tensor_table(by_type: &[TypeSummary]) -> Vec<String> {
    let header = ("type", "count".to_string(), "bytes".to_string());
    let mut cells: Vec<(&str, String, String)> = vec![header];
    for t in by_type {
        cells.push((&t.ty, t.count.to_string(), human_bytes(t.bytes)));
    }
    let w0 = cells.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = cells.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let w2 = cells.iter().map(|r| r.2.len()).max().unwrap_or(0);
    cells
        .into_iter()
        .map(|(ty, count, bytes)| format!("  {ty:<w0$}  {count:>w1$}  {bytes:>w2$}"))
        .collect()
}

/// `bytes` in binary units with one decimal: `512 B`, `1.5 KiB`, `67.3 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up while the rounded value would print as 1024.0 or more.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// One line of text output.
enum Row {
    /// `key:` padded to the value column, then the value.
    Field(String, String),
    /// A line printed as is (section headings, previews, tables).
    Raw(String),
}

/// Text-mode lines: `key: value` fields (top-level or indented under a heading) with all
/// values aligned to one column, and raw lines in between.
#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
}

impl Rows {
    fn field(&mut self, key: &str, value: &str) {
        self.rows
            .push(Row::Field(format!("{key}:"), value.to_string()));
    }

    fn heading(&mut self, title: &str) {
        self.raw(format!("{title}:"));
    }

    fn sub(&mut self, key: &str, value: &str) {
        self.rows
            .push(Row::Field(format!("  {key}:"), value.to_string()));
    }

    fn raw(&mut self, line: String) {
        self.rows.push(Row::Raw(line));
    }

    fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .filter_map(|row| match row {
                Row::Field(key, _) => Some(key.chars().count()),
                Row::Raw(_) => None,
            })
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for row in &self.rows {
            match row {
                Row::Field(key, value) => {
                    let _ = writeln!(out, "{key:<width$} {value}");
                }
                Row::Raw(line) => {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_gguf::{GgufWriter, Value};

    fn s(x: &str) -> Value {
        Value::String(x.to_string())
    }

    fn full_model() -> GgufFile {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", s("llama")).unwrap();
        w.add_metadata("general.name", s("Tiny")).unwrap();
        w.add_metadata("llama.context_length", Value::U32(256))
            .unwrap();
        w.add_metadata("llama.embedding_length", Value::U32(8))
            .unwrap();
        w.add_metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
            .unwrap();
        w.add_metadata("tokenizer.ggml.model", s("llama")).unwrap();
        let tokens = ["<unk>", "<s>", "</s>", "a"].map(String::from).to_vec();
        w.add_metadata("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))
            .unwrap();
        w.add_metadata("tokenizer.ggml.bos_token_id", Value::U32(1))
            .unwrap();
        w.add_metadata("tokenizer.ggml.eos_token_id", Value::U32(99))
            .unwrap();
        w.add_metadata("tokenizer.ggml.add_bos_token", Value::Bool(false))
            .unwrap();
        let template = (1..=8).map(|i| format!("line {i}")).collect::<Vec<_>>();
        w.add_metadata("tokenizer.chat_template", s(&template.join("\n")))
            .unwrap();
        w.add_tensor("a", &[4], GgmlType::F32, vec![0; 16]).unwrap();
        w.add_tensor("b", &[4, 2], GgmlType::F32, vec![0; 32])
            .unwrap();
        w.add_tensor("c", &[4], GgmlType::F16, vec![0; 8]).unwrap();
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    }

    #[test]
    fn report_reads_values_as_stored() {
        let r = InspectReport::from_file(&full_model(), "m.gguf").unwrap();
        assert_eq!(r.architecture.as_deref(), Some("llama"));
        assert_eq!(r.name.as_deref(), Some("Tiny"));
        assert_eq!(r.hparams.context_length, Some(HparamInt::Single(256)));
        assert_eq!(r.hparams.block_count, None);
        assert_eq!(r.hparams.rms_norm_eps, Some(1e-5));
        assert_eq!(r.tokenizer.vocab_size, Some(4));
        assert_eq!(
            r.tokenizer.bos,
            Some(SpecialToken {
                id: 1,
                text: Some("<s>".into())
            })
        );
        assert_eq!(r.tokenizer.eos, Some(SpecialToken { id: 99, text: None }));
        assert_eq!(r.tokenizer.add_bos, Some(false));
        assert_eq!(r.tokenizer.add_eos, None);
        assert_eq!(r.tensors.count, 3);
        assert_eq!(r.tensors.total_bytes, 56);
        let by_type: Vec<_> = r
            .tensors
            .by_type
            .iter()
            .map(|t| (t.ty.as_str(), t.count, t.bytes))
            .collect();
        assert_eq!(by_type, [("f32", 2, 48), ("f16", 1, 8)]);
    }

    #[test]
    fn text_shows_absent_distinct_from_false_and_previews_template() {
        let text = InspectReport::from_file(&full_model(), "m.gguf")
            .unwrap()
            .to_text();
        let line = |key: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(&format!("{key}:")))
                .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
                .to_string()
        };
        assert!(line("add_bos").ends_with(" false"), "{text}");
        assert!(line("add_eos").ends_with(" (absent)"), "{text}");
        assert!(line("bos").ends_with(r#" 1 "<s>""#), "{text}");
        assert!(line("eos").contains("99 (out of range"), "{text}");
        assert!(line("block_count").ends_with(" (absent)"), "{text}");
        assert!(text.contains("  | line 5\n  (3 more lines)\n"), "{text}");
        assert!(!text.contains("line 6"), "{text}");
        // Values of all key: value rows start in the same column.
        let value_column = |key: &str| {
            let l = line(key);
            let colon = l.find(':').unwrap() + 1;
            colon + l[colon..].len() - l[colon..].trim_start().len()
        };
        let columns: Vec<usize> = ["file", "architecture", "model", "add_space_prefix"]
            .iter()
            .map(|k| value_column(k))
            .collect();
        assert!(
            columns.windows(2).all(|w| w[0] == w[1]),
            "{columns:?}\n{text}"
        );
    }

    #[test]
    fn empty_file_reports_everything_absent() {
        let file = GgufFile::from_bytes(GgufWriter::new().to_bytes()).unwrap();
        let r = InspectReport::from_file(&file, "v.gguf").unwrap();
        assert_eq!(r.architecture, None);
        assert_eq!(r.hparams, Hparams::default());
        assert_eq!(r.tokenizer, TokenizerReport::default());
        assert_eq!(r.tensors, TensorSummary::default());
        let text = r.to_text();
        assert!(text.contains("hyper-parameters:"), "{text}");
        assert!(text.contains("0 (vocabulary only)"), "{text}");
        assert!(!text.contains("count"), "{text}");
        let doc: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(doc["hparams"]["context_length"].is_null());
        assert!(doc["tokenizer"]["chat_template"].is_null());
        assert_eq!(doc["tensors"]["by_type"], serde_json::json!([]));
    }

    #[test]
    fn wrongly_typed_key_is_an_error_naming_the_key() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", s("llama")).unwrap();
        w.add_metadata("llama.block_count", s("twelve")).unwrap();
        let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
        let err = InspectReport::from_file(&file, "x").unwrap_err();
        assert!(err.to_string().contains("llama.block_count"), "{err}");
    }

    #[test]
    fn per_layer_hparams_are_reported_as_arrays() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", s("gemma4")).unwrap();
        let kv: Vec<i32> = (0..10).map(|i| if i % 5 == 4 { 2 } else { 8 }).collect();
        w.add_metadata(
            "gemma4.attention.head_count_kv",
            Value::Array(Array::I32(kv)),
        )
        .unwrap();
        w.add_metadata("gemma4.attention.head_count", Value::U16(16))
            .unwrap();
        let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
        let r = InspectReport::from_file(&file, "g.gguf").unwrap();
        assert_eq!(r.hparams.head_count, Some(HparamInt::Single(16)));
        let expected = vec![8, 8, 8, 8, 2, 8, 8, 8, 8, 2];
        assert_eq!(
            r.hparams.head_count_kv,
            Some(HparamInt::PerLayer(expected.clone()))
        );
        let doc: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(doc["hparams"]["head_count_kv"], serde_json::json!(expected));
        assert_eq!(doc["hparams"]["head_count"], 16);
        let text = r.to_text();
        assert!(
            text.contains("per layer [8, 8, 8, 8, 2, 8, 8, 8, …] (10 values)"),
            "{text}"
        );
    }

    #[test]
    fn negative_or_non_integer_hparams_are_errors() {
        for value in [
            Value::I32(-1),
            Value::Array(Array::I64(vec![4, -4])),
            Value::Array(Array::F32(vec![1.0])),
        ] {
            let mut w = GgufWriter::new();
            w.add_metadata("general.architecture", s("llama")).unwrap();
            w.add_metadata("llama.feed_forward_length", value).unwrap();
            let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
            let err = InspectReport::from_file(&file, "x").unwrap_err();
            assert!(
                err.to_string().contains("llama.feed_forward_length"),
                "{err}"
            );
        }
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(70_569_984), "67.3 MiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn clip_line_cuts_on_characters_and_escapes_controls() {
        assert_eq!(clip_line("abc", 5), "abc");
        assert_eq!(clip_line("ééééé", 3), "ééé…");
        assert_eq!(clip_line("a\tb", 10), "a\\tb");
    }

    #[test]
    fn error_reason_is_one_line_without_the_path_twice() {
        let out = run(Path::new("/no/such/file.gguf"), Format::Text);
        assert_eq!(out.code, exit::RUNTIME);
        assert!(out.stdout.is_empty());
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out
            .stderr
            .starts_with("error: /no/such/file.gguf: cannot read: "));
        assert_eq!(out.stderr.matches("/no/such/file.gguf").count(), 1);
    }
}
