//! The `bitnet` command: argument parsing and printing only; the work is in `bitnet_cli`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use bitnet_cli::{exit, inspect, CommandOutput};
use clap::{Args, Parser, Subcommand};

/// Inspect GGUF models for the bitnet-rs inference engine.
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
    let cli = match Cli::try_parse() {
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
    let output = match cli.command {
        Command::Inspect(args) => {
            let format = if args.json {
                inspect::Format::Json
            } else {
                inspect::Format::Text
            };
            inspect::run(&args.model, format)
        }
    };
    emit(output)
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
