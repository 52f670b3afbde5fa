//! Crafted model files: a generated tiny model with one field rewritten into a lie, and what
//! every tool must do with it.
//!
//! Each [`Variant`] is one rule a C++ reference enforces (an assert, an exception, a load
//! error), one value no model can have, or one non-finite number in the weights, applied to
//! a model [`crate::build`] made. The test suite writes each variant and runs `bitnet run`
//! and `xtask crossval-per-token` on it as subprocesses, under a time and memory limit, and
//! checks the outcome against [`Expect`]: nothing panics, aborts, hangs or runs out of
//! memory, and nothing exits 0 unless the reference agrees with the engine on it.

use std::path::Path;

use bitnet_gguf::{GgmlType, GgufWriter, Value};

use crate::{Arch, GenError, Spec};

mod edits;
mod run;

use edits::{edit_tokens, is_spm, poison, relabel, retype, set_key, shrink_vocabulary, Poison};
pub use run::{run_limited, Outcome};

/// A prompt every base vocabulary spells (the crab through byte tokens) and a vocabulary
/// without byte tokens cannot.
pub const PROMPT: &str = "Hello 🦀 world";

/// What the tools must do with a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Refused before either side runs: exit 3, and the message names this key or tensor.
    Refused(String),
    /// A valid model after all: both tools exit 0 (crossval: the reference agrees).
    Runs,
    /// The weights hold NaN or ±∞ and every logit is non-finite: `bitnet run` exits 3 saying
    /// so, and crossval reports non-finite logits on both sides (exit 3).
    NonFinite,
    /// The vocabulary cannot spell [`PROMPT`]: exit 3, naming the characters.
    Unrepresentable,
    /// Non-finite weights whose fate depends on the kernels' NaN handling (a quantized
    /// matmul turns a NaN activation into a code): whatever the reference computes, the
    /// engine computes too. `bitnet run` exits 0, or 3 for non-finite logits; crossval
    /// reports a match (exit 0) or non-finite logits on both sides alike (exit 3), never a
    /// divergence.
    SameAsReference,
}

type Edit = Box<dyn Fn(GgufWriter, &Context) -> Result<GgufWriter, GenError>>;

/// What an edit may need to know about the base model.
#[derive(Debug, Clone)]
pub struct Context {
    /// `general.architecture` of the base model.
    pub arch: Arch,
    /// Layers of the base model.
    pub layers: u64,
    /// Hidden size.
    pub dim: u64,
    /// Size of one attention head.
    pub head_dim: u64,
    /// Type of the layer matrices.
    pub qtype: GgmlType,
}

/// What the C++ reference itself does with a variant, run directly (measured: the
/// bitnet-cpp test `reference_rules` checks every entry against the real references).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// It refuses the file, or dies on it (an assertion, an uncaught exception, a hang): the
    /// rule is the reference's own.
    Fails,
    /// It runs the file: the rule is the engine's (a value no model can have, a feature the
    /// engine does not implement), or the variant is valid.
    Runs,
    /// It aborts with an SPM vocabulary (`std::out_of_range`) and silently drops the text
    /// with a BPE one.
    FailsOnSpm,
}

/// One crafted file: a name, what it breaks, the expected outcome, and the edit.
pub struct Variant {
    /// Short name (`block_count = 2^28`), unique within the list.
    pub name: String,
    /// The rule it breaks, and who enforces it.
    pub rule: &'static str,
    /// What the tools must do.
    pub expect: Expect,
    /// What the reference does with it when nothing stops it first.
    pub reference: Reference,
    edit: Edit,
}

impl std::fmt::Debug for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variant")
            .field("name", &self.name)
            .field("expect", &self.expect)
            .finish()
    }
}

