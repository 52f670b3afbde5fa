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
            // ggml's `rotate_pairs` computes `x0*cos - x1*sin` and `x0*sin + x1*cos`; GCC
            // contracts the first product of each into an FMA (-ffp-contract=fast, -mfma).
            head[a] = x0.mul_add(c, -(x1 * s));
            head[b] = x0.mul_add(s, x1 * c);
        }
    }
}

/// ggml's AVX2 `ggml_v_expf` (ggml-cpu/vec.h), one lane: a polynomial exp with at most
/// ~1.5 ulp error. ggml uses it for SiLU and softmax on every full group of 8 values; using
/// libm's `expf` instead differs in the last bit, and a quantized model amplifies that.
#[inline(always)]
pub fn ggml_v_expf(x: f32) -> f32 {
    let f = f32::from_bits;
    let r = f(0x4B40_0000); // 0x1.8p23
    let z = x.mul_add(f(0x3FB8_AA3B), r); // log2(e)
    let n = z - r;
    // fnmadd(a, b, c) = c - a·b, fused
    let b = (-n).mul_add(f(0x35BF_BE8E), (-n).mul_add(f(0x3F31_7200), x));
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f(0x3C07_2010)
        .mul_add(b, f(0x3D2B_9F17))
        .mul_add(u, f(0x3E2A_AF33).mul_add(b, f(0x3EFF_FEDB)))
        .mul_add(u, f(0x3F7F_FFF6) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f(g.wrapping_add(0x7F00_0000));
    let s2 = f(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// SiLU-gated: `silu(gate) · up`, in place in `gate`, as ggml's `ggml_vec_swiglu_f32` on
/// AVX2: groups of 8 through [`ggml_v_expf`], the tail through libm's `expf`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (same results as the portable build, faster).
        unsafe { silu_mul_fma(gate, up) };
        return;
    }
    silu_mul_impl(gate, up);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn silu_mul_fma(gate: &mut [f32], up: &[f32]) {
    silu_mul_impl(gate, up);
}

#[inline(always)]
fn silu_mul_impl(gate: &mut [f32], up: &[f32]) {
    let full = gate.len() / 8 * 8;
    for (i, (g, u)) in gate.iter_mut().zip(up).enumerate() {
        let e = if i < full {
            ggml_v_expf(-*g)
        } else {
            (-*g).exp()
        };
        *g = (*g / (1.0 + e)) * u;
    }
}

/// ReLU²-gated: `relu(gate)² · up`, in place in `gate` (bitnet.cpp's `LLM_FFN_RELU_SQR`).
pub fn relu2_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        let r = g.max(0.0);
        *g = (r * r) * u;
    }
}

/// ggml's `ggml_vec_dot_f32` on AVX2: four 8-lane FMA accumulators over groups of 32, reduced
/// pairwise, then the tail added in f64 (ggml-cpu/vec.cpp, `GGML_F32x8_REDUCE`).
#[inline(always)]
fn ggml_vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let np = x.len() & !31;
    let mut acc = [0f32; 32];
    for i in (0..np).step_by(32) {
        for (k, lane) in acc.iter_mut().enumerate() {
            *lane = x[i + k].mul_add(y[i + k], *lane);
        }
    }
    let mut sum = reduce32(&acc) as f64;
    for k in np..x.len() {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// llamafile's tinyBLAS f32 dot on AVX2 (`ggml-cpu/llamafile/sgemm.cpp`): one 8-lane FMA
/// accumulator over the whole length, then `hsum`. ggml multiplies a batch's attention weights
/// by V this way.
#[cfg(test)]
fn tinyblas_dot_f32(a: impl Fn(usize) -> f32, b: &[f32]) -> f32 {
    // A tail shorter than 8 is loaded zero-padded (`load_partial`), which adds nothing.
    let mut acc = [0f32; 8];
    for l in (0..b.len()).step_by(8) {
        for (t, lane) in acc.iter_mut().enumerate().take(b.len() - l) {
            *lane = a(l + t).mul_add(b[l + t], *lane);
        }
    }
    hsum8(&acc)
}

/// ggml's `ggml_vec_soft_max_f32` on AVX2 then the scaling by `1/Σ`: `scores` (a multiple of
/// 8 long, padding entries `-inf`) become probabilities in place.
#[inline(always)]
fn ggml_soft_max(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for chunk in scores.chunks_exact_mut(8) {
        for v in chunk.iter_mut() {
            *v = ggml_v_expf(*v - max);
        }
        let a: [f32; 4] = std::array::from_fn(|i| chunk[i + 4] + chunk[i]);
        sum += ((a[0] + a[2]) + (a[1] + a[3])) as f64;
    }
    let inv = (1.0 / sum) as f32;
    scores.iter_mut().for_each(|v| *v *= inv);
}

/// How llama.cpp multiplies the attention weights by V, which depends on the batch size (see
/// [`attend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionPath {
    /// Several tokens at once: tinyBLAS (llamafile's sgemm).
    Batch,
    /// One token: `ggml_vec_dot_f32` over the padded cache length.
    Single,
}

/// Head layout of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention: `n_heads` is a multiple).
    pub n_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
}

