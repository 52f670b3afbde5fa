//! The non-matmul operations, each computed the way ggml computes it (accumulation width,
//! order of roundings), so the engine agrees with the C++ references to float noise.

use crate::config::RopeStyle;

/// RMSNorm of each `w.len()`-sized row of `x`, in place: `x · 1/sqrt(mean(x²) + eps) · w`.
/// Sum of squares in f64 and the scale in f32, as `ggml_compute_forward_rms_norm_f32`.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / row.len() as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = (*v * scale) * g;
        }
    }
}

/// The (cos, sin) table of one position: ggml's `ggml_rope_cache_init` (theta multiplied by
/// `base^(-2/n_dims)` step by step in f32).
pub fn rope_table(pos: usize, n_dims: usize, base: f32, table: &mut Vec<(f32, f32)>) {
    table.clear();
    let theta_scale = base.powf(-2.0 / n_dims as f32);
    let mut theta = pos as f32;
    for _ in 0..n_dims / 2 {
        table.push((theta.cos(), theta.sin()));
        theta *= theta_scale;
    }
}

/// Rotate every `head_dim`-sized head of `x` (one position) with `table`.
pub fn rope(x: &mut [f32], head_dim: usize, n_dims: usize, style: RopeStyle, table: &[(f32, f32)]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(c, s)) in table.iter().enumerate() {
            let (a, b) = match style {
                RopeStyle::Norm => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + n_dims / 2),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

/// SiLU-gated: `silu(gate) · up`, in place in `gate` (ggml's `ggml_silu_f32` then multiply).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = (*g / (1.0 + (-*g).exp())) * u;
    }
}

/// ReLU²-gated: `relu(gate)² · up`, in place in `gate` (bitnet.cpp's `LLM_FFN_RELU_SQR`).
pub fn relu2_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        let r = g.max(0.0);
        *g = (r * r) * u;
    }
}

/// Causal grouped-query attention of `q` (one position, all heads) over the first `n_kv`
/// cached positions; writes all heads' outputs to `out`. Scores in f32 then scaled; softmax
/// with the max subtracted and the sum in f64, as `ggml_compute_forward_soft_max_f32`.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n_kv: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let kv_dim = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    for h in 0..n_heads {
        let kvh = h / group;
        let qh = &q[h * head_dim..(h + 1) * head_dim];
        scores.clear();
        for j in 0..n_kv {
            let k = &keys[j * kv_dim + kvh * head_dim..][..head_dim];
            let dot: f32 = qh.iter().zip(k).map(|(a, b)| a * b).sum();
            scores.push(dot * scale);
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s as f64;
        }
        let inv = (1.0 / sum) as f32;
        let oh = &mut out[h * head_dim..(h + 1) * head_dim];
        oh.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let v = &values[j * kv_dim + kvh * head_dim..][..head_dim];
            let p = p * inv;
            for (o, &x) in oh.iter_mut().zip(v) {
                *o += p * x;
            }
        }
    }
}

/// Index of the largest value (the first on ties), as greedy sampling picks it.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_normalises() {
        let mut x = vec![3.0, 4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        let s = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / s).abs() < 1e-6 && (x[1] - 8.0 / s).abs() < 1e-6);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let mut t = Vec::new();
        rope_table(0, 4, 10000.0, &mut t);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rope(&mut x, 4, 4, RopeStyle::Neox, &t);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
        rope_table(7, 4, 10000.0, &mut t);
        for style in [RopeStyle::Norm, RopeStyle::Neox] {
            let mut y = vec![1.0, 2.0, 3.0, 4.0];
            rope(&mut y, 4, 4, style, &t);
            let n: f32 = y.iter().map(|v| v * v).sum();
            assert!((n - 30.0).abs() < 1e-4);
        }
    }

    #[test]
    fn attention_over_one_position_returns_its_value() {
        let mut out = vec![0.0; 4];
        let mut s = Vec::new();
        attend(
            &[1.0, 0.0, 0.0, 1.0],
            &[0.5, 0.5],
            &[7.0, 9.0],
            1,
            2,
            1,
            2,
            &mut s,
            &mut out,
        );
        assert_eq!(out, vec![7.0, 9.0, 7.0, 9.0]);
    }

    #[test]
    fn gates() {
        let mut g = vec![-1.0, 2.0];
        relu2_mul(&mut g, &[3.0, 3.0]);
        assert_eq!(g, vec![0.0, 12.0]);
        let mut g = vec![0.0];
        silu_mul(&mut g, &[5.0]);
        assert_eq!(g, vec![0.0]);
    }
}
