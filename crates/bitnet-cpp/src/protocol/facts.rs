//! The reference's view of a model's configuration ([`ModelFacts`]), for the configuration
//! pre-gate of cross-validation.
//!
//! Each fact says where the reference got it ([`FactSource`]): a `llama.h` getter, the GGUF
//! metadata as the reference loaded it, or the graph the reference actually builds. The graph
//! is the most telling source: the RMSNorm epsilon, the RoPE base and dimensions, the head
//! size, the FFN activation and the output head are read from the operations of a one-token
//! evaluation (their op parameters and shapes), so a reference whose graph builder disagrees
//! with its own metadata — Microsoft's SiLU-instead-of-relu² regression — shows up here.
//!
//! The reference processes record [`GraphNode`]s from ggml's eval callback (no tensor data,
//! nothing computed differently) and [`graph_facts`] turns them into facts, identically for
//! both references.

use serde::{Deserialize, Serialize};

/// Where a fact comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactSource {
    /// A `llama.h` getter (`llama_model_n_layer`, `llama_n_embd`, …).
    Api,
    /// The GGUF metadata as the reference loaded it (`llama_model_meta_val_str`).
    Metadata,
    /// The graph the reference builds, seen through ggml's eval callback during a one-token
    /// evaluation: op parameters and shapes.
    Graph,
}

impl std::fmt::Display for FactSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FactSource::Api => "llama.h getter",
            FactSource::Metadata => "GGUF metadata as loaded",
            FactSource::Graph => "the reference's graph",
        })
    }
}

/// One fact and its source; `value` is `None` when the reference could not determine it
/// (then `note` says why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sourced<T> {
    /// The value.
    pub value: Option<T>,
    /// Where it was read.
    pub source: FactSource,
    /// Why the value is missing, or a detail worth showing (the ops an activation was
    /// recognised from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl<T> Sourced<T> {
    /// A known value.
    pub fn known(value: T, source: FactSource) -> Self {
        Sourced {
            value: Some(value),
            source,
            note: None,
        }
    }

    /// A value the reference could not determine, and why.
    pub fn unknown(source: FactSource, why: impl Into<String>) -> Self {
        Sourced {
            value: None,
            source,
            note: Some(why.into()),
        }
    }

    /// Attach a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// The reference's view of the loaded model (answer to `Request::ModelFacts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub architecture: Sourced<String>,
    /// Layers.
    pub n_layer: Sourced<u64>,
    /// Hidden size.
    pub n_embd: Sourced<u64>,
    /// Attention heads.
    pub n_head: Sourced<u64>,
    /// Key/value heads.
    pub n_head_kv: Sourced<u64>,
    /// Size of one attention head.
    pub head_dim: Sourced<u64>,
    /// Feed-forward size.
    pub n_ff: Sourced<u64>,
    /// Vocabulary size.
    pub n_vocab: Sourced<u64>,
    /// Trained context length.
    pub n_ctx_train: Sourced<u64>,
    /// RoPE pairing: `norm` (adjacent pairs) or `neox` (split halves).
    pub rope_type: Sourced<String>,
    /// RoPE frequency base.
    pub rope_freq_base: Sourced<f64>,
    /// Rotated dimensions per head.
    pub rope_dims: Sourced<u64>,
    /// RMSNorm epsilon.
    pub norm_eps: Sourced<f64>,
    /// The FFN activation: `silu`, `relu_sqr`, `gelu`, or `unknown`.
    pub ffn_activation: Sourced<String>,
    /// The weight tensor the output head multiplies by (`output.weight`, or
    /// `token_embd.weight` when the output is tied to the embedding).
    pub output_head: Sourced<String>,
}

/// A source operand of a [`GraphNode`]: its name, op and op parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSource {
    /// Tensor name (`norm-0`, `blk.0.ffn_up.weight`).
    pub name: String,
    /// `ggml_op_desc` (`RMS_NORM`, `NONE` for a weight).
    pub op: String,
    /// The raw op parameters.
    pub op_params: Vec<i32>,
}

/// One node of the reference's graph as the eval callback sees it before computing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphNode {
    /// Tensor name (`Qcur-0`, `result_output`).
    pub name: String,
    /// `ggml_op_desc`: the op, or the unary / GLU op for those (`ROPE`, `SILU`, `SWIGLU`).
    pub op: String,
    /// Shape, `ne[0]` fastest.
    pub ne: [i64; 4],
    /// The raw op parameters.
    pub op_params: Vec<i32>,
    /// Its first sources.
    pub src: Vec<GraphSource>,
}

