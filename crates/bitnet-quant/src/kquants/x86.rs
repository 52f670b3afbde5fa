//! AVX2 k-quant kernels: the instructions of ggml's x86 kernels (`ggml_vec_dot_q*_K_q8_K` in
//! ggml-cpu/arch/x86/quants.c), hence the bits of the scalar emulations next to each type.
//!
//! Every kernel is written once for N activations (`[&QuantizedActivation; N]`): each block's
//! weights are unpacked once and multiplied with every activation, and each activation gets
//! its own accumulators and exactly the one-token sequence of operations — so the four-token
//! form used for batches has the one-token bits. `TILED` selects how a block's exact integer
//! sums are folded into floats: ggml's `vec_dot` (eight f32 lanes, `hsum_float_8` at the end)
//! or llama.cpp's tiled batch matmul (one scalar, see `kquants::dot_tiled`). The bodies are
//! `#[inline(always)]` generic functions instantiated inside `#[target_feature]` wrappers, so
//! the intrinsics inline.

use std::arch::x86_64::*;

use crate::activation::QuantizedActivation;
use crate::blocks::QK_K;
use crate::kquants::{bsums32, q2_k, q3_k, q4_k, q5_k, q6_k, scales_mins_k4};
use crate::matrix::{RowKernel, RowKernel4};
use crate::x86::{f16_at_fast, hsum_i32, hsum_ps, load128, load256};

/// `_mm_shuffle_epi8` masks that spread the two scales of 32-element vector v (sub-blocks
/// 2v and 2v + 1 of 16 elements) over the low and high eight bytes.
static SCALE_PAIRS: [[u8; 16]; 8] = {
    let mut m = [[0u8; 16]; 8];
    let mut v = 0;
    while v < 8 {
        let mut i = 0;
        while i < 16 {
            m[v][i] = (2 * v + i / 8) as u8;
            i += 1;
        }
        v += 1;
    }
    m
};

/// The sixteen i16 scales of 32-element vector v from sixteen i8 scales (`scales`): the low
/// eight lanes get sub-block 2v's, the high eight 2v + 1's (ggml's `get_scale_shuffle`).
#[inline(always)]
unsafe fn vector_scales(scales: __m128i, v: usize) -> __m256i {
    let mask = _mm_loadu_si128(SCALE_PAIRS[v].as_ptr() as *const __m128i);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, mask))
}

/// Bits `2n..2n+1` of each byte (`(b >> 2n) & 3`); `n` is a constant once the callers'
/// loops are unrolled, so this is one immediate shift.
#[inline(always)]
unsafe fn crumb(b: __m256i, n: usize) -> __m256i {
    let shifted = match n {
        0 => b,
        1 => _mm256_srli_epi16::<2>(b),
        2 => _mm256_srli_epi16::<4>(b),
        _ => _mm256_srli_epi16::<6>(b),
    };
    _mm256_and_si256(shifted, _mm256_set1_epi8(3))
}

/// `value` where bit `bit` of each byte of `b` is set (`set = true`) or clear, else 0.
#[inline(always)]
unsafe fn if_bit(b: __m256i, bit: usize, set: bool, value: i8) -> __m256i {
    let m = _mm256_set1_epi8((1u8 << bit) as i8);
    let hit = _mm256_cmpeq_epi8(
        _mm256_and_si256(b, m),
        if set { m } else { _mm256_setzero_si256() },
    );
    _mm256_and_si256(hit, _mm256_set1_epi8(value))
}

/// Checks shared by the kernels: equal lengths, enough weight bytes, codes, scales and bsums.
fn blocks<const N: usize>(w: &[u8], bytes: usize, a: &[&QuantizedActivation; N]) -> usize {
    let nb = a[0].len / QK_K;
    assert!(w.len() >= nb * bytes, "weight row too short");
    for act in a {
        assert!(
            act.len == a[0].len
                && act.qs.len() >= nb * QK_K
                && act.d.len() >= nb
                && act.bsums.len() >= nb * 16,
            "activation does not fit the row"
        );
    }
    nb
}

