//! The per-token cross-validation flow behind `xtask crossval-per-token`, as a library
//! function so tests can drive all of it without a subprocess.
//!
//! The stages, in order; each can stop the run with its own status and exit code
//! ([`RunStatus::exit_code`]):
//! 1. **arguments** — an empty prompt, a tolerance outside −1..=1, zero threads: `usage_error` (2);
//! 2. **the engine's model** — unreadable or corrupt: `error` (3); `--max-tokens` that leaves no
//!    room in its context, or a run configuration (KV cache types, flash attention) its
//!    reference refuses or the engine does not reproduce: `usage_error` (2);
//! 3. **the vocabulary gate** (with `--cpp-model`, see [`crate::vocab_check`]): `vocab_mismatch` (2);
//! 4. **the prompt** — the template formats it (a chat template that cannot be rendered is a
//!    malformed file: `error`, 3); flags the template ignores and chat markers the vocabulary
//!    lacks become warnings (stderr, and `warnings` in JSON);
//! 5. **the context** — the formatted text's size bounds its token count from below, checked
//!    before tokenizing; then the engine's token count: a prompt that cannot fit with the
//!    greedy steps is a `usage_error` (2), decided before the C++ reference even starts;
//! 6. **the C++ reference** starts with the same run configuration (a `--cpp-model` is first
//!    held to the rules of `bitnet_inference::rules`, as the engine's model was on loading:
//!    `error`, 3); **the run-configuration check** ([`crate::run_configuration`]) — it must
//!    have resolved the run configuration exactly as the engine did, or the two would compute
//!    different things: `error` (3); then (with `--cpp-model`) its own view of the vocabulary
//!    is checked too;
//! 7. **the configuration gate** ([`crate::config_gate`]) — the reference's view of the
//!    model's hyper-parameters against the engine's: a difference is `config_mismatch` (2),
//!    with both values; then the reference tokenizes the same text;
//! 8. **the pre-gate** — different ids: `token_mismatch` (2), with the report; nothing is
//!    evaluated;
//! 9. **logits** of every position on both sides (the C++ side evaluates exactly the validated
//!    ids), the comparison, the teacher-forced greedy steps ([`crate::steps`]): `ok` (0) or
//!    `diverged` (1). NaN/±∞ logits are not compared: alike on both sides is an `error` (3, the
//!    model produces them), different is `diverged` (1); either way the engine tensor where
//!    they first appear is named;
//! 10. with `--locate`, **the first diverging intermediate tensor** ([`crate::locate`]): a
//!     report only, the exit code stays the logits'. A gate that stopped the run refuses it,
//!     saying so.
//!
//! Then the JSON document and the receipt. A receipt that was asked for and cannot be written
//! turns the run into an `error` (3); the results computed so far are still reported.

mod report;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bitnet_cpp::{BackendChoice, RunConfig, Session, SessionOptions};
use bitnet_gguf::GgufFile;
use bitnet_inference::{
    format_prompt, template_warnings, FormattedPrompt, Model, ModelChatInfo, RunChoice,
    TemplateType,
};
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

use crate::config_gate::{self, ConfigGate};
use crate::locate::{self, LocateOptions, LocateReport};
use crate::logits_compare::{compare_logits, LogitsComparison, LogitsMatrix, NonFinite};
use crate::receipt::{CppBackendInfo, RunConfiguration, RunStatus};
use crate::run_configuration;
use crate::steps::{self, Step};
use crate::token_parity::ReportContext;
use crate::vocab_check::{self, VocabFingerprint, VocabMismatch, VocabView};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// Exactly one JSON document on stdout.
    Json,
}

