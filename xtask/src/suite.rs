//! `xtask crossval-suite` and `xtask crossval-merge`: argument parsing and printing over
//! `bitnet_crossval::suite`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use bitnet_cli::run_config::RunConfigArgs;
use bitnet_cpp::BackendChoice;
use bitnet_crossval::suite::{self, Shard, SuiteConfig, SuiteEvent, SuiteInput, SuiteSummary};
use bitnet_inference::TemplateType;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::crossval::Format;

const EXIT_CODES: &str = "Exit codes: 0 every item's tokens identical and every position within --cos-tol; \
1 some item's logits (or greedy steps) diverged; 2 usage error, some item failed the token pre-gate \
(the summary names each one), or items are missing from the output; 3 runtime error (unreadable model \
or input, C++ reference unavailable, an item's evaluation failed). Several at once: the highest wins.";

/// Arguments of `crossval-suite`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompts", "text"])))]
#[command(after_help = format!("{EXIT_CODES}\n\n\
Outputs: --out FILE.jsonl gets one JSON object per item as it finishes; FILE.jsonl.tokstats \
beside it keeps the per-token values the statistics need (merge shards with crossval-merge). \
stdout carries the summary (with --format json, exactly one JSON document); the one-line view \
of each item and the progress go to stderr.\n\n\
Examples:\n  \
cargo run -p xtask --release -- crossval-suite --model M.gguf --prompts crossval/suites/failure-classes.jsonl\n  \
cargo run -p xtask --release -- crossval-suite --model M.gguf --text target/fixtures/alice29.txt --ctx 512 --out run.jsonl\n  \
cargo run -p xtask --release -- crossval-suite --model M.gguf --text corpus.txt --shard 2/3 --out shard-2.jsonl\n\n\
Running shards as separate jobs: docs/howto/crossval-suite.md"))]
pub struct SuiteArgs {
    /// The GGUF model (Rust side; also the C++ side unless --cpp-model).
    #[arg(long)]
    pub model: PathBuf,
    /// A JSONL file of prompts: one object per line with "id" and "prompt", optional
    /// "template", "system", "max_tokens".
    #[arg(long, value_name = "FILE.jsonl")]
    pub prompts: Option<PathBuf>,
    /// A text (UTF-8), tokenized once and cut into --ctx windows whose second halves are
    /// scored, as llama-perplexity does.
    #[arg(long, value_name = "FILE.txt")]
    pub text: Option<PathBuf>,
    /// Context of both sides: the window with --text [default: 512]; with --prompts [default:
    /// the longest item with its greedy steps].
    #[arg(long)]
    pub ctx: Option<usize>,
    /// With --text: evaluate at most this many windows (llama-perplexity's --chunks).
    #[arg(long, requires = "text")]
    pub chunks: Option<usize>,
    /// HF tokenizer.json for the Rust side (default: the GGUF's own vocabulary).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// With --prompts: the template of items that name none (raw | instruct | llama3-chat |
    /// chatml | auto | jinja).
    #[arg(long, default_value = "raw", conflicts_with = "text")]
    pub prompt_template: TemplateType,
    /// With --prompts: the system prompt of items that give none.
    #[arg(long, conflicts_with = "text")]
    pub system_prompt: Option<String>,
    /// With --prompts: never add BOS (on both sides).
    #[arg(long, conflicts_with = "text")]
    pub no_bos: bool,
    /// With --prompts: greedy steps compared after each prompt, for items that give no
    /// max_tokens.
    #[arg(long, default_value_t = 4, conflicts_with = "text")]
    pub max_tokens: usize,
    /// Cosine tolerance: decides each position, each item and the exit code.
    #[arg(long, default_value_t = 0.999)]
    pub cos_tol: f64,
    /// Run the C++ reference on this file instead (e.g. the f32 original of your quantized model).
    #[arg(long)]
    pub cpp_model: Option<PathBuf>,
    /// llama | bitnet | auto (bitnet for bitnet-b1.58 or I2_S models, llama otherwise).
    #[arg(long, default_value = "auto")]
    pub cpp_backend: BackendChoice,
    /// Threads of each side; both sides run at the same time [default: half the cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// KV cache types, flash attention and micro-batch size, for both sides (default: the
    /// reference's defaults); as crossval-per-token takes them.
    #[command(flatten)]
    pub run_config: RunConfigArgs,
    /// Stream one JSON line per item here (and the side file FILE.jsonl.tokstats).
    #[arg(long, value_name = "FILE.jsonl")]
    pub out: Option<PathBuf>,
    /// Continue --out: skip the items already in it (it must come from the same suite and
    /// shard).
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// Run only shard I of N: the items whose 0-based index k has k mod N = I-1.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Items listed in the summary's "worst items by KL".
    #[arg(long, default_value_t = 5)]
    pub worst: usize,
    /// Summary format (json: exactly one document on stdout).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Show the C++ reference's log.
    #[arg(long)]
    pub verbose: bool,
}

