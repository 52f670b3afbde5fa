//! [`validate_receipt`]: the receipt schema of the module documentation, checked field by
//! field on the JSON value (not through serde), so a receipt written by another tool or an
//! older version is judged by the documented schema and every problem names its field.

use serde_json::Value;

type Obj = serde_json::Map<String, Value>;

fn field<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<&'a Value, String> {
    o.get(key)
        .ok_or_else(|| format!("{ctx}.{key}: missing required field"))
}

fn obj<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<&'a Obj, String> {
    field(o, ctx, key)?
        .as_object()
        .ok_or_else(|| format!("{ctx}.{key}: expected an object"))
}

fn string<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<&'a str, String> {
    field(o, ctx, key)?
        .as_str()
        .ok_or_else(|| format!("{ctx}.{key}: expected a string"))
}

fn opt_string<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<Option<&'a str>, String> {
    match field(o, ctx, key)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(format!("{ctx}.{key}: expected a string or null")),
    }
}

fn strings<'a>(o: &'a Obj, ctx: &str, key: &str) -> Result<Vec<&'a str>, String> {
    field(o, ctx, key)?
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(|| format!("{ctx}.{key}: expected an array of strings"))
}

fn boolean(o: &Obj, ctx: &str, key: &str) -> Result<bool, String> {
    field(o, ctx, key)?
        .as_bool()
        .ok_or_else(|| format!("{ctx}.{key}: expected a boolean"))
}

fn uint(o: &Obj, ctx: &str, key: &str) -> Result<u64, String> {
    field(o, ctx, key)?
        .as_u64()
        .ok_or_else(|| format!("{ctx}.{key}: expected a non-negative integer"))
}

fn opt_uint(o: &Obj, ctx: &str, key: &str) -> Result<Option<u64>, String> {
    match field(o, ctx, key)? {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{ctx}.{key}: expected a non-negative integer or null")),
    }
}

fn number(o: &Obj, ctx: &str, key: &str) -> Result<f64, String> {
    field(o, ctx, key)?
        .as_f64()
        .ok_or_else(|| format!("{ctx}.{key}: expected a number"))
}

fn metric(o: &Obj, ctx: &str, key: &str) -> Result<(), String> {
    match field(o, ctx, key)? {
        Value::Number(_) => Ok(()),
        Value::String(s) if matches!(s.as_str(), "NaN" | "inf" | "-inf") => Ok(()),
        _ => Err(format!(
            "{ctx}.{key}: expected a number or \"NaN\"/\"inf\"/\"-inf\""
        )),
    }
}

fn one_of(o: &Obj, ctx: &str, key: &str, allowed: &[&str]) -> Result<String, String> {
    let s = string(o, ctx, key)?;
    if allowed.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("{ctx}.{key}: {s:?} is not one of {allowed:?}"))
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
}

/// Checks the `token_parity` object; returns its status.
fn token_parity(tp: &Obj) -> Result<String, String> {
    let t = "token_parity";
    let tp_status = one_of(tp, t, "status", &["ok", "mismatch"])?;
    let rust_count = uint(tp, t, "rust_count")?;
    let cpp_count = uint(tp, t, "cpp_count")?;
    let diff = opt_uint(tp, t, "first_diff_idx")?;
    match (tp_status.as_str(), diff) {
        ("ok", Some(_)) => {
            Err("token_parity.first_diff_idx: must be null when status is ok".into())
        }
        ("mismatch", None) => {
            Err("token_parity.first_diff_idx: required when status is mismatch".into())
        }
        ("ok", None) if rust_count != cpp_count => {
            Err("token_parity: status ok but rust_count != cpp_count".into())
        }
        _ => Ok(tp_status),
    }
}

/// Checks the `run_configuration` object (schema 2.3).
fn run_configuration(c: &Obj) -> Result<(), String> {
    let ctx = "run_configuration";
    let types = ["f32", "f16", "bf16", "q8_0"];
    one_of(c, ctx, "cache_type_k", &types)?;
    one_of(c, ctx, "cache_type_v", &types)?;
    boolean(c, ctx, "flash_attn")?;
    uint(c, ctx, "n_batch")?;
    uint(c, ctx, "n_ubatch")?;
    uint(c, ctx, "threads")?;
    Ok(())
}

/// Checks the `cpp_backend` object of a receipt of schema 2.`minor`.
fn cpp_backend(be: &Obj, minor: u32) -> Result<(), String> {
    let c = "cpp_backend";
    one_of(be, c, "backend", &["llama", "bitnet"])?;
    string(be, c, "library")?;
    string(be, c, "build_info")?;
    string(be, c, "system_info")?;
    if minor >= 1 {
        string(be, c, "version")?;
        let compiler = obj(be, c, "compiler")?;
        string(compiler, "cpp_backend.compiler", "id")?;
        string(compiler, "cpp_backend.compiler", "version")?;
        string(be, c, "build_type")?;
        for key in ["cpu_flags", "simd", "ggml_options"] {
            strings(be, c, key)?;
        }
    }
    Ok(())
}