/// Everything `crossval-per-token` takes.
#[derive(Debug, Clone)]
pub struct PerTokenConfig {
    /// The model (Rust side; also the C++ side unless `cpp_model`).
    pub model: PathBuf,
    /// HF tokenizer.json for the Rust side (default: the GGUF's vocabulary).
    pub tokenizer: Option<PathBuf>,
    /// The prompt.
    pub prompt: String,
    /// The template.
    pub template: TemplateType,
    /// System prompt for the templates that use one.
    pub system_prompt: Option<String>,
    /// Force BOS off on both sides.
    pub no_bos: bool,
    /// Greedy steps compared after the prompt.
    pub max_tokens: usize,
    /// Cosine tolerance: decides the ✓/✗ marks and the exit code.
    pub cos_tol: f64,
    /// Output format.
    pub format: OutputFormat,
    /// Print both token sequences with pieces on stderr.
    pub dump_ids: bool,
    /// Write a receipt here.
    pub receipt: Option<PathBuf>,
    /// The reference runs this file instead of `model`.
    pub cpp_model: Option<PathBuf>,
    /// Which C++ reference.
    pub cpp_backend: BackendChoice,
    /// Threads (both sides; default all cores).
    pub threads: Option<usize>,
    /// KV cache types, flash attention and micro-batch size, for both sides (default: the
    /// reference's defaults).
    pub run: RunChoice,
    /// Echo the reference's log.
    pub verbose: bool,
    /// Colour in text mode.
    pub colour: bool,
    /// Locate the first diverging intermediate tensor (or profile every one).
    pub locate: Option<LocateOptions>,
}

impl PerTokenConfig {
    /// A configuration with the command's defaults.
    pub fn new(model: impl Into<PathBuf>, prompt: impl Into<String>) -> Self {
        PerTokenConfig {
            model: model.into(),
            tokenizer: None,
            prompt: prompt.into(),
            template: TemplateType::Raw,
            system_prompt: None,
            no_bos: false,
            max_tokens: 4,
            cos_tol: 0.999,
            format: OutputFormat::Text,
            dump_ids: false,
            receipt: None,
            cpp_model: None,
            cpp_backend: BackendChoice::Auto,
            threads: None,
            run: RunChoice::default(),
            verbose: false,
            colour: false,
            locate: None,
        }
    }
}

/// What the command produced: the two streams, the status and the exit code.
#[derive(Debug, Clone)]
pub struct PerTokenOutcome {
    /// `ok`, `diverged`, `config_mismatch`, `token_mismatch`, `vocab_mismatch`,
    /// `usage_error` or `error`.
    pub status: RunStatus,
    /// 0 match, 1 diverged, 2 token mismatch / usage, 3 runtime error.
    pub exit_code: u8,
    /// Standard output (in JSON mode: one document).
    pub stdout: String,
    /// Standard error (the mismatch report, errors, `--dump-ids`).
    pub stderr: String,
    /// Whether any logits were computed (false after the pre-gate refused).
    pub logits_evaluated: bool,
}

/// A run that stopped early: its status (`usage_error`, `vocab_mismatch` or `error`) and why.
struct Failure {
    status: RunStatus,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        status: RunStatus::UsageError,
        message: message.into(),
    }
}

fn runtime(message: impl std::fmt::Display) -> Failure {
    Failure {
        status: RunStatus::Error,
        message: message.to_string(),
    }
}

/// The shared state of one run, for the JSON document and the receipt.
#[derive(Default)]
struct Record {
    formatted: String,
    /// The template applied (`None` until the prompt is formatted).
    template_used: Option<String>,
    add_bos: bool,
    parse_special: bool,
    warnings: Vec<String>,
    rust_tokens: Vec<u32>,
    cpp_tokens: Vec<i32>,
    /// The pre-gate ran (both sides tokenized).
    gate_ran: bool,
    first_diff: Option<usize>,
    comparison: Option<LogitsComparison>,
    decode: Vec<Step>,
    config_gate: Option<ConfigGate>,
    locate: Option<LocateReport>,
    /// Why `--locate` did not run although asked for.
    locate_refused: Option<String>,
    suggestions: Vec<String>,
    example_command: Option<String>,
    vocab_mismatch: Option<VocabMismatch>,
    cpp_info: Option<CppBackendInfo>,
    /// The run configuration both sides computed with (once the run-configuration check
    /// has passed).
    run_configuration: Option<RunConfiguration>,
    threads: usize,
    logits_evaluated: bool,
    /// What non-finite logits there were, when there were any.
    non_finite: Option<String>,
}

