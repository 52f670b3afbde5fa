//! The configuration pre-gate: before any logits, the reference's view of the model against
//! the engine's.
//!
//! Comparing logits of two differently configured models explains nothing: a wrong RoPE base
//! or the wrong activation shows up as "diverged" at every position, with no hint why. So the
//! hyper-parameters are compared first — the architecture, layers, heads, KV heads, head
//! size, FFN size, RoPE type, base and dimensions, the RMSNorm epsilon, the FFN activation,
//! the vocabulary size and the output head — each as the engine reads it and as the reference
//! does ([`ModelFacts`]: `llama.h` getters, the GGUF metadata as loaded, or the graph it
//! builds). A difference stops the run like a token mismatch (exit 2) with both values and a
//! fix-it hint. Different tensor *types* are allowed — `--cpp-model` with the f32 original
//! of a quantized model is the point of that flag — and are listed.

use std::fmt::Write as _;
use std::path::Path;

use bitnet_cpp::protocol::{FactSource, ModelFacts, Sourced};
use bitnet_gguf::GgufFile;
use bitnet_inference::{Model, RopeStyle};
use serde::{Deserialize, Serialize};

/// How one fact compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactStatus {
    /// Both sides agree.
    Same,
    /// They disagree: the run stops.
    Differs,
    /// The reference could not determine it (its `note` says why): not compared.
    Unknown,
    /// Shown, not compared (it does not change what is computed for a prompt that fits).
    Informational,
}

/// One hyper-parameter on both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactRow {
    /// The fact (`rope_freq_base`).
    pub name: String,
    /// The engine's value.
    pub engine: String,
    /// The reference's value (`None`: unknown).
    pub reference: Option<String>,
    /// Where the reference read it.
    pub source: FactSource,
    /// A detail from the reference (why unknown; the ops an activation was read from).
    pub note: Option<String>,
    /// The comparison.
    pub status: FactStatus,
}

/// A tensor whose type differs between the engine's file and the reference's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeDifference {
    /// Tensor name.
    pub tensor: String,
    /// Its type in `--model`.
    pub engine: String,
    /// Its type in `--cpp-model`.
    pub reference: String,
}

/// The gate's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigGate {
    /// `true` when no compared fact differs.
    pub ok: bool,
    /// Every fact, in a fixed order.
    pub facts: Vec<FactRow>,
    /// Tensors of different types (allowed; only with `--cpp-model`).
    pub tensor_types: Vec<TypeDifference>,
    /// Fix-it hints for the differing facts.
    pub hints: Vec<String>,
}

/// How a fact's value is shown.
trait FactText {
    fn text(&self) -> String;
}

