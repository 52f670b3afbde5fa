//! Watching a forward pass: its intermediate tensors, under the names llama.cpp's graph gives
//! them.
//!
//! Knowing *that* two engines' logits differ is half an answer; the other half is *where* the
//! difference starts. An [`Observer`] handed to [`crate::Model::eval`] sees every intermediate
//! tensor it asks for the moment the forward pass has produced it, named as llama.cpp names
//! the same tensor in its graph callback (`attn_norm-5`, `ffn_inp-5`, `result_output`), so a
//! caller can compare the engine with a reference op by op, or check values as they appear
//! (the first layer where a NaN shows up), without holding the whole pass in memory.
//!
//! Observation is off unless an observer is given; then each tap point costs one call to
//! [`Observer::wants`]. [`graph_ops`] lists, per architecture, the names a pass shows, in
//! the order it produces them.

use std::fmt;

use crate::Architecture;

/// A named intermediate tensor: llama.cpp's base name and, for per-layer tensors, the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorName {
    /// llama.cpp's base name (`attn_norm`, `Qcur`, `ffn_out`, `result_output`, …).
    pub op: &'static str,
    /// The layer, or `None` for the tensors after the last layer.
    pub layer: Option<usize>,
}

impl TensorName {
    /// A tensor of layer `layer`.
    pub fn layer(op: &'static str, layer: usize) -> TensorName {
        TensorName {
            op,
            layer: Some(layer),
        }
    }

    /// A tensor after the last layer (`result_norm`, `result_output`).
    pub fn output(op: &'static str) -> TensorName {
        TensorName { op, layer: None }
    }
}

/// `op-N` for a layer's tensor, `op` alone otherwise: llama.cpp's `ggml_format_name(cur,
/// "%s-%d", name, il)` convention.
impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "{}-{l}", self.op),
            None => f.write_str(self.op),
        }
    }
}

/// The tensors the engine exposes, in the order a forward pass produces them. Each
/// architecture's layer uses its reference's names, which differ where the graphs differ:
///
/// | step | `llama` (llama.cpp) | `bitnet` (llama.cpp) | `bitnet-b1.58` (bitnet.cpp) |
/// |---|---|---|---|
/// | attention weights | `kq_soft_max` | `kq_soft_max` | `kq_soft_max_ext` |
/// | attention block output | `attn_out` | `attn_out` | `attn_o_out` |
/// | gated activation | `ffn_swiglu` | `ffn_sub_out` | `ffn_out` |
/// | FFN block output | `ffn_out` | `ffn_down` | `ffn_down` |
pub mod names {
    /// Pre-attention RMSNorm output.
    pub const ATTN_NORM: &str = "attn_norm";
    /// Queries after RoPE.
    pub const QCUR: &str = "Qcur";
    /// Keys after RoPE.
    pub const KCUR: &str = "Kcur";
    /// Values.
    pub const VCUR: &str = "Vcur";
    /// The attention weights (softmax of the scaled, masked scores): per position, every
    /// head's weights over the cached positions so far (`n_heads × n_cached` values; zero
    /// past the position itself).
    pub const KQ_SOFT_MAX: &str = "kq_soft_max";
    /// bitnet.cpp's name for [`KQ_SOFT_MAX`].
    pub const KQ_SOFT_MAX_EXT: &str = "kq_soft_max_ext";
    /// All heads' attention output, before any sub-norm and the output projection
    /// (`build_attn`'s `kqv_out`).
    pub const KQV_OUT: &str = "kqv_out";
    /// BitNet: RMSNorm of the attention output.
    pub const ATTN_SUB_NORM: &str = "attn_sub_norm";
    /// The attention block's output after the output projection (and its scale).
    pub const ATTN_OUT: &str = "attn_out";
    /// bitnet.cpp's name for [`ATTN_OUT`].
    pub const ATTN_O_OUT: &str = "attn_o_out";
    /// The residual stream entering the feed-forward block.
    pub const FFN_INP: &str = "ffn_inp";
    /// Pre-FFN RMSNorm output.
    pub const FFN_NORM: &str = "ffn_norm";
    /// FFN up projection.
    pub const FFN_UP: &str = "ffn_up";
    /// FFN gate projection.
    pub const FFN_GATE: &str = "ffn_gate";
    /// `llama`: SiLU(gate) · up (llama.cpp's fused swiglu).
    pub const FFN_SWIGLU: &str = "ffn_swiglu";
    /// `bitnet`: SiLU(gate) · up, before the sub-norm.
    pub const FFN_SUB_OUT: &str = "ffn_sub_out";
    /// BitNet: RMSNorm of the gated activation.
    pub const FFN_SUB_NORM: &str = "ffn_sub_norm";
    /// BitNet: the down projection (and its scale), the FFN block's output.
    pub const FFN_DOWN: &str = "ffn_down";
    /// `llama`: the FFN block's output; `bitnet-b1.58`: relu²(gate) · up (bitnet.cpp names
    /// what `llm_build_ffn` returns `ffn_out`, and it has no down projection there).
    pub const FFN_OUT: &str = "ffn_out";
    /// The layer's output (the residual stream after the feed-forward block).
    pub const L_OUT: &str = "l_out";
    /// Final RMSNorm output.
    pub const RESULT_NORM: &str = "result_norm";
    /// The logits.
    pub const RESULT_OUTPUT: &str = "result_output";
}

