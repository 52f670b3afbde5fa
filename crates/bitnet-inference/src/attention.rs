//! Causal grouped-query attention, computed the way each C++ reference computes it: the
//! same f32 operations on the same values in the same order, so the engine reproduces the
//! reference's rounding and not just its mathematics.
//!
//! The two references differ here more than anywhere else:
//! - upstream llama.cpp (as pinned, built for AVX2 whatever the host) keeps V in F32 and uses
//!   8-lane kernels;
//! - Microsoft's bitnet.cpp is an older ggml that `bitnet-llm-sys` compiles with
//!   `-march=native`: its kernels are as wide as the host's vectors (16 lanes with AVX-512),
//!   its V cache is F16, and its token-by-token path rounds the attention weights to F16.

use bitnet_quant::float_order::{hsum, reduce4};
use bitnet_quant::VectorWidth;
use half::f16;

use crate::numerics::Numerics;
use crate::ops::{ggml_v_expf, ggml_v_expf_avx512};

/// How the attention weights are multiplied by V, which depends on the batch size (see
/// [`attend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionPath {
    /// Several tokens at once: tinyBLAS (llamafile's sgemm), attention weights in f32.
    Batch,
    /// One token: ggml's `vec_dot` over the padded cache length (F16 weights in bitnet.cpp).
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

/// Reusable buffers for [`attend`].
#[derive(Debug, Default)]
pub struct AttentionScratch {
    scores: Vec<f32>,
    acc: Vec<f32>,
}

