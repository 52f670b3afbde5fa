//! AVX2 kernels for Q5_0, Q5_1 and IQ4_NL weights: the instructions of llama.cpp's x86
//! kernels (`ggml-cpu/arch/x86/quants.c`, `llamafile/sgemm.cpp`, `arch/x86/repack.cpp`), so
//! the same bits as those and as the scalar emulations in `super::dot` (the tests check).
//! The four-token forms load and unpack each weight block once and then run every token's
//! own sequence of operations, hence the same bits as four one-token calls.

use std::arch::x86_64::*;

use crate::activation::QuantizedActivation;
use crate::blocks::{IQ4_NL_BYTES, Q5_0_BYTES, Q5_1_BYTES, QK};
use crate::matrix::{RowKernel, RowKernel4, WeightType};
use crate::x86::{
    check4, f16_at_ptr, hsum_i32, hsum_ps, load128, load256, mul_sum_i8_pairs, nibbles,
};

use super::KVALUES_IQ4NL;

/// The AVX2 one-token kernel for Q5_0, Q5_1 or IQ4_NL. Only call when
/// `crate::x86::available()`.
pub(crate) fn kernel(ty: WeightType) -> RowKernel {
    // SAFETY (every arm): the AVX2 backend is only chosen when the CPU has AVX2, FMA and
    // F16C, and the kernels check their slice lengths before any unchecked load.
    match ty {
        WeightType::Q5_0 => |w, _, a| unsafe { q5_0_q8_0(w, a) },
        WeightType::Q5_1 => |w, _, a| unsafe { q5_1_q8_1(w, a) },
        WeightType::IQ4_NL => |w, _, a| unsafe { iq4_nl_q8_0(w, a) },
        other => unreachable!("legacy::x86::kernel called for {other:?}"),
    }
}

/// The AVX2 four-token kernel of the batch path for Q5_0, Q5_1 or IQ4_NL (tinyBLAS's order
/// for IQ4_NL).
pub(crate) fn kernel4(ty: WeightType) -> RowKernel4 {
    // SAFETY: as in `kernel`.
    match ty {
        WeightType::Q5_0 => |w, _, a| unsafe { q5_0_q8_0_x4(w, a) },
        WeightType::Q5_1 => |w, _, a| unsafe { q5_1_q8_1_x4(w, a) },
        WeightType::IQ4_NL => |w, _, a| unsafe { iq4_nl_q8_0_tinyblas_x4(w, a) },
        other => unreachable!("legacy::x86::kernel4 called for {other:?}"),
    }
}

/// The AVX2 kernel in tinyBLAS's IQ4_NL order.
pub(crate) fn iq4_nl_tinyblas_kernel() -> RowKernel {
    // SAFETY: as in `kernel`.
    |w, _, a| unsafe { iq4_nl_q8_0_tinyblas(w, a) }
}

/// The AVX2 kernels in the repacked IQ4_NL order (one token, four tokens).
pub(crate) fn iq4_nl_repacked_kernels() -> (RowKernel, Option<RowKernel4>) {
    // SAFETY: as in `kernel`.
    (
        |w, _, a| unsafe { iq4_nl_q8_0_repacked(w, a) },
        Some(|w, _, a| unsafe { iq4_nl_q8_0_repacked_x4(w, a) }),
    )
}

/// ggml's `bytes_from_bits_32`: bit j of the little-endian u32 at `p` → byte j = 0xFF or 0.
#[inline(always)]
unsafe fn bytes_from_bits(p: *const u8) -> __m256i {
    let bits = i32::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 4]));
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let all_but_one = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(all_but_one, _mm256_set1_epi64x(-1))
}

/// A Q5_0 block's 32 values (code − 16) as signed bytes: the nibbles, with 0xF0 or'ed in
/// where the fifth bit is clear (ggml: `andnot(bytes_from_bits_32, 0xF0) | nibbles`).
#[inline(always)]
unsafe fn q5_0_values(block: *const u8) -> __m256i {
    let high = _mm256_andnot_si256(bytes_from_bits(block.add(2)), _mm256_set1_epi8(-16));
    _mm256_or_si256(nibbles(block.add(6)), high)
}

/// A Q5_1 block's 32 codes 0..=31 as bytes.
#[inline(always)]
unsafe fn q5_1_codes(block: *const u8) -> __m256i {
    let high = _mm256_and_si256(bytes_from_bits(block.add(4)), _mm256_set1_epi8(0x10));
    _mm256_or_si256(nibbles(block.add(8)), high)
}

/// The IQ4_NL level table in both 128-bit halves, for `_mm256_shuffle_epi8`.
#[inline(always)]
unsafe fn iq4_nl_table() -> __m256i {
    _mm256_broadcastsi128_si256(load128(KVALUES_IQ4NL.as_ptr() as *const u8))
}