impl FactText for u64 {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl FactText for String {
    fn text(&self) -> String {
        self.clone()
    }
}

/// Both sides' floats are f32 values (the engine's config, the reference's op parameters):
/// shown as the shortest f32 that reads back exactly (`1e-5`, not `0.000009999999747…`).
impl FactText for f64 {
    fn text(&self) -> String {
        let narrow = *self as f32;
        if narrow as f64 == *self {
            shortest_f32(narrow)
        } else {
            self.to_string()
        }
    }
}

/// `1e-5`, `10000`, `500000`, `0.5`: plain notation between 1e-3 and 1e7, else scientific.
fn shortest_f32(v: f32) -> String {
    if v == 0.0 || (1e-3..1e7).contains(&v.abs()) {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

fn row<T: FactText + PartialEq>(
    name: &str,
    engine: T,
    reference: &Sourced<T>,
    informational: bool,
) -> FactRow {
    let status = match &reference.value {
        None => FactStatus::Unknown,
        Some(_) if informational => FactStatus::Informational,
        Some(v) if *v == engine => FactStatus::Same,
        Some(_) => FactStatus::Differs,
    };
    FactRow {
        name: name.to_string(),
        engine: engine.text(),
        reference: reference.value.as_ref().map(T::text),
        source: reference.source,
        note: reference.note.clone(),
        status,
    }
}

/// Compare the engine's model with the reference's view of its own (`cpp_model`: the file
/// the reference loaded, when it is not `model`).
///
/// # Errors
/// The reference's file cannot be read (its tensor types).
pub fn check(
    engine: &Model,
    model: &Path,
    cpp_model: Option<&Path>,
    facts: &ModelFacts,
) -> Result<ConfigGate, String> {
    let c = engine.config();
    let rope_type = match c.rope_style {
        RopeStyle::Norm => "norm",
        RopeStyle::Neox => "neox",
    };
    let f = facts;
    let rows = vec![
        row(
            "architecture",
            c.arch.name().to_string(),
            &f.architecture,
            false,
        ),
        row("n_layer", c.n_layers as u64, &f.n_layer, false),
        row("n_embd", c.dim as u64, &f.n_embd, false),
        row("n_head", c.n_heads as u64, &f.n_head, false),
        row("n_head_kv", c.n_kv_heads as u64, &f.n_head_kv, false),
        row("head_dim", c.head_dim as u64, &f.head_dim, false),
        row("n_ff", c.ffn_dim as u64, &f.n_ff, false),
        row("rope_type", rope_type.to_string(), &f.rope_type, false),
        row(
            "rope_freq_base",
            c.rope_base as f64,
            &f.rope_freq_base,
            false,
        ),
        row("rope_dims", c.rope_dims as u64, &f.rope_dims, false),
        row("norm_eps", c.rms_eps as f64, &f.norm_eps, false),
        row(
            "ffn_activation",
            c.arch.ffn_activation().to_string(),
            &f.ffn_activation,
            false,
        ),
        row("n_vocab", c.n_vocab as u64, &f.n_vocab, false),
        row(
            "output_head",
            engine.output_head().to_string(),
            &f.output_head,
            false,
        ),
        row("n_ctx_train", c.context_length as u64, &f.n_ctx_train, true),
    ];
    let tensor_types = match cpp_model {
        Some(other) => type_differences(engine.file(), other)?,
        None => Vec::new(),
    };
    let hints = rows
        .iter()
        .filter(|r| r.status == FactStatus::Differs)
        .map(|r| hint(r, model, cpp_model))
        .collect();
    Ok(ConfigGate {
        ok: rows.iter().all(|r| r.status != FactStatus::Differs),
        facts: rows,
        tensor_types,
        hints,
    })
}

fn type_differences(engine: &GgufFile, other: &Path) -> Result<Vec<TypeDifference>, String> {
    let other = GgufFile::open(other).map_err(|e| format!("{}: {e}", other.display()))?;
    Ok(engine
        .tensors()
        .iter()
        .filter_map(|t| {
            let o = other.tensor(&t.name)?;
            (o.ty != t.ty).then(|| TypeDifference {
                tensor: t.name.clone(),
                engine: t.ty.to_string(),
                reference: o.ty.to_string(),
            })
        })
        .collect())
}

/// A fix-it hint that is true for this difference.
fn hint(r: &FactRow, model: &Path, cpp_model: Option<&Path>) -> String {
    let theirs = r.reference.as_deref().unwrap_or("?");
    if let Some(other) = cpp_model {
        return format!(
            "{}: {} in {} but {theirs} in {}: --cpp-model must be the same model in another precision (e.g. its f32 original), not another model",
            r.name,
            r.engine,
            model.display(),
            other.display()
        );
    }
    match r.name.as_str() {
        "ffn_activation" => format!(
            "ffn_activation: the reference's graph applies {theirs} where the engine applies {} for this architecture: one of them builds it wrongly (bitnet.cpp versions that regressed bitnet-b1.58 to SiLU show exactly this); check the reference's pin before trusting its logits",
            r.engine
        ),
        _ => format!(
            "{}: the engine reads {} and the reference ({}) {theirs} from the same file: see the file's own value with `cargo run -p bitnet-cli -- inspect {}`; the side that disagrees with it has the bug",
            r.name,
            r.engine,
            r.source,
            crate::token_parity::shell_quote(&model.display().to_string())
        ),
    }
}

impl ConfigGate {
    /// The facts as an aligned table, differing ones marked.
    pub fn table(&self) -> String {
        let mut s = format!(
            "    {:<16} {:<20} {:<20} source\n",
            "fact", "engine", "reference"
        );
        for r in &self.facts {
            let mark = match r.status {
                FactStatus::Same => "✓",
                FactStatus::Differs => "✗",
                FactStatus::Unknown | FactStatus::Informational => "·",
            };
            let reference = r.reference.as_deref().unwrap_or("unknown");
            let note = r
                .note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {mark} {:<16} {:<20} {:<20} {}{note}",
                r.name, r.engine, reference, r.source
            );
        }
        s
    }

    /// The report of a stopped run (stderr).
    pub fn mismatch_report(&self) -> String {
        let mut s = String::from(
            "Configuration mismatch: the engine and the C++ reference disagree on the model's hyper-parameters; no logits were compared\n",
        );
        s.push_str(&self.table());
        for h in &self.hints {
            let _ = writeln!(s, "  fix: {h}");
        }
        s
    }

    /// The allowed tensor-type differences, one line (empty when there are none).
    pub fn types_line(&self) -> String {
        if self.tensor_types.is_empty() {
            return String::new();
        }
        let mut by_pair: Vec<((String, String), usize)> = Vec::new();
        for t in &self.tensor_types {
            let key = (t.engine.clone(), t.reference.clone());
            match by_pair.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => by_pair.push((key, 1)),
            }
        }
        let parts: Vec<String> = by_pair
            .iter()
            .map(|((e, r), n)| format!("{n} × {e} here, {r} in --cpp-model"))
            .collect();
        format!(
            "config: hyper-parameters identical; tensor types differ (allowed): {}\n",
            parts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_compare_exactly_and_unknowns_are_not_differences() {
        let known = Sourced::known(10_000.0, FactSource::Graph);
        assert_eq!(row("b", 10_000.0, &known, false).status, FactStatus::Same);
        assert_eq!(
            row("b", 500_000.0, &known, false).status,
            FactStatus::Differs
        );
        assert_eq!(
            row("b", 500_000.0, &known, true).status,
            FactStatus::Informational
        );
        let unknown: Sourced<f64> = Sourced::unknown(FactSource::Graph, "no RoPE node");
        let r = row("b", 1.0, &unknown, false);
        assert_eq!(r.status, FactStatus::Unknown);
        assert_eq!(r.note.as_deref(), Some("no RoPE node"));
    }

    #[test]
    fn floats_show_as_the_f32_they_are() {
        assert_eq!((1e-5f32 as f64).text(), "1e-5");
        assert_eq!((10_000f32 as f64).text(), "10000");
        assert_eq!((500_000f32 as f64).text(), "500000");
        assert_eq!(0.1f64.text(), "0.1");
    }

    #[test]
    fn hints_name_the_files_and_the_values() {
        let r = FactRow {
            name: "rope_freq_base".into(),
            engine: "10000".into(),
            reference: Some("500000".into()),
            source: FactSource::Graph,
            note: None,
            status: FactStatus::Differs,
        };
        let h = hint(&r, Path::new("a.gguf"), Some(Path::new("b.gguf")));
        assert!(h.contains("10000 in a.gguf but 500000 in b.gguf"), "{h}");
        let h = hint(&r, Path::new("a.gguf"), None);
        assert!(h.contains("inspect a.gguf"), "{h}");
        // The command is pasteable when the path needs quoting.
        let h = hint(&r, Path::new("my models/a.gguf"), None);
        assert!(h.contains("inspect 'my models/a.gguf'"), "{h}");
    }
}