/// The activation's 32 codes from element `off` of block `ib`.
#[inline(always)]
unsafe fn y256(a: &QuantizedActivation, ib: usize, off: usize) -> __m256i {
    load256((a.qs.as_ptr() as *const u8).add(ib * QK_K + off))
}

/// The activation's sixteen bsums of block `ib`.
#[inline(always)]
unsafe fn bsums256(a: &QuantizedActivation, ib: usize) -> __m256i {
    _mm256_loadu_si256(a.bsums.as_ptr().add(16 * ib) as *const __m256i)
}

/// One block of llama.cpp's tiled order (see `kquants::dot_tiled`): `res = d · s1`, minus
/// `dmin · s2` fused, then `acc = fma(res, dy, acc)`.
#[inline(always)]
fn tiled_step(acc: f32, d: f32, s1: i32, min: Option<(f32, i32)>, dy: f32) -> f32 {
    let mut res = d * s1 as f32;
    if let Some((dmin, s2)) = min {
        res = (-dmin).mul_add(s2 as f32, res);
    }
    res.mul_add(dy, acc)
}

/// Fold one block's lanes of a type without minimums (Q3_K, Q6_K) into a token's
/// accumulators: `vec_dot`'s `acc = fma(dy·dx, lanes, acc)`, or the tiled step.
#[inline(always)]
unsafe fn fold_block<const TILED: bool>(
    acc: &mut __m256,
    tiled: &mut f32,
    lanes: __m256i,
    dx: f32,
    dy: f32,
) {
    if TILED {
        *tiled = tiled_step(*tiled, dx, hsum_i32(lanes), None, dy);
    } else {
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(dy * dx), _mm256_cvtepi32_ps(lanes), *acc);
    }
}

/// [`q6_k::dot`] (`TILED`: [`q6_k::tiled_terms`] in the tiled order) for N activations.
#[inline(always)]
unsafe fn q6_k<const N: usize, const TILED: bool>(
    w: &[u8],
    a: [&QuantizedActivation; N],
) -> [f32; N] {
    let nb = blocks(w, q6_k::BYTES, &a);
    let m15 = _mm256_set1_epi8(15);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut tiled = [0.0f32; N];
    for ib in 0..nb {
        let x = w.as_ptr().add(ib * q6_k::BYTES);
        let dx = f16_at_fast(w, ib * q6_k::BYTES + q6_k::D);
        let scales = load128(x.add(q6_k::SCALES));
        let scales16 = _mm256_cvtepi8_epi16(scales);
        let mut q = [_mm256_setzero_si256(); 8];
        for c in 0..2 {
            let lo = load256(x.add(64 * c));
            let hi = load256(x.add(64 * c + 32));
            let qh = load256(x.add(q6_k::QH + 32 * c));
            let h = |v: usize| _mm256_slli_epi16::<4>(crumb(qh, v));
            let nib_hi = |b: __m256i| _mm256_and_si256(_mm256_srli_epi16::<4>(b), m15);
            q[4 * c] = _mm256_or_si256(_mm256_and_si256(lo, m15), h(0));
            q[4 * c + 1] = _mm256_or_si256(_mm256_and_si256(hi, m15), h(1));
            q[4 * c + 2] = _mm256_or_si256(nib_hi(lo), h(2));
            q[4 * c + 3] = _mm256_or_si256(nib_hi(hi), h(3));
        }
        let sc: [__m256i; 8] = std::array::from_fn(|v| vector_scales(scales, v));
        for t in 0..N {
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums256(a[t], ib), scales16));
            let mut sumi = _mm256_setzero_si256();
            for v in 0..8 {
                let p = _mm256_maddubs_epi16(q[v], y256(a[t], ib, 32 * v));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc[v], p));
            }
            let lanes = _mm256_sub_epi32(sumi, offset);
            fold_block::<TILED>(&mut acc[t], &mut tiled[t], lanes, dx, a[t].d[ib]);
        }
    }
    if TILED {
        tiled
    } else {
        acc.map(|v| hsum_ps(v))
    }
}

