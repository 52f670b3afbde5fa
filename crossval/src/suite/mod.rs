//! Corpus-level cross-validation, `xtask crossval-suite`: many prompts, or every window of a
//! text, through our engine and a C++ reference kept loaded for the whole run
//! ([`ComparisonSession`]), with llama-perplexity's statistics over all of them
//! ([`crate::stats`]).
//!
//! The flow of [`run_suite`], top to bottom:
//! 1. **arguments** — values clap cannot check: a usage error (exit 2);
//! 2. **the engine's model and tokenizer** — unreadable: an error (3); the run configuration
//!    (KV cache types, flash attention, micro-batch size; [`crate::run_configuration`], as
//!    `crossval-per-token` resolves it) — one the model's reference refuses: a usage error (2);
//! 3. **the items** — a prompts file (`id`, `prompt`, optional `template`, `system`,
//!    `max_tokens`) whose prompts are formatted and tokenized by the engine's tokenizer, or a
//!    text tokenized once and cut into llama-perplexity's windows
//!    ([`bitnet_inference::perplexity::Plan`]). Malformed lines, templates that cannot be
//!    rendered and prompts that cannot fit the model's context are usage errors before
//!    anything runs. The context of both sides is `--ctx`, or in prompts mode the longest
//!    item with its greedy steps — computed over *every* item, so that all shards of a suite
//!    run in the same configuration;
//! 4. **the shard** — `--shard I/N` keeps the items whose index `k` has `k mod N = I−1`;
//! 5. **the reference** starts on its model (once) with the same run configuration, and must
//!    have resolved it as the engine did (else an error, 3); the summary states it;
//! 6. **the outputs** — `--out FILE.jsonl` gets one JSON line per item ([`ItemRecord`]) as
//!    it finishes, and the side file `FILE.jsonl.tokstats` what the statistics need
//!    ([`tokfile`]); `--resume` keeps the items already there (after checking that they were
//!    produced with the same settings) and runs the rest;
//! 7. **each item** — the token pre-gate (different ids: that item's result, with the first
//!    differing index; nothing evaluated), both sides' logits at once, the per-position
//!    comparison, each scored token's statistics, the greedy steps (prompts);
//! 8. **the summary** ([`SuiteSummary`]) over every finished item, and its exit code: 0 every
//!    item within tolerance, 1 some item diverged, 2 some item failed the pre-gate (or items
//!    are missing), 3 some item met a runtime error.
//!
//! [`merge`] builds the same summary from the outputs of the shards of a suite.

pub mod items;
pub mod record;
pub mod summary;
pub mod tokfile;

mod eval;
mod output;

use std::path::{Path, PathBuf};
use std::time::Instant;

use bitnet_cpp::{BackendChoice, SessionOptions};
use bitnet_inference::perplexity::Plan;
use bitnet_inference::{
    format_prompt, template_warnings, Model, ModelChatInfo, RunChoice, TemplateType,
};
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

use crate::comparison::ComparisonSession;
use crate::receipt::{sha256_file, RunStatus};
use crate::run_configuration;

pub use output::merge;
pub use record::{ItemRecord, Shard, SuiteHeader, SuiteSettings, SUITE_SCHEMA_VERSION};
pub use summary::{SuiteStatus, SuiteSummary};

use eval::{PromptJob, WindowJob};
use output::open_outputs;
use summary::SummaryInput;
use tokfile::ItemBlock;

/// What a suite runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuiteInput {
    /// A JSONL file of prompts.
    Prompts(PathBuf),
    /// A text, cut into windows as llama-perplexity does.
    Text(PathBuf),
}

