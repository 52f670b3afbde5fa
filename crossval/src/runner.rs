//! The per-token cross-validation flow behind `xtask crossval-per-token`, as a library
//! function so tests can drive all of it without a subprocess.
//!
//! Order of work (DESIGN.md): load each model once → format the prompt → tokenize the same
//! text on both sides with the same `add_bos` / `parse_special` → **pre-gate** (on mismatch:
//! report, exit 2, no logits computed) → logits of every position on both sides, the C++ side
//! evaluating exactly the validated ids → per-position comparison → greedy steps → summary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bitnet_cpp::{BackendChoice, Session, SessionOptions};
use bitnet_inference::{format_prompt, Model, ModelChatInfo, TemplateType};
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};
use serde_json::{json, Value};

use crate::logits_compare::{
    compare_logits, compare_position, LogitsComparison, LogitsMatrix, PositionMetrics,
};
use crate::receipt::{
    self, CppBackendInfo, DecodeStep, Environment, Inputs, Receipt, RunStatus, Thresholds,
    TokenParityBlock, ToolInfo, RECEIPT_SCHEMA_VERSION,
};
use crate::token_parity::{first_difference, ReportContext};

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
    /// Echo the reference's log.
    pub verbose: bool,
    /// Colour in text mode.
    pub colour: bool,
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
            verbose: false,
            colour: false,
        }
    }
}

/// What the command produced: the two streams, the status and the exit code.
#[derive(Debug, Clone)]
pub struct PerTokenOutcome {
    /// `ok`, `diverged`, `token_mismatch` or `error`.
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

/// A failure, with its exit code.
struct Failure {
    code: u8,
    message: String,
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

/// The shared state of one run, for the JSON document and the receipt.
#[derive(Default)]
struct Record {
    formatted: String,
    template_used: String,
    add_bos: bool,
    parse_special: bool,
    rust_tokens: Vec<u32>,
    cpp_tokens: Vec<i32>,
    first_diff: Option<usize>,
    comparison: Option<LogitsComparison>,
    decode: Vec<(DecodeStep, Option<PositionMetrics>)>,
    suggestions: Vec<String>,
    cpp_info: Option<CppBackendInfo>,
    threads: usize,
    logits_evaluated: bool,
    /// What non-finite logits there were, when there were any.
    non_finite: Option<String>,
}

/// Run the whole flow. Never panics on bad input: every failure becomes an outcome.
pub fn run_per_token(cfg: &PerTokenConfig, progress: &mut dyn FnMut(&str)) -> PerTokenOutcome {
    let mut rec = Record::default();
    let mut stdout = String::new();
    let mut stderr = String::new();
    let result = flow(cfg, progress, &mut rec, &mut stdout, &mut stderr);
    let (status, code, error) = match result {
        Ok(status) => (status, exit_code(status), None),
        Err(f) => (RunStatus::Error, f.code, Some(f.message)),
    };
    if let Some(msg) = &error {
        stderr.push_str(&format!("error: {msg}\n"));
    }
    if cfg.format == OutputFormat::Json {
        stdout = json_document(cfg, &rec, status, error.as_deref()).to_string() + "\n";
    }
    if let Some(path) = &cfg.receipt {
        if let Err(e) = write_receipt(cfg, &rec, status, path) {
            stderr.push_str(&format!("error: {e}\n"));
        }
    }
    PerTokenOutcome {
        status,
        exit_code: code,
        stdout,
        stderr,
        logits_evaluated: rec.logits_evaluated,
    }
}

fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Ok => 0,
        RunStatus::Diverged => 1,
        RunStatus::TokenMismatch => 2,
        RunStatus::Error => 3,
    }
}

