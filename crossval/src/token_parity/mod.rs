//! The token parity pre-gate.
//!
//! Logits from two engines can only be compared when both evaluated exactly the same token ids.
//! [`validate_token_parity`] (also reachable as [`TokenParityChecker::validate`]) compares the
//! Rust ids (`u32`) with the C++ ids (`i32`, as llama.cpp's `llama_token`) in one O(n) pass with
//! early exit, and allocates nothing when they match. A negative C++ id is always a mismatch: it
//! is never reinterpreted as a large `u32` that might happen to equal a Rust id.
//!
//! On a mismatch the [`TokenParityError`] carries both sequences, the first differing index (or
//! the shorter length when one sequence is a prefix of the other) and the prompt. The caller can
//! attach a [`ReportContext`] (model and tokenizer paths, the template used, decoded pieces,
//! BOS/EOS/special ids, the flags already given) with [`TokenParityError::with_context`]; the
//! report from [`TokenParityError::format_error`] then shows decoded pieces and labels, and its
//! fix-it hints and example command use the real paths. Every hint is emitted only when the
//! evidence in the two sequences and the context supports it (see [`Hint`]).
//!
//! [`TokenParityError::format_error`] returns plain text; [`TokenParityError::format_error_styled`]
//! adds ANSI colour when asked to. Whether to colour is the caller's decision
//! ([`should_colour`] implements the rule: a terminal, and `NO_COLOR` unset).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;

use console::Style;

/// How many ids of each sequence the report lists (the total count is shown when longer).
pub const MAX_LISTED_TOKENS: usize = 64;
/// Rows of the aligned diff shown before the first differing index.
pub const DIFF_CONTEXT_BEFORE: usize = 3;
/// Rows of the aligned diff shown after the first differing index.
pub const DIFF_CONTEXT_AFTER: usize = 4;
/// The command the example in the report starts with, unless [`ReportContext::command`] says
/// otherwise.
pub const DEFAULT_COMMAND: &str = "cargo run -p xtask --release -- crossval-per-token";

/// Entry point of the pre-gate (a unit struct so that the check can be named as a type).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenParityChecker;

impl TokenParityChecker {
    /// Checks that the Rust and C++ token sequences are identical.
    ///
    /// Returns `Ok(())` without allocating when they are; otherwise a [`TokenParityError`]
    /// describing the first difference. Same as [`validate_token_parity`].
    #[inline]
    pub fn validate(rust: &[u32], cpp: &[i32], prompt: &str) -> Result<(), TokenParityError> {
        match first_difference(rust, cpp) {
            None => Ok(()),
            Some(idx) => Err(TokenParityError::new(rust, cpp, idx, prompt)),
        }
    }
}

/// Checks that the Rust and C++ token sequences are identical (see [`TokenParityChecker::validate`]).
#[inline]
pub fn validate_token_parity(
    rust_tokens: &[u32],
    cpp_tokens: &[i32],
    prompt: &str,
) -> Result<(), TokenParityError> {
    TokenParityChecker::validate(rust_tokens, cpp_tokens, prompt)
}

/// The index of the first difference between the two sequences, or `None` when they are equal.
///
/// A negative C++ id differs from every Rust id. When one sequence is a strict prefix of the
/// other, the result is the shorter length. O(n), no allocation; compares blocks of ids without
/// branching and stops at the first block that contains a difference.
pub fn first_difference(rust: &[u32], cpp: &[i32]) -> Option<usize> {
    const BLOCK: usize = 32;
    let n = rust.len().min(cpp.len());
    let (rust_common, cpp_common) = (&rust[..n], &cpp[..n]);
    let mut base = 0;
    for (r, c) in rust_common.chunks(BLOCK).zip(cpp_common.chunks(BLOCK)) {
        // Non-zero iff some pair differs: XOR catches different bits, the sign bit of the C++ id
        // catches negative ids (whose bit pattern could otherwise equal a huge Rust id).
        let mut acc = 0u32;
        for (&a, &b) in r.iter().zip(c) {
            acc |= (a ^ b as u32) | ((b as u32) >> 31);
        }
        if acc != 0 {
            let offset = r.iter().zip(c).position(|(&a, &b)| !ids_equal(a, b));
            return offset.map(|o| base + o);
        }
        base += r.len();
    }
    (rust.len() != cpp.len()).then_some(n)
}