/// Everything `crossval-suite` takes.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// The engine's model (also the reference's unless `cpp_model`).
    pub model: PathBuf,
    /// HF tokenizer.json for the engine's side.
    pub tokenizer: Option<PathBuf>,
    /// The reference runs this file instead.
    pub cpp_model: Option<PathBuf>,
    /// Which reference.
    pub cpp_backend: BackendChoice,
    /// The items.
    pub input: SuiteInput,
    /// Context of both sides (text mode: the window; default 512 there, the longest item in
    /// prompts mode).
    pub ctx: Option<usize>,
    /// Text mode: evaluate at most this many windows.
    pub chunks: Option<usize>,
    /// Prompts mode: the template of items that name none.
    pub template: TemplateType,
    /// Prompts mode: the system prompt of items that give none.
    pub system_prompt: Option<String>,
    /// Prompts mode: BOS off on both sides.
    pub no_bos: bool,
    /// Prompts mode: greedy steps of items that give no `max_tokens`.
    pub max_tokens: usize,
    /// Cosine tolerance per position.
    pub cos_tol: f64,
    /// Threads of each side (they run at the same time); default half the cores.
    pub threads: Option<usize>,
    /// KV cache types, flash attention, micro-batch size of both sides (default: the
    /// reference's defaults).
    pub run: RunChoice,
    /// Echo the reference's log.
    pub verbose: bool,
    /// The JSONL output (and its side file).
    pub out: Option<PathBuf>,
    /// Keep the items already in `out`.
    pub resume: bool,
    /// Run only this shard.
    pub shard: Option<Shard>,
    /// Items listed by KL in the summary.
    pub worst: usize,
}

impl SuiteConfig {
    /// A configuration with the command's defaults.
    pub fn new(model: impl Into<PathBuf>, input: SuiteInput) -> Self {
        SuiteConfig {
            model: model.into(),
            tokenizer: None,
            cpp_model: None,
            cpp_backend: BackendChoice::Auto,
            input,
            ctx: None,
            chunks: None,
            template: TemplateType::Raw,
            system_prompt: None,
            no_bos: false,
            max_tokens: 4,
            cos_tol: 0.999,
            threads: None,
            run: RunChoice::default(),
            verbose: false,
            out: None,
            resume: false,
            shard: None,
            worst: 5,
        }
    }
}

/// What the caller is told while a suite runs.
#[derive(Debug)]
pub enum SuiteEvent<'a> {
    /// A stage starts (loading, tokenizing, starting the reference).
    Stage(&'a str),
    /// Items are about to run: how many, how many were already done (`--resume`), and how
    /// many tokens the remaining ones evaluate (for an ETA).
    Started {
        /// Items to run now.
        items: usize,
        /// Items kept from the output.
        already_done: usize,
        /// Tokens the items to run evaluate (each side).
        tokens: usize,
    },
    /// An item finished.
    Finished {
        /// Its record (also written to `--out`).
        record: &'a ItemRecord,
        /// The one-line view of it.
        line: &'a str,
        /// Tokens it evaluated (each side).
        tokens: usize,
    },
}

/// How a suite ended.
#[derive(Debug, Clone)]
pub struct SuiteOutcome {
    /// The summary, when the suite got as far as running items.
    pub summary: Option<SuiteSummary>,
    /// The exit code: the summary's, or that of the failure that stopped the run.
    pub exit_code: u8,
    /// What stopped the run, if something did.
    pub error: Option<String>,
    /// Tokens evaluated by each side in this invocation, and the seconds the items took.
    pub throughput: Option<(usize, f64)>,
}