/// An IQ4_NL block's 32 levels as signed bytes, in element order.
#[inline(always)]
unsafe fn iq4_nl_values(table: __m256i, block: *const u8) -> __m256i {
    _mm256_shuffle_epi8(table, nibbles(block.add(2)))
}

/// One accumulator over blocks of 32 signed values (`values` unpacks the block at a
/// pointer) times Q8_0: `acc = fma(dx·dy, lanes, acc)`, then `hsum_float_8` — the operations
/// of ggml's `ggml_vec_dot_q5_0_q8_0` and of tinyBLAS's `tinyBLAS_Q0_AVX` for Q5_0 and
/// IQ4_NL. Inlined into each kernel's `target_feature` context.
#[inline(always)]
unsafe fn signed_blocks_dot(
    w: &[u8],
    a: &QuantizedActivation,
    block_bytes: usize,
    values: impl Fn(*const u8) -> __m256i,
) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * block_bytes && a.qs.len() >= nb * QK && a.d.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let mut acc = _mm256_setzero_ps();
    for ib in 0..nb {
        let x = wp.add(ib * block_bytes);
        let d = _mm256_set1_ps(f16_at_ptr(x) * a.d[ib]);
        let q = mul_sum_i8_pairs(values(x), load256(yp.add(ib * QK)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc);
    }
    hsum_ps(acc)
}

/// [`signed_blocks_dot`] for four activations: each block unpacked once, then every token's
/// own operations.
#[inline(always)]
unsafe fn signed_blocks_dot_x4(
    w: &[u8],
    a: [&QuantizedActivation; 4],
    block_bytes: usize,
    values: impl Fn(*const u8) -> __m256i,
) -> [f32; 4] {
    let nb = check4(a, QK);
    assert!(w.len() >= nb * block_bytes);
    let wp = w.as_ptr();
    let yp = a.map(|act| act.qs.as_ptr() as *const u8);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    for ib in 0..nb {
        let block = wp.add(ib * block_bytes);
        let dw = f16_at_ptr(block);
        let x = values(block);
        let ax = _mm256_sign_epi8(x, x);
        for t in 0..4 {
            let d = _mm256_set1_ps(dw * a[t].d[ib]);
            let y = load256(yp[t].add(ib * QK));
            let q = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, x)), ones);
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc[t]);
        }
    }
    acc.map(|v| hsum_ps(v))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    signed_blocks_dot(w, a, Q5_0_BYTES, |x| q5_0_values(x))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_q8_0_x4(w: &[u8], a: [&QuantizedActivation; 4]) -> [f32; 4] {
    signed_blocks_dot_x4(w, a, Q5_0_BYTES, |x| q5_0_values(x))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1_q8_1(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * Q5_1_BYTES && a.qs.len() >= nb * QK && a.d.len() >= nb);
    assert!(a.s.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for ib in 0..nb {
        let o = ib * Q5_1_BYTES;
        summs = f16_at_ptr(wp.add(o + 2)).mul_add(a.s[ib], summs);
        let d = _mm256_set1_ps(f16_at_ptr(wp.add(o)) * a.d[ib]);
        let x = q5_1_codes(wp.add(o));
        let q = _mm256_madd_epi16(_mm256_maddubs_epi16(x, load256(yp.add(ib * QK))), ones);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), d, acc);
    }
    hsum_ps(acc) + summs
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1_q8_1_x4(w: &[u8], a: [&QuantizedActivation; 4]) -> [f32; 4] {
    let nb = check4(a, QK);
    assert!(w.len() >= nb * Q5_1_BYTES);
    for act in a {
        assert!(act.s.len() >= nb);
    }
    let wp = w.as_ptr();
    let yp = a.map(|act| act.qs.as_ptr() as *const u8);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut summs = [0.0f32; 4];
    for ib in 0..nb {
        let o = ib * Q5_1_BYTES;
        let (dw, mw) = (f16_at_ptr(wp.add(o)), f16_at_ptr(wp.add(o + 2)));
        let x = q5_1_codes(wp.add(o));
        for t in 0..4 {
            summs[t] = mw.mul_add(a[t].s[ib], summs[t]);
            let d = _mm256_set1_ps(dw * a[t].d[ib]);
            let y = load256(yp[t].add(ib * QK));
            let q = _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), d, acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]) + summs[t])
}

