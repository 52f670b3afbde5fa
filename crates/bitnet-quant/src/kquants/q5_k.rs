//! Q5_K: Q4_K with a fifth bit per code. `x = d · scale[e / 32] · code − dmin · min[e / 32]`,
//! codes 0..32.
//!
//! `block_q5_K` (ggml-common.h): `ggml_half d, dmin; uint8_t scales[12]; uint8_t qh[32];
//! uint8_t qs[128]` — 176 bytes. Element `64c + 32h + l` has its low four bits where Q4_K
//! keeps them (nibble h of `qs[32c + l]`) and its fifth bit in bit `2c + h` of `qh[l]`.

use crate::activation::QuantizedActivation;
use crate::blocks::{f16_at, QK_K};
use crate::dot::{fma_lanes, hsum_float_8};
use crate::kquants::q4_k::{decode_k4, k4_codes, k4_tiled_terms, SCALES};
use crate::kquants::search::Qkx2;
use crate::kquants::{bsums32, scaled_lanes, scales_mins_k4, TiledTerms};

/// Bytes per block.
pub(crate) const BYTES: usize = 4 + 12 + QK_K / 8 + QK_K / 2;
/// Offset of `qh`.
pub(crate) const QH: usize = 16;
/// Offset of `qs`.
pub(crate) const QS: usize = QH + QK_K / 8;

/// The code (0..32) of element `e`.
#[inline(always)]
pub(crate) fn code(b: &[u8], e: usize) -> u8 {
    let (c, h, l) = (e / 64, (e % 64) / 32, e % 32);
    let q = b[QS + 32 * c + l];
    let low = if h == 0 { q & 0xF } else { q >> 4 };
    low | (((b[QH + l] >> (2 * c + h)) & 1) << 4)
}

/// ggml `dequantize_row_q5_K` for one block: `d1 * q - m1`, as Q4_K.
pub(crate) fn decode(b: &[u8], y: &mut [f32]) {
    decode_k4(b, y, code);
}

/// ggml `quantize_row_q5_K_ref` for one block.
pub(crate) fn encode(x: &[f32], y: &mut [u8]) {
    let params = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let codes = k4_codes(x, y, &params);
    y[QH..QH + 32].fill(0);
    for c in 0..4 {
        for l in 0..32 {
            let (lo, hi) = (codes[64 * c + l], codes[64 * c + 32 + l]);
            y[QH + l] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            y[QS + 32 * c + l] = (lo & 0xF) | ((hi & 0xF) << 4);
        }
    }
}

/// ggml x86 `ggml_vec_dot_q5_K_q8_K` (AVX2), one row: the scaled lanes (codes 0..31) fold
/// into eight f32 accumulators as in Q4_K, but the minimums' term is summed to one integer
/// per block and folded into a scalar, `summs = fma(dmin, Σ min·Σq, summs)` (GCC contracts
/// ggml's `summs += dmin * …` into `vfmadd231ss`); result `hsum_float_8(acc) + summs`.
pub(crate) fn dot(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (((x, y), &dy), bs) in w
        .chunks_exact(BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
        .zip(a.bsums.chunks_exact(16))
    {
        let (sc, mn) = scales_mins_k4(&x[SCALES..]);
        let s = bsums32(bs);
        let mins: i32 = (0..8).map(|j| mn[j] as i32 * s[j]).sum();
        summs = (-dy * f16_at(x, 2)).mul_add(mins as f32, summs);
        let lanes = scaled_lanes(y, |e| code(x, e) as i32, |e| sc[e / 32] as i32);
        fma_lanes(&mut acc, dy * f16_at(x, 0), |k| lanes[k]);
    }
    hsum_float_8(&acc) + summs
}

/// [`super::TiledTerms`] of a block: as Q4_K's, with five-bit codes.
pub(crate) fn tiled_terms(x: &[u8], y: &[i8], bs: &[i16]) -> TiledTerms {
    k4_tiled_terms(x, y, bs, code)
}
