//! Decoders: ggml bytes → f32, reproducing ggml's `dequantize_row_*` (`ggml-quants.c`) and
//! bitnet.cpp's `dequantize_row_i2_s` (`3rdparty/llama.cpp/ggml/src/ggml-quants.c`). Q5_0,
//! Q5_1 and IQ4_NL blocks are decoded in `legacy::codec`.

use bitnet_gguf::GgmlType;

use crate::blocks::{
    f16_at, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK, QK_I2_S, QK_K, TQ1_0_BYTES, TQ1_QH, TQ1_QS,
    TQ2_0_BYTES,
};
use crate::blocks::{IQ4_NL_BYTES, Q5_0_BYTES, Q5_1_BYTES};
use crate::legacy::codec as legacy;

/// Decode `out.len()` elements (sizes already validated). For I2_S, `bytes` is the whole
/// tensor including the trailing scale.
pub(crate) fn decode(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::I2_S => {
            let n = out.len();
            let scale = f32::from_le_bytes(bytes[n / 4..n / 4 + 4].try_into().unwrap());
            i2_s_row(&bytes[..n / 4], scale, out);
        }
        _ => row(ty, bytes, out),
    }
}

/// Decode one row (or any run of whole blocks) of a block type; I2_S is not handled here.
pub(crate) fn row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16_at(bytes, 2 * i);
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => each_block(bytes, Q8_0_BYTES, out, QK, q8_0),
        GgmlType::Q4_0 => each_block(bytes, Q4_0_BYTES, out, QK, q4_0),
        GgmlType::Q4_1 => each_block(bytes, Q4_1_BYTES, out, QK, q4_1),
        GgmlType::Q5_0 => each_block(bytes, Q5_0_BYTES, out, QK, legacy::decode_q5_0),
        GgmlType::Q5_1 => each_block(bytes, Q5_1_BYTES, out, QK, legacy::decode_q5_1),
        GgmlType::IQ4_NL => each_block(bytes, IQ4_NL_BYTES, out, QK, legacy::decode_iq4_nl),
        GgmlType::TQ1_0 => each_block(bytes, TQ1_0_BYTES, out, QK_K, tq1_0),
        GgmlType::TQ2_0 => each_block(bytes, TQ2_0_BYTES, out, QK_K, tq2_0),
        other => crate::kquants::decode_all(other, bytes, out)
            .unwrap_or_else(|| unreachable!("dequantize::row called for {other}")),
    }
}

fn each_block(b: &[u8], nb: usize, out: &mut [f32], qk: usize, f: fn(&[u8], &mut [f32])) {
    for (x, y) in b.chunks_exact(nb).zip(out.chunks_exact_mut(qk)) {
        f(x, y);
    }
}

/// ggml `dequantize_row_q8_0`: `qs[j] * d`.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in y.iter_mut().zip(&b[2..]) {
        *o = q as i8 as f32 * d;
    }
}

/// ggml `dequantize_row_q4_0`: `(nibble − 8) * d`, low nibbles first.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..QK / 2 {
        y[j] = ((b[2 + j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + QK / 2] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// ggml `dequantize_row_q4_1`: `nibble * d + m`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..QK / 2 {
        y[j] = (b[4 + j] & 0x0F) as f32 * d + m;
        y[j + QK / 2] = (b[4 + j] >> 4) as f32 * d + m;
    }
}

/// Trit n (0 = most significant) of a TQ1_0 byte: `((q·3ⁿ mod 256) · 3) >> 8` — ggml
/// `dequantize_row_tq1_0` (the u8 multiplication wraps on purpose).
#[inline(always)]
pub(crate) fn tq1_trit(q: u8, n: usize) -> i32 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    ((q.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as i32
}

/// ggml `dequantize_row_tq1_0`: `(trit − 1) * d`; element order as in the encoder.
fn tq1_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, TQ1_QS + TQ1_QH);
    for n in 0..5 {
        for m in 0..32 {
            y[32 * n + m] = (tq1_trit(b[m], n) - 1) as f32 * d;
        }
    }
    for n in 0..5 {
        for m in 0..16 {
            y[160 + 16 * n + m] = (tq1_trit(b[32 + m], n) - 1) as f32 * d;
        }
    }
    for n in 0..4 {
        for j in 0..TQ1_QH {
            y[240 + 4 * n + j] = (tq1_trit(b[TQ1_QS + j], n) - 1) as f32 * d;
        }
    }
}

/// ggml `dequantize_row_tq2_0`: `(code − 1) * d`, code of element 128c + 32n + m in bits
/// 2n of byte 32c + m.
fn tq2_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, QK_K / 4);
    for c in 0..2 {
        for n in 0..4 {
            for m in 0..32 {
                let q = (b[32 * c + m] >> (2 * n)) & 3;
                y[128 * c + 32 * n + m] = (q as i32 - 1) as f32 * d;
            }
        }
    }
}

/// bitnet.cpp `dequantize_row_i2_s`: `scale * map[code]` with map = {−1, 0, +1, 0}; element
/// 128k + 32g + p from bits `6 − 2g` of byte 32k + p. `codes` is `out.len() / 4` bytes.
pub(crate) fn i2_s_row(codes: &[u8], scale: f32, out: &mut [f32]) {
    const MAP: [f32; 4] = [-1.0, 0.0, 1.0, 0.0];
    for (blk, y) in codes.chunks_exact(32).zip(out.chunks_exact_mut(QK_I2_S)) {
        for (p, &byte) in blk.iter().enumerate() {
            for g in 0..4 {
                y[32 * g + p] = scale * MAP[((byte >> (6 - 2 * g)) & 3) as usize];
            }
        }
    }
}