fn flow(
    cfg: &PerTokenConfig,
    progress: &mut dyn FnMut(&str),
    rec: &mut Record,
    out: &mut String,
    err: &mut String,
) -> Result<RunStatus, Failure> {
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
    rec.threads = cfg
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(rec.threads)
        .build_global();

    progress(&format!("loading {} (Rust engine)", cfg.model.display()));
    let model =
        Model::load(&cfg.model).map_err(|e| runtime(format!("{}: {e}", cfg.model.display())))?;
    // The model's own vocabulary decides the BOS default (DESIGN.md: raw and instruct add BOS
    // when the model's vocabulary says so), even when the Rust side tokenizes with a
    // tokenizer.json: whether that file adds the same BOS is exactly what the gate checks.
    let model_vocab = GgufTokenizer::from_header(model.file(), &cfg.model)
        .map_err(|e| runtime(format!("{}: tokenizer: {e}", cfg.model.display())))?;
    let vocab_add_bos = model_vocab.add_bos_default();
    let tokenizer: Box<dyn Tokenizer> = match &cfg.tokenizer {
        Some(p) => {
            bitnet_tokenizers::load(p).map_err(|e| runtime(format!("{}: {e}", p.display())))?
        }
        None => Box::new(model_vocab),
    };
    let info = ModelChatInfo::from_gguf(model.file());
    let formatted = format_prompt(
        cfg.template,
        &cfg.prompt,
        cfg.system_prompt.as_deref(),
        &info,
        vocab_add_bos,
    )
    .map_err(|e| usage(e.to_string()))?;
    rec.formatted = formatted.text.clone();
    rec.template_used = formatted.template.name().to_string();
    rec.add_bos = formatted.add_bos && !cfg.no_bos;
    rec.parse_special = formatted.parse_special;
    if let Some(why) = &formatted.detected_from {
        progress(&format!("template: auto → {} ({why})", rec.template_used));
    }

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
    let needed = rec.formatted.len() + cfg.max_tokens + 16;
    let n_ctx = needed.min(model.config().context_length).max(64);
    let opts = SessionOptions {
        n_ctx: n_ctx as u32,
        n_threads: rec.threads as u32,
        verbose: cfg.verbose,
        ..SessionOptions::default()
    };
    let mut cpp = Session::open(cpp_path, cfg.cpp_backend, &opts).map_err(runtime)?;
    let build = cpp.build_info().map_err(runtime)?;
    rec.cpp_info = Some(CppBackendInfo {
        backend: build.backend.clone(),
        library: build.library.clone(),
        build_info: format!("{} ({})", build.library, build.backend),
        system_info: build.system_info.clone(),
    });

    rec.rust_tokens = tokenizer
        .encode(&rec.formatted, rec.add_bos, rec.parse_special)
        .map_err(|e| runtime(format!("Rust tokenizer: {e}")))?;
    rec.cpp_tokens = cpp
        .tokenize(&rec.formatted, rec.add_bos, rec.parse_special)
        .map_err(runtime)?;

    if cfg.dump_ids {
        err.push_str(&dump_ids(
            &*tokenizer,
            &mut cpp,
            &rec.rust_tokens,
            &rec.cpp_tokens,
        ));
    }

    // The pre-gate: nothing is evaluated unless both sides hold the same ids.
    if let Err(mismatch) =
        crate::token_parity::validate_token_parity(&rec.rust_tokens, &rec.cpp_tokens, &cfg.prompt)
    {
        rec.first_diff = Some(mismatch.first_diff_idx);
        let report = mismatch.with_context(report_context(
            cfg,
            &*tokenizer,
            &mut cpp,
            &rec.rust_tokens,
            &rec.cpp_tokens,
        ));
        rec.suggestions = report.suggestions();
        if cfg.format == OutputFormat::Text {
            err.push_str(&report.format_error_styled(cfg.colour));
        }
        return Ok(RunStatus::TokenMismatch);
    }

    let n = rec.rust_tokens.len();
    if n == 0 {
        return Err(usage(
            "the prompt tokenized to no tokens: nothing to compare",
        ));
    }
    if n + cfg.max_tokens > n_ctx {
        return Err(runtime(format!(
            "{n} prompt tokens + {} steps exceed the context of {n_ctx}",
            cfg.max_tokens
        )));
    }
    progress(&format!(
        "tokens: {n} (identical); evaluating {n} positions on both sides"
    ));
    rec.logits_evaluated = true;
    let mut state = model.new_state();
    let rust_logits = model
        .forward(&mut state, &rec.rust_tokens)
        .map_err(|e| runtime(format!("Rust engine: {e}")))?;
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
    let non_finite = comparison.non_finite().map(|nf| {
        // Where the engine's own non-finite values start: re-evaluate with an observer (only
        // on this path, so a normal comparison pays nothing).
        let mut first = bitnet_inference::FirstNonFinite::new();
        let origin = model
            .eval(
                &mut model.new_state(),
                bitnet_inference::Eval::new(&rec.rust_tokens)
                    .outputs(bitnet_inference::Outputs::Last)
                    .observe(&mut first),
            )
            .ok()
            .and(first.found().cloned());
        (nf, origin)
    });
    let describe = |nf: &crate::logits_compare::NonFinite,
                    origin: &Option<bitnet_inference::NonFiniteAt>| match origin
    {
        Some(at) => format!("{nf}; in the engine they first appear in {at}"),
        None => nf.to_string(),
    };
    match non_finite {
        None => {}
        Some((nf @ crate::logits_compare::NonFinite::BothAlike { .. }, origin)) => {
            let text = describe(&nf, &origin);
            rec.non_finite = Some(text.clone());
            rec.comparison = Some(comparison);
            return Err(runtime(text));
        }
        Some((nf, origin)) => {
            let nf = describe(&nf, &origin);
            if cfg.format == OutputFormat::Text {
                out.push_str(&text_report(
                    cfg,
                    rec,
                    &comparison,
                    &*tokenizer,
                    RunStatus::Diverged,
                    &build,
                ));
                out.push_str(&format!("✗ {nf}\n"));
            }
            rec.non_finite = Some(nf);
            rec.comparison = Some(comparison);
            return Ok(RunStatus::Diverged);
        }
    }

    // Greedy steps: both pick their own arg-max; the same token is fed to both while they agree.
    let mut rust_row = rust_logits[(n - 1) * v..].to_vec();
    let mut cpp_row = cpp_logits.row(n - 1).to_vec();
    for step in 0..cfg.max_tokens {
        let r = bitnet_inference::ops::argmax(&rust_row);
        let c = bitnet_inference::ops::argmax(&cpp_row);
        let matched = r == c;
        rec.decode.push((
            DecodeStep {
                step,
                rust_token: r,
                cpp_token: c,
                matched,
            },
            None,
        ));
        if !matched {
            break;
        }
        rust_row = model
            .forward(&mut state, &[r])
            .map_err(|e| runtime(format!("Rust engine: {e}")))?;
        cpp_row = cpp.decode_next(r as i32).map_err(runtime)?;
        let m = compare_position(n + step, &rust_row, &cpp_row, cfg.cos_tol).map_err(runtime)?;
        rec.decode.last_mut().expect("pushed above").1 = Some(m);
    }
    let decode_ok = rec
        .decode
        .iter()
        .all(|(d, m)| d.matched && m.as_ref().is_none_or(|m| m.ok));
    let status = if comparison.ok() && decode_ok {
        RunStatus::Ok
    } else {
        RunStatus::Diverged
    };
    if cfg.format == OutputFormat::Text {
        out.push_str(&text_report(
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

fn piece(tokenizer: &dyn Tokenizer, id: u32) -> String {
    tokenizer
        .token_to_piece(id, true)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| "?".into())
}

fn dump_ids(tokenizer: &dyn Tokenizer, cpp: &mut Session, rust: &[u32], cpp_ids: &[i32]) -> String {
    let mut s = format!(
        "Rust tokens ({}, {}):\n",
        rust.len(),
        tokenizer.backend_name()
    );
    for (i, &t) in rust.iter().enumerate() {
        s.push_str(&format!("  [{i}] {t} {:?}\n", piece(tokenizer, t)));
    }
    s.push_str(&format!("C++ tokens ({}):\n", cpp_ids.len()));
    for (i, &t) in cpp_ids.iter().enumerate() {
        let p = cpp
            .token_to_piece(t, true)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| "?".into());
        s.push_str(&format!("  [{i}] {t} {p:?}\n"));
    }
    s
}

fn report_context(
    cfg: &PerTokenConfig,
    tokenizer: &dyn Tokenizer,
    cpp: &mut Session,
    rust: &[u32],
    cpp_ids: &[i32],
) -> ReportContext {
    let mut ctx = ReportContext {
        model_path: Some(cfg.model.clone()),
        tokenizer_path: cfg.tokenizer.clone(),
        prompt_template: Some(cfg.template.name().to_string()),
        dump_ids_requested: cfg.dump_ids,
        no_bos_requested: cfg.no_bos,
        ..ReportContext::default()
    };
    if let Some(p) = &cfg.cpp_model {
        ctx.extra_args
            .extend(["--cpp-model".to_string(), p.display().to_string()]);
    }
    if let Some(s) = &cfg.system_prompt {
        ctx.extra_args
            .extend(["--system-prompt".to_string(), s.clone()]);
    }
    if let Ok(v) = cpp.vocab_info() {
        ctx.bos_id = u32::try_from(v.bos).ok();
        ctx.eos_ids = [v.eos, v.eot]
            .into_iter()
            .filter_map(|x| u32::try_from(x).ok())
            .collect();
    }
    let rust_window: BTreeSet<u32> = rust.iter().copied().collect();
    ctx.special_ids = rust_window
        .iter()
        .copied()
        .filter(|&t| tokenizer.is_special(t))
        .collect();
    ctx.fill_pieces(rust.iter().copied(), |id| Some(piece(tokenizer, id)));
    let cpp_pieces: Vec<(u32, String)> = cpp_ids
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

fn text_report(
    cfg: &PerTokenConfig,
    rec: &Record,
    cmp: &LogitsComparison,
    tokenizer: &dyn Tokenizer,
    status: RunStatus,
    build: &bitnet_cpp::protocol::BuildFacts,
) -> String {
    let (backend, library) = (&build.backend, &build.library);
    let mark = |ok: bool| if ok { "✓" } else { "✗" };
    let mut s = format!(
        "model: {}\nC++ reference: {backend} ({library}){}\ntemplate: {} (add_bos={}, parse_special={})\ntokens: {}\n",
        cfg.model.display(),
        cfg.cpp_model.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default(),
        rec.template_used,
        rec.add_bos,
        rec.parse_special,
        rec.rust_tokens.len()
    );
    for m in &cmp.positions {
        s.push_str(&format!(
            "{} t={} cos={:.6} kl={:.1e} top1={} {:?}\n",
            mark(m.ok),
            m.position,
            m.cosine,
            m.kl,
            mark(m.top1_match),
            piece(tokenizer, rec.rust_tokens[m.position])
        ));
    }
    for (d, m) in &rec.decode {
        if d.matched {
            let cos = m
                .as_ref()
                .map(|m| format!(" cos={:.6}", m.cosine))
                .unwrap_or_default();
            let ok = m.as_ref().is_none_or(|m| m.ok);
            s.push_str(&format!(
                "{} step {}: both chose {} {:?}{cos}\n",
                mark(ok),
                d.step,
                d.rust_token,
                piece(tokenizer, d.rust_token)
            ));
        } else {
            s.push_str(&format!(
                "✗ step {}: Rust chose {} {:?}, C++ chose {} {:?}; stopping\n",
                d.step,
                d.rust_token,
                piece(tokenizer, d.rust_token),
                d.cpp_token,
                piece(tokenizer, d.cpp_token)
            ));
        }
    }
    let sm = &cmp.summary;
    s.push_str(&format!(
        "summary: min cos {:.6} (tolerance {}), max |Δ| {:.3e}, KL max {:.2e} mean {:.2e}, top-1 {:.1}%, greedy steps {}/{}\n",
        sm.min_cosine,
        cfg.cos_tol,
        sm.max_abs_diff,
        sm.max_kl,
        sm.mean_kl,
        sm.top1_agreement_rate * 100.0,
        rec.decode.iter().filter(|(d, m)| d.matched && m.as_ref().is_none_or(|m| m.ok)).count(),
        cfg.max_tokens
    ));
    match status {
        RunStatus::Ok => s.push_str("✓ match: every position within tolerance\n"),
        _ => match sm.first_divergent_position {
            Some(p) => s.push_str(&format!("✗ diverged: first at position {p}\n")),
            None => s.push_str("✗ diverged in the greedy steps\n"),
        },
    }
    s
}

fn json_document(
    cfg: &PerTokenConfig,
    rec: &Record,
    status: RunStatus,
    error: Option<&str>,
) -> Value {
    let decode: Vec<Value> = rec
        .decode
        .iter()
        .map(|(d, m)| {
            json!({
                "step": d.step, "rust_token": d.rust_token, "cpp_token": d.cpp_token, "match": d.matched,
                "metrics": m,
            })
        })
        .collect();
    json!({
        "status": status,
        "model": cfg.model.display().to_string(),
        "cpp_model": cfg.cpp_model.as_ref().map(|p| p.display().to_string()),
        "cpp_backend": rec.cpp_info,
        "tokens": { "rust": rec.rust_tokens, "cpp": rec.cpp_tokens, "first_diff_idx": rec.first_diff },
        "template": rec.template_used,
        "formatted_prompt": rec.formatted,
        "add_bos": rec.add_bos,
        "parse_special": rec.parse_special,
        "positions": rec.comparison.as_ref().map(|c| &c.positions),
        "decode": decode,
        "summary": rec.comparison.as_ref().map(|c| &c.summary),
        "thresholds": { "cos_tol": cfg.cos_tol, "max_tokens": cfg.max_tokens },
        "suggestions": rec.suggestions,
        "non_finite": rec.non_finite,
        "error": error,
    })
}

fn write_receipt(
    cfg: &PerTokenConfig,
    rec: &Record,
    status: RunStatus,
    path: &Path,
) -> Result<(), String> {
    let sha =
        |p: &Path| receipt::sha256_file(p).map_err(|e| format!("cannot hash {}: {e}", p.display()));
    let receipt = Receipt {
        schema_version: RECEIPT_SCHEMA_VERSION.to_string(),
        status,
        tool: ToolInfo {
            name: "xtask crossval-per-token".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        timestamp: receipt::now_rfc3339(),
        inputs: Inputs {
            model_path: cfg.model.display().to_string(),
            model_sha256: sha(&cfg.model)?,
            cpp_model_path: cfg.cpp_model.as_ref().map(|p| p.display().to_string()),
            cpp_model_sha256: cfg.cpp_model.as_deref().map(sha).transpose()?,
            tokenizer_path: cfg.tokenizer.as_ref().map(|p| p.display().to_string()),
            prompt: cfg.prompt.clone(),
            formatted_prompt: rec.formatted.clone(),
            system_prompt: cfg.system_prompt.clone(),
            template: cfg.template.name().to_string(),
            add_bos: rec.add_bos,
            parse_special: rec.parse_special,
        },
        token_parity: TokenParityBlock::new(
            rec.rust_tokens.len(),
            rec.cpp_tokens.len(),
            first_difference(&rec.rust_tokens, &rec.cpp_tokens),
            rec.template_used.clone(),
        ),
        positions: rec
            .comparison
            .as_ref()
            .map(|c| c.positions.clone())
            .unwrap_or_default(),
        decode: rec.decode.iter().map(|(d, _)| d.clone()).collect(),
        summary: rec.comparison.as_ref().map(|c| c.summary.clone()),
        thresholds: Thresholds {
            cos_tol: cfg.cos_tol,
            max_tokens: cfg.max_tokens,
        },
        cpp_backend: rec.cpp_info.clone().unwrap_or(CppBackendInfo {
            backend: "unavailable".into(),
            library: String::new(),
            build_info: String::new(),
            system_info: String::new(),
        }),
        environment: Environment::detect(rec.threads),
    };
    receipt.write(path).map_err(|e| e.to_string())
}
