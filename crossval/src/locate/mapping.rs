//! Which reference tensor each engine tensor is compared with, and how the reference's
//! layout becomes the engine's (one row per token position).
//!
//! The engine names its tensors as its reference's graph does, so most map to the tensor of
//! the same name with the same values in the same order. Two steps differ and are mapped
//! explicitly (and listed in every report that uses them):
//! - upstream `bitnet`'s scalar matmul scales: llama.cpp multiplies `ffn_up` and `ffn_gate`
//!   by their scale in separate ops named `ffn_up_s` / `ffn_gate_s`; the engine's `ffn_up` /
//!   `ffn_gate` include the scale, so they are compared with the `_s` tensors when the
//!   reference has them;
//! - the attention weights: the reference's `kq_soft_max` is `[kv cells, tokens, heads]`
//!   over its padded KV view (256 cells in llama.cpp, 32 in bitnet.cpp); the engine's rows
//!   are `heads × cached positions`, zero-extended here to the reference's cells and
//!   compared token by token.

use bitnet_cpp::protocol::TensorFrame;

/// How a reference tensor's values become token-major rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Already one row per token (the token is the outermost dimension).
    Rows,
    /// `[cells, tokens, heads]` attention weights.
    AttentionWeights,
}

/// The reference tensor an engine op is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The scaled product the reference names separately, preferred when present.
    pub scaled: Option<&'static str>,
    /// The reference's base name otherwise (the engine's own).
    pub name: &'static str,
    /// The reference's layout.
    pub layout: Layout,
}

impl Target {
    /// Candidate reference base names, preferred first.
    pub fn candidates(&self) -> impl Iterator<Item = &'static str> {
        self.scaled.into_iter().chain([self.name])
    }
}

/// The reference tensor for the engine's `op`.
pub fn target(op: &'static str) -> Target {
    let scaled = match op {
        "ffn_up" => Some("ffn_up_s"),
        "ffn_gate" => Some("ffn_gate_s"),
        _ => None,
    };
    let layout = if op.starts_with("kq_soft_max") {
        Layout::AttentionWeights
    } else {
        Layout::Rows
    };
    Target {
        scaled,
        name: op,
        layout,
    }
}

/// What a report says about a mapping that was used, for the reference name `used` of the
/// engine op `op` (`None` for an identity mapping).
pub fn explain(
    op: &str,
    used: &str,
    reference: &TensorFrame,
    engine_width: usize,
) -> Option<String> {
    let (base, _) = bitnet_cpp::protocol::capture::split_layer(used);
    if base.ends_with("_s") && base.trim_end_matches("_s") == op {
        return Some(format!(
            "{op} ↔ {base}: llama.cpp multiplies upstream bitnet's scalar scale in its own op; the engine's {op} includes it"
        ));
    }
    if op.starts_with("kq_soft_max") {
        return Some(format!(
            "{op}: the reference's weights span its padded KV view ({} cells); the engine's ({} cached positions) are zero-extended to it",
            reference.ne[0], engine_width
        ));
    }
    None
}

/// The two sides as comparable token-major rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Aligned {
    /// The reference's values, one row per token.
    pub reference: Vec<f32>,
    /// The engine's rows widened to the reference's, when the layouts differ (`None`: the
    /// engine's own rows compare as they are).
    pub engine: Option<Vec<f32>>,
    /// Values per row.
    pub row_len: usize,
}

