//! `bitnet run`: load a model, format and tokenize the prompt, print the prompt and stream the
//! continuation, report tokens per second on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use bitnet_inference::{
    format_prompt, Eval, FirstNonFinite, Model, ModelChatInfo, Outputs, TemplateType,
};
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

/// A problem with the command line (exit code 2), as opposed to a runtime failure (3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Arguments of `bitnet run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The GGUF model (llama, bitnet or bitnet-b1.58).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt (must not be empty).
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate at most (stops earlier at end-of-sequence / end-of-turn).
    #[arg(short = 'n', long = "n-predict", default_value_t = 64)]
    pub n_predict: usize,
    /// Sampling temperature: 0 is greedy (the most likely token every step).
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Seed for sampling when --temp > 0.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Prompt template: raw, instruct, llama3-chat, chatml, auto or jinja.
    #[arg(long, default_value = "raw")]
    pub prompt_template: TemplateType,
    /// System prompt for the templates that have one.
    #[arg(long)]
    pub system_prompt: Option<String>,
}

/// Softmax sampling at temperature `temp` with a xorshift generator (no dependency needed).
struct Sampler {
    state: u64,
    temp: f32,
}

impl Sampler {
    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.temp <= 0.0 {
            return bitnet_inference::ops::argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| (((l - max) / self.temp) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let mut r = (self.state >> 11) as f64 / (1u64 << 53) as f64 * total;
        for (i, w) in weights.iter().enumerate() {
            r -= w;
            if r <= 0.0 {
                return i as u32;
            }
        }
        (weights.len() - 1) as u32
    }
}

/// Non-finite logits make every pick meaningless (an arg-max over NaN is token 0, which
/// prints as `<unk>`): stop instead of printing text. `tokens` are all the tokens evaluated
/// so far; `logits` the rows of the last `logits.len() / n_vocab` of them. The error names
/// where the non-finite values first appear, found by evaluating `tokens` again with an
/// observer (only on this failure path, so a healthy run pays nothing for it).
fn check_finite(
    model: &Model,
    tokens: &[u32],
    logits: &[f32],
    n_vocab: usize,
) -> anyhow::Result<()> {
    let first_pos = tokens.len() - logits.len() / n_vocab;
    for (i, row) in logits.chunks_exact(n_vocab).enumerate() {
        let bad = row.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            let nan = row.iter().filter(|x| x.is_nan()).count();
            let mut first = FirstNonFinite::new();
            let origin = match model.eval(
                &mut model.new_state(),
                Eval::new(tokens).outputs(Outputs::Last).observe(&mut first),
            ) {
                Ok(_) => first
                    .found()
                    .map(|at| format!("; they first appear in {at}"))
                    .unwrap_or_default(),
                Err(_) => String::new(),
            };
            anyhow::bail!(
                "the logits of position {} are not finite ({nan} NaN, {} ±inf of {n_vocab}){origin}: \
                 the model's weights or hyper-parameters hold values that overflow or are not \
                 numbers; no text is printed from them",
                first_pos + i,
                bad - nan
            );
        }
    }
    Ok(())
}

/// Run the model on the prompt, writing the prompt and the continuation to `out` as it is
/// generated and the statistics to `err`.
///
/// # Errors
/// [`UsageError`] for an empty prompt or a bad temperature; runtime errors (unreadable,
/// unsupported or refused model, text the vocabulary cannot spell, non-finite logits)
/// otherwise.
pub fn run(args: &RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    if args.prompt.is_empty() {
        return Err(UsageError("--prompt must not be empty".into()).into());
    }
    if !(args.temp >= 0.0 && args.temp.is_finite()) {
        return Err(UsageError(format!("--temp {} must be a finite number ≥ 0", args.temp)).into());
    }
    if args.threads == Some(0) {
        return Err(UsageError("--threads must be positive".into()).into());
    }
    let path = args.model.display();
    let model = Model::load(&args.model).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let tokenizer = GgufTokenizer::from_header(model.file(), &args.model)
        .map_err(|e| anyhow::anyhow!("{path}: tokenizer: {e}"))?;
    let info = ModelChatInfo::from_gguf(model.file());
    let formatted = format_prompt(
        args.prompt_template,
        &args.prompt,
        args.system_prompt.as_deref(),
        &info,
        tokenizer.add_bos_default(),
    )?;
    if let Some(why) = &formatted.detected_from {
        writeln!(err, "template: {} (auto: {why})", formatted.template.name())?;
    }
    let prompt = tokenizer.encode(&formatted.text, formatted.add_bos, formatted.parse_special)?;
    let stops: Vec<u32> = [tokenizer.eos_id(), tokenizer.eot_id()]
        .into_iter()
        .flatten()
        .collect();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The global pool: the matmuls parallelise over it. A second call in the same process
    // (tests) keeps the first pool, which is harmless for results.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();

    write!(out, "{}", formatted.text)?;
    out.flush()?;
    let mut sampler = Sampler {
        state: args.seed.max(1),
        temp: args.temp,
    };
    let v = model.config().n_vocab;
    let t0 = Instant::now();
    let (n_generated, prompt_secs) = (|| -> anyhow::Result<(usize, f64)> {
        let mut state = model.new_state();
        let logits = model.eval(&mut state, Eval::new(&prompt).outputs(Outputs::Last))?;
        let mut evaluated = prompt.clone();
        check_finite(&model, &evaluated, &logits, v)?;
        let prompt_secs = t0.elapsed().as_secs_f64();
        let mut next = sampler.pick(&logits[logits.len() - v..]);
        // Pieces are buffered until they form whole UTF-8 characters.
        let mut pending = Vec::new();
        let mut n = 0;
        while n < args.n_predict && !stops.contains(&next) {
            pending.extend(tokenizer.token_to_piece(next, false)?);
            let valid = match std::str::from_utf8(&pending) {
                Ok(s) => s.len(),
                Err(e) => e.valid_up_to(),
            };
            out.write_all(&pending[..valid])?;
            out.flush()?;
            pending.drain(..valid);
            n += 1;
            if n == args.n_predict {
                break;
            }
            let logits = model.forward(&mut state, &[next])?;
            evaluated.push(next);
            check_finite(&model, &evaluated, &logits, v)?;
            next = sampler.pick(&logits);
        }
        out.write_all(&pending)?;
        Ok((n, prompt_secs))
    })()?;
    writeln!(out)?;
    let gen_secs = t0.elapsed().as_secs_f64() - prompt_secs;
    writeln!(
        err,
        "prompt: {} tokens in {:.2} s ({:.1} tok/s); generated: {} tokens in {:.2} s ({:.1} tok/s); {} threads",
        prompt.len(),
        prompt_secs,
        prompt.len() as f64 / prompt_secs.max(1e-9),
        n_generated,
        gen_secs,
        n_generated as f64 / gen_secs.max(1e-9),
        threads
    )?;
    Ok(())
}
