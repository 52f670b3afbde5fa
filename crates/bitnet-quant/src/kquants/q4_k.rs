//! Q4_K: 4-bit codes with per-sub-block minimum, eight 32-element sub-blocks with 6-bit
//! scales and minimums, f16 super-block scales `d` and `dmin`.
//! `x = d · scale[e / 32] · code − dmin · min[e / 32]`.
//!
//! `block_q4_K` (ggml-common.h): `ggml_half d, dmin; uint8_t scales[12]; uint8_t qs[128]` —
//! 144 bytes. Element `64c + 32h + l` (c = 0..4, h = 0, 1, l = 0..32) is the low (h = 0) or
//! high nibble of `qs[32c + l]`; the scales are packed as [`super::scale_min_k4`] reads them.

use crate::activation::QuantizedActivation;
use crate::blocks::{f16_at, f16_bytes, nearest_int, QK_K};
use crate::dot::{fma_lanes, hsum_float_8};
use crate::kquants::search::{make_qkx2_quants, Qkx2};
use crate::kquants::{
    bsums32, pack_scales_mins_k4, scale_min_k4, scaled_lanes, scales_mins_k4, TiledTerms,
};

/// Bytes per block.
pub(crate) const BYTES: usize = 4 + 12 + QK_K / 2;
/// Offset of `scales`.
pub(crate) const SCALES: usize = 4;
/// Offset of `qs`.
pub(crate) const QS: usize = 16;

/// The code (0..16) of element `e`.
#[inline(always)]
pub(crate) fn code(b: &[u8], e: usize) -> u8 {
    let q = b[QS + 32 * (e / 64) + e % 32];
    if e % 64 < 32 {
        q & 0xF
    } else {
        q >> 4
    }
}

/// ggml `dequantize_row_q4_K` for one block: `d1 * q - m1` with `d1 = d * sc`, `m1 = dmin * m`.
pub(crate) fn decode(b: &[u8], y: &mut [f32]) {
    decode_k4(b, y, code);
}

/// `dequantize_row_q4_K` / `dequantize_row_q5_K` for one block with codes from `code`.
#[inline(always)]
pub(crate) fn decode_k4(b: &[u8], y: &mut [f32], code: impl Fn(&[u8], usize) -> u8) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    for (s, ys) in y.chunks_exact_mut(32).enumerate().take(8) {
        let (sc, m) = scale_min_k4(s, &b[SCALES..]);
        let (d1, m1) = (d * sc as f32, min * m as f32);
        for (l, y) in ys.iter_mut().enumerate() {
            *y = d1 * code(b, 32 * s + l) as f32 - m1;
        }
    }
}

/// The reference quantizers' search for Q4_K and Q5_K sub-blocks: weights `av_x + |x|`
/// (`av_x` the root mean square of the sub-block), then `make_qkx2_quants`. Returns the
/// scale and minimum of each sub-block, the codes in `codes`.
fn search_sub_blocks(x: &[f32], p: &Qkx2, codes: &mut [u8; QK_K]) -> ([f32; 8], [f32; 8]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(codes.chunks_exact_mut(32))
        .enumerate()
    {
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        (scales[j], mins[j]) = make_qkx2_quants(p, xs, &weights, ls);
    }
    (scales, mins)
}