/// Run the whole flow. Never panics on bad input: every failure becomes an outcome.
///
/// `progress` is told when each stage starts (loading, starting the reference, evaluating
/// each side, the greedy steps), so a caller can show what a long run is doing.
pub fn run_per_token(cfg: &PerTokenConfig, progress: &mut dyn FnMut(&str)) -> PerTokenOutcome {
    let mut rec = Record::default();
    let mut stdout = String::new();
    let mut stderr = String::new();
    let result = flow(cfg, progress, &mut rec, &mut stdout, &mut stderr);
    let (mut status, mut error) = match result {
        Ok(status) => (status, None),
        Err(f) => (f.status, Some(f.message)),
    };
    if let Some(path) = &cfg.receipt {
        if let Err(e) = report::write_receipt(cfg, &rec, status, error.as_deref(), path) {
            // A receipt that was asked for and is missing fails the run; what was computed is
            // still reported below.
            error = Some(match error {
                Some(first) => format!("{first}; and {e}"),
                None => format!("{e} (the comparison itself: {})", status.name()),
            });
            status = RunStatus::Error;
        }
    }
    if let Some(msg) = &error {
        stderr.push_str(&format!("error: {msg}\n"));
    }
    if cfg.format == OutputFormat::Json {
        stdout = report::json_document(cfg, &rec, status, error.as_deref()).to_string() + "\n";
    }
    PerTokenOutcome {
        status,
        exit_code: status.exit_code(),
        stdout,
        stderr,
        logits_evaluated: rec.logits_evaluated,
    }
}

/// Stage 1: the values clap cannot check.
fn check_arguments(cfg: &PerTokenConfig) -> Result<(), Failure> {
    if cfg.prompt.is_empty() {
        return Err(usage("--prompt must not be empty"));
    }
    if !(cfg.cos_tol.is_finite() && (-1.0..=1.0).contains(&cfg.cos_tol)) {
        return Err(usage(format!(
            "--cos-tol {} must be between -1 and 1",
            cfg.cos_tol
        )));
    }
    if cfg.threads == Some(0) {
        return Err(usage("--threads must be positive"));
    }
    Ok(())
}