/// ggml x86 `ggml_vec_dot_iq4_nl_q8_0`: even blocks into one accumulator, odd ones into
/// another, `hsum(acc₁ + acc₂)`, and an odd last block summed in integers then fused in.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_nl_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * IQ4_NL_BYTES && a.qs.len() >= nb * QK && a.d.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let table = iq4_nl_table();
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut ib = 0;
    while ib + 1 < nb {
        for (half, acc) in acc.iter_mut().enumerate() {
            let b = ib + half;
            let d = _mm256_set1_ps(a.d[b] * f16_at_ptr(wp.add(b * IQ4_NL_BYTES)));
            let x = iq4_nl_values(table, wp.add(b * IQ4_NL_BYTES));
            let q = mul_sum_i8_pairs(x, load256(yp.add(b * QK)));
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), *acc);
        }
        ib += 2;
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
    if ib < nb {
        // The C tail multiplies plainly (no sign trick): the exact integer dot.
        let d = a.d[ib] * f16_at_ptr(wp.add(ib * IQ4_NL_BYTES));
        let x = iq4_nl_values(table, wp.add(ib * IQ4_NL_BYTES));
        let y = load256(yp.add(ib * QK));
        let lo = _mm256_madd_epi16(
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x)),
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(y)),
        );
        let hi = _mm256_madd_epi16(
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(x)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(y)),
        );
        let sumi = hsum_i32(_mm256_add_epi32(lo, hi));
        sum = d.mul_add(sumi as f32, sum);
    }
    sum
}

/// tinyBLAS's IQ4_NL × Q8_0 order (one accumulator, then `hsum`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_nl_q8_0_tinyblas(w: &[u8], a: &QuantizedActivation) -> f32 {
    let table = iq4_nl_table();
    signed_blocks_dot(w, a, IQ4_NL_BYTES, |x| iq4_nl_values(table, x))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_nl_q8_0_tinyblas_x4(w: &[u8], a: [&QuantizedActivation; 4]) -> [f32; 4] {
    let table = iq4_nl_table();
    signed_blocks_dot_x4(w, a, IQ4_NL_BYTES, |x| iq4_nl_values(table, x))
}

/// The repacked order: per block the exact integer dot, then one scalar fused multiply-add.
/// Four blocks' lane vectors are reduced together ([`sum_lanes4`], cheaper than four
/// `hsum_i32`), then their four steps `acc = fma(Σ, dx·dy, acc)` run in block order.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_nl_q8_0_repacked(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * IQ4_NL_BYTES && a.qs.len() >= nb * QK && a.d.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let table = iq4_nl_table();
    let lanes = |ib: usize| {
        let x = iq4_nl_values(table, wp.add(ib * IQ4_NL_BYTES));
        mul_sum_i8_pairs(x, load256(yp.add(ib * QK)))
    };
    let step = |acc: f32, isum: i32, ib: usize| {
        (isum as f32).mul_add(f16_at_ptr(wp.add(ib * IQ4_NL_BYTES)) * a.d[ib], acc)
    };
    let mut acc = 0.0f32;
    let quads = nb / 4;
    for q in 0..quads {
        let b = 4 * q;
        let mut sums = [0i32; 4];
        let v = sum_lanes4([lanes(b), lanes(b + 1), lanes(b + 2), lanes(b + 3)]);
        _mm_storeu_si128(sums.as_mut_ptr() as *mut __m128i, v);
        for (k, &s) in sums.iter().enumerate() {
            acc = step(acc, s, b + k);
        }
    }
    for ib in 4 * quads..nb {
        acc = step(acc, hsum_i32(lanes(ib)), ib);
    }
    acc
}

/// The eight i32 lanes of four vectors summed, one sum per vector (two rounds of `hadd`,
/// then the two halves): exact, as integer addition is, so equal to four `hsum_i32`.
#[inline(always)]
unsafe fn sum_lanes4(v: [__m256i; 4]) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// [`iq4_nl_q8_0_repacked`] for four tokens: each block's four integer dots are reduced
/// together ([`sum_lanes4`]), and the four tokens' scalar steps `acc = fma(Σ, dx·dy, acc)`
/// run side by side in the lanes of one vector, each lane the one-token kernel's
/// operations.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_nl_q8_0_repacked_x4(w: &[u8], a: [&QuantizedActivation; 4]) -> [f32; 4] {
    let nb = check4(a, QK);
    assert!(w.len() >= nb * IQ4_NL_BYTES);
    let wp = w.as_ptr();
    let yp = a.map(|act| act.qs.as_ptr() as *const u8);
    let dy = a.map(|act| act.d.as_ptr());
    let table = iq4_nl_table();
    let mut acc = _mm_setzero_ps();
    for ib in 0..nb {
        let x = iq4_nl_values(table, wp.add(ib * IQ4_NL_BYTES));
        let sums = sum_lanes4(yp.map(|y| mul_sum_i8_pairs(x, load256(y.add(ib * QK)))));
        let d = _mm_mul_ps(
            _mm_set1_ps(f16_at_ptr(wp.add(ib * IQ4_NL_BYTES))),
            _mm_set_ps(
                *dy[3].add(ib),
                *dy[2].add(ib),
                *dy[1].add(ib),
                *dy[0].add(ib),
            ),
        );
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(sums), d, acc);
    }
    let mut out = [0.0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), acc);
    out
}
