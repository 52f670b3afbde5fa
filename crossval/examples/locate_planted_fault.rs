//! Plants a bug in the engine and runs `crossval-per-token --locate` on it against the real
//! C++ reference, printing the command's own report: how `docs/howto/locate-divergence.md`
//! was produced.
//!
//! ```sh
//! cargo run -p bitnet-crossval --example locate_planted_fault -- [eps|silu|rope|mask] [all] [json]
//! ```
//!
//! The faults (bitnet-inference's test-only `fault-injection` feature, on for this example
//! through the crate's dev-dependencies; never in a binary): `eps` adds 0.05 to layer 2's
//! `ffn_norm` epsilon of a 4-layer llama; `silu` applies SiLU instead of relu² in a
//! bitnet-b1.58 model (bitnet.cpp reference); `rope` triples the RoPE base; `mask` widens the
//! causal mask by one position. The tiny models are generated in a temporary directory.

use bitnet_crossval::locate::{LocateMode, LocateOptions, LocateTolerance};
use bitnet_crossval::runner::{run_per_token, OutputFormat, PerTokenConfig};
use bitnet_gguf::GgmlType;
use bitnet_inference::fault::{arm, Fault};
use bitnet_minimodel::{Arch, Spec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    let (fault, spec) = if has("silu") {
        (
            Fault::SiluInsteadOfRelu2,
            Spec::new(Arch::BitnetB158, GgmlType::I2_S),
        )
    } else if has("rope") {
        (
            Fault::RopeBase { factor: 3.0 },
            Spec::new(Arch::Llama, GgmlType::F32),
        )
    } else if has("mask") {
        (
            Fault::CausalMaskOffByOne,
            Spec::new(Arch::Llama, GgmlType::F32),
        )
    } else {
        (
            Fault::FfnNormEpsilon {
                layer: 2,
                delta: 0.05,
            },
            Spec {
                layers: Some(4),
                ..Spec::new(Arch::Llama, GgmlType::F32)
            },
        )
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let model =
        bitnet_minimodel::write_tiny(dir.path(), &spec, &bitnet_fixtures::vocab("llama-bpe"))
            .expect("the tiny model");
    arm(&model, fault);
    eprintln!("planted: {fault:?} in {}", model.display());

    let mut cfg = PerTokenConfig::new(&model, "The quick brown fox jumps over the lazy dog");
    cfg.locate = Some(LocateOptions {
        mode: if has("all") {
            LocateMode::All
        } else {
            LocateMode::First
        },
        tolerance: LocateTolerance::default(),
    });
    if has("json") {
        cfg.format = OutputFormat::Json;
    }
    let out = run_per_token(&cfg, &mut |m| eprintln!("crossval: {m}"));
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    std::process::exit(out.exit_code.into());
}