/// The facts a graph shows, from the nodes of layer 0 and the output head of a one-token
/// evaluation (nodes named `*-0` and `result_*`, in graph order).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphFacts {
    /// RMSNorm epsilon of `attn_norm-0`.
    pub norm_eps: Sourced<f64>,
    /// RoPE frequency base.
    pub rope_freq_base: Sourced<f64>,
    /// RoPE dimensions.
    pub rope_dims: Sourced<u64>,
    /// Head size (`Qcur-0`'s first dimension).
    pub head_dim: Sourced<u64>,
    /// Key/value heads (`Kcur-0`'s second dimension).
    pub n_head_kv: Sourced<u64>,
    /// FFN size (`ffn_up-0`'s first dimension).
    pub n_ff: Sourced<u64>,
    /// The activation applied between the FFN's gate and its down projection.
    pub ffn_activation: Sourced<String>,
    /// The weight of `result_output`.
    pub output_head: Sourced<String>,
}

fn f32_param(params: &[i32], i: usize) -> Option<f64> {
    params.get(i).map(|&p| f32::from_bits(p as u32) as f64)
}

/// Derive the graph facts from the nodes the eval callback recorded.
pub fn graph_facts(nodes: &[GraphNode]) -> GraphFacts {
    use FactSource::Graph;
    let node = |name: &str| nodes.iter().rev().find(|n| n.name == name);
    let missing = |what: &str| format!("the graph has no {what}");

    let norm_eps = match node("attn_norm-0") {
        Some(n) => match n.src.iter().find(|s| s.op == "RMS_NORM") {
            Some(s) => match f32_param(&s.op_params, 0) {
                Some(eps) => Sourced::known(eps, Graph),
                None => Sourced::unknown(Graph, "RMS_NORM has no parameters"),
            },
            None if n.op == "RMS_NORM" => match f32_param(&n.op_params, 0) {
                Some(eps) => Sourced::known(eps, Graph),
                None => Sourced::unknown(Graph, "RMS_NORM has no parameters"),
            },
            None => Sourced::unknown(Graph, "attn_norm-0 is not an RMSNorm"),
        },
        None => Sourced::unknown(Graph, missing("attn_norm-0")),
    };

    let rope = nodes
        .iter()
        .rev()
        .find(|n| n.name == "Qcur-0" && n.op == "ROPE");
    let (rope_freq_base, rope_dims) = match rope {
        Some(r) => (
            match f32_param(&r.op_params, 5) {
                Some(b) => Sourced::known(b, Graph),
                None => Sourced::unknown(Graph, "ROPE has no frequency base parameter"),
            },
            match r.op_params.get(1) {
                Some(&d) if d > 0 => Sourced::known(d as u64, Graph),
                _ => Sourced::unknown(Graph, "ROPE has no dimension parameter"),
            },
        ),
        None => {
            let why = missing("RoPE on Qcur-0");
            (
                Sourced::unknown(Graph, why.clone()),
                Sourced::unknown(Graph, why),
            )
        }
    };

    let dim = |name: &str, axis: usize| match node(name) {
        Some(n) => Sourced::known(n.ne[axis] as u64, Graph),
        None => Sourced::unknown(Graph, missing(name)),
    };
    let head_dim = match rope {
        Some(r) => Sourced::known(r.ne[0] as u64, Graph),
        None => Sourced::unknown(Graph, missing("RoPE on Qcur-0")),
    };
    let n_head_kv = match nodes
        .iter()
        .rev()
        .find(|n| n.name == "Kcur-0" && n.op == "ROPE")
    {
        Some(k) => Sourced::known(k.ne[1] as u64, Graph),
        None => Sourced::unknown(Graph, missing("RoPE on Kcur-0")),
    };
    // The up projection (llama.cpp names the scaled product `ffn_up_s` when there is a scale,
    // but the plain `ffn_up` is always there).
    let n_ff = dim("ffn_up-0", 0);

    let ffn_activation = activation(nodes);

    let output_head = match node("result_output") {
        Some(n) => match n.src.iter().find(|s| s.name.ends_with(".weight")) {
            Some(w) => Sourced::known(w.name.clone(), Graph),
            None => Sourced::unknown(Graph, "result_output multiplies no named weight"),
        },
        None => Sourced::unknown(Graph, missing("result_output")),
    };

    GraphFacts {
        norm_eps,
        rope_freq_base,
        rope_dims,
        head_dim,
        n_head_kv,
        n_ff,
        ffn_activation,
        output_head,
    }
}