/// The tensors a pass of `arch` shows, in the order it produces them: those of each layer
/// (named `op-N`), then those after the last layer. With flash attention on, the attention
/// weights (`kq_soft_max`, `kq_soft_max_ext`) are not formed, in ggml's graph or the engine's,
/// and are not shown.
pub fn graph_ops(arch: Architecture) -> (&'static [&'static str], &'static [&'static str]) {
    use names::*;
    const OUTPUT: &[&str] = &[RESULT_NORM, RESULT_OUTPUT];
    let layer: &'static [&'static str] = match arch {
        Architecture::Llama => &[
            ATTN_NORM,
            QCUR,
            KCUR,
            VCUR,
            KQ_SOFT_MAX,
            KQV_OUT,
            ATTN_OUT,
            FFN_INP,
            FFN_NORM,
            FFN_UP,
            FFN_GATE,
            FFN_SWIGLU,
            FFN_OUT,
            L_OUT,
        ],
        Architecture::Bitnet => &[
            ATTN_NORM,
            QCUR,
            KCUR,
            VCUR,
            KQ_SOFT_MAX,
            KQV_OUT,
            ATTN_SUB_NORM,
            ATTN_OUT,
            FFN_INP,
            FFN_NORM,
            FFN_UP,
            FFN_GATE,
            FFN_SUB_OUT,
            FFN_SUB_NORM,
            FFN_DOWN,
            L_OUT,
        ],
        Architecture::BitnetB158 => &[
            ATTN_NORM,
            QCUR,
            KCUR,
            VCUR,
            KQ_SOFT_MAX_EXT,
            KQV_OUT,
            ATTN_SUB_NORM,
            ATTN_O_OUT,
            FFN_INP,
            FFN_NORM,
            FFN_UP,
            FFN_GATE,
            FFN_OUT,
            FFN_SUB_NORM,
            FFN_DOWN,
            L_OUT,
        ],
    };
    (layer, OUTPUT)
}

/// One tensor as the forward pass hands it to an [`Observer`]: rows of `row_len` f32 values,
/// token-major, one row per entry of `positions`.
#[derive(Debug, Clone, Copy)]
pub struct Tapped<'a> {
    /// Which tensor.
    pub name: TensorName,
    /// The sequence position of each row (after the last layer keeps only the output rows,
    /// fewer than the tokens evaluated).
    pub positions: &'a [usize],
    /// Values per row.
    pub row_len: usize,
    /// `positions.len() × row_len` values.
    pub data: &'a [f32],
}

impl Tapped<'_> {
    /// Row `i` (the tensor at `positions[i]`).
    ///
    /// # Panics
    /// If `i >= positions.len()`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.row_len..(i + 1) * self.row_len]
    }
}

/// Sees the intermediate tensors of a forward pass as they are produced.
pub trait Observer {
    /// Whether to be shown `name` (asked once per tensor per micro-batch — a batch longer
    /// than the run configuration's `n_ubatch` passes through the layers in slices, as in
    /// llama.cpp, and each slice shows its own rows; answering `false` costs nothing
    /// further).
    fn wants(&mut self, name: TensorName) -> bool;

    /// The tensor, borrowed for the duration of the call.
    fn observe(&mut self, tensor: Tapped<'_>);
}

/// The forward pass's handle on an optional observer.
pub(crate) struct Tap<'o> {
    observer: Option<&'o mut dyn Observer>,
}

