//! What a model file itself says about sampling: its recommended parameters
//! (`general.sampling.*`, which llama.cpp's `common_init_sampler_from_model` applies over its
//! defaults) and the tokens it never wants generated (`tokenizer.ggml.suppress_tokens`).
//!
//! llama.cpp reads the recommendations as *text* — every non-array value rendered with
//! `std::to_string` (so an `f32` becomes `"%f"`, six decimals), copied into a fixed buffer,
//! then parsed with `strtol`/`strtof` — and that round trip is part of the value it uses
//! (0.123456789 becomes 0.123457). This module does the same round trip.

use bitnet_gguf::{GgufHeader, Value};

use super::params::{SamplerType, SamplingParams};
use super::SamplingError;

/// The outcome of [`apply_model_defaults`] beyond the updated parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSamplingDefaults {
    /// Keys that were applied, as `key = value` (for a verbose report).
    pub applied: Vec<String>,
    /// Warnings llama.cpp also prints (unknown sampler names it skips).
    pub warnings: Vec<String>,
    /// The Mirostat version the model asks for, when not 0: llama.cpp then samples with
    /// Mirostat instead of the chain, which this engine does not implement.
    pub mirostat: Option<i32>,
}

/// Apply the model's `general.sampling.*` values to `params`, as llama.cpp does before it
/// applies the user's own flags (so call this first, then set what the user gave).
///
/// # Errors
/// [`SamplingError::Unsupported`] when the model's `general.sampling.sequence` names a sampler
/// llama.cpp knows and this engine does not implement (`infill`, `adaptive_p`).
pub fn apply_model_defaults(
    params: &mut SamplingParams,
    header: &GgufHeader,
) -> Result<ModelSamplingDefaults, SamplingError> {
    let mut out = ModelSamplingDefaults::default();
    let text = |key: &str, buf_size: usize| -> Option<String> {
        let s = value_text(header.get(key)?)?;
        let s = s.split('\0').next().unwrap_or_default();
        (!s.is_empty()).then(|| truncate_bytes(s, buf_size - 1))
    };

    if let Some(seq) = text("general.sampling.sequence", 512) {
        let mut samplers = Vec::new();
        for name in seq.split(';') {
            match SamplerType::from_name(name) {
                Ok(t) => samplers.push(t),
                Err(_) if matches!(name.to_ascii_lowercase().as_str(), "infill" | "adaptive_p" | "adaptive-p" | "adaptivep") => {
                    return Err(SamplingError::Unsupported(format!(
                        "the model's general.sampling.sequence {seq:?} includes the {name:?} sampler"
                    )));
                }
                Err(_) => out.warnings.push(format!(
                    "general.sampling.sequence: unable to match sampler by name {:?} (skipped, as llama.cpp does)",
                    name.to_ascii_lowercase()
                )),
            }
        }
        params.samplers = samplers;
        out.applied
            .push(format!("general.sampling.sequence = {seq}"));
    }
    let mut int = |key: &str, dst: &mut i32| {
        if let Some(v) = text(key, 64).and_then(|s| c_strtol(&s)) {
            *dst = v;
            out.applied.push(format!("{key} = {v}"));
        }
    };
    int("general.sampling.top_k", &mut params.top_k);
    int(
        "general.sampling.penalty_last_n",
        &mut params.penalty_last_n,
    );
    let mut mirostat = 0;
    int("general.sampling.mirostat", &mut mirostat);
    let mut float = |key: &str, dst: &mut f32| {
        if let Some(v) = text(key, 128).and_then(|s| c_strtof(&s)) {
            *dst = v;
            out.applied.push(format!("{key} = {v}"));
        }
    };
    float("general.sampling.top_p", &mut params.top_p);
    float("general.sampling.min_p", &mut params.min_p);
    float(
        "general.sampling.xtc_probability",
        &mut params.xtc_probability,
    );
    float("general.sampling.xtc_threshold", &mut params.xtc_threshold);
    float("general.sampling.temp", &mut params.temp);
    float(
        "general.sampling.penalty_repeat",
        &mut params.penalty_repeat,
    );
    if mirostat != 0 {
        out.mirostat = Some(mirostat);
    }
    // Values llama.cpp takes from the model without complaint but a flag may not have: a
    // negative window disables the penalties there, a negative temperature is greedy there;
    // 0 does the same and passes validation.
    params.penalty_last_n = params.penalty_last_n.max(0);
    if params.temp < 0.0 {
        params.temp = 0.0;
    }
    Ok(out)
}

