//! Float (F32 / F16 weight) dot products summed in the exact order of one ggml build.
//!
//! A float dot product has no single right answer in f32: the result depends on how many
//! lanes accumulate, whether multiply and add are fused, and how the lanes are finally added.
//! ggml's answer depends on the build (vector width) and on the call: a batch goes through
//! llamafile's tinyBLAS (`ggml/src/llamafile/sgemm.cpp`), a single token through ggml's
//! `vec_dot`. Reproducing the exact order is what lets the engine match bitnet.cpp to the
//! last bit on its F16 output head, where a last-bit difference in the activations otherwise
//! grows into ~1e-2 in the logits.
//!
//! [`FloatOrder`] names the two orders of the older ggml that bitnet.cpp vendors
//! (`bitnet-llm-sys 1.0.2`, built with `-march=native`). The reductions ([`hsum`],
//! [`reduce4`]) are public because the engine's attention sums in the same orders.

use crate::blocks::{f16_at, round_f16};

/// The float vector width a ggml build was compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorWidth {
    /// 8 lanes (AVX2 with FMA and F16C).
    Avx2,
    /// 16 lanes (AVX-512F with DQ: ggml's condition for its 16-lane `exp`).
    Avx512,
}

impl VectorWidth {
    /// What `-march=native` selects on this CPU. CPUs without AVX2 get the AVX2 layout too:
    /// ggml's kernels for them are not reproduced.
    pub fn host() -> VectorWidth {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            return VectorWidth::Avx512;
        }
        VectorWidth::Avx2
    }

    /// f32 lanes per register.
    pub fn lanes(self) -> usize {
        match self {
            VectorWidth::Avx2 => 8,
            VectorWidth::Avx512 => 16,
        }
    }
}

/// Which ggml: the two references vendor different versions, which differ in a few float
/// details (noted where they matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ggml {
    /// The older ggml in bitnet.cpp (`bitnet-llm-sys 1.0.2`).
    BitnetCpp,
    /// llama.cpp's ggml as `llama-cpp-sys-2 0.1.161` vendors it.
    LlamaCpp,
}

/// How a ggml build sums one float (F32/F16 weight) dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatOrder {
    /// llamafile's tinyBLAS, ggml's batched float matmul: one register accumulator filled in
    /// sequence with fused multiply-adds (a short tail zero-padded), then [`hsum`]. The older
    /// ggml passes f32 activations as they are; llama.cpp's converts them to F16 first for
    /// F16 weights.
    TinyBlas(VectorWidth, Ggml),
    /// ggml's `ggml_vec_dot_f16` / `ggml_vec_dot_f32`, used for one token: activations rounded
    /// to the weight type, four register accumulators over the largest multiple of four
    /// registers, [`reduce4`], then the rest — added in f64 for F16, fused into the f32 sum for
    /// F32 (GCC contracts `sumf += x[i]*y[i]`).
    VecDot(VectorWidth, Ggml),
}

impl FloatOrder {
    /// The order `ggml` uses for a product of `n_tokens` activations with a `rows × cols`
    /// matrix: tinyBLAS needs `n ≥ 2`, and in the older ggml `cols % lanes == 0`, in
    /// llama.cpp's `rows % 4 == 0`; otherwise `vec_dot`.
    pub fn for_call(
        width: VectorWidth,
        ggml: Ggml,
        n_tokens: usize,
        rows: usize,
        cols: usize,
    ) -> FloatOrder {
        let tiles = match ggml {
            Ggml::BitnetCpp => cols.is_multiple_of(width.lanes()),
            Ggml::LlamaCpp => rows.is_multiple_of(4),
        };
        if n_tokens >= 2 && tiles {
            FloatOrder::TinyBlas(width, ggml)
        } else {
            FloatOrder::VecDot(width, ggml)
        }
    }

    /// The register width.
    pub fn width(self) -> VectorWidth {
        match self {
            FloatOrder::TinyBlas(w, _) | FloatOrder::VecDot(w, _) => w,
        }
    }
}

