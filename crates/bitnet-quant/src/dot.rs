//! Scalar reference dot products: one weight row · one quantized activation row.
//!
//! The quantized kernels reproduce, operation for operation, the kernels llama.cpp actually
//! runs on x86-64 as `llama-cpp-sys-2` builds it (AVX2 + FMA + F16C, see [`crate::Q8Flavor`]):
//! `ggml_vec_dot_{q8_0_q8_0, q4_0_q8_0, q4_1_q8_1, tq1_0_q8_K, tq2_0_q8_K}` in
//! `ggml-cpu/arch/x86/quants.c`. Those kernels split each block's integer dot into eight i32
//! lanes — lane k collects the elements e with `(e mod 32) / 4 == k` (`maddubs` then `madd`)
//! — convert each lane to f32 and accumulate it into eight f32 lanes with a fused
//! multiply-add (explicit `_mm256_fmadd_ps`, or GCC contracting `mul_ps` + `add_ps`, which we
//! confirmed in the disassembly of the reference's `libggml-cpu.a`), then reduce with
//! `hsum_float_8`. Reproducing this makes us bit-identical to llama.cpp's kernels; ggml's
//! generic C code (`ggml-cpu/quants.c`) differs from them in the last bits (≈1e-6 relative,
//! up to ≈1e-4 for Q4_1 with large activations because the AVX2 kernel sums the `m·s` terms
//! separately).
//!
//! The I2_S kernel follows bitnet.cpp (`ggml_vec_dot_i2_i8_s_1x1` in
//! `src/ggml-bitnet-mad.cpp` and the post-processing in `ggml_compute_forward_mul_mat`,
//! `3rdparty/llama.cpp/ggml/src/ggml.c`), again bit for bit.
//!
//! The float kernels here (F32/F16/BF16, what `dot_row`/`matvec`/`matmul` use) sum products
//! in a fixed 32-lane order that the AVX2 kernels reproduce exactly; they agree with ggml to
//! ~1e-7 relative. The exact orders of each reference's float kernels (tinyBLAS, `vec_dot`)
//! are in [`crate::float_order`], which the engine uses for F32 and F16 weights.

use crate::activation::QuantizedActivation;
use crate::blocks::{
    f16_at, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK, QK_I2_S, QK_K, TQ1_0_BYTES, TQ1_QH, TQ1_QS,
    TQ2_0_BYTES,
};
use crate::dequantize::tq1_trit;

/// Lanes of the float dot products (4 AVX2 registers of 8).
pub(crate) const F_LANES: usize = 32;