/// The codes of a Q4_K block (`qs` at `x`) as eight 32-byte vectors in element order.
#[inline(always)]
unsafe fn nibble_vectors(qs: *const u8) -> [__m256i; 8] {
    let m4 = _mm256_set1_epi8(0xF);
    std::array::from_fn(|v| {
        let bits = load256(qs.add(32 * (v / 2)));
        if v % 2 == 0 {
            _mm256_and_si256(bits, m4)
        } else {
            _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4)
        }
    })
}

/// Σ `scale[v]` · code · y over the 32-element sub-blocks `vs` in eight i32 lanes.
#[inline(always)]
unsafe fn sub_block_lanes(
    q: &[__m256i; 8],
    sc: &[__m256i; 8],
    a: &QuantizedActivation,
    ib: usize,
    vs: std::ops::Range<usize>,
) -> __m256i {
    let mut sumi = _mm256_setzero_si256();
    for v in vs {
        let p = _mm256_maddubs_epi16(q[v], y256(a, ib, 32 * v));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc[v], p));
    }
    sumi
}

/// `madd(mins, hadd(bsums))` of a Q4_K / Q5_K block: lane p is
/// `min[2p]·Σq(sub-block 2p) + min[2p+1]·Σq(2p+1)` (exact).
#[inline(always)]
unsafe fn min_pairs(mins: __m128i, a: &QuantizedActivation, ib: usize) -> __m128i {
    let bs = bsums256(a, ib);
    let q8s = _mm_hadd_epi16(
        _mm256_castsi256_si128(bs),
        _mm256_extracti128_si256::<1>(bs),
    );
    _mm_madd_epi16(mins, q8s)
}

/// The Q4_K / Q5_K minimums' four lanes for one block: `fma(dmin, min_pairs, acc_m)`.
#[inline(always)]
unsafe fn min_lanes(
    acc_m: __m128,
    dmin: f32,
    mins: __m128i,
    a: &QuantizedActivation,
    ib: usize,
) -> __m128 {
    let prod = min_pairs(mins, a, ib);
    _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m)
}

/// The eight mins of a Q4_K / Q5_K block widened to i16.
#[inline(always)]
unsafe fn mins16(mn: &[u8; 8]) -> __m128i {
    _mm_cvtepu8_epi16(_mm_loadl_epi64(mn.as_ptr() as *const __m128i))
}

/// The four i32 lanes of `v`.
#[inline(always)]
unsafe fn lanes4(v: __m128i) -> [i32; 4] {
    let mut out = [0i32; 4];
    _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, v);
    out
}

/// Σ `min[j]` · Σq(sub-block j) of a Q4_K / Q5_K block (exact).
#[inline(always)]
fn min_sum(mn: &[u8; 8], a: &QuantizedActivation, ib: usize) -> i32 {
    let s = bsums32(&a.bsums[16 * ib..16 * ib + 16]);
    (0..8).map(|j| mn[j] as i32 * s[j]).sum()
}

/// `hsum_float_8(acc) + ((m0 + m2) + (m1 + m3))`, ggml's Q4_K finish.
#[inline(always)]
unsafe fn finish_q4_k(acc: __m256, acc_m: __m128) -> f32 {
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
    hsum_ps(acc) + _mm_cvtss_f32(m)
}