/// The horizontal sum of one register as tinyBLAS (`hsum`) and ggml's softmax compute it:
/// 8 lanes `(h0 + h2) + (h1 + h3)` with `h = lo + hi`; 16 lanes GCC's
/// `_mm512_reduce_add_ps` (halves added, then the same 8-lane sum).
///
/// # Panics
/// If `a` has neither 8 nor 16 lanes.
#[inline(always)]
pub fn hsum(a: &[f32]) -> f32 {
    match a.len() {
        8 => {
            let h: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
            (h[0] + h[2]) + (h[1] + h[3])
        }
        16 => {
            let t: [f32; 8] = std::array::from_fn(|i| a[i + 8] + a[i]);
            hsum(&t)
        }
        n => panic!("hsum of {n} lanes"),
    }
}

/// `GGML_F32_VEC_REDUCE` of four accumulators of `width` lanes (lane-major:
/// `a[g * lanes + l]`): `(0 + 2) + (1 + 3)` lane by lane, then the register's sum — two
/// `hadd`s for AVX2 (`(t0 + t1) + (t2 + t3)`), `_mm512_reduce_add_ps` for AVX-512.
#[inline(always)]
pub fn reduce4(a: &[f32], width: VectorWidth) -> f32 {
    let lanes = width.lanes();
    let mut r = [0f32; 16];
    for (l, v) in r.iter_mut().enumerate().take(lanes) {
        *v = (a[l] + a[2 * lanes + l]) + (a[lanes + l] + a[3 * lanes + l]);
    }
    match width {
        VectorWidth::Avx512 => hsum(&r),
        VectorWidth::Avx2 => {
            let t: [f32; 4] = std::array::from_fn(|l| r[l] + r[l + 4]);
            (t[0] + t[1]) + (t[2] + t[3])
        }
    }
}

/// Whether the weights are F16 (read as f16 bits) or F32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatWeights {
    F32,
    F16,
}

impl FloatWeights {
    #[inline(always)]
    fn at(self, w: &[u8], i: usize) -> f32 {
        match self {
            FloatWeights::F32 => {
                f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]])
            }
            FloatWeights::F16 => f16_at(w, 2 * i),
        }
    }
}

/// Prepare one activation row for `order`: rounded to f16 where ggml converts it to the
/// weights' type first (`vec_dot` with F16 weights; llama.cpp's tinyBLAS with F16 weights),
/// otherwise used as is.
pub(crate) fn prepare(order: FloatOrder, weights: FloatWeights, x: &[f32], out: &mut Vec<f32>) {
    out.clear();
    let round = weights == FloatWeights::F16
        && matches!(
            order,
            FloatOrder::VecDot(..) | FloatOrder::TinyBlas(_, Ggml::LlamaCpp)
        );
    if round {
        out.extend(x.iter().map(|&v| round_f16(v)));
    } else {
        out.extend_from_slice(x);
    }
}

/// One dot product of weight row `w` with the prepared activation `x`, in `order` (scalar
/// emulation; the x86 kernels give the same bits).
pub(crate) fn dot(order: FloatOrder, weights: FloatWeights, w: &[u8], x: &[f32]) -> f32 {
    match order {
        FloatOrder::TinyBlas(width, _) => {
            let lanes = width.lanes();
            let mut acc = [0f32; 16];
            for (i, &xv) in x.iter().enumerate() {
                let a = &mut acc[i % lanes];
                *a = weights.at(w, i).mul_add(xv, *a);
            }
            hsum(&acc[..lanes])
        }
        FloatOrder::VecDot(width, _) => {
            let step = 4 * width.lanes();
            let np = x.len() / step * step;
            let mut acc = [0f32; 64];
            for (i, &xv) in x[..np].iter().enumerate() {
                let a = &mut acc[i % step];
                *a = weights.at(w, i).mul_add(xv, *a);
            }
            vec_dot_tail(weights, w, x, np, reduce4(&acc[..step], width))
        }
    }
}

/// The end of ggml's `vec_dot` after the registers' sum `head`: elements `np..` fused into the
/// f32 sum for F32 weights (GCC contracts `sumf += x[i]*y[i]`), added in f64 for F16.
#[inline(always)]
fn vec_dot_tail(weights: FloatWeights, w: &[u8], x: &[f32], np: usize, head: f32) -> f32 {
    match weights {
        FloatWeights::F32 => {
            let mut sum = head;
            for (i, &xv) in x.iter().enumerate().skip(np) {
                sum = weights.at(w, i).mul_add(xv, sum);
            }
            sum
        }
        FloatWeights::F16 => {
            let mut sum = head as f64;
            for (i, &xv) in x.iter().enumerate().skip(np) {
                sum += (weights.at(w, i) * xv) as f64;
            }
            sum as f32
        }
    }
}

