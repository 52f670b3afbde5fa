//! AVX2 kernels (x86-64), selected at run time with `is_x86_feature_detected!`.
//!
//! Each kernel computes the same exact integer block sums as its scalar twin in `dot.rs`
//! and then applies the scalar twin's float update in the same order, so results are
//! bit-identical to the scalar reference (the tests check this). The float kernels use the
//! 32-lane order documented in `dot.rs` with separate multiply and add (no FMA).
//!
//! Integer products avoid `_mm256_maddubs_epi16` saturation: it is used only where one
//! operand is a small unsigned code (≤ 15) or, for I2_S, exactly as bitnet.cpp uses it;
//! Q8_0 × Q8_0 widens to i16 and uses `_mm256_madd_epi16`, exact for any int8 inputs.

use std::arch::x86_64::*;

use crate::activation::QuantizedActivation;
use crate::blocks::{
    f16_at, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK, QK_I2_S, QK_K, TQ1_0_BYTES, TQ1_QH, TQ1_QS,
    TQ2_0_BYTES,
};
use crate::dequantize::tq1_trit;
use crate::dot::{self, F_LANES, I2S_GROUP};
use crate::matrix::{RowKernel, WeightType};

/// Whether the AVX2 kernels can run on this CPU (AVX2 for the integer kernels, F16C for
/// the f16 conversions).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
}

/// The AVX2 row kernel for `ty`. Only call after [`available`] returned true.
pub(crate) fn kernel(ty: WeightType) -> RowKernel {
    debug_assert!(available());
    // SAFETY (every arm): `available()` was checked by the caller (`Backend::detect`), and
    // the kernels check their slice lengths before any unchecked load.
    match ty {
        WeightType::F32 => |w, _, a| unsafe { f32_f32(w, a) },
        WeightType::F16 => |w, _, a| unsafe { f16_f16(w, a) },
        WeightType::BF16 => |w, _, a| unsafe { bf16_bf16(w, a) },
        WeightType::Q8_0 => |w, _, a| unsafe { q8_0_q8_0(w, a) },
        WeightType::Q4_0 => |w, _, a| unsafe { q4_0_q8_0(w, a) },
        WeightType::Q4_1 => |w, _, a| unsafe { q4_1_q8_1(w, a) },
        WeightType::TQ1_0 => |w, _, a| unsafe { tq1_0_q8_k(w, a) },
        WeightType::TQ2_0 => |w, _, a| unsafe { tq2_0_q8_k(w, a) },
        WeightType::I2_S => |w, s, a| unsafe { i2_s_i8_s(w, s, a) },
    }
}

#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b00_00_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// 8 → 1 horizontal float sum in `dot::reduce_lanes` order.
#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<1>(t, t)))
}

