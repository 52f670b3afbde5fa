//! AVX2 kernels (x86-64), selected at run time with `is_x86_feature_detected!`.
//!
//! The quantized kernels use the same instructions as ggml's x86 AVX2 kernels
//! (`ggml-cpu/arch/x86/quants.c`) and bitnet.cpp's (`src/ggml-bitnet-mad.cpp`), so they are
//! bit-identical to those and to the scalar emulations in `dot.rs` (the tests check the
//! latter). The float kernels use the 32-lane order documented in `dot.rs` with separate
//! multiply and add.

use std::arch::x86_64::*;

use crate::activation::QuantizedActivation;
use crate::blocks::{f16_at, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK, QK_I2_S};
use crate::dot::{self, F_LANES, I2S_GROUP};
use crate::matrix::{RowKernel, WeightType};

/// Whether the AVX2 kernels can run on this CPU (AVX2 for the integer kernels, FMA for the
/// block accumulation, F16C for the f16 conversions).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
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
        WeightType::TQ1_0 | WeightType::TQ2_0 => {
            let flavor = crate::ternary_x86::Flavor::best();
            crate::ternary_x86::kernels(ty, flavor)
                .expect("a ternary type")
                .0
        }
        WeightType::I2_S => |w, s, a| unsafe { i2_s_i8_s(w, s, a) },
        WeightType::Q2_K
        | WeightType::Q3_K
        | WeightType::Q4_K
        | WeightType::Q5_K
        | WeightType::Q6_K => {
            crate::kquants::x86::kernels(ty.ggml())
                .expect("a k-quant")
                .0
        }
        WeightType::Q5_0 | WeightType::Q5_1 | WeightType::IQ4_NL => crate::legacy::x86::kernel(ty),
    }
}

#[inline(always)]
pub(crate) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b00_00_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// ggml's `hsum_float_8` (same order as `dot::hsum_float_8`).
#[inline(always)]
pub(crate) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<1>(t, t)))
}

/// The f16 at `b[off..off + 2]` as f32 (exact, like `blocks::f16_at`), from a table of all
/// 65536 values, as ggml's x86 kernels do (`ggml_table_f32_f16`).
///
/// Not with F16C: for `_mm_cvtph_ps(_mm_cvtsi32_si128(bits))` LLVM emits a `vpinsrw` into
/// whatever register is free — often a kernel's accumulator — and that false dependency
/// chains every block's scale conversion to the previous block's fused multiply-add: the
/// kernels ran ~2.5× slower than llama.cpp's.
#[inline(always)]
pub(crate) fn f16_at_fast(b: &[u8], off: usize) -> f32 {
    F16_TO_F32[u16::from_le_bytes([b[off], b[off + 1]]) as usize]
}

/// [`f16_at_fast`] without the bounds check, for kernels that checked their slices once.
///
/// # Safety
/// `p` and `p + 1` must be readable.
#[inline(always)]
pub(crate) unsafe fn f16_at_ptr(p: *const u8) -> f32 {
    F16_TO_F32[u16::from_le(std::ptr::read_unaligned(p as *const u16)) as usize]
}

/// Every f16 bit pattern widened to f32 (256 KiB, built at compile time).
static F16_TO_F32: [f32; 65536] = {
    let mut t = [0.0f32; 65536];
    let mut h = 0;
    while h < 65536 {
        t[h] = f16_bits_to_f32(h as u32);
        h += 1;
    }
    t
};

/// IEEE binary16 → binary32, exact (NaNs keep their payload, quieted as F16C does).
const fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000) << 16;
    let exponent = (h >> 10) & 0x1f;
    let mantissa = h & 0x03ff;
    let bits = if exponent == 0x1f {
        let quiet = if mantissa != 0 { 0x0040_0000 } else { 0 };
        0x7f80_0000 | quiet | (mantissa << 13)
    } else if exponent != 0 {
        ((exponent + 127 - 15) << 23) | (mantissa << 13)
    } else if mantissa == 0 {
        0
    } else {
        // Subnormal: normalise the mantissa (value = mantissa · 2⁻²⁴).
        let mut e = 127 - 15 + 1;
        let mut m = mantissa;
        while m & 0x0400 == 0 {
            m <<= 1;
            e -= 1;
        }
        (e << 23) | ((m & 0x03ff) << 13)
    };
    f32::from_bits(sign | bits)
}