/// Whether a Rust id and a C++ id denote the same token (a negative C++ id never does).
#[inline]
fn ids_equal(rust: u32, cpp: i32) -> bool {
    i64::from(rust) == i64::from(cpp)
}

/// Which side of the comparison something was observed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSide {
    /// The Rust engine's tokenizer.
    Rust,
    /// The C++ reference's tokenizer.
    Cpp,
}

impl fmt::Display for TokenSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenSide::Rust => "Rust",
            TokenSide::Cpp => "C++",
        })
    }
}

/// Everything the report needs that only the caller (the cross-validation runner) knows.
///
/// All fields are optional in effect: with [`ReportContext::default`] the report still renders,
/// without pieces, labels or an example command.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportContext {
    /// The command the example starts with (default [`DEFAULT_COMMAND`]); inserted verbatim.
    pub command: String,
    /// The model given with `--model`.
    pub model_path: Option<PathBuf>,
    /// The HF tokenizer.json given with `--tokenizer` (`None`: the GGUF's own vocabulary).
    pub tokenizer_path: Option<PathBuf>,
    /// The template actually applied (`raw`, `instruct`, `llama3-chat`, `chatml`, `jinja`, ...;
    /// for `auto`, the one detected); `None` when unknown. Anything but `raw` triggers the
    /// "Use --prompt-template raw" hint.
    pub prompt_template: Option<String>,
    /// The template the user asked for, when it is not the one applied (`auto`): the report
    /// then shows both, `auto → raw`.
    pub requested_template: Option<String>,
    /// The `--system-prompt` given. The example command repeats it only with a template that
    /// uses a system prompt (never with `raw`).
    pub system_prompt: Option<String>,
    /// Whether this run asked the tokenizers to add BOS (the template's decision and
    /// `--no-bos`); `None` when unknown. When false, a BOS in one sequence came from the
    /// formatted text, and `--no-bos` cannot remove it.
    pub add_bos: Option<bool>,
    /// Whether the model's vocabulary adds BOS by default; decides whether `--no-bos` has any
    /// effect with `raw` or `instruct`. `None` when unknown (assumed yes).
    pub vocab_add_bos: Option<bool>,
    /// Further flags to repeat in the example command, as `(flag, value)` pairs (e.g.
    /// `("--cpp-model", "f32.gguf")`), printed as `--flag=value` with the value shell-quoted.
    /// Must not contain `--model`, `--tokenizer`, `--prompt`, `--prompt-template`,
    /// `--system-prompt` or `--no-bos`: the report decides those.
    pub extra_args: Vec<(String, String)>,
    /// `--dump-ids` was already given (so the report does not suggest it).
    pub dump_ids_requested: bool,
    /// `--no-bos` was already given (so the report does not suggest it).
    pub no_bos_requested: bool,
    /// The model's BOS id.
    pub bos_id: Option<u32>,
    /// End-of-sequence ids (EOS, EOT, ...).
    pub eos_ids: Vec<u32>,
    /// Other special/control token ids.
    pub special_ids: BTreeSet<u32>,
    /// Decoded pieces by id; fill with [`ReportContext::fill_pieces`] for
    /// [`TokenParityError::window_ids`].
    pub pieces: BTreeMap<u32, String>,
}

impl Default for ReportContext {
    fn default() -> Self {
        ReportContext {
            command: DEFAULT_COMMAND.to_string(),
            model_path: None,
            tokenizer_path: None,
            prompt_template: None,
            requested_template: None,
            system_prompt: None,
            add_bos: None,
            vocab_add_bos: None,
            extra_args: Vec::new(),
            dump_ids_requested: false,
            no_bos_requested: false,
            bos_id: None,
            eos_ids: Vec::new(),
            special_ids: BTreeSet::new(),
            pieces: BTreeMap::new(),
        }
    }
}

impl ReportContext {
    /// Decodes and stores the piece of every id in `ids` for which `decode` returns one.
    pub fn fill_pieces(
        &mut self,
        ids: impl IntoIterator<Item = u32>,
        mut decode: impl FnMut(u32) -> Option<String>,
    ) {
        for id in ids {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.pieces.entry(id) {
                if let Some(piece) = decode(id) {
                    slot.insert(piece);
                }
            }
        }
    }