/// The labels of [`crate::verdict::Verdict`].
const LABELS: &[&str] = &["match", "drift", "tie-flip", "wrong"];

/// Checks a 2.2 position's runner-ups and label (`match` exactly when `ok`).
fn position_label(p: &Obj, ctx: &str, ok: bool) -> Result<(), String> {
    opt_uint(p, ctx, "rust_top2")?;
    opt_uint(p, ctx, "cpp_top2")?;
    metric(p, ctx, "cpp_top2_margin")?;
    let label = one_of(p, ctx, "label", LABELS)?;
    if ok != (label == "match") {
        return Err(format!(
            "{ctx}.label: {label:?} inconsistent with ok = {ok}"
        ));
    }
    Ok(())
}

/// Checks 2.2's `config_gate` (and that `status` is `config_mismatch` exactly when it
/// failed) and `locate`.
fn gate_and_locate(root: &Obj, status: &str) -> Result<(), String> {
    let r = "receipt";
    let gate_ok = match field(root, r, "config_gate")? {
        Value::Null => None,
        Value::Object(g) => {
            field(g, "config_gate", "facts")?
                .as_array()
                .ok_or("config_gate.facts: expected an array")?;
            field(g, "config_gate", "tensor_types")?
                .as_array()
                .ok_or("config_gate.tensor_types: expected an array")?;
            Some(boolean(g, "config_gate", "ok")?)
        }
        _ => return Err("receipt.config_gate: expected an object or null".into()),
    };
    if (status == "config_mismatch") != (gate_ok == Some(false)) {
        return Err(format!(
            "receipt.status: {status:?} inconsistent with config_gate.ok {gate_ok:?}"
        ));
    }
    match field(root, r, "locate")? {
        Value::Null => Ok(()),
        Value::Object(l) => {
            one_of(l, "locate", "mode", &["first", "all"])?;
            uint(l, "locate", "tensors_compared")?;
            field(l, "locate", "tensors")?
                .as_array()
                .ok_or("locate.tensors: expected an array")?;
            Ok(())
        }
        _ => Err("receipt.locate: expected an object or null".into()),
    }
}

