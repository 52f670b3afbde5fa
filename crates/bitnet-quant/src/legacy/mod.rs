//! Q5_0, Q5_1 and IQ4_NL: the 32-element block types that `llama-quantize` writes besides
//! Q4_0 / Q4_1 / Q8_0 (Q4_K_M and Q5_K_M mixes hold q5_0 and q5_1 tensors; IQ4_NL is its
//! fallback for rows that are not a multiple of 256).
//!
//! * Q5_0 (`block_q5_0`): an f16 scale `d`, then the fifth bits of the 32 codes (`qh`, bit j
//!   for element j), then their low nibbles in Q4_0's order; weight = (code − 16)·d.
//! * Q5_1 (`block_q5_1`): `d` and a minimum `m` (both f16), `qh`, nibbles; weight = code·d + m.
//! * IQ4_NL (`block_iq4_nl`): Q4_0's layout, but each nibble indexes ggml's non-linear table
//!   [`KVALUES_IQ4NL`]; weight = d·table[nibble].
//!
//! ggml multiplies Q5_0 and IQ4_NL weights with Q8_0 activations and Q5_1 with Q8_1
//! (`vec_dot_type` in `ggml-cpu.c`). Which kernel sums a product depends on the type, the
//! number of tokens and the row count, and the kernels' float orders differ, so each has its
//! own reproduction here:
//!
//! | product | llama.cpp on x86 (AVX2) | here |
//! |---|---|---|
//! | Q5_0 / Q5_1, any tokens | `ggml_vec_dot_q5_{0,1}` (tinyBLAS takes Q5_0 in a batch, with the same bits) | [`dot::q5_0_q8_0`], [`dot::q5_1_q8_1`] |
//! | IQ4_NL, one token | `ggml_vec_dot_iq4_nl_q8_0`: two accumulators, even and odd blocks | [`dot::iq4_nl_q8_0`] |
//! | IQ4_NL, ≥ 2 tokens | tinyBLAS (`llamafile_sgemm`): one accumulator | [`dot::iq4_nl_q8_0_tinyblas`] |
//! | IQ4_NL, rows % 8 == 0 | repacked 8×8 (`ggml_gemv/gemm_iq4_nl_8x8_q8_0`): one f32 per row | [`dot::iq4_nl_q8_0_repacked`] |
//!
//! The encoders reproduce what `llama-quantize` runs without an importance matrix:
//! `quantize_row_q5_0_ref`, `quantize_row_q5_1_ref` and `quantize_iq4_nl` (which is not
//! `quantize_row_iq4_nl_ref`: it searches 15 candidate scales, the reference function none).
//! They live in ggml-base, which is compiled for baseline x86-64, so no multiply-add is fused
//! there; the kernels live in ggml-cpu (AVX2 + FMA, where GCC fuses `a*b + c`).
//!
//! All of it — encoders, decoders, and the four orders over encoded, random and corrupt blocks
//! — was compared with the pinned llama.cpp's static libraries (`quantize_row_q5_{0,1}_ref`,
//! `quantize_iq4_nl`, `dequantize_row_*`, `ggml_vec_dot_*`, `llamafile_sgemm`,
//! `ggml_gemv/gemm_iq4_nl_8x8_q8_0` on blocks repacked as `make_block_iq4_nlx8` does): byte
//! and bit identical, except the sign and payload of NaN results, which neither C nor Rust
//! specifies.
//!
//! Corrupt scales: a NaN scale makes the row's dot NaN; an infinite one gives ±∞, or NaN when
//! that block meets a zero lane (∞·0) or infinities of both signs meet — what llama.cpp's
//! arithmetic gives (`corrupt_scales_give_llama_cpps_non_finite_results`). Nothing panics.

pub(crate) mod codec;
pub(crate) mod dot;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

#[cfg(test)]
mod tests;

use crate::blocks::QK;
use crate::matrix::{Backend, RowKernel, RowKernel4, WeightType};

/// ggml's `kvalues_iq4nl` (`ggml-common.h`): the 16 levels an IQ4_NL nibble stands for.
pub(crate) const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The 32 five-bit codes of a Q5 block: low nibbles of `qs` for elements 0..16, high nibbles
/// for 16..32, and bit j of the little-endian `qh` as element j's fifth bit
/// (`dequantize_row_q5_0`).
#[inline(always)]
pub(crate) fn q5_codes(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let low = crate::dot::nibbles(qs);
    std::array::from_fn(|j| low[j] | ((((high >> j) & 1) as u8) << 4))
}

/// The 32 signed levels of an IQ4_NL block, in element order.
#[inline(always)]
pub(crate) fn iq4_nl_levels(qs: &[u8]) -> [i8; QK] {
    crate::dot::nibbles(qs).map(|n| KVALUES_IQ4NL[n as usize])
}

/// The one-token row kernel for Q5_0, Q5_1 or IQ4_NL from `backend`.
pub(crate) fn kernel(ty: WeightType, backend: Backend) -> RowKernel {
    match backend {
        Backend::Scalar => match ty {
            WeightType::Q5_0 => |w, _, a| dot::q5_0_q8_0(w, a),
            WeightType::Q5_1 => |w, _, a| dot::q5_1_q8_1(w, a),
            WeightType::IQ4_NL => |w, _, a| dot::iq4_nl_q8_0(w, a),
            other => unreachable!("legacy::kernel called for {other:?}"),
        },
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => x86::kernel(ty),
    }
}

/// The row kernel llama.cpp's batch path sums in, where it differs from the one-token
/// kernel: tinyBLAS for IQ4_NL. `None` for Q5_0 (tinyBLAS, same bits as `vec_dot`) and Q5_1
/// (no tinyBLAS kernel: `vec_dot` for every token).
pub(crate) fn batch_kernel(ty: WeightType, backend: Backend) -> Option<RowKernel> {
    if ty != WeightType::IQ4_NL {
        return None;
    }
    Some(match backend {
        Backend::Scalar => |w, _, a| dot::iq4_nl_q8_0_tinyblas(w, a),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => x86::iq4_nl_tinyblas_kernel(),
    })
}

/// The four-token kernel of the batch path (same bits as four calls of its row kernel).
pub(crate) fn kernel4(ty: WeightType, backend: Backend) -> Option<RowKernel4> {
    match backend {
        Backend::Scalar => None,
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => Some(x86::kernel4(ty)),
    }
}

/// IQ4_NL repacked as llama.cpp repacks it: the row kernel (for one token and for a batch)
/// and its four-token form.
pub(crate) fn repacked_iq4_nl(backend: Backend) -> (RowKernel, Option<RowKernel4>) {
    match backend {
        Backend::Scalar => (|w, _, a| dot::iq4_nl_q8_0_repacked(w, a), None),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => x86::iq4_nl_repacked_kernels(),
    }
}
