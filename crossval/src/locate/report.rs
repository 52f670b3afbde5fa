//! What `--locate` found: the report's data (serialised as the JSON document's and the
//! receipt's `locate` object) and its text rendering.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::metrics::TensorMetrics;
use super::tolerance::LocateTolerance;
use super::LocateMode;
use crate::logits_compare::float_repr;

/// One engine tensor compared with its reference tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorResult {
    /// The engine's name (`ffn_norm-3`, `result_output`).
    pub name: String,
    /// The op (`ffn_norm`).
    pub op: String,
    /// The layer (`None` after the last layer).
    pub layer: Option<usize>,
    /// The reference tensor it was compared with (`ffn_up_s-3` where mapped).
    pub reference: String,
    /// The reference's op (`ggml_op_desc`).
    pub reference_op: String,
    /// The reference tensor's shape, `ne[0]` fastest.
    pub reference_shape: [u64; 4],
    /// The type the reference computed it in.
    pub reference_dtype: String,
    /// Token positions (rows) compared.
    pub positions: usize,
    /// Values per row on the engine side.
    pub row_len: usize,
    /// The whole-tensor metrics (`None` when the two could not be compared: see `note`).
    pub metrics: Option<TensorMetrics>,
    /// The first position (sequence index) beyond the tolerance.
    pub first_position_beyond: Option<usize>,
    /// The position where the tolerance's measure is worst.
    pub worst_position: Option<usize>,
    /// Every position within the tolerance.
    pub within: bool,
    /// Why the two could not be compared, when they could not.
    pub note: Option<String>,
}

/// The first tensor beyond the tolerance, and the ones compared just before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// The tensor.
    pub tensor: TensorResult,
    /// Up to four tensors compared before it, in graph order.
    pub before: Vec<TensorResult>,
}

/// One layer's tensors at a glance (`layer` `None`: the tensors after the last layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    /// The layer.
    pub layer: Option<usize>,
    /// Tensors compared.
    pub tensors: usize,
    /// Tensors beyond the tolerance.
    pub beyond: usize,
    /// The tensor with the largest NMSE.
    pub worst_tensor: String,
    /// Its NMSE.
    #[serde(with = "float_repr")]
    pub max_nmse: f64,
    /// Largest absolute difference in the layer.
    #[serde(with = "float_repr")]
    pub max_abs_diff: f64,
    /// Smallest row cosine in the layer.
    #[serde(with = "float_repr")]
    pub min_cosine: f64,
}

/// Everything `--locate` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocateReport {
    /// `first` or `all`.
    pub mode: LocateMode,
    /// The tolerance.
    pub tolerance: LocateTolerance,
    /// Tensors compared.
    pub tensors_compared: usize,
    /// The first tensor beyond the tolerance, if any.
    pub first_divergence: Option<Divergence>,
    /// Every tensor compared, in graph order (`first` stops at the divergence).
    pub tensors: Vec<TensorResult>,
    /// One summary per layer, in order.
    pub layers: Vec<LayerSummary>,
    /// The explicit mappings used (names or layouts that differ between the graphs).
    pub mappings: Vec<String>,
    /// Engine tensors the reference did not produce (not compared).
    pub engine_only: Vec<String>,
    /// Reference tensors no engine tensor was compared with.
    pub reference_only: Vec<String>,
    /// Tensors of the graph neither side forms in this run configuration, each with why
    /// (the attention weights under flash attention).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_computed: Vec<String>,
    /// Whether comparison stopped at the first divergence (`first`).
    pub stopped_early: bool,
}

/// A cosine, with the distance from 1 shown when six decimals would round it away (a
/// per-row scale error leaves the cosine at 1 − 1e-9 while the NMSE sees it).
fn cosine_text(c: f64) -> String {
    if c != 1.0 && c > 0.999_999_5 {
        format!("1−{:.1e}", 1.0 - c)
    } else {
        format!("{c:.6}")
    }
}