/// Checks a receipt against the documented schema (every required field, its type, and the
/// consistency rules). Returns the first problem found, naming the field.
pub fn validate_receipt(v: &Value) -> Result<(), String> {
    let root = v.as_object().ok_or("receipt: expected a JSON object")?;
    let r = "receipt";
    let version = string(root, r, "schema_version")?;
    let parts: Vec<&str> = version.split('.').collect();
    let minor = match parts.as_slice() {
        ["2", minor, patch] if patch.parse::<u32>().is_ok() => minor.parse::<u32>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("receipt.schema_version: {version:?} is not a 2.x.y version"))?;
    let status = one_of(
        root,
        r,
        "status",
        &[
            "ok",
            "diverged",
            "config_mismatch",
            "token_mismatch",
            "vocab_mismatch",
            "usage_error",
            "error",
        ],
    )?;
    // The fields and the status of 2.2 (the configuration gate, the labels, --locate).
    let v22 = minor >= 2;
    if status == "config_mismatch" && !v22 {
        return Err(format!(
            "receipt.status: \"config_mismatch\" is a 2.2 status (schema {version:?})"
        ));
    }
    // The statuses of a run that got as far as the token pre-gate; the configuration gate
    // comes before it, with the reference already started.
    let gated = matches!(status.as_str(), "ok" | "diverged" | "token_mismatch");
    let started = gated || status == "config_mismatch";
    let error = opt_string(root, r, "error")?;
    if error.is_some() == started {
        return Err(format!(
            "receipt.error: must be a string exactly when status is vocab_mismatch, usage_error or error (status {status:?})"
        ));
    }
    let warnings = field(root, r, "warnings")?
        .as_array()
        .ok_or("receipt.warnings: expected an array")?;
    if warnings.iter().any(|w| !w.is_string()) {
        return Err("receipt.warnings: expected an array of strings".into());
    }

    let tool = obj(root, r, "tool")?;
    string(tool, "tool", "name")?;
    string(tool, "tool", "version")?;

    let ts = string(root, r, "timestamp")?;
    if !is_rfc3339_utc(ts) {
        return Err(format!(
            "receipt.timestamp: {ts:?} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)"
        ));
    }

    let inputs = obj(root, r, "inputs")?;
    let i = "inputs";
    string(inputs, i, "model_path")?;
    let sha = string(inputs, i, "model_sha256")?;
    if !is_sha256(sha) {
        return Err(format!(
            "inputs.model_sha256: {sha:?} is not 64 lowercase hex digits"
        ));
    }
    let cpp_model = opt_string(inputs, i, "cpp_model_path")?;
    let cpp_sha = opt_string(inputs, i, "cpp_model_sha256")?;
    if cpp_model.is_some() != cpp_sha.is_some() || cpp_sha.is_some_and(|s| !is_sha256(s)) {
        return Err(
            "inputs.cpp_model_sha256: must be a sha256 exactly when cpp_model_path is set".into(),
        );
    }
    opt_string(inputs, i, "tokenizer_path")?;
    string(inputs, i, "prompt")?;
    string(inputs, i, "formatted_prompt")?;
    opt_string(inputs, i, "system_prompt")?;
    string(inputs, i, "template")?;
    opt_string(inputs, i, "template_used")?;
    boolean(inputs, i, "add_bos")?;
    boolean(inputs, i, "parse_special")?;

    let tp_status = match field(root, r, "token_parity")? {
        Value::Null if gated => {
            return Err(format!(
                "receipt.token_parity: required when status is {status:?}"
            ))
        }
        Value::Null => None,
        Value::Object(tp) => Some(token_parity(tp)?),
        _ => return Err("receipt.token_parity: expected an object or null".into()),
    };
    if (status == "token_mismatch") != (tp_status.as_deref() == Some("mismatch")) {
        return Err(format!(
            "receipt.status: {status:?} inconsistent with token_parity.status {tp_status:?}"
        ));
    }

    let positions = field(root, r, "positions")?
        .as_array()
        .ok_or("receipt.positions: expected an array")?;
    for (k, p) in positions.iter().enumerate() {
        let ctx = format!("positions[{k}]");
        let p = p
            .as_object()
            .ok_or_else(|| format!("{ctx}: expected an object"))?;
        uint(p, &ctx, "position")?;
        for m in ["cosine", "l2", "max_abs_diff", "nmse", "kl"] {
            metric(p, &ctx, m)?;
        }
        uint(p, &ctx, "rust_top1")?;
        uint(p, &ctx, "cpp_top1")?;
        boolean(p, &ctx, "top1_match")?;
        if uint(p, &ctx, "top5_overlap")? > 5 {
            return Err(format!("{ctx}.top5_overlap: must be 0..=5"));
        }
        uint(p, &ctx, "rust_non_finite")?;
        uint(p, &ctx, "cpp_non_finite")?;
        let ok = boolean(p, &ctx, "ok")?;
        if v22 {
            position_label(p, &ctx, ok)?;
        }
    }

    let decode = field(root, r, "decode")?
        .as_array()
        .ok_or("receipt.decode: expected an array")?;
    for (k, d) in decode.iter().enumerate() {
        let ctx = format!("decode[{k}]");
        let d = d
            .as_object()
            .ok_or_else(|| format!("{ctx}: expected an object"))?;
        uint(d, &ctx, "step")?;
        uint(d, &ctx, "rust_token")?;
        uint(d, &ctx, "cpp_token")?;
        boolean(d, &ctx, "match")?;
        if v22 {
            uint(d, &ctx, "fed_token")?;
            one_of(d, &ctx, "label", LABELS)?;
        }
    }

    match field(root, r, "summary")? {
        Value::Null => {
            if status == "ok" || status == "diverged" {
                return Err(format!(
                    "receipt.summary: required when status is {status:?}"
                ));
            }
        }
        Value::Object(s) => {
            let c = "summary";
            uint(s, c, "n_positions")?;
            opt_uint(s, c, "first_divergent_position")?;
            for m in ["min_cosine", "max_kl", "mean_kl", "max_abs_diff"] {
                metric(s, c, m)?;
            }
            let rate = number(s, c, "top1_agreement_rate")?;
            if !(0.0..=1.0).contains(&rate) {
                return Err("summary.top1_agreement_rate: must be within 0..=1".into());
            }
            number(s, c, "cos_tol")?;
            boolean(s, c, "all_ok")?;
        }
        _ => return Err("receipt.summary: expected an object or null".into()),
    }

    let th = obj(root, r, "thresholds")?;
    number(th, "thresholds", "cos_tol")?;
    uint(th, "thresholds", "max_tokens")?;
    if v22 {
        number(th, "thresholds", "tie_margin")?;
        gate_and_locate(root, &status)?;
    }

    match field(root, r, "cpp_backend")? {
        Value::Null if started => {
            return Err(format!(
                "receipt.cpp_backend: required when status is {status:?}"
            ))
        }
        Value::Null => {}
        Value::Object(be) => cpp_backend(be, minor)?,
        _ => return Err("receipt.cpp_backend: expected an object or null".into()),
    }

    // `run_configuration` is new in 2.3: required there (an object whenever the reference
    // started and passed the run-configuration check, which comes before the configuration
    // gate; null when no comparison was set up), absent from older receipts.
    if minor >= 3 || root.contains_key("run_configuration") {
        match field(root, r, "run_configuration")? {
            Value::Null if started => {
                return Err(format!(
                    "receipt.run_configuration: required when status is {status:?}"
                ))
            }
            Value::Null => {}
            Value::Object(c) => run_configuration(c)?,
            _ => return Err("receipt.run_configuration: expected an object or null".into()),
        }
    }

    let env = obj(root, r, "environment")?;
    string(env, "environment", "cpu")?;
    uint(env, "environment", "threads")?;
    string(env, "environment", "os")?;
    string(env, "environment", "arch")?;
    Ok(())
}
