//! Q2_K: 2-bit codes with per-sub-block minimum, sixteen 16-element sub-blocks with 4-bit
//! scales and minimums, f16 super-block scales `d` and `dmin`.
//! `x = d · scale[e / 16] · code − dmin · min[e / 16]`.
//!
//! `block_q2_K` (ggml-common.h): `uint8_t scales[16]` (scale in the low nibble, minimum in
//! the high), `uint8_t qs[64]`, `ggml_half d, dmin` — 84 bytes. Element `128c + 32v + l`
//! (c = 0, 1, v = 0..4, l = 0..32) is in bits 2v..2v+1 of `qs[32c + l]`.

use crate::activation::QuantizedActivation;
use crate::blocks::{f16_at, f16_bytes, nearest_int, QK_K};
use crate::dot::{fma_lanes, hsum_float_8};
use crate::kquants::search::{make_qkx2_quants, Qkx2};
use crate::kquants::{scaled_lanes, TiledTerms};

/// Bytes per block.
pub(crate) const BYTES: usize = QK_K / 16 + QK_K / 4 + 4;
/// Offset of `qs`.
pub(crate) const QS: usize = QK_K / 16;
/// Offset of `d` (`dmin` follows).
pub(crate) const D: usize = QS + QK_K / 4;

/// The code (0..4) of element `e`.
#[inline(always)]
pub(crate) fn code(b: &[u8], e: usize) -> u8 {
    (b[QS + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3
}

/// ggml `dequantize_row_q2_K` for one block: `dl * q - ml` with `dl = d * scale`,
/// `ml = dmin * min`.
pub(crate) fn decode(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, D), f16_at(b, D + 2));
    for (e, y) in y.iter_mut().enumerate().take(QK_K) {
        let sc = b[e / 16];
        let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
        *y = dl * code(b, e) as f32 - ml;
    }
}

/// ggml `quantize_row_q2_K_ref` for one block.
pub(crate) fn encode(x: &[f32], y: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    let params = Qkx2 {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut codes = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(codes.chunks_exact_mut(16))
        .enumerate()
    {
        let weights: [f32; 16] = std::array::from_fn(|l| xs[l].abs());
        (scales[j], mins[j]) = make_qkx2_quants(&params, xs, &weights, ls);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    y[..BYTES].fill(0);
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &v) in y.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v) as u8;
        }
        y[D..D + 2].copy_from_slice(&f16_bytes(max_scale / Q4SCALE));
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &v) in y.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * v) << 4) as u8;
        }
        y[D + 2..D + 4].copy_from_slice(&f16_bytes(max_min / Q4SCALE));
    }
    let (d16, dmin16) = (f16_at(y, D), f16_at(y, D + 2));
    for j in 0..16 {
        let d = d16 * (y[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin16 * (y[j] >> 4) as f32;
        for (c, &v) in codes[16 * j..16 * j + 16].iter_mut().zip(&x[16 * j..]) {
            *c = nearest_int((v + dm) / d).clamp(0, 3) as u8;
        }
    }
    for (e, &c) in codes.iter().enumerate() {
        y[QS + 32 * (e / 128) + e % 32] |= c << (2 * ((e % 128) / 32));
    }
}

/// ggml x86 `ggml_vec_dot_q2_K_q8_K` (AVX2), one row: per block first the minimums,
/// `acc = fma(dmin, min[2k]·bsums[2k] + min[2k+1]·bsums[2k+1], acc)` with
/// `dmin = −dy · dminx`, then the scaled lanes, `acc = fma(d, lanes, acc)` with `d = dy · dx`,
/// into the same eight accumulators; `hsum_float_8` at the end.
pub(crate) fn dot(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for (((x, y), &dy), bs) in w
        .chunks_exact(BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
        .zip(a.bsums.chunks_exact(16))
    {
        let min = |s: usize| (x[s] >> 4) as i32 * bs[s] as i32;
        fma_lanes(&mut acc, -dy * f16_at(x, D + 2), |k| {
            min(2 * k) + min(2 * k + 1)
        });
        let lanes = scaled_lanes(y, |e| code(x, e) as i32, |e| (x[e / 16] & 0xF) as i32);
        fma_lanes(&mut acc, dy * f16_at(x, D), |k| lanes[k]);
    }
    hsum_float_8(&acc)
}

/// [`super::TiledTerms`] of a block: `s1 = Σ scale · code · q`, `s2 = Σ min · bsum`.
pub(crate) fn tiled_terms(x: &[u8], y: &[i8], bs: &[i16]) -> TiledTerms {
    let s1 = (0..QK_K)
        .map(|e| (x[e / 16] & 0xF) as i32 * code(x, e) as i32 * y[e] as i32)
        .sum();
    let s2 = (0..16).map(|s| (x[s] >> 4) as i32 * bs[s] as i32).sum();
    TiledTerms {
        d: f16_at(x, D),
        s1,
        min: Some((f16_at(x, D + 2), s2)),
    }
}
