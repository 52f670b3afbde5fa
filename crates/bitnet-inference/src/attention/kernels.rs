//! The float kernels ggml's attention is made of, one lane at a time: the dot products of each
//! ggml kernel (their lanes, fused multiply-adds and final reductions), conversions to the
//! cache types, and the vectorised softmax. Inputs are f32 slices holding exactly the values
//! ggml's kernels see (an F16 cache row is F16-rounded already), so a kernel is only an order
//! of operations.

use bitnet_quant::float_order::{hsum, reduce4};
use bitnet_quant::VectorWidth;
use half::f16;

use crate::ops::{ggml_v_expf, ggml_v_expf_avx512};

/// Round to the nearest F16 (ties to even), as ggml's F16 conversions (F16C, or its software
/// fallback) do.
#[inline(always)]
pub fn f16r(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// [`f16r`] on every element of `x`, in place: eight at a time with F16C where the CPU has it
/// (the instruction `half` uses for one value), one at a time otherwise.
pub fn f16r_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has AVX and F16C.
        unsafe { f16r_in_place_f16c(x) };
        return;
    }
    x.iter_mut().for_each(|v| *v = f16r(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f16r_in_place_f16c(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = x.chunks_exact_mut(8);
    for c in chunks.by_ref() {
        // SAFETY: `c` holds eight f32s; unaligned loads and stores.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(c.as_ptr()));
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    chunks
        .into_remainder()
        .iter_mut()
        .for_each(|v| *v = f16r(*v));
}

/// Round to the nearest bfloat16 (ties to even; NaN kept quiet), as ggml's
/// `GGML_FP32_TO_BF16`.
#[inline(always)]
pub fn bf16r(x: f32) -> f32 {
    let u = x.to_bits();
    let h = if (u & 0x7fff_ffff) > 0x7f80_0000 {
        (u >> 16) | 64
    } else {
        (u + (0x7fff + ((u >> 16) & 1))) >> 16
    };
    f32::from_bits(h << 16)
}

/// A dot product in the order of one of ggml's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dot {
    /// llamafile's tinyBLAS: element `i` in lane `i % lanes`, fused, then [`hsum`].
    TinyBlas {
        /// 8 (AVX2) or 16 (AVX-512).
        lanes: usize,
    },
    /// `ggml_vec_dot_f32`: four registers over groups of four, [`reduce4`], the tail fused
    /// into the f32 sum.
    VecF32(VectorWidth),
    /// `ggml_vec_dot_f16`: four registers over groups of four, [`reduce4`], the tail's f32
    /// products added in f64.
    VecF16(VectorWidth),
    /// llama.cpp's AVX2 `ggml_vec_dot_bf16`: four 8-lane registers (GCC fuses its
    /// multiply-add), combined `(0 + 2) + (1 + 3)` and summed like tinyBLAS's [`hsum`], the
    /// tail's f32 products added in f64.
    VecBf16,
    /// A plain chain of fused multiply-adds in element order (the small GEMM of llama.cpp's
    /// tiled flash attention, `simd_gemm`).
    Sequential,
}

/// Lanes and leading elements of a vector reduction: how many accumulators a [`Dot`] has and
/// how many leading elements go through them (the rest is its tail).
#[inline(always)]
pub fn lanes_and_head(dot: Dot, n: usize) -> (usize, usize) {
    match dot {
        Dot::TinyBlas { lanes } => (lanes, n),
        Dot::VecF32(w) | Dot::VecF16(w) => {
            let step = 4 * w.lanes();
            (step, n / step * step)
        }
        Dot::VecBf16 => (32, n / 32 * 32),
        Dot::Sequential => (1, n),
    }
}

/// Reduce the accumulators of `dot` (lane-major, as [`lanes_and_head`] lays them out) to the
/// kernel's f32 register sum.
#[inline(always)]
pub fn reduce(dot: Dot, acc: &[f32]) -> f32 {
    match dot {
        Dot::TinyBlas { .. } => hsum(acc),
        Dot::VecF32(w) | Dot::VecF16(w) => reduce4(acc, w),
        Dot::VecBf16 => {
            let r: [f32; 8] =
                std::array::from_fn(|l| (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]));
            hsum(&r)
        }
        Dot::Sequential => acc[0],
    }
}

/// Finish a dot product: the reduced head `head` plus the tail `products` (the elements
/// beyond the head, as `(x, y)` pairs), in the kernel's way.
#[inline(always)]
pub fn finish(dot: Dot, head: f32, tail: impl Iterator<Item = (f32, f32)>) -> f32 {
    match dot {
        Dot::VecF32(_) => tail.fold(head, |s, (x, y)| x.mul_add(y, s)),
        Dot::VecF16(_) | Dot::VecBf16 => {
            let mut sum = head as f64;
            for (x, y) in tail {
                sum += (x * y) as f64;
            }
            sum as f32
        }
        Dot::TinyBlas { .. } | Dot::Sequential => head,
    }
}

/// `x · y` in the order of `dot`.
#[inline(always)]
pub fn dot(dot: Dot, x: &[f32], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    if dot == Dot::Sequential {
        return x.iter().zip(y).fold(0f32, |s, (&a, &b)| a.mul_add(b, s));
    }
    let (lanes, head) = lanes_and_head(dot, x.len());
    let mut acc = [0f32; 64];
    let acc = &mut acc[..lanes];
    // A constant lane count lets each group of `lanes` elements become whole vector
    // instructions (element i still goes to lane i % lanes, in order).
    match lanes {
        8 => accumulate::<8>(&x[..head], &y[..head], acc),
        16 => accumulate::<16>(&x[..head], &y[..head], acc),
        32 => accumulate::<32>(&x[..head], &y[..head], acc),
        64 => accumulate::<64>(&x[..head], &y[..head], acc),
        _ => {
            for (i, (&a, &b)) in x[..head].iter().zip(&y[..head]).enumerate() {
                let l = &mut acc[i % lanes];
                *l = a.mul_add(b, *l);
            }
        }
    }
    let h = reduce(dot, acc);
    finish(
        dot,
        h,
        x[head..].iter().copied().zip(y[head..].iter().copied()),
    )
}

/// `acc[i % L] = fma(x[i], y[i], acc[i % L])` for every `i` in order (`acc` has `L` lanes).
#[inline(always)]
fn accumulate<const L: usize>(x: &[f32], y: &[f32], acc: &mut [f32]) {
    let acc: &mut [f32; L] = acc.try_into().expect("L accumulators");
    let (xs, ys) = (x.chunks_exact(L), y.chunks_exact(L));
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (xc, yc) in xs.zip(ys) {
        for l in 0..L {
            acc[l] = xc[l].mul_add(yc[l], acc[l]);
        }
    }
    for (l, (&a, &b)) in xr.iter().zip(yr).enumerate() {
        acc[l] = a.mul_add(b, acc[l]);
    }
}

/// `ggml_vec_soft_max_f32` (`W` lanes: 8 for AVX2, 16 for AVX-512): `x[i] = exp(x[i] - max)`
/// in place, through ggml's vector `exp` in groups of `W` (a tail through libm's `expf`),
/// each group summed horizontally in f32 and the groups in f64. Returns that sum.
#[inline(always)]
pub fn soft_max<const W: usize>(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0f64;
    let full = x.len() / W * W;
    for chunk in x[..full].chunks_exact_mut(W) {
        for v in chunk.iter_mut() {
            *v = if W == 16 {
                ggml_v_expf_avx512(*v - max)
            } else {
                ggml_v_expf(*v - max)
            };
        }
        sum += hsum(chunk) as f64;
    }
    for v in &mut x[full..] {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_to_nearest_even() {
        assert_eq!(f16r(1.0 + 1.0 / 4096.0), 1.0);
        assert_eq!(f16r(1.0 + 3.0 / 4096.0), 1.0 + 4.0 / 4096.0);
        assert_eq!(bf16r(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(bf16r(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert!(bf16r(f32::NAN).is_nan());
        assert_eq!(bf16r(-2.5), -2.5);
    }

    #[test]
    fn rounding_a_slice_rounds_each_element() {
        let mut x: Vec<f32> = (0..67)
            .map(|i| (i as f32 * 0.377).sin() * 10f32.powi(i % 9 - 4))
            .chain([f32::NAN, f32::INFINITY, -0.0, 65520.0, 1e-8, -6.1e-5])
            .collect();
        let each: Vec<u32> = x.iter().map(|&v| f16r(v).to_bits()).collect();
        f16r_in_place(&mut x);
        assert_eq!(x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), each);
    }

    #[test]
    fn every_order_sums_exact_values_exactly() {
        let x: Vec<f32> = (0..70).map(|i| (i % 7) as f32).collect();
        let y: Vec<f32> = (0..70).map(|i| (i % 3) as f32 * 0.5).collect();
        let exact: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        for d in [
            Dot::TinyBlas { lanes: 8 },
            Dot::TinyBlas { lanes: 16 },
            Dot::VecF32(VectorWidth::Avx2),
            Dot::VecF32(VectorWidth::Avx512),
            Dot::VecF16(VectorWidth::Avx2),
            Dot::VecF16(VectorWidth::Avx512),
            Dot::VecBf16,
            Dot::Sequential,
        ] {
            assert_eq!(dot(d, &x, &y), exact, "{d:?}");
        }
    }

    #[test]
    fn soft_max_sums_groups() {
        let mut s = [0.0, 0.0]
            .into_iter()
            .chain(std::iter::repeat_n(f32::NEG_INFINITY, 30))
            .collect::<Vec<_>>();
        let mut t = s.clone();
        assert_eq!(soft_max::<8>(&mut s, 0.0), 2.0);
        assert_eq!(soft_max::<16>(&mut t, 0.0), 2.0);
        assert_eq!(&s[..3], &[1.0, 1.0, 0.0]);
        assert_eq!(s, t);
    }
}
