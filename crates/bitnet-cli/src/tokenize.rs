//! `bitnet tokenize`: the token ids (and their pieces) a tokenizer gives a prompt.
//!
//! The tokenizer is either the vocabulary embedded in a GGUF model (`--model`, tokenized as
//! llama.cpp does) or a Hugging Face `tokenizer.json` (`--tokenizer`). The two switches mean
//! what they mean everywhere in bitnet-rs (see `bitnet_tokenizers`): BOS is llama.cpp's
//! `add_special` — on by default exactly when the vocabulary adds BOS by default — and
//! `--parse-special` makes special-token text (`<s>`, `<|begin_of_text|>`) special tokens.
//!
//! Output: text mode prints the ids on one line, then one line per token with its id and its
//! piece (special tokens rendered, bytes that are not UTF-8 shown as `\xNN`). `--json` prints
//! one compact document per prompt, `{"ids": [...], "pieces": [...]}` (pieces decoded as
//! UTF-8, invalid bytes replaced by U+FFFD); with `--input-jsonl` (one JSON string per line)
//! one such document per input line, in order. On error JSON mode prints `{"error": "..."}`.
//!
//! Exit codes: 0 success; 2 usage error (from the argument parser); 3 the tokenizer or the
//! input file cannot be read or is corrupt (one line `error: ...` on stderr).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bitnet_tokenizers::{GgufTokenizer, Tokenizer, TokenizerError};

use crate::{exit, CommandOutput};

/// Where the tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A GGUF model or vocabulary: its embedded tokenizer.
    Model(PathBuf),
    /// A Hugging Face `tokenizer.json` (a `.gguf` path is accepted too).
    Tokenizer(PathBuf),
}

/// What to tokenize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// One prompt given on the command line.
    Prompt(String),
    /// A file with one JSON string per line.
    Jsonl(PathBuf),
}

/// A complete `bitnet tokenize` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The tokenizer.
    pub source: Source,
    /// `Some(true)` for `--add-bos`, `Some(false)` for `--no-bos`, `None` for the
    /// vocabulary's default.
    pub add_bos: Option<bool>,
    /// `--parse-special`.
    pub parse_special: bool,
    /// The text(s).
    pub input: Input,
    /// `--json`.
    pub json: bool,
}

/// The result for one prompt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tokens {
    /// Token ids.
    pub ids: Vec<u32>,
    /// The piece of each id, special tokens rendered (lossy UTF-8).
    pub pieces: Vec<String>,
}

struct Failure(String);

impl From<TokenizerError> for Failure {
    fn from(e: TokenizerError) -> Self {
        Failure(e.to_string())
    }
}

/// Run the command and return what to print and the exit code.
pub fn run(req: &Request) -> CommandOutput {
    let mut stderr = String::new();
    match execute(req, &mut stderr) {
        Ok(stdout) => CommandOutput {
            stdout,
            stderr,
            code: exit::SUCCESS,
        },
        Err(Failure(message)) => {
            let stdout = if req.json {
                serde_json::json!({ "error": message }).to_string() + "\n"
            } else {
                String::new()
            };
            let _ = writeln!(stderr, "error: {message}");
            CommandOutput {
                stdout,
                stderr,
                code: exit::RUNTIME,
            }
        }
    }
}

fn open(source: &Source) -> Result<Box<dyn Tokenizer>, Failure> {
    Ok(match source {
        Source::Model(path) => Box::new(GgufTokenizer::open(path)?),
        Source::Tokenizer(path) => bitnet_tokenizers::load(path)?,
    })
}

fn execute(req: &Request, stderr: &mut String) -> Result<String, Failure> {
    let tok = open(&req.source)?;
    if req.add_bos == Some(true) && !tok.add_bos_default() {
        let _ = writeln!(
            stderr,
            "note: this vocabulary does not add BOS (add_bos = false), so --add-bos adds none; \
             this is llama.cpp's add_special, and bitnet crossval uses the same meaning"
        );
    }
    let add_bos = req.add_bos.unwrap_or(true);
    let prompts = match &req.input {
        Input::Prompt(p) => vec![p.clone()],
        Input::Jsonl(path) => read_jsonl(path)?,
    };
    let mut out = String::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let tokens = tokenize(tok.as_ref(), prompt, add_bos, req.parse_special)?;
        if req.json {
            out += &serde_json::to_string(&tokens).expect("strings and ints serialize");
            out.push('\n');
        } else {
            if matches!(req.input, Input::Jsonl(_)) {
                if i > 0 {
                    out.push('\n');
                }
                let _ = writeln!(out, "# line {}", i + 1);
            }
            out += &render_text(tok.as_ref(), &tokens.ids)?;
        }
    }
    Ok(out)
}

/// Encode `text` and render the piece of every id.
///
/// # Errors
/// The tokenizer's errors, as text.
fn tokenize(
    tok: &dyn Tokenizer,
    text: &str,
    add_bos: bool,
    parse_special: bool,
) -> Result<Tokens, Failure> {
    let ids = tok.encode(text, add_bos, parse_special)?;
    let pieces = ids
        .iter()
        .map(|&id| Ok(String::from_utf8_lossy(&tok.token_to_piece(id, true)?).into_owned()))
        .collect::<Result<_, TokenizerError>>()?;
    Ok(Tokens { ids, pieces })
}

fn render_text(tok: &dyn Tokenizer, ids: &[u32]) -> Result<String, Failure> {
    let mut out = String::new();
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    let _ = writeln!(out, "ids: [{}]", list.join(", "));
    let width = list.iter().map(String::len).max().unwrap_or(1);
    for &id in ids {
        let piece = tok.token_to_piece(id, true)?;
        let _ = writeln!(out, "{id:>width$}  {}", quote(&piece));
    }
    Ok(out)
}

/// `'piece'` with control characters escaped and invalid UTF-8 bytes shown as `\xNN`.
fn quote(bytes: &[u8]) -> String {
    let mut s = String::from("'");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\'' => s.push_str("\\'"),
                c => s.extend(c.escape_debug()),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02X}");
        }
    }
    s.push('\'');
    s
}

/// The prompts of a JSONL file: one JSON string per line (blank lines are skipped).
fn read_jsonl(path: &Path) -> Result<Vec<String>, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Failure(format!(
            "{}: not UTF-8 (invalid byte at offset {}); --input-jsonl expects UTF-8 text with one \
             JSON string per line",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<String>(line).map_err(|e| {
                Failure(format!(
                    "{}:{}: expected one JSON string per line (e.g. \"Hello\\n\"): {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_controls_and_invalid_bytes() {
        assert_eq!(quote(b" Hello"), "' Hello'");
        assert_eq!(quote(b"\n\t'"), "'\\n\\t\\''");
        assert_eq!(quote(&[0xE2]), "'\\xE2'");
        assert_eq!(quote("é".as_bytes()), "'é'");
    }
}