/// [`q4_k::dot`] (`TILED`: [`q4_k::tiled_terms`] in the tiled order) for N activations.
#[inline(always)]
unsafe fn q4_k<const N: usize, const TILED: bool>(
    w: &[u8],
    a: [&QuantizedActivation; N],
) -> [f32; N] {
    let nb = blocks(w, q4_k::BYTES, &a);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [_mm_setzero_ps(); N];
    let mut tiled = [0.0f32; N];
    for ib in 0..nb {
        let o = ib * q4_k::BYTES;
        let (dx, dminx) = (f16_at_fast(w, o), f16_at_fast(w, o + 2));
        let (sc, mn) = scales_mins_k4(&w[o + q4_k::SCALES..o + q4_k::QS]);
        let mins = mins16(&mn);
        let scv: [__m256i; 8] = std::array::from_fn(|v| _mm256_set1_epi16(sc[v] as i16));
        let q = nibble_vectors(w.as_ptr().add(o + q4_k::QS));
        for t in 0..N {
            let dy = a[t].d[ib];
            let sumi = sub_block_lanes(&q, &scv, a[t], ib, 0..8);
            if TILED {
                let min = Some((dminx, min_sum(&mn, a[t], ib)));
                tiled[t] = tiled_step(tiled[t], dx, hsum_i32(sumi), min, dy);
            } else {
                acc_m[t] = min_lanes(acc_m[t], -dy * dminx, mins, a[t], ib);
                let d = _mm256_set1_ps(dy * dx);
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[t]);
            }
        }
    }
    if TILED {
        tiled
    } else {
        std::array::from_fn(|t| finish_q4_k(acc[t], acc_m[t]))
    }
}

/// [`q4_k::dot_repacked`] for N activations, folding every `FOLD` sub-blocks.
#[inline(always)]
unsafe fn q4_k_repacked<const N: usize, const FOLD: usize>(
    w: &[u8],
    a: [&QuantizedActivation; N],
) -> [f32; N] {
    let nb = blocks(w, q4_k::BYTES, &a);
    let mut acc = [0.0f32; N];
    let mut acc_min = [0.0f32; N];
    for ib in 0..nb {
        let o = ib * q4_k::BYTES;
        let (dx, dminx) = (f16_at_fast(w, o), f16_at_fast(w, o + 2));
        let (sc, mn) = scales_mins_k4(&w[o + q4_k::SCALES..o + q4_k::QS]);
        let scv: [__m256i; 8] = std::array::from_fn(|v| _mm256_set1_epi16(sc[v] as i16));
        let q = nibble_vectors(w.as_ptr().add(o + q4_k::QS));
        let mins = mins16(&mn);
        for t in 0..N {
            let dy = a[t].d[ib];
            let pairs = lanes4(min_pairs(mins, a[t], ib));
            let (dxy, dmin_xy) = (dx * dy, dminx * dy);
            for g in (0..8).step_by(FOLD) {
                let isum = hsum_i32(sub_block_lanes(&q, &scv, a[t], ib, g..g + FOLD));
                let imin: i32 = pairs[g / 2..(g + FOLD) / 2].iter().sum();
                acc[t] = (isum as f32).mul_add(dxy, acc[t]);
                acc_min[t] = (imin as f32).mul_add(dmin_xy, acc_min[t]);
            }
        }
    }
    std::array::from_fn(|t| acc[t] - acc_min[t])
}