    /// The label of an id: `BOS`, `EOS` or `special`.
    pub fn label(&self, id: u32) -> Option<&'static str> {
        if self.bos_id == Some(id) {
            Some("BOS")
        } else if self.eos_ids.contains(&id) {
            Some("EOS")
        } else if self.special_ids.contains(&id) {
            Some("special")
        } else {
            None
        }
    }

    fn template_is_raw(&self) -> Option<bool> {
        self.prompt_template
            .as_deref()
            .map(|t| t.eq_ignore_ascii_case("raw"))
    }
}

/// A fix-it hint of the report. Each is emitted only when its condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// One side starts with the same token twice, the other once: a BOS added twice. Condition:
    /// `s[0] == s[1]` on exactly one side, and that id is the BOS id (or, with no BOS id known,
    /// the other side starts with the same id).
    DuplicateBos {
        /// The side with two BOS tokens.
        side: TokenSide,
        /// The repeated id.
        bos: u32,
    },
    /// The BOS id starts one sequence but not the other (BOS id known, first difference at 0).
    BosOnOneSide {
        /// The side that has the BOS.
        side: TokenSide,
        /// The BOS id.
        bos: u32,
    },
    /// A non-raw template was used: suggest `--prompt-template raw`.
    UseRawTemplate,
    /// Model path known, and either a chat template was used (anything but `raw` and
    /// `instruct`, which owe nothing to the model's metadata) or a special token sits at the
    /// first difference: suggest `bitnet inspect <model>` to see the chat template metadata.
    InspectModel {
        /// The model path.
        model: PathBuf,
    },
    /// `--dump-ids` was not given: suggest it to see both sequences with pieces.
    DumpIds,
    /// A tokenizer.json was used and the sequences differ from their first content token (index
    /// 0, or index 1 after a BOS both share), not explained by a BOS on one side (one side's
    /// `[1]` equal to the other's `[0]`):
    /// the tokenizer.json probably belongs to a different vocabulary.
    TokenizerJsonMismatch {
        /// The tokenizer.json path.
        tokenizer: PathBuf,
    },
}

/// The pre-gate's failure: the two token sequences differ.
///
/// The four fields named by the specification (`rust_tokens`, `cpp_tokens`, `first_diff_idx`,
/// `prompt`) are kept as they are; `cpp_tokens_raw` keeps the C++ ids exactly as received
/// (`cpp_tokens` holds them bit-cast to `u32`, so a negative id appears there as a large value:
/// the report always shows the raw, negative value).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenParityError {
    /// The Rust token ids.
    pub rust_tokens: Vec<u32>,
    /// The C++ token ids, bit-cast to `u32` (see `cpp_tokens_raw` for the exact values).
    pub cpp_tokens: Vec<u32>,
    /// First differing index, or the shorter length when one sequence is a prefix of the other.
    pub first_diff_idx: usize,
    /// The prompt as the user gave it (before template formatting).
    pub prompt: String,
    /// The C++ token ids exactly as received, negative ids included.
    pub cpp_tokens_raw: Vec<i32>,
    /// Optional context for pieces, labels, hints and the example command.
    pub context: Option<Box<ReportContext>>,
}

impl TokenParityError {
    /// Builds the error for sequences that differ at `first_diff_idx`.
    pub fn new(rust: &[u32], cpp: &[i32], first_diff_idx: usize, prompt: &str) -> Self {
        TokenParityError {
            rust_tokens: rust.to_vec(),
            cpp_tokens: cpp.iter().map(|&id| id as u32).collect(),
            first_diff_idx,
            prompt: prompt.to_string(),
            cpp_tokens_raw: cpp.to_vec(),
            context: None,
        }
    }

    /// Attaches the caller's context (paths, template, pieces, special ids).
    pub fn with_context(mut self, context: ReportContext) -> Self {
        self.context = Some(Box::new(context));
        self
    }

    /// The row range of the aligned diff: a window around the first difference.
    pub fn window(&self) -> std::ops::Range<usize> {
        let longest = self.rust_tokens.len().max(self.cpp_raw().len());
        let start = self.first_diff_idx.saturating_sub(DIFF_CONTEXT_BEFORE);
        let end = (self.first_diff_idx + DIFF_CONTEXT_AFTER + 1).min(longest);
        start..end
    }

