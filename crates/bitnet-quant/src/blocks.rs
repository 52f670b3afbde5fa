//! Block geometry of every supported type, and small byte helpers.
//!
//! Sizes and field order come from ggml's `ggml-common.h` (`block_q4_0`, `block_q4_1`,
//! `block_q5_0`, `block_q5_1`, `block_iq4_nl`, `block_q8_0`, `block_q8_1`, `block_tq1_0`,
//! `block_tq2_0`, `block_q8_K` and their `static_assert`s); I2_S from bitnet.cpp
//! (`ggml_nbytes` in `3rdparty/llama.cpp/ggml/src/ggml.c`: `nbytes / 4 + 32`, and
//! `quantize_i2_s` in `src/ggml-bitnet-mad.cpp`).

use bitnet_gguf::GgmlType;

/// Elements per Q4_0 / Q4_1 / Q8_0 / Q8_1 block (`QK4_0`, `QK4_1`, `QK8_0`, `QK8_1`).
pub(crate) const QK: usize = 32;
/// Elements per k-quant super-block (`QK_K`), used by TQ1_0, TQ2_0 and Q8_K.
pub(crate) const QK_K: usize = 256;
/// Elements per I2_S packing group on x86 (`QK_I2_S` in bitnet.cpp `ggml-bitnet-mad.cpp`).
pub(crate) const QK_I2_S: usize = 128;

/// `block_q8_0`: `ggml_half d; int8_t qs[32];`
pub(crate) const Q8_0_BYTES: usize = 2 + QK;
/// `block_q4_0`: `ggml_half d; uint8_t qs[16];` (low nibble = element j, high = j + 16).
pub(crate) const Q4_0_BYTES: usize = 2 + QK / 2;
/// `block_q4_1`: `ggml_half d; ggml_half m; uint8_t qs[16];`
pub(crate) const Q4_1_BYTES: usize = 4 + QK / 2;
/// `block_q5_0`: `ggml_half d; uint8_t qh[4]; uint8_t qs[16];` (bit j of qh is element j's
/// fifth bit).
pub(crate) const Q5_0_BYTES: usize = 2 + 4 + QK / 2;
/// `block_q5_1`: `ggml_half d; ggml_half m; uint8_t qh[4]; uint8_t qs[16];`
pub(crate) const Q5_1_BYTES: usize = 4 + 4 + QK / 2;
/// `block_iq4_nl`: `ggml_half d; uint8_t qs[16];` (Q4_0's layout; nibbles index a table).
pub(crate) const IQ4_NL_BYTES: usize = 2 + QK / 2;
/// `block_tq1_0`: `uint8_t qs[48]; uint8_t qh[4]; ggml_half d;` (the scale comes *last*).
pub(crate) const TQ1_0_BYTES: usize = TQ1_QS + TQ1_QH + 2;
/// `sizeof(block_tq1_0::qs)` = `(QK_K - 4 * QK_K / 64) / 5`: five trits per byte.
pub(crate) const TQ1_QS: usize = (QK_K - 4 * QK_K / 64) / 5;
/// `sizeof(block_tq1_0::qh)` = `QK_K / 64`: four trits per byte.
pub(crate) const TQ1_QH: usize = QK_K / 64;
/// `block_tq2_0`: `uint8_t qs[64]; ggml_half d;` (the scale comes *last*).
pub(crate) const TQ2_0_BYTES: usize = QK_K / 4 + 2;

/// Bytes of a whole tensor of `n` elements (`n` already validated against the block size).
pub(crate) fn tensor_bytes(ty: GgmlType, n: usize) -> usize {
    match ty {
        // bitnet.cpp `ggml_nbytes`: `nbytes / 4 + 32` (packed codes, then f32 scale + padding).
        GgmlType::I2_S => n / 4 + 32,
        _ => row_bytes(ty, n),
    }
}

/// Bytes of one row of `n` elements; for I2_S only the packed codes (`n / 4`).
pub(crate) fn row_bytes(ty: GgmlType, n: usize) -> usize {
    match ty {
        GgmlType::F32 => n * 4,
        GgmlType::F16 | GgmlType::BF16 => n * 2,
        GgmlType::Q8_0 => n / QK * Q8_0_BYTES,
        GgmlType::Q4_0 => n / QK * Q4_0_BYTES,
        GgmlType::Q4_1 => n / QK * Q4_1_BYTES,
        GgmlType::Q5_0 => n / QK * Q5_0_BYTES,
        GgmlType::Q5_1 => n / QK * Q5_1_BYTES,
        GgmlType::IQ4_NL => n / QK * IQ4_NL_BYTES,
        GgmlType::TQ1_0 => n / QK_K * TQ1_0_BYTES,
        GgmlType::TQ2_0 => n / QK_K * TQ2_0_BYTES,
        GgmlType::I2_S => n / 4,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            n / QK_K * crate::kquants::block_bytes(ty).expect("a k-quant")
        }
        other => unreachable!("row_bytes called for unsupported type {other}"),
    }
}

/// The f16 at `b[off..off + 2]` (little-endian), widened to f32 (exact).
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// `v` rounded to f16 (round to nearest even, as `GGML_FP32_TO_FP16`), little-endian bytes.
#[inline(always)]
pub(crate) fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// `v` rounded through f16 and back: the value ggml actually uses after storing a scale.
#[inline(always)]
pub(crate) fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// ggml's `nearest_int` (`ggml-quants.c`): adds 1.5·2²³ and reads the low mantissa bits —
/// round half to even for |v| < 2²² (ggml's assert, compiled out in release builds), and the
/// same bits as ggml outside that range (NaN → 0, ±inf → −2²²), which corrupt inputs reach.
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}
