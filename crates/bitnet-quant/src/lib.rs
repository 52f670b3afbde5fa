//! Tensor element types for bitnet-rs: block layouts, quantize/dequantize, activation
//! quantization and dot-product kernels, written to reproduce the C++ references bit for bit
//! where they are deterministic.
//!
//! # What this crate provides
//!
//! * [`encode`] / [`decode`]: f32 ⇄ the bytes ggml stores for F32, F16, BF16, Q8_0, Q4_0,
//!   Q4_1, Q5_0, Q5_1, IQ4_NL, TQ1_0, TQ2_0, the k-quants Q2_K…Q6_K and BitNet's I2_S.
//!   Encoders follow ggml's `quantize_row_*_ref` (`quantize_iq4_nl` for IQ4_NL, and
//!   bitnet.cpp's `quantize_i2_s`) line by line, so a file written here is byte-identical to
//!   one written by `llama-quantize` without an importance matrix.
//! * [`QuantizedActivation`]: the activation side of a quantized matmul, quantized exactly as
//!   ggml does before it calls a `vec_dot` kernel (Q8_0, Q8_1, Q8_K, BitNet's per-row int8,
//!   or F16/BF16 rounding). Reproducing this step is what makes our logits agree with
//!   llama.cpp to ~1e-5 instead of ~1 on ternary models.
//! * [`QuantizedMatrix`]: a borrowed, zero-copy view of a weight matrix (typically straight
//!   from a GGUF memory map) with `row`, `dot_row`, `matvec` and `matmul` — batched products
//!   take four tokens per weight row where the type has such a kernel (I2_S, Q8_0, Q4_1,
//!   Q5_0, Q5_1, TQ2_0, the k-quants), with the same bits per token. Where llama.cpp sums a
//!   batch in another order than one token (tinyBLAS for IQ4_NL, its tiled matmul for
//!   k-quant batches of 8+) or repacks the weights on load (Q4_0, IQ4_NL and Q4_K,
//!   [`QuantizedMatrix::repacked_like_llama_cpp`]), the matrix follows it.
//! * [`FloatOrder`] and [`QuantizedMatrix::float_matmul`]: F32/F16 products summed in the exact
//!   order of bitnet.cpp's older ggml (tinyBLAS for a batch, `vec_dot` for one token, at the
//!   host's vector width), which is what makes the engine bit-identical to bitnet.cpp.
//!
//! # Design decisions
//!
//! **Bit-exact with the kernels the references actually run.** The C++ references on x86-64
//! are built with AVX2 + FMA + F16C (llama.cpp via `llama-cpp-sys-2`) and `-march=native`
//! (bitnet.cpp). Their quantized dot products split each block's integer dot into eight
//! i32 lanes, convert to f32 and accumulate with fused multiply-adds in eight f32 lanes
//! (IQ4_NL's one-token kernel in two such accumulators, for even and odd blocks);
//! BitNet's I2_S kernel accumulates in wrapping i16 lanes. The scalar kernels here emulate
//! exactly those operations (not ggml's generic C code, which rounds differently), and the
//! AVX2 kernels use the same instructions, so scalar, AVX2 and the C++ kernels all produce
//! the same bits. This was verified against the references' own static libraries
//! (`ggml_vec_dot_*`, `quantize_row_q8_*`, `quantize_row_*_ref`, `quantize_iq4_nl`,
//! `llamafile_sgemm`, `ggml_gemv/gemm_iq4_nl_8x8_q8_0`, `quantize_i2_s`,
//! `quantize_row_i8_s`, `ggml_vec_dot_i2_i8_s`): encoders, activation quantizers and dot
//! products matched byte for byte / bit for bit. A parity difference can therefore never hide
//! in "which CPU ran the test".
//!
//! **Activation storage is struct-of-arrays.** [`QuantizedActivation`] keeps the int8 codes in
//! one contiguous array and the per-block scales as f32 (the f16 → f32 widening is exact), so
//! kernels read scales without conversions and the buffers are reused across calls: the hot
//! path never allocates.
//!
//! **I2_S is a whole-tensor format.** Its single scale lives after the packed codes of the
//! whole tensor, so it can only be read through [`QuantizedMatrix`] (which sees the tensor)
//! or [`decode`] (which gets the tensor's bytes), never from one row alone.
//!
//! **Kernel choice happens once.** [`QuantizedMatrix::new`] picks the AVX2 kernels when
//! `is_x86_feature_detected!` reports AVX2, FMA and F16C, else the scalar ones; the hot path
//! is a plain function-pointer call.
//!
//! Where each layout fact comes from is written next to the code that relies on it; "ggml"
//! means llama.cpp's ggml as vendored by crates.io `llama-cpp-sys-2 0.1.161`, "bitnet.cpp"
//! means Microsoft's fork as vendored by `bitnet-llm-sys 1.0.2`.
//!
//! ```
//! use bitnet_quant::{encode, GgmlType, QuantizedActivation, QuantizedMatrix};
//!
//! // A 2×64 matrix stored as Q8_0 (blocks of 32).
//! let w: Vec<f32> = (0..128).map(|i| ((i % 3) as f32 - 1.0) * 0.5).collect();
//! let bytes = encode(GgmlType::Q8_0, &w, 64).unwrap();
//! let m = QuantizedMatrix::new(GgmlType::Q8_0, &bytes, 2, 64).unwrap();
//!
//! // Quantize the input the way llama.cpp does for Q8_0 weights, then multiply.
//! let x = vec![0.25f32; 64];
//! let mut act = QuantizedActivation::new();
//! act.quantize(m.activation_type(), &x).unwrap();
//! let mut y = [0.0f32; 2];
//! m.matvec(&act, &mut y);
//! assert_eq!(y[1], m.dot_row(1, &act));
//! ```
#![deny(missing_docs)]

