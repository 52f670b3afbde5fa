//! TQ1_0 and TQ2_0 kernels (x86-64): ggml's `ggml_vec_dot_tq{1,2}_0_q8_K` (AVX2), and the
//! same sums with VNNI's `vpdpbusd` where the CPU has it.
//!
//! ggml multiplies a block's codes (0..2, the trit plus one) with the int8 activations through
//! `maddubs` (pairs of byte products in i16 lanes), subtracts the activations' 16-element sums
//! (the codes' offset), widens pairs of i16 lanes to eight i32 lanes, converts them to f32 and
//! adds `lanes · d` to its accumulator. Each i32 lane is an exact integer: the sum of the byte
//! products at four consecutive positions of each 32-byte slice, minus two bsums. `vpdpbusd`
//! sums exactly those four byte products into each i32 lane, so the VNNI kernels produce the
//! same integers with fewer instructions, and every float step after them is unchanged: the
//! same bits on every CPU.
//!
//! Each type has a one-token kernel and a four-token kernel that unpacks a block's codes once
//! for four activations (llama.cpp has only the former; the bits per token are the same).

use std::arch::x86_64::*;

use crate::activation::QuantizedActivation;
use crate::blocks::{QK_K, TQ1_0_BYTES, TQ1_QH, TQ1_QS, TQ2_0_BYTES};
use crate::matrix::{RowKernel, RowKernel4, WeightType};
use crate::x86::{f16_at_ptr, hsum_ps, load128, load256};

/// Which instructions a ternary kernel sums its byte products with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `maddubs` + `madd`, as ggml (AVX2, FMA, F16C).
    Avx2,
    /// AVX-512 VNNI's `vpdpbusd` on 256-bit registers (with AVX-512VL).
    Avx512Vnni,
    /// AVX-VNNI's `vpdpbusd` (VEX-encoded; CPUs with VNNI but without AVX-512).
    AvxVnni,
}

impl Flavor {
    /// Whether this CPU can run the flavour.
    pub(crate) fn available(self) -> bool {
        let base = crate::x86::available();
        match self {
            Flavor::Avx2 => base,
            Flavor::Avx512Vnni => {
                base && is_x86_feature_detected!("avx512vnni")
                    && is_x86_feature_detected!("avx512vl")
            }
            Flavor::AvxVnni => base && is_x86_feature_detected!("avxvnni"),
        }
    }

    /// The fastest flavour this CPU has (call only where AVX2, FMA and F16C are available).
    pub(crate) fn best() -> Flavor {
        [Flavor::Avx512Vnni, Flavor::AvxVnni]
            .into_iter()
            .find(|f| f.available())
            .unwrap_or(Flavor::Avx2)
    }
}

/// The one-token and four-token kernels of a ternary type in `flavor` (`None` for other
/// types). Only call with a flavour that [`Flavor::available`] accepts.
pub(crate) fn kernels(ty: WeightType, flavor: Flavor) -> Option<(RowKernel, RowKernel4)> {
    debug_assert!(flavor.available());
    // SAFETY (every arm): the caller checked that the CPU has the flavour's features; the
    // kernels check their slice lengths before any unchecked load.
    Some(match (ty, flavor) {
        (WeightType::TQ1_0, Flavor::Avx2) => (
            |w, _, a| unsafe { avx2::tq1_0(w, a) },
            |w, _, a| unsafe { avx2::tq1_0_x4(w, a) },
        ),
        (WeightType::TQ2_0, Flavor::Avx2) => (
            |w, _, a| unsafe { avx2::tq2_0(w, a) },
            |w, _, a| unsafe { avx2::tq2_0_x4(w, a) },
        ),
        (WeightType::TQ1_0, Flavor::Avx512Vnni) => (
            |w, _, a| unsafe { avx512vnni::tq1_0(w, a) },
            |w, _, a| unsafe { avx512vnni::tq1_0_x4(w, a) },
        ),
        (WeightType::TQ2_0, Flavor::Avx512Vnni) => (
            |w, _, a| unsafe { avx512vnni::tq2_0(w, a) },
            |w, _, a| unsafe { avx512vnni::tq2_0_x4(w, a) },
        ),
        (WeightType::TQ1_0, Flavor::AvxVnni) => (
            |w, _, a| unsafe { avxvnni::tq1_0(w, a) },
            |w, _, a| unsafe { avxvnni::tq1_0_x4(w, a) },
        ),
        (WeightType::TQ2_0, Flavor::AvxVnni) => (
            |w, _, a| unsafe { avxvnni::tq2_0(w, a) },
            |w, _, a| unsafe { avxvnni::tq2_0_x4(w, a) },
        ),
        _ => return None,
    })
}

