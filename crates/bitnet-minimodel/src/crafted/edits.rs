//! The edits that turn a generated model into a crafted variant: keys, tokens, tensor types,
//! planted non-finite numbers, another architecture's label, a smaller vocabulary.

use bitnet_gguf::{Array, GgmlType, GgufWriter, Layout, Value};

use super::Context;
use crate::{Arch, GenError};

/// Set `<arch>.<suffix>`.
pub(super) fn set_key(
    suffix: &'static str,
    v: Value,
) -> impl Fn(GgufWriter, &Context) -> Result<GgufWriter, GenError> {
    move |mut w, c| {
        w.set_metadata(format!("{}.{suffix}", c.arch.name()), v.clone())?;
        Ok(w)
    }
}

pub(super) fn missing(what: &str) -> GenError {
    GenError::BadShape(format!("the base model has no {what}"))
}

/// The token list of the base model, edited by `f`.
pub(super) fn edit_tokens(
    mut w: GgufWriter,
    f: impl FnOnce(&mut Vec<String>),
) -> Result<GgufWriter, GenError> {
    let mut tokens = match w
        .metadata()
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
    {
        Some((_, Value::Array(Array::String(t)))) => t.clone(),
        _ => return Err(missing("tokenizer.ggml.tokens")),
    };
    f(&mut tokens);
    w.set_metadata("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))?;
    Ok(w)
}

pub(super) fn is_spm(w: &GgufWriter) -> bool {
    w.metadata()
        .iter()
        .any(|(k, v)| k == "tokenizer.ggml.model" && v.as_str() == Some("llama"))
}

/// Re-encode a tensor of the base model as `ty` (same values up to rounding).
pub(super) fn retype(
    name: &'static str,
    ty: GgmlType,
) -> impl Fn(GgufWriter, &Context) -> Result<GgufWriter, GenError> {
    move |mut w, _| {
        let (old_ty, dims, data) = w.tensor_mut(name).ok_or_else(|| missing(name))?;
        let dims = dims.to_vec();
        let n = dims.iter().product::<u64>() as usize;
        let mut values = vec![0f32; n];
        bitnet_quant::decode(old_ty, data, &mut values).map_err(|source| GenError::Encode {
            tensor: name.into(),
            source,
        })?;
        let bytes = bitnet_quant::encode(ty, &values, dims[0] as usize).map_err(|source| {
            GenError::Encode {
                tensor: name.into(),
                source,
            }
        })?;
        w.replace_tensor(name, &dims, ty, bytes)?;
        Ok(w)
    }
}

/// A non-finite value to plant.
#[derive(Clone, Copy)]
pub(super) enum Poison {
    NaN,
    Inf,
}

impl Poison {
    fn f32(self) -> f32 {
        match self {
            Poison::NaN => f32::NAN,
            Poison::Inf => f32::INFINITY,
        }
    }

    /// The IEEE half bits.
    fn f16_bits(self) -> u16 {
        match self {
            Poison::NaN => 0x7E00,
            Poison::Inf => 0x7C00,
        }
    }

    fn bf16_bits(self) -> u16 {
        match self {
            Poison::NaN => 0x7FC0,
            Poison::Inf => 0x7F80,
        }
    }
}

/// Where the scale of a block is (byte offset in the block), for the block types whose one
/// f16 scale multiplies the whole block.
pub(super) fn block_scale_offset(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 => Some(0),
        GgmlType::TQ1_0 => Some(52),
        GgmlType::TQ2_0 => Some(64),
        _ => None,
    }
}