/// The f16 at `b[off..off + 2]` as f32, with F16C (exact, like `blocks::f16_at`).
#[inline(always)]
unsafe fn f16_at_fast(b: &[u8], off: usize) -> f32 {
    let bits = u16::from_le_bytes([b[off], b[off + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Horizontal sums of eight i32x8 vectors at once: `[Σv0, Σv1, …, Σv7]`.
#[inline(always)]
unsafe fn hsum8(v: &[__m256i; 8]) -> [i32; 8] {
    let s01 = _mm256_hadd_epi32(v[0], v[1]);
    let s23 = _mm256_hadd_epi32(v[2], v[3]);
    let s45 = _mm256_hadd_epi32(v[4], v[5]);
    let s67 = _mm256_hadd_epi32(v[6], v[7]);
    let s0123 = _mm256_hadd_epi32(s01, s23);
    let s4567 = _mm256_hadd_epi32(s45, s67);
    let lo = _mm256_permute2x128_si256::<0x20>(s0123, s4567);
    let hi = _mm256_permute2x128_si256::<0x31>(s0123, s4567);
    let mut out = [0i32; 8];
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, _mm256_add_epi32(lo, hi));
    out
}

/// Run `block(ib)` (an i32x8 whose lanes sum to block ib's integer dot) over `nb` blocks,
/// eight at a time, and feed each block's sum to `update(ib, sumi)` in block order.
#[inline(always)]
unsafe fn for_block_sums(
    nb: usize,
    block: impl Fn(usize) -> __m256i,
    mut update: impl FnMut(usize, i32),
) {
    let mut ib = 0;
    while ib + 8 <= nb {
        let mut v = [_mm256_setzero_si256(); 8];
        for (k, v) in v.iter_mut().enumerate() {
            *v = block(ib + k);
        }
        for (k, s) in hsum8(&v).into_iter().enumerate() {
            update(ib + k, s);
        }
        ib += 8;
    }
    for ib in ib..nb {
        update(ib, hsum_i32(block(ib)));
    }
}

#[inline(always)]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn load128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p as *const __m128i)
}

/// Float dot in the 32-lane order: `$load` yields 8 weights from element `$i` as an
/// `__m256`, `$scalar` weight `$j` as f32 (for the tail). A macro rather than a function
/// taking closures so the intrinsics inline into the caller's `target_feature` context.
macro_rules! float_dot {
    ($n:expr, $a:expr, |$i:ident| $load:expr, |$j:ident| $scalar:expr) => {{
        let n: usize = $n;
        let a: &[f32] = $a;
        assert!(a.len() >= n);
        let main = n - n % F_LANES;
        let ap = a.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut base = 0;
        while base < main {
            for (k, acc) in acc.iter_mut().enumerate() {
                let $i = base + 8 * k;
                let x = _mm256_loadu_ps(ap.add($i));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps($load, x));
            }
            base += F_LANES;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = hsum_ps(v);
        for ($j, &x) in a.iter().enumerate().take(n).skip(main) {
            sum += $scalar * x;
        }
        sum
    }};
}

#[target_feature(enable = "avx2")]
unsafe fn f32_f32(w: &[u8], a: &QuantizedActivation) -> f32 {
    let n = a.len;
    assert!(w.len() >= 4 * n);
    let p = w.as_ptr();
    float_dot!(
        n,
        &a.values,
        |i| _mm256_loadu_ps(p.add(4 * i) as *const f32),
        |i| f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]])
    )
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_f16(w: &[u8], a: &QuantizedActivation) -> f32 {
    let n = a.len;
    assert!(w.len() >= 2 * n);
    let p = w.as_ptr();
    float_dot!(
        n,
        &a.values,
        |i| _mm256_cvtph_ps(load128(p.add(2 * i))),
        |i| f16_at(w, 2 * i)
    )
}

#[target_feature(enable = "avx2")]
unsafe fn bf16_bf16(w: &[u8], a: &QuantizedActivation) -> f32 {
    let n = a.len;
    assert!(w.len() >= 2 * n);
    let p = w.as_ptr();
    float_dot!(
        n,
        &a.values,
        |i| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load128(
            p.add(2 * i)
        )))),
        |i| half::bf16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32()
    )
}

/// Σ x·y over 32 int8 pairs, exact for all inputs (widen to i16, `madd`).
#[inline(always)]
unsafe fn dot_i8x32(x: __m256i, y: __m256i) -> __m256i {
    let xl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x));
    let xh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(x));
    let yl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(y));
    let yh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(y));
    _mm256_add_epi32(_mm256_madd_epi16(xl, yl), _mm256_madd_epi16(xh, yh))
}