/// Causal grouped-query attention of `q` (one position, all heads) over the first `n_kv`
/// cached positions; writes all heads' outputs to `out`. Computed as llama.cpp's CPU graph
/// does with an F32 cache and no flash attention, so that both of its paths are reproduced bit
/// for bit (measured on SmolLM2-135M): scores with `ggml_vec_dot_f32`, scaled; softmax as
/// [`ggml_soft_max`] over the cache padded with masked positions; then the weights times V —
/// with tinyBLAS for a batch, with `ggml_vec_dot_f32` for a single token ([`AttentionPath`]).
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n_kv: usize,
    shape: AttentionShape,
    path: AttentionPath,
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA; the body is the same code compiled with hardware fused
        // multiply-adds instead of libm's `fmaf` (identical results, correctly rounded).
        unsafe { attend_fma(q, keys, values, n_kv, shape, path, scratch, out) };
        return;
    }
    attend_impl(q, keys, values, n_kv, shape, path, scratch, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_fma(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n_kv: usize,
    shape: AttentionShape,
    path: AttentionPath,
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    attend_impl(q, keys, values, n_kv, shape, path, scratch, out);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_impl(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n_kv: usize,
    shape: AttentionShape,
    path: AttentionPath,
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
    } = shape;
    let kv_dim = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // ggml pads the KV view (to 256 cells); padding to a multiple of 32 gives the same sums,
    // since the masked cells contribute exact zeros in the same lanes.
    let padded = n_kv.div_ceil(32) * 32;
    // Lanes per output: tinyBLAS keeps one 8-lane accumulator, `ggml_vec_dot_f32` four.
    let lanes = match path {
        AttentionPath::Batch => 8,
        AttentionPath::Single => 32,
    };
    let AttentionScratch { scores, acc } = scratch;
    for h in 0..n_heads {
        let kvh = h / group;
        let qh = &q[h * head_dim..(h + 1) * head_dim];
        scores.clear();
        for j in 0..n_kv {
            let k = &keys[j * kv_dim + kvh * head_dim..][..head_dim];
            scores.push(ggml_vec_dot_f32(k, qh) * scale);
        }
        scores.resize(padded, f32::NEG_INFINITY);
        ggml_soft_max(scores);
        // Weights × V, one accumulator lane per (output, j mod lanes): position j goes to the
        // same lane, in the same order, as in ggml's kernel, so the sums are identical; walking
        // the cache row by row keeps the reads contiguous. Masked cells add exact zeros.
        acc.clear();
        acc.resize(head_dim * lanes, 0.0);
        for (j, &p) in scores.iter().enumerate() {
            let lane = j % lanes;
            if j < n_kv {
                let v = &values[j * kv_dim + kvh * head_dim..][..head_dim];
                for (d, &x) in v.iter().enumerate() {
                    let a = &mut acc[d * lanes + lane];
                    *a = x.mul_add(p, *a);
                }
            } else {
                for d in 0..head_dim {
                    let a = &mut acc[d * lanes + lane];
                    *a = 0f32.mul_add(p, *a);
                }
            }
        }
        let oh = &mut out[h * head_dim..(h + 1) * head_dim];
        for (d, o) in oh.iter_mut().enumerate() {
            let a = &acc[d * lanes..(d + 1) * lanes];
            *o = match path {
                AttentionPath::Batch => hsum8(a),
                AttentionPath::Single => reduce32(a),
            };
        }
    }
}

/// tinyBLAS's `hsum` of one 8-lane accumulator on AVX.
#[inline(always)]
fn hsum8(a: &[f32]) -> f32 {
    let h: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
    (h[0] + h[2]) + (h[1] + h[3])
}

/// `GGML_F32x8_REDUCE` of four 8-lane accumulators (lane-major: `a[g * 8 + l]`).
#[inline(always)]
fn reduce32(a: &[f32]) -> f32 {
    let r: [f32; 8] = std::array::from_fn(|l| (a[l] + a[16 + l]) + (a[8 + l] + a[24 + l]));
    let t: [f32; 4] = std::array::from_fn(|l| r[l] + r[l + 4]);
    (t[0] + t[1]) + (t[2] + t[3])
}

/// Reusable buffers for [`attend`].
#[derive(Debug, Default)]
pub struct AttentionScratch {
    scores: Vec<f32>,
    acc: Vec<f32>,
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
        let mut s = AttentionScratch::default();
        let shape = AttentionShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
        };
        for path in [AttentionPath::Batch, AttentionPath::Single] {
            out.fill(0.0);
            attend(
                &[1.0, 0.0, 0.0, 1.0],
                &[0.5, 0.5],
                &[7.0, 9.0],
                1,
                shape,
                path,
                &mut s,
                &mut out,
            );
            assert_eq!(out, vec![7.0, 9.0, 7.0, 9.0]);
        }
    }

    #[test]
    fn ggml_v_expf_is_within_two_ulp_of_exp_and_handles_the_extremes() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.05;
            let (a, b) = (ggml_v_expf(x), x.exp());
            let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(ulps <= 2, "x={x}: {a} vs {b}");
        }
        assert_eq!(ggml_v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(ggml_v_expf(-200.0), 0.0);
        assert_eq!(ggml_v_expf(0.0), 1.0);
    }

    #[test]
    fn emulated_dots_equal_plain_sums_on_exact_values() {
        let x: Vec<f32> = (0..70).map(|i| (i % 7) as f32).collect();
        let y: Vec<f32> = (0..70).map(|i| (i % 3) as f32 * 0.5).collect();
        let exact: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert_eq!(ggml_vec_dot_f32(&x, &y), exact);
        assert_eq!(
            tinyblas_dot_f32(|i| x[i], &y[..64]),
            x[..64]
                .iter()
                .zip(&y[..64])
                .map(|(a, b)| a * b)
                .sum::<f32>()
        );
        let mut s = vec![
            0.0,
            0.0,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
        ];
        ggml_soft_max(&mut s);
        assert_eq!(&s[..3], &[0.5, 0.5, 0.0]);
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
