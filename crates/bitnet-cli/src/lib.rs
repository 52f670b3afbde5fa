//! The library behind the `bitnet` command.
//!
//! The binary (`src/main.rs`) only parses arguments and writes bytes; everything a user can
//! observe — the report built from a GGUF file, its text and JSON renderings, the error
//! line and the exit code — is computed here, as plain values, so that tests can check it
//! without spawning a process.
//!
//! Each subcommand lives in its own module and ends in a [`CommandOutput`]: what to print
//! on stdout, what to print on stderr, and the exit code. Keeping the output as data has
//! one more benefit: a command never writes half a report and then fails, and JSON mode can
//! guarantee that stdout carries exactly one document whatever happens.
//!
//! Exit codes follow the project-wide contract (see [`exit`]): 0 success, 2 usage error,
//! 3 runtime error (unreadable or corrupt file). A panic is always a bug.
//!
//! ```
//! use bitnet_cli::{exit, inspect};
//! use bitnet_gguf::{GgufWriter, Value};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("vocab.gguf");
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", Value::String("llama".into())).unwrap();
//! w.write_file(&path).unwrap();
//!
//! let out = inspect::run(&path, inspect::Format::Json);
//! assert_eq!(out.code, exit::SUCCESS);
//! let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
//! assert_eq!(doc["architecture"], "llama");
//! assert!(doc["tokenizer"]["add_bos"].is_null());
//! ```
#![deny(missing_docs)]

pub mod inspect;
pub mod perplexity;
pub mod run;
pub mod run_config;
pub mod sampling_args;
pub mod tokenize;

/// Process exit codes shared by every `bitnet` subcommand.
///
/// A Rust `main` returning `Err` would exit 1, which the project reserves for "logits
/// diverged"; the binary therefore always maps outcomes to one of these explicitly.
pub mod exit {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Usage error: bad or missing arguments.
    pub const USAGE: u8 = 2;
    /// Runtime error: unreadable or corrupt input, I/O failure.
    pub const RUNTIME: u8 = 3;
}

/// Everything a finished subcommand wants the process to do: two streams and an exit code.
///
/// Invariant: in JSON mode `stdout` holds exactly one JSON document (followed by a newline),
/// whether the command succeeded or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Text for standard output.
    pub stdout: String,
    /// Text for standard error (diagnostics, the one-line error).
    pub stderr: String,
    /// Process exit code, one of the [`exit`] constants.
    pub code: u8,
}

/// The JSON document for a usage error, `{"error": "..."}`, from clap's rendered message.
///
/// Used when the command line asked for JSON output but could not be parsed, so that stdout
/// still carries exactly one JSON document. The message keeps clap's first paragraph (what
/// was wrong) on one line, without the `error: ` prefix and the usage block.
///
/// ```
/// let doc = bitnet_cli::usage_error_json(
///     "error: the following required arguments were not provided:\n  <MODEL>\n\nUsage: bitnet inspect <MODEL>\n",
/// );
/// let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
/// assert_eq!(doc["error"], "the following required arguments were not provided: <MODEL>");
/// ```
pub fn usage_error_json(clap_message: &str) -> String {
    let first_paragraph = clap_message.trim_start().split("\n\n").next().unwrap_or("");
    let message = first_paragraph
        .strip_prefix("error:")
        .unwrap_or(first_paragraph)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let doc = serde_json::json!({ "error": message });
    serde_json::to_string_pretty(&doc).expect("a string serializes") + "\n"
}
