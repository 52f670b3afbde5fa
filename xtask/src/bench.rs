//! `xtask bench`: our engine and a C++ reference on the same file, same threads, same run,
//! measured the way llama.cpp's `llama-bench` measures (`tools/llama-bench/llama-bench.cpp`):
//!
//! - **pp N**: from an empty cache, N prompt tokens decoded in one batch, logits for the last
//!   position only;
//! - **tg M**: from an empty cache, M tokens decoded one at a time, each with its logits;
//! - a warm-up run of each kind first, then `--repetitions` timed runs; throughput is the mean
//!   of the runs' tokens per second, ± their sample standard deviation.
//!
//! The reference is timed inside its own process, so no pipe transfer is counted. With
//! `--llama-bench PATH` the user's own `llama-bench` runs on the same file with the same sizes
//! and threads, and its figures are reported beside ours. Before timing, the host's load and
//! free memory are recorded (and a busy host warned about): a benchmark on a busy machine
//! measures the machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use bitnet_cli::run_config::RunConfigArgs;
use bitnet_cpp::{BackendChoice, EffectiveConfig, RunConfig, Session, SessionOptions};
use bitnet_inference::{Eval, Model, Outputs};
use bitnet_tokenizers::Tokenizer;
use serde::Serialize;

use crate::UsageError;

/// Arguments of `xtask bench`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Method (llama-bench's): pp = N prompt tokens in one batch from an empty cache, \
last position's logits only; tg = M tokens one at a time from an empty cache; one warm-up run \
of each, then --repetitions timed runs; tokens/s are the mean ± sample standard deviation of the \
runs. The C++ reference is timed inside its own process. Numbers from a busy host are noise: \
the report records the load average and free memory and warns when the host is not quiet."
)]
pub struct Args {
    /// The GGUF model.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt tokens of a pp run (llama-bench `-p`).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens of a tg run (llama-bench `-n`).
    #[arg(long, default_value_t = 32)]
    pub gen_tokens: usize,
    /// Timed runs of each kind (llama-bench `-r`).
    #[arg(long, default_value_t = 5)]
    pub repetitions: usize,
    /// Threads for both engines (default: all cores; llama-bench `-t`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Which C++ reference: llama, bitnet or auto (bitnet for bitnet-b1.58 / I2_S).
    #[arg(long, default_value = "auto")]
    pub cpp_backend: BackendChoice,
    /// Also run this `llama-bench` binary on the same file, sizes, repetitions and threads and
    /// report its figures beside ours.
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Which configuration both engines run: `default` is the reference's defaults (as its
    /// users run it), `exact` the parity configuration (the same as `--exact-reference`).
    /// Without it, the flags below decide, each defaulting to the reference's default.
    #[arg(
        long,
        value_enum,
        conflicts_with_all = ["cache_type_k", "cache_type_v", "flash_attn", "exact_reference"]
    )]
    pub config: Option<BenchConfig>,
    /// KV cache types, flash attention and micro-batch size, for both engines (default: the
    /// reference's defaults).
    #[command(flatten)]
    pub run_config: RunConfigArgs,
}

/// The two configurations a benchmark is usually run in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchConfig {
    /// The reference's defaults: F16 K and V caches, flash attention as the reference's `auto`
    /// sets it.
    Default,
    /// The parity configuration (`--exact-reference`): F32 caches where the reference allows
    /// them, flash attention off.
    Exact,
}

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A short table.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// The mean and sample standard deviation of a set of runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for a single run).
    pub sd: f64,
}

impl Stat {
    /// Tokens per second of each run (`n` tokens in each of `seconds`), summarised as
    /// llama-bench summarises them (`avg_ts`, `stddev_ts`).
    pub fn tokens_per_second(n: usize, seconds: &[f64]) -> Stat {
        let ts: Vec<f64> = seconds.iter().map(|&s| n as f64 / s.max(1e-12)).collect();
        Stat::of(&ts)
    }

