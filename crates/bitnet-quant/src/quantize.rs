//! Weight encoders: f32 → ggml bytes, reproducing the reference quantizers.
//!
//! For Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 / TQ1_0 / TQ2_0, ggml's `quantize_q*` (the entry
//! points `llama-quantize` calls) run `quantize_row_*_ref` over the whole tensor when there is
//! no importance matrix (`ggml-quants.c`); `quantize_iq4_nl` runs its own search block by
//! block (`legacy::codec`). Every block is independent, so encoding the flattened tensor
//! block by block is the same as encoding it row by row.

use bitnet_gguf::GgmlType;

use crate::blocks::{
    f16_bytes, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK, QK_I2_S, QK_K, TQ1_0_BYTES, TQ1_QH, TQ1_QS,
    TQ2_0_BYTES,
};
use crate::blocks::{IQ4_NL_BYTES, Q5_0_BYTES, Q5_1_BYTES};
use crate::legacy::codec as legacy;
use crate::QuantError;

/// Encode the whole tensor (shape already validated by the caller).
pub(crate) fn encode(ty: GgmlType, v: &[f32]) -> Result<Vec<u8>, QuantError> {
    Ok(match ty {
        GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        // Round to nearest even, as ggml's GGML_FP32_TO_FP16 and GGML_FP32_TO_BF16
        // (`ggml_compute_fp32_to_bf16` in ggml-impl.h) do.
        GgmlType::F16 => v.iter().flat_map(|&x| f16_bytes(x)).collect(),
        GgmlType::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => blocks(v, QK, Q8_0_BYTES, q8_0_block),
        GgmlType::Q4_0 => blocks(v, QK, Q4_0_BYTES, q4_0_block),
        GgmlType::Q4_1 => blocks(v, QK, Q4_1_BYTES, q4_1_block),
        GgmlType::Q5_0 => blocks(v, QK, Q5_0_BYTES, legacy::q5_0_block),
        GgmlType::Q5_1 => blocks(v, QK, Q5_1_BYTES, legacy::q5_1_block),
        GgmlType::IQ4_NL => blocks(v, QK, IQ4_NL_BYTES, legacy::iq4_nl_block),
        GgmlType::TQ1_0 => blocks(v, QK_K, TQ1_0_BYTES, tq1_0_block),
        GgmlType::TQ2_0 => blocks(v, QK_K, TQ2_0_BYTES, tq2_0_block),
        GgmlType::I2_S => i2_s(v),
        other => crate::kquants::encode_all(other, v).ok_or(QuantError::Unsupported(other))?,
    })
}

fn blocks(v: &[f32], qk: usize, nbytes: usize, f: fn(&[f32], &mut [u8])) -> Vec<u8> {
    let mut out = vec![0u8; v.len() / qk * nbytes];
    for (x, y) in v.chunks_exact(qk).zip(out.chunks_exact_mut(nbytes)) {
        f(x, y);
    }
    out
}

/// ggml `quantize_row_q8_0_ref`: d = amax / 127, q = roundf(x / d) (half away from zero).
fn q8_0_block(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    for (q, &v) in y[2..].iter_mut().zip(x) {
        // The assignment to `int8_t` converts as C does (code 0 for the ±∞ of a subnormal d).
        *q = c_trunc((v * id).round()) as i8 as u8;
    }
}