/// The codes (0..2) of a TQ2_0 block at `x`, as eight 32-byte vectors in element order.
#[inline(always)]
unsafe fn tq2_codes(x: *const u8) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    let (b0, b1) = (load256(x), load256(x.add(32)));
    [
        _mm256_and_si256(b0, m3),
        _mm256_and_si256(_mm256_srli_epi16::<2>(b0), m3),
        _mm256_and_si256(_mm256_srli_epi16::<4>(b0), m3),
        _mm256_and_si256(_mm256_srli_epi16::<6>(b0), m3),
        _mm256_and_si256(b1, m3),
        _mm256_and_si256(_mm256_srli_epi16::<2>(b1), m3),
        _mm256_and_si256(_mm256_srli_epi16::<4>(b1), m3),
        _mm256_and_si256(_mm256_srli_epi16::<6>(b1), m3),
    ]
}

/// The codes (0..2) of a TQ1_0 block at `x` (`TQ1_0_BYTES` readable), as eight 32-byte
/// vectors in element order, unpacked as ggml's AVX2 kernel does.
#[inline(always)]
unsafe fn tq1_codes(x: *const u8) -> [__m256i; 8] {
    const POW3: [u8; 4] = [1, 3, 9, 27];
    // Elements 0..160: trit n of qs[0..32] (vectors 0..5).
    let q0 = load256(x);
    let (q1, q2) = (times3(q0), times9(q0));
    let (q3, q4) = (times9(q1), times9(q2));
    // Elements 160..256: [trit 0 | trit 1], [trit 2 | trit 3] of qs[32..48], then
    // [trit 4 of qs[32..48] | the sixteen qh trits].
    let r = _mm256_broadcastsi128_si256(load128(x.add(32)));
    let (r1, r2) = (times3(r), times9(r));
    let (r3, r4) = (times9(r1), times9(r2));
    let qh: [u8; 16] = std::array::from_fn(|l| (*x.add(TQ1_QS + l % 4)).wrapping_mul(POW3[l / 4]));
    let r45 = _mm256_set_m128i(load128(qh.as_ptr()), _mm256_castsi256_si128(r4));
    [
        trits(q0),
        trits(q1),
        trits(q2),
        trits(q3),
        trits(q4),
        trits(_mm256_blend_epi32::<0b1111_0000>(r, r1)),
        trits(_mm256_blend_epi32::<0b1111_0000>(r2, r3)),
        trits(r45),
    ]
}

/// Trit 0..2 of each byte of `q` (already multiplied by 3ⁿ mod 256): `(q·3) >> 8` computed
/// as ggml does with 8-bit ops (`subs`, two `avg`, shift) — equal for all 256 byte values.
#[inline(always)]
unsafe fn trits(q: __m256i) -> __m256i {
    let q = _mm256_subs_epu8(q, _mm256_set1_epi8(1));
    let q = _mm256_avg_epu8(q, _mm256_avg_epu8(q, _mm256_setzero_si256()));
    _mm256_and_si256(_mm256_srli_epi16::<6>(q), _mm256_set1_epi8(3))
}

/// `q · 3` per byte, mod 256.
#[inline(always)]
unsafe fn times3(q: __m256i) -> __m256i {
    _mm256_add_epi8(q, _mm256_add_epi8(q, q))
}

/// `q · 9` per byte, mod 256.
#[inline(always)]
unsafe fn times9(q: __m256i) -> __m256i {
    let shifted = _mm256_and_si256(_mm256_slli_epi16::<3>(q), _mm256_set1_epi8(-8));
    _mm256_add_epi8(shifted, q)
}

