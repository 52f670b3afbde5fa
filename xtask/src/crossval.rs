//! `xtask crossval-per-token` and `xtask crossval-tokenizer`: argument parsing and printing
//! over `bitnet-crossval`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use bitnet_cli::run_config::RunConfigArgs;
use bitnet_cpp::{BackendChoice, Session, SessionOptions};
use bitnet_crossval::bulk::{compare_texts, random_texts};
use bitnet_crossval::locate::{LocateMode, LocateOptions, LocateTolerance};
use bitnet_crossval::runner::{run_per_token, OutputFormat, PerTokenConfig};
use bitnet_crossval::token_parity::{should_colour, TokenParityError};
use bitnet_inference::TemplateType;
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

/// Output format flag.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Arguments of `crossval-per-token`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Exit codes: 0 tokens identical and every position and greedy step within --cos-tol; 1 logits diverged; \
2 hyper-parameters differ (the configuration gate), token sequences or vocabularies differ, or a usage error \
(including a prompt that does not fit the context); \
3 runtime error (unreadable or malformed model, chat template or tokenizer, C++ reference unavailable, receipt not written).\n\n\
Labels: match (within --cos-tol), drift (outside, same top-1), tie-flip (top-1 swapped on a near tie), wrong (anything else).\n\n\
Example:\n  cargo run -p xtask --release -- crossval-per-token --model model.gguf --prompt 'The capital of France is'\n  \
cargo run -p xtask --release -- crossval-per-token --model model.gguf --prompt 'The capital of France is' --locate"
)]
pub struct PerTokenArgs {
    /// The GGUF model (Rust side; also the C++ side unless --cpp-model).
    #[arg(long)]
    pub model: PathBuf,
    /// HF tokenizer.json for the Rust side (default: the GGUF's own vocabulary).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The prompt (must not be empty; may start with '-').
    #[arg(long, allow_hyphen_values = true)]
    pub prompt: String,
    /// raw | instruct | llama3-chat | chatml | auto | jinja. Decides the formatted text and
    /// the BOS / special-token policy, identically for both sides.
    #[arg(long, default_value = "raw")]
    pub prompt_template: TemplateType,
    /// System prompt for the templates that use one (a warning says so when the template
    /// ignores it, e.g. raw).
    #[arg(long, allow_hyphen_values = true)]
    pub system_prompt: Option<String>,
    /// Never add BOS (on both sides; a warning says so when the template adds none anyway).
    #[arg(long)]
    pub no_bos: bool,
    /// Greedy steps compared after the prompt (prompt + steps must fit the model's context).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Cosine tolerance, -1..=1: decides both the ✓/✗ marks and the exit code.
    #[arg(long, default_value_t = 0.999, allow_negative_numbers = true)]
    pub cos_tol: f64,
    /// Output format (json: exactly one document on stdout).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Print both token sequences with pieces on stderr.
    #[arg(long)]
    pub dump_ids: bool,
    /// Write a versioned JSON receipt here.
    #[arg(long)]
    pub receipt: Option<PathBuf>,
    /// Run the C++ reference on this file instead (e.g. the f32 original of your quantized model).
    #[arg(long)]
    pub cpp_model: Option<PathBuf>,
    /// llama | bitnet | auto (bitnet for bitnet-b1.58 or I2_S models, llama otherwise).
    #[arg(long, default_value = "auto")]
    pub cpp_backend: BackendChoice,
    /// Threads for both sides (default: all cores).
    #[arg(long, allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// KV cache types, flash attention and micro-batch size, for both sides (default: the
    /// reference's defaults).
    #[command(flatten)]
    pub run_config: RunConfigArgs,
    /// Show the C++ reference's log.
    #[arg(long)]
    pub verbose: bool,
    /// Locate where a divergence starts: compare every intermediate tensor of both sides in
    /// graph order and report the first beyond --locate-tol (`--locate`, `--locate first`),
    /// or every tensor, the per-layer noise profile (`--locate all`).
    #[arg(long, value_name = "first|all", num_args = 0..=1, default_missing_value = "first")]
    pub locate: Option<LocateMode>,
    /// When a tensor counts as diverged for --locate: nmse[=V] (default 1e-6; NMSE as
    /// llama.cpp's test-backend-ops computes it), cos[=V] (default 0.99999) or max-abs[=V]
    /// (default 1e-3). Default: nmse=1e-6.
    #[arg(long, value_name = "MEASURE[=VALUE]", requires = "locate")]
    pub locate_tol: Option<LocateTolerance>,
}

/// Run `crossval-per-token`; returns the exit code.
pub fn per_token(args: &PerTokenArgs) -> u8 {
    let run = match args.run_config.choice() {
        Ok(run) => run,
        Err(message) => {
            // As for any argument that does not parse: in JSON mode stdout still carries
            // exactly one document.
            if args.format == Format::Json {
                println!(
                    "{}",
                    serde_json::json!({ "status": "usage_error", "error": message })
                );
            }
            eprintln!("error: {message}");
            return 2;
        }
    };
    let cfg = PerTokenConfig {
        model: args.model.clone(),
        tokenizer: args.tokenizer.clone(),
        prompt: args.prompt.clone(),
        template: args.prompt_template,
        system_prompt: args.system_prompt.clone(),
        no_bos: args.no_bos,
        max_tokens: args.max_tokens,
        cos_tol: args.cos_tol,
        format: match args.format {
            Format::Text => OutputFormat::Text,
            Format::Json => OutputFormat::Json,
        },
        dump_ids: args.dump_ids,
        receipt: args.receipt.clone(),
        cpp_model: args.cpp_model.clone(),
        cpp_backend: args.cpp_backend,
        threads: args.threads,
        run,
        verbose: args.verbose,
        colour: should_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ),
        locate: args.locate.map(|mode| LocateOptions {
            mode,
            tolerance: args.locate_tol.unwrap_or_default(),
        }),
    };
    let mut stages = crate::progress::StageProgress::stderr("crossval");
    let outcome = run_per_token(&cfg, &mut |msg: &str| stages.stage(msg));
    // Finish the live line before the report follows it on stderr.
    drop(stages);
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    outcome.exit_code
}

