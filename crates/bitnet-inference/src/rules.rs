//! What the C++ references assert about a model file, checked in Rust before either side
//! runs it.
//!
//! llama.cpp and bitnet.cpp validate some of a model at load time with clean errors, and
//! leave the rest to `GGML_ASSERT`s and C++ exceptions that kill the process, sometimes only
//! when the first token is evaluated. The engine is more forgiving than either (it decodes a
//! norm stored as f16, it ignores a tensor it has no use for), so without these rules
//! `bitnet run` would happily compute something from a file the reference refuses, and
//! cross-validation would report a dead reference instead of the broken file.
//! [`check_model_file`] is the one set of rules: [`crate::Model::load`] applies it, so
//! `bitnet run` and the Rust side of cross-validation refuse the same files, and
//! cross-validation applies it to a `--cpp-model` the engine never loads.
//!
//! Each rule names the key or tensor and says which reference enforces it, and how. A few
//! rules are the engine's own, for values no reference asserts but no model can have (a
//! RoPE base of 0 or NaN makes every logit NaN); they say so.

use bitnet_gguf::{GgmlType, GgufFile, Value};

use crate::config::{Architecture, ModelConfig};
use crate::InferenceError;

/// llama.cpp's and bitnet.cpp's `LLAMA_MAX_LAYERS`: more layers is a `GGML_ASSERT`.
pub const MAX_LAYERS: usize = 512;

/// ggml's `TENSOR_ALIGNMENT`: llama.cpp maps tensors in place, so each must start on a
/// multiple of this in the file.
pub const TENSOR_ALIGNMENT: u64 = 32;

/// Which C++ reference runs an architecture, as a phrase for messages.
fn reference(arch: Architecture) -> &'static str {
    match arch {
        Architecture::Llama | Architecture::Bitnet => "llama.cpp",
        Architecture::BitnetB158 => "bitnet.cpp",
    }
}

fn refused(subject: impl Into<String>, problem: impl Into<String>) -> InferenceError {
    InferenceError::Refused {
        subject: subject.into(),
        problem: problem.into(),
    }
}

/// Read the configuration of `file` and check every rule below; the configuration when
/// the file passes. Allocates nothing sized by a header count.
///
/// # Errors
/// [`InferenceError::Refused`] naming the key or tensor and the rule, or the errors of
/// [`ModelConfig::from_gguf`].
pub fn check_model_file(file: &GgufFile) -> Result<ModelConfig, InferenceError> {
    let config = ModelConfig::from_gguf(file)?;
    check_hparams(file, &config)?;
    check_vocabulary(file)?;
    check_tensors(file, &config)?;
    Ok(config)
}

/// [`check_model_file`] on the file at `path` (for a model the engine does not load itself,
/// such as cross-validation's `--cpp-model`).
///
/// # Errors
/// [`InferenceError::Gguf`] for an unreadable or corrupt file, otherwise as
/// [`check_model_file`].
pub fn check_model_path(path: &std::path::Path) -> Result<ModelConfig, InferenceError> {
    check_model_file(&GgufFile::open(path)?)
}