/// [`q5_k::dot`] (`TILED`: [`q5_k::tiled_terms`] in the tiled order) for N activations.
#[inline(always)]
unsafe fn q5_k<const N: usize, const TILED: bool>(
    w: &[u8],
    a: [&QuantizedActivation; N],
) -> [f32; N] {
    let nb = blocks(w, q5_k::BYTES, &a);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut summs = [0.0f32; N];
    let mut tiled = [0.0f32; N];
    for ib in 0..nb {
        let o = ib * q5_k::BYTES;
        let (dx, dminx) = (f16_at_fast(w, o), f16_at_fast(w, o + 2));
        let (sc, mn) = scales_mins_k4(&w[o + q4_k::SCALES..o + q5_k::QH]);
        let scv: [__m256i; 8] = std::array::from_fn(|v| _mm256_set1_epi16(sc[v] as i16));
        let hbits = load256(w.as_ptr().add(o + q5_k::QH));
        let low = nibble_vectors(w.as_ptr().add(o + q5_k::QS));
        let q: [__m256i; 8] =
            std::array::from_fn(|v| _mm256_or_si256(low[v], if_bit(hbits, v, true, 16)));
        for t in 0..N {
            let dy = a[t].d[ib];
            let mins = min_sum(&mn, a[t], ib);
            let sumi = sub_block_lanes(&q, &scv, a[t], ib, 0..8);
            if TILED {
                tiled[t] = tiled_step(tiled[t], dx, hsum_i32(sumi), Some((dminx, mins)), dy);
            } else {
                summs[t] = (-dy * dminx).mul_add(mins as f32, summs[t]);
                let d = _mm256_set1_ps(dy * dx);
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[t]);
            }
        }
    }
    if TILED {
        tiled
    } else {
        std::array::from_fn(|t| hsum_ps(acc[t]) + summs[t])
    }
}

/// [`q3_k::dot`] (`TILED`: [`q3_k::tiled_terms`] in the tiled order) for N activations: the
/// low two bits and the "minus 4" (where the high bit is clear) go through `maddubs`
/// separately and are subtracted in i16, as in ggml.
#[inline(always)]
unsafe fn q3_k<const N: usize, const TILED: bool>(
    w: &[u8],
    a: [&QuantizedActivation; N],
) -> [f32; N] {
    let nb = blocks(w, q3_k::BYTES, &a);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut tiled = [0.0f32; N];
    for ib in 0..nb {
        let o = ib * q3_k::BYTES;
        let x = w.as_ptr().add(o);
        let dx = f16_at_fast(w, o + q3_k::D);
        let s8 = q3_k::scales(&w[o..o + q3_k::BYTES]);
        let scales = _mm_loadu_si128(s8.as_ptr() as *const __m128i);
        let sc: [__m256i; 8] = std::array::from_fn(|v| vector_scales(scales, v));
        let hbits = load256(x);
        let mut low = [_mm256_setzero_si256(); 8];
        let mut minus4 = [_mm256_setzero_si256(); 8];
        for c in 0..2 {
            let bits = load256(x.add(q3_k::QS + 32 * c));
            for v in 0..4 {
                low[4 * c + v] = crumb(bits, v);
                minus4[4 * c + v] = if_bit(hbits, 4 * c + v, false, 4);
            }
        }
        for t in 0..N {
            let mut sumi = _mm256_setzero_si256();
            for v in 0..8 {
                let y = y256(a[t], ib, 32 * v);
                let p = _mm256_sub_epi16(
                    _mm256_maddubs_epi16(low[v], y),
                    _mm256_maddubs_epi16(minus4[v], y),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc[v], p));
            }
            fold_block::<TILED>(&mut acc[t], &mut tiled[t], sumi, dx, a[t].d[ib]);
        }
    }
    if TILED {
        tiled
    } else {
        acc.map(|v| hsum_ps(v))
    }
}