impl<'o> Tap<'o> {
    pub fn new(observer: Option<&'o mut dyn Observer>) -> Self {
        Tap { observer }
    }

    /// Show `data` (rows of `row_len`, one per position) to the observer, if it wants it.
    #[inline]
    pub fn emit(&mut self, name: TensorName, positions: &[usize], row_len: usize, data: &[f32]) {
        if self.wants(name) {
            self.show(name, positions, row_len, data);
        }
    }

    /// Whether the observer wants `name` (for a tensor the pass only assembles when asked);
    /// show it with [`Tap::show`].
    #[inline]
    pub fn wants(&mut self, name: TensorName) -> bool {
        self.observer.as_deref_mut().is_some_and(|o| o.wants(name))
    }

    /// Show a tensor the observer said it wants.
    pub fn show(&mut self, name: TensorName, positions: &[usize], row_len: usize, data: &[f32]) {
        if let Some(o) = self.observer.as_deref_mut() {
            o.observe(Tapped {
                name,
                positions,
                row_len,
                data,
            });
        }
    }
}

/// Finds the first tensor of a pass (in the order the pass produces them) that holds a NaN or
/// an infinity: where non-finite logits come from.
#[derive(Debug, Default)]
pub struct FirstNonFinite {
    found: Option<NonFiniteAt>,
}

/// Where non-finite values first appeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFiniteAt {
    /// The tensor.
    pub name: TensorName,
    /// The first position whose row has one.
    pub position: usize,
    /// How many of that row's values are NaN or ±∞.
    pub count: usize,
    /// The row's length.
    pub row_len: usize,
}

impl fmt::Display for NonFiniteAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (position {}: {} of {} values)",
            self.name, self.position, self.count, self.row_len
        )
    }
}

impl FirstNonFinite {
    /// An observer that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first tensor with a non-finite value, once the pass has run.
    pub fn found(&self) -> Option<&NonFiniteAt> {
        self.found.as_ref()
    }
}

impl Observer for FirstNonFinite {
    fn wants(&mut self, _: TensorName) -> bool {
        self.found.is_none()
    }

    fn observe(&mut self, t: Tapped<'_>) {
        for (i, &position) in t.positions.iter().enumerate() {
            let count = t.row(i).iter().filter(|v| !v.is_finite()).count();
            if count > 0 {
                self.found = Some(NonFiniteAt {
                    name: t.name,
                    position,
                    count,
                    row_len: t.row_len,
                });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_as_llama_cpp_formats_them() {
        assert_eq!(TensorName::layer("attn_norm", 3).to_string(), "attn_norm-3");
        assert_eq!(
            TensorName::output("result_output").to_string(),
            "result_output"
        );
    }

    struct Only(&'static str, Vec<(String, Vec<usize>, usize)>);

    impl Observer for Only {
        fn wants(&mut self, name: TensorName) -> bool {
            name.op == self.0
        }
        fn observe(&mut self, t: Tapped<'_>) {
            self.1
                .push((t.name.to_string(), t.positions.to_vec(), t.data.len()));
        }
    }

    #[test]
    fn a_tap_shows_only_what_is_wanted() {
        let mut seen = Only("ffn_out", Vec::new());
        {
            let mut tap = Tap::new(Some(&mut seen));
            tap.emit(TensorName::layer("attn_norm", 0), &[0, 1], 2, &[0.0; 4]);
            tap.emit(TensorName::layer("ffn_out", 0), &[0, 1], 2, &[1.0; 4]);
        }
        assert_eq!(seen.1, vec![("ffn_out-0".to_string(), vec![0, 1], 4)]);
        // No observer: nothing to call.
        Tap::new(None).emit(TensorName::output("result_norm"), &[0], 1, &[0.0]);
    }

    #[test]
    fn the_first_non_finite_tensor_is_named() {
        let mut first = FirstNonFinite::new();
        {
            let mut tap = Tap::new(Some(&mut first));
            tap.emit(TensorName::layer("attn_norm", 0), &[0, 1], 2, &[0.0; 4]);
            tap.emit(
                TensorName::layer("Qcur", 0),
                &[0, 1],
                2,
                &[0.0, 1.0, f32::NAN, 2.0],
            );
            tap.emit(
                TensorName::layer("Kcur", 0),
                &[0, 1],
                2,
                &[f32::INFINITY; 4],
            );
        }
        let at = first.found().unwrap();
        assert_eq!(at.to_string(), "Qcur-0 (position 1: 1 of 2 values)");
    }
}
