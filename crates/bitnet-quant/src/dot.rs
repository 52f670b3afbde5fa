//! Scalar reference dot products: one weight row · one quantized activation row.
//!
//! The quantized kernels follow ggml's generic `ggml_vec_dot_*` (`ggml-cpu/quants.c`): an
//! exact integer sum per block, then one f32 update per block with ggml's expression and
//! operand order. The I2_S kernel follows bitnet.cpp (`ggml_vec_dot_i2_i8_s_1x1` in
//! `src/ggml-bitnet-mad.cpp` and the post-processing in `ggml_compute_forward_mul_mat`,
//! `3rdparty/llama.cpp/ggml/src/ggml.c`).
//!
//! The float kernels (F32/F16/BF16) sum products in a fixed 32-lane order that the AVX2
//! kernels reproduce exactly (ggml's generic code sums in double and its SIMD code in 32 f32
//! lanes with FMA; all three agree to ~1e-7 relative).

use crate::activation::QuantizedActivation;
use crate::blocks::{
    f16_at, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK, QK_I2_S, QK_K, TQ1_0_BYTES, TQ1_QH, TQ1_QS,
    TQ2_0_BYTES,
};
use crate::dequantize::tq1_trit;

/// Lanes of the float dot products (4 AVX2 registers of 8).
pub(crate) const F_LANES: usize = 32;

/// Reduce 32 lane accumulators and a tail in the order the AVX2 kernel uses.
#[inline(always)]
pub(crate) fn reduce_lanes(acc: &[f32; F_LANES]) -> f32 {
    // (r0 + r1) + (r2 + r3) over the four registers…
    let mut v = [0.0f32; 8];
    for (j, v) in v.iter_mut().enumerate() {
        *v = (acc[j] + acc[8 + j]) + (acc[16 + j] + acc[24 + j]);
    }
    // …then the 8 → 1 horizontal sum: halves, then pairs, then the last two.
    let s = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let t = [s[0] + s[2], s[1] + s[3]];
    t[0] + t[1]
}

/// Float dot in the 32-lane order; `w(i)` yields weight i as f32.
#[inline(always)]
fn float_dot(n: usize, w: impl Fn(usize) -> f32, a: &[f32]) -> f32 {
    let main = n - n % F_LANES;
    let mut acc = [0.0f32; F_LANES];
    for i in (0..main).step_by(F_LANES) {
        for (l, acc) in acc.iter_mut().enumerate() {
            *acc += w(i + l) * a[i + l];
        }
    }
    let mut sum = reduce_lanes(&acc);
    for (i, &x) in a.iter().enumerate().take(n).skip(main) {
        sum += w(i) * x;
    }
    sum
}

/// F32 weights · F32 activations.
pub(crate) fn f32_f32(w: &[u8], a: &QuantizedActivation) -> f32 {
    let f = |i: usize| f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]);
    float_dot(a.len, f, &a.values)
}

/// F16 weights · f16-rounded activations (each product is exact in f32).
pub(crate) fn f16_f16(w: &[u8], a: &QuantizedActivation) -> f32 {
    float_dot(a.len, |i| f16_at(w, 2 * i), &a.values)
}

/// BF16 weights · bf16-rounded activations.
pub(crate) fn bf16_bf16(w: &[u8], a: &QuantizedActivation) -> f32 {
    let f = |i: usize| half::bf16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32();
    float_dot(a.len, f, &a.values)
}

/// ggml `ggml_vec_dot_q8_0_q8_0_generic`: `sumf += sumi * (dx * dy)`.
pub(crate) fn q8_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut sumf = 0.0f32;
    for ((x, y), &dy) in w
        .chunks_exact(Q8_0_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
    {
        let sumi: i32 = x[2..]
            .iter()
            .zip(y)
            .map(|(&q, &y)| q as i8 as i32 * y as i32)
            .sum();
        sumf += q8_0_update(sumi, f16_at(x, 0), dy);
    }
    sumf
}

#[inline(always)]
pub(crate) fn q8_0_update(sumi: i32, dx: f32, dy: f32) -> f32 {
    sumi as f32 * (dx * dy)
}

/// ggml `ggml_vec_dot_q4_0_q8_0_generic`: `sumf += sumi * dx * dy` (left to right).
pub(crate) fn q4_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut sumf = 0.0f32;
    for ((x, y), &dy) in w
        .chunks_exact(Q4_0_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
    {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += ((x[2 + j] & 0x0F) as i32 - 8) * y[j] as i32;
            sumi += ((x[2 + j] >> 4) as i32 - 8) * y[j + QK / 2] as i32;
        }
        sumf += q4_0_update(sumi, f16_at(x, 0), dy);
    }
    sumf
}

#[inline(always)]
pub(crate) fn q4_0_update(sumi: i32, dx: f32, dy: f32) -> f32 {
    sumi as f32 * dx * dy
}