/// The hyper-parameters.
fn check_hparams(file: &GgufFile, c: &ModelConfig) -> Result<(), InferenceError> {
    let arch = c.arch.name();
    let key = |suffix: &str| format!("{arch}.{suffix}");
    let who = reference(c.arch);
    if c.n_layers > MAX_LAYERS {
        return Err(refused(
            key("block_count"),
            format!(
                "{} layers; llama.cpp and bitnet.cpp assert at most {MAX_LAYERS} (LLAMA_MAX_LAYERS)",
                c.n_layers
            ),
        ));
    }
    let eps = c.rms_eps;
    let eps_key = key("attention.layer_norm_rms_epsilon");
    // bitnet.cpp's ggml asserts `eps > 0.0f` in rms_norm, llama.cpp's `eps >= 0.0f`; NaN
    // fails both comparisons, so the reference aborts on it too.
    let (holds, rule) = match c.arch {
        Architecture::BitnetB158 => (eps > 0.0, "> 0"),
        Architecture::Llama | Architecture::Bitnet => (eps >= 0.0, ">= 0"),
    };
    if !holds {
        return Err(refused(
            eps_key,
            format!("{eps} must be {rule} ({who} asserts eps {rule} in rms_norm and aborts)"),
        ));
    }
    if eps.is_infinite() {
        return Err(refused(
            eps_key,
            format!("{eps} is not a finite number: every normalized activation would be 0"),
        ));
    }
    if !(c.rope_base.is_finite() && c.rope_base > 0.0) {
        return Err(refused(
            key("rope.freq_base"),
            format!(
                "{} must be a positive finite number: any other base makes every RoPE angle NaN",
                c.rope_base
            ),
        ));
    }
    if c.rope_dims == 0 {
        return Err(refused(
            key("rope.dimension_count"),
            "0 rotates nothing: the model would have no position information",
        ));
    }
    if matches!(c.arch, Architecture::Llama | Architecture::BitnetB158) && c.rope_dims != c.head_dim
    {
        return Err(refused(
            key("rope.dimension_count"),
            format!(
                "{} must equal the head size {} for {arch} ({who} refuses the file: \"invalid n_rot\")",
                c.rope_dims, c.head_dim
            ),
        ));
    }
    if file.get(&key("context_length")).is_none() {
        return Err(refused(
            key("context_length"),
            format!("is missing ({who} requires it: \"key not found in model\")"),
        ));
    }
    if c.context_length == 0 {
        return Err(refused(key("context_length"), "0 leaves room for no token"));
    }
    for (suffix, what) in [
        ("attention.key_length", "key"),
        ("attention.value_length", "value"),
    ] {
        if let Some(v) = file.get_u64(&key(suffix))? {
            if v != c.head_dim as u64 {
                return Err(refused(
                    key(suffix),
                    format!(
                        "{what} heads of {v} values (not hidden size / heads = {}) are not implemented by this engine",
                        c.head_dim
                    ),
                ));
            }
        }
    }
    for suffix in ["rope.scaling.factor", "rope.scale_linear"] {
        if let Some(f) = file.get_f32(&key(suffix))? {
            if f != 0.0 && f != 1.0 {
                return Err(refused(
                    key(suffix),
                    format!("RoPE scaling by {f} is not implemented by this engine"),
                ));
            }
        }
    }
    if let Some(t) = file.get_str(&key("rope.scaling.type"))? {
        if !matches!(t, "none" | "linear") {
            return Err(refused(
                key("rope.scaling.type"),
                format!("{t:?} RoPE scaling is not implemented by this engine"),
            ));
        }
    }
    if let Some(n) = file.get_u64(&key("expert_count"))? {
        if n > 0 {
            return Err(refused(
                key("expert_count"),
                format!(
                    "{n} experts: mixture-of-experts layers are not implemented by this engine"
                ),
            ));
        }
    }
    // gguf.cpp reads the alignment only as a u32; any other type fails the load.
    if let Some(v) = file.get("general.alignment") {
        if !matches!(v, Value::U32(_)) {
            return Err(refused(
                "general.alignment",
                format!(
                    "stored as {}; llama.cpp's GGUF reader accepts only u32",
                    v.value_type().name()
                ),
            ));
        }
    }
    Ok(())
}

/// The token list, as llama.cpp's vocabulary loader reads it.
fn check_vocabulary(file: &GgufFile) -> Result<(), InferenceError> {
    if let Some(d) = file.tokenizer()?.first_duplicate_token() {
        return Err(refused(
            "tokenizer.ggml.tokens",
            format!(
                "tokens {} and {} both read as {:?} (texts end at a NUL byte; empty ones become [EMPTY_<id>]); llama.cpp and bitnet.cpp assert that every token text is distinct and abort",
                d.first, d.second, d.text
            ),
        ));
    }
    Ok(())
}