fn flow(
    cfg: &PerTokenConfig,
    progress: &mut dyn FnMut(&str),
    rec: &mut Record,
    out: &mut String,
    err: &mut String,
) -> Result<RunStatus, Failure> {
    check_arguments(cfg)?;
    rec.threads = cfg
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(rec.threads)
        .build_global();

    // Stage 2: the engine's model, and whether the greedy steps leave room for a prompt.
    progress(&format!("loading {} (Rust engine)", cfg.model.display()));
    let model =
        Model::load(&cfg.model).map_err(|e| runtime(format!("{}: {e}", cfg.model.display())))?;
    let context = model.config().context_length;
    if cfg.max_tokens >= context {
        return Err(usage(format!(
            "--max-tokens {} leaves no room for a prompt: the model's context is {context} tokens; \
             use --max-tokens {} or less",
            cfg.max_tokens,
            context.saturating_sub(1)
        )));
    }
    // The run configuration, resolved as the model's reference resolves it: a combination
    // the reference refuses is a usage error with its reason.
    let (run, mut state) =
        run_configuration::resolve(&model, &cfg.run, rec.threads as u32).map_err(usage)?;
    // The model's own vocabulary decides the BOS default (DESIGN.md: raw and instruct add BOS
    // when the model's vocabulary says so), even when the Rust side tokenizes with a
    // tokenizer.json: whether that file adds the same BOS is exactly what the gate checks.
    let model_vocab = GgufTokenizer::from_header(model.file(), &cfg.model)
        .map_err(|e| runtime(format!("{}: tokenizer: {e}", cfg.model.display())))?;

    // Stage 3: --cpp-model must have the same vocabulary, before anything is tokenized.
    if let Some(cpp_model) = &cfg.cpp_model {
        vocab_gate(cfg, model.file(), cpp_model, rec, err)?;
    }

    // Stage 4: the formatted prompt, and what the template ignored.
    let vocab_add_bos = model_vocab.add_bos_default();
    let info = ModelChatInfo::from_gguf(model.file());
    let formatted = format_prompt(
        cfg.template,
        &cfg.prompt,
        cfg.system_prompt.as_deref(),
        &info,
        vocab_add_bos,
    )
    .map_err(|e| {
        if e.is_usage() {
            usage(e.to_string())
        } else {
            runtime(format!("{}: {e}", cfg.model.display()))
        }
    })?;
    rec.formatted = formatted.text.clone();
    rec.template_used = Some(formatted.template.name().to_string());
    rec.add_bos = formatted.add_bos && !cfg.no_bos;
    rec.parse_special = formatted.parse_special;
    if let Some(why) = &formatted.detected_from {
        progress(&format!(
            "template: auto → {} ({why})",
            formatted.template.name()
        ));
    }
    rec.warnings = warnings(cfg, &formatted, &model_vocab);
    for w in &rec.warnings {
        err.push_str(&format!("warning: {w}\n"));
    }

    // Stage 5: the context, first from the text's size (no tokenizing megabytes), then from
    // the engine's tokens; both before the C++ reference starts.
    check_formatted_size(rec.formatted.len(), &model_vocab, cfg.max_tokens, context)?;
    let engine_view = VocabView {
        n_tokens: model_vocab.vocab_size(),
        bos: model_vocab.bos_id(),
        eos: model_vocab.eos_id(),
    };
    let tokenizer: Box<dyn Tokenizer> = match &cfg.tokenizer {
        Some(p) => {
            bitnet_tokenizers::load(p).map_err(|e| runtime(format!("{}: {e}", p.display())))?
        }
        None => Box::new(model_vocab),
    };
    rec.rust_tokens = tokenizer
        .encode(&rec.formatted, rec.add_bos, rec.parse_special)
        .map_err(|e| runtime(format!("Rust tokenizer: {e}")))?;
    let n = rec.rust_tokens.len();
    check_token_count(n, cfg.max_tokens, context)?;

    // Stage 6: the reference, its view of the vocabulary, its tokens.
    let cpp_path = cfg.cpp_model.as_deref().unwrap_or(&cfg.model);
    if let Some(p) = &cfg.cpp_model {
        // The reference is held to the same rules as the engine's own model, before it runs.
        bitnet_inference::rules::check_model_path(p)
            .map_err(|e| runtime(format!("{}: {e}", p.display())))?;
    }
    progress(&format!(
        "starting the C++ reference on {}",
        cpp_path.display()
    ));
    // Context for the prompt plus the greedy steps (a token is at least one byte of text,
    // plus BOS and template tokens), never beyond what the model was trained for.
    let needed = rec
        .formatted
        .len()
        .saturating_add(cfg.max_tokens)
        .saturating_add(16)
        .max(n + cfg.max_tokens);
    let n_ctx = needed.min(context).max(64);
    let opts = SessionOptions {
        n_ctx: u32::try_from(n_ctx).unwrap_or(u32::MAX),
        run,
        verbose: cfg.verbose,
        ..SessionOptions::default()
    };
    let mut cpp = Session::open(cpp_path, cfg.cpp_backend, &opts).map_err(runtime)?;
    rec.run_configuration =
        Some(run_configuration::check(state.run_config(), &cpp).map_err(runtime)?);
    let build = cpp.build_info().map_err(runtime)?;
    rec.cpp_info = Some(CppBackendInfo::from_build(&build));
    if let Some(cpp_model) = &cfg.cpp_model {
        let facts = cpp.vocab_info().map_err(runtime)?;
        let reference_view = VocabView {
            n_tokens: facts.n_vocab as usize,
            bos: u32::try_from(facts.bos).ok(),
            eos: u32::try_from(facts.eos).ok(),
        };
        vocab_check::compare_reference(&cfg.model, engine_view, cpp_model, reference_view)
            .map_err(|m| vocab_failure(cfg, rec, err, m))?;
    }

    // Stage 7: the configuration gate: nothing is compared unless both sides see the same
    // model.
    progress("configuration: the reference's view of the model against the engine's");
    let facts = cpp.model_facts().map_err(runtime)?;
    let gate = config_gate::check(&model, &cfg.model, cfg.cpp_model.as_deref(), &facts)
        .map_err(runtime)?;
    let gate_ok = gate.ok;
    if cfg.format == OutputFormat::Text && !gate_ok {
        err.push_str(&gate.mismatch_report());
    }
    rec.config_gate = Some(gate);
    if !gate_ok {
        refuse_locate(
            cfg,
            rec,
            err,
            "the configurations differ (the configuration gate)",
        );
        return Ok(RunStatus::ConfigMismatch);
    }
    rec.cpp_tokens = cpp
        .tokenize(&rec.formatted, rec.add_bos, rec.parse_special)
        .map_err(runtime)?;
    if cfg.dump_ids {
        err.push_str(&report::dump_ids(
            &*tokenizer,
            &mut cpp,
            &rec.rust_tokens,
            &rec.cpp_tokens,
        ));
    }

    // Stage 8: the pre-gate: nothing is evaluated unless both sides hold the same ids.
    rec.gate_ran = true;
    if let Err(mismatch) =
        crate::token_parity::validate_token_parity(&rec.rust_tokens, &rec.cpp_tokens, &cfg.prompt)
    {
        rec.first_diff = Some(mismatch.first_diff_idx);
        let context = report_context(cfg, rec, vocab_add_bos, &*tokenizer, &mut cpp);
        let report = mismatch.with_context(context);
        rec.suggestions = report.suggestions();
        rec.example_command = report.example_command_line();
        if cfg.format == OutputFormat::Text {
            err.push_str(&report.format_error_styled(cfg.colour));
        }
        refuse_locate(
            cfg,
            rec,
            err,
            "the token sequences differ (the token pre-gate)",
        );
        return Ok(RunStatus::TokenMismatch);
    }
    if n == 0 {
        return Err(usage(
            "the prompt tokenized to no tokens: nothing to compare",
        ));
    }

    // Stage 9: logits of every position, then the greedy steps.
    rec.logits_evaluated = true;
    progress(&format!(
        "tokens: {n} (identical); Rust engine: evaluating {n} positions"
    ));
    let rust_logits = model
        .forward(&mut state, &rec.rust_tokens)
        .map_err(|e| runtime(format!("Rust engine: {e}")))?;
    progress(&format!("C++ reference: evaluating {n} positions"));
    let cpp_logits = cpp.eval(&rec.cpp_tokens).map_err(runtime)?;
    let v = model.config().n_vocab;
    let comparison = compare_logits(
        LogitsMatrix::rust(&rust_logits, v).map_err(runtime)?,
        LogitsMatrix::cpp(&cpp_logits.data, cpp_logits.n_vocab).map_err(runtime)?,
        cfg.cos_tol,
    )
    .map_err(runtime)?;
    // NaN/±inf have no cosine: say what they are instead of comparing them, and take no
    // greedy steps from them.
    if let Some(nf) = comparison.non_finite() {
        // Alike on both sides: the engine reproduces the reference and the model produces
        // them (exit 3); different: a divergence.
        let text = describe_non_finite(&model, &run, &rec.rust_tokens, &nf);
        rec.non_finite = Some(text.clone());
        if matches!(nf, NonFinite::BothAlike { .. }) {
            rec.comparison = Some(comparison);
            return Err(runtime(text));
        }
        if cfg.format == OutputFormat::Text {
            out.push_str(&report::text_report(
                cfg,
                rec,
                &comparison,
                &*tokenizer,
                RunStatus::Diverged,
                &build,
            ));
            out.push_str(&format!("✗ {text}\n"));
        }
        rec.comparison = Some(comparison);
        return Ok(RunStatus::Diverged);
    }

    // Greedy steps, teacher-forced: both continue from the reference's choice.
    if cfg.max_tokens > 0 {
        progress(&format!("greedy steps: {}", cfg.max_tokens));
    }
    rec.decode = steps::teacher_forced(
        &model,
        &mut state,
        &mut cpp,
        rust_logits[(n - 1) * v..].to_vec(),
        cpp_logits.row(n - 1).to_vec(),
        n - 1,
        cfg.max_tokens,
        cfg.cos_tol,
    )
    .map_err(runtime)?;
    // The tolerance alone decides: a step whose logits are within it passes even if a near
    // tie made the picks differ (its label says so).
    let decode_ok = rec.decode.iter().all(|s| s.metrics.ok);
    let status = if comparison.ok() && decode_ok {
        RunStatus::Ok
    } else {
        RunStatus::Diverged
    };
    // Stage 10: where the divergence starts.
    if let Some(opts) = &cfg.locate {
        progress("locate: comparing the intermediate tensors of both sides in graph order");
        // A fresh state in the run configuration both sides resolved (checked in stage 6),
        // so both graphs are the ones just compared.
        let fresh = model
            .new_state_with(&run)
            .map_err(|e| runtime(format!("Rust engine: {e}")))?;
        let report =
            locate::locate(&model, fresh, &mut cpp, &rec.rust_tokens, opts).map_err(runtime)?;
        rec.locate = Some(report);
    }
    if cfg.format == OutputFormat::Text {
        out.push_str(&report::text_report(
            cfg,
            rec,
            &comparison,
            &*tokenizer,
            status,
            &build,
        ));
    }
    rec.comparison = Some(comparison);
    Ok(status)
}