/// The FFN activation of layer 0, recognised from the ops of the nodes named `ffn_*-0`.
fn activation(nodes: &[GraphNode]) -> Sourced<String> {
    let ops: Vec<&str> = nodes
        .iter()
        .filter(|n| n.name.starts_with("ffn_") && n.name.ends_with("-0"))
        .map(|n| n.op.as_str())
        .collect();
    let has = |op: &str| ops.contains(&op);
    let name = if has("SWIGLU") || has("SILU") {
        "silu"
    } else if has("RELU") && has("SQR") {
        "relu_sqr"
    } else if has("GEGLU") || has("GELU") {
        "gelu"
    } else if has("REGLU") || has("RELU") {
        "relu"
    } else {
        return Sourced::unknown(
            FactSource::Graph,
            format!("no known activation among layer 0's FFN ops {ops:?}"),
        );
    };
    let mut shown: Vec<&str> = ops
        .iter()
        .copied()
        .filter(|o| !matches!(*o, "MUL_MAT" | "MUL" | "ADD" | "RMS_NORM" | "NONE"))
        .collect();
    shown.dedup();
    Sourced::known(name.to_string(), FactSource::Graph)
        .with_note(format!("ops {}", shown.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        name: &str,
        op: &str,
        ne: [i64; 4],
        params: Vec<i32>,
        src: Vec<GraphSource>,
    ) -> GraphNode {
        GraphNode {
            name: name.into(),
            op: op.into(),
            ne,
            op_params: params,
            src,
        }
    }

    fn src(name: &str, op: &str, params: Vec<i32>) -> GraphSource {
        GraphSource {
            name: name.into(),
            op: op.into(),
            op_params: params,
        }
    }

    #[test]
    fn facts_come_from_op_parameters_and_shapes() {
        let rope = |name: &str, heads: i64| {
            let mut p = vec![0, 64, 2, 0, 4096];
            p.push(500_000f32.to_bits() as i32);
            node(name, "ROPE", [64, heads, 1, 1], p, vec![])
        };
        let nodes = vec![
            node(
                "attn_norm-0",
                "MUL",
                [256, 1, 1, 1],
                vec![],
                vec![src("norm-0", "RMS_NORM", vec![1e-5f32.to_bits() as i32])],
            ),
            node("Qcur-0", "MUL_MAT", [256, 1, 1, 1], vec![], vec![]),
            rope("Qcur-0", 4),
            rope("Kcur-0", 2),
            node("ffn_up-0", "MUL_MAT", [512, 1, 1, 1], vec![], vec![]),
            node("ffn_relu-0", "RELU", [512, 1, 1, 1], vec![], vec![]),
            node("ffn_sqr(relu)-0", "SQR", [512, 1, 1, 1], vec![], vec![]),
            node(
                "result_output",
                "MUL_MAT",
                [1000, 1, 1, 1],
                vec![],
                vec![
                    src("token_embd.weight", "NONE", vec![]),
                    src("result_norm", "MUL", vec![]),
                ],
            ),
        ];
        let f = graph_facts(&nodes);
        assert_eq!(f.norm_eps.value, Some(1e-5f32 as f64));
        assert_eq!(f.rope_freq_base.value, Some(500_000.0));
        assert_eq!(f.rope_dims.value, Some(64));
        assert_eq!((f.head_dim.value, f.n_head_kv.value), (Some(64), Some(2)));
        assert_eq!(f.n_ff.value, Some(512));
        assert_eq!(f.ffn_activation.value.as_deref(), Some("relu_sqr"));
        assert_eq!(f.output_head.value.as_deref(), Some("token_embd.weight"));
    }

    #[test]
    fn missing_nodes_are_unknown_with_a_reason() {
        let f = graph_facts(&[node("ffn_swiglu-0", "SWIGLU", [8, 1, 1, 1], vec![], vec![])]);
        assert_eq!(f.ffn_activation.value.as_deref(), Some("silu"));
        assert!(f.norm_eps.value.is_none());
        assert!(f.norm_eps.note.as_deref().unwrap().contains("attn_norm-0"));
        assert!(f.rope_freq_base.value.is_none());
    }
}
