//! The tensor mix llama.cpp's quantizer chooses, written down independently from
//! `llama-quant.cpp` of the pinned llama.cpp (`llama_tensor_get_type`,
//! `llama_tensor_get_type_impl`, `tensor_type_fallback`) for the cases this project's models
//! exercise: `llama` and upstream `bitnet` architectures, no experts, no importance matrix,
//! not Falcon, not 70B-shaped. Tests compare the files llama.cpp writes with it.

use bitnet_gguf::{GgmlType, GgufFile};

/// What the choice depends on besides the tensor itself.
pub struct Model {
    /// Layers.
    pub n_layer: u32,
    /// Query heads per KV head.
    pub n_gqa: u32,
    /// No `output.weight`: the token embedding is the output head.
    pub tied: bool,
}

impl Model {
    /// Read the facts from a GGUF file.
    pub fn of(file: &GgufFile) -> Model {
        let arch = file.architecture().unwrap().to_string();
        let u = |k: &str| match file.get(&format!("{arch}.{k}")) {
            Some(bitnet_gguf::Value::U32(v)) => *v,
            Some(bitnet_gguf::Value::I32(v)) => *v as u32,
            other => panic!("{arch}.{k}: {other:?}"),
        };
        Model {
            n_layer: u("block_count"),
            n_gqa: u("attention.head_count") / u("attention.head_count_kv"),
            tied: !file.tensors().iter().any(|t| t.name == "output.weight"),
        }
    }
}

/// The file type's default tensor type (`llama_ftype_get_default_type`).
pub fn default_type(ftype: &str) -> GgmlType {
    use GgmlType::*;
    match ftype {
        "Q4_0" => Q4_0,
        "Q4_1" => Q4_1,
        "Q5_0" => Q5_0,
        "Q5_1" => Q5_1,
        "Q8_0" => Q8_0,
        "F16" => F16,
        "BF16" => BF16,
        "F32" => F32,
        "Q2_K" => Q2_K,
        "Q3_K" | "Q3_K_S" | "Q3_K_M" | "Q3_K_L" => Q3_K,
        "Q4_K" | "Q4_K_S" | "Q4_K_M" => Q4_K,
        "Q5_K" | "Q5_K_S" | "Q5_K_M" => Q5_K,
        "Q6_K" => Q6_K,
        "TQ1_0" => TQ1_0,
        "TQ2_0" => TQ2_0,
        "IQ4_NL" => IQ4_NL,
        other => panic!("no default type written down for {other}"),
    }
}

/// llama-quantize's alias names stand for these mixes.
fn canonical(ftype: &str) -> &str {
    match ftype {
        "Q3_K" => "Q3_K_M",
        "Q4_K" => "Q4_K_M",
        "Q5_K" => "Q5_K_M",
        other => other,
    }
}

/// The layer of a `blk.N.` tensor.
fn layer(name: &str) -> u32 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} has no layer"))
}

/// `use_more_bits` of llama-quant.cpp.
fn more_bits(i: u32, n: u32) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type the mix asks for before the row-length fallback.
pub fn mix_type(ftype: &str, m: &Model, name: &str, dims: &[u64]) -> GgmlType {
    use GgmlType::*;
    let ftype = canonical(ftype);
    let d = default_type(ftype);
    let ncols = dims[0];
    let n = m.n_layer;
    let is = |s: &str| name.contains(s);
    if name == "output.weight" || (m.tied && name == "token_embd.weight") {
        return if !ncols.is_multiple_of(d.block_size()) {
            Q8_0
        } else if d != Q8_0 {
            Q6_K
        } else {
            d
        };
    }
    if name == "token_embd.weight" {
        return if matches!(ftype, "TQ1_0" | "TQ2_0") {
            Q4_K
        } else {
            d
        };
    }
    if is("attn_v.weight") {
        let i = layer(name);
        return match ftype {
            "Q2_K" if m.n_gqa >= 4 => Q4_K,
            "Q2_K" => Q3_K,
            "Q3_K_M" if i < 2 => Q5_K,
            "Q3_K_M" => Q4_K,
            "Q3_K_L" => Q5_K,
            "IQ4_NL" if m.n_gqa >= 4 => Q5_K,
            "Q4_K_M" | "Q5_K_M" if more_bits(i, n) => Q6_K,
            "Q4_K_S" if i < 4 => Q5_K,
            _ => d,
        };
    }
    if is("ffn_down") {
        let i = layer(name);
        return match ftype {
            "Q2_K" => Q3_K,
            "Q3_K_M" if i < n / 16 => Q5_K,
            "Q3_K_M" => Q4_K,
            "Q3_K_L" => Q5_K,
            "Q4_K_M" if more_bits(i, n) => Q6_K,
            "IQ4_NL" if i < n / 8 => Q5_K,
            "Q5_K_M" if more_bits(i, n) => Q6_K,
            "Q4_K_S" if i < n / 8 => Q5_K,
            _ => d,
        };
    }
    if is("attn_output.weight") {
        return match ftype {
            "Q2_K" => Q3_K,
            "Q3_K_M" => Q4_K,
            "Q3_K_L" => Q5_K,
            _ => d,
        };
    }
    d
}

/// `tensor_type_fallback`: the type actually used for a row of `ncols`.
pub fn with_fallback(ty: GgmlType, ncols: u64) -> GgmlType {
    use GgmlType::*;
    if ncols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let fallback = match ty {
        Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other if other.block_size() <= 32 => other,
        other => panic!("llama.cpp has no fallback for {other}"),
    };
    if ncols.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        F16
    }
}

/// The type llama.cpp writes for a tensor of the input (`input_type`, `dims`).
pub fn expected_type(
    ftype: &str,
    m: &Model,
    name: &str,
    dims: &[u64],
    input_type: GgmlType,
) -> GgmlType {
    // tensor_allows_quantization: 2-d and up, a `weight`, not a norm.
    let quantizable = dims.len() >= 2 && name.ends_with("weight") && !name.contains("_norm.weight");
    if !quantizable {
        return input_type;
    }
    let d = default_type(canonical(ftype));
    if !d.is_quantized() {
        return d;
    }
    with_fallback(mix_type(ftype, m, name, dims), dims[0])
}

/// Compare every tensor of `output` with what llama.cpp should have chosen from `input`;
/// returns the number of tensors per output type, for extra assertions.
pub fn assert_mix(
    ftype: &str,
    input: &GgufFile,
    output: &GgufFile,
) -> std::collections::BTreeMap<GgmlType, usize> {
    let m = Model::of(input);
    assert_eq!(
        input.tensors().len(),
        output.tensors().len(),
        "{ftype}: tensor count"
    );
    let mut counts = std::collections::BTreeMap::new();
    for t in output.tensors() {
        let src = input
            .tensors()
            .iter()
            .find(|s| s.name == t.name)
            .unwrap_or_else(|| panic!("{ftype}: {} is not in the input", t.name));
        assert_eq!(t.dims, src.dims, "{ftype}: {} shape", t.name);
        let want = expected_type(ftype, &m, &t.name, &src.dims, src.ty);
        assert_eq!(
            t.ty, want,
            "{ftype}: {} ({:?}, input {}) is {}, llama-quant.cpp's rules say {}",
            t.name, src.dims, src.ty, t.ty, want
        );
        *counts.entry(t.ty).or_insert(0) += 1;
    }
    counts
}
