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

/// The part both of ggml's vector `exp`s share: `n = round(x·log2 e)` (via the 1.5·2²³ trick),
/// the reduced argument `b = x − n·ln 2` (two fused steps), and the polynomial in `b` up to
/// its last term. Returns (z, n, b, u = b², partial polynomial).
#[inline(always)]
fn exp_reduce(x: f32) -> (f32, f32, f32, f32, f32) {
    let f = f32::from_bits;
    let r = f(0x4B40_0000); // 0x1.8p23
    let z = x.mul_add(f(0x3FB8_AA3B), r); // log2(e)
    let n = z - r;
    // fnmadd(a, b, c) = c - a·b, fused
    let b = (-n).mul_add(f(0x35BF_BE8E), (-n).mul_add(f(0x3F31_7200), x));
    let u = b * b;
    let p = f(0x3C07_2010)
        .mul_add(b, f(0x3D2B_9F17))
        .mul_add(u, f(0x3E2A_AF33).mul_add(b, f(0x3EFF_FEDB)));
    (z, n, b, u, p)
}

/// The last coefficient of both polynomials (0x1.ffffecp-1).
const EXP_C1: u32 = 0x3F7F_FFF6;

/// ggml's AVX2 `ggml_v_expf` (ggml-cpu/vec.h), one lane: a polynomial exp with at most
/// ~1.5 ulp error. ggml uses it for SiLU and softmax on every full group of 8 values; using
/// libm's `expf` instead differs in the last bit, and a quantized model amplifies that.
#[inline(always)]
pub fn ggml_v_expf(x: f32) -> f32 {
    let f = f32::from_bits;
    let (z, n, b, u, p) = exp_reduce(x);
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1f32.to_bits()));
    let j = p.mul_add(u, f(EXP_C1) * b);
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

/// ggml's AVX-512 `ggml_v_expf` (the older ggml in bitnet.cpp, built with `-march=native`),
/// one lane: the same range reduction as [`ggml_v_expf`], a polynomial that folds in the
/// leading 1, and `vscalefps` for the scaling by 2^n (one correctly rounded multiply, so small
/// results become subnormals the way the hardware rounds them).
#[inline(always)]
pub fn ggml_v_expf_avx512(x: f32) -> f32 {
    let (_, n, b, u, p) = exp_reduce(x);
    let j = p.mul_add(u, f32::from_bits(EXP_C1).mul_add(b, 1.0));
    // |n| > 192 (or -inf): ggml substitutes 0 below and +inf above.
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // `vscalefps` rounds j · 2^n once. Where 2^n is an f32 (-149 ≤ n ≤ 127) the f32 product
    // rounds once too (to a subnormal if need be); elsewhere go through f64.
    let n = n as i32;
    if (-149..=127).contains(&n) {
        let p = if n >= -126 {
            f32::from_bits(((n + 127) as u32) << 23)
        } else {
            f32::from_bits(1u32 << (n + 149))
        };
        j * p
    } else {
        (j as f64 * 2f64.powi(n)) as f32
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
    fn ggml_v_expf_avx512_is_within_two_ulp_of_exp_and_handles_the_extremes() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.05;
            let (a, b) = (ggml_v_expf_avx512(x), x.exp());
            let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(ulps <= 2, "x={x}: {a} vs {b}");
        }
        // Subnormal results keep their magnitude instead of flushing to zero.
        let tiny = ggml_v_expf_avx512(-90.0);
        assert!(tiny > 0.0 && (tiny / (-90f32).exp() - 1.0).abs() < 1e-3);
        assert_eq!(ggml_v_expf_avx512(f32::NEG_INFINITY), 0.0);
        assert_eq!(ggml_v_expf_avx512(-200.0), 0.0);
        assert_eq!(ggml_v_expf_avx512(200.0), f32::INFINITY);
        assert_eq!(ggml_v_expf_avx512(0.0), 1.0);
        // Around the subnormal range the single rounding matches an exact f64 reference.
        for i in 0..4000 {
            let x = -85.0 - i as f32 * 0.005;
            let got = ggml_v_expf_avx512(x);
            let (_, n, b, u, p) = exp_reduce(x);
            let j = p.mul_add(u, f32::from_bits(EXP_C1).mul_add(b, 1.0));
            assert_eq!(got, (j as f64 * 2f64.powi(n as i32)) as f32, "x={x}");
        }
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
