//! Tiny spec-correct GGUF models with random weights, on top of a real vocabulary.
//!
//! Every test of the engine and of cross-validation runs on real files; this crate makes them.
//! A model is described by a [`Spec`] (architecture, weight type, shape, seed) and built with
//! [`build`] into a [`GgufWriter`], copying every `tokenizer.*` key from a vocabulary GGUF.
//! `xtask gen-mini-gguf` is the command-line face of this crate.
//!
//! Determinism: each tensor's values come from its own generator seeded by the seed and the
//! tensor's name, so the same spec always gives the same bytes, and two models that differ
//! only in weight type hold the same underlying weights.
//!
//! Scale: linear weights have standard deviation about `1/sqrt(fan_in)` and norms are near 1,
//! which keeps activations O(1) through the layers and the logits finite and unsaturated.
//! The BitNet architectures get ternary weights (`{-1, 0, +1}` times a per-tensor power-of-two
//! scale, exact in f16), as the real models have, so a ternary encoding loses nothing.
#![deny(missing_docs)]

pub mod crafted;

use std::path::{Path, PathBuf};

use bitnet_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, WriteError};

/// The model architecture to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// llama.cpp's `llama`: SiLU-gated FFN, NORM RoPE, separate output head.
    Llama,
    /// Upstream llama.cpp's `bitnet`: sub-norms, NEOX RoPE, per-weight scales, tied output.
    Bitnet,
    /// Microsoft's `bitnet-b1.58` (BitNet b1.58 2B-4T graph): relu², tied output, no scales.
    BitnetB158,
}

impl Arch {
    /// The `general.architecture` string.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Bitnet => "bitnet",
            Arch::BitnetB158 => "bitnet-b1.58",
        }
    }
}

/// Model-shape presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// BitNet b1.58 2B-4T's shape: hidden 2560, FFN 6912, 30 layers, 20 heads / 5 KV heads.
    Bitnet2b,
}

/// Errors building a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenError {
    /// Dimensions that cannot form a model (a usage error).
    #[error("{0}")]
    BadShape(String),
    /// The weight type has no encoder in bitnet-quant.
    #[error("--qtype {0} has no encoder yet; available: {list}", list = encodable_list())]
    NoEncoder(GgmlType),
    /// The vocabulary file could not be read.
    #[error("cannot use {path} as a vocabulary: {source}")]
    Vocab {
        /// The file.
        path: PathBuf,
        /// Why.
        source: GgufError,
    },
    /// The vocabulary file has no tokens.
    #[error("{0} has no tokenizer.ggml.tokens: pass a vocabulary GGUF (e.g. ggml-vocab-llama-spm.gguf from `cargo run -p xtask -- fixtures`)")]
    NoTokens(PathBuf),
    /// Encoding a tensor failed.
    #[error("encoding {tensor}: {source}")]
    Encode {
        /// The tensor.
        tensor: String,
        /// Why.
        source: bitnet_quant::QuantError,
    },
    /// Assembling or writing the file failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl GenError {
    /// True when the error is in what was asked for (exit code 2), not in the environment.
    pub fn is_usage(&self) -> bool {
        matches!(self, GenError::BadShape(_) | GenError::NoEncoder(_))
    }
}

fn encodable_list() -> String {
    bitnet_quant::ENCODABLE
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to generate. `None` fields take the preset's value, or the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Architecture.
    pub arch: Arch,
    /// Type of the linear (matrix) weights. Norms are always f32; with a quantized type the
    /// token embedding is f16 unless `embd_type` says otherwise.
    pub qtype: GgmlType,
    /// Type of the token embedding (which is also the output head of the tied
    /// architectures) [default: f16 with a quantized `qtype`, else `qtype`].
    pub embd_type: Option<GgmlType>,
    /// A preset shape (explicit fields still override it).
    pub preset: Option<Preset>,
    /// Layers [default: 2].
    pub layers: Option<u64>,
    /// Hidden size [default: 64, or 256 when the blocks of the qtype or the embedding type
    /// are larger than 64].
    pub dim: Option<u64>,
    /// Attention heads [default: 4].
    pub heads: Option<u64>,
    /// Key/value heads [default: 2].
    pub kv_heads: Option<u64>,
    /// Feed-forward size [default: 2 × dim].
    pub ffn: Option<u64>,
    /// Context length [default: 512].
    pub ctx: Option<u64>,
    /// RoPE base [default: 10000; 500000 for the bitnet-2b preset].
    pub rope_base: Option<f32>,
    /// Seed of the random weights.
    pub seed: u64,
    /// A `tokenizer.chat_template` to write instead of the vocabulary's (for tests of the
    /// template renderer; `Some("")` writes an empty one).
    pub chat_template: Option<String>,
}

