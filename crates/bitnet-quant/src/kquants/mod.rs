//! ggml's k-quants — Q2_K, Q3_K, Q4_K, Q5_K, Q6_K — as llama.cpp stores, quantizes and
//! multiplies them: one file per type (layout, decoder, encoder, scalar kernel), the shared
//! reference quantizers in [`search`], and the AVX2 kernels in `x86`.
//!
//! Every k-quant block holds 256 weights (`QK_K`) split into sub-blocks of 16 or 32 with
//! their own small integer scale (and minimum for Q2_K, Q4_K and Q5_K), multiplied by one or
//! two f16 super-block scales. Activations are Q8_K (`vec_dot_type` in ggml-cpu.c).
//!
//! # Why the kernels look the way they do
//!
//! llama.cpp (built for AVX2) runs `ggml_vec_dot_q*_K_q8_K` from `ggml-cpu/arch/x86/quants.c`.
//! Each one sums a block's integer products exactly in eight i32 lanes — lane k takes bytes
//! 4k..4k+3 of every 32-byte vector through `maddubs` then `madd` with the sub-block's
//! scale — converts the lanes to f32 and folds them into eight f32 accumulators with a fused
//! multiply-add per block, reducing with `hsum_float_8` at the end. The integer part can
//! neither saturate nor wrap for any bytes (codes are at most 6 bits, scales at most 8), so
//! only the lane assignment and the float steps decide the bits; [`scaled_lanes`] is that
//! lane assignment and each type's `dot` spells out its float steps.
//!
//! Batches are different. From 8 tokens on (`ggml_tiled_min_batch`), llama.cpp multiplies
//! k-quant matrices with its tiled matmul (`ggml_compute_forward_mul_mat_tiled`,
//! ggml-cpu/tiled/): the same exact integer sums per block, but folded into one scalar per
//! row and token, `acc = fma(d·s1 − dmin·s2, dy, acc)` — see [`dot_tiled`]. Below 8 tokens,
//! and token by token, it is `vec_dot`.
//!
//! On x86 with AVX2 llama.cpp's CPU backend also *repacks* Q4_K matrices whose row count is a
//! multiple of 8 (`ggml_repack_get_optimal_repack_type` in `ggml-cpu/repack.cpp`; Q2_K only
//! with AVX-512, which the reference build does not enable, and Q5_K/Q6_K only on ARM) and
//! multiplies them with `ggml_gemv_q4_K_8x8_q8_K` (one token at a time) or
//! `ggml_gemm_q4_K_8x8_q8_K` (whole groups of four tokens), never with the tiled matmul.
//! Those sum per row in two scalar f32 accumulators (scales and minimums) with one fused
//! multiply-add per super-block (gemv) or per pair of sub-blocks (gemm) — see
//! [`q4_k::dot_repacked`]. (`ggml_quantize_mat_q8_K_4x8`, which quantizes a gemm group's
//! activations, prefers +amax to −amax where `quantize_row_q8_K` takes the first of the two;
//! that negates codes, bsums and scale together, which leaves every product's bits as they
//! are — a test checks it.)
//!
//! The encoders reproduce `quantize_row_q*_K_ref` (ggml-quants.c, what `llama-quantize` runs
//! without an importance matrix). ggml-base is compiled for baseline x86-64, so there is no
//! fused multiply-add in them: every product and sum is rounded on its own, as Rust does.

use bitnet_gguf::GgmlType;
use rayon::prelude::*;

use crate::activation::QuantizedActivation;
use crate::blocks::QK_K;
use crate::matrix::RowKernel;

pub(crate) mod q2_k;
pub(crate) mod q3_k;
pub(crate) mod q4_k;
pub(crate) mod q5_k;
pub(crate) mod q6_k;
pub(crate) mod search;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

#[cfg(test)]
mod tests;

/// Bytes of one block of a k-quant type, `None` for other types.
pub(crate) fn block_bytes(ty: GgmlType) -> Option<usize> {
    Some(match ty {
        GgmlType::Q2_K => q2_k::BYTES,
        GgmlType::Q3_K => q3_k::BYTES,
        GgmlType::Q4_K => q4_k::BYTES,
        GgmlType::Q5_K => q5_k::BYTES,
        GgmlType::Q6_K => q6_k::BYTES,
        _ => return None,
    })
}