    /// The (non-negative) ids shown in the aligned diff, deduplicated: what the caller should
    /// decode into [`ReportContext::pieces`].
    pub fn window_ids(&self) -> Vec<u32> {
        let w = self.window();
        let mut ids = BTreeSet::new();
        for i in w {
            if let Some(&r) = self.rust_tokens.get(i) {
                ids.insert(r);
            }
            if let Some(&c) = self.cpp_raw().get(i) {
                if let Ok(c) = u32::try_from(c) {
                    ids.insert(c);
                }
            }
        }
        ids.into_iter().collect()
    }

    /// The C++ ids as received (falls back to `cpp_tokens` when `cpp_tokens_raw` was not filled,
    /// e.g. for an error built by hand).
    fn cpp_raw(&self) -> std::borrow::Cow<'_, [i32]> {
        if self.cpp_tokens_raw.len() == self.cpp_tokens.len() {
            std::borrow::Cow::Borrowed(&self.cpp_tokens_raw)
        } else {
            std::borrow::Cow::Owned(self.cpp_tokens.iter().map(|&t| t as i32).collect())
        }
    }

    /// The hints the evidence supports, in report order (see [`Hint`] for each condition).
    pub fn hints(&self) -> Vec<Hint> {
        let default_ctx = ReportContext::default();
        let ctx = self.context.as_deref().unwrap_or(&default_ctx);
        let rust: Vec<i64> = self.rust_tokens.iter().map(|&t| i64::from(t)).collect();
        let cpp: Vec<i64> = self.cpp_raw().iter().map(|&t| i64::from(t)).collect();
        let mut hints = Vec::new();

        let dup = duplicate_bos(&rust, &cpp, ctx.bos_id);
        if let Some((side, bos)) = dup {
            hints.push(Hint::DuplicateBos { side, bos });
        }
        let bos_one_side = match (ctx.bos_id, self.first_diff_idx) {
            (Some(bos), 0) if dup.is_none() => {
                let b = i64::from(bos);
                match (rust.first() == Some(&b), cpp.first() == Some(&b)) {
                    (true, false) => Some(TokenSide::Rust),
                    (false, true) => Some(TokenSide::Cpp),
                    _ => None,
                }
                .map(|side| (side, bos))
            }
            _ => None,
        };
        if let Some((side, bos)) = bos_one_side {
            hints.push(Hint::BosOnOneSide { side, bos });
        }
        let non_raw = ctx.template_is_raw() == Some(false);
        if non_raw {
            hints.push(Hint::UseRawTemplate);
        }
        if let Some(model) = &ctx.model_path {
            let special_at_diff = [rust.get(self.first_diff_idx), cpp.get(self.first_diff_idx)]
                .into_iter()
                .flatten()
                .filter_map(|&id| u32::try_from(id).ok())
                .any(|id| ctx.special_ids.contains(&id));
            let chat = ctx
                .prompt_template
                .as_deref()
                .is_some_and(|t| !matches!(t, "raw" | "instruct"));
            if chat || special_at_diff {
                hints.push(Hint::InspectModel {
                    model: model.clone(),
                });
            }
        }
        if !ctx.dump_ids_requested {
            hints.push(Hint::DumpIds);
        }
        if let Some(tokenizer) = &ctx.tokenizer_path {
            // A BOS on one side explains index 0 when the next id then lines up with the other
            // side's first id; otherwise the vocabularies themselves are suspect.
            let bos_explains = bos_one_side.is_some_and(|(side, _)| {
                let (with, without) = match side {
                    TokenSide::Rust => (&rust, &cpp),
                    TokenSide::Cpp => (&cpp, &rust),
                };
                with.get(1) == without.first()
            });
            // The first content token differs: at index 0, or at index 1 right after a BOS
            // both sides agree on.
            let shared_bos = self.first_diff_idx == 1
                && ctx
                    .bos_id
                    .map(i64::from)
                    .is_some_and(|b| rust.first() == Some(&b) && cpp.first() == Some(&b));
            if (self.first_diff_idx == 0 && !bos_explains) || shared_bos {
                hints.push(Hint::TokenizerJsonMismatch {
                    tokenizer: tokenizer.clone(),
                });
            }
        }
        hints
    }

    /// The hints as plain-text lines (what the report lists under "Suggested fixes:", and what
    /// a JSON report can put in its `suggestions` array).
    pub fn suggestions(&self) -> Vec<String> {
        let default_ctx = ReportContext::default();
        let ctx = self.context.as_deref().unwrap_or(&default_ctx);
        let command = ctx.command.as_str();
        // BOS was not added by the tokenizers: a BOS in the sequence comes from the text.
        let bos_from_text = ctx.add_bos == Some(false) && !ctx.no_bos_requested;
        let non_raw = ctx.template_is_raw() == Some(false);
        self.hints()
            .into_iter()
            .map(|h| match h {
                Hint::DuplicateBos { side, bos } => {
                    let fix = if bos_from_text || ctx.no_bos_requested {
                        "try: --prompt-template raw (the formatted text already starts with BOS)"
                    } else {
                        "try: --no-bos or --prompt-template raw"
                    };
                    format!(
                        "Possible duplicate BOS token: {side} tokens start with BOS twice \
                         (id {bos} at [0] and [1]) - {fix}"
                    )
                }
                Hint::BosOnOneSide { side, bos } => {
                    let fix = match (bos_from_text, ctx.no_bos_requested, non_raw) {
                        (true, _, true) => " - the formatted text carries it: try --prompt-template raw",
                        (true, _, false) | (false, true, _) => "",
                        (false, false, _) => " - try: --no-bos",
                    };
                    format!(
                        "BOS (id {bos}) starts only the {side} tokens: the two tokenizers disagree \
                         on adding BOS (a tokenizer.json post-processor can add one){fix}"
                    )
                }
                Hint::UseRawTemplate => {
                    "Use --prompt-template raw for raw tokenization (no formatting)".to_string()
                }
                Hint::InspectModel { model } => format!(
                    "Check GGUF chat_template metadata with: bitnet inspect {}",
                    shell_quote(&model.to_string_lossy())
                ),
                Hint::DumpIds => {
                    "Verify BOS and special-token handling: --dump-ids prints both sequences with \
                     pieces"
                        .to_string()
                }
                Hint::TokenizerJsonMismatch { tokenizer } => {
                    let model = ctx
                        .model_path
                        .as_ref()
                        .map_or_else(|| "MODEL.gguf".to_string(), |m| m.to_string_lossy().into());
                    let bulk = command.replace("crossval-per-token", "crossval-tokenizer");
                    format!(
                        "Tokens differ from the first token: {} may be a different vocabulary than the \
                         model's - omit --tokenizer to use the GGUF's vocabulary, or check with: \
                         {bulk} --model {} --tokenizer {} --random 200",
                        shell_quote(&tokenizer.to_string_lossy()),
                        shell_quote(&model),
                        shell_quote(&tokenizer.to_string_lossy())
                    )
                }
            })
            .collect()
    }

    /// The example command (header line, then the command on indented continuation lines), or
    /// `None` when the evidence suggests no change of flags or the model path is unknown.
    ///
    /// The command carries every fix the hints name, and no flag that has no effect there:
    /// * `--prompt-template raw` when a non-raw template was applied (else the template that
    ///   was applied, so `auto` is shown resolved);
    /// * `--tokenizer` dropped when the tokenizer.json is suspected (both sides then use the
    ///   GGUF's vocabulary and the same BOS decision, so a BOS hint needs no `--no-bos`);
    /// * `--no-bos` for a BOS hint (or when it was given), but only with a template that adds
    ///   BOS at all: never with `llama3-chat` / `chatml`, not with `raw` / `instruct` on a
    ///   vocabulary without BOS;
    /// * `--system-prompt` only with a template that uses it (not `raw`).
    ///
    /// Values are written `--flag=value` and shell-quoted ([`shell_quote`]), so a value that
    /// starts with `-` cannot be taken for a flag.
    pub fn example_command(&self) -> Option<(String, String)> {
        let (header, words) = self.example_words()?;
        Some((header, words.join(" \\\n    ")))
    }

    /// The example command on one line (what a JSON report carries), or `None` as for
    /// [`TokenParityError::example_command`].
    pub fn example_command_line(&self) -> Option<String> {
        self.example_words().map(|(_, words)| words.join(" "))
    }

    /// The example's header and its shell words (the command first, then one word per flag).
    fn example_words(&self) -> Option<(String, Vec<String>)> {
        let ctx = self.context.as_ref()?;
        let model = ctx.model_path.as_ref()?;
        let hints = self.hints();
        let to_raw = hints.contains(&Hint::UseRawTemplate);
        let bos_hint = hints
            .iter()
            .any(|h| matches!(h, Hint::DuplicateBos { .. } | Hint::BosOnOneSide { .. }));
        let drop_tokenizer = hints
            .iter()
            .any(|h| matches!(h, Hint::TokenizerJsonMismatch { .. }));
        let template = if to_raw {
            Some("raw")
        } else {
            ctx.prompt_template.as_deref()
        };
        let adds_bos_at_all = match template {
            Some("llama3-chat" | "chatml") => false,
            _ => ctx.vocab_add_bos.unwrap_or(true),
        };
        let no_bos = (ctx.no_bos_requested || (bos_hint && !drop_tokenizer)) && adds_bos_at_all;
        let adds_no_bos = no_bos && !ctx.no_bos_requested;
        if !to_raw && !adds_no_bos && !drop_tokenizer {
            return None;
        }
        let flag = |name: &str, value: &str| format!("{name}={}", shell_quote(value));
        let mut words = vec![
            ctx.command.clone(),
            flag("--model", &model.to_string_lossy()),
        ];
        if let (Some(t), false) = (&ctx.tokenizer_path, drop_tokenizer) {
            words.push(flag("--tokenizer", &t.to_string_lossy()));
        }
        words.push(flag("--prompt", &self.prompt));
        if let Some(t) = template {
            words.push(flag("--prompt-template", t));
        }
        if let (Some(s), false) = (&ctx.system_prompt, template == Some("raw")) {
            words.push(flag("--system-prompt", s));
        }
        if no_bos {
            words.push("--no-bos".into());
        }
        for (name, value) in &ctx.extra_args {
            words.push(flag(name, value));
        }
        let header = if to_raw {
            "Example command with raw template:"
        } else {
            "Example command:"
        };
        Some((header.to_string(), words))
    }

    /// The full mismatch report as plain text (no ANSI codes).
    pub fn format_error(&self) -> String {
        self.render(false)
    }

    /// The full mismatch report, with ANSI colour when `colour` is true.
    pub fn format_error_styled(&self, colour: bool) -> String {
        self.render(colour)
    }

    fn render(&self, colour: bool) -> String {
        let paint = |s: &str, style: Style| -> String {
            if colour {
                style.force_styling(true).apply_to(s).to_string()
            } else {
                s.to_string()
            }
        };
        let default_ctx = ReportContext::default();
        let ctx = self.context.as_deref().unwrap_or(&default_ctx);
        let cpp = self.cpp_raw();
        let mut out = String::new();
        out.push_str(&paint(
            "❌ Token Sequence Mismatch",
            Style::new().red().bold(),
        ));
        out.push('\n');
        out.push_str("Rust and C++ produced different tokens - cannot compare logits!\n\n");
        out.push_str(&format!("Prompt: {:?}\n", self.prompt));
        match (&ctx.requested_template, &ctx.prompt_template) {
            (Some(asked), Some(used)) if asked != used => {
                out.push_str(&format!("Template: {asked} → {used}\n"))
            }
            (_, Some(used)) => out.push_str(&format!("Template: {used}\n")),
            (Some(asked), None) => out.push_str(&format!("Template: {asked}\n")),
            (None, None) => {}
        }
        out.push('\n');
        out.push_str("Rust tokens:\n");
        out.push_str(&list_tokens(self.rust_tokens.iter().map(|&t| i64::from(t))));
        out.push_str("C++ tokens:\n");
        out.push_str(&list_tokens(cpp.iter().map(|&t| i64::from(t))));
        out.push('\n');
        out.push_str(&paint(
            &format!("First diff at index: {}", self.first_diff_idx),
            Style::new().bold(),
        ));
        out.push_str("\n\nToken diff (Rust | C++):\n");

        let window = self.window();
        let idx_width = window.end.saturating_sub(1).to_string().len();
        let cell = |id: Option<i64>| -> String {
            match id {
                None => "(end)".to_string(),
                Some(id) if id < 0 => format!("{id} (invalid: negative id)"),
                Some(id) => {
                    let id = id as u32;
                    let mut s = id.to_string();
                    if let Some(p) = ctx.pieces.get(&id) {
                        s.push_str(&format!(" {p:?}"));
                    }
                    if let Some(l) = ctx.label(id) {
                        s.push(' ');
                        s.push_str(l);
                    }
                    s
                }
            }
        };
        let rows: Vec<(usize, bool, String, String)> = window
            .map(|i| {
                let r = self.rust_tokens.get(i).map(|&t| i64::from(t));
                let c = cpp.get(i).map(|&t| i64::from(t));
                let same = matches!((r, c), (Some(a), Some(b)) if a == b);
                (i, same, cell(r), cell(c))
            })
            .collect();
        let rust_width = rows
            .iter()
            .map(|r| console::measure_text_width(&r.2))
            .max()
            .unwrap_or(0);
        for (i, same, r, c) in rows {
            let mark = if same {
                paint("✓", Style::new().green())
            } else {
                paint("✗", Style::new().red().bold())
            };
            let pad = rust_width - console::measure_text_width(&r);
            out.push_str(&format!(
                "  [{i:>idx_width$}] {mark} {r}{} | {c}\n",
                " ".repeat(pad)
            ));
        }

        let suggestions = self.suggestions();
        if !suggestions.is_empty() {
            out.push('\n');
            out.push_str(&paint("Suggested fixes:", Style::new().yellow().bold()));
            out.push('\n');
            for s in suggestions {
                out.push_str(&format!("  • {s}\n"));
            }
        }
        if let Some((header, command)) = self.example_command() {
            out.push('\n');
            out.push_str(&paint(&header, Style::new().bold()));
            out.push_str("\n  ");
            out.push_str(&paint(&command, Style::new().cyan()));
            out.push('\n');
        }
        out
    }
}

