//! The `bitnet` command: argument parsing and printing only; the work is in `bitnet_cli`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use bitnet_cli::{exit, inspect, tokenize, CommandOutput};
use clap::{Args, Parser, Subcommand};

// Chat templates come from model files: this allocator lets the renderer stop one that tries
// to exhaust memory (bitnet_inference::template::jinja).
#[global_allocator]
static ALLOCATOR: bitnet_inference::template::BoundedAllocator =
    bitnet_inference::template::BoundedAllocator;

/// Inspect GGUF models and tokenize prompts for the bitnet-rs inference engine.
///
/// Exit codes: 0 success, 2 usage error, 3 runtime error (unreadable or corrupt file).
#[derive(Debug, Parser)]
#[command(name = "bitnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a GGUF file's architecture, hyper-parameters, tokenizer, chat template and tensors.
    ///
    /// Values are shown as stored: a key the file does not contain is reported as
    /// "(absent)" in text and null in JSON, never as a default (an absent add_bos_token
    /// means llama.cpp picks its own default, which is not the same as false).
    /// Works on vocabulary-only files (no tensors) as well as on full models.
    ///
    /// Exit codes: 0 success; 2 usage error; 3 the file is missing, unreadable or not a
    /// valid GGUF v2/v3 file (one line "error: PATH: REASON" on stderr).
    Inspect(InspectArgs),

    /// Tokenize a prompt exactly as llama.cpp would (GGUF) or with a Hugging Face tokenizer.json.
    ///
    /// BOS follows llama.cpp's add_special: by default it is added exactly when the
    /// vocabulary adds BOS by default; --no-bos turns it off. Without --parse-special,
    /// special-token text such as "<s>" is tokenized as plain text.
    ///
    /// Exit codes: 0 success; 2 usage error; 3 the tokenizer or input file cannot be read or
    /// is corrupt (one line "error: ..." on stderr; with --json also {"error": ...} on stdout).
    Tokenize(TokenizeArgs),

    /// Run a model on a prompt: print the prompt, stream the continuation, report tokens/s
    /// on stderr. Stops at an end-of-generation token or after -n tokens.
    ///
    /// The next token is chosen as llama.cpp's llama-completion chooses it: its sampler chain
    /// with its defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, a random seed
    /// printed on stderr), overridden by the model's general.sampling.* values, overridden by
    /// the flags below. Same logits, same flags and --seed: same tokens as llama.cpp.
    /// --temp 0 is greedy.
    ///
    /// Exit codes: 0 success; 2 usage error (empty prompt, a sampling value llama.cpp would
    /// refuse, unknown sampler or template, jinja on a model without a chat template, a prompt
    /// and --n-predict that do not fit the model's context); 3 the model cannot be read, is
    /// corrupt or is not supported, or its chat template is malformed (empty, fails to render,
    /// hits a limit).
    // Boxed: the sampling flags make it far larger than the other variants.
    Run(Box<bitnet_cli::run::RunArgs>),

    /// The model's perplexity on a text file, computed as llama.cpp's llama-perplexity does.
    ///
    /// The text is tokenized once (with BOS as the vocabulary says) and cut into windows of
    /// --ctx tokens; each window is evaluated from an empty cache with its first token replaced
    /// by BOS, and the second half of each window is scored. Prints the running perplexity
    /// after each window ("[1]12.3456,[2]...") and "Final estimate: PPL = X +/- E" on stdout,
    /// progress on stderr. Same numbers as `llama-perplexity -f TEXT -c N -b N` on the same
    /// logits.
    ///
    /// Exit codes: 0 success; 2 usage error (a context below 4 or past the model's, --batch
    /// larger than --ctx, a text shorter than two windows); 3 the model or the file cannot be
    /// read, the file is not UTF-8, or the vocabulary adds EOS (with --json, {"error": ...} on
    /// stdout too).
    Perplexity(bitnet_cli::perplexity::PerplexityArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "tokenizer"])))]
#[command(group(clap::ArgGroup::new("text").required(true).args(["prompt", "input_jsonl"])))]
struct TokenizeArgs {
    /// A GGUF model or vocabulary: use its embedded tokenizer (llama.cpp-exact).
    #[arg(long, value_name = "M.gguf")]
    model: Option<PathBuf>,

    /// A Hugging Face tokenizer.json (a .gguf file is accepted too).
    #[arg(long, value_name = "T.json")]
    tokenizer: Option<PathBuf>,

    /// Add BOS as llama.cpp's add_special does (only if the vocabulary uses BOS; the default).
    #[arg(long, conflicts_with = "no_bos")]
    add_bos: bool,