#[inline(always)]
pub(crate) unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
pub(crate) unsafe fn load128(p: *const u8) -> __m128i {
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

/// ggml's `mul_sum_i8_pairs_float` without the float conversion: i32 lane k = Σ x·y over
/// bytes 4k..4k+3, through the `_mm256_sign_epi8` trick and `maddubs` (with its saturation).
#[inline(always)]
pub(crate) unsafe fn mul_sum_i8_pairs(x: __m256i, y: __m256i) -> __m256i {
    let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// 16 Q4 bytes → 32 nibbles in element order (ggml `bytes_from_nibbles_32`).
#[inline(always)]
pub(crate) unsafe fn nibbles(p: *const u8) -> __m256i {
    let b = load128(p);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(b, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
    _mm256_set_m128i(hi, lo)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * Q8_0_BYTES && a.qs.len() >= nb * QK && a.d.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let mut acc = _mm256_setzero_ps();
    for ib in 0..nb {
        let d = _mm256_set1_ps(f16_at_fast(w, ib * Q8_0_BYTES) * a.d[ib]);
        let x = load256(wp.add(ib * Q8_0_BYTES + 2));
        let q = mul_sum_i8_pairs(x, load256(yp.add(ib * QK)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_q8_0(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * Q4_0_BYTES && a.qs.len() >= nb * QK && a.d.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let eight = _mm256_set1_epi8(8);
    let mut acc = _mm256_setzero_ps();
    for ib in 0..nb {
        let d = _mm256_set1_ps(f16_at_fast(w, ib * Q4_0_BYTES) * a.d[ib]);
        let x = _mm256_sub_epi8(nibbles(wp.add(ib * Q4_0_BYTES + 2)), eight);
        let q = mul_sum_i8_pairs(x, load256(yp.add(ib * QK)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_q8_1(w: &[u8], a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * Q4_1_BYTES && a.qs.len() >= nb * QK && a.s.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for ib in 0..nb {
        let o = ib * Q4_1_BYTES;
        summs = f16_at_fast(w, o + 2).mul_add(a.s[ib], summs);
        let d = _mm256_set1_ps(f16_at_fast(w, o) * a.d[ib]);
        let x = nibbles(wp.add(o + 4));
        let q = _mm256_madd_epi16(_mm256_maddubs_epi16(x, load256(yp.add(ib * QK))), ones);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc);
    }
    hsum_ps(acc) + summs
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

/// [`i2_s_i8_s`] for four activations at once, as bitnet.cpp's `ggml_vec_dot_i2_i8_s_Nx1`
/// does for a batch: each 32-byte block of codes is unpacked once and multiplied with the
/// four activations. Every activation's own sequence of operations is that of the one-token
/// kernel (the i16 additions wrap, so their grouping does not matter), hence the same bits.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn i2_s_i8_s_x4(
    codes: &[u8],
    wscale: f32,
    a: [&QuantizedActivation; 4],
) -> [f32; 4] {
    let nb = a[0].len / QK_I2_S;
    assert!(codes.len() >= nb * 32);
    for act in a {
        assert!(act.len == a[0].len && act.qs.len() >= nb * QK_I2_S);
    }
    let xp = codes.as_ptr();
    let yp = a.map(|act| act.qs.as_ptr() as *const u8);
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut accu = [_mm256_setzero_si256(); 4];
    let mut k = 0;
    while k < nb {
        let end = (k + I2S_GROUP).min(nb);
        let mut acc16 = [_mm256_setzero_si256(); 4];
        for blk in k..end {
            let x = load256(xp.add(32 * blk));
            let x0 = _mm256_and_si256(_mm256_srli_epi16::<6>(x), mask);
            let x1 = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
            let x2 = _mm256_and_si256(_mm256_srli_epi16::<2>(x), mask);
            let x3 = _mm256_and_si256(x, mask);
            for (acc, &y) in acc16.iter_mut().zip(&yp) {
                let y = y.add(QK_I2_S * blk);
                let p0 = _mm256_maddubs_epi16(x0, load256(y));
                let p1 = _mm256_maddubs_epi16(x1, load256(y.add(32)));
                let p2 = _mm256_maddubs_epi16(x2, load256(y.add(64)));
                let p3 = _mm256_maddubs_epi16(x3, load256(y.add(96)));
                *acc = _mm256_add_epi16(*acc, _mm256_add_epi16(p0, p1));
                *acc = _mm256_add_epi16(*acc, _mm256_add_epi16(p2, p3));
            }
        }
        for (u, acc) in accu.iter_mut().zip(acc16) {
            *u = _mm256_add_epi32(*u, _mm256_madd_epi16(acc, ones));
        }
        k = end;
    }
    std::array::from_fn(|t| dot::i2_s_finish(hsum_i32(accu[t]), a[t], wscale))
}

/// Checks shared by the four-activation kernels: equal lengths, enough codes and scales.
pub(crate) fn check4(a: [&QuantizedActivation; 4], block: usize) -> usize {
    let nb = a[0].len / block;
    for act in a {
        assert!(act.len == a[0].len && act.qs.len() >= nb * block && act.d.len() >= nb);
    }
    nb
}

/// [`q8_0_q8_0`] for four activations (each weight block loaded once); per activation the
/// same operations, hence the same bits.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_0_q8_0_x4(w: &[u8], _: f32, a: [&QuantizedActivation; 4]) -> [f32; 4] {
    let nb = check4(a, QK);
    assert!(w.len() >= nb * Q8_0_BYTES);
    let wp = w.as_ptr();
    let yp = a.map(|act| act.qs.as_ptr() as *const u8);
    let mut acc = [_mm256_setzero_ps(); 4];
    for ib in 0..nb {
        let dw = f16_at_fast(w, ib * Q8_0_BYTES);
        let x = load256(wp.add(ib * Q8_0_BYTES + 2));
        let ax = _mm256_sign_epi8(x, x);
        for t in 0..4 {
            let d = _mm256_set1_ps(dw * a[t].d[ib]);
            let y = load256(yp[t].add(ib * QK));
            let p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, x));
            let q = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc[t]);
        }
    }
    acc.map(|v| hsum_ps(v))
}

/// [`q4_1_q8_1`] for four activations (each weight block unpacked once).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_1_q8_1_x4(w: &[u8], _: f32, a: [&QuantizedActivation; 4]) -> [f32; 4] {
    let nb = check4(a, QK);
    assert!(w.len() >= nb * Q4_1_BYTES);
    for act in a {
        assert!(act.s.len() >= nb);
    }
    // Raw pointers checked once above: indexing the four activations' vectors inside the
    // loop reloaded their pointers and bounds every block and spilled the accumulators.
    let wp = w.as_ptr();
    let yq = a.map(|act| act.qs.as_ptr() as *const u8);
    let yd = a.map(|act| act.d.as_ptr());
    let ys = a.map(|act| act.s.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut summs = [0.0f32; 4];
    for ib in 0..nb {
        let blk = wp.add(ib * Q4_1_BYTES);
        let (dw, mw) = (f16_at_ptr(blk), f16_at_ptr(blk.add(2)));
        let x = nibbles(blk.add(4));
        for t in 0..4 {
            summs[t] = mw.mul_add(*ys[t].add(ib), summs[t]);
            let d = _mm256_set1_ps(dw * *yd[t].add(ib));
            let y = load256(yq[t].add(ib * QK));
            let q = _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones);
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]) + summs[t])
}

/// [`dot::q4_0_q8_0_repacked`] with AVX2: the block's integer dot through the same
/// `mul_sum_i8_pairs` lanes (exact), summed, then one fused multiply-add per block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_0_q8_0_repacked(w: &[u8], _: f32, a: &QuantizedActivation) -> f32 {
    let nb = a.len / QK;
    assert!(w.len() >= nb * Q4_0_BYTES && a.qs.len() >= nb * QK && a.d.len() >= nb);
    let (wp, yp) = (w.as_ptr(), a.qs.as_ptr() as *const u8);
    let eight = _mm256_set1_epi8(8);
    let mut acc = 0.0f32;
    for ib in 0..nb {
        let x = _mm256_sub_epi8(nibbles(wp.add(ib * Q4_0_BYTES + 2)), eight);
        let isum = hsum_i32(mul_sum_i8_pairs(x, load256(yp.add(ib * QK))));
        acc = (isum as f32).mul_add(f16_at_fast(w, ib * Q4_0_BYTES) * a.d[ib], acc);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f16 table holds what F16C's `vcvtph2ps` gives for every bit pattern (NaNs
    /// included: quieted, payload kept), and what `blocks::f16_at` gives.
    #[test]
    fn f16_table_is_f16c() {
        for h in 0..=u16::MAX {
            let b = h.to_le_bytes();
            let table = f16_at_fast(&b, 0);
            assert_eq!(
                table.to_bits(),
                crate::blocks::f16_at(&b, 0).to_bits(),
                "{h:#06x}"
            );
            // SAFETY: the two bytes are readable.
            assert_eq!(unsafe { f16_at_ptr(b.as_ptr()) }.to_bits(), table.to_bits());
            if available() {
                // SAFETY: F16C is present.
                let hw = unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32))) };
                assert_eq!(table.to_bits(), hw.to_bits(), "{h:#06x}");
            }
        }
    }
}