/// ggml's `hsum_float_8` (`ggml-cpu/arch/x86/quants.c`): add the two halves, then lanes
/// two apart, then the last two.
#[inline(always)]
pub(crate) fn hsum_float_8(v: &[f32; 8]) -> f32 {
    let s = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

/// Reduce 32 lane accumulators in the order the AVX2 kernel uses.
#[inline(always)]
fn reduce_lanes(acc: &[f32; F_LANES]) -> f32 {
    // (r0 + r1) + (r2 + r3) over the four registers, then the 8 → 1 sum.
    let mut v = [0.0f32; 8];
    for (j, v) in v.iter_mut().enumerate() {
        *v = (acc[j] + acc[8 + j]) + (acc[16 + j] + acc[24 + j]);
    }
    hsum_float_8(&v)
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

/// One i16 lane of `_mm256_maddubs_epi16`: `a0·b0 + a1·b1` (u8 × i8), saturated to i16.
#[inline(always)]
pub(crate) fn maddubs(a0: u8, b0: i8, a1: u8, b1: i8) -> i32 {
    (a0 as i32 * b0 as i32 + a1 as i32 * b1 as i32).clamp(i16::MIN as i32, i16::MAX as i32)
}

/// One i32 lane of ggml's `mul_sum_i8_pairs_float` (signed × signed, four elements): the
/// `_mm256_sign_epi8` trick multiplies |x| by y·sign(x), where negating −128 wraps.
#[inline(always)]
pub(crate) fn signed_lane(x: [i8; 4], y: [i8; 4]) -> i32 {
    let s = |x: i8, y: i8| {
        let sy = match x.signum() {
            1 => y,
            -1 => y.wrapping_neg(),
            _ => 0,
        };
        (x.unsigned_abs(), sy)
    };
    let (a0, b0) = s(x[0], y[0]);
    let (a1, b1) = s(x[1], y[1]);
    let (a2, b2) = s(x[2], y[2]);
    let (a3, b3) = s(x[3], y[3]);
    maddubs(a0, b0, a1, b1) + maddubs(a2, b2, a3, b3)
}

/// One i32 lane of `madd(maddubs(u, y), 1)` (unsigned × signed, four elements).
#[inline(always)]
pub(crate) fn unsigned_lane(u: [u8; 4], y: [i8; 4]) -> i32 {
    maddubs(u[0], y[0], u[1], y[1]) + maddubs(u[2], y[2], u[3], y[3])
}

pub(crate) fn four<T: Copy>(v: &[T], k: usize) -> [T; 4] {
    [v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]]
}

/// `acc[k] = fma(d, lane[k], acc[k])` per block (`_mm256_fmadd_ps(d, q, acc)`).
#[inline(always)]
pub(crate) fn fma_lanes(acc: &mut [f32; 8], d: f32, lanes: impl Fn(usize) -> i32) {
    for (k, acc) in acc.iter_mut().enumerate() {
        *acc = d.mul_add(lanes(k) as f32, *acc);
    }
}

/// ggml x86 `ggml_vec_dot_q8_0_q8_0`: per block d = dx·dy, `acc = fma(d, lanes, acc)`.
pub(crate) fn q8_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for ((x, y), &dy) in w
        .chunks_exact(Q8_0_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
    {
        let xs: [i8; QK] = std::array::from_fn(|p| x[2 + p] as i8);
        fma_lanes(&mut acc, f16_at(x, 0) * dy, |k| {
            signed_lane(four(&xs, k), four(y, k))
        });
    }
    hsum_float_8(&acc)
}

/// The 32 nibbles of a Q4 block in element order (low nibbles, then high).
#[inline(always)]
pub(crate) fn nibbles(qs: &[u8]) -> [u8; QK] {
    std::array::from_fn(|p| {
        if p < QK / 2 {
            qs[p] & 0x0F
        } else {
            qs[p - QK / 2] >> 4
        }
    })
}

/// ggml x86 `ggml_vec_dot_q4_0_q8_0`: codes − 8, then as Q8_0.
pub(crate) fn q4_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for ((x, y), &dy) in w
        .chunks_exact(Q4_0_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
    {
        let xs = nibbles(&x[2..]).map(|q| q as i8 - 8);
        fma_lanes(&mut acc, f16_at(x, 0) * dy, |k| {
            signed_lane(four(&xs, k), four(y, k))
        });
    }
    hsum_float_8(&acc)
}

/// llama.cpp's repacked Q4_0 kernels (`ggml_gemv_q4_0_8x8_q8_0` / `ggml_gemm_q4_0_8x8_q8_0`,
/// ggml-cpu/arch/x86/repack.cpp), one row: each block's integer dot is summed exactly, then
/// folded into a single f32 accumulator, `acc = fma(isum, dx·dy, acc)`, block after block.
pub(crate) fn q4_0_q8_0_repacked(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = 0.0f32;
    for ((x, y), &dy) in w
        .chunks_exact(Q4_0_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
    {
        let xs = nibbles(&x[2..]).map(|q| q as i8 - 8);
        let isum: i32 = (0..8).map(|k| signed_lane(four(&xs, k), four(y, k))).sum();
        acc = (isum as f32).mul_add(f16_at(x, 0) * dy, acc);
    }
    acc
}

/// ggml x86 `ggml_vec_dot_q4_1_q8_1`: `acc = fma(dx·dy, lanes, acc)` over unsigned codes,
/// and separately `summs = fma(mx, sy, summs)`; result `hsum(acc) + summs`.
pub(crate) fn q4_1_q8_1(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (((x, y), &dy), &sy) in w
        .chunks_exact(Q4_1_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
        .zip(&a.s)
    {
        summs = f16_at(x, 2).mul_add(sy, summs);
        let xs = nibbles(&x[4..]);
        fma_lanes(&mut acc, f16_at(x, 0) * dy, |k| {
            unsigned_lane(four(&xs, k), four(y, k))
        });
    }
    hsum_float_8(&acc) + summs
}

/// The TQ kernels' lanes: lane k sums code·y over the elements e with `(e mod 32) / 4 == k`
/// (eight 32-element vectors through `maddubs`), minus `bsums[2k] + bsums[2k+1]` (the −1
/// offset of the codes); then `acc = fma(lane, dy·dx, acc)`.
#[inline(always)]
fn tq_block(acc: &mut [f32; 8], code: impl Fn(usize) -> i32, y: &[i8], bsums: &[i16], d: f32) {
    let mut lanes = [0i32; 8];
    for (e, &y) in y.iter().enumerate().take(QK_K) {
        lanes[(e % 32) / 4] += code(e) * y as i32;
    }
    for (k, acc) in acc.iter_mut().enumerate() {
        let lane = lanes[k] - bsums[2 * k] as i32 - bsums[2 * k + 1] as i32;
        *acc = (lane as f32).mul_add(d, *acc);
    }
}

/// TQ1_0 code (trit 0..2) of element `e` of a block, layout as in the encoder.
#[inline(always)]
fn tq1_code(x: &[u8], e: usize) -> i32 {
    if e < 160 {
        tq1_trit(x[e % 32], e / 32)
    } else if e < 240 {
        tq1_trit(x[32 + (e - 160) % 16], (e - 160) / 16)
    } else {
        tq1_trit(x[TQ1_QS + (e - 240) % 4], (e - 240) / 4)
    }
}

/// ggml x86 `ggml_vec_dot_tq1_0_q8_K`.
pub(crate) fn tq1_0_q8_k(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for (((x, y), &dy), bs) in w
        .chunks_exact(TQ1_0_BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
        .zip(a.bsums.chunks_exact(16))
    {
        let d = dy * f16_at(x, TQ1_QS + TQ1_QH);
        tq_block(&mut acc, |e| tq1_code(x, e), y, bs, d);
    }
    hsum_float_8(&acc)
}

/// ggml x86 `ggml_vec_dot_tq2_0_q8_K`.
pub(crate) fn tq2_0_q8_k(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for (((x, y), &dy), bs) in w
        .chunks_exact(TQ2_0_BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
        .zip(a.bsums.chunks_exact(16))
    {
        let d = dy * f16_at(x, QK_K / 4);
        let code = |e: usize| ((x[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32;
        tq_block(&mut acc, code, y, bs, d);
    }
    hsum_float_8(&acc)
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
