//! Scalar emulations of llama.cpp's x86 kernels for Q5_0, Q5_1 and IQ4_NL weights, operation
//! for operation (lanes, fused multiply-adds, reductions), so that they give the same bits as
//! the AVX2 kernels in `super::x86` and as llama.cpp itself. The lane helpers are the ones
//! the Q4/Q8 kernels use (`crate::dot`): lane k of a block collects the elements e with
//! `(e mod 32) / 4 == k`.

use crate::activation::QuantizedActivation;
use crate::blocks::{f16_at, IQ4_NL_BYTES, Q5_0_BYTES, Q5_1_BYTES, QK};
use crate::dot::{fma_lanes, four, hsum_float_8, signed_lane, unsigned_lane};

use super::{iq4_nl_levels, q5_codes};

/// ggml x86 `ggml_vec_dot_q5_0_q8_0` (and tinyBLAS's Q5_0 × Q8_0, which has the same
/// operations): codes − 16 through the signed lanes, `acc = fma(dx·dy, lanes, acc)`, then
/// `hsum_float_8`.
pub(crate) fn q5_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for ((x, y), &dy) in w
        .chunks_exact(Q5_0_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
    {
        let xs = q5_codes(&x[2..6], &x[6..]).map(|c| c as i8 - 16);
        fma_lanes(&mut acc, f16_at(x, 0) * dy, |k| {
            signed_lane(four(&xs, k), four(y, k))
        });
    }
    hsum_float_8(&acc)
}

/// ggml x86 `ggml_vec_dot_q5_1_q8_1`: `acc = fma(lanes, dx·dy, acc)` over the unsigned codes,
/// and `summs = fma(mx, sy, summs)` (GCC fuses `summs += m * s`); result `hsum(acc) + summs`.
pub(crate) fn q5_1_q8_1(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (((x, y), &dy), &sy) in w
        .chunks_exact(Q5_1_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
        .zip(&a.s)
    {
        summs = f16_at(x, 2).mul_add(sy, summs);
        let xs = q5_codes(&x[4..8], &x[8..]);
        fma_lanes(&mut acc, f16_at(x, 0) * dy, |k| {
            unsigned_lane(four(&xs, k), four(y, k))
        });
    }
    hsum_float_8(&acc) + summs
}

/// The eight signed lanes of one IQ4_NL block times a Q8_0 block.
#[inline(always)]
fn iq4_nl_lanes(x: &[u8], y: &[i8]) -> [i32; 8] {
    let xs = iq4_nl_levels(&x[2..]);
    std::array::from_fn(|k| signed_lane(four(&xs, k), four(y, k)))
}

/// ggml x86 `ggml_vec_dot_iq4_nl_q8_0` (one token): blocks in pairs, the even block into
/// one eight-lane accumulator and the odd one into another (`acc = fma(dy·dx, lanes, acc)`),
/// then `hsum_float_8(acc₁ + acc₂)`; an odd last block is summed exactly in integers and
/// added as `sum = fma(dy·dx, Σ, sum)` (GCC fuses the C tail's `sumf += d * (sumi1 + sumi2)`).
pub(crate) fn iq4_nl_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.d.len();
    let block = |ib: usize| {
        let x = &w[ib * IQ4_NL_BYTES..(ib + 1) * IQ4_NL_BYTES];
        (x, &a.qs[ib * QK..(ib + 1) * QK], a.d[ib] * f16_at(x, 0))
    };
    let mut acc = [[0.0f32; 8]; 2];
    for pair in 0..nb / 2 {
        for (half, acc) in acc.iter_mut().enumerate() {
            let (x, y, d) = block(2 * pair + half);
            let lanes = iq4_nl_lanes(x, y);
            fma_lanes(acc, d, |k| lanes[k]);
        }
    }
    let both: [f32; 8] = std::array::from_fn(|k| acc[0][k] + acc[1][k]);
    let mut sum = hsum_float_8(&both);
    if nb % 2 == 1 {
        let (x, y, d) = block(nb - 1);
        let xs = iq4_nl_levels(&x[2..]);
        let sumi: i32 = xs.iter().zip(y).map(|(&l, &q)| l as i32 * q as i32).sum();
        sum = d.mul_add(sumi as f32, sum);
    }
    sum
}

/// tinyBLAS (`llamafile_sgemm`, `tinyBLAS_Q0_AVX<block_iq4_nl, block_q8_0>`), what llama.cpp
/// runs for two or more tokens when the weights are not repacked: one eight-lane accumulator,
/// `acc = fma(dx·dy, lanes, acc)` block after block, then its `hsum` (= `hsum_float_8`).
pub(crate) fn iq4_nl_q8_0_tinyblas(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = [0.0f32; 8];
    for ((x, y), &dy) in w
        .chunks_exact(IQ4_NL_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
    {
        let lanes = iq4_nl_lanes(x, y);
        fma_lanes(&mut acc, f16_at(x, 0) * dy, |k| lanes[k]);
    }
    hsum_float_8(&acc)
}

/// llama.cpp's repacked IQ4_NL kernels (`ggml_gemv_iq4_nl_8x8_q8_0` /
/// `ggml_gemm_iq4_nl_8x8_q8_0`, the same template as Q4_0's): each block's integer dot is
/// summed exactly, then folded into one f32 per row, `acc = fma(Σ, dx·dy, acc)`.
pub(crate) fn iq4_nl_q8_0_repacked(w: &[u8], a: &QuantizedActivation) -> f32 {
    let mut acc = 0.0f32;
    for ((x, y), &dy) in w
        .chunks_exact(IQ4_NL_BYTES)
        .zip(a.qs.chunks_exact(QK))
        .zip(&a.d)
    {
        let isum: i32 = iq4_nl_lanes(x, y).iter().sum();
        acc = (isum as f32).mul_add(f16_at(x, 0) * dy, acc);
    }
    acc
}
