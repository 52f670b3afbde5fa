//! What a run prints and writes: the text report, the JSON document, `--dump-ids`, the receipt.

use std::path::Path;

use bitnet_cpp::Session;
use bitnet_tokenizers::Tokenizer;
use serde_json::{json, Value};

use super::{PerTokenConfig, Record};
use crate::config_gate::ConfigGate;
use crate::locate;
use crate::logits_compare::LogitsComparison;
use crate::receipt::{
    self, Environment, Inputs, Receipt, RunStatus, Thresholds, TokenParityBlock, ToolInfo,
    RECEIPT_SCHEMA_VERSION,
};
use crate::steps;
use crate::verdict::TIE_MARGIN;

/// The decoded text of one token (special tokens rendered), `?` when it has none.
pub(super) fn piece(tokenizer: &dyn Tokenizer, id: u32) -> String {
    tokenizer
        .token_to_piece(id, true)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| "?".into())
}

/// `--dump-ids`: both sequences with every piece.
pub(super) fn dump_ids(
    tokenizer: &dyn Tokenizer,
    cpp: &mut Session,
    rust: &[u32],
    cpp_ids: &[i32],
) -> String {
    let mut s = format!(
        "Rust tokens ({}, {}):\n",
        rust.len(),
        tokenizer.backend_name()
    );
    for (i, &t) in rust.iter().enumerate() {
        s.push_str(&format!("  [{i}] {t} {:?}\n", piece(tokenizer, t)));
    }
    s.push_str(&format!("C++ tokens ({}):\n", cpp_ids.len()));
    for (i, &t) in cpp_ids.iter().enumerate() {
        let p = cpp
            .token_to_piece(t, true)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| "?".into());
        s.push_str(&format!("  [{i}] {t} {p:?}\n"));
    }
    s
}

/// `auto → chatml` when the template applied is not the one asked for, else its name.
fn template_line(cfg: &PerTokenConfig, rec: &Record) -> String {
    let asked = cfg.template.name();
    match rec.template_used.as_deref() {
        Some(used) if used != asked => format!("{asked} → {used}"),
        Some(used) => used.to_string(),
        None => asked.to_string(),
    }
}

/// The text report of a run that compared logits.
pub(super) fn text_report(
    cfg: &PerTokenConfig,
    rec: &Record,
    cmp: &LogitsComparison,
    tokenizer: &dyn Tokenizer,
    status: RunStatus,
    build: &bitnet_cpp::protocol::BuildFacts,
) -> String {
    let (backend, library) = (&build.backend, &build.library);
    let mark = |ok: bool| if ok { "✓" } else { "✗" };
    let configuration = rec
        .run_configuration
        .as_ref()
        .map(|c| format!("run configuration: {c}\n"))
        .unwrap_or_default();
    let mut s = format!(
        "model: {}\nC++ reference: {backend} ({library}){}\nC++ build: {}\n{configuration}template: {} (add_bos={}, parse_special={})\ntokens: {}\n",
        cfg.model.display(),
        cfg.cpp_model.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default(),
        build.summary(),
        template_line(cfg, rec),
        rec.add_bos,
        rec.parse_special,
        rec.rust_tokens.len()
    );
    s.push_str(
        &rec.config_gate
            .as_ref()
            .map(ConfigGate::types_line)
            .unwrap_or_default(),
    );
    for m in &cmp.positions {
        s.push_str(&format!(
            "{} t={} cos={:.6} kl={:.1e} top1={} [{}] {:?}\n",
            mark(m.ok),
            m.position,
            m.cosine,
            m.kl,
            mark(m.top1_match),
            m.label,
            piece(tokenizer, rec.rust_tokens[m.position])
        ));
    }
    for st in &rec.decode {
        let (d, m) = (&st.decode, &st.metrics);
        if d.matched {
            s.push_str(&format!(
                "{} step {}: both chose {} {:?} cos={:.6} [{}]\n",
                mark(m.ok),
                d.step,
                d.rust_token,
                piece(tokenizer, d.rust_token),
                m.cosine,
                m.label
            ));
        } else {
            s.push_str(&format!(
                "{} step {}: Rust chose {} {:?}, C++ chose {} {:?} cos={:.6} [{}]; both continue with {}\n",
                mark(m.ok),
                d.step,
                d.rust_token,
                piece(tokenizer, d.rust_token),
                d.cpp_token,
                piece(tokenizer, d.cpp_token),
                m.cosine,
                m.label,
                d.fed_token
            ));
        }
    }
    if let Some(first) = steps::first_differing(&rec.decode) {
        s.push_str(&format!(
            "greedy (teacher-forced): the choices first differ at step {}, labelled {}\n",
            first.decode.step, first.metrics.label
        ));
    }
    let sm = &cmp.summary;
    s.push_str(&format!(
        "summary: min cos {:.6} (tolerance {}), max |Δ| {:.3e}, KL max {:.2e} mean {:.2e}, top-1 {:.1}%, greedy steps {}/{}\n",
        sm.min_cosine,
        cfg.cos_tol,
        sm.max_abs_diff,
        sm.max_kl,
        sm.mean_kl,
        sm.top1_agreement_rate * 100.0,
        rec.decode.iter().filter(|st| st.metrics.ok).count(),
        cfg.max_tokens
    ));
    match status {
        RunStatus::Ok => s.push_str("✓ match: every position within tolerance\n"),
        _ => match sm.first_divergent_position {
            Some(p) => s.push_str(&format!("✗ diverged: first at position {p}\n")),
            None => s.push_str("✗ diverged in the greedy steps\n"),
        },
    }
    if let Some(l) = &rec.locate {
        s.push_str(&locate::render_text(l));
    }
    s
}