mod activation;
mod blocks;
mod dequantize;
mod dot;
pub mod float_order;
mod kquants;
mod legacy;
mod matrix;
mod quantize;
mod spin;
#[cfg(target_arch = "x86_64")]
mod ternary_x86;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use activation::{ActivationType, Q8Flavor, QuantizedActivation};
pub use bitnet_gguf::GgmlType;
pub use float_order::{FloatOrder, VectorWidth};
pub use matrix::{QuantizedMatrix, WeightType};

/// Errors from encoding, decoding or viewing a tensor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuantError {
    /// No encoder, decoder or kernel exists for this type.
    #[error("tensor type {0} is not supported here (supported: {list})", list = supported_list())]
    Unsupported(GgmlType),
    /// The row length does not fit the type's block size.
    #[error("{ty} needs rows that are a multiple of {block} elements, got {row_len}")]
    PartialBlock {
        /// The type.
        ty: GgmlType,
        /// Its block size.
        block: u64,
        /// The row length given.
        row_len: usize,
    },
    /// A byte buffer does not have the size the type and shape require.
    #[error("{ty} data for {elements} elements must be {expected} bytes, got {got}")]
    Size {
        /// The type.
        ty: GgmlType,
        /// Number of elements described by the shape.
        elements: usize,
        /// Bytes the layout requires.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// The instruction sets this build's kernels use on this CPU (what benchmarks report beside
/// their figures): `scalar` when no SIMD kernel applies.
pub fn simd_in_use() -> Vec<&'static str> {
    let mut used = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if x86::available() {
            used.extend(["avx2", "fma", "f16c"]);
            match ternary_x86::Flavor::best() {
                ternary_x86::Flavor::Avx512Vnni => used.push("avx512vnni (TQ1_0/TQ2_0)"),
                ternary_x86::Flavor::AvxVnni => used.push("avxvnni (TQ1_0/TQ2_0)"),
                ternary_x86::Flavor::Avx2 => {}
            }
        }
        if VectorWidth::host() == VectorWidth::Avx512 {
            used.push("avx512f (bitnet.cpp's float orders)");
        }
    }
    if used.is_empty() {
        used.push("scalar");
    }
    used
}

/// Types [`encode`] can produce (and [`decode`] can read back).
pub const ENCODABLE: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::I2_S,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Types [`decode`] can read.
pub const DECODABLE: &[GgmlType] = ENCODABLE;

fn supported_list() -> String {
    ENCODABLE
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Elements per block for the row-length check: ggml's block size, and 128 for I2_S, whose
/// codes are packed in 128-element groups (bitnet.cpp `QK_I2_S` for x86 in
/// `src/ggml-bitnet-mad.cpp`).
fn row_block(ty: GgmlType) -> u64 {
    if ty == GgmlType::I2_S {
        blocks::QK_I2_S as u64
    } else {
        ty.block_size()
    }
}

/// Encode row-major f32 values (`row_len` per row) as `ty`, exactly as ggml stores them.
///
/// `values` is the whole tensor: I2_S has one scale per tensor (the largest |w|).
/// Quantized types follow ggml's reference quantizers (what `llama-quantize` uses without an
/// importance matrix); I2_S follows bitnet.cpp's `quantize_i2_s`, which maps every weight
/// to its *sign* (|w| < 1e-6 counts as zero), so only ternary tensors survive it unchanged.
///
/// # Errors
/// [`QuantError::Unsupported`] for a type without an encoder, [`QuantError::PartialBlock`]
/// when `row_len` is zero, not a multiple of the type's block size, or does not divide
/// `values.len()`.
pub fn encode(ty: GgmlType, values: &[f32], row_len: usize) -> Result<Vec<u8>, QuantError> {
    let block = row_block(ty);
    if row_len == 0
        || !(row_len as u64).is_multiple_of(block)
        || !values.len().is_multiple_of(row_len)
    {
        return Err(QuantError::PartialBlock { ty, block, row_len });
    }
    quantize::encode(ty, values)
}

/// Decode a whole tensor of `ty` (`bytes`) into `out`, one f32 per element, as ggml's
/// `dequantize_row_*` (bitnet.cpp's `dequantize_row_i2_s` for I2_S) would.
///
/// `out.len()` is the number of elements; `bytes` must be exactly the tensor's size.
///
/// # Errors
/// [`QuantError::Unsupported`] for a type without a decoder, [`QuantError::PartialBlock`] when
/// `out.len()` is not a whole number of blocks, [`QuantError::Size`] when `bytes` is not the
/// size the layout requires.
pub fn decode(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    if !DECODABLE.contains(&ty) {
        return Err(QuantError::Unsupported(ty));
    }
    let block = row_block(ty);
    if !(out.len() as u64).is_multiple_of(block) {
        return Err(QuantError::PartialBlock {
            ty,
            block,
            row_len: out.len(),
        });
    }
    let expected = blocks::tensor_bytes(ty, out.len());
    if bytes.len() != expected {
        return Err(QuantError::Size {
            ty,
            elements: out.len(),
            expected,
            got: bytes.len(),
        });
    }
    dequantize::decode(ty, bytes, out);
    Ok(())
}

#[cfg(test)]
mod tests;