/// 16 Q4 bytes → 32 nibbles in element order (low nibbles, then high nibbles).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let b = load128(p);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(b, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
    _mm256_set_m128i(hi, lo)
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * Q8_0_BYTES && a.qs.len() >= nb * QK && a.d.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let mut sumf = 0.0f32;
    for_block_sums(
        nb,
        |ib| {
            dot_i8x32(
                load256(wp.add(ib * Q8_0_BYTES + 2)),
                load256(yp.add(ib * QK)),
            )
        },
        |ib, sumi| sumf += dot::q8_0_update(sumi, f16_at_fast(w, ib * Q8_0_BYTES), a.d[ib]),
    );
    sumf
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * Q4_0_BYTES && a.qs.len() >= nb * QK && a.d.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let ones = _mm256_set1_epi16(1);
    let eight = _mm256_set1_epi8(8);
    let mut sumf = 0.0f32;
    for_block_sums(
        nb,
        |ib| {
            // x in [-8, 7]: |x|·|y| pairs stay far below i16 saturation.
            let x = _mm256_sub_epi8(nibbles(wp.add(ib * Q4_0_BYTES + 2)), eight);
            let y = load256(yp.add(ib * QK));
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
            _mm256_madd_epi16(p16, ones)
        },
        |ib, sumi| sumf += dot::q4_0_update(sumi, f16_at_fast(w, ib * Q4_0_BYTES), a.d[ib]),
    );
    sumf
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_1_q8_1(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * Q4_1_BYTES && a.qs.len() >= nb * QK && a.s.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let ones = _mm256_set1_epi16(1);
    let mut sumf = 0.0f32;
    for_block_sums(
        nb,
        |ib| {
            let x = nibbles(wp.add(ib * Q4_1_BYTES + 4));
            let y = load256(yp.add(ib * QK));
            _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones)
        },
        |ib, sumi| {
            let o = ib * Q4_1_BYTES;
            let (dx, mx) = (f16_at_fast(w, o), f16_at_fast(w, o + 2));
            sumf += dot::q4_1_update(sumi, dx, mx, a.d[ib], a.s[ib]);
        },
    );
    sumf
}