impl Variant {
    /// Build the base model of `spec` on `vocab`, apply the edit, and write the file.
    ///
    /// # Errors
    /// As [`crate::build`], or a failed edit or write.
    pub fn write(&self, spec: &Spec, vocab: &Path, out: &Path) -> Result<(), GenError> {
        let shape = spec.shape()?;
        let ctx = Context {
            arch: spec.arch,
            layers: shape.layers,
            dim: shape.dim,
            head_dim: shape.dim / shape.heads,
            qtype: spec.qtype,
        };
        let w = (self.edit)(crate::build(spec, vocab)?, &ctx)?;
        w.write_file(out)?;
        Ok(())
    }
}

fn variant(
    name: impl Into<String>,
    rule: &'static str,
    expect: Expect,
    edit: impl Fn(GgufWriter, &Context) -> Result<GgufWriter, GenError> + 'static,
) -> Variant {
    Variant {
        name: name.into(),
        rule,
        expect,
        reference: Reference::Fails,
        edit: Box::new(edit),
    }
}

fn refused(subject: impl Into<String>) -> Expect {
    Expect::Refused(subject.into())
}

/// Every crafted variant of a model of architecture `arch` and matrix type `qtype`.
pub fn variants(arch: Arch, qtype: GgmlType) -> Vec<Variant> {
    let a = arch.name();
    let mut v = Vec::new();
    v.extend(layer_count_and_norm_variants(arch));
    v.extend(vocabulary_and_layout_variants());
    v.extend(non_finite_variants(qtype));
    v.extend(position_and_shape_variants(arch));
    v.extend(hyper_parameter_and_tensor_variants(arch));
    // A model labelled as another architecture: its keys are renamed to match the label,
    // so only the tensors tell the truth.
    let (other, first_foreign) = match arch {
        Arch::Llama => (Arch::Bitnet, "output.weight".to_string()),
        Arch::Bitnet => (Arch::Llama, "blk.0.attn_q.scale".to_string()),
        Arch::BitnetB158 => (Arch::Llama, "blk.0.attn_sub_norm.weight".to_string()),
    };
    v.push(variant(
        format!("{a} model labelled {}", other.name()),
        "the references refuse tensors the architecture does not load",
        refused(first_foreign),
        move |w, c| relabel(w, c.arch, other),
    ));
    if arch == Arch::Bitnet {
        v.push(variant(
            "scale tensor stored as f16",
            "ggml multiplies f32 activations only by f32 (\"unsupported types\" abort)",
            refused("blk.0.attn_q.scale"),
            retype("blk.0.attn_q.scale", GgmlType::F16),
        ));
    }
    for variant in &mut v {
        variant.reference = reference_outcome(arch, &variant.name);
    }
    v
}