/// The vocabulary's suppress tokens as llama.cpp loads them (ids outside the vocabulary
/// dropped), each with the −∞ bias `common_sampler_init` gives it.
///
/// # Errors
/// [`SamplingError::BadModel`] when the key is not an `i32` array (llama.cpp refuses to load
/// the model).
pub fn suppress_tokens(
    header: &GgufHeader,
    n_vocab: usize,
) -> Result<Vec<(u32, f32)>, SamplingError> {
    const KEY: &str = "tokenizer.ggml.suppress_tokens";
    match header.get(KEY) {
        None => Ok(Vec::new()),
        Some(Value::Array(bitnet_gguf::Array::I32(ids))) => Ok(ids
            .iter()
            .filter(|&&id| id >= 0 && (id as usize) < n_vocab)
            .map(|&id| (id as u32, f32::NEG_INFINITY))
            .collect()),
        Some(other) => Err(SamplingError::BadModel(format!(
            "{KEY} must be an array of int32, not {:?}",
            other.value_type()
        ))),
    }
}

/// `gguf_kv_to_str` for the values llama.cpp keeps as text (arrays are skipped).
fn value_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Array(_) => return None,
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        // std::to_string(float) is printf("%f") of the value promoted to double.
        Value::F32(x) => format!("{:.6}", *x as f64),
        Value::F64(x) => format!("{x:.6}"),
        Value::Bool(b) => b.to_string(),
    })
}

