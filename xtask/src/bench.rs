//! `xtask bench`: our engine and a C++ reference on the same file, same threads, same run.
//! Prompt processing (pp) and token generation (tg) throughput, and their ratios.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bitnet_cli::run_config::RunConfigArgs;
use bitnet_cpp::{BackendChoice, EffectiveConfig, Session, SessionOptions};
use bitnet_inference::Model;
use serde::Serialize;

use crate::UsageError;

/// Arguments of `xtask bench`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Both engines run greedily on the same pseudo-random prompt ids; the C++ side is timed inside its process (no pipe transfer counted)."
)]
pub struct Args {
    /// The GGUF model.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated after the prompt.
    #[arg(long, default_value_t = 32)]
    pub gen_tokens: usize,
    /// Threads for both engines (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Which C++ reference: llama, bitnet or auto (bitnet for bitnet-b1.58 / I2_S).
    #[arg(long, default_value = "auto")]
    pub cpp_backend: BackendChoice,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// KV cache types, flash attention and micro-batch size, for both engines (default: the
    /// reference's defaults).
    #[command(flatten)]
    pub run_config: RunConfigArgs,
}

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A short table.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Throughput of one engine.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// Prompt tokens per second.
    pub pp_tps: f64,
    /// Generated tokens per second.
    pub tg_tps: f64,
}

/// The whole result.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Model path.
    pub model: String,
    /// C++ backend used.
    pub cpp_backend: String,
    /// Threads.
    pub threads: usize,
    /// The run configuration both engines ran with (as the reference reports it).
    pub configuration: EffectiveConfig,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub gen_tokens: usize,
    /// Our engine.
    pub rust: Throughput,
    /// The reference.
    pub cpp: Throughput,
    /// rust / cpp.
    pub ratio: Throughput,
    /// Peak resident memory of this process (our engine; the reference runs elsewhere), KiB.
    pub rust_peak_rss_kib: Option<u64>,
    /// SIMD features the kernels can use on this CPU.
    pub cpu_features: Vec<&'static str>,
}

fn cpu_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if is_x86_feature_detected!("f16c") {
            f.push("f16c");
        }
        if is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
    }
    f
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Pseudo-random prompt ids (deterministic), avoiding the first 256 ids where vocabularies
/// keep their control and byte tokens.
fn prompt_ids(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (256 + x % (n_vocab as u64 - 256)) as u32
        })
        .collect()
}

/// Run the benchmark.
///
/// # Errors
/// Usage errors for empty runs; runtime errors from either engine.
pub fn run(args: &Args) -> anyhow::Result<Report> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 {
        return Err(UsageError("--prompt-tokens and --gen-tokens must be positive".into()).into());
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err(UsageError("--threads must be positive".into()).into());
    }
    let choice = args.run_config.choice().map_err(UsageError)?;
    let model = Model::load(&args.model)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    let run = choice.config_for(model.numerics(), threads as u32);
    let configuration = model
        .new_state_with(&run)
        .map_err(|e| UsageError(e.to_string()))?
        .run_config();
    let n_vocab = model.config().n_vocab;
    if n_vocab <= 256 {
        return Err(UsageError("the vocabulary is too small to benchmark".into()).into());
    }
    let prompt = prompt_ids(args.prompt_tokens, n_vocab);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;

    eprintln!(
        "bench: our engine, {} prompt + {} generated tokens, {threads} threads ...",
        args.prompt_tokens, args.gen_tokens
    );
    let (pp_s, tg_s) = pool.install(|| -> anyhow::Result<(f64, f64)> {
        // Warm-up: the first pass faults the memory-mapped weights in; not what we measure.
        model.forward(
            &mut model.new_state_with(&run)?,
            &prompt[..prompt.len().min(8)],
        )?;
        let mut state = model.new_state_with(&run)?;
        let t0 = Instant::now();
        let logits = model.forward(&mut state, &prompt)?;
        let pp = t0.elapsed().as_secs_f64();
        let mut next = bitnet_inference::ops::argmax(&logits[logits.len() - n_vocab..]);
        let t1 = Instant::now();
        for _ in 0..args.gen_tokens {
            let l = model.forward(&mut state, &[next])?;
            next = bitnet_inference::ops::argmax(&l);
        }
        Ok((pp, t1.elapsed().as_secs_f64()))
    })?;
    let rust_peak_rss_kib = peak_rss_kib();
    drop(model);

    eprintln!("bench: C++ reference ...");
    let opts = SessionOptions {
        n_ctx: (args.prompt_tokens + args.gen_tokens + 16) as u32,
        run,
        ..SessionOptions::default()
    };
    let mut cpp = Session::open(&args.model, args.cpp_backend, &opts)?;
    // Both engines must run the same configuration, or the timings compare different work.
    let theirs = cpp.effective_config();
    if theirs != Some(configuration) {
        anyhow::bail!(
            "configuration mismatch: the C++ reference runs {}, the engine {configuration}",
            theirs.map_or("an unreported configuration".to_string(), |c| c.to_string())
        );
    }
    let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
    cpp.eval(&ids[..ids.len().min(8)])?; // the same warm-up
    let (cpp_pp_s, cpp_tg_s) = cpp.bench(&ids, args.gen_tokens as u32)?;

    let tps = |n: usize, s: f64| n as f64 / s;
    let rust = Throughput {
        pp_tps: tps(args.prompt_tokens, pp_s),
        tg_tps: tps(args.gen_tokens, tg_s),
    };
    let cppt = Throughput {
        pp_tps: tps(args.prompt_tokens, cpp_pp_s),
        tg_tps: tps(args.gen_tokens, cpp_tg_s),
    };
    Ok(Report {
        model: args.model.display().to_string(),
        cpp_backend: cpp.backend().name().to_string(),
        threads,
        configuration,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        ratio: Throughput {
            pp_tps: rust.pp_tps / cppt.pp_tps,
            tg_tps: rust.tg_tps / cppt.tg_tps,
        },
        rust,
        cpp: cppt,
        rust_peak_rss_kib,
        cpu_features: cpu_features(),
    })
}

/// The text rendering.
pub fn render_text(r: &Report) -> String {
    format!(
        "model: {}\nthreads: {}, prompt {} tokens, generate {} tokens, reference: {}\nconfiguration: {}\n\n\
         {:<10} {:>12} {:>12}\n{:<10} {:>12.1} {:>12.2}\n{:<10} {:>12.1} {:>12.2}\n{:<10} {:>11.2}× {:>11.2}×\n",
        r.model,
        r.threads,
        r.prompt_tokens,
        r.gen_tokens,
        r.cpp_backend,
        r.configuration,
        "",
        "pp tok/s",
        "tg tok/s",
        "rust",
        r.rust.pp_tps,
        r.rust.tg_tps,
        "c++",
        r.cpp.pp_tps,
        r.cpp.tg_tps,
        "rust/c++",
        r.ratio.pp_tps,
        r.ratio.tg_tps
    )
}