/// The layer count, the norm epsilon and the norms' tensor types.
fn layer_count_and_norm_variants(arch: Arch) -> Vec<Variant> {
    use Expect::*;
    let a = arch.name();
    vec![
        variant(
            "block_count = 2^28",
            "nothing may be sized from an unchecked count; the references assert n_layer <= 512",
            refused(format!("{a}.block_count")),
            set_key("block_count", Value::U32(1 << 28)),
        ),
        variant(
            "block_count = 2^32-1",
            "the references assert n_layer <= 512",
            refused(format!("{a}.block_count")),
            set_key("block_count", Value::U32(u32::MAX)),
        ),
        variant(
            "block_count = 2^40 as u64",
            "the references assert n_layer <= 512",
            refused(format!("{a}.block_count")),
            set_key("block_count", Value::U64(1 << 40)),
        ),
        variant(
            "block_count = 513",
            "the references assert n_layer <= LLAMA_MAX_LAYERS (512)",
            refused(format!("{a}.block_count")),
            set_key("block_count", Value::U32(513)),
        ),
        variant(
            "block_count = 0",
            "the references assert n_layer > 0",
            refused(format!("{a}.block_count")),
            set_key("block_count", Value::U32(0)),
        ),
        variant(
            "block_count smaller than the layers present",
            "the references refuse unused tensors (\"wrong number of tensors\")",
            refused("blk.1."),
            |mut w, c| {
                w.set_metadata(format!("{}.block_count", c.arch.name()), Value::U32(1))?;
                Ok(w)
            },
        ),
        variant(
            "block_count larger than the layers present",
            "the references refuse a missing tensor",
            refused("blk.2.attn_norm.weight"),
            |mut w, c| {
                let n = c.layers as u32 + 1;
                w.set_metadata(format!("{}.block_count", c.arch.name()), Value::U32(n))?;
                Ok(w)
            },
        ),
        variant(
            "RMS epsilon NaN",
            "llama.cpp asserts eps >= 0, bitnet.cpp eps > 0 (both abort)",
            refused(format!("{a}.attention.layer_norm_rms_epsilon")),
            set_key("attention.layer_norm_rms_epsilon", Value::F32(f32::NAN)),
        ),
        variant(
            "RMS epsilon negative",
            "llama.cpp asserts eps >= 0, bitnet.cpp eps > 0 (both abort)",
            refused(format!("{a}.attention.layer_norm_rms_epsilon")),
            set_key("attention.layer_norm_rms_epsilon", Value::F32(-1e-5)),
        ),
        variant(
            "RMS epsilon zero",
            "llama.cpp allows eps = 0; bitnet.cpp asserts eps > 0",
            if arch == Arch::BitnetB158 {
                refused(format!("{a}.attention.layer_norm_rms_epsilon"))
            } else {
                Runs
            },
            set_key("attention.layer_norm_rms_epsilon", Value::F32(0.0)),
        ),
        variant(
            "RMS epsilon infinite",
            "no model can have it: every normalized activation would be 0",
            refused(format!("{a}.attention.layer_norm_rms_epsilon")),
            set_key(
                "attention.layer_norm_rms_epsilon",
                Value::F32(f32::INFINITY),
            ),
        ),
        variant(
            "norm weight stored as f16",
            "ggml multiplies f32 activations only by f32 (\"unsupported types\" abort)",
            refused("blk.0.attn_norm.weight"),
            retype("blk.0.attn_norm.weight", GgmlType::F16),
        ),
        variant(
            "output norm stored as q8_0",
            "ggml multiplies f32 activations only by f32 (\"unsupported types\" abort)",
            refused("output_norm.weight"),
            retype("output_norm.weight", GgmlType::Q8_0),
        ),
    ]
}

/// The vocabulary and the file's alignment.
fn vocabulary_and_layout_variants() -> Vec<Variant> {
    use Expect::*;
    vec![
        variant(
            "duplicate token text",
            "the references assert id_to_token.size() == token_to_id.size() (abort)",
            refused("tokenizer.ggml.tokens"),
            |w, _| edit_tokens(w, |t| t[300] = t[301].clone()),
        ),
        variant(
            "token text with an embedded NUL",
            "a token text ends at its first NUL in C++: a duplicate there (abort)",
            refused("tokenizer.ggml.tokens"),
            |w, _| edit_tokens(w, |t| t[300] = format!("{}\0tail", t[301])),
        ),
        variant(
            "vocabulary without byte tokens",
            "llama.cpp aborts (SPM: std::out_of_range) or drops the text silently (BPE)",
            Unrepresentable,
            |w, _| {
                let spm = is_spm(&w);
                edit_tokens(w, |t| {
                    for tok in t.iter_mut() {
                        let byte_token = if spm {
                            tok.len() == 6 && tok.starts_with("<0x") && tok.ends_with('>')
                        } else {
                            // GPT-2's characters for the bytes 0x80..=0xFF: U+00A1.. and U+0100..
                            tok.chars().count() == 1 && tok.chars().all(|c| c as u32 >= 0xA1)
                        };
                        if byte_token {
                            tok.insert_str(0, "renamed-");
                        }
                    }
                })
            },
        ),
        variant(
            "vocabulary of 3 tokens",
            "llama.cpp aborts (SPM: std::out_of_range) or drops the text silently (BPE)",
            Unrepresentable,
            |w, c| shrink_vocabulary(w, c, 3),
        ),
        variant(
            "general.alignment = 1",
            "llama.cpp maps tensors in place and needs ggml's 32-byte alignment",
            refused("general.alignment is 1"),
            |w, _| Ok(w.with_alignment(1)?),
        ),
        variant(
            "general.alignment = 64",
            "a valid alignment",
            Runs,
            |w, _| Ok(w.with_alignment(64)?),
        ),
    ]
}