/// An x86 float dot-product kernel.
pub(crate) type FastKernel = fn(&[u8], &[f32]) -> f32;

/// A dot-product kernel for one (order, weights) pair: an x86 kernel using ggml's own
/// instructions, or the scalar emulation; both give the same bits.
#[derive(Clone, Copy)]
pub(crate) enum FloatKernel {
    Fast(FastKernel),
    Scalar(FloatOrder, FloatWeights),
}

impl FloatKernel {
    #[inline]
    pub(crate) fn call(self, w: &[u8], x: &[f32]) -> f32 {
        match self {
            FloatKernel::Fast(k) => k(w, x),
            FloatKernel::Scalar(order, weights) => dot(order, weights, w, x),
        }
    }
}

/// The fastest kernel for `order` and `weights` on this CPU, for rows of `cols` elements
/// (the x86 tinyBLAS kernels take whole registers; a tail goes through the emulation).
pub(crate) fn kernel(order: FloatOrder, weights: FloatWeights, cols: usize) -> FloatKernel {
    #[cfg(target_arch = "x86_64")]
    if cols.is_multiple_of(order.width().lanes()) || matches!(order, FloatOrder::VecDot(..)) {
        if let Some(k) = x86::kernel(order, weights) {
            return FloatKernel::Fast(k);
        }
    }
    let _ = cols;
    FloatKernel::Scalar(order, weights)
}

/// Four dot products of one weight row with four prepared activations (the same bits as four
/// [`FloatKernel`] calls, with the weights loaded and converted once).
pub(crate) type FloatKernel4 = fn(&[u8], [&[f32]; 4]) -> [f32; 4];

/// A four-activation kernel for `order` and `weights` on this CPU, where one exists (the
/// tinyBLAS orders on x86 with AVX2).
pub(crate) fn kernel4(order: FloatOrder, weights: FloatWeights) -> Option<FloatKernel4> {
    #[cfg(target_arch = "x86_64")]
    return x86::kernel4(order, weights);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (order, weights);
        None
    }
}

/// Sixteen dot products: four weight rows × four prepared activations, `[row][token]` (the
/// same bits as sixteen [`FloatKernel`] calls).
pub(crate) type FloatKernel4x4 = fn([&[u8]; 4], [&[f32]; 4]) -> [[f32; 4]; 4];