impl Spec {
    /// The default small model of an architecture and weight type.
    pub fn new(arch: Arch, qtype: GgmlType) -> Spec {
        Spec {
            arch,
            qtype,
            embd_type: None,
            preset: None,
            layers: None,
            dim: None,
            heads: None,
            kv_heads: None,
            ffn: None,
            ctx: None,
            rope_base: None,
            seed: 42,
            chat_template: None,
        }
    }
    /// Apply the preset and the defaults, then check the shape is one the model can have.
    ///
    /// # Errors
    /// [`GenError::BadShape`] for inconsistent dimensions (heads not dividing dim, rows that the
    /// qtype's blocks cannot tile).
    pub fn shape(&self) -> Result<Shape, GenError> {
        let wide_blocks =
            block_alignment(self.qtype).max(block_alignment(self.embedding_type())) > 64;
        let base = match self.preset {
            Some(Preset::Bitnet2b) => Shape {
                layers: 30,
                dim: 2560,
                heads: 20,
                kv_heads: 5,
                ffn: 6912,
                ctx: 4096,
                rope_base: 500_000.0,
            },
            None => {
                let dim = self.dim.unwrap_or(if wide_blocks { 256 } else { 64 });
                Shape {
                    layers: 2,
                    dim,
                    heads: 4,
                    kv_heads: 2,
                    ffn: 2 * dim,
                    ctx: 512,
                    rope_base: 10_000.0,
                }
            }
        };
        let s = Shape {
            layers: self.layers.unwrap_or(base.layers),
            dim: self.dim.unwrap_or(base.dim),
            heads: self.heads.unwrap_or(base.heads),
            kv_heads: self.kv_heads.unwrap_or(base.kv_heads),
            ffn: self.ffn.unwrap_or(base.ffn),
            ctx: self.ctx.unwrap_or(base.ctx),
            rope_base: self.rope_base.unwrap_or(base.rope_base),
        };
        let usage = GenError::BadShape;
        if s.layers == 0
            || s.dim == 0
            || s.heads == 0
            || s.kv_heads == 0
            || s.ffn == 0
            || s.ctx == 0
        {
            return Err(usage(
                "--layers, --dim, --heads, --kv-heads, --ffn and --ctx must be positive".into(),
            ));
        }
        if !s.dim.is_multiple_of(s.heads) {
            return Err(usage(format!(
                "--dim {} is not divisible by --heads {}",
                s.dim, s.heads
            )));
        }
        if !s.heads.is_multiple_of(s.kv_heads) {
            return Err(usage(format!(
                "--heads {} is not divisible by --kv-heads {}",
                s.heads, s.kv_heads
            )));
        }
        if !(s.dim / s.heads).is_multiple_of(2) {
            return Err(usage(format!(
                "head size {} must be even for RoPE",
                s.dim / s.heads
            )));
        }
        let align = block_alignment(self.qtype);
        for (what, n) in [("--dim", s.dim), ("--ffn", s.ffn)] {
            if n % align != 0 {
                return Err(usage(format!(
                    "{what} {n} is not a multiple of {align}, the row granularity of {}",
                    self.qtype
                )));
            }
        }
        let embd = self.embedding_type();
        if !s.dim.is_multiple_of(block_alignment(embd)) {
            return Err(usage(format!(
                "--dim {} is not a multiple of {}, the row granularity of the embedding type {embd}",
                s.dim,
                block_alignment(embd)
            )));
        }
        if !(s.rope_base.is_finite() && s.rope_base > 0.0) {
            return Err(usage(format!(
                "--rope-base {} must be a positive number",
                s.rope_base
            )));
        }
        Ok(s)
    }