/// The `--format json` document: always one, whatever stage the run stopped at.
pub(super) fn json_document(
    cfg: &PerTokenConfig,
    rec: &Record,
    status: RunStatus,
    error: Option<&str>,
) -> Value {
    let decode: Vec<Value> = rec
        .decode
        .iter()
        .map(|st| {
            let d = &st.decode;
            json!({
                "step": d.step, "rust_token": d.rust_token, "cpp_token": d.cpp_token, "match": d.matched,
                "fed_token": d.fed_token, "label": d.label, "metrics": st.metrics,
            })
        })
        .collect();
    let first_differing_step = steps::first_differing(&rec.decode)
        .map(|st| json!({ "step": st.decode.step, "label": st.metrics.label }));
    json!({
        "status": status,
        "model": cfg.model.display().to_string(),
        "cpp_model": cfg.cpp_model.as_ref().map(|p| p.display().to_string()),
        "cpp_backend": rec.cpp_info,
        "run_configuration": rec.run_configuration,
        "tokens": { "rust": rec.rust_tokens, "cpp": rec.cpp_tokens, "first_diff_idx": rec.first_diff },
        "template_requested": cfg.template.name(),
        "template": rec.template_used,
        "formatted_prompt": rec.formatted,
        "add_bos": rec.add_bos,
        "parse_special": rec.parse_special,
        "positions": rec.comparison.as_ref().map(|c| &c.positions),
        "decode": decode,
        "first_differing_step": first_differing_step,
        "summary": rec.comparison.as_ref().map(|c| &c.summary),
        "thresholds": { "cos_tol": cfg.cos_tol, "max_tokens": cfg.max_tokens, "tie_margin": TIE_MARGIN },
        "config_gate": rec.config_gate,
        "locate": match (&rec.locate, &rec.locate_refused) {
            (Some(l), _) => json!(l),
            (None, Some(why)) => json!({ "refused": why }),
            (None, None) => Value::Null,
        },
        "suggestions": rec.suggestions,
        "example_command": rec.example_command,
        "vocab_mismatch": rec.vocab_mismatch,
        "warnings": rec.warnings,
        "non_finite": rec.non_finite,
        "error": error,
    })
}

/// Writes the receipt of this run (schema in [`crate::receipt`]).
pub(super) fn write_receipt(
    cfg: &PerTokenConfig,
    rec: &Record,
    status: RunStatus,
    error: Option<&str>,
    path: &Path,
) -> Result<(), String> {
    let sha =
        |p: &Path| receipt::sha256_file(p).map_err(|e| format!("cannot hash {}: {e}", p.display()));
    let receipt = Receipt {
        schema_version: RECEIPT_SCHEMA_VERSION.to_string(),
        status,
        error: error.map(str::to_string),
        warnings: rec.warnings.clone(),
        tool: ToolInfo {
            name: "xtask crossval-per-token".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        timestamp: receipt::now_rfc3339(),
        inputs: Inputs {
            model_path: cfg.model.display().to_string(),
            model_sha256: sha(&cfg.model)?,
            cpp_model_path: cfg.cpp_model.as_ref().map(|p| p.display().to_string()),
            cpp_model_sha256: cfg.cpp_model.as_deref().map(sha).transpose()?,
            tokenizer_path: cfg.tokenizer.as_ref().map(|p| p.display().to_string()),
            prompt: cfg.prompt.clone(),
            formatted_prompt: rec.formatted.clone(),
            system_prompt: cfg.system_prompt.clone(),
            template: cfg.template.name().to_string(),
            template_used: rec.template_used.clone(),
            add_bos: rec.add_bos,
            parse_special: rec.parse_special,
        },
        token_parity: rec.gate_ran.then(|| {
            TokenParityBlock::new(rec.rust_tokens.len(), rec.cpp_tokens.len(), rec.first_diff)
        }),
        positions: rec
            .comparison
            .as_ref()
            .map(|c| c.positions.clone())
            .unwrap_or_default(),
        decode: rec.decode.iter().map(|st| st.decode.clone()).collect(),
        summary: rec.comparison.as_ref().map(|c| c.summary.clone()),
        thresholds: Thresholds {
            cos_tol: cfg.cos_tol,
            max_tokens: cfg.max_tokens,
            tie_margin: TIE_MARGIN,
        },
        cpp_backend: rec.cpp_info.clone(),
        run_configuration: rec.run_configuration,
        environment: Environment::detect(rec.threads),
        config_gate: rec.config_gate.clone(),
        locate: rec.locate.clone(),
    };
    receipt.write(path).map_err(|e| e.to_string())
}