/// The first `max` bytes of `s` (what `snprintf` into a buffer of `max + 1` keeps), cut back
/// to a character boundary.
fn truncate_bytes(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// C's isspace in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `int32_t v = strtol(s, &end, 10)` where `end != s`: leading white space, a sign, decimal
/// digits; an overflowing value saturates to the 64-bit `long` range and is then truncated to
/// 32 bits, as the C assignment does. `None` when no digit was read.
fn c_strtol(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    let mut i = b.iter().take_while(|&&c| is_c_space(c)).count();
    let negative = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits: Vec<u8> = b[i..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    if digits.is_empty() {
        return None;
    }
    let mut value: i128 = 0;
    for d in digits {
        value = (value * 10 + (d - b'0') as i128).min(i64::MAX as i128 + 1);
    }
    if negative {
        value = -value;
    }
    let long = value.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    Some(long as i32)
}

/// `strtof(s, &end)` where `end != s`, for decimal numbers and `inf`/`infinity`/`nan`
/// (correctly rounded, like glibc). Hexadecimal floats are read as their leading `0`.
fn c_strtof(s: &str) -> Option<f32> {
    let b = s.as_bytes();
    let mut i = b.iter().take_while(|&&c| is_c_space(c)).count();
    let mut text = String::new();
    if let Some(&sign @ (b'-' | b'+')) = b.get(i) {
        text.push(sign as char);
        i += 1;
    }
    let rest = s[i..].to_ascii_lowercase();
    for (word, value) in [
        ("infinity", f32::INFINITY),
        ("inf", f32::INFINITY),
        ("nan", f32::NAN),
    ] {
        if rest.starts_with(word) {
            return Some(if text == "-" { -value } else { value });
        }
    }
    let int: String = b[i..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .map(|&c| c as char)
        .collect();
    i += int.len();
    let mut frac = String::new();
    if b.get(i) == Some(&b'.') {
        frac = b[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .map(|&c| c as char)
            .collect();
        if !(int.is_empty() && frac.is_empty()) {
            i += 1 + frac.len();
        }
    }
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    text.push_str(if int.is_empty() { "0" } else { &int });
    text.push('.');
    text.push_str(if frac.is_empty() { "0" } else { &frac });
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        let mut exp = String::from("e");
        if let Some(&sign @ (b'-' | b'+')) = b.get(j) {
            exp.push(sign as char);
            j += 1;
        }
        let digits: String = b[j..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .map(|&c| c as char)
            .collect();
        if !digits.is_empty() {
            text.push_str(&exp);
            text.push_str(&digits);
        }
    }
    text.parse::<f32>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_gguf::{Array, GgufWriter};

    fn header(entries: Vec<(&str, Value)>) -> GgufHeader {
        let mut w = GgufWriter::new();
        for (k, v) in entries {
            w.add_metadata(k, v).unwrap();
        }
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        GgufHeader::parse(&bytes).unwrap()
    }

    #[test]
    fn floats_take_the_six_decimal_round_trip() {
        let h = header(vec![
            ("general.sampling.top_p", Value::F32(0.123_456_79)),
            ("general.sampling.temp", Value::F32(0.6)),
            ("general.sampling.min_p", Value::F32(1e-7)),
            ("general.sampling.top_k", Value::I32(20)),
            (
                "general.sampling.penalty_repeat",
                Value::String(" 1.1xyz".into()),
            ),
        ]);
        let mut p = SamplingParams::default();
        let r = apply_model_defaults(&mut p, &h).unwrap();
        assert_eq!(p.top_p, 0.123457);
        assert_eq!(p.temp, 0.6);
        assert_eq!(p.min_p, 0.0);
        assert_eq!(p.top_k, 20);
        assert_eq!(p.penalty_repeat, 1.1);
        assert_eq!(r.applied.len(), 5);
        assert_eq!(r.mirostat, None);
    }

    #[test]
    fn sequence_skips_unknown_names_with_a_warning() {
        let h = header(vec![
            (
                "general.sampling.sequence",
                Value::String("top_k;bogus;temp".into()),
            ),
            ("general.sampling.mirostat", Value::I32(2)),
            ("general.sampling.top_k", Value::String("abc".into())),
        ]);
        let mut p = SamplingParams::default();
        let r = apply_model_defaults(&mut p, &h).unwrap();
        assert_eq!(p.samplers, [SamplerType::TopK, SamplerType::Temperature]);
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.mirostat, Some(2));
        assert_eq!(p.top_k, 40, "text without digits leaves the default");
        let h = header(vec![(
            "general.sampling.sequence",
            Value::String("infill".into()),
        )]);
        assert!(apply_model_defaults(&mut p, &h).is_err());
    }

    #[test]
    fn c_number_parsing() {
        assert_eq!(c_strtol("  -12abc"), Some(-12));
        assert_eq!(c_strtol("40.000000"), Some(40));
        assert_eq!(c_strtol("x1"), None);
        assert_eq!(c_strtol("4294967297"), Some(1));
        assert_eq!(c_strtof("0.950000"), Some(0.95));
        assert_eq!(c_strtof("-.5e1x"), Some(-5.0));
        assert_eq!(c_strtof("7.e"), Some(7.0));
        assert_eq!(c_strtof("1e60"), Some(f32::INFINITY));
        assert!(c_strtof("nan").unwrap().is_nan());
        assert_eq!(c_strtof("."), None);
    }

    #[test]
    fn suppress_tokens_drop_out_of_range_ids() {
        let h = header(vec![(
            "tokenizer.ggml.suppress_tokens",
            Value::Array(Array::I32(vec![3, -1, 99, 0])),
        )]);
        assert_eq!(
            suppress_tokens(&h, 10).unwrap(),
            [(3, f32::NEG_INFINITY), (0, f32::NEG_INFINITY)]
        );
        let h = header(vec![(
            "tokenizer.ggml.suppress_tokens",
            Value::Array(Array::U32(vec![3])),
        )]);
        assert!(suppress_tokens(&h, 10).is_err());
        assert!(suppress_tokens(&header(vec![]), 10).unwrap().is_empty());
    }
}