    /// Mean and sample standard deviation of `values`.
    pub fn of(values: &[f64]) -> Stat {
        let n = values.len() as f64;
        if values.is_empty() {
            return Stat { mean: 0.0, sd: 0.0 };
        }
        let mean = values.iter().sum::<f64>() / n;
        let sd = if values.len() < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Stat { mean, sd }
    }
}

/// One engine's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Prompt tokens per second (mean over the runs).
    pub pp_tps: f64,
    /// Its standard deviation.
    pub pp_sd: f64,
    /// Generated tokens per second (mean over the runs).
    pub tg_tps: f64,
    /// Its standard deviation.
    pub tg_sd: f64,
    /// Peak resident memory of the process that ran the engine, KiB (Linux).
    pub peak_rss_kib: Option<u64>,
    /// What the engine's kernels use on this CPU: our dispatch, or the reference's
    /// `llama_print_system_info()`.
    pub cpu_features: String,
}

impl Throughput {
    fn new(pp: Stat, tg: Stat, peak_rss_kib: Option<u64>, cpu_features: String) -> Self {
        Throughput {
            pp_tps: pp.mean,
            pp_sd: pp.sd,
            tg_tps: tg.mean,
            tg_sd: tg.sd,
            peak_rss_kib,
            cpu_features,
        }
    }
}

/// rust / reference.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Prompt throughput ratio.
    pub pp_tps: f64,
    /// Generation throughput ratio.
    pub tg_tps: f64,
}

/// What the host looked like before timing.
#[derive(Debug, Clone, Serialize)]
pub struct HostCheck {
    /// One-minute load average (`/proc/loadavg`).
    pub load_1m: Option<f64>,
    /// Logical CPUs.
    pub cpus: usize,
    /// Available memory, KiB (`/proc/meminfo` MemAvailable).
    pub mem_available_kib: Option<u64>,
    /// The model file's size, KiB.
    pub model_kib: u64,
    /// Whether nothing below was found.
    pub quiet: bool,
    /// What makes the host not quiet.
    pub warnings: Vec<String>,
}

/// The user's own llama-bench on the same file.
#[derive(Debug, Clone, Serialize)]
pub struct LlamaBenchRun {
    /// The binary.
    pub binary: String,
    /// Its pp and tg figures (no RSS: llama-bench does not report it).
    pub pp_tps: f64,
    /// Standard deviation of pp.
    pub pp_sd: f64,
    /// Generated tokens per second.
    pub tg_tps: f64,
    /// Standard deviation of tg.
    pub tg_sd: f64,
    /// Our engine / this llama-bench.
    pub ratio: Ratio,
    /// llama-bench's own description of its build and configuration (`build_commit`,
    /// `cpu_info`, `backends`, `type_k`, `type_v`, `flash_attn`, `n_ubatch`).
    pub build: serde_json::Value,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Model path.
    pub model: String,
    /// C++ backend used.
    pub cpp_backend: String,
    /// The reference library and build (`llama_print_system_info` is in `cpp.cpu_features`).
    pub cpp_library: String,
    /// Threads, both engines.
    pub threads: usize,
    /// The run configuration both engines ran with (as the reference reports it; the
    /// user's llama-bench is given the same).
    pub configuration: EffectiveConfig,
    /// Prompt tokens of a pp run.
    pub prompt_tokens: usize,
    /// Tokens of a tg run.
    pub gen_tokens: usize,
    /// Timed runs of each kind.
    pub repetitions: usize,
    /// How the figures were measured.
    pub method: &'static str,
    /// The host before timing.
    pub host: HostCheck,
    /// Our engine.
    pub rust: Throughput,
    /// The reference.
    pub cpp: Throughput,
    /// rust / cpp.
    pub ratio: Ratio,
    /// The user's llama-bench, when `--llama-bench` was given.
    pub llama_bench: Option<LlamaBenchRun>,
}

