//! `bitnet run`: load a model, format and tokenize the prompt, print the prompt and stream the
//! continuation — sampled as llama.cpp samples ([`crate::sampling_args`]) — and report tokens
//! per second on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use bitnet_inference::{
    format_prompt, template_warnings, Eval, FirstNonFinite, Model, ModelChatInfo, Outputs,
    RunConfig, TemplateType,
};
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

use crate::run_config::RunConfigArgs;
use crate::sampling_args::{build_sampler, SamplingArgs};

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
    /// The prompt (must not be empty; may start with '-').
    #[arg(long, allow_hyphen_values = true)]
    pub prompt: String,
    /// Tokens to generate at most (stops earlier at end-of-sequence / end-of-turn). The prompt
    /// and these tokens must fit the model's context.
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub n_predict: usize,
    /// Threads (default: all cores).
    #[arg(long, allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// Prompt template: raw, instruct, llama3-chat, chatml, auto or jinja.
    #[arg(long, default_value = "raw")]
    pub prompt_template: TemplateType,
    /// System prompt for the templates that have one (a warning says so when the template
    /// ignores it, e.g. raw).
    #[arg(long, allow_hyphen_values = true)]
    pub system_prompt: Option<String>,
    /// KV cache types, flash attention, micro-batch size.
    #[command(flatten)]
    pub run_config: RunConfigArgs,
    /// How the next token is chosen.
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Non-finite logits make every pick meaningless (an arg-max over NaN is token 0, which
/// prints as `<unk>`): stop instead of printing text. `tokens` are all the tokens evaluated
/// so far; `logits` the rows of the last `logits.len() / n_vocab` of them. The error names
/// where the non-finite values first appear, found by evaluating `tokens` again with an
/// observer, in the run's configuration `run` (only on this failure path, so a healthy run
/// pays nothing for it).
fn check_finite(
    model: &Model,
    run: &RunConfig,
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
            let evaluated = model.new_state_with(run).and_then(|mut state| {
                model.eval(
                    &mut state,
                    Eval::new(tokens).outputs(Outputs::Last).observe(&mut first),
                )
            });
            let origin = match evaluated {
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
/// Warnings (a flag the template ignores, chat markers the vocabulary lacks) go to `err`.
///
/// # Errors
/// [`UsageError`] for an empty prompt, a bad sampling parameter, a run configuration the
/// model's reference refuses, `jinja` on a model without a chat template, or a prompt and
/// `--n-predict` that do not fit the model's context;
/// runtime errors (unreadable, unsupported or refused model, a malformed chat template, text
/// the vocabulary cannot spell, non-finite logits) otherwise.
pub fn run(args: &RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    if args.prompt.is_empty() {
        return Err(UsageError("--prompt must not be empty".into()).into());
    }
    if args.threads == Some(0) {
        return Err(UsageError("--threads must be positive".into()).into());
    }
    args.sampling.check()?;
    let choice = args.run_config.choice().map_err(UsageError)?;
    let path = args.model.display();
    let model = Model::load(&args.model).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    // A configuration the model's reference refuses is a usage error, with its reason.
    let run_config = choice.config_for(model.numerics(), args.threads.unwrap_or(0) as u32);
    let state = model
        .new_state_with(&run_config)
        .map_err(|e| UsageError(e.to_string()))?;
    let context = model.config().context_length;
    if args.n_predict >= context {
        return Err(UsageError(format!(
            "--n-predict {} leaves no room for a prompt: the model's context is {context} tokens",
            args.n_predict
        ))
        .into());
    }
    let tokenizer = GgufTokenizer::from_header(model.file(), &args.model)
        .map_err(|e| anyhow::anyhow!("{path}: tokenizer: {e}"))?;
    let info = ModelChatInfo::from_gguf(model.file());
    let formatted = format_prompt(
        args.prompt_template,
        &args.prompt,
        args.system_prompt.as_deref(),
        &info,
        tokenizer.add_bos_default(),
    )
    .map_err(|e| -> anyhow::Error {
        if e.is_usage() {
            UsageError(e.to_string()).into()
        } else {
            anyhow::anyhow!("{path}: {e}")
        }
    })?;
    if let Some(why) = &formatted.detected_from {
        writeln!(err, "template: {} (auto: {why})", formatted.template.name())?;
    }
    let warnings = template_warnings(&formatted, args.system_prompt.as_deref(), |marker| {
        tokenizer
            .encode(marker, false, true)
            .map_or(0, |ids| ids.len())
    });
    for w in warnings {
        writeln!(err, "warning: {w}")?;
    }
    // No token covers more text than the longest token text: refuse text that cannot fit
    // before tokenizing it (a chat template may render megabytes).
    let longest = tokenizer.longest_token_bytes();
    let at_least = formatted.text.len().div_ceil(longest);
    if at_least.saturating_add(args.n_predict) > context {
        return Err(UsageError(format!(
            "the formatted prompt is {} bytes, at least {at_least} tokens; with --n-predict {} \
             that exceeds the model's context of {context} tokens: shorten the prompt",
            formatted.text.len(),
            args.n_predict
        ))
        .into());
    }
    let prompt = tokenizer.encode(&formatted.text, formatted.add_bos, formatted.parse_special)?;
    if prompt.len().saturating_add(args.n_predict) > context {
        return Err(UsageError(format!(
            "the prompt is {} tokens and --n-predict asks for {} more: they exceed the model's \
             context of {context} tokens; lower --n-predict or shorten the prompt",
            prompt.len(),
            args.n_predict
        ))
        .into());
    }
    // What fails from here on is the model's doing (its sampling metadata, its vocabulary):
    // name the file, except for usage errors.
    let in_model = |e: anyhow::Error| match e.downcast::<UsageError>() {
        Ok(usage) => usage.into(),
        Err(e) => anyhow::anyhow!("{path}: {e}"),
    };
    let header = model.file().header();
    let sampling = args.sampling.resolve(header).map_err(in_model)?;
    for warning in &sampling.from_model.warnings {
        writeln!(err, "warning: {path}: {warning}")?;
    }
    let mut sampler = build_sampler(&sampling, header, &tokenizer).map_err(in_model)?;
    if sampling.params.temp > 0.0 {
        writeln!(err, "sampler seed: {}", sampler.seed())?;
    }
    // Every end-of-generation token stops, as in llama.cpp (llama_vocab_is_eog).
    let stops = tokenizer.eog_ids().to_vec();
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
    // The penalties and DRY see the prompt, as in llama-completion.
    for &t in &prompt {
        sampler.accept(t);
    }
    let v = model.config().n_vocab;
    let t0 = Instant::now();
    let effective = state.run_config();
    let (n_generated, prompt_secs) = (|| -> anyhow::Result<(usize, f64)> {
        let mut state = state;
        let logits = model.eval(&mut state, Eval::new(&prompt).outputs(Outputs::Last))?;
        let mut evaluated = prompt.clone();
        check_finite(&model, &run_config, &evaluated, &logits, v)?;
        let prompt_secs = t0.elapsed().as_secs_f64();
        let mut next = sampler.sample(&logits[logits.len() - v..]);
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
            check_finite(&model, &run_config, &evaluated, &logits, v)?;
            next = sampler.sample(&logits);
        }
        out.write_all(&pending)?;
        Ok((n, prompt_secs))
    })()?;
    writeln!(out)?;
    let gen_secs = t0.elapsed().as_secs_f64() - prompt_secs;
    writeln!(
        err,
        "prompt: {} tokens in {:.2} s ({:.1} tok/s); generated: {} tokens in {:.2} s ({:.1} tok/s); {} as {} runs it: {effective}",
        prompt.len(),
        prompt_secs,
        prompt.len() as f64 / prompt_secs.max(1e-9),
        n_generated,
        gen_secs,
        n_generated as f64 / gen_secs.max(1e-9),
        model.config().arch.name(),
        model.numerics().reference_name(),
    )?;
    Ok(())
}
