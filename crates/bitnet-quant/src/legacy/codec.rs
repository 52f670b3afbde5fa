//! Q5_0, Q5_1 and IQ4_NL blocks: f32 ⇄ ggml bytes.
//!
//! Encoders follow ggml-base's `quantize_row_q5_0_ref`, `quantize_row_q5_1_ref` and
//! `quantize_iq4_nl` (`ggml-quants.c`) step by step, in f32, with no fused multiply-add
//! (ggml-base is compiled for baseline x86-64). Decoders follow `dequantize_row_q5_0`,
//! `dequantize_row_q5_1` and `dequantize_row_iq4_nl`.

use crate::blocks::{f16_at, f16_bytes, QK};
use crate::quantize::{c_trunc, min_max, signed_extreme};

use super::{iq4_nl_levels, q5_codes, KVALUES_IQ4NL};

/// Store 32 five-bit codes: low nibbles in `qs` (element j and j + 16 share byte j), fifth
/// bits in `qh` (bit j for element j, little-endian).
fn store_q5(codes: &[u8; QK], qh: &mut [u8], qs: &mut [u8]) {
    let mut high = 0u32;
    for j in 0..QK / 2 {
        let (c0, c1) = (codes[j], codes[j + QK / 2]);
        qs[j] = (c0 & 0x0F) | ((c1 & 0x0F) << 4);
        high |= (((c0 & 0x10) >> 4) as u32) << j;
        high |= (((c1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    qh.copy_from_slice(&high.to_le_bytes());
}

/// ggml `quantize_row_q5_0_ref`: d = (signed value of largest magnitude, the first one wins)
/// / −16, code = `min(31, (int8_t)(x/d + 16.5))`.
pub(crate) fn q5_0_block(x: &[f32], y: &mut [u8]) {
    let d = signed_extreme(x) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    let codes: [u8; QK] = std::array::from_fn(|j| (c_trunc(x[j] * id + 16.5) as i8).min(31) as u8);
    let (qh, qs) = y[2..].split_at_mut(4);
    store_q5(&codes, qh, qs);
}

/// ggml `quantize_row_q5_1_ref`: d = (max − min) / 31, m = min, code =
/// `(uint8_t)((x − min)/d + 0.5)` (no clamp in ggml; the values stay within 0..=31).
pub(crate) fn q5_1_block(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    y[2..4].copy_from_slice(&f16_bytes(min));
    let codes: [u8; QK] = std::array::from_fn(|j| c_trunc((x[j] - min) * id + 0.5) as u8);
    let (qh, qs) = y[4..].split_at_mut(4);
    store_q5(&codes, qh, qs);
}

/// ggml's `best_index_int8` over [`KVALUES_IQ4NL`]: the level nearest to `x` (the upper one
/// on a tie), by bisection. NaN falls through every comparison to the last level, as in C.
fn nearest_level(x: f32) -> usize {
    let level = |i: usize| KVALUES_IQ4NL[i] as f32;
    if x <= level(0) {
        return 0;
    }
    if x >= level(15) {
        return 15;
    }
    let (mut lo, mut hi) = (0, 15);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < level(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - level(hi - 1) < level(hi) - x {
        hi - 1
    } else {
        hi
    }
}

/// Σ w·q·x and Σ w·q² over the block for the levels nearest to `id·x` (w = x², ggml's weight
/// without an importance matrix), accumulated in element order as ggml does.
fn iq4_nl_sums(x: &[f32], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for &v in x {
        let q = KVALUES_IQ4NL[nearest_level(id * v)] as f32;
        let w = v * v;
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// ggml `quantize_iq4_nl` without an importance matrix (`quantize_row_iq4_nl_impl` with one
/// 32-element block per "super-block" and `ntry = 7`), which is what `llama-quantize` runs:
///
/// 1. a block whose largest |x| is below `GROUP_MAX_EPS` (1e-15) gets scale 0;
/// 2. otherwise the first guess maps the signed extreme `max` onto the level −127
///    (d = −max / −127); its least-squares scale `Σwqx / Σwq²` is kept unless one of the 15
///    scales that map `max` onto −127 + t (t = −7..=7) fits better (`Σwqx² > best·Σwq²`);
/// 3. the codes are recomputed for the chosen scale (`1/d`, before rounding d to f16).
pub(crate) fn iq4_nl_block(x: &[f32], y: &mut [u8]) {
    const NTRY: i32 = 7;
    const GROUP_MAX_EPS: f32 = 1e-15;
    let first_level = KVALUES_IQ4NL[0] as i32;
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let scale = if amax < GROUP_MAX_EPS {
        0.0
    } else {
        let d = -max / first_level as f32;
        let (sumqx, sumq2) = iq4_nl_sums(x, 1.0 / d);
        let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            let id = (itry + first_level) as f32 / max;
            let (sumqx, sumq2) = iq4_nl_sums(x, id);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        d
    };
    y[..2].copy_from_slice(&f16_bytes(scale));
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for j in 0..QK / 2 {
        let lo = nearest_level(id * x[j]) as u8;
        let hi = nearest_level(id * x[j + QK / 2]) as u8;
        y[2 + j] = lo | (hi << 4);
    }
}

/// ggml `dequantize_row_q5_0`: `(code − 16) * d`.
pub(crate) fn decode_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, c) in y.iter_mut().zip(q5_codes(&b[2..6], &b[6..])) {
        *o = (c as i32 - 16) as f32 * d;
    }
}

/// ggml `dequantize_row_q5_1`: `code * d + m` (a product, then a sum: no fused multiply-add
/// in ggml-base).
pub(crate) fn decode_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (o, c) in y.iter_mut().zip(q5_codes(&b[4..8], &b[8..])) {
        *o = c as f32 * d + m;
    }
}

/// ggml `dequantize_row_iq4_nl`: `d * level`.
pub(crate) fn decode_iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, l) in y.iter_mut().zip(iq4_nl_levels(&b[2..])) {
        *o = d * l as f32;
    }
}