const METHOD: &str =
    "llama-bench: pp = prompt in one batch from an empty cache, last logits only; \
tg = one token at a time from an empty cache; a warm-up run of each, then timed runs; \
mean ± sample sd of tokens/s";

/// Deterministic pseudo-random ids, as llama-bench feeds random ids: BOS first when the model
/// adds one, the rest avoiding the first 256 ids, where vocabularies keep their control and
/// byte tokens.
fn token_ids(n: usize, n_vocab: usize, bos: Option<u32>, seed: u64) -> Vec<u32> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match (i, bos) {
                (0, Some(b)) => b,
                _ => (256 + x % (n_vocab as u64 - 256)) as u32,
            }
        })
        .collect()
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The host's load and free memory, with warnings when it is not quiet enough to measure.
pub fn check_host(model: &Path) -> HostCheck {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_1m = read_proc("/proc/loadavg")
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
    let mem_available_kib = read_proc("/proc/meminfo").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
    });
    let model_kib = std::fs::metadata(model).map_or(0, |m| m.len() / 1024);
    let mut warnings = Vec::new();
    if let Some(load) = load_1m {
        // A quarter of a core busy on average already shows in tg figures.
        if load > 0.25 * cpus as f64 {
            warnings.push(format!(
                "load average {load:.2} on {cpus} CPUs: other work is running, figures will be low and noisy"
            ));
        }
    }
    if let Some(avail) = mem_available_kib {
        // Both engines map the model; with less than twice its size free, pages get evicted.
        if avail < 2 * model_kib {
            warnings.push(format!(
                "{} MiB of memory available for a {} MiB model run twice: expect paging",
                avail / 1024,
                model_kib / 1024
            ));
        }
    }
    HostCheck {
        load_1m,
        cpus,
        mem_available_kib,
        model_kib,
        quiet: warnings.is_empty(),
        warnings,
    }
}