/// The reference's values as token-major rows comparable with the engine's rows of
/// `engine_row_len`, and the engine's rows widened to match when the layouts differ.
/// `Err` says why the two shapes cannot be compared.
pub fn align(
    layout: Layout,
    reference: &TensorFrame,
    values: Vec<f32>,
    engine: &[f32],
    rows: usize,
    engine_row_len: usize,
) -> Result<Aligned, String> {
    let ne = reference.ne.map(|n| n as usize);
    match layout {
        Layout::Rows => {
            let boundary = (1..=4).any(|k| ne[..k].iter().product::<usize>() == engine_row_len);
            if values.len() != rows * engine_row_len || !boundary {
                return Err(format!(
                    "shapes differ: reference {:?}, engine {rows} positions × {engine_row_len}",
                    reference.ne
                ));
            }
            Ok(Aligned {
                reference: values,
                engine: None,
                row_len: engine_row_len,
            })
        }
        Layout::AttentionWeights => {
            let (cells, tokens, heads) = (ne[0], ne[1], ne[2]);
            let width = engine_row_len.checked_div(heads).unwrap_or(0);
            if tokens != rows || heads * width != engine_row_len || width > cells || ne[3] != 1 {
                return Err(format!(
                    "shapes differ: reference attention weights {:?} (cells, tokens, heads), engine {rows} positions × {engine_row_len}",
                    reference.ne
                ));
            }
            let row_len = heads * cells;
            let mut by_token = vec![0f32; rows * row_len];
            let mut widened = vec![0f32; rows * row_len];
            for t in 0..rows {
                for h in 0..heads {
                    let from = &values[(h * tokens + t) * cells..][..cells];
                    by_token[t * row_len + h * cells..][..cells].copy_from_slice(from);
                    widened[t * row_len + h * cells..][..width]
                        .copy_from_slice(&engine[t * engine_row_len + h * width..][..width]);
                }
            }
            Ok(Aligned {
                reference: by_token,
                engine: Some(widened),
                row_len,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ne: [u64; 4]) -> TensorFrame {
        TensorFrame {
            name: "x-0".into(),
            op: "SOFT_MAX".into(),
            dtype: "f32".into(),
            ne,
            readable: true,
        }
    }

    #[test]
    fn scaled_products_prefer_the_scaled_reference_tensor() {
        let up: Vec<&str> = target("ffn_up").candidates().collect();
        assert_eq!(up, ["ffn_up_s", "ffn_up"]);
        let norm: Vec<&str> = target("attn_norm").candidates().collect();
        assert_eq!(norm, ["attn_norm"]);
        assert_eq!(target("kq_soft_max").layout, Layout::AttentionWeights);
        let f = frame([4, 2, 1, 1]);
        assert!(explain("ffn_up", "ffn_up_s-3", &f, 0)
            .unwrap()
            .contains("scale"));
        assert!(explain("ffn_up", "ffn_up-3", &f, 0).is_none());
    }

    #[test]
    fn attention_weights_become_token_rows() {
        // 2 tokens, 2 heads, 4 cells; the engine has 2 cached positions.
        let reference: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let engine = vec![1.0, 0.0, 2.0, 0.0, 3.0, 4.0, 5.0, 6.0];
        let a = align(
            Layout::AttentionWeights,
            &frame([4, 2, 2, 1]),
            reference,
            &engine,
            2,
            4,
        )
        .unwrap();
        let (r, e, row_len) = (a.reference, a.engine, a.row_len);
        assert_eq!(row_len, 8);
        // token 0: head 0 cells 0..4, head 1 cells 8..12
        assert_eq!(&r[..8], &[0.0, 1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 11.0]);
        assert_eq!(&r[8..], &[4.0, 5.0, 6.0, 7.0, 12.0, 13.0, 14.0, 15.0]);
        let e = e.unwrap();
        assert_eq!(&e[..8], &[1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(&e[8..], &[3.0, 4.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0]);
    }

    #[test]
    fn mismatched_shapes_are_reported() {
        let f = frame([3, 2, 1, 1]);
        assert!(align(Layout::Rows, &f, vec![0.0; 6], &[0.0; 6], 2, 3).is_ok());
        let err = align(Layout::Rows, &f, vec![0.0; 6], &[0.0; 8], 2, 4).unwrap_err();
        assert!(err.contains("shapes differ"), "{err}");
    }
}