/// [`q2_k::dot`] (`TILED`: [`q2_k::tiled_terms`] in the tiled order) for N activations.
#[inline(always)]
unsafe fn q2_k<const N: usize, const TILED: bool>(
    w: &[u8],
    a: [&QuantizedActivation; N],
) -> [f32; N] {
    let nb = blocks(w, q2_k::BYTES, &a);
    let m4 = _mm_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut tiled = [0.0f32; N];
    for ib in 0..nb {
        let o = ib * q2_k::BYTES;
        let x = w.as_ptr().add(o);
        let (dx, dminx) = (f16_at_fast(w, o + q2_k::D), f16_at_fast(w, o + q2_k::D + 2));
        let packed = load128(x);
        let scales = _mm_and_si128(packed, m4);
        let mins = _mm256_cvtepi8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
        let sc: [__m256i; 8] = std::array::from_fn(|v| vector_scales(scales, v));
        let mut q = [_mm256_setzero_si256(); 8];
        for c in 0..2 {
            let bits = load256(x.add(q2_k::QS + 32 * c));
            for v in 0..4 {
                q[4 * c + v] = crumb(bits, v);
            }
        }
        for t in 0..N {
            let dy = a[t].d[ib];
            let prod = _mm256_madd_epi16(mins, bsums256(a[t], ib));
            let mut sumi = _mm256_setzero_si256();
            for v in 0..8 {
                let p = _mm256_maddubs_epi16(q[v], y256(a[t], ib, 32 * v));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc[v], p));
            }
            if TILED {
                let min = Some((dminx, hsum_i32(prod)));
                tiled[t] = tiled_step(tiled[t], dx, hsum_i32(sumi), min, dy);
            } else {
                let dmin = _mm256_set1_ps(-dy * dminx);
                acc[t] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(prod), acc[t]);
                let d = _mm256_set1_ps(dy * dx);
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[t]);
            }
        }
    }
    if TILED {
        tiled
    } else {
        acc.map(|v| hsum_ps(v))
    }
}

/// A one-token and a four-token kernel.
type Kernels = (RowKernel, RowKernel4);

/// For one summation order (`$tiled`), the one-token and four-token entry points of every
/// k-quant with the CPU features enabled, and the table `$table` that hands them out.
macro_rules! kernel_set {
    ($table:ident, $tiled:literal: $($ty:ident => $body:ident, $one:ident, $four:ident;)*) => {
        $(
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(crate) unsafe fn $one(w: &[u8], _: f32, a: &QuantizedActivation) -> f32 {
                $body::<1, $tiled>(w, [a])[0]
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(crate) unsafe fn $four(
                w: &[u8],
                _: f32,
                a: [&QuantizedActivation; 4],
            ) -> [f32; 4] {
                $body::<4, $tiled>(w, a)
            }
        )*

        pub(crate) fn $table(ty: bitnet_gguf::GgmlType) -> Option<Kernels> {
            // SAFETY (every arm): only called for the AVX2 backend, which `Backend::detect`
            // picks when the CPU has AVX2, FMA and F16C; the kernels check slice lengths
            // before loading.
            Some(match ty {
                $(bitnet_gguf::GgmlType::$ty => (
                    |w, s, a| unsafe { $one(w, s, a) },
                    |w, s, a| unsafe { $four(w, s, a) },
                ),)*
                _ => return None,
            })
        }
    };
}

// The AVX2 kernels of a k-quant in ggml's `vec_dot` order (`kernels`) and in llama.cpp's
// tiled order (`tiled_kernels`); `None` for other types.
kernel_set!(kernels, false:
    Q2_K => q2_k, q2_k_q8_k, q2_k_q8_k_x4;
    Q3_K => q3_k, q3_k_q8_k, q3_k_q8_k_x4;
    Q4_K => q4_k, q4_k_q8_k, q4_k_q8_k_x4;
    Q5_K => q5_k, q5_k_q8_k, q5_k_q8_k_x4;
    Q6_K => q6_k, q6_k_q8_k, q6_k_q8_k_x4;
);
kernel_set!(tiled_kernels, true:
    Q2_K => q2_k, q2_k_tiled, q2_k_tiled_x4;
    Q3_K => q3_k, q3_k_tiled, q3_k_tiled_x4;
    Q4_K => q4_k, q4_k_tiled, q4_k_tiled_x4;
    Q5_K => q5_k, q5_k_tiled, q5_k_tiled_x4;
    Q6_K => q6_k, q6_k_tiled, q6_k_tiled_x4;
);

/// Repacked Q4_K, one token (`ggml_gemv_q4_K_8x8_q8_K`'s order).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k_gemv(w: &[u8], _: f32, a: &QuantizedActivation) -> f32 {
    q4_k_repacked::<1, { q4_k::GEMV_FOLD }>(w, [a])[0]
}

