//! Q6_K: 6-bit symmetric codes, sixteen 16-element sub-blocks with int8 scales, one f16
//! super-block scale. `x = d · scale[e / 16] · (code − 32)`.
//!
//! `block_q6_K` (ggml-common.h): `uint8_t ql[128]` (low four bits), `uint8_t qh[64]` (high
//! two bits), `int8_t scales[16]`, `ggml_half d` — 210 bytes. Each half of the block (128
//! elements, c = 0, 1) uses `ql[64c..64c + 64]` and `qh[32c..32c + 32]`: element
//! `128c + 32v + l` (v = 0..4, l = 0..32) has its low bits in the low (v < 2) or high
//! (v ≥ 2) nibble of `ql[64c + 32(v mod 2) + l]` and its high bits in bits 2v..2v+1 of
//! `qh[32c + l]`.

use crate::activation::QuantizedActivation;
use crate::blocks::{f16_at, f16_bytes, nearest_int, round_f16, QK_K};
use crate::dot::{fma_lanes, hsum_float_8};
use crate::kquants::search::{make_qx_quants, GROUP_MAX_EPS};
use crate::kquants::{scaled_lanes, TiledTerms};

/// Bytes per block.
pub(crate) const BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
/// Offset of `qh`.
pub(crate) const QH: usize = QK_K / 2;
/// Offset of `scales`.
pub(crate) const SCALES: usize = QH + QK_K / 4;
/// Offset of `d`.
pub(crate) const D: usize = SCALES + QK_K / 16;

/// The code (0..64) of element `e`.
#[inline(always)]
pub(crate) fn code(b: &[u8], e: usize) -> u8 {
    let (c, v, l) = (e / 128, (e % 128) / 32, e % 32);
    let ql = b[64 * c + 32 * (v % 2) + l];
    let low = if v < 2 { ql & 0xF } else { ql >> 4 };
    low | (((b[QH + 32 * c + l] >> (2 * v)) & 3) << 4)
}

/// The int8 scale of sub-block `s` (0..16).
#[inline(always)]
fn scale(b: &[u8], s: usize) -> i32 {
    b[SCALES + s] as i8 as i32
}

/// ggml `dequantize_row_q6_K` for one block: `d * sc * q`, evaluated left to right.
pub(crate) fn decode(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, D);
    for (e, y) in y.iter_mut().enumerate().take(QK_K) {
        *y = d * scale(b, e / 16) as f32 * (code(b, e) as i32 - 32) as f32;
    }
}

/// ggml `quantize_row_q6_K_ref` for one block.
pub(crate) fn encode(x: &[f32], y: &mut [u8]) {
    let mut codes = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for (s, (xs, ls)) in scales
        .iter_mut()
        .zip(x.chunks_exact(16).zip(codes.chunks_exact_mut(16)))
    {
        *s = make_qx_quants(32, xs, ls);
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = *s;
        }
    }
    y[..BYTES].fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0f32 / max_scale;
    y[D..D + 2].copy_from_slice(&f16_bytes(1.0 / iscale));
    for (j, &s) in scales.iter().enumerate() {
        y[SCALES + j] = nearest_int(iscale * s).min(127) as i8 as u8;
    }
    let d16 = round_f16(1.0 / iscale);
    for j in 0..QK_K / 16 {
        let d = d16 * scale(y, j) as f32;
        if d == 0.0 {
            // ggml keeps make_qx_quants' codes for a sub-block whose scale rounds to zero.
            continue;
        }
        for (c, &v) in codes[16 * j..16 * j + 16].iter_mut().zip(&x[16 * j..]) {
            *c = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for (e, &c) in codes.iter().enumerate() {
        let (c6, v, l) = (e / 128, (e % 128) / 32, e % 32);
        let c = c as u8;
        let ql = &mut y[64 * c6 + 32 * (v % 2) + l];
        *ql |= if v < 2 { c & 0xF } else { (c & 0xF) << 4 };
        y[QH + 32 * c6 + l] |= (c >> 4) << (2 * v);
    }
}

/// ggml x86 `ggml_vec_dot_q6_K_q8_K` (AVX2), one row: per block the eight scaled lanes
/// (codes 0..63) minus `32 · (bsums[2k]·sc[2k] + bsums[2k+1]·sc[2k+1])` in lane k, then
/// `acc = fma(d, lanes, acc)` with `d = dy · dx`; `hsum_float_8` at the end.
pub(crate) fn dot(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for (((x, y), &dy), bs) in w
        .chunks_exact(BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
        .zip(a.bsums.chunks_exact(16))
    {
        let lanes = scaled_lanes(y, |e| code(x, e) as i32, |e| scale(x, e / 16));
        let d = dy * f16_at(x, D);
        fma_lanes(&mut acc, d, |k| {
            let offset =
                bs[2 * k] as i32 * scale(x, 2 * k) + bs[2 * k + 1] as i32 * scale(x, 2 * k + 1);
            lanes[k] - (offset << 5)
        });
    }
    hsum_float_8(&acc)
}

/// [`super::TiledTerms`] of a block: `s1 = Σ scale · (code − 32) · q`.
pub(crate) fn tiled_terms(x: &[u8], y: &[i8], _: &[i16]) -> TiledTerms {
    let s1 = (0..QK_K)
        .map(|e| scale(x, e / 16) * (code(x, e) as i32 - 32) * y[e] as i32)
        .sum();
    TiledTerms {
        d: f16_at(x, D),
        s1,
        min: None,
    }
}