    /// Do not add BOS (or EOS).
    #[arg(long)]
    no_bos: bool,

    /// Turn special-token text ("<s>", "<|begin_of_text|>") into special tokens.
    #[arg(long)]
    parse_special: bool,

    /// The text to tokenize.
    #[arg(long)]
    prompt: Option<String>,

    /// A file with one JSON string per line; each line is tokenized in order.
    #[arg(long, value_name = "FILE")]
    input_jsonl: Option<PathBuf>,

    /// Print {"ids": [...], "pieces": [...]} (one compact document per prompt, one per line).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The GGUF file to inspect (a full model or a vocabulary-only file).
    model: PathBuf,

    /// Print exactly one pretty-printed JSON document on stdout instead of text. Absent
    /// values are null; the chat template is included whole. On error the document is
    /// {"path": ..., "error": ...} and the exit code is still 3.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // llama.cpp's single-dash flags (-ctk, -ctv, -fa, -ub) are accepted as llama.cpp spells them.
    let argv = bitnet_cli::run_config::llama_style_flags(std::env::args_os());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are "errors" that print to stdout and exit 0;
            // real usage errors print to stderr and exit 2.
            if !err.use_stderr() {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            // Asked for JSON: stdout still carries exactly one document. clap prints the
            // message itself (coloured only on a terminal without NO_COLOR).
            let mut code = exit::USAGE;
            if json_requested() {
                code =
                    write_stdout(&bitnet_cli::usage_error_json(&err.to_string())).unwrap_or(code);
            }
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    if let Command::Run(args) = &cli.command {
        let result = bitnet_cli::run::run(
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        );
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                let usage = e.downcast_ref::<bitnet_cli::run::UsageError>().is_some();
                ExitCode::from(if usage { exit::USAGE } else { exit::RUNTIME })
            }
        };
    }
    if let Command::Perplexity(args) = &cli.command {
        let result = bitnet_cli::perplexity::run(
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        );
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                let usage = e.downcast_ref::<bitnet_cli::run::UsageError>().is_some();
                let mut code = if usage { exit::USAGE } else { exit::RUNTIME };
                if args.json {
                    let doc = serde_json::json!({ "error": e.to_string() });
                    code = write_stdout(&format!("{doc}\n")).unwrap_or(code);
                }
                ExitCode::from(code)
            }
        };
    }
    let output = match cli.command {
        Command::Inspect(args) => {
            let format = if args.json {
                inspect::Format::Json
            } else {
                inspect::Format::Text
            };
            inspect::run(&args.model, format)
        }
        Command::Tokenize(args) => tokenize::run(&tokenize_request(args)),
        Command::Run(_) | Command::Perplexity(_) => unreachable!("handled above: they stream"),
    };
    emit(output)
}

/// The library's request from the parsed arguments (clap's groups guarantee one source and
/// one input).
fn tokenize_request(args: TokenizeArgs) -> tokenize::Request {
    let source = match (args.model, args.tokenizer) {
        (Some(model), _) => tokenize::Source::Model(model),
        (None, Some(tokenizer)) => tokenize::Source::Tokenizer(tokenizer),
        (None, None) => unreachable!("clap requires --model or --tokenizer"),
    };
    let input = match (args.prompt, args.input_jsonl) {
        (Some(prompt), _) => tokenize::Input::Prompt(prompt),
        (None, Some(path)) => tokenize::Input::Jsonl(path),
        (None, None) => unreachable!("clap requires --prompt or --input-jsonl"),
    };
    let add_bos = if args.no_bos {
        Some(false)
    } else if args.add_bos {
        Some(true)
    } else {
        None
    };
    tokenize::Request {
        source,
        add_bos,
        parse_special: args.parse_special,
        input,
        json: args.json,
    }
}

/// Whether the raw command line asks for JSON output (before any `--` separator).
fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json")
}

/// Write both streams and turn the code into the process exit status.
fn emit(output: CommandOutput) -> ExitCode {
    let code = write_stdout(&output.stdout).unwrap_or(output.code);
    let _ = std::io::stderr().lock().write_all(output.stderr.as_bytes());
    ExitCode::from(code)
}

/// Write and flush stdout; `Some(exit::RUNTIME)` (after saying why on stderr) if that fails.
///
/// A reader that stops early (`bitnet inspect m.gguf | head`) is not an error of ours;
/// any other failure to write stdout is a runtime error.
fn write_stdout(text: &str) -> Option<u8> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => None,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {e}");
            Some(exit::RUNTIME)
        }
    }
}