/// C's float → integer conversion as GCC emits it on x86-64 (`cvttss2si`): truncation toward
/// zero, and the "integer indefinite" `i32::MIN` for NaN and values out of range. Casts to
/// `int8_t` / `uint8_t` then keep the low byte. (Rust's `as` saturates instead, which differs
/// for the infinite codes a subnormal scale produces.)
#[inline(always)]
pub(crate) fn c_trunc(v: f32) -> i32 {
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// The signed value of largest magnitude, the first one on a tie (ggml's `if (amax <
/// fabsf(v))` loop of `quantize_row_q4_0_ref` / `q5_0_ref`); 0 for an empty or all-zero block.
pub(crate) fn signed_extreme(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        // Strict `<`: the first element of largest magnitude wins, as in ggml.
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// The block's minimum and maximum as ggml's `quantize_row_q4_1_ref` / `q5_1_ref` find them
/// (starting from `FLT_MAX` / `-FLT_MAX`, so NaNs are skipped).
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// ggml `quantize_row_q4_0_ref`: d = (signed value of largest magnitude) / -8, codes
/// `min(15, (int8)(x/d + 8.5))`; element j in the low nibble of byte j, j + 16 in the high.
fn q4_0_block(x: &[f32], y: &mut [u8]) {
    let d = signed_extreme(x) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    for j in 0..QK / 2 {
        // `(int8_t)` truncates toward zero; the values are in [0, 16.5] unless a subnormal d
        // made `id` infinite, where the C conversion's integer indefinite leaves code 0.
        let lo = (c_trunc(x[j] * id + 8.5) as i8).min(15) as u8;
        let hi = (c_trunc(x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
        y[2 + j] = lo | (hi << 4);
    }
}

/// ggml `quantize_row_q4_1_ref`: d = (max − min) / 15, m = min, codes
/// `min(15, (int8)((x − min)/d + 0.5))`, same nibble order as Q4_0.
fn q4_1_block(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    y[2..4].copy_from_slice(&f16_bytes(min));
    for j in 0..QK / 2 {
        let lo = (c_trunc((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let hi = (c_trunc((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
        y[4 + j] = lo | (hi << 4);
    }
}

/// Ternary code of `v` for scale inverse `id`: `int xi = lroundf(v * id) + 1` (ggml, TQ
/// quantizers). A subnormal amax makes `id` infinite, and glibc's `lroundf` of ±∞ or NaN is
/// `LONG_MIN`, whose `+ 1` truncates to the `int` 1: the zero trit, as the pinned llama.cpp
/// writes. Finite products lie within ±1 (|v| ≤ amax); the clamp only guards the arithmetic.
#[inline]
fn trit(v: f32, id: f32) -> u8 {
    let r = v * id;
    if !r.is_finite() {
        return 1;
    }
    ((r.round() as i32).clamp(-1, 1) + 1) as u8
}

/// ggml `quantize_row_tq1_0_ref`. d = amax (f16), trits t = round(x/d) + 1 packed base 3,
/// most significant trit first, then scaled to a byte by ceiling division `q·256/243` so that
/// the decoder can extract trit n as `((q·3ⁿ mod 256) · 3) >> 8`.
///
/// Element order: `qs[0..32]` byte m holds elements m + 32n (n = 0..5), `qs[32..48]` byte
/// 32 + m holds 160 + m + 16n, `qh[j]` holds 240 + j + 4n (n = 0..4, one spare trit).
fn tq1_0_block(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // `(q * 256 + (243 - 1)) / 243` in ggml: a ceiling division.
    let to_byte = |q: u8| (q as u16 * 256).div_ceil(243) as u8;
    let pack =
        |trits: &mut dyn Iterator<Item = u8>| -> u8 { to_byte(trits.fold(0u8, |q, t| q * 3 + t)) };
    // 32 bytes × 5 trits: elements 0..160.
    for m in 0..32 {
        y[m] = pack(&mut (0..5).map(|n| trit(x[m + 32 * n], id)));
    }
    // 16 bytes × 5 trits: elements 160..240.
    for m in 0..16 {
        y[32 + m] = pack(&mut (0..5).map(|n| trit(x[160 + m + 16 * n], id)));
    }
    debug_assert_eq!(TQ1_QS, 48);
    // 4 bytes × 4 trits (then ×3 so the first trit is the most significant of five).
    for j in 0..TQ1_QH {
        let q = (0..4).fold(0u8, |q, n| q * 3 + trit(x[240 + j + 4 * n], id)) * 3;
        y[TQ1_QS + j] = to_byte(q);
    }
    y[TQ1_QS + TQ1_QH..].copy_from_slice(&f16_bytes(d));
}

/// ggml `quantize_row_tq2_0_ref`. d = amax (f16), code t = round(x/d) + 1 in two bits;
/// byte 32c + m holds element 128c + m + 32n in bits 2n..2n+1 (n = 0..4, c = 0..2).
fn tq2_0_block(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for c in 0..2 {
        for m in 0..32 {
            y[32 * c + m] = (0..4).fold(0u8, |q, n| {
                q | ((trit(x[128 * c + m + 32 * n], id) & 3) << (2 * n))
            });
        }
    }
    y[QK_K / 4..].copy_from_slice(&f16_bytes(d));
}

/// bitnet.cpp `quantize_i2_s` (x86, `ACT_PARALLEL` — `include/gemm-config.h` defines it):
///
/// * scale = max |w| over the whole tensor (computed in double, stored as f32 — exact, since
///   it is one of the inputs);
/// * code = 1 when |w| < 1e-6, else 2 for w > 0 and 0 for w < 0 (the *sign*, not a rounding);
/// * 128-element groups of 32 bytes: element 128k + 32g + p goes to byte 32k + p at bit
///   `6 − 2g` (so g = 0 sits in bits 7:6);
/// * the f32 scale at byte `n / 4`, then padding up to `n / 4 + 32` (bitnet.cpp leaves it
///   unwritten; we write zeros).
fn i2_s(v: &[f32]) -> Vec<u8> {
    let n = v.len();
    let max = v.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    let mut out = vec![0u8; n / 4 + 32];
    for (k, group) in v.chunks_exact(QK_I2_S).enumerate() {
        for (j, &x) in group.iter().enumerate() {
            let code: u8 = if (x as f64).abs() < 1e-6 {
                1
            } else if x as f64 * max > 0.0 {
                2
            } else {
                0
            };
            out[32 * k + j % 32] |= code << (6 - 2 * (j / 32));
        }
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&(max as f32).to_le_bytes());
    out
}
