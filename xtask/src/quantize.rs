//! `xtask quantize`: llama.cpp's own quantizer (`llama_model_quantize`, in the llama.cpp
//! reference process) with llama-quantize's defaults, so the output has exactly the tensor
//! mix a user's `llama-quantize` produces. The logic is `bitnet_cpp::quantize`; this is the
//! command line, the progress display and the summary.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use bitnet_cpp::protocol::QuantizeProgress;
use bitnet_cpp::quantize::{self, Ftype, QuantizeOptions};
use bitnet_gguf::GgufFile;

use crate::UsageError;

/// Arguments of `xtask quantize`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The GGUF model to quantize.
    #[arg(long)]
    pub model: PathBuf,
    /// llama-quantize's file type, in any case (Q4_K_M, q8_0, TQ2_0, or its number); a
    /// type whose mix holds tensors the engine cannot multiply is refused with the list.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_type)]
    pub ftype: &'static Ftype,
    /// Output file (written under a temporary name, renamed when complete).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Requantize tensors that are already quantized, as llama-quantize's flag of the same
    /// name (lower quality than quantizing from f32/f16).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Threads for the quantizer [default: all].
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: u32,
    /// Echo llama.cpp's log on stderr.
    #[arg(long)]
    pub verbose: bool,
}

const AFTER_HELP: &str = "\
Runs llama.cpp's llama_model_quantize with llama_model_quantize_default_params() (no
importance matrix), exactly as `llama-quantize IN OUT TYPE` does. Example:
  cargo run -p xtask --release -- quantize --model smollm2-f16.gguf --type Q4_K_M -o smollm2-q4_k_m.gguf

Exit codes: 0 written; 2 usage (unknown or refused type, output = input); 3 runtime error
(unreadable input, llama.cpp's refusal or failure with its reason, reference unavailable).";

fn parse_type(name: &str) -> Result<&'static Ftype, String> {
    Ftype::parse_accepted(name).map_err(|e| e.to_string())
}

/// Run `quantize`: progress on stderr (one updating line on a terminal, a line per tensor
/// otherwise), then a summary of the output's tensor types.
///
/// # Errors
/// [`UsageError`] for a refused type or an output equal to the input; otherwise the
/// quantizer's error (exit 3).
pub fn run(args: &Args) -> anyhow::Result<()> {
    let opts = QuantizeOptions {
        allow_requantize: args.allow_requantize,
        n_threads: args.threads,
        verbose: args.verbose,
        ..QuantizeOptions::default()
    };
    let mut stderr = std::io::stderr();
    let terminal = stderr.is_terminal() && !args.verbose;
    eprintln!(
        "quantizing {} to {} as {} with llama.cpp's quantizer",
        args.model.display(),
        args.output.display(),
        args.ftype
    );
    let mut show = |p: &QuantizeProgress| {
        let line = progress_line(p);
        if terminal {
            // One line rewritten in place; cleared to the end for shorter names.
            let _ = write!(stderr, "\r{line}\x1b[K");
            let _ = stderr.flush();
        } else {
            let _ = writeln!(stderr, "{line}");
        }
    };
    let result = quantize::quantize(&args.model, &args.output, args.ftype, &opts, &mut show);
    if terminal {
        eprintln!();
    }
    let report = result.map_err(|e| {
        if e.is_usage() {
            anyhow::Error::new(UsageError(e.to_string()))
        } else {
            anyhow::Error::new(e)
        }
    })?;
    let out = GgufFile::open(&args.output)?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in out.tensors() {
        *counts.entry(t.ty.name().to_string()).or_default() += 1;
    }
    let mix: Vec<String> = counts.iter().map(|(t, n)| format!("{n} {t}")).collect();
    eprintln!(
        "wrote {} ({}, {} tensors: {}; {} bytes)",
        args.output.display(),
        args.ftype,
        out.tensors().len(),
        mix.join(", "),
        out.bytes().len()
    );
    if !report.fallbacks.is_empty() {
        let shown: Vec<String> = report
            .fallbacks
            .iter()
            .take(4)
            .map(|f| format!("{} {} → {}", f.tensor, f.wanted, f.used))
            .collect();
        eprintln!(
            "{} tensors fell back because their rows are not whole blocks of the mix's type: {}{}",
            report.fallbacks.len(),
            shown.join(", "),
            if report.fallbacks.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// `[ 12/201] blk.3.attn_v.weight f32 → q6_K` (or `copied` for an unchanged tensor).
pub fn progress_line(p: &QuantizeProgress) -> String {
    let width = p.total.to_string().len();
    let what = if p.from == p.to {
        format!("{} copied", p.from)
    } else {
        format!("{} → {}", p.from, p.to)
    };
    format!("[{:>width$}/{}] {} {what}", p.index, p.total, p.tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_aligned_and_say_what_happened() {
        let p = |index, from: &str, to: &str| QuantizeProgress {
            index,
            total: 201,
            tensor: "blk.3.attn_v.weight".into(),
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(
            progress_line(&p(12, "f32", "q6_K")),
            "[ 12/201] blk.3.attn_v.weight f32 → q6_K"
        );
        assert_eq!(
            progress_line(&p(7, "f32", "f32")),
            "[  7/201] blk.3.attn_v.weight f32 copied"
        );
    }
}