/// A four-row × four-activation kernel for `order` and `weights` on this CPU, where one
/// exists (tinyBLAS's 16-lane order on a CPU with AVX-512F, whose 32 registers hold the 16
/// accumulators — tinyBLAS itself tiles up to 5 × 5).
pub(crate) fn kernel4x4(order: FloatOrder, weights: FloatWeights) -> Option<FloatKernel4x4> {
    #[cfg(target_arch = "x86_64")]
    return x86::kernel4x4(order, weights);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (order, weights);
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The ggml kernels' arithmetic with AVX2 instructions. A 16-lane register is kept as
    //! two 8-lane halves: every lane sees the same fused multiply-adds in the same order, so
    //! the results are those of the AVX-512 kernels, and the kernels also run (and are tested)
    //! on CPUs without AVX-512. Horizontal sums are spelled out in ggml's order.

    use std::arch::x86_64::*;

    use super::{
        vec_dot_tail, FastKernel, FloatKernel4, FloatKernel4x4, FloatOrder, FloatWeights,
        VectorWidth,
    };

    pub(super) fn kernel(order: FloatOrder, weights: FloatWeights) -> Option<FastKernel> {
        use FloatWeights::*;
        use VectorWidth::*;
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return None;
        }
        // SAFETY (every arm): AVX2, FMA and F16C were detected just above, and the kernels
        // check the slices' lengths before any unchecked load.
        Some(match (order, weights) {
            (FloatOrder::TinyBlas(Avx2, _), F32) => |w, x| unsafe { tinyblas8::<false>(w, x) },
            (FloatOrder::TinyBlas(Avx2, _), F16) => |w, x| unsafe { tinyblas8::<true>(w, x) },
            (FloatOrder::TinyBlas(Avx512, _), F32) => |w, x| unsafe { tinyblas16::<false>(w, x) },
            (FloatOrder::TinyBlas(Avx512, _), F16) => |w, x| unsafe { tinyblas16::<true>(w, x) },
            (FloatOrder::VecDot(Avx512, _), F32) => |w, x| unsafe { vec_dot::<false, 2>(w, x) },
            (FloatOrder::VecDot(Avx512, _), F16) => |w, x| unsafe { vec_dot::<true, 2>(w, x) },
            (FloatOrder::VecDot(Avx2, _), F32) => |w, x| unsafe { vec_dot::<false, 1>(w, x) },
            (FloatOrder::VecDot(Avx2, _), F16) => |w, x| unsafe { vec_dot::<true, 1>(w, x) },
        })
    }

    pub(super) fn kernel4(order: FloatOrder, weights: FloatWeights) -> Option<FloatKernel4> {
        use FloatOrder::*;
        use FloatWeights::*;
        use VectorWidth::*;
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return None;
        }
        // SAFETY (every arm): as in `kernel`.
        Some(match (order, weights) {
            (TinyBlas(Avx2, _), F32) => |w, x| unsafe { tinyblas_x4::<false, 1>(w, x) },
            (TinyBlas(Avx2, _), F16) => |w, x| unsafe { tinyblas_x4::<true, 1>(w, x) },
            (TinyBlas(Avx512, _), F32) => |w, x| unsafe { tinyblas_x4::<false, 2>(w, x) },
            (TinyBlas(Avx512, _), F16) => |w, x| unsafe { tinyblas_x4::<true, 2>(w, x) },
            (VecDot(..), _) => return None,
        })
    }

    pub(super) fn kernel4x4(order: FloatOrder, weights: FloatWeights) -> Option<FloatKernel4x4> {
        if !(is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return None;
        }
        // SAFETY (every arm): AVX-512F, FMA and F16C were detected just above; the kernel
        // checks the slices' lengths before any unchecked load.
        match (order, weights) {
            (FloatOrder::TinyBlas(VectorWidth::Avx512, _), FloatWeights::F32) => {
                Some(|w, x| unsafe { tinyblas16_4x4::<false>(w, x) })
            }
            (FloatOrder::TinyBlas(VectorWidth::Avx512, _), FloatWeights::F16) => {
                Some(|w, x| unsafe { tinyblas16_4x4::<true>(w, x) })
            }
            _ => None,
        }
    }

    /// tinyBLAS's 16-lane order for four rows × four activations in AVX-512 registers: per
    /// (row, activation) the same fused multiply-adds in the same order as [`tinyblas16`].
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn tinyblas16_4x4<const F16: bool>(w: [&[u8]; 4], x: [&[f32]; 4]) -> [[f32; 4]; 4] {
        let k = x[0].len();
        for (wr, xt) in w.iter().zip(x) {
            check::<F16>(wr, xt, 16);
            assert_eq!(xt.len(), k);
        }
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        for i in (0..k).step_by(16) {
            let wv: [__m512; 4] = std::array::from_fn(|r| {
                if F16 {
                    _mm512_cvtph_ps(_mm256_loadu_si256(w[r].as_ptr().add(2 * i).cast()))
                } else {
                    _mm512_loadu_ps(w[r].as_ptr().add(4 * i).cast())
                }
            });
            for t in 0..4 {
                let xv = _mm512_loadu_ps(x[t].as_ptr().add(i));
                for r in 0..4 {
                    acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
        }
        // GCC's `_mm512_reduce_add_ps`: the halves added, then tinyBLAS's 8-lane `hsum`.
        acc.map(|row| {
            row.map(|v| hsum16(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v)))
        })
    }

    /// tinyBLAS for four activations: `H` 8-lane halves per register (1: AVX2, 2: AVX-512),
    /// each weight vector loaded once for the four. Per activation the same fused
    /// multiply-adds in the same order as [`tinyblas8`] / [`tinyblas16`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tinyblas_x4<const F16: bool, const H: usize>(w: &[u8], x: [&[f32]; 4]) -> [f32; 4] {
        for xt in x {
            check::<F16>(w, xt, 8 * H);
            assert_eq!(xt.len(), x[0].len());
        }
        let mut acc = [[_mm256_setzero_ps(); H]; 4];
        for i in (0..x[0].len()).step_by(8 * H) {
            for h in 0..H {
                let wv = load8::<F16>(w, i + 8 * h);
                for (a, xt) in acc.iter_mut().zip(x) {
                    a[h] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xt.as_ptr().add(i + 8 * h)), a[h]);
                }
            }
        }
        acc.map(|a| {
            if H == 2 {
                hsum16(a[0], a[1])
            } else {
                hsum8(a[0])
            }
        })
    }

    /// tinyBLAS's `hsum` of one 8-lane register.
    #[inline(always)]
    unsafe fn hsum8(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
    }

    /// GCC's `_mm512_reduce_add_ps` of the register `(lo, hi)`.
    #[inline(always)]
    unsafe fn hsum16(lo: __m256, hi: __m256) -> f32 {
        hsum8(_mm256_add_ps(hi, lo))
    }

    /// 8 weights from `w` at element `i` as f32.
    #[inline(always)]
    unsafe fn load8<const F16: bool>(w: &[u8], i: usize) -> __m256 {
        if F16 {
            _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i).cast()))
        } else {
            _mm256_loadu_ps(w.as_ptr().add(4 * i).cast())
        }
    }

    fn check<const F16: bool>(w: &[u8], x: &[f32], lanes: usize) {
        let width = if F16 { 2 } else { 4 };
        assert!(w.len() >= x.len() * width && x.len().is_multiple_of(lanes));
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tinyblas8<const F16: bool>(w: &[u8], x: &[f32]) -> f32 {
        check::<F16>(w, x, 8);
        let mut acc = _mm256_setzero_ps();
        for i in (0..x.len()).step_by(8) {
            acc = _mm256_fmadd_ps(load8::<F16>(w, i), _mm256_loadu_ps(x.as_ptr().add(i)), acc);
        }
        hsum8(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tinyblas16<const F16: bool>(w: &[u8], x: &[f32]) -> f32 {
        check::<F16>(w, x, 16);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..x.len()).step_by(16) {
            lo = _mm256_fmadd_ps(load8::<F16>(w, i), _mm256_loadu_ps(x.as_ptr().add(i)), lo);
            hi = _mm256_fmadd_ps(
                load8::<F16>(w, i + 8),
                _mm256_loadu_ps(x.as_ptr().add(i + 8)),
                hi,
            );
        }
        hsum16(lo, hi)
    }

    /// ggml's `vec_dot` with registers of `H` 8-lane halves (1: AVX2, 2: AVX-512): four
    /// register accumulators over groups of four registers, `GGML_F32_VEC_REDUCE`, then the
    /// tail as [`vec_dot_tail`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn vec_dot<const F16: bool, const H: usize>(w: &[u8], x: &[f32]) -> f32 {
        check::<F16>(w, x, 1);
        let step = 32 * H;
        let np = x.len() / step * step;
        // Register g's half h is acc[g * H + h].
        let mut acc = [_mm256_setzero_ps(); 8];
        for i in (0..np).step_by(step) {
            for (c, a) in acc.iter_mut().enumerate().take(4 * H) {
                let k = i + 8 * c;
                *a = _mm256_fmadd_ps(load8::<F16>(w, k), _mm256_loadu_ps(x.as_ptr().add(k)), *a);
            }
        }
        // (0 + 2) + (1 + 3), register by register, half by half.
        let reg = |g: usize, h: usize| acc[g * H + h];
        let half = |h: usize| {
            _mm256_add_ps(
                _mm256_add_ps(reg(0, h), reg(2, h)),
                _mm256_add_ps(reg(1, h), reg(3, h)),
            )
        };
        let head = if H == 2 {
            hsum16(half(0), half(1))
        } else {
            hadd8(half(0))
        };
        let weights = if F16 {
            FloatWeights::F16
        } else {
            FloatWeights::F32
        };
        vec_dot_tail(weights, w, x, np, head)
    }

    /// `GGML_F32x8_REDUCE`'s last step on AVX2: the halves added, then two `hadd`s.
    #[inline(always)]
    unsafe fn hadd8(v: __m256) -> f32 {
        let t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, GgmlType, QuantError, QuantizedMatrix};

    const ORDERS: [FloatOrder; 8] = [
        FloatOrder::TinyBlas(VectorWidth::Avx2, Ggml::BitnetCpp),
        FloatOrder::TinyBlas(VectorWidth::Avx512, Ggml::BitnetCpp),
        FloatOrder::VecDot(VectorWidth::Avx2, Ggml::BitnetCpp),
        FloatOrder::VecDot(VectorWidth::Avx512, Ggml::BitnetCpp),
        FloatOrder::TinyBlas(VectorWidth::Avx2, Ggml::LlamaCpp),
        FloatOrder::TinyBlas(VectorWidth::Avx512, Ggml::LlamaCpp),
        FloatOrder::VecDot(VectorWidth::Avx2, Ggml::LlamaCpp),
        FloatOrder::VecDot(VectorWidth::Avx512, Ggml::LlamaCpp),
    ];

    /// Deterministic values in [-1, 1) with plenty of mantissa bits.
    fn values(n: usize, salt: u64) -> Vec<f32> {
        crate::tests::noise(salt, n)
    }

    #[test]
    fn simd_kernels_give_the_scalar_bits() {
        for (ty, weights) in [
            (GgmlType::F32, FloatWeights::F32),
            (GgmlType::F16, FloatWeights::F16),
        ] {
            for cols in [16, 48, 64, 80, 100, 128, 144, 1000, 2560] {
                let w = encode(ty, &values(cols, cols as u64), cols).unwrap();
                let x = values(cols, 7);
                for order in ORDERS {
                    let mut p = Vec::new();
                    prepare(order, weights, &x, &mut p);
                    let k = kernel(order, weights, cols);
                    let whole = cols.is_multiple_of(order.width().lanes());
                    if whole || matches!(order, FloatOrder::VecDot(..)) {
                        assert!(
                            matches!(k, FloatKernel::Fast(_)),
                            "{order:?} has an x86 kernel"
                        );
                    }
                    let fast = k.call(&w, &p);
                    let slow = dot(order, weights, &w, &p);
                    assert_eq!(fast.to_bits(), slow.to_bits(), "{ty} {order:?} cols {cols}");
                }
            }
        }
    }

    #[test]
    fn every_order_computes_the_dot_product() {
        let cols = 200;
        let wv = values(cols, 3);
        let x = values(cols, 4);
        for ty in [GgmlType::F32, GgmlType::F16] {
            let w = encode(ty, &wv, cols).unwrap();
            let m = QuantizedMatrix::new(ty, &w, 1, cols).unwrap();
            let mut row = vec![0f32; cols];
            m.dequantize_row(0, &mut row);
            let exact: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            for order in ORDERS {
                let mut out = [0f32; 2];
                let mut scratch = Vec::new();
                let xx: Vec<f32> = x.iter().chain(&x).copied().collect();
                m.float_matmul(order, &xx, &mut scratch, &mut out).unwrap();
                // F16 weights round the activations to f16 in the one-token order.
                let tol = if ty == GgmlType::F16 { 2e-2 } else { 1e-4 };
                assert!((out[0] as f64 - exact).abs() < tol, "{ty} {order:?}");
                assert_eq!(out[0], out[1]);
            }
        }
    }

    #[test]
    fn batched_float_products_give_each_tokens_scalar_bits() {
        let (rows, cols) = (9, 160);
        for ty in [GgmlType::F32, GgmlType::F16] {
            let w = encode(ty, &values(rows * cols, 21), cols).unwrap();
            let m = QuantizedMatrix::new(ty, &w, rows, cols).unwrap();
            let weights = if ty == GgmlType::F16 {
                FloatWeights::F16
            } else {
                FloatWeights::F32
            };
            for n in [1, 2, 4, 7, 11] {
                let x = values(n * cols, 22);
                for order in ORDERS {
                    let mut out = vec![0f32; n * rows];
                    // One thread: tasks of ⌈n / 2⌉ tokens, so the four-token kernels run too.
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap();
                    pool.install(|| m.float_matmul(order, &x, &mut Vec::new(), &mut out))
                        .unwrap();
                    let slow = |w: &[u8], p: &[f32]| dot(order, weights, w, p);
                    for t in 0..n {
                        let mut p = Vec::new();
                        prepare(order, weights, &x[t * cols..(t + 1) * cols], &mut p);
                        for r in 0..rows {
                            let expected = slow(m.row(r), &p);
                            let got = out[t * rows + r];
                            assert_eq!(got.to_bits(), expected.to_bits(), "{ty} {order:?} n {n}");
                        }
                    }
                }
            }
        }
    }

    /// Rows of 16384 f32 activations leave room for 4 tokens per cache block: 11 tokens span
    /// three blocks, the last one partial.
    #[test]
    fn float_products_over_several_token_blocks_give_each_tokens_bits() {
        let (rows, cols, n) = (9, 16384, 11);
        let order = FloatOrder::TinyBlas(VectorWidth::Avx512, Ggml::BitnetCpp);
        let w = encode(GgmlType::F16, &values(rows * cols, 51), cols).unwrap();
        let m = QuantizedMatrix::new(GgmlType::F16, &w, rows, cols).unwrap();
        let x = values(n * cols, 52);
        let mut out = vec![0f32; n * rows];
        m.float_matmul(order, &x, &mut Vec::new(), &mut out)
            .unwrap();
        for t in 0..n {
            let p = &x[t * cols..(t + 1) * cols];
            for r in 0..rows {
                let expected = dot(order, FloatWeights::F16, m.row(r), p);
                assert_eq!(
                    out[t * rows + r].to_bits(),
                    expected.to_bits(),
                    "token {t} row {r}"
                );
            }
        }
    }

    #[test]
    fn orders_follow_ggml_dispatch() {
        use FloatOrder::*;
        use Ggml::*;
        use VectorWidth::*;
        let call = FloatOrder::for_call;
        assert_eq!(
            call(Avx512, BitnetCpp, 5, 7, 2560),
            TinyBlas(Avx512, BitnetCpp)
        );
        assert_eq!(
            call(Avx512, BitnetCpp, 1, 8, 2560),
            VecDot(Avx512, BitnetCpp)
        );
        assert_eq!(call(Avx512, BitnetCpp, 5, 8, 40), VecDot(Avx512, BitnetCpp));
        assert_eq!(call(Avx2, BitnetCpp, 5, 8, 40), TinyBlas(Avx2, BitnetCpp));
        // llama.cpp's tinyBLAS pads short rows but wants the row count a multiple of 4.
        assert_eq!(call(Avx2, LlamaCpp, 5, 8, 41), TinyBlas(Avx2, LlamaCpp));
        assert_eq!(call(Avx2, LlamaCpp, 5, 7, 64), VecDot(Avx2, LlamaCpp));
        assert_eq!(call(Avx2, LlamaCpp, 1, 8, 64), VecDot(Avx2, LlamaCpp));
    }

    #[test]
    fn reductions_add_every_lane_once() {
        let a: Vec<f32> = (0..64).map(|i| i as f32).collect();
        assert_eq!(hsum(&a[..8]), 28.0);
        assert_eq!(hsum(&a[..16]), 120.0);
        assert_eq!(reduce4(&a[..32], VectorWidth::Avx2), 496.0);
        assert_eq!(reduce4(&a, VectorWidth::Avx512), 2016.0);
    }

    #[test]
    fn float_matmul_refuses_quantized_weights() {
        let w = encode(GgmlType::Q8_0, &values(32, 1), 32).unwrap();
        let m = QuantizedMatrix::new(GgmlType::Q8_0, &w, 1, 32).unwrap();
        let err = m
            .float_matmul(
                FloatOrder::VecDot(VectorWidth::Avx2, Ggml::LlamaCpp),
                &[0.0; 32],
                &mut Vec::new(),
                &mut [0.0],
            )
            .unwrap_err();
        assert!(matches!(err, QuantError::Unsupported(GgmlType::Q8_0)));
    }
}