/// The eight i32 lanes of one block (ggml's: `maddubs`, minus the bsums, `madd` by ones).
#[inline(always)]
unsafe fn lanes_avx2(codes: &[__m256i; 8], y: *const u8, bsums: *const i16) -> __m256i {
    let mut s16 = _mm256_setzero_si256();
    for (v, &c) in codes.iter().enumerate() {
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c, load256(y.add(32 * v))));
    }
    let ysum = _mm256_loadu_si256(bsums as *const __m256i);
    _mm256_madd_epi16(_mm256_sub_epi16(s16, ysum), _mm256_set1_epi16(1))
}

/// The same lanes through `vpdpbusd` (AVX-512 VNNI with `EVEX` when `AVX512`, AVX-VNNI
/// otherwise): each lane's four byte products summed exactly, in two chains of four, minus
/// the bsums widened by `madd` — integers equal to [`lanes_avx2`]'s.
#[inline(always)]
unsafe fn lanes_vnni<const AVX512: bool>(
    codes: &[__m256i; 8],
    y: *const u8,
    bsums: *const i16,
) -> __m256i {
    let dp = |acc: __m256i, c: __m256i, v: usize| {
        let y = load256(y.add(32 * v));
        if AVX512 {
            _mm256_dpbusd_epi32(acc, c, y)
        } else {
            _mm256_dpbusd_avx_epi32(acc, c, y)
        }
    };
    let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for v in (0..8).step_by(2) {
        even = dp(even, codes[v], v);
        odd = dp(odd, codes[v + 1], v + 1);
    }
    let ysum = _mm256_madd_epi16(
        _mm256_loadu_si256(bsums as *const __m256i),
        _mm256_set1_epi16(1),
    );
    _mm256_sub_epi32(_mm256_add_epi32(even, odd), ysum)
}

/// Checks the weight row and activations of a ternary kernel; returns the block count.
#[inline(always)]
fn check(w: &[u8], block_bytes: usize, a: &[&QuantizedActivation]) -> usize {
    let nb = a[0].len / QK_K;
    assert!(w.len() >= nb * block_bytes);
    for act in a {
        assert!(
            act.len == a[0].len
                && act.qs.len() >= nb * QK_K
                && act.bsums.len() >= nb * 16
                && act.d.len() >= nb
        );
    }
    nb
}