/// Record (and say, in text mode) why `--locate` did not run.
fn refuse_locate(cfg: &PerTokenConfig, rec: &mut Record, err: &mut String, why: &str) {
    if cfg.locate.is_some() {
        let msg = format!("--locate refused: {why}; no tensors were compared");
        if cfg.format == OutputFormat::Text {
            err.push_str(&format!("{msg}\n"));
        }
        rec.locate_refused = Some(msg);
    }
}

/// Stage 3 on the files: the fingerprints of `--model` and `--cpp-model` must agree.
fn vocab_gate(
    cfg: &PerTokenConfig,
    model_file: &GgufFile,
    cpp_model: &Path,
    rec: &mut Record,
    err: &mut String,
) -> Result<(), Failure> {
    let unreadable =
        |path: &Path, e: &dyn std::fmt::Display| runtime(format!("{}: {e}", path.display()));
    let cpp_file = GgufFile::open(cpp_model).map_err(|e| unreadable(cpp_model, &e))?;
    let model =
        VocabFingerprint::of(model_file, &cfg.model).map_err(|e| unreadable(&cfg.model, &e))?;
    let cpp = VocabFingerprint::of(&cpp_file, cpp_model).map_err(|e| unreadable(cpp_model, &e))?;
    vocab_check::compare(&model, &cpp).map_err(|m| vocab_failure(cfg, rec, err, m))
}