/// The 6-bit scale codes (`ls`, `lm`) and the f16 `d` / `dmin` the Q4_K and Q5_K reference
/// quantizers derive from the sub-blocks' scales and minimums, written into `y[0..16]`.
fn store_super_scales(scales: &[f32; 8], mins: &[f32; 8], y: &mut [u8]) {
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for (&s, &m) in scales.iter().zip(mins) {
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // `uint8_t ls = nearest_int(...)` truncates to a byte before `MIN(63, ls)`.
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    pack_scales_mins_k4(&ls, &lm, &mut y[SCALES..SCALES + 12]);
    y[..2].copy_from_slice(&f16_bytes(max_scale / 63.0));
    y[2..4].copy_from_slice(&f16_bytes(max_min / 63.0));
}

/// The final codes (`0..=nmax`) of Q4_K and Q5_K: every sub-block whose stored scale is not
/// zero is requantized with the stored (f16-rounded) scale and minimum; the others keep the
/// search's codes.
fn requantize(x: &[f32], y: &[u8], nmax: i32, codes: &mut [u8; QK_K]) {
    let (d16, dmin16) = (f16_at(y, 0), f16_at(y, 2));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &y[SCALES..]);
        let d = d16 * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin16 * m as f32;
        for (c, &v) in codes[32 * j..32 * j + 32].iter_mut().zip(&x[32 * j..]) {
            *c = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// The codes (`0..=p.nmax`) of a Q4_K / Q5_K block, its scales, minimums and super-block
/// scales already written into `y[0..16]`: the reference quantizers' search, the 6-bit
/// scales, then the requantization with the stored scales.
pub(crate) fn k4_codes(x: &[f32], y: &mut [u8], p: &Qkx2) -> [u8; QK_K] {
    let mut codes = [0u8; QK_K];
    let (scales, mins) = search_sub_blocks(x, p, &mut codes);
    store_super_scales(&scales, &mins, y);
    requantize(x, y, p.nmax, &mut codes);
    codes
}

/// ggml `quantize_row_q4_K_ref` for one block.
pub(crate) fn encode(x: &[f32], y: &mut [u8]) {
    let params = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let codes = k4_codes(x, y, &params);
    for c in 0..4 {
        for l in 0..32 {
            y[QS + 32 * c + l] = codes[64 * c + l] | (codes[64 * c + 32 + l] << 4);
        }
    }
}

/// ggml x86 `ggml_vec_dot_q4_K_q8_K` (AVX2), one row: the scaled lanes fold into eight f32
/// accumulators (`fma(d, lanes, acc)`, `d = dy · dx`); the minimums' term
/// `min[2k]·Σq(sub-block 2k) + min[2k+1]·Σq(2k+1)` folds into four more
/// (`fma(dmin, ·, acc_m)`, `dmin = −dy · dminx`); result
/// `hsum_float_8(acc) + ((m0 + m2) + (m1 + m3))`.
pub(crate) fn dot(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut acc_m = [0.0f32; 4];
    for (((x, y), &dy), bs) in w
        .chunks_exact(BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
        .zip(a.bsums.chunks_exact(16))
    {
        let (sc, mn) = scales_mins_k4(&x[SCALES..]);
        let lanes = scaled_lanes(y, |e| code(x, e) as i32, |e| sc[e / 32] as i32);
        fma_lanes(&mut acc, dy * f16_at(x, 0), |k| lanes[k]);
        min_lanes(&mut acc_m, -dy * f16_at(x, 2), &mn, bs);
    }
    hsum_float_8(&acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

/// The Q4_K / Q5_K minimums' four lanes: `acc_m[k] = fma(dmin, min[2k]·s[2k] +
/// min[2k+1]·s[2k+1], acc_m[k])` with `s` the sub-blocks' activation sums
/// (`_mm_madd_epi16` of the minimums and the hadd'ed bsums, then `_mm_fmadd_ps`).
#[inline(always)]
pub(crate) fn min_lanes(acc_m: &mut [f32; 4], dmin: f32, mn: &[u8; 8], bsums: &[i16]) {
    let s = bsums32(bsums);
    for (k, acc) in acc_m.iter_mut().enumerate() {
        let prod = mn[2 * k] as i32 * s[2 * k] + mn[2 * k + 1] as i32 * s[2 * k + 1];
        *acc = dmin.mul_add(prod as f32, *acc);
    }
}

/// Sub-blocks per float step of llama.cpp's repacked Q4_K kernel for one token
/// (`ggml_gemv_q4_K_8x8_q8_K`): a whole super-block.
pub(crate) const GEMV_FOLD: usize = 8;
/// Sub-blocks per float step of its kernel for groups of four tokens
/// (`ggml_gemm_q4_K_8x8_q8_K`): a pair of sub-blocks (64 elements).
pub(crate) const GEMM_FOLD: usize = 2;

/// llama.cpp's repacked Q4_K kernels (ggml-cpu/arch/x86/repack.cpp), one row: every `fold`
/// sub-blocks ([`GEMV_FOLD`] or [`GEMM_FOLD`]) the exact integer sums Σ scale·code·q and
/// Σ min·Σq are folded into two scalar accumulators, `acc = fma(isum, dx·dy, acc)` and
/// `acc_min = fma(imin, dminx·dy, acc_min)`; the result is `acc − acc_min`.
pub(crate) fn dot_repacked(w: &[u8], a: &QuantizedActivation, fold: usize) -> f32 {
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    for (((x, y), &dy), bs) in w
        .chunks_exact(BYTES)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
        .zip(a.bsums.chunks_exact(16))
    {
        let (sc, mn) = scales_mins_k4(&x[SCALES..]);
        let s = bsums32(bs);
        let (dxy, dmin_xy) = (f16_at(x, 0) * dy, f16_at(x, 2) * dy);
        for group in (0..8).step_by(fold) {
            let (mut isum, mut imin) = (0i32, 0i32);
            for j in group..group + fold {
                let dot: i32 = (32 * j..32 * j + 32)
                    .map(|e| code(x, e) as i32 * y[e] as i32)
                    .sum();
                isum += sc[j] as i32 * dot;
                imin += mn[j] as i32 * s[j];
            }
            acc = (isum as f32).mul_add(dxy, acc);
            acc_min = (imin as f32).mul_add(dmin_xy, acc_min);
        }
    }
    acc - acc_min
}

/// [`super::TiledTerms`] of a block: `s1 = Σ scale · code · q`, `s2 = Σ min · Σq`.
pub(crate) fn tiled_terms(x: &[u8], y: &[i8], bs: &[i16]) -> TiledTerms {
    k4_tiled_terms(x, y, bs, code)
}

/// [`super::TiledTerms`] of a Q4_K or Q5_K block with codes from `code`.
#[inline(always)]
pub(crate) fn k4_tiled_terms(
    x: &[u8],
    y: &[i8],
    bs: &[i16],
    code: impl Fn(&[u8], usize) -> u8,
) -> TiledTerms {
    let (sc, mn) = scales_mins_k4(&x[SCALES..]);
    let s1 = (0..QK_K)
        .map(|e| sc[e / 32] as i32 * code(x, e) as i32 * y[e] as i32)
        .sum();
    let s = bsums32(bs);
    let s2 = (0..8).map(|j| mn[j] as i32 * s[j]).sum();
    TiledTerms {
        d: f16_at(x, 0),
        s1,
        min: Some((f16_at(x, 2), s2)),
    }
}