/// Repacked Q4_K, one token of a group of four (`ggml_gemm_q4_K_8x8_q8_K`'s order).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k_gemm(w: &[u8], _: f32, a: &QuantizedActivation) -> f32 {
    q4_k_repacked::<1, { q4_k::GEMM_FOLD }>(w, [a])[0]
}

/// The four totals of four vectors of eight i32 lanes (exact: nothing overflows here).
#[inline(always)]
unsafe fn totals4(v: [__m256i; 4]) -> __m128i {
    let ab = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(
        _mm256_castsi256_si128(ab),
        _mm256_extracti128_si256::<1>(ab),
    )
}

/// Repacked Q4_K, a group of four tokens (`ggml_gemm_q4_K_8x8_q8_K`'s order): as
/// [`q4_k::dot_repacked`] with `GEMM_FOLD`, the four tokens' accumulators side by side in the
/// lanes of one register — each lane sees its token's own fused multiply-adds, in order.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k_gemm_x4(w: &[u8], _: f32, a: [&QuantizedActivation; 4]) -> [f32; 4] {
    let nb = blocks(w, q4_k::BYTES, &a);
    let mut acc = _mm_setzero_ps();
    let mut acc_min = _mm_setzero_ps();
    for ib in 0..nb {
        let o = ib * q4_k::BYTES;
        let (dx, dminx) = (f16_at_fast(w, o), f16_at_fast(w, o + 2));
        let (sc, mn) = scales_mins_k4(&w[o + q4_k::SCALES..o + q4_k::QS]);
        let scv: [__m256i; 8] = std::array::from_fn(|v| _mm256_set1_epi16(sc[v] as i16));
        let q = nibble_vectors(w.as_ptr().add(o + q4_k::QS));
        let dy = _mm_set_ps(a[3].d[ib], a[2].d[ib], a[1].d[ib], a[0].d[ib]);
        let dxy = _mm_mul_ps(_mm_set1_ps(dx), dy);
        let dmin_xy = _mm_mul_ps(_mm_set1_ps(dminx), dy);
        let mins = mins16(&mn);
        // Per token the pairs' minimum terms, transposed to per pair the tokens'.
        let [r0, r1, r2, r3] = a.map(|act| min_pairs(mins, act, ib));
        let (t0, t1) = (_mm_unpacklo_epi32(r0, r1), _mm_unpacklo_epi32(r2, r3));
        let (t2, t3) = (_mm_unpackhi_epi32(r0, r1), _mm_unpackhi_epi32(r2, r3));
        let imins = [
            _mm_unpacklo_epi64(t0, t1),
            _mm_unpackhi_epi64(t0, t1),
            _mm_unpacklo_epi64(t2, t3),
            _mm_unpackhi_epi64(t2, t3),
        ];
        for (p, imin) in imins.into_iter().enumerate() {
            let pair = 2 * p..2 * p + 2;
            let isum = totals4(std::array::from_fn(|t| {
                sub_block_lanes(&q, &scv, a[t], ib, pair.clone())
            }));
            acc = _mm_fmadd_ps(_mm_cvtepi32_ps(isum), dxy, acc);
            acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(imin), dmin_xy, acc_min);
        }
    }
    let mut out = [0.0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), _mm_sub_ps(acc, acc_min));
    out
}

/// The AVX2 kernels of repacked Q4_K: `(gemv, gemm, gemm ×4)` — one token, and the tokens of
/// whole groups of four.
pub(crate) fn q4_k_repacked_kernels() -> (RowKernel, RowKernel, RowKernel4) {
    // SAFETY: as in `kernels`.
    (
        |w, s, a| unsafe { q4_k_gemv(w, s, a) },
        |w, s, a| unsafe { q4_k_gemm(w, s, a) },
        |w, s, a| unsafe { q4_k_gemm_x4(w, s, a) },
    )
}