/// Records a vocabulary mismatch and turns it into the run's failure (the report body goes to
/// stderr in text mode, the one-line summary is the error).
fn vocab_failure(
    cfg: &PerTokenConfig,
    rec: &mut Record,
    err: &mut String,
    mismatch: VocabMismatch,
) -> Failure {
    if cfg.format == OutputFormat::Text {
        err.push_str("❌ Vocabulary mismatch\n");
        err.push_str(&mismatch.details());
    }
    let message = mismatch.to_string();
    rec.vocab_mismatch = Some(mismatch);
    Failure {
        status: RunStatus::VocabMismatch,
        message,
    }
}

/// The warnings of stage 4: flags the template ignored, chat markers that are not single
/// tokens of the model's vocabulary (the C++ reference tokenizes with it), and a `--no-bos`
/// that changes nothing because the template adds no BOS.
fn warnings(
    cfg: &PerTokenConfig,
    formatted: &FormattedPrompt,
    model_vocab: &GgufTokenizer,
) -> Vec<String> {
    let mut out: Vec<String> =
        template_warnings(formatted, cfg.system_prompt.as_deref(), |marker| {
            model_vocab
                .encode(marker, false, true)
                .map_or(0, |ids| ids.len())
        })
        .iter()
        .map(ToString::to_string)
        .collect();
    if cfg.no_bos && !formatted.add_bos {
        out.push(format!(
            "--no-bos has no effect: the {} template adds no BOS here{}",
            formatted.template.name(),
            if formatted.parse_special {
                " (any BOS is part of its text)"
            } else {
                " (the model's vocabulary adds none)"
            }
        ));
    }
    out
}

/// Stage 5, before tokenizing: refuse text that needs more tokens than the context holds even
/// if every token were the vocabulary's longest.
fn check_formatted_size(
    bytes: usize,
    vocab: &GgufTokenizer,
    max_tokens: usize,
    context: usize,
) -> Result<(), Failure> {
    let longest = vocab.longest_token_bytes();
    let at_least = bytes.div_ceil(longest);
    if at_least.saturating_add(max_tokens) > context {
        return Err(usage(format!(
            "the formatted prompt is {bytes} bytes, at least {at_least} tokens (no token of the \
             vocabulary is longer than {longest} bytes); with --max-tokens {max_tokens} that \
             exceeds the model's context of {context} tokens: shorten the prompt"
        )));
    }
    Ok(())
}