/// The four kernels (TQ1_0 and TQ2_0, one and four tokens) for one flavour: `$lanes` gives a
/// block's eight i32 lanes; then `acc = fma(f32(lanes), d_y · d_w, acc)` per block and
/// ggml's `hsum_float_8`.
macro_rules! ternary_kernels {
    ($features:literal, $lanes:expr) => {
        use super::*;

        #[inline(always)]
        unsafe fn one(
            w: &[u8],
            a: &QuantizedActivation,
            bytes: usize,
            d_at: usize,
            codes: impl Fn(*const u8) -> [__m256i; 8],
        ) -> f32 {
            let nb = check(w, bytes, &[a]);
            let (yq, yd, yb) = (a.qs.as_ptr() as *const u8, a.d.as_ptr(), a.bsums.as_ptr());
            let mut acc = _mm256_setzero_ps();
            for ib in 0..nb {
                let x = w.as_ptr().add(ib * bytes);
                let c = codes(x);
                let d = *yd.add(ib) * f16_at_ptr(x.add(d_at));
                let lanes = $lanes(&c, yq.add(ib * QK_K), yb.add(16 * ib));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(d), acc);
            }
            hsum_ps(acc)
        }

        #[inline(always)]
        unsafe fn four(
            w: &[u8],
            a: [&QuantizedActivation; 4],
            bytes: usize,
            d_at: usize,
            codes: impl Fn(*const u8) -> [__m256i; 8],
        ) -> [f32; 4] {
            let nb = check(w, bytes, &a);
            let yq = a.map(|act| act.qs.as_ptr() as *const u8);
            let yd = a.map(|act| act.d.as_ptr());
            let yb = a.map(|act| act.bsums.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            for ib in 0..nb {
                let x = w.as_ptr().add(ib * bytes);
                let c = codes(x);
                let dw = f16_at_ptr(x.add(d_at));
                for t in 0..4 {
                    let d = *yd[t].add(ib) * dw;
                    let lanes = $lanes(&c, yq[t].add(ib * QK_K), yb[t].add(16 * ib));
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(d), acc[t]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $features)]
        pub(super) unsafe fn tq1_0(w: &[u8], a: &QuantizedActivation) -> f32 {
            one(w, a, TQ1_0_BYTES, TQ1_QS + TQ1_QH, |x| tq1_codes(x))
        }

        #[target_feature(enable = $features)]
        pub(super) unsafe fn tq2_0(w: &[u8], a: &QuantizedActivation) -> f32 {
            one(w, a, TQ2_0_BYTES, QK_K / 4, |x| tq2_codes(x))
        }

        #[target_feature(enable = $features)]
        pub(super) unsafe fn tq1_0_x4(w: &[u8], a: [&QuantizedActivation; 4]) -> [f32; 4] {
            four(w, a, TQ1_0_BYTES, TQ1_QS + TQ1_QH, |x| tq1_codes(x))
        }

        #[target_feature(enable = $features)]
        pub(super) unsafe fn tq2_0_x4(w: &[u8], a: [&QuantizedActivation; 4]) -> [f32; 4] {
            four(w, a, TQ2_0_BYTES, QK_K / 4, |x| tq2_codes(x))
        }
    };
}

/// ggml's instructions.
mod avx2 {
    ternary_kernels!("avx2,fma,f16c", lanes_avx2);
}

/// `vpdpbusd` with AVX-512 VNNI.
mod avx512vnni {
    ternary_kernels!(
        "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
        lanes_vnni::<true>
    );
}

/// `vpdpbusd` with AVX-VNNI.
mod avxvnni {
    ternary_kernels!("avx2,fma,f16c,avxvnni", lanes_vnni::<false>);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::ActivationType;

    /// Random TQ rows (codes 0..2 in every position, random f16 scales) and activations: every
    /// flavour this CPU has gives the same bits as the scalar kernel, one token and four.
    #[test]
    fn every_flavour_equals_the_scalar_kernel() {
        if !crate::x86::available() {
            // The scalar kernels are all a CPU without AVX2 runs; nothing to compare.
            assert!(!Flavor::Avx2.available());
            return;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let flavours: Vec<Flavor> = [Flavor::Avx2, Flavor::Avx512Vnni, Flavor::AvxVnni]
            .into_iter()
            .filter(|f| f.available())
            .collect();
        for (ty, gt) in [
            (WeightType::TQ1_0, bitnet_gguf::GgmlType::TQ1_0),
            (WeightType::TQ2_0, bitnet_gguf::GgmlType::TQ2_0),
        ] {
            for blocks in [1usize, 3] {
                let n = blocks * QK_K;
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        let trit = (next() % 3) as f32 - 1.0;
                        trit * (1.0 + (next() % 100) as f32 / 50.0)
                    })
                    .collect();
                let row = crate::quantize::encode(gt, &values).expect("a ternary row");
                let acts: Vec<QuantizedActivation> = (0..4)
                    .map(|_| {
                        let x: Vec<f32> = (0..n)
                            .map(|_| (next() % 2001) as f32 / 100.0 - 10.0)
                            .collect();
                        let mut q = QuantizedActivation::new();
                        q.quantize(ActivationType::Q8_K, &x).expect("whole blocks");
                        q
                    })
                    .collect();
                let scalar: Vec<f32> = acts
                    .iter()
                    .map(|a| {
                        crate::matrix::kernel(ty, crate::matrix::Backend::Scalar)(&row, 0.0, a)
                    })
                    .collect();
                for &f in &flavours {
                    let (k1, k4) = kernels(ty, f).expect("a ternary type");
                    let one: Vec<f32> = acts.iter().map(|a| k1(&row, 0.0, a)).collect();
                    let four = k4(&row, 0.0, [&acts[0], &acts[1], &acts[2], &acts[3]]);
                    for t in 0..4 {
                        assert_eq!(one[t].to_bits(), scalar[t].to_bits(), "{ty:?} {f:?} one");
                        assert_eq!(four[t].to_bits(), scalar[t].to_bits(), "{ty:?} {f:?} four");
                    }
                }
            }
        }
    }
}