/// ggml `ggml_vec_dot_q4_1_q8_1_generic`: `sumf += (dx * dy) * sumi + mx * sy`.
pub(crate) fn q4_1_q8_1(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut sumf = 0.0f32;
    for (((x, y), &dy), &sy) in w
        .chunks_exact(Q4_1_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
        .zip(&a.s)
    {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += (x[4 + j] & 0x0F) as i32 * y[j] as i32;
            sumi += (x[4 + j] >> 4) as i32 * y[j + QK / 2] as i32;
        }
        sumf += q4_1_update(sumi, f16_at(x, 0), f16_at(x, 2), dy, sy);
    }
    sumf
}

#[inline(always)]
pub(crate) fn q4_1_update(sumi: i32, dx: f32, mx: f32, dy: f32, sy: f32) -> f32 {
    (dx * dy) * sumi as f32 + mx * sy
}

/// ggml `ggml_vec_dot_tq1_0_q8_K_generic`: `sumf += sum * (dx * dy)`.
pub(crate) fn tq1_0_q8_k(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut sumf = 0.0f32;
    for ((x, y), &dy) in w
        .chunks_exact(TQ1_0_BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
    {
        let mut sum = 0i32;
        for n in 0..5 {
            for m in 0..32 {
                sum += (tq1_trit(x[m], n) - 1) * y[32 * n + m] as i32;
            }
        }
        for n in 0..5 {
            for m in 0..16 {
                sum += (tq1_trit(x[32 + m], n) - 1) * y[160 + 16 * n + m] as i32;
            }
        }
        for n in 0..4 {
            for j in 0..TQ1_QH {
                sum += (tq1_trit(x[TQ1_QS + j], n) - 1) * y[240 + 4 * n + j] as i32;
            }
        }
        sumf += tq_update(sum, f16_at(x, TQ1_QS + TQ1_QH), dy);
    }
    sumf
}

/// `sumf += sum * (dx * dy)` — the TQ1_0 expression; TQ2_0's `d = dy * dx` is the same
/// product (f32 multiplication commutes exactly).
#[inline(always)]
pub(crate) fn tq_update(sumi: i32, dx: f32, dy: f32) -> f32 {
    sumi as f32 * (dx * dy)
}

/// ggml `ggml_vec_dot_tq2_0_q8_K_generic`: `d = dy * dx; sumf += sumi * d`.
pub(crate) fn tq2_0_q8_k(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut sumf = 0.0f32;
    for ((x, y), &dy) in w
        .chunks_exact(TQ2_0_BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
    {
        let mut sumi = 0i32;
        for c in 0..2 {
            for n in 0..4 {
                for m in 0..32 {
                    let q = ((x[32 * c + m] >> (2 * n)) & 3) as i32 - 1;
                    sumi += q * y[128 * c + 32 * n + m] as i32;
                }
            }
        }
        sumf += tq_update(sumi, f16_at(x, QK_K / 4), dy);
    }
    sumf
}

/// Blocks per i16 accumulation group in bitnet.cpp's AVX2 kernel (`group32_num`).
pub(crate) const I2S_GROUP: usize = 32;

/// bitnet.cpp I2_S · I8_S.
///
/// The kernel sums *codes* (0, 1, 2) times activations — `_mm256_maddubs_epi16(codes, y)` —
/// in sixteen i16 lanes (lane L gets bytes 2L and 2L+1 of every 32-byte group) that are
/// widened to i32 after every 32 blocks (4096 elements) and at the end; `_mm256_add_epi16`
/// wraps, and we reproduce the wrap. The matmul then computes
/// `(sumi − Σq) / act_scale * weight_scale` in f32, i.e. Σ(w·q) rescaled.
pub(crate) fn i2_s_i8_s(codes: &[u8], wscale: f32, a: &QuantizedActivation) -> f32 {
    let mut sumi = 0i32;
    for (g, group) in codes.chunks(32 * I2S_GROUP).enumerate() {
        let mut lanes = [0i32; 16];
        let y0 = g * I2S_GROUP * QK_I2_S;
        for (k, blk) in group.chunks_exact(32).enumerate() {
            let y = &a.qs[y0 + k * QK_I2_S..y0 + (k + 1) * QK_I2_S];
            for (p, &b) in blk.iter().enumerate() {
                lanes[p / 2] += ((b >> 6) & 3) as i32 * y[p] as i32
                    + ((b >> 4) & 3) as i32 * y[32 + p] as i32
                    + ((b >> 2) & 3) as i32 * y[64 + p] as i32
                    + (b & 3) as i32 * y[96 + p] as i32;
            }
        }
        for l in lanes {
            sumi = sumi.wrapping_add(l as i16 as i32);
        }
    }
    i2_s_finish(sumi, a, wscale)
}

/// `(float)sumi`, then `(tmp - act_sums) / act_scales * scale` (bitnet.cpp `ggml.c`).
#[inline(always)]
pub(crate) fn i2_s_finish(sumi: i32, a: &QuantizedActivation, wscale: f32) -> f32 {
    (sumi as f32 - a.row_sum as f32) / a.row_scale * wscale
}