/// Encodes one block: 256 values → the block's bytes.
type BlockEncoder = fn(&[f32], &mut [u8]);
/// Decodes one block: the block's bytes → 256 values.
type BlockDecoder = fn(&[u8], &mut [f32]);

/// The block encoder (`quantize_row_q*_K_ref` for one block) of a k-quant type.
pub(crate) fn encoder(ty: GgmlType) -> Option<BlockEncoder> {
    Some(match ty {
        GgmlType::Q2_K => q2_k::encode,
        GgmlType::Q3_K => q3_k::encode,
        GgmlType::Q4_K => q4_k::encode,
        GgmlType::Q5_K => q5_k::encode,
        GgmlType::Q6_K => q6_k::encode,
        _ => return None,
    })
}

/// The block decoder (`dequantize_row_q*_K` for one block) of a k-quant type.
pub(crate) fn decoder(ty: GgmlType) -> Option<BlockDecoder> {
    Some(match ty {
        GgmlType::Q2_K => q2_k::decode,
        GgmlType::Q3_K => q3_k::decode,
        GgmlType::Q4_K => q4_k::decode,
        GgmlType::Q5_K => q5_k::decode,
        GgmlType::Q6_K => q6_k::decode,
        _ => return None,
    })
}

/// Encode whole blocks of `values` (a multiple of 256) as the k-quant `ty`, in parallel (the
/// searches are costly and every block is independent).
pub(crate) fn encode_all(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    let (nb, f) = (block_bytes(ty)?, encoder(ty)?);
    let mut out = vec![0u8; values.len() / QK_K * nb];
    out.par_chunks_exact_mut(nb)
        .zip(values.par_chunks_exact(QK_K))
        .for_each(|(y, x)| f(x, y));
    Some(out)
}