/// A failure that stops a suite (or a merge) before a summary: its exit code and message.
#[derive(Debug, Clone)]
pub struct Failure {
    /// 2 usage, 3 runtime.
    pub code: u8,
    /// What is wrong and what to do.
    pub message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn runtime(message: impl std::fmt::Display) -> Failure {
    Failure {
        code: 3,
        message: message.to_string(),
    }
}

impl From<Failure> for SuiteOutcome {
    fn from(f: Failure) -> Self {
        SuiteOutcome {
            summary: None,
            exit_code: f.code,
            error: Some(f.message),
            throughput: None,
        }
    }
}

/// Run a suite (see the module documentation). Never panics on bad input: every failure is an
/// outcome.
pub fn run_suite(cfg: &SuiteConfig, events: &mut dyn FnMut(SuiteEvent<'_>)) -> SuiteOutcome {
    match flow(cfg, events) {
        Ok(outcome) => outcome,
        Err(f) => f.into(),
    }
}

/// A prompt, formatted and tokenized by the engine's tokenizer.
struct PreparedPrompt {
    id: String,
    formatted: String,
    template: &'static str,
    add_bos: bool,
    parse_special: bool,
    tokens: Vec<u32>,
    max_tokens: usize,
}

/// The items of a run.
enum Items {
    Prompts(Vec<PreparedPrompt>),
    Text {
        plan: Plan,
        text: String,
        tokens: Vec<u32>,
        bos: Option<u32>,
    },
}

impl Items {
    fn len(&self) -> usize {
        match self {
            Items::Prompts(p) => p.len(),
            Items::Text { plan, .. } => plan.n_chunks(),
        }
    }

    fn id(&self, index: usize) -> String {
        match self {
            Items::Prompts(p) => p[index].id.clone(),
            Items::Text { .. } => items::window_id(index),
        }
    }

    /// Tokens item `index` evaluates on each side.
    fn tokens(&self, index: usize) -> usize {
        match self {
            Items::Prompts(p) => p[index].tokens.len() + p[index].max_tokens,
            Items::Text { plan, .. } => plan.n_ctx(),
        }
    }
}

fn check_arguments(cfg: &SuiteConfig) -> Result<(), Failure> {
    if !(cfg.cos_tol.is_finite() && (-1.0..=1.0).contains(&cfg.cos_tol)) {
        return Err(usage(format!(
            "--cos-tol {} must be between -1 and 1",
            cfg.cos_tol
        )));
    }
    if cfg.threads == Some(0) {
        return Err(usage("--threads must be positive"));
    }
    if cfg.resume && cfg.out.is_none() {
        return Err(usage("--resume continues an --out file: give --out"));
    }
    let text = matches!(cfg.input, SuiteInput::Text(_));
    if !text && cfg.chunks.is_some() {
        return Err(usage("--chunks counts the windows of --text"));
    }
    if text && (cfg.no_bos || cfg.system_prompt.is_some() || cfg.template != TemplateType::Raw) {
        return Err(usage(
            "--text is tokenized as llama-perplexity tokenizes it (BOS as the vocabulary \
             says, no template): --no-bos, --system-prompt and --prompt-template apply to \
             --prompts only",
        ));
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, Failure> {
    let bytes = std::fs::read(path).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        runtime(format!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Stage 3 in prompts mode: format and tokenize every item with the engine's tokenizer. What
/// a template ignores (a system prompt, `--no-bos`) or cannot express (chat markers that are
/// not single tokens of the model's vocabulary) is told to `warn`, item by item, as
/// crossval-per-token tells it: a flag is never ignored in silence.
fn prepare_prompts(
    cfg: &SuiteConfig,
    path: &Path,
    model: &Model,
    model_vocab: &GgufTokenizer,
    tokenizer: &dyn Tokenizer,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<PreparedPrompt>, Failure> {
    let text = read_text(path)?;
    let list = items::parse_prompts(&text, path).map_err(usage)?;
    let info = ModelChatInfo::from_gguf(model.file());
    let vocab_add_bos = model_vocab.add_bos_default();
    list.into_iter()
        .map(|item| {
            let template = item.template.unwrap_or(cfg.template);
            let system = item.system.as_deref().or(cfg.system_prompt.as_deref());
            let f = format_prompt(template, &item.prompt, system, &info, vocab_add_bos)
                .map_err(|e| usage(format!("item {:?}: {e}", item.id)))?;
            let marker_tokens = |m: &str| model_vocab.encode(m, false, true).map_or(0, |t| t.len());
            for w in template_warnings(&f, system, marker_tokens) {
                warn(format!("item {:?}: {w}", item.id));
            }
            if cfg.no_bos && !f.add_bos {
                warn(format!(
                    "item {:?}: --no-bos has no effect: the {} template adds no BOS here",
                    item.id,
                    f.template.name()
                ));
            }
            let add_bos = f.add_bos && !cfg.no_bos;
            let tokens = tokenizer
                .encode(&f.text, add_bos, f.parse_special)
                .map_err(|e| runtime(format!("item {:?}: Rust tokenizer: {e}", item.id)))?;
            if tokens.is_empty() {
                return Err(usage(format!(
                    "item {:?} tokenizes to no tokens: nothing to compare",
                    item.id
                )));
            }
            Ok(PreparedPrompt {
                id: item.id,
                formatted: f.text,
                template: f.template.name(),
                add_bos,
                parse_special: f.parse_special,
                tokens,
                max_tokens: item.max_tokens.unwrap_or(cfg.max_tokens),
            })
        })
        .collect()
}

/// Stage 3's context: `--ctx`, or the longest prompt with its steps; every item must fit, and
/// the context must fit the model.
fn context_for(cfg: &SuiteConfig, items: &Items, trained: usize) -> Result<usize, Failure> {
    let n_ctx = match (items, cfg.ctx) {
        (Items::Text { plan, .. }, _) => plan.n_ctx(),
        (_, Some(c)) => c,
        (Items::Prompts(p), None) => p
            .iter()
            .map(|p| p.tokens.len() + p.max_tokens)
            .max()
            .unwrap_or(1),
    };
    if n_ctx > trained {
        return Err(usage(format!(
            "a context of {n_ctx} tokens is past the model's {trained}{}",
            if cfg.ctx.is_some() {
                ""
            } else {
                " (the longest item with its --max-tokens): shorten it"
            }
        )));
    }
    if let Items::Prompts(p) = items {
        let too_long: Vec<String> = p
            .iter()
            .filter(|p| p.tokens.len() + p.max_tokens > n_ctx)
            .map(|p| format!("{:?} ({} + {})", p.id, p.tokens.len(), p.max_tokens))
            .collect();
        if !too_long.is_empty() {
            return Err(usage(format!(
                "items longer than --ctx {n_ctx} (tokens + greedy steps): {}",
                too_long.join(", ")
            )));
        }
    }
    Ok(n_ctx)
}

fn hash(path: &Path) -> Result<String, Failure> {
    sha256_file(path).map_err(|e| runtime(format!("cannot read {}: {e}", path.display())))
}

/// The one-line view of a finished item (stderr).
pub fn item_line(record: &ItemRecord, block: &ItemBlock) -> String {
    let r = record;
    match r.status {
        RunStatus::TokenMismatch => {
            let m = r.token_mismatch.as_ref();
            let at = m.map_or(0, |m| m.first_diff_idx);
            let side = |t: Option<String>, p: Option<&String>| match (t, p) {
                (Some(t), Some(p)) => format!("{t} {p:?}"),
                (Some(t), None) => t,
                (None, _) => "(end)".into(),
            };
            format!(
                "✗ {} token mismatch at index {at}: Rust {} vs C++ {} ({} vs {} tokens)",
                r.id,
                side(
                    m.and_then(|m| m.rust_token).map(|t| t.to_string()),
                    m.and_then(|m| m.rust_piece.as_ref())
                ),
                side(
                    m.and_then(|m| m.cpp_token).map(|t| t.to_string()),
                    m.and_then(|m| m.cpp_piece.as_ref())
                ),
                r.n_tokens,
                r.cpp_n_tokens
            )
        }
        RunStatus::Ok | RunStatus::Diverged => {
            let mark = if r.status == RunStatus::Ok {
                "✓"
            } else {
                "✗"
            };
            let mut s = format!(
                "{mark} {} {} tok, min cos {:.6}, max |Δ| {:.3e}, KL max {:.2e}",
                r.id,
                r.n_tokens,
                block.min_cosine,
                block.max_abs_diff,
                r.max_kl.unwrap_or(0.0)
            );
            if let (Some(q), Some(b)) = (r.ppl_q, r.ppl_base) {
                s.push_str(&format!(", PPL {q:.4} / {b:.4}"));
            }
            if let Some(g) = &r.greedy {
                s.push_str(&format!(", greedy {}/{}", g.matched, g.asked));
            }
            if let Some(p) = r
                .positions
                .as_ref()
                .and_then(|p| p.first_divergent_position)
            {
                s.push_str(&format!(", diverged at position {p}"));
            }
            s
        }
        _ => format!(
            "! {} error: {}",
            r.id,
            r.error.as_deref().unwrap_or("unknown")
        ),
    }
}

fn flow(
    cfg: &SuiteConfig,
    events: &mut dyn FnMut(SuiteEvent<'_>),
) -> Result<SuiteOutcome, Failure> {
    check_arguments(cfg)?;
    let threads = cfg.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    });
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();

    // Stage 2: the engine.
    events(SuiteEvent::Stage(&format!(
        "loading {} (Rust engine)",
        cfg.model.display()
    )));
    let model =
        Model::load(&cfg.model).map_err(|e| runtime(format!("{}: {e}", cfg.model.display())))?;
    let threads_u32 = u32::try_from(threads).unwrap_or(u32::MAX);
    let (run, state) = run_configuration::resolve(&model, &cfg.run, threads_u32).map_err(usage)?;
    let model_vocab = GgufTokenizer::from_header(model.file(), &cfg.model)
        .map_err(|e| runtime(format!("{}: tokenizer: {e}", cfg.model.display())))?;
    let vocab_add_bos = model_vocab.add_bos_default();
    let vocab_bos = model_vocab.bos_id();
    let vocab_adds_eos = model_vocab.add_eos_default();
    let hf_tokenizer: Option<Box<dyn Tokenizer>> = cfg
        .tokenizer
        .as_ref()
        .map(|p| bitnet_tokenizers::load(p).map_err(|e| runtime(format!("{}: {e}", p.display()))))
        .transpose()?;
    let tokenizer: &dyn Tokenizer = hf_tokenizer.as_deref().unwrap_or(&model_vocab);

    // Stage 3: the items, and the context.
    events(SuiteEvent::Stage("tokenizing the items (Rust engine)"));
    let (items, input_path, mode) = match &cfg.input {
        SuiteInput::Prompts(path) => (
            Items::Prompts(prepare_prompts(
                cfg,
                path,
                &model,
                &model_vocab,
                tokenizer,
                &mut |warning| events(SuiteEvent::Stage(&format!("warning: {warning}"))),
            )?),
            path,
            "prompts",
        ),
        SuiteInput::Text(path) => {
            if vocab_adds_eos {
                return Err(runtime(format!(
                    "{}: {}",
                    cfg.model.display(),
                    bitnet_inference::perplexity::PerplexityError::AddsEos
                )));
            }
            let text = read_text(path)?;
            let tokens = tokenizer
                .encode(&text, true, false)
                .map_err(|e| runtime(format!("{}: Rust tokenizer: {e}", path.display())))?;
            let n_ctx = cfg.ctx.unwrap_or(512);
            let plan = Plan::new(tokens.len(), n_ctx, n_ctx, cfg.chunks)
                .map_err(|e| usage(e.to_string()))?;
            let bos = if vocab_add_bos { vocab_bos } else { None };
            (
                Items::Text {
                    plan,
                    text,
                    tokens,
                    bos,
                },
                path,
                "text",
            )
        }
    };
    let trained = model.config().context_length;
    let n_ctx = context_for(cfg, &items, trained)?;

    // Stage 4: the shard.
    let selected: Vec<usize> = (0..items.len())
        .filter(|&k| cfg.shard.is_none_or(|s| s.selects(k)))
        .collect();

    // Stage 5: the reference.
    let cpp_path = cfg.cpp_model.clone().unwrap_or_else(|| cfg.model.clone());
    events(SuiteEvent::Stage(&format!(
        "starting the C++ reference on {} (n_ctx {n_ctx}, {threads} threads per side)",
        cpp_path.display()
    )));
    let options = SessionOptions {
        n_ctx: u32::try_from(n_ctx).unwrap_or(u32::MAX),
        run,
        verbose: cfg.verbose,
        ..SessionOptions::default()
    };
    let n_vocab = model.config().n_vocab;
    let mut session = ComparisonSession::open(model, state, &cpp_path, cfg.cpp_backend, options)
        .map_err(runtime)?;
    let engine_run = session.state().run_config();
    let run_configuration =
        run_configuration::check(engine_run, session.reference()).map_err(runtime)?;
    events(SuiteEvent::Stage(&format!(
        "run configuration: {run_configuration}"
    )));
    let build = session.reference().build_info().map_err(runtime)?;
    if session.reference().n_vocab() != n_vocab {
        return Err(usage(format!(
            "the reference's model has {} logits per position, the engine's {n_vocab}: \
             --cpp-model must share --model's vocabulary",
            session.reference().n_vocab()
        )));
    }

    // Stage 6: the outputs.
    let header = SuiteHeader {
        schema_version: SUITE_SCHEMA_VERSION,
        settings: SuiteSettings {
            mode: mode.to_string(),
            input: input_path.display().to_string(),
            input_sha256: hash(input_path)?,
            n_items: items.len(),
            model: cfg.model.display().to_string(),
            model_sha256: hash(&cfg.model)?,
            cpp_model: cfg.cpp_model.as_ref().map(|p| p.display().to_string()),
            cpp_model_sha256: cfg.cpp_model.as_deref().map(hash).transpose()?,
            tokenizer: cfg.tokenizer.as_ref().map(|p| p.display().to_string()),
            reference: format!("{} ({})", build.backend, build.library),
            n_ctx,
            run_configuration,
            chunks: cfg.chunks,
            template: cfg.template.name().to_string(),
            system_prompt: cfg.system_prompt.clone(),
            no_bos: cfg.no_bos,
            max_tokens: cfg.max_tokens,
            cos_tol: cfg.cos_tol,
        },
        shard: cfg.shard,
    }
    .canonical();
    let mut outputs = open_outputs(cfg, &header)?;
    let done: std::collections::HashSet<usize> = outputs.records.iter().map(|r| r.index).collect();
    let todo: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|k| !done.contains(k))
        .collect();

    // Text mode: the reference tokenizes the whole text once, as the engine did.
    let cpp_text_tokens = match &items {
        Items::Text { text, .. } => {
            events(SuiteEvent::Stage("tokenizing the text (C++ reference)"));
            session
                .reference()
                .tokenize(text, true, false)
                .map_err(runtime)?
        }
        Items::Prompts(_) => Vec::new(),
    };

    // Stage 7: the items.
    events(SuiteEvent::Started {
        items: todo.len(),
        already_done: selected.len() - todo.len(),
        tokens: todo.iter().map(|&k| items.tokens(k)).sum(),
    });
    let started = Instant::now();
    let mut evaluated = 0;
    for &k in &todo {
        let t0 = Instant::now();
        let id = items.id(k);
        let result = match &items {
            Items::Prompts(p) => {
                let p = &p[k];
                let job = PromptJob {
                    index: k,
                    id: &id,
                    formatted: &p.formatted,
                    template: p.template,
                    add_bos: p.add_bos,
                    parse_special: p.parse_special,
                    rust_tokens: &p.tokens,
                    max_tokens: p.max_tokens,
                };
                eval::run_prompt(&mut session, tokenizer, &job, cfg.cos_tol)
            }
            Items::Text {
                plan, tokens, bos, ..
            } => {
                let job = WindowJob {
                    index: k,
                    id: &id,
                    plan,
                    rust_tokens: tokens,
                    cpp_tokens: &cpp_text_tokens,
                    bos: *bos,
                };
                eval::run_window(&mut session, tokenizer, &job, k, cfg.cos_tol)
            }
        };
        let (mut record, block) = match result {
            Ok(rb) => rb,
            Err(e) => {
                let gone = matches!(&e, eval::ItemError::Side(s) if s.reference_is_gone());
                let rb = eval::error_result(k, &id, e.to_string());
                if gone {
                    // The next item needs a live reference; if none can be had, stop here
                    // (the items done so far are kept, and --resume continues).
                    events(SuiteEvent::Stage("restarting the C++ reference"));
                    if let Err(restart) = session.restart_reference() {
                        outputs.write(&rb.0, &rb.1)?;
                        return Err(runtime(format!(
                            "item {id:?}: {e}; restarting the reference failed: {restart}"
                        )));
                    }
                }
                rb
            }
        };
        record.seconds = t0.elapsed().as_secs_f64();
        let tokens =
            if record.status == RunStatus::TokenMismatch || record.status == RunStatus::Error {
                0
            } else {
                items.tokens(k)
            };
        evaluated += tokens;
        outputs.write(&record, &block)?;
        let line = item_line(&record, &block);
        events(SuiteEvent::Finished {
            record: &record,
            line: &line,
            tokens,
        });
        outputs.records.push(record);
        outputs.blocks.push(block);
    }
    let seconds = started.elapsed().as_secs_f64();

    // Stage 8: the summary.
    let ids = |k: usize| items.id(k);
    let summary = SuiteSummary::build(&SummaryInput {
        header: &header,
        selected: &selected,
        ids: &ids,
        records: &outputs.records,
        blocks: &outputs.blocks,
        worst: cfg.worst,
    });
    Ok(SuiteOutcome {
        exit_code: summary.exit_code,
        summary: Some(summary),
        error: None,
        throughput: Some((evaluated, seconds)),
    })
}