    /// The token embedding's type: `embd_type`, or f16 with a quantized `qtype`, else `qtype`.
    pub fn embedding_type(&self) -> GgmlType {
        self.embd_type.unwrap_or(if self.qtype.is_quantized() {
            GgmlType::F16
        } else {
            self.qtype
        })
    }
}

/// The resolved shape of a generated model.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Layers.
    pub layers: u64,
    /// Hidden size.
    pub dim: u64,
    /// Attention heads.
    pub heads: u64,
    /// Key/value heads.
    pub kv_heads: u64,
    /// Feed-forward size.
    pub ffn: u64,
    /// Context length.
    pub ctx: u64,
    /// RoPE base.
    pub rope_base: f32,
}

/// Rows of a `ty` matrix must be a multiple of this many elements.
fn block_alignment(ty: GgmlType) -> u64 {
    if ty == GgmlType::I2_S {
        128
    } else {
        ty.block_size()
    }
}

/// SplitMix64: tiny, fast, and good enough for test weights; no dependency needed.
struct Rng(u64);

impl Rng {
    fn for_tensor(seed: u64, name: &str) -> Rng {
        // FNV-1a of the name, mixed with the seed.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// What a tensor holds, which decides how its values are drawn.
#[derive(Clone, Copy)]
enum Kind {
    Embedding,
    Norm,
    /// A matrix with this many inputs per output.
    Linear {
        fan_in: u64,
        ternary: bool,
    },
    /// A scalar scale applied to a matmul's output (upstream `bitnet`).
    Scale,
}

fn values(seed: u64, name: &str, n: usize, kind: Kind) -> Vec<f32> {
    let mut rng = Rng::for_tensor(seed, name);
    match kind {
        // Uniform on [-1, 1): standard deviation 0.58, like a trained embedding's scale.
        Kind::Embedding => (0..n).map(|_| rng.symmetric()).collect(),
        Kind::Norm => (0..n).map(|_| 1.0 + 0.1 * rng.symmetric()).collect(),
        Kind::Scale => (0..n).map(|_| 1.0 + 0.25 * rng.symmetric()).collect(),
        Kind::Linear {
            fan_in,
            ternary: false,
        } => {
            // sqrt(3) turns U(-1, 1) into unit variance; divide by sqrt(fan_in).
            let a = (3.0 / fan_in as f32).sqrt();
            (0..n).map(|_| a * rng.symmetric()).collect()
        }
        Kind::Linear {
            fan_in,
            ternary: true,
        } => {
            // Two thirds of ternary weights are non-zero; pick a power-of-two scale (exact in
            // f16) near 1/sqrt(2/3 · fan_in) for unit output variance.
            let target = 1.0 / (fan_in as f32 * 2.0 / 3.0).sqrt();
            let scale = 2f32.powi(target.log2().round() as i32);
            (0..n)
                .map(|_| match rng.next_u64() % 3 {
                    0 => -scale,
                    1 => 0.0,
                    _ => scale,
                })
                .collect()
        }
    }
}

/// Build the model in memory.
///
/// # Errors
/// An unreadable vocabulary, a vocabulary without tokens, a bad shape, or a qtype without
/// an encoder in `bitnet-quant`.
pub fn build(spec: &Spec, vocab_path: &Path) -> Result<GgufWriter, GenError> {
    let args = spec;
    let shape = args.shape()?;
    for ty in [args.qtype, args.embedding_type()] {
        if !bitnet_quant::ENCODABLE.contains(&ty) {
            return Err(GenError::NoEncoder(ty));
        }
    }
    let vocab = GgufFile::open(vocab_path).map_err(|source| GenError::Vocab {
        path: vocab_path.to_path_buf(),
        source,
    })?;
    let n_vocab = match vocab.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) if !a.is_empty() => a.len() as u64,
        _ => return Err(GenError::NoTokens(vocab_path.to_path_buf())),
    };