/// Decode whole blocks of the k-quant `ty` into `out` (sizes already checked).
pub(crate) fn decode_all(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Option<()> {
    let (nb, f) = (block_bytes(ty)?, decoder(ty)?);
    for (x, y) in bytes.chunks_exact(nb).zip(out.chunks_exact_mut(QK_K)) {
        f(x, y);
    }
    Some(())
}

/// The scalar row kernel of a k-quant type (`None` for other types).
pub(crate) fn scalar_kernel(ty: GgmlType) -> Option<RowKernel> {
    Some(match ty {
        GgmlType::Q2_K => |w, _, a| q2_k::dot(w, a),
        GgmlType::Q3_K => |w, _, a| q3_k::dot(w, a),
        GgmlType::Q4_K => |w, _, a| q4_k::dot(w, a),
        GgmlType::Q5_K => |w, _, a| q5_k::dot(w, a),
        GgmlType::Q6_K => |w, _, a| q6_k::dot(w, a),
        _ => return None,
    })
}

/// The scalar kernel of a k-quant type in llama.cpp's tiled order (`None` for other types).
pub(crate) fn scalar_tiled_kernel(ty: GgmlType) -> Option<RowKernel> {
    Some(match ty {
        GgmlType::Q2_K => |w, _, a| dot_tiled(w, a, q2_k::BYTES, q2_k::tiled_terms),
        GgmlType::Q3_K => |w, _, a| dot_tiled(w, a, q3_k::BYTES, q3_k::tiled_terms),
        GgmlType::Q4_K => |w, _, a| dot_tiled(w, a, q4_k::BYTES, q4_k::tiled_terms),
        GgmlType::Q5_K => |w, _, a| dot_tiled(w, a, q5_k::BYTES, q5_k::tiled_terms),
        GgmlType::Q6_K => |w, _, a| dot_tiled(w, a, q6_k::BYTES, q6_k::tiled_terms),
        _ => return None,
    })
}

/// Batches of at least this many tokens take llama.cpp's tiled k-quant matmul
/// (`ggml_tiled_min_batch` in ggml-cpu/tiled/tiled.cpp); smaller ones `vec_dot`.
pub(crate) const TILED_MIN_BATCH: usize = 8;

/// One block's contribution as llama.cpp's tiled matmul sees it: the weight scale `d`, the
/// exact integer Σ scale·value·q over the block, and for the types with minimums `dmin`
/// and the exact Σ min·Σq.
pub(crate) struct TiledTerms {
    pub d: f32,
    pub s1: i32,
    pub min: Option<(f32, i32)>,
}

/// llama.cpp's tiled k-quant matmul (`tiled_run_microtile_avx2`, ggml-cpu/tiled), one row
/// and one token: per block `res = d · s1`, minus `dmin · s2` in one fused step
/// (`_mm256_fnmadd_ps`), then `acc = fma(res, dy, acc)` from `acc = 0`, block after block.
/// `terms` gives a block's [`TiledTerms`] from its bytes, codes and bsums.
#[inline(always)]
pub(crate) fn dot_tiled(
    w: &[u8],
    a: &QuantizedActivation,
    bytes: usize,
    terms: impl Fn(&[u8], &[i8], &[i16]) -> TiledTerms,
) -> f32 {
    let mut acc = 0.0f32;
    for (((x, y), &dy), bs) in w
        .chunks_exact(bytes)
        .zip(a.qs.chunks_exact(QK_K))
        .zip(&a.d)
        .zip(a.bsums.chunks_exact(16))
    {
        let t = terms(x, y, bs);
        let mut res = t.d * t.s1 as f32;
        if let Some((dmin, s2)) = t.min {
            res = (-dmin).mul_add(s2 as f32, res);
        }
        acc = res.mul_add(dy, acc);
    }
    acc
}

/// The eight i32 lanes of ggml's AVX2 k-quant kernels for one block: lane k collects, from
/// every 32-element vector, elements 4k..4k+3 (`maddubs` pairs them into i16, `madd` with
/// the sub-block scale widens them to i32), each as `scale(e) · code(e) · y[e]`.
///
/// Exact: no k-quant can overflow the i16 or i32 steps (|code| ≤ 63, |scale| ≤ 128,
/// |y| ≤ 128), so the order inside a lane does not matter, only which lane an element is in.
#[inline(always)]
pub(crate) fn scaled_lanes(
    y: &[i8],
    code: impl Fn(usize) -> i32,
    scale: impl Fn(usize) -> i32,
) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (e, &q) in y.iter().enumerate().take(QK_K) {
        lanes[(e % 32) / 4] += scale(e) * code(e) * q as i32;
    }
    lanes
}

/// The sum of each 32-element sub-block's activation codes, from the 16-element `bsums`
/// (ggml's `_mm_hadd_epi16` of the bsums; i16 arithmetic cannot wrap here: |Σ| ≤ 32 · 128).
#[inline(always)]
pub(crate) fn bsums32(bsums: &[i16]) -> [i32; 8] {
    std::array::from_fn(|s| bsums[2 * s] as i32 + bsums[2 * s + 1] as i32)
}

/// ggml `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j` (0..8) packed in the
/// 12 bytes `q` of a Q4_K / Q5_K block. Sub-blocks 0..4 use the low six bits of bytes j and
/// j + 4; sub-blocks 4..8 take their low four bits from byte j + 4 and their top two from the
/// spare bits 7:6 of bytes j − 4 (scale) and j (minimum).
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The eight scales and eight minimums of a Q4_K / Q5_K block.
#[inline(always)]
pub(crate) fn scales_mins_k4(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = scale_min_k4(j, q);
    }
    (sc, mn)
}

/// Pack eight 6-bit scales and minimums (already ≤ 63) the way `quantize_row_q4_K_ref` and
/// `quantize_row_q5_K_ref` do — the inverse of [`scale_min_k4`].
pub(crate) fn pack_scales_mins_k4(ls: &[u8; 8], lm: &[u8; 8], q: &mut [u8]) {
    q[..12].fill(0);
    for j in 0..8 {
        if j < 4 {
            q[j] = ls[j];
            q[j + 4] = lm[j];
        } else {
            q[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            q[j - 4] |= (ls[j] >> 4) << 6;
            q[j] |= (lm[j] >> 4) << 6;
        }
    }
}