/// Plant `p` in the first element (or the first block's scale) of each of `rows` rows of
/// `name`, or in I2_S's one per-tensor scale.
pub(super) fn poison(
    name: &'static str,
    p: Poison,
    every_row: bool,
) -> impl Fn(GgufWriter, &Context) -> Result<GgufWriter, GenError> {
    move |mut w, _| {
        let (ty, dims, data) = w.tensor_mut(name).ok_or_else(|| missing(name))?;
        let ne0 = dims[0] as usize;
        let rows = if every_row {
            dims[1..].iter().product::<u64>() as usize
        } else {
            1
        };
        let put16 = |data: &mut [u8], at: usize, bits: u16| {
            data[at..at + 2].copy_from_slice(&bits.to_le_bytes())
        };
        match ty.layout() {
            Layout::I2S => {
                let at = dims.iter().product::<u64>() as usize / 4;
                data[at..at + 4].copy_from_slice(&p.f32().to_le_bytes());
            }
            Layout::Blocks {
                block_size,
                block_bytes,
            } => {
                let row_bytes = ne0 / block_size as usize * block_bytes as usize;
                for r in 0..rows {
                    let at = r * row_bytes;
                    match ty {
                        GgmlType::F32 => data[at..at + 4].copy_from_slice(&p.f32().to_le_bytes()),
                        GgmlType::F16 => put16(data, at, p.f16_bits()),
                        GgmlType::BF16 => put16(data, at, p.bf16_bits()),
                        other => {
                            let off = block_scale_offset(other)
                                .ok_or_else(|| missing("block type with one scale"))?;
                            put16(data, at + off, p.f16_bits());
                        }
                    }
                }
            }
        }
        Ok(w)
    }
}

/// Rename every `<from>.` key to `<to>.` and set `general.architecture`.
pub(super) fn relabel(mut w: GgufWriter, from: Arch, to: Arch) -> Result<GgufWriter, GenError> {
    let prefix = format!("{}.", from.name());
    let keys: Vec<(String, Value)> = w
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .cloned()
        .collect();
    for (k, v) in keys {
        w.remove_metadata(&k);
        w.set_metadata(format!("{}.{}", to.name(), &k[prefix.len()..]), v)?;
    }
    w.set_metadata("general.architecture", Value::String(to.name().into()))?;
    Ok(w)
}

/// Keep the first `n` tokens (and their scores and types) and as many embedding rows.
pub(super) fn shrink_vocabulary(
    mut w: GgufWriter,
    c: &Context,
    n: usize,
) -> Result<GgufWriter, GenError> {
    let arrays: Vec<(String, Value)> = w
        .metadata()
        .iter()
        .filter(|(k, _)| per_token_array(k))
        .cloned()
        .collect();
    for (k, v) in arrays {
        let cut = match v {
            Value::Array(Array::String(t)) => Array::String(t[..n.min(t.len())].to_vec()),
            Value::Array(Array::F32(t)) => Array::F32(t[..n.min(t.len())].to_vec()),
            Value::Array(Array::I32(t)) => Array::I32(t[..n.min(t.len())].to_vec()),
            _ => continue,
        };
        w.set_metadata(k, Value::Array(cut))?;
    }
    // No merge can apply to three tokens.
    if w.remove_metadata("tokenizer.ggml.merges").is_some() {
        w.set_metadata(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(Vec::new())),
        )?;
    }
    for (k, v) in [
        ("tokenizer.ggml.bos_token_id", 1u32),
        ("tokenizer.ggml.eos_token_id", 2),
    ] {
        w.set_metadata(k, Value::U32(v))?;
    }
    w.set_metadata(
        format!("{}.vocab_size", c.arch.name()),
        Value::U32(n as u32),
    )?;
    for name in ["token_embd.weight", "output.weight"] {
        let Some((ty, dims, _)) = w.tensor_mut(name) else {
            continue;
        };
        let dims = [dims[0], n as u64];
        let bytes = bitnet_quant::encode(
            ty,
            &vec![0.5; (dims[0] * dims[1]) as usize],
            dims[0] as usize,
        )
        .map_err(|source| GenError::Encode {
            tensor: name.into(),
            source,
        })?;
        w.replace_tensor(name, &dims, ty, bytes)?;
    }
    Ok(w)
}

/// The per-token arrays of a vocabulary.
pub(super) fn per_token_array(key: &str) -> bool {
    matches!(
        key,
        "tokenizer.ggml.tokens" | "tokenizer.ggml.scores" | "tokenizer.ggml.token_type"
    )
}