/// Arguments of `crossval-merge`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = format!("{EXIT_CODES}\n\n\
The shards must be all N shards of one suite (same settings); each FILE.jsonl needs its \
FILE.jsonl.tokstats. The summary is exactly the one a single run over every item prints.\n\n\
Example:\n  cargo run -p xtask --release -- crossval-merge shard-1.jsonl shard-2.jsonl shard-3.jsonl"))]
pub struct MergeArgs {
    /// The shards' --out files.
    #[arg(required = true, value_name = "OUT.jsonl")]
    pub outs: Vec<PathBuf>,
    /// Items listed in the summary's "worst items by KL".
    #[arg(long, default_value_t = 5)]
    pub worst: usize,
    /// Summary format (json: exactly one document on stdout).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Item lines and the progress bar on stderr: a bar with an ETA only on a terminal; elsewhere
/// (a log, CI) plain lines.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        Progress { bar: None }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn event(&mut self, e: SuiteEvent<'_>) {
        match e {
            SuiteEvent::Stage(msg) => self.line(&format!("crossval-suite: {msg}")),
            SuiteEvent::Started {
                items,
                already_done,
                tokens,
            } => {
                let kept = if already_done > 0 {
                    format!(" ({already_done} already in --out)")
                } else {
                    String::new()
                };
                self.line(&format!(
                    "crossval-suite: {items} items to run{kept}, {tokens} tokens per side"
                ));
                if std::io::stderr().is_terminal() && items > 0 {
                    let bar = ProgressBar::with_draw_target(
                        Some(tokens as u64),
                        ProgressDrawTarget::stderr(),
                    );
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{elapsed_precise} [{bar:30}] {pos}/{len} tokens, {per_sec}, ETA {eta}",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    );
                    self.bar = Some(bar);
                }
            }
            SuiteEvent::Finished { line, tokens, .. } => {
                self.line(line);
                if let Some(bar) = &self.bar {
                    bar.inc(tokens as u64);
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn print_summary(summary: &SuiteSummary, format: Format) {
    let text = match format {
        Format::Json => summary.to_json(),
        Format::Text => summary.render_text(),
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn print_failure(format: Format, message: &str) {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::json!({ "status": "error", "error": message })
        );
    }
    eprintln!("error: {message}");
}

/// Run `crossval-suite`; returns the exit code.
pub fn run(args: &SuiteArgs) -> u8 {
    let input = match (&args.prompts, &args.text) {
        (Some(p), None) => SuiteInput::Prompts(p.clone()),
        (None, Some(t)) => SuiteInput::Text(t.clone()),
        _ => {
            print_failure(args.format, "give exactly one of --prompts and --text");
            return 2;
        }
    };
    let run = match args.run_config.choice() {
        Ok(run) => run,
        Err(message) => {
            print_failure(args.format, &message);
            return 2;
        }
    };
    let cfg = SuiteConfig {
        model: args.model.clone(),
        tokenizer: args.tokenizer.clone(),
        cpp_model: args.cpp_model.clone(),
        cpp_backend: args.cpp_backend,
        input,
        ctx: args.ctx,
        chunks: args.chunks,
        template: args.prompt_template,
        system_prompt: args.system_prompt.clone(),
        no_bos: args.no_bos,
        max_tokens: args.max_tokens,
        cos_tol: args.cos_tol,
        threads: args.threads,
        run,
        verbose: args.verbose,
        out: args.out.clone(),
        resume: args.resume,
        shard: args.shard,
        worst: args.worst,
    };
    let mut progress = Progress::new();
    let outcome = suite::run_suite(&cfg, &mut |e| progress.event(e));
    progress.finish();
    if let Some((tokens, secs)) = outcome.throughput {
        if tokens > 0 {
            eprintln!(
                "crossval-suite: {tokens} tokens per side in {secs:.1} s ({:.1} tokens/s, both sides at once)",
                tokens as f64 / secs.max(1e-9)
            );
        }
    }
    match (&outcome.summary, &outcome.error) {
        (Some(summary), _) => print_summary(summary, args.format),
        (None, Some(message)) => print_failure(args.format, message),
        (None, None) => {}
    }
    outcome.exit_code
}

/// Run `crossval-merge`; returns the exit code.
pub fn merge(args: &MergeArgs) -> u8 {
    match suite::merge(&args.outs, args.worst) {
        Ok(summary) => {
            print_summary(&summary, args.format);
            summary.exit_code
        }
        Err(f) => {
            print_failure(args.format, &f.message);
            f.code
        }
    }
}