/// Stage 5, once the engine's token count is known.
fn check_token_count(n: usize, max_tokens: usize, context: usize) -> Result<(), Failure> {
    if n >= context {
        return Err(usage(format!(
            "the prompt is {n} tokens, and the model's context is {context}: shorten the prompt"
        )));
    }
    if n.saturating_add(max_tokens) > context {
        return Err(usage(format!(
            "the prompt is {n} tokens and --max-tokens asks for {max_tokens} more: {} exceed the \
             model's context of {context} tokens; use --max-tokens {} or less, or a shorter prompt",
            n.saturating_add(max_tokens),
            context - n
        )));
    }
    Ok(())
}

fn report_context(
    cfg: &PerTokenConfig,
    rec: &Record,
    vocab_add_bos: bool,
    tokenizer: &dyn Tokenizer,
    cpp: &mut Session,
) -> ReportContext {
    let applied = rec.template_used.clone();
    let mut ctx = ReportContext {
        model_path: Some(cfg.model.clone()),
        tokenizer_path: cfg.tokenizer.clone(),
        requested_template: Some(cfg.template.name().to_string()),
        prompt_template: applied,
        system_prompt: cfg.system_prompt.clone(),
        add_bos: Some(rec.add_bos),
        vocab_add_bos: Some(vocab_add_bos),
        dump_ids_requested: cfg.dump_ids,
        no_bos_requested: cfg.no_bos,
        ..ReportContext::default()
    };
    if let Some(p) = &cfg.cpp_model {
        ctx.extra_args
            .push(("--cpp-model".into(), p.display().to_string()));
    }
    let backend = match cfg.cpp_backend {
        BackendChoice::Llama => Some("llama"),
        BackendChoice::Bitnet => Some("bitnet"),
        BackendChoice::Auto => None,
    };
    if let Some(b) = backend {
        ctx.extra_args.push(("--cpp-backend".into(), b.to_string()));
    }
    if let Ok(v) = cpp.vocab_info() {
        ctx.bos_id = u32::try_from(v.bos).ok();
        ctx.eos_ids = [v.eos, v.eot]
            .into_iter()
            .filter_map(|x| u32::try_from(x).ok())
            .collect();
    }
    let rust_window: BTreeSet<u32> = rec.rust_tokens.iter().copied().collect();
    ctx.special_ids = rust_window
        .iter()
        .copied()
        .filter(|&t| tokenizer.is_special(t))
        .collect();
    ctx.fill_pieces(rec.rust_tokens.iter().copied(), |id| {
        Some(report::piece(tokenizer, id))
    });
    let cpp_pieces: Vec<(u32, String)> = rec
        .cpp_tokens
        .iter()
        .filter_map(|&t| u32::try_from(t).ok())
        .filter(|t| !ctx.pieces.contains_key(t))
        .filter_map(|t| {
            cpp.token_to_piece(t as i32, true)
                .ok()
                .map(|b| (t, String::from_utf8_lossy(&b).into_owned()))
        })
        .collect();
    ctx.pieces.extend(cpp_pieces);
    ctx
}

/// What the non-finite logits `nf` are, and the first engine tensor that held them, found by
/// evaluating `tokens` again, in the run configuration `run`, with an observer (only on this
/// path, so a normal comparison pays nothing for it).
fn describe_non_finite(model: &Model, run: &RunConfig, tokens: &[u32], nf: &NonFinite) -> String {
    let mut first = bitnet_inference::FirstNonFinite::new();
    let origin = model.new_state_with(run).ok().and_then(|mut state| {
        model
            .eval(
                &mut state,
                bitnet_inference::Eval::new(tokens)
                    .outputs(bitnet_inference::Outputs::Last)
                    .observe(&mut first),
            )
            .ok()
            .and(first.found().cloned())
    });
    match origin {
        Some(at) => format!("{nf}; in the engine they first appear in {at}"),
        None => nf.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_count_checks_use_checked_arithmetic_and_give_the_numbers() {
        assert!(check_token_count(10, 4, 512).is_ok());
        assert!(check_token_count(508, 4, 512).is_ok());
        let e = check_token_count(509, 4, 512).expect_err("too long");
        assert_eq!(e.status, RunStatus::UsageError);
        assert!(e.message.contains("513 exceed"), "{}", e.message);
        assert!(
            e.message.contains("--max-tokens 3 or less"),
            "{}",
            e.message
        );
        let e = check_token_count(5001, 4, 512).expect_err("too long");
        assert!(e.message.contains("5001 tokens"), "{}", e.message);
    }
}