fn metrics_text(r: &TensorResult) -> String {
    match &r.metrics {
        Some(m) => format!(
            "nmse {:.2e}  max |Δ| {:.2e}  cos {}",
            m.nmse,
            m.max_abs_diff,
            cosine_text(m.min_cosine)
        ),
        None => format!("not compared: {}", r.note.as_deref().unwrap_or("no values")),
    }
}

fn mark(within: bool) -> &'static str {
    if within {
        "✓"
    } else {
        "✗"
    }
}

fn line(r: &TensorResult, width: usize) -> String {
    let mapped = if r.reference != r.name {
        format!("  (↔ {})", r.reference)
    } else {
        String::new()
    };
    let at = match (r.within, r.first_position_beyond) {
        (false, Some(p)) => format!("  first beyond at position {p}"),
        _ => String::new(),
    };
    format!(
        "{} {:<width$} {}{at}{mapped}",
        mark(r.within),
        r.name,
        metrics_text(r)
    )
}

fn layer_name(layer: Option<usize>) -> String {
    match layer {
        Some(l) => format!("layer {l}"),
        None => "output".to_string(),
    }
}

/// The text section of a `--locate` run.
pub fn render_text(r: &LocateReport) -> String {
    let mut s = String::new();
    let what = match r.mode {
        LocateMode::First => "the first tensor beyond",
        LocateMode::All => "every tensor against",
    };
    let _ = writeln!(
        s,
        "locate: {what} {} — {} tensors compared in graph order",
        r.tolerance, r.tensors_compared
    );
    let width = r.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
    if r.mode == LocateMode::All {
        for t in &r.tensors {
            let _ = writeln!(s, "  {}", line(t, width));
        }
    }
    match &r.first_divergence {
        Some(d) => {
            let t = &d.tensor;
            let position = t
                .first_position_beyond
                .map(|p| format!("position {p}, "))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "✗ first divergence: {} ({}, op {}), {position}shape {} positions × {} (reference {} {:?} {})",
                t.name,
                layer_name(t.layer),
                t.op,
                t.positions,
                t.row_len,
                t.reference,
                t.reference_shape,
                t.reference_dtype
            );
            let _ = writeln!(s, "    {}", metrics_text(t));
            if !d.before.is_empty() {
                let _ = writeln!(s, "  the steps just before it:");
                for b in &d.before {
                    let _ = writeln!(s, "    {}", line(b, width));
                }
            }
        }
        None => {
            let _ = writeln!(s, "✓ no tensor beyond {}", r.tolerance);
        }
    }
    let _ = writeln!(s, "  per layer (worst tensor by NMSE):");
    for l in &r.layers {
        let _ = writeln!(
            s,
            "    {} {:<8} nmse {:.2e} ({})  max |Δ| {:.2e}  min cos {}  {}/{} beyond",
            mark(l.beyond == 0),
            layer_name(l.layer),
            l.max_nmse,
            l.worst_tensor,
            l.max_abs_diff,
            cosine_text(l.min_cosine),
            l.beyond,
            l.tensors
        );
    }
    if r.stopped_early {
        let _ = writeln!(
            s,
            "  (stopped at the first divergence; --locate all compares every tensor)"
        );
    }
    if !r.mappings.is_empty() {
        let _ = writeln!(s, "  mapped explicitly:");
        for m in &r.mappings {
            let _ = writeln!(s, "    {m}");
        }
    }
    for why in &r.not_computed {
        let _ = writeln!(s, "  not computed in this configuration: {why}");
    }
    if !r.engine_only.is_empty() {
        let _ = writeln!(
            s,
            "  not produced by the reference (not compared): {}",
            r.engine_only.join(", ")
        );
    }
    if !r.reference_only.is_empty() {
        let _ = writeln!(
            s,
            "  reference tensors without an engine counterpart: {}",
            r.reference_only.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosines_close_to_one_show_their_distance() {
        assert_eq!(cosine_text(1.0), "1.000000");
        assert_eq!(cosine_text(0.999_999_99), "1−1.0e-8");
        assert_eq!(cosine_text(0.99995), "0.999950");
    }
}