/// Round every value to the nearest F16 (ties to even), as ggml stores an F16 cache.
pub fn round_to_f16(values: &mut [f32]) {
    for v in values {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// Causal grouped-query attention of `q` (one position, all heads) over the first `n_kv`
/// cached positions; writes all heads' outputs to `out`. Computed as ggml's CPU graph without
/// flash attention computes it: scores with `ggml_vec_dot_f32`, scaled; softmax over the cache
/// padded to 32 cells with masked positions; then the weights times V with tinyBLAS for a
/// batch and `vec_dot` for one token ([`AttentionPath`]), each as `numerics` says.
///
/// `probs`, when given, receives the attention weights (the softmax, before any F16
/// rounding): head `h`'s weight of cached position `j < n_kv` at `h × stride + j`, where
/// `stride = probs.len() / n_heads`; the other entries are left as they are.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n_kv: usize,
    shape: AttentionShape,
    numerics: Numerics,
    path: AttentionPath,
    scratch: &mut AttentionScratch,
    probs: Option<&mut [f32]>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; the body is the same code compiled with hardware
        // fused multiply-adds (vectorized where independent) instead of libm's `fmaf`:
        // identical results, each correctly rounded.
        unsafe {
            attend_fma(
                q, keys, values, n_kv, shape, numerics, path, scratch, probs, out,
            )
        };
        return;
    }
    attend_impl(
        q, keys, values, n_kv, shape, numerics, path, scratch, probs, out,
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_fma(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n_kv: usize,
    shape: AttentionShape,
    numerics: Numerics,
    path: AttentionPath,
    scratch: &mut AttentionScratch,
    probs: Option<&mut [f32]>,
    out: &mut [f32],
) {
    attend_impl(
        q, keys, values, n_kv, shape, numerics, path, scratch, probs, out,
    );
}

/// How one output of weights × V is accumulated.
#[derive(Clone, Copy)]
enum PvKernel {
    /// tinyBLAS: one accumulator of `lanes`, reduced with its `hsum`.
    TinyBlas { lanes: usize },
    /// Upstream `ggml_vec_dot_f32` (four 8-lane accumulators; the cache is padded to a
    /// multiple of 32, so there is no tail).
    VecDotF32,
    /// Old `ggml_vec_dot_f16`: four registers of `width` over the largest multiple of four
    /// registers, the rest summed in f64.
    VecDotF16 { width: VectorWidth },
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_impl(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n_kv: usize,
    shape: AttentionShape,
    numerics: Numerics,
    path: AttentionPath,
    scratch: &mut AttentionScratch,
    mut probs: Option<&mut [f32]>,
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
    // Both references pad the KV view to 32 cells without flash attention (llama.cpp's newer
    // versions to 256, which gives the same sums: the masked cells contribute exact zeros in
    // the same lanes).
    let padded = n_kv.div_ceil(32) * 32;
    let pv = match (numerics, path) {
        (Numerics::LlamaCpp, AttentionPath::Batch) => PvKernel::TinyBlas { lanes: 8 },
        (Numerics::LlamaCpp, AttentionPath::Single) => PvKernel::VecDotF32,
        (Numerics::BitnetCpp(w), AttentionPath::Batch) => PvKernel::TinyBlas { lanes: w.lanes() },
        (Numerics::BitnetCpp(width), AttentionPath::Single) => PvKernel::VecDotF16 { width },
    };
    // Accumulator lanes per output, and how many leading positions go through them.
    let (lanes, vector_len) = match pv {
        PvKernel::TinyBlas { lanes } => (lanes, padded),
        PvKernel::VecDotF32 => (32, padded),
        PvKernel::VecDotF16 { width } => {
            let step = 4 * width.lanes();
            (step, padded / step * step)
        }
    };
    let AttentionScratch { scores, acc } = scratch;
    for h in 0..n_heads {
        let kvh = h / group;
        let qh = &q[h * head_dim..(h + 1) * head_dim];
        scores.clear();
        for j in 0..n_kv {
            let k = &keys[j * kv_dim + kvh * head_dim..][..head_dim];
            scores.push(vec_dot_f32(k, qh, numerics.width()) * scale);
        }
        scores.resize(padded, f32::NEG_INFINITY);
        match numerics.width() {
            VectorWidth::Avx2 => soft_max::<8>(scores),
            VectorWidth::Avx512 => soft_max::<16>(scores),
        }
        if let Some(p) = probs.as_deref_mut() {
            let stride = p.len() / n_heads;
            p[h * stride..h * stride + n_kv].copy_from_slice(&scores[..n_kv]);
        }
        if let PvKernel::VecDotF16 { .. } = pv {
            // ggml converts the weights to V's type before `vec_dot_f16`.
            round_to_f16(scores);
        }
        // Weights × V, one accumulator lane per (output, j mod lanes): position j goes to the
        // same lane, in the same order, as in ggml's kernel, so the sums are identical. The
        // accumulators are lane-major (`acc[lane * head_dim + d]`), so each cache row updates
        // one contiguous run of them, which the compiler vectorizes (each element still gets
        // its own fused multiply-add). Masked cells add exact zeros.
        acc.clear();
        acc.resize(head_dim * lanes, 0.0);
        for (j, &p) in scores[..vector_len].iter().enumerate() {
            let lane = &mut acc[(j % lanes) * head_dim..][..head_dim];
            if j < n_kv {
                let v = &values[j * kv_dim + kvh * head_dim..][..head_dim];
                for (a, &x) in lane.iter_mut().zip(v) {
                    *a = x.mul_add(p, *a);
                }
            } else {
                for a in lane.iter_mut() {
                    *a = 0f32.mul_add(p, *a);
                }
            }
        }
        let oh = &mut out[h * head_dim..(h + 1) * head_dim];
        let mut column = [0f32; 64];
        for (d, o) in oh.iter_mut().enumerate() {
            let a = &mut column[..lanes];
            for (l, v) in a.iter_mut().enumerate() {
                *v = acc[l * head_dim + d];
            }
            *o = match pv {
                PvKernel::TinyBlas { .. } => hsum(a),
                PvKernel::VecDotF32 => reduce4(a, VectorWidth::Avx2),
                PvKernel::VecDotF16 { width } => {
                    let mut sum = reduce4(a, width) as f64;
                    for j in vector_len..n_kv.max(vector_len) {
                        let v = values[j * kv_dim + kvh * head_dim + d];
                        sum += (v * scores[j]) as f64;
                    }
                    sum as f32
                }
            };
        }
    }
}

/// ggml's `ggml_vec_dot_f32` (both references' versions): four registers of `width` over
/// groups of four registers, reduced pairwise, then the tail accumulated in f32 with fused
/// multiply-adds (GCC contracts `sumf += x[i]*y[i]`; measured: llama.cpp's one-token scores
/// over heads of 16 match this and not an f64 sum).
#[inline(always)]
fn vec_dot_f32(x: &[f32], y: &[f32], width: VectorWidth) -> f32 {
    let step = 4 * width.lanes();
    let np = x.len() / step * step;
    let mut acc = [0f32; 64];
    let acc = &mut acc[..step];
    for i in (0..np).step_by(step) {
        for (k, lane) in acc.iter_mut().enumerate() {
            *lane = x[i + k].mul_add(y[i + k], *lane);
        }
    }
    let mut sum = reduce4(acc, width);
    for k in np..x.len() {
        sum = x[k].mul_add(y[k], sum);
    }
    sum
}

/// ggml's `ggml_vec_soft_max_f32` then the scaling by `1/Σ`, `W` lanes wide (8: AVX2, 16:
/// AVX-512): `scores` (a multiple of 32 long, padding entries `-inf`) become probabilities in
/// place. Each group of `W` goes through ggml's vector `exp` and is summed horizontally in f32
/// before joining the f64 total.
#[inline(always)]
fn soft_max<const W: usize>(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for chunk in scores.chunks_exact_mut(W) {
        for v in chunk.iter_mut() {
            *v = if W == 16 {
                ggml_v_expf_avx512(*v - max)
            } else {
                ggml_v_expf(*v - max)
            };
        }
        sum += hsum(chunk) as f64;
    }
    let inv = (1.0 / sum) as f32;
    scores.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Numerics; 3] = [
        Numerics::LlamaCpp,
        Numerics::BitnetCpp(VectorWidth::Avx2),
        Numerics::BitnetCpp(VectorWidth::Avx512),
    ];

    #[test]
    fn attention_over_one_position_returns_its_value() {
        let mut out = vec![0.0; 4];
        let mut s = AttentionScratch::default();
        let shape = AttentionShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
        };
        for numerics in ALL {
            for path in [AttentionPath::Batch, AttentionPath::Single] {
                out.fill(0.0);
                attend(
                    &[1.0, 0.0, 0.0, 1.0],
                    &[0.5, 0.5],
                    &[7.0, 9.0],
                    1,
                    shape,
                    numerics,
                    path,
                    &mut s,
                    None,
                    &mut out,
                );
                assert_eq!(out, vec![7.0, 9.0, 7.0, 9.0], "{numerics:?} {path:?}");
            }
        }
    }

    /// Every kernel computes the same attention up to rounding, over lengths that cross the
    /// vector, padding and tail boundaries.
    #[test]
    fn every_kernel_agrees_with_a_plain_f64_attention() {
        let shape = AttentionShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 40,
        };
        let kv_dim = 80;
        let val =
            |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.5) - 1.0;
        let mut s = AttentionScratch::default();
        for n_kv in [1, 7, 31, 32, 33, 64, 65, 100] {
            let q: Vec<f32> = (0..160).map(|i| val(i, 1)).collect();
            let keys: Vec<f32> = (0..n_kv * kv_dim).map(|i| val(i, 2)).collect();
            let mut values: Vec<f32> = (0..n_kv * kv_dim).map(|i| val(i, 3)).collect();
            round_to_f16(&mut values);
            let mut expected = vec![0f64; 160];
            for h in 0..4 {
                let kvh = h / 2;
                let scores: Vec<f64> = (0..n_kv)
                    .map(|j| {
                        (0..40)
                            .map(|d| q[h * 40 + d] as f64 * keys[j * kv_dim + kvh * 40 + d] as f64)
                            .sum::<f64>()
                            / 40f64.sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..40 {
                    expected[h * 40 + d] = (0..n_kv)
                        .map(|j| e[j] / z * values[j * kv_dim + kvh * 40 + d] as f64)
                        .sum();
                }
            }
            for numerics in ALL {
                for path in [AttentionPath::Batch, AttentionPath::Single] {
                    let mut out = vec![0f32; 160];
                    let mut probs = vec![0f32; 4 * n_kv];
                    attend(
                        &q,
                        &keys,
                        &values,
                        n_kv,
                        shape,
                        numerics,
                        path,
                        &mut s,
                        Some(&mut probs),
                        &mut out,
                    );
                    for head in probs.chunks(n_kv) {
                        let total: f64 = head.iter().map(|&p| p as f64).sum();
                        assert!((total - 1.0).abs() < 1e-5, "weights sum to {total}");
                    }
                    // F16 attention weights (bitnet.cpp, one token) carry 2^-11 relative error.
                    let tol = if numerics.f16_values() && path == AttentionPath::Single {
                        2e-3
                    } else {
                        1e-5
                    };
                    for (i, (&a, &b)) in out.iter().zip(&expected).enumerate() {
                        assert!(
                            (a as f64 - b).abs() <= tol,
                            "{numerics:?} {path:?} n_kv {n_kv} [{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn emulated_reductions_equal_plain_sums_on_exact_values() {
        let x: Vec<f32> = (0..70).map(|i| (i % 7) as f32).collect();
        let y: Vec<f32> = (0..70).map(|i| (i % 3) as f32 * 0.5).collect();
        let exact: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert_eq!(vec_dot_f32(&x, &y, VectorWidth::Avx2), exact);
        assert_eq!(vec_dot_f32(&x, &y, VectorWidth::Avx512), exact);
        let mut s = [0.0, 0.0]
            .into_iter()
            .chain(std::iter::repeat_n(f32::NEG_INFINITY, 30))
            .collect::<Vec<_>>();
        let mut t = s.clone();
        soft_max::<8>(&mut s);
        soft_max::<16>(&mut t);
        assert_eq!(&s[..3], &[0.5, 0.5, 0.0]);
        assert_eq!(s, t);
    }

    #[test]
    fn f16_rounding_is_to_nearest_even() {
        let mut v = [1.0 + 1.0 / 4096.0, 1.0 + 3.0 / 4096.0, 65519.0, 1e-8];
        round_to_f16(&mut v);
        assert_eq!(v, [1.0, 1.0 + 4.0 / 4096.0, 65504.0, 0.0]);
    }
}