    let arch = args.arch;
    let a = arch.name();
    let head_dim = shape.dim / shape.heads;
    let kv_dim = head_dim * shape.kv_heads;
    let mut w = GgufWriter::new();
    let u32v = |x: u64| Value::U32(x as u32);
    w.add_metadata("general.architecture", Value::String(a.into()))?;
    w.add_metadata(
        "general.name",
        Value::String(format!(
            "bitnet-rs mini {a} {} seed {}",
            args.qtype, args.seed
        )),
    )?;
    w.add_metadata(format!("{a}.vocab_size"), u32v(n_vocab))?;
    w.add_metadata(format!("{a}.context_length"), u32v(shape.ctx))?;
    w.add_metadata(format!("{a}.embedding_length"), u32v(shape.dim))?;
    w.add_metadata(format!("{a}.block_count"), u32v(shape.layers))?;
    w.add_metadata(format!("{a}.feed_forward_length"), u32v(shape.ffn))?;
    w.add_metadata(format!("{a}.attention.head_count"), u32v(shape.heads))?;
    w.add_metadata(format!("{a}.attention.head_count_kv"), u32v(shape.kv_heads))?;
    w.add_metadata(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    )?;
    w.add_metadata(format!("{a}.rope.freq_base"), Value::F32(shape.rope_base))?;
    w.add_metadata(format!("{a}.rope.dimension_count"), u32v(head_dim))?;
    for (k, v) in vocab.metadata() {
        let replaced = k == "tokenizer.chat_template" && args.chat_template.is_some();
        if k.starts_with("tokenizer.") && !replaced {
            w.add_metadata(k.clone(), v.clone())?;
        }
    }
    if let Some(t) = &args.chat_template {
        w.add_metadata("tokenizer.chat_template", Value::String(t.clone()))?;
    }

    let seed = args.seed;
    let ternary = arch != Arch::Llama;
    let embd_type = args.embedding_type();
    let add = |w: &mut GgufWriter,
               name: String,
               dims: &[u64],
               ty: GgmlType,
               kind: Kind|
     -> Result<(), GenError> {
        let n = dims.iter().product::<u64>() as usize;
        let v = values(seed, &name, n, kind);
        let bytes =
            bitnet_quant::encode(ty, &v, dims[0] as usize).map_err(|source| GenError::Encode {
                tensor: name.clone(),
                source,
            })?;
        w.add_tensor(name, dims, ty, bytes)?;
        Ok(())
    };
    add(
        &mut w,
        "token_embd.weight".into(),
        &[shape.dim, n_vocab],
        embd_type,
        Kind::Embedding,
    )?;
    add(
        &mut w,
        "output_norm.weight".into(),
        &[shape.dim],
        GgmlType::F32,
        Kind::Norm,
    )?;
    if arch == Arch::Llama {
        let kind = Kind::Linear {
            fan_in: shape.dim,
            ternary: false,
        };
        add(
            &mut w,
            "output.weight".into(),
            &[shape.dim, n_vocab],
            args.qtype,
            kind,
        )?;
    }
    // A layer's matrix, plus upstream `bitnet`'s scalar scale tensor after it.
    let add_linear = |w: &mut GgufWriter, name: String, dims: [u64; 2]| -> Result<(), GenError> {
        let kind = Kind::Linear {
            fan_in: dims[0],
            ternary,
        };
        add(w, format!("{name}.weight"), &dims, args.qtype, kind)?;
        if arch == Arch::Bitnet {
            add(w, format!("{name}.scale"), &[1], GgmlType::F32, Kind::Scale)?;
        }
        Ok(())
    };
    for l in 0..shape.layers {
        let t = |s: &str| format!("blk.{l}.{s}");
        add(
            &mut w,
            t("attn_norm.weight"),
            &[shape.dim],
            GgmlType::F32,
            Kind::Norm,
        )?;
        let matrices = [
            ("attn_q", [shape.dim, shape.dim]),
            ("attn_k", [shape.dim, kv_dim]),
            ("attn_v", [shape.dim, kv_dim]),
            ("attn_output", [shape.dim, shape.dim]),
        ];
        for (name, dims) in matrices {
            add_linear(&mut w, t(name), dims)?;
        }
        if ternary {
            add(
                &mut w,
                t("attn_sub_norm.weight"),
                &[shape.dim],
                GgmlType::F32,
                Kind::Norm,
            )?;
        }
        add(
            &mut w,
            t("ffn_norm.weight"),
            &[shape.dim],
            GgmlType::F32,
            Kind::Norm,
        )?;
        let ffn = [
            ("ffn_gate", [shape.dim, shape.ffn]),
            ("ffn_up", [shape.dim, shape.ffn]),
            ("ffn_down", [shape.ffn, shape.dim]),
        ];
        for (name, dims) in ffn {
            add_linear(&mut w, t(name), dims)?;
        }
        if ternary {
            add(
                &mut w,
                t("ffn_sub_norm.weight"),
                &[shape.ffn],
                GgmlType::F32,
                Kind::Norm,
            )?;
        }
    }
    Ok(w)
}

