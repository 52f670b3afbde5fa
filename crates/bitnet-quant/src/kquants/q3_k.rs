//! Q3_K: 3-bit symmetric codes, sixteen 16-element sub-blocks with 6-bit signed scales, one
//! f16 super-block scale. `x = d · scale[e / 16] · (code − 4)`.
//!
//! `block_q3_K` (ggml-common.h): `uint8_t hmask[32]` (high bits), `uint8_t qs[64]` (low two
//! bits), `uint8_t scales[12]`, `ggml_half d` — 110 bytes. Element `128c + 32v + l`
//! (c = 0, 1, v = 0..4, l = 0..32) has its low bits in bits 2v..2v+1 of `qs[32c + l]` and its
//! high bit in bit `4c + v` of `hmask[l]`. Scale j (0..16) is `(low | high << 4) − 32` with
//! the low nibble in `scales[j]` (j < 8) or the high nibble of `scales[j − 8]`, and the top
//! two bits in bits `2·(j / 4)` of `scales[8 + j mod 4]`.

use crate::activation::QuantizedActivation;
use crate::blocks::{f16_at, f16_bytes, nearest_int, QK_K};
use crate::dot::{fma_lanes, hsum_float_8};
use crate::kquants::search::make_q3_quants;
use crate::kquants::{scaled_lanes, TiledTerms};

/// Bytes per block.
pub(crate) const BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
/// Offset of `qs`.
pub(crate) const QS: usize = QK_K / 8;
/// Offset of `scales`.
pub(crate) const SCALES: usize = QS + QK_K / 4;
/// Offset of `d`.
pub(crate) const D: usize = SCALES + 12;

/// The value (−4..4) of element `e`: its two low bits, minus 4 unless the high bit is set.
#[inline(always)]
pub(crate) fn value(b: &[u8], e: usize) -> i32 {
    let (c, v, l) = (e / 128, (e % 128) / 32, e % 32);
    let low = ((b[QS + 32 * c + l] >> (2 * v)) & 3) as i32;
    let high = (b[l] >> (4 * c + v)) & 1;
    low - if high == 1 { 0 } else { 4 }
}

/// The sixteen signed scales (−32..32) of a block.
#[inline(always)]
pub(crate) fn scales(b: &[u8]) -> [i8; 16] {
    let s = &b[SCALES..SCALES + 12];
    std::array::from_fn(|j| {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

/// ggml `dequantize_row_q3_K` for one block: `dl * q` with `dl = d * scale`.
pub(crate) fn decode(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, D);
    let sc = scales(b);
    for (e, y) in y.iter_mut().enumerate().take(QK_K) {
        *y = d * sc[e / 16] as f32 * value(b, e) as f32;
    }
}

/// ggml `quantize_row_q3_K_ref` for one block.
pub(crate) fn encode(x: &[f32], y: &mut [u8]) {
    let mut codes = [0i8; QK_K];
    let mut sub = [0.0f32; 16];
    let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
    for (s, (xs, ls)) in sub
        .iter_mut()
        .zip(x.chunks_exact(16).zip(codes.chunks_exact_mut(16)))
    {
        *s = make_q3_quants(4, xs, ls);
        if s.abs() > amax {
            amax = s.abs();
            max_scale = *s;
        }
    }
    y[..BYTES].fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0f32 / max_scale;
        let s = &mut y[SCALES..SCALES + 12];
        for (j, &v) in sub.iter().enumerate() {
            // `int8_t l = nearest_int(...)` truncates to a byte before the clamp.
            let l = ((nearest_int(iscale * v) as i8).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                s[j] = l & 0xF;
            } else {
                s[j - 8] |= (l & 0xF) << 4;
            }
            s[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
        }
        y[D..D + 2].copy_from_slice(&f16_bytes(1.0 / iscale));
    }
    let d16 = f16_at(y, D);
    let sc = scales(y);
    for j in 0..16 {
        let d = d16 * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        for (c, &v) in codes[16 * j..16 * j + 16].iter_mut().zip(&x[16 * j..]) {
            *c = (nearest_int(v / d).clamp(-4, 3) + 4) as i8;
        }
    }
    for (e, &c) in codes.iter().enumerate() {
        let (c2, v, l) = (e / 128, (e % 128) / 32, e % 32);
        let mut c = c as u8;
        if c > 3 {
            // ggml: the high bit of element e goes to bit e / 32 of hmask[e mod 32].
            y[l] |= 1 << (4 * c2 + v);
            c -= 4;
        }
        y[QS + 32 * c2 + l] |= c << (2 * v);
    }
}

/// ggml x86 `ggml_vec_dot_q3_K_q8_K` (AVX2), one row: the eight scaled lanes of the signed
/// values (ggml multiplies the low bits and the "minus 4" separately and subtracts, exactly),
/// `acc = fma(d, lanes, acc)` with `d = dy · dx`; `hsum_float_8` at the end.
pub(crate) fn dot(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for ((x, y), &dy) in w.chunks_exact(BYTES).zip(a.qs.chunks_exact(QK_K)).zip(&a.d) {
        let sc = scales(x);
        let lanes = scaled_lanes(y, |e| value(x, e), |e| sc[e / 16] as i32);
        fma_lanes(&mut acc, dy * f16_at(x, D), |k| lanes[k]);
    }
    hsum_float_8(&acc)
}

/// [`super::TiledTerms`] of a block: `s1 = Σ scale · value · q`.
pub(crate) fn tiled_terms(x: &[u8], y: &[i8], _: &[i16]) -> TiledTerms {
    let sc = scales(x);
    let s1 = (0..QK_K)
        .map(|e| sc[e / 16] as i32 * value(x, e) * y[e] as i32)
        .sum();
    TiledTerms {
        d: f16_at(x, D),
        s1,
        min: None,
    }
}