/// What a tensor name means for the architecture.
enum TensorRole {
    /// A matrix, the token embedding or the output head.
    Matrix,
    /// A vector multiplied into the activations (a norm's weight, a `bitnet` scale): ggml's
    /// CPU multiply takes only f32 there.
    Multiplier,
    /// Loaded by the reference but not implemented by this engine.
    NotImplemented,
    /// Not a tensor of this architecture (or of a layer the file does not have).
    Unknown,
}

fn role(name: &str, c: &ModelConfig) -> TensorRole {
    use Architecture::*;
    let bitnet = matches!(c.arch, Bitnet | BitnetB158);
    match name {
        "token_embd.weight" => return TensorRole::Matrix,
        "output_norm.weight" => return TensorRole::Multiplier,
        // Upstream `bitnet` always ties the head to the embedding and loads no output.weight.
        "output.weight" if c.arch != Bitnet => return TensorRole::Matrix,
        "rope_freqs.weight" => return TensorRole::NotImplemented,
        _ => {}
    }
    let Some((layer, suffix)) = name
        .strip_prefix("blk.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return TensorRole::Unknown;
    };
    // "01" is not how llama.cpp names layer 1: only canonical numbers count.
    match layer.parse::<usize>() {
        Ok(l) if l < c.n_layers && l.to_string() == layer => {}
        _ => return TensorRole::Unknown,
    }
    const MATRICES: [&str; 7] = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    let (base, kind) = suffix.rsplit_once('.').unwrap_or((suffix, ""));
    match (base, kind) {
        ("attn_norm" | "ffn_norm", "weight") => TensorRole::Multiplier,
        ("attn_sub_norm" | "ffn_sub_norm", "weight") if bitnet => TensorRole::Multiplier,
        (m, "weight") if MATRICES.contains(&m) => TensorRole::Matrix,
        (m, "scale") if c.arch == Bitnet && MATRICES.contains(&m) => TensorRole::Multiplier,
        (m, "bias") if c.arch != Bitnet && MATRICES.contains(&m) => TensorRole::NotImplemented,
        _ => TensorRole::Unknown,
    }
}

/// Every tensor is one the architecture loads, stored as its op can take it, where the
/// reference can map it.
fn check_tensors(file: &GgufFile, c: &ModelConfig) -> Result<(), InferenceError> {
    let arch = c.arch.name();
    let who = reference(c.arch);
    for t in file.tensors() {
        match role(&t.name, c) {
            TensorRole::Unknown => {
                let hint = layer_of(&t.name)
                    .filter(|&l| l >= c.n_layers)
                    .map(|l| {
                        format!(
                            " (layer {l}, but {arch}.block_count is {}: a file with more layers than it says)",
                            c.n_layers
                        )
                    })
                    .unwrap_or_default();
                return Err(refused(
                    format!("tensor {}", t.name),
                    format!(
                        "is not a tensor of a {}-layer {arch} model{hint}; {who} refuses the file (\"wrong number of tensors\")",
                        c.n_layers
                    ),
                ));
            }
            TensorRole::NotImplemented => {
                return Err(refused(
                    format!("tensor {}", t.name),
                    format!("{who} uses it, but this engine does not implement it"),
                ));
            }
            TensorRole::Multiplier if t.ty != GgmlType::F32 => {
                return Err(refused(
                    format!("tensor {}", t.name),
                    format!(
                        "is {}; ggml multiplies activations only by f32 here ({who} aborts: \"unsupported types\")",
                        t.ty
                    ),
                ));
            }
            _ => {}
        }
        let start = file.data_offset + t.offset;
        if !start.is_multiple_of(TENSOR_ALIGNMENT) {
            return Err(refused(
                format!("tensor {}", t.name),
                format!(
                    "starts at byte {start} of the file, not a multiple of {TENSOR_ALIGNMENT} (general.alignment is {}); {who} maps tensors in place and needs ggml's {TENSOR_ALIGNMENT}-byte alignment",
                    file.alignment
                ),
            ));
        }
    }
    Ok(())
}

/// `N` of a `blk.N.…` name.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}
