//! `xtask gen-mini-gguf`: the command-line face of `bitnet-minimodel`.

use std::path::PathBuf;

use bitnet_gguf::GgmlType;
use bitnet_minimodel::{Arch, GenError, Preset, Spec};

use crate::UsageError;

/// Architectures on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchArg {
    /// llama.cpp's `llama`: SiLU-gated FFN, NORM RoPE, separate output head.
    Llama,
    /// Upstream llama.cpp's `bitnet`: sub-norms, NEOX RoPE, per-weight scales, tied output.
    Bitnet,
    /// Microsoft's `bitnet-b1.58` (BitNet b1.58 2B-4T graph): relu², tied output, no scales.
    #[value(name = "bitnet-b1.58")]
    BitnetB158,
}

/// Presets on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresetArg {
    /// BitNet b1.58 2B-4T's shape: hidden 2560, FFN 6912, 30 layers, 20 heads / 5 KV heads,
    /// context 4096, RoPE base 500000 (for performance work).
    #[value(name = "bitnet-2b")]
    Bitnet2b,
}

/// Arguments of `xtask gen-mini-gguf`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Same arguments, same bytes. Example:\n  cargo run -p xtask -- gen-mini-gguf --arch llama \\\n    --vocab target/fixtures/ggml-vocab-llama-spm.gguf -o /tmp/tiny.gguf"
)]
pub struct Args {
    /// Architecture to generate.
    #[arg(long, value_enum, default_value = "llama")]
    pub arch: ArchArg,
    /// Vocabulary GGUF: every `tokenizer.*` key is copied from it.
    #[arg(long)]
    pub vocab: PathBuf,
    /// Type of the linear (matrix) weights. Norms are always f32; with a quantized type the
    /// token embedding is f16 unless --embd-type says otherwise.
    #[arg(long, default_value = "f32")]
    pub qtype: GgmlType,
    /// Type of the token embedding, which the tied architectures (bitnet, bitnet-b1.58) also
    /// use as the output head — e.g. q6_K, as llama-quantize writes it [default: f16 with a
    /// quantized --qtype, else the --qtype].
    #[arg(long)]
    pub embd_type: Option<GgmlType>,
    /// A preset shape (explicit shape flags still override it).
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Number of layers [default: 2].
    #[arg(long)]
    pub layers: Option<u64>,
    /// Hidden size [default: 64, or 256 when the blocks of the qtype or the embedding type
    /// are larger than 64].
    #[arg(long)]
    pub dim: Option<u64>,
    /// Attention heads [default: 4].
    #[arg(long)]
    pub heads: Option<u64>,
    /// Key/value heads (grouped-query attention) [default: 2].
    #[arg(long)]
    pub kv_heads: Option<u64>,
    /// Feed-forward size [default: 2 × dim].
    #[arg(long)]
    pub ffn: Option<u64>,
    /// Context length [default: 512].
    #[arg(long)]
    pub ctx: Option<u64>,
    /// RoPE frequency base [default: 10000, 500000 for the bitnet-2b preset].
    #[arg(long)]
    pub rope_base: Option<f32>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

impl Args {
    /// The model description these arguments ask for.
    pub fn spec(&self) -> Spec {
        Spec {
            arch: match self.arch {
                ArchArg::Llama => Arch::Llama,
                ArchArg::Bitnet => Arch::Bitnet,
                ArchArg::BitnetB158 => Arch::BitnetB158,
            },
            qtype: self.qtype,
            embd_type: self.embd_type,
            preset: self.preset.map(|PresetArg::Bitnet2b| Preset::Bitnet2b),
            layers: self.layers,
            dim: self.dim,
            heads: self.heads,
            kv_heads: self.kv_heads,
            ffn: self.ffn,
            ctx: self.ctx,
            rope_base: self.rope_base,
            seed: self.seed,
            chat_template: None,
        }
    }
}

/// Run `gen-mini-gguf`.
///
/// # Errors
/// [`UsageError`] for an impossible shape or a type without an encoder; otherwise the
/// generator's error (unreadable vocabulary, unwritable output).
pub fn run(args: &Args) -> anyhow::Result<()> {
    let spec = args.spec();
    bitnet_minimodel::write(&spec, &args.vocab, &args.output).map_err(|e: GenError| {
        if e.is_usage() {
            anyhow::Error::new(UsageError(e.to_string()))
        } else {
            anyhow::Error::new(e)
        }
    })?;
    let size = std::fs::metadata(&args.output)
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "wrote {} ({} {}, {} bytes)",
        args.output.display(),
        spec.arch.name(),
        spec.qtype,
        size
    );
    Ok(())
}