/// Our engine's timed runs: the seconds of each pp run and of each tg run.
fn time_engine(
    model: &Model,
    run: &RunConfig,
    prompt: &[u32],
    gen: &[u32],
    repetitions: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let pp_once = || -> anyhow::Result<f64> {
        let mut state = model.new_state_with(run)?;
        let t = Instant::now();
        model.eval(&mut state, Eval::new(prompt).outputs(Outputs::Last))?;
        Ok(t.elapsed().as_secs_f64())
    };
    let tg_once = |tokens: &[u32]| -> anyhow::Result<f64> {
        let mut state = model.new_state_with(run)?;
        let t = Instant::now();
        for &token in tokens {
            model.forward(&mut state, &[token])?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    pp_once()?;
    let pp = (0..repetitions)
        .map(|_| pp_once())
        .collect::<anyhow::Result<_>>()?;
    tg_once(&gen[..1])?;
    let tg = (0..repetitions)
        .map(|_| tg_once(gen))
        .collect::<anyhow::Result<_>>()?;
    Ok((pp, tg))
}

/// Run the user's llama-bench with the same sizes, repetitions, threads and run
/// configuration; its pp and tg figures and its description of itself.
fn run_llama_bench(
    binary: &Path,
    args: &Args,
    run: &RunConfig,
    ours: &Throughput,
) -> anyhow::Result<LlamaBenchRun> {
    let output = Command::new(binary)
        .arg("-m")
        .arg(&args.model)
        .args(["-p", &args.prompt_tokens.to_string()])
        .args(["-n", &args.gen_tokens.to_string()])
        .args(["-r", &args.repetitions.to_string()])
        .args(["-t", &run.threads.to_string()])
        .args(["-ctk", run.cache_type_k.name()])
        .args(["-ctv", run.cache_type_v.name()])
        .args(["-fa", run.flash_attn.name()])
        .args(["-ub", &run.n_ubatch.to_string()])
        .args(["-o", "json"])
        .output()
        .with_context(|| format!("cannot run llama-bench {}", binary.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{} exited with {}: {}",
            binary.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    parse_llama_bench(binary, &output.stdout, ours)
}

/// Read llama-bench's `-o json` output: one object per test, `n_prompt`/`n_gen`, `avg_ts`,
/// `stddev_ts`.
fn parse_llama_bench(
    binary: &Path,
    stdout: &[u8],
    ours: &Throughput,
) -> anyhow::Result<LlamaBenchRun> {
    let tests: Vec<serde_json::Value> = serde_json::from_slice(stdout)
        .with_context(|| format!("{} did not print llama-bench JSON", binary.display()))?;
    let find = |prompt: bool| {
        tests.iter().find(|t| {
            let n = |k: &str| t.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            if prompt {
                n("n_prompt") > 0 && n("n_gen") == 0
            } else {
                n("n_gen") > 0 && n("n_prompt") == 0
            }
        })
    };
    let figures = |t: Option<&serde_json::Value>, what: &str| -> anyhow::Result<(f64, f64)> {
        let t = t.with_context(|| format!("llama-bench reported no {what} test"))?;
        let get = |k: &str| t.get(k).and_then(|v| v.as_f64());
        Ok((
            get("avg_ts").with_context(|| format!("{what}: no avg_ts"))?,
            get("stddev_ts").unwrap_or(0.0),
        ))
    };
    let pp_test = find(true);
    let (pp_tps, pp_sd) = figures(pp_test, "pp")?;
    let (tg_tps, tg_sd) = figures(find(false), "tg")?;
    let mut build = serde_json::Map::new();
    if let Some(t) = pp_test {
        for key in [
            "build_commit",
            "build_number",
            "cpu_info",
            "backends",
            "type_k",
            "type_v",
            "flash_attn",
            "n_batch",
            "n_ubatch",
            "n_threads",
        ] {
            if let Some(v) = t.get(key) {
                build.insert(key.to_string(), v.clone());
            }
        }
    }
    Ok(LlamaBenchRun {
        binary: binary.display().to_string(),
        pp_tps,
        pp_sd,
        tg_tps,
        tg_sd,
        ratio: Ratio {
            pp_tps: ours.pp_tps / pp_tps,
            tg_tps: ours.tg_tps / tg_tps,
        },
        build: serde_json::Value::Object(build),
    })
}

/// Run the benchmark.
///
/// # Errors
/// Usage errors for empty runs or bad counts; runtime errors from either engine or from
/// llama-bench.
pub fn run(args: &Args) -> anyhow::Result<Report> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 {
        return Err(UsageError("--prompt-tokens and --gen-tokens must be positive".into()).into());
    }
    if args.repetitions == 0 {
        return Err(UsageError("--repetitions must be positive".into()).into());
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err(UsageError("--threads must be positive".into()).into());
    }
    let mut run_config = args.run_config.clone();
    if args.config == Some(BenchConfig::Exact) {
        run_config.exact_reference = true;
    }
    let choice = run_config.choice().map_err(UsageError)?;
    let host = check_host(&args.model);
    for w in &host.warnings {
        eprintln!("bench: warning: {w}");
    }
    let model = Model::load(&args.model)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    // One run configuration for both engines, resolved as the model's reference resolves it.
    let run = choice.config_for(model.numerics(), threads as u32);
    let configuration = model
        .new_state_with(&run)
        .map_err(|e| UsageError(e.to_string()))?
        .run_config();
    let c = model.config();
    let needed = args.prompt_tokens.max(args.gen_tokens);
    if needed > c.context_length {
        return Err(UsageError(format!(
            "{needed} tokens exceed the model's context length {}",
            c.context_length
        ))
        .into());
    }
    if c.n_vocab <= 256 {
        return Err(UsageError("the vocabulary is too small to benchmark".into()).into());
    }
    let tokenizer = bitnet_tokenizers::GgufTokenizer::from_header(model.file(), &args.model)
        .with_context(|| format!("{}: tokenizer", args.model.display()))?;
    let bos = tokenizer
        .add_bos_default()
        .then(|| tokenizer.bos_id())
        .flatten();
    let prompt = token_ids(args.prompt_tokens, c.n_vocab, bos, 0x2545_f491_4f6c_dd1d);
    let gen = token_ids(args.gen_tokens, c.n_vocab, bos, 0x9e37_79b9_7f4a_7c15);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;

    eprintln!(
        "bench: our engine, pp{} and tg{}, {} runs each after a warm-up, {threads} threads ...",
        args.prompt_tokens, args.gen_tokens, args.repetitions
    );
    let (pp_s, tg_s) =
        pool.install(|| time_engine(&model, &run, &prompt, &gen, args.repetitions))?;
    let rust = Throughput::new(
        Stat::tokens_per_second(args.prompt_tokens, &pp_s),
        Stat::tokens_per_second(args.gen_tokens, &tg_s),
        bitnet_cpp::peak_rss_kib(None),
        bitnet_quant::simd_in_use().join(" "),
    );
    drop(model);

    eprintln!("bench: C++ reference, the same runs ...");
    let opts = SessionOptions {
        n_ctx: (needed + 16) as u32,
        run,
        ..SessionOptions::default()
    };
    let mut cpp = Session::open(&args.model, args.cpp_backend, &opts)?;
    // Both engines must run the same configuration, or the timings compare different work.
    let theirs = cpp.effective_config();
    if theirs != Some(configuration) {
        bail!(
            "configuration mismatch: the C++ reference runs {}, the engine {configuration}",
            theirs.map_or("an unreported configuration".to_string(), |c| c.to_string())
        );
    }
    let build = cpp.build_info()?;
    let as_i32 = |v: &[u32]| v.iter().map(|&t| t as i32).collect::<Vec<_>>();
    let (cpp_pp_s, cpp_tg_s) =
        cpp.bench(&as_i32(&prompt), &as_i32(&gen), args.repetitions as u32)?;
    let cppt = Throughput::new(
        Stat::tokens_per_second(args.prompt_tokens, &cpp_pp_s),
        Stat::tokens_per_second(args.gen_tokens, &cpp_tg_s),
        cpp.peak_rss_kib(),
        build.system_info.clone(),
    );
    let cpp_backend = cpp.backend().name().to_string();
    drop(cpp);

    let llama_bench = match &args.llama_bench {
        Some(binary) => {
            eprintln!("bench: {} ...", binary.display());
            Some(run_llama_bench(binary, args, &run, &rust)?)
        }
        None => None,
    };
    Ok(Report {
        model: args.model.display().to_string(),
        cpp_backend,
        cpp_library: build.library,
        threads,
        configuration,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        repetitions: args.repetitions,
        method: METHOD,
        host,
        ratio: Ratio {
            pp_tps: rust.pp_tps / cppt.pp_tps,
            tg_tps: rust.tg_tps / cppt.tg_tps,
        },
        rust,
        cpp: cppt,
        llama_bench,
    })
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".to_string(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

/// The text rendering.
pub fn render_text(r: &Report) -> String {
    let pp = format!("pp{} t/s", r.prompt_tokens);
    let tg = format!("tg{} t/s", r.gen_tokens);
    let row = |name: &str, t: &Throughput| {
        format!(
            "{name:<12} {:>16} {:>16} {:>10}\n",
            format!("{:.1} ± {:.1}", t.pp_tps, t.pp_sd),
            format!("{:.1} ± {:.1}", t.tg_tps, t.tg_sd),
            mib(t.peak_rss_kib)
        )
    };
    let mut s = format!(
        "model: {}\nreference: {} ({}), {} threads, {} runs each\nconfiguration: {}\nmethod: {}\n",
        r.model, r.cpp_backend, r.cpp_library, r.threads, r.repetitions, r.configuration, r.method
    );
    s += &match (r.host.load_1m, r.host.mem_available_kib) {
        (Some(l), Some(m)) => format!(
            "host: load {l:.2} on {} CPUs, {} MiB available{}\n\n",
            r.host.cpus,
            m / 1024,
            if r.host.quiet { "" } else { " — NOT QUIET" }
        ),
        _ => "host: load and memory unknown\n\n".to_string(),
    };
    s += &format!("{:<12} {pp:>16} {tg:>16} {:>10}\n", "", "peak RSS");
    s += &row("rust", &r.rust);
    s += &row("c++", &r.cpp);
    s += &format!(
        "{:<12} {:>16} {:>16}\n",
        "rust/c++",
        format!("{:.2}×", r.ratio.pp_tps),
        format!("{:.2}×", r.ratio.tg_tps)
    );
    if let Some(lb) = &r.llama_bench {
        s += &format!(
            "{:<12} {:>16} {:>16}\n{:<12} {:>16} {:>16}\n",
            "llama-bench",
            format!("{:.1} ± {:.1}", lb.pp_tps, lb.pp_sd),
            format!("{:.1} ± {:.1}", lb.tg_tps, lb.tg_sd),
            "rust/l-bench",
            format!("{:.2}×", lb.ratio.pp_tps),
            format!("{:.2}×", lb.ratio.tg_tps)
        );
    }
    s += &format!(
        "\ncpu (rust): {}\ncpu (c++):  {}\n",
        r.rust.cpu_features, r.cpp.cpu_features
    );
    if let Some(lb) = &r.llama_bench {
        s += &format!("llama-bench build: {}\n", lb.build);
    }
    for w in &r.host.warnings {
        s += &format!("warning: {w}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_llama_bench_s() {
        // Two runs of 100 tokens in 1 s and 0.5 s: 100 and 200 t/s.
        let s = Stat::tokens_per_second(100, &[1.0, 0.5]);
        assert_eq!(s.mean, 150.0);
        assert!((s.sd - 50f64 * 2f64.sqrt()).abs() < 1e-9);
        assert_eq!(Stat::of(&[3.0]).sd, 0.0);
    }

    #[test]
    fn ids_start_with_bos_when_the_model_adds_one_and_avoid_control_tokens() {
        let ids = token_ids(64, 1000, Some(1), 7);
        assert_eq!(ids[0], 1);
        assert!(ids[1..].iter().all(|&t| (256..1000).contains(&t)));
        assert!(token_ids(8, 1000, None, 7).iter().all(|&t| t >= 256));
    }

    fn ours() -> Throughput {
        Throughput::new(
            Stat {
                mean: 50.0,
                sd: 1.0,
            },
            Stat {
                mean: 20.0,
                sd: 0.5,
            },
            None,
            String::new(),
        )
    }

    #[test]
    fn llama_bench_json_is_read_and_compared() {
        let json = br#"[
          {"build_commit":"abc","cpu_info":"x","type_k":"f16","n_prompt":128,"n_gen":0,"avg_ts":100.0,"stddev_ts":2.0},
          {"build_commit":"abc","n_prompt":0,"n_gen":32,"avg_ts":40.0,"stddev_ts":1.0}
        ]"#;
        let r = parse_llama_bench(Path::new("llama-bench"), json, &ours()).unwrap();
        assert_eq!(
            (r.pp_tps, r.pp_sd, r.tg_tps, r.tg_sd),
            (100.0, 2.0, 40.0, 1.0)
        );
        assert_eq!((r.ratio.pp_tps, r.ratio.tg_tps), (0.5, 0.5));
        assert_eq!(r.build["type_k"], "f16");
        let err = parse_llama_bench(Path::new("lb"), b"[]", &ours()).unwrap_err();
        assert!(err.to_string().contains("no pp test"), "{err}");
        assert!(parse_llama_bench(Path::new("lb"), b"not json", &ours()).is_err());
    }
}