/// Build the model and write it to `out` (through a temporary file, so an interrupted run
/// never leaves a half-written model behind).
///
/// # Errors
/// As [`build`], or an unwritable output path.
pub fn write(spec: &Spec, vocab_path: &Path, out: &Path) -> Result<(), GenError> {
    let w = build(spec, vocab_path)?;
    let tmp = out.with_extension("gguf.partial");
    w.write_file(&tmp)?;
    std::fs::rename(&tmp, out).map_err(|e| GenError::Write(WriteError::Io(e)))?;
    Ok(())
}

/// Write `spec`'s model into `dir` under a name made of its architecture, type, vocabulary and
/// seed (`llama-f32-ggml-vocab-llama-spm-42.gguf`), and return the path: the one-liner tests use.
///
/// # Errors
/// As [`write`].
pub fn write_tiny(dir: &Path, spec: &Spec, vocab_path: &Path) -> Result<PathBuf, GenError> {
    let vocab = vocab_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let embd = spec
        .embd_type
        .map(|t| format!("-embd-{}", t.name()))
        .unwrap_or_default();
    let out = dir.join(format!(
        "{}-{}{embd}-{vocab}-{}.gguf",
        spec.arch.name(),
        spec.qtype.name(),
        spec.seed
    ));
    write(spec, vocab_path, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ternary_values_are_exact_in_f16_and_have_three_levels() {
        let v = values(
            1,
            "x",
            3000,
            Kind::Linear {
                fan_in: 64,
                ternary: true,
            },
        );
        let scale = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0);
        assert_eq!(half::f16::from_f32(scale).to_f32(), scale);
        for x in &v {
            assert!(*x == 0.0 || x.abs() == scale);
        }
        let zeros = v.iter().filter(|x| **x == 0.0).count();
        assert!((800..1200).contains(&zeros), "{zeros} zeros of 3000");
    }

    #[test]
    fn linear_weights_have_unit_output_variance() {
        let fan_in = 256;
        let v = values(
            7,
            "w",
            256 * 64,
            Kind::Linear {
                fan_in,
                ternary: false,
            },
        );
        let var = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32 * fan_in as f32;
        assert!((0.9..1.1).contains(&var), "variance × fan_in = {var}");
    }

    #[test]
    fn each_tensor_has_its_own_stream() {
        let a = values(1, "a", 16, Kind::Embedding);
        let b = values(1, "b", 16, Kind::Embedding);
        let a2 = values(1, "a", 16, Kind::Embedding);
        let a3 = values(2, "a", 16, Kind::Embedding);
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_ne!(a, a3);
    }
}