/// Σ of the block's codes (the sixteen Q8_K bsums).
#[inline(always)]
unsafe fn bsum_total(bsums: &[i16]) -> __m256i {
    let v = _mm256_loadu_si256(bsums.as_ptr() as *const __m256i);
    _mm256_madd_epi16(v, _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn tq2_0_q8_k(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK_K;
    assert!(w.len() >= nb * TQ2_0_BYTES && a.qs.len() >= nb * QK_K && a.bsums.len() >= nb * 16);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let ones = _mm256_set1_epi16(1);
    let m3 = _mm256_set1_epi8(3);
    let mut sumf = 0.0f32;
    for ib in 0..nb {
        let x = wp.add(ib * TQ2_0_BYTES);
        let y = yp.add(ib * QK_K);
        // Σ code·y with codes 0..2 (maddubs cannot saturate), minus Σy = Σ bsums.
        let mut acc = _mm256_setzero_si256();
        for c in 0..2 {
            let b = load256(x.add(32 * c));
            let q = [
                _mm256_and_si256(b, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(b), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(b), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(b), m3),
            ];
            for (n, q) in q.into_iter().enumerate() {
                let yv = load256(y.add(128 * c + 32 * n));
                acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(q, yv));
            }
        }
        let acc = _mm256_madd_epi16(acc, ones);
        let sumi = hsum_i32(_mm256_sub_epi32(acc, bsum_total(&a.bsums[16 * ib..])));
        sumf += dot::tq_update(sumi, f16_at_fast(w, ib * TQ2_0_BYTES + QK_K / 4), a.d[ib]);
    }
    sumf
}

/// Σ trit·y for 16 TQ1_0 bytes (trit `n` of each) against 16 activations.
#[inline(always)]
unsafe fn tq1_trits_dot(bytes16: __m256i, n: usize, y: *const u8) -> __m256i {
    const POW3: [i16; 5] = [1, 3, 9, 27, 81];
    let q = _mm256_and_si256(
        _mm256_mullo_epi16(bytes16, _mm256_set1_epi16(POW3[n])),
        _mm256_set1_epi16(0xFF),
    );
    let t = _mm256_srli_epi16::<8>(_mm256_mullo_epi16(q, _mm256_set1_epi16(3)));
    _mm256_madd_epi16(t, _mm256_cvtepi8_epi16(load128(y)))
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn tq1_0_q8_k(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK_K;
    assert!(w.len() >= nb * TQ1_0_BYTES && a.qs.len() >= nb * QK_K && a.bsums.len() >= nb * 16);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let mut sumf = 0.0f32;
    for ib in 0..nb {
        let x = wp.add(ib * TQ1_0_BYTES);
        let y = yp.add(ib * QK_K);
        let mut acc = _mm256_setzero_si256();
        // qs[0..32]: trit n of byte m is element 32n + m; two halves of 16 bytes.
        for h in 0..2 {
            let b = _mm256_cvtepu8_epi16(load128(x.add(16 * h)));
            for n in 0..5 {
                acc = _mm256_add_epi32(acc, tq1_trits_dot(b, n, y.add(32 * n + 16 * h)));
            }
        }
        // qs[32..48]: trit n of byte 32 + m is element 160 + 16n + m.
        let b = _mm256_cvtepu8_epi16(load128(x.add(32)));
        for n in 0..5 {
            acc = _mm256_add_epi32(acc, tq1_trits_dot(b, n, y.add(160 + 16 * n)));
        }
        // qh: 16 elements, scalar.
        let xb = &w[ib * TQ1_0_BYTES..];
        let yb = &a.qs[ib * QK_K..];
        let mut tail = 0i32;
        for n in 0..4 {
            for j in 0..TQ1_QH {
                tail += tq1_trit(xb[TQ1_QS + j], n) * yb[240 + 4 * n + j] as i32;
            }
        }
        let acc = _mm256_sub_epi32(acc, bsum_total(&a.bsums[16 * ib..]));
        let sumi = hsum_i32(acc) + tail;
        sumf += dot::tq_update(sumi, f16_at_fast(xb, TQ1_QS + TQ1_QH), a.d[ib]);
    }
    sumf
}

/// bitnet.cpp `ggml_vec_dot_i2_i8_s_1x1` (AVX2), instruction for instruction: codes × y
/// through `maddubs`, wrapping i16 accumulation over up to 32 blocks, then widening.
#[target_feature(enable = "avx2")]
unsafe fn i2_s_i8_s(codes: &[u8], wscale: f32, a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK_I2_S;
    assert!(codes.len() >= nb * 32 && a.qs.len() >= nb * QK_I2_S);
    let (xp, yp) = (codes.as_ptr(), a.qs.as_ptr() as *const u8);
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut accu = _mm256_setzero_si256();
    let mut k = 0;
    while k < nb {
        let end = (k + I2S_GROUP).min(nb);
        let mut acc16 = _mm256_setzero_si256();
        for blk in k..end {
            let x = load256(xp.add(32 * blk));
            let y = yp.add(QK_I2_S * blk);
            let x0 = _mm256_and_si256(_mm256_srli_epi16::<6>(x), mask);
            let x1 = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
            let x2 = _mm256_and_si256(_mm256_srli_epi16::<2>(x), mask);
            let x3 = _mm256_and_si256(x, mask);
            let p0 = _mm256_maddubs_epi16(x0, load256(y));
            let p1 = _mm256_maddubs_epi16(x1, load256(y.add(32)));
            let p2 = _mm256_maddubs_epi16(x2, load256(y.add(64)));
            let p3 = _mm256_maddubs_epi16(x3, load256(y.add(96)));
            acc16 = _mm256_add_epi16(acc16, _mm256_add_epi16(p0, p1));
            acc16 = _mm256_add_epi16(acc16, _mm256_add_epi16(p2, p3));
        }
        accu = _mm256_add_epi32(accu, _mm256_madd_epi16(acc16, ones));
        k = end;
    }
    dot::i2_s_finish(hsum_i32(accu), a, wscale)
}