/// Arguments of `crossval-tokenizer`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["texts", "random"])))]
#[command(
    after_help = "Exit codes: 0 every text tokenizes identically; 2 some differ (or usage error); 3 runtime error."
)]
pub struct TokenizerArgs {
    /// A GGUF model or vocabulary-only GGUF (its vocabulary is the C++ side, and the Rust side
    /// unless --tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// HF tokenizer.json for the Rust side instead of the GGUF's vocabulary.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Texts to compare: one JSON string per line.
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// Compare N random texts covering known failure classes (whitespace, NBSP, BOM, control
    /// characters, digits, contractions, accents, CJK, emoji/ZWJ, non-BMP, special tokens).
    #[arg(long, allow_negative_numbers = true)]
    pub random: Option<usize>,
    /// Seed for --random.
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    pub seed: u64,
    /// Never add BOS (default: as the vocabulary does, llama.cpp's add_special).
    #[arg(long)]
    pub no_bos: bool,
    /// Parse special-token text as special tokens.
    #[arg(long)]
    pub parse_special: bool,
    /// Output format (json: exactly one document on stdout).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Show at most this many mismatches in detail.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub max_report: usize,
}

/// Run `crossval-tokenizer`: the exit code.
pub fn tokenizer(args: &TokenizerArgs) -> u8 {
    match tokenizer_inner(args) {
        Ok(code) => code,
        Err((code, msg)) => {
            if args.format == Format::Json {
                let status = if code == 2 { "usage_error" } else { "error" };
                println!("{}", serde_json::json!({ "status": status, "error": msg }));
            }
            eprintln!("error: {msg}");
            code
        }
    }
}

fn tokenizer_inner(args: &TokenizerArgs) -> Result<u8, (u8, String)> {
    let texts: Vec<String> = match (&args.texts, args.random) {
        (Some(path), _) => read_jsonl(path).map_err(|m| (3, m))?,
        (None, Some(n)) => random_texts(n, args.seed),
        (None, None) => return Err((2, "give --texts FILE.jsonl or --random N".into())),
    };
    let rust: Box<dyn Tokenizer> = match &args.tokenizer {
        Some(p) => bitnet_tokenizers::load(p).map_err(|e| (3, format!("{}: {e}", p.display())))?,
        None => Box::new(
            GgufTokenizer::open(&args.model)
                .map_err(|e| (3, format!("{}: {e}", args.model.display())))?,
        ),
    };
    let opts = SessionOptions {
        vocab_only: true,
        ..SessionOptions::default()
    };
    let mut cpp =
        Session::open(&args.model, BackendChoice::Auto, &opts).map_err(|e| (3, e.to_string()))?;
    eprintln!(
        "crossval-tokenizer: {} texts, Rust {} vs C++ {}",
        texts.len(),
        rust.backend_name(),
        cpp.backend()
    );
    let report = compare_texts(
        &*rust,
        &mut cpp,
        &texts,
        !args.no_bos,
        args.parse_special,
        args.max_report,
        |_| {},
    )
    .map_err(|e| (3, e.to_string()))?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "status": if report.mismatches == 0 { "ok" } else { "token_mismatch" },
                "total": report.total,
                "mismatches": report.mismatches,
                "reported": report.reported,
            })
        ),
        Format::Text => {
            for m in &report.reported {
                let e = TokenParityError::new(&m.rust, &m.cpp, m.first_diff_idx, &m.text);
                println!(
                    "text #{} {:?}: first diff at index {}",
                    m.index, m.text, m.first_diff_idx
                );
                println!("  Rust: {:?}\n  C++:  {:?}", m.rust, m.cpp);
                for i in e.window() {
                    let r = m
                        .rust
                        .get(i)
                        .map(|&t| format!("{t} {:?}", piece(&*rust, t)));
                    let c = m.cpp.get(i).map(|&t| {
                        let p = cpp
                            .token_to_piece(t, true)
                            .map(|b| String::from_utf8_lossy(&b).into_owned());
                        format!("{t} {:?}", p.unwrap_or_default())
                    });
                    let mark = if m.rust.get(i).map(|&t| i64::from(t))
                        == m.cpp.get(i).map(|&t| i64::from(t))
                    {
                        "✓"
                    } else {
                        "✗"
                    };
                    println!(
                        "  [{i}] {mark} {} | {}",
                        r.unwrap_or_else(|| "(end)".into()),
                        c.unwrap_or_else(|| "(end)".into())
                    );
                }
            }
            println!("{} texts, {} mismatches", report.total, report.mismatches);
        }
    }
    Ok(if report.mismatches == 0 { 0 } else { 2 })
}

fn read_jsonl(path: &std::path::Path) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<String>(l)
                .map_err(|e| format!("{}:{}: not a JSON string: {e}", path.display(), i + 1))
        })
        .collect()
}

fn piece(tokenizer: &dyn Tokenizer, id: u32) -> String {
    tokenizer
        .token_to_piece(id, true)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