/// Non-finite numbers in the weights.
fn non_finite_variants(qtype: GgmlType) -> Vec<Variant> {
    use Expect::*;
    // A NaN that reaches a quantized matmul's activations becomes an int8 code (ggml's AVX
    // quantizer packs it to -128, or drops it from the block maximum), so whether the logits
    // end up non-finite is the kernels' business: the engine must just do what they do.
    let through_kernels = if qtype.is_quantized() {
        SameAsReference
    } else {
        NonFinite
    };
    vec![
        variant(
            "NaN in every row of the token embedding",
            "non-finite weights give non-finite logits",
            NonFinite,
            poison("token_embd.weight", Poison::NaN, true),
        ),
        variant(
            "+inf in the output norm",
            "non-finite weights give non-finite logits",
            NonFinite,
            poison("output_norm.weight", Poison::Inf, false),
        ),
        variant(
            "NaN in a layer norm",
            "non-finite weights; the matmul kernels decide what becomes of them",
            through_kernels.clone(),
            poison("blk.0.attn_norm.weight", Poison::NaN, false),
        ),
        variant(
            format!("NaN in the first {qtype} scale (or value) of blk.0.attn_q"),
            "the reference's arithmetic decides what a NaN scale does (parity includes NaN)",
            through_kernels,
            poison("blk.0.attn_q.weight", Poison::NaN, false),
        ),
    ]
}

/// RoPE, the attention's shape and features the engine does not implement.
fn position_and_shape_variants(arch: Arch) -> Vec<Variant> {
    use Expect::*;
    let a = arch.name();
    vec![
        variant(
            "RoPE base 0",
            "every RoPE angle would be NaN",
            refused(format!("{a}.rope.freq_base")),
            set_key("rope.freq_base", Value::F32(0.0)),
        ),
        variant(
            "RoPE base NaN",
            "every RoPE angle would be NaN",
            refused(format!("{a}.rope.freq_base")),
            set_key("rope.freq_base", Value::F32(f32::NAN)),
        ),
        variant(
            "RoPE base negative",
            "every RoPE angle would be NaN",
            refused(format!("{a}.rope.freq_base")),
            set_key("rope.freq_base", Value::F32(-10_000.0)),
        ),
        variant(
            "RoPE dimension count 0",
            "no position information",
            refused(format!("{a}.rope.dimension_count")),
            set_key("rope.dimension_count", Value::U32(0)),
        ),
        variant(
            "RoPE dimension count larger than a head",
            "ggml asserts n_dims <= ne0",
            refused(format!("{a}.rope.dimension_count")),
            |mut w, c| {
                let key = format!("{}.rope.dimension_count", c.arch.name());
                w.set_metadata(key, Value::U32(c.head_dim as u32 + 2))?;
                Ok(w)
            },
        ),
        variant(
            "RoPE dimension count half a head",
            "llama.cpp (llama) and bitnet.cpp refuse \"invalid n_rot\"; upstream bitnet rotates part of each head",
            if arch == Arch::Bitnet {
                Runs
            } else {
                refused(format!("{a}.rope.dimension_count"))
            },
            |mut w, c| {
                let key = format!("{}.rope.dimension_count", c.arch.name());
                w.set_metadata(key, Value::U32(c.head_dim as u32 / 2))?;
                Ok(w)
            },
        ),
        variant(
            "attention key length unlike the head size",
            "llama.cpp uses it; the engine does not implement other head sizes",
            refused(format!("{a}.attention.key_length")),
            |mut w, c| {
                let key = format!("{}.attention.key_length", c.arch.name());
                w.set_metadata(key, Value::U32(c.head_dim as u32 * 2))?;
                Ok(w)
            },
        ),
        variant(
            "RoPE scaling factor 4",
            "llama.cpp scales RoPE; the engine does not implement it",
            refused(format!("{a}.rope.scaling.factor")),
            set_key("rope.scaling.factor", Value::F32(4.0)),
        ),
        variant(
            "8 experts",
            "llama.cpp loads mixture-of-experts tensors; the engine does not implement them",
            refused(format!("{a}.expert_count")),
            set_key("expert_count", Value::U32(8)),
        ),
    ]
}

