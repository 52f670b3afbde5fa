//! `bitnet perplexity`: this engine's perplexity of a text file with llama-perplexity's method
//! ([`bitnet_inference::perplexity`]) and output — the running perplexity after each window,
//! `[1]12.3456,[2]…`, then `Final estimate: PPL = … +/- …`.
//!
//! Same logits, same file, same `--ctx`: the same numbers as `llama-perplexity -f FILE -c N
//! -b N` (this engine evaluates one window per batch, which llama-perplexity does when its batch
//! is not larger than its context).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use bitnet_inference::perplexity::{self, Accumulator, PerplexityError, Plan};
use bitnet_inference::Model;
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

use crate::run::UsageError;

/// Arguments of `bitnet perplexity`.
#[derive(Debug, Clone, clap::Args)]
pub struct PerplexityArgs {
    /// The GGUF model (llama, bitnet or bitnet-b1.58).
    #[arg(long)]
    pub model: PathBuf,
    /// The text (UTF-8), tokenized once as a whole.
    #[arg(long, value_name = "TEXT")]
    pub file: PathBuf,
    /// Tokens per window (llama-perplexity's -c); the second half of each window is scored.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Tokens per evaluation batch, at most --ctx [default: --ctx].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Evaluate at most this many windows (llama-perplexity's --chunks) [default: all].
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON document on stdout instead of the text output.
    #[arg(long)]
    pub json: bool,
}

/// Compute and print the perplexity: the per-window line and the final estimate on `out` (or
/// one JSON document), progress on `err`.
///
/// # Errors
/// [`UsageError`] for values that cannot work (a context below 4 or past the model's, a batch
/// larger than the context, a text shorter than two windows, zero chunks or threads); runtime
/// errors for an unreadable model or file, a file that is not UTF-8, a vocabulary that adds
/// EOS.
pub fn run(args: &PerplexityArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    if args.threads == Some(0) {
        return Err(UsageError("--threads must be positive".into()).into());
    }
    let path = args.model.display();
    let model = Model::load(&args.model).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let trained = model.config().context_length;
    if args.ctx > trained {
        return Err(UsageError(format!(
            "--ctx {} is past the model's context of {trained} tokens",
            args.ctx
        ))
        .into());
    }
    let tokenizer = GgufTokenizer::from_header(model.file(), &args.model)
        .map_err(|e| anyhow::anyhow!("{path}: tokenizer: {e}"))?;
    if tokenizer.add_eos_default() {
        return Err(anyhow::anyhow!("{path}: {}", PerplexityError::AddsEos));
    }
    let bytes = std::fs::read(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            args.file.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();

    writeln!(err, "perplexity: tokenizing the input ..")?;
    let tokens = tokenizer.encode(&text, true, false)?;
    let n_batch = args.batch.unwrap_or(args.ctx);
    let plan = Plan::new(tokens.len(), args.ctx, n_batch, args.chunks)
        .map_err(|e| UsageError(e.to_string()))?;
    let bos = tokenizer
        .add_bos_default()
        .then(|| tokenizer.bos_id())
        .flatten();
    writeln!(
        err,
        "perplexity: calculating perplexity over {} chunks, n_ctx={}, batch_size={}, n_seq=1 \
         ({} tokens, {threads} threads)",
        plan.n_chunks(),
        plan.n_ctx(),
        plan.n_batch(),
        tokens.len()
    )?;
    let started = Instant::now();
    let mut chunks = Vec::with_capacity(plan.n_chunks());
    let mut io_error = None;
    let acc = perplexity::run(&model, &tokens, &plan, bos, |c| {
        chunks.push(c.running_ppl);
        let shown = (|| -> std::io::Result<()> {
            if c.chunk == 0 {
                let secs = started.elapsed().as_secs_f64();
                writeln!(
                    err,
                    "perplexity: {secs:.2} seconds per pass - ETA {:.2} minutes",
                    secs * plan.n_chunks() as f64 / 60.0
                )?;
            }
            if !args.json {
                write!(out, "[{}]{:.4},", c.chunk + 1, c.running_ppl)?;
                out.flush()?;
            }
            Ok(())
        })();
        if let Err(e) = shown {
            io_error.get_or_insert(e);
        }
    })
    .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    if args.json {
        let doc = json_document(args, &plan, tokens.len(), bos.is_some(), &chunks, &acc);
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out)?;
        match acc.error() {
            Some(e) => writeln!(
                out,
                "Final estimate: PPL = {:.4} +/- {e:.5}",
                acc.perplexity()
            )?,
            None => writeln!(
                out,
                "Final estimate: PPL = {:.4} (no error estimate: the log-likelihoods do not vary)",
                acc.perplexity()
            )?,
        }
    }
    writeln!(
        err,
        "perplexity: {} tokens scored in {:.2} s",
        acc.count(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

fn json_document(
    args: &PerplexityArgs,
    plan: &Plan,
    n_tokens: usize,
    bos_substituted: bool,
    chunks: &[f64],
    acc: &Accumulator,
) -> serde_json::Value {
    serde_json::json!({
        "model": args.model.display().to_string(),
        "file": args.file.display().to_string(),
        "n_tokens": n_tokens,
        "n_ctx": plan.n_ctx(),
        "n_batch": plan.n_batch(),
        "n_chunks": plan.n_chunks(),
        "bos_substituted": bos_substituted,
        "scored_tokens": acc.count(),
        "chunks": chunks.iter().enumerate().map(|(i, p)| serde_json::json!({"chunk": i + 1, "ppl": p})).collect::<Vec<_>>(),
        "mean_nll": acc.mean_nll(),
        "ppl": acc.perplexity(),
        "ppl_error": acc.error(),
    })
}