/// `[a, b, c]` on one indented line, at most [`MAX_LISTED_TOKENS`] ids, with the total when longer.
fn list_tokens(ids: impl ExactSizeIterator<Item = i64>) -> String {
    let total = ids.len();
    let shown: Vec<String> = ids.take(MAX_LISTED_TOKENS).map(|t| t.to_string()).collect();
    if total > MAX_LISTED_TOKENS {
        format!(
            "  [{}, ...] (first {MAX_LISTED_TOKENS} of {total} tokens)\n",
            shown.join(", ")
        )
    } else {
        let noun = if total == 1 { "token" } else { "tokens" };
        format!("  [{}] ({total} {noun})\n", shown.join(", "))
    }
}

/// `Some((side, id))` when exactly one side starts with the same id twice and that id is BOS
/// (or, with no BOS id known, the other side starts with that id too and does not repeat it).
fn duplicate_bos(rust: &[i64], cpp: &[i64], bos: Option<u32>) -> Option<(TokenSide, u32)> {
    let starts_twice =
        |s: &[i64]| -> Option<i64> { (s.len() >= 2 && s[0] == s[1] && s[0] >= 0).then_some(s[0]) };
    let (side, id, other) = match (starts_twice(rust), starts_twice(cpp)) {
        (Some(id), None) => (TokenSide::Rust, id, cpp),
        (None, Some(id)) => (TokenSide::Cpp, id, rust),
        _ => return None,
    };
    let is_bos = match bos {
        Some(b) => i64::from(b) == id,
        None => other.first() == Some(&id),
    };
    is_bos.then_some((side, id as u32))
}

/// Quotes `s` for a POSIX shell: unchanged when it contains only characters that are safe
/// unquoted, else wrapped in single quotes with each `'` written as `'\''`. Newlines, `$`,
/// backslashes and any Unicode are preserved literally.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b',' | b':' | b'=' | b'+' | b'@' | b'%'
                )
        });
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The colour rule of the product: colour only on a terminal, and never when `NO_COLOR` is set
/// (to any value). Pass `std::io::stderr().is_terminal()` and `std::env::var_os("NO_COLOR")`.
pub fn should_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none()
}

impl fmt::Display for TokenParityError {
    /// One line by default; the alternate form (`{:#}`) prints the full plain-text report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return f.write_str(&self.format_error());
        }
        write!(
            f,
            "token sequence mismatch: Rust and C++ differ at index {} (Rust {} tokens, C++ {} tokens)",
            self.first_diff_idx,
            self.rust_tokens.len(),
            self.cpp_tokens.len()
        )
    }
}

impl std::error::Error for TokenParityError {}

#[cfg(test)]
mod tests;