/// The context, the head count, the tensors present and the architecture's name.
fn hyper_parameter_and_tensor_variants(arch: Arch) -> Vec<Variant> {
    let a = arch.name();
    vec![
        variant(
            "context length missing",
            "the references require it (\"key not found in model\")",
            refused(format!("{a}.context_length")),
            |mut w, c| {
                w.remove_metadata(&format!("{}.context_length", c.arch.name()));
                Ok(w)
            },
        ),
        variant(
            "context length 0",
            "no room for a token",
            refused(format!("{a}.context_length")),
            set_key("context_length", Value::U32(0)),
        ),
        variant(
            "head count 0",
            "the references divide by it",
            refused(format!("{a}.attention.head_count")),
            set_key("attention.head_count", Value::U32(0)),
        ),
        variant(
            "embedding length unlike the tensors",
            "the references check every tensor's shape",
            refused("token_embd.weight"),
            |mut w, c| {
                let a = c.arch.name();
                w.set_metadata(
                    format!("{a}.embedding_length"),
                    Value::U32(c.dim as u32 * 2),
                )?;
                // Keep the RoPE rule satisfied, so the tensors are what gives the lie away.
                let n_rot = Value::U32(c.head_dim as u32 * 2);
                w.set_metadata(format!("{a}.rope.dimension_count"), n_rot)?;
                Ok(w)
            },
        ),
        variant(
            "a missing tensor",
            "the references refuse a missing tensor",
            refused("blk.1.ffn_down.weight"),
            |mut w, _| {
                w.remove_tensor("blk.1.ffn_down.weight");
                Ok(w)
            },
        ),
        variant(
            "an unknown extra tensor",
            "the references refuse unused tensors (\"wrong number of tensors\")",
            refused("blk.0.mystery.weight"),
            |mut w, _| {
                w.add_tensor("blk.0.mystery.weight", &[4], GgmlType::F32, vec![0; 16])?;
                Ok(w)
            },
        ),
        variant(
            "a bias tensor",
            "llama.cpp adds it; the engine does not implement biases",
            refused("blk.0.attn_q.bias"),
            |mut w, c| {
                let n = c.dim as usize;
                w.add_tensor("blk.0.attn_q.bias", &[c.dim], GgmlType::F32, vec![0; 4 * n])?;
                Ok(w)
            },
        ),
        variant(
            "unknown architecture",
            "the references refuse it",
            refused("gpt-j"),
            |mut w, _| {
                w.set_metadata("general.architecture", Value::String("gpt-j".into()))?;
                Ok(w)
            },
        ),
    ]
}

/// What the reference does with the variant called `name` (see [`Reference`]).
fn reference_outcome(arch: Arch, name: &str) -> Reference {
    use Reference::*;
    match name {
        "vocabulary without byte tokens" | "vocabulary of 3 tokens" => FailsOnSpm,
        "RMS epsilon zero" if arch != Arch::BitnetB158 => Runs,
        "RoPE dimension count half a head" if arch == Arch::Bitnet => Runs,
        "a bias tensor" if arch != Arch::Bitnet => Runs,
        "RMS epsilon infinite"
        | "general.alignment = 64"
        | "RoPE base 0"
        | "RoPE base NaN"
        | "RoPE base negative"
        | "RoPE scaling factor 4"
        | "context length 0" => Runs,
        n if n.starts_with("NaN in") || n.starts_with("+inf in") => Runs,
        _ => Fails,
    }
}
