//! The ggml tensor-type table: ids, names, block sizes and bytes per block.
//!
//! Facts come from ggml's `ggml.h` / `ggml-common.h` (the `block_*` structs and their
//! `static_assert`s) as vendored by llama-cpp-sys-2 0.1.161, and for I2_S from Microsoft's
//! bitnet.cpp (`ggml_nbytes` special-cases it: packed 2-bit codes, then 32 bytes holding the
//! f32 per-tensor scale and padding).

use std::fmt;

/// A ggml tensor element type as stored in a GGUF tensor info.
///
/// Ids 4, 5 and 31–33, 36–38 are retired upstream; 36 is claimed by BitNet's I2_S, which is
/// the only type from bitnet.cpp's fork we accept (its TL1/TL2 collide with upstream ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, blocks of 32 with an f16 scale.
    Q4_0,
    /// 4-bit, blocks of 32 with f16 scale and minimum.
    Q4_1,
    /// 5-bit, blocks of 32 with an f16 scale.
    Q5_0,
    /// 5-bit, blocks of 32 with f16 scale and minimum.
    Q5_1,
    /// 8-bit, blocks of 32 with an f16 scale.
    Q8_0,
    /// 8-bit, blocks of 32 with f16 scale and f16 sum (activation type).
    Q8_1,
    /// 2-bit k-quant, super-blocks of 256.
    Q2_K,
    /// 3-bit k-quant.
    Q3_K,
    /// 4-bit k-quant.
    Q4_K,
    /// 5-bit k-quant.
    Q5_K,
    /// 6-bit k-quant.
    Q6_K,
    /// 8-bit k-quant (activation type for k-quants and TQ types).
    Q8_K,
    /// i-quant 2.06 bpw.
    IQ2_XXS,
    /// i-quant 2.31 bpw.
    IQ2_XS,
    /// i-quant 3.06 bpw.
    IQ3_XXS,
    /// i-quant 1.56 bpw.
    IQ1_S,
    /// Non-linear 4-bit, blocks of 32.
    IQ4_NL,
    /// i-quant 3.44 bpw.
    IQ3_S,
    /// i-quant 2.5 bpw.
    IQ2_S,
    /// i-quant 4.25 bpw.
    IQ4_XS,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 64-bit float.
    F64,
    /// i-quant 1.75 bpw.
    IQ1_M,
    /// bfloat16.
    BF16,
    /// Ternary, 1.69 bpw: base-3 packed, super-blocks of 256.
    TQ1_0,
    /// Ternary, 2.06 bpw: 2-bit codes, super-blocks of 256.
    TQ2_0,
    /// BitNet's ternary type: 2-bit codes over the whole tensor plus one f32 scale.
    I2_S,
    /// Microscaling FP4, blocks of 32.
    MXFP4,
    /// NVIDIA FP4, blocks of 64.
    NVFP4,
    /// 1-bit, blocks of 128.
    Q1_0,
    /// 2-bit, blocks of 64.
    Q2_0,
}

/// How the bytes of a tensor of a given type are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Rows made of whole blocks: `block_size` elements stored in `block_bytes` bytes.
    Blocks {
        /// Elements per block.
        block_size: u64,
        /// Bytes per block.
        block_bytes: u64,
    },
    /// I2_S: `nelements / 4` bytes of codes for the whole tensor, then 32 bytes (scale + pad).
    I2S,
}

impl GgmlType {
    /// Every type this crate knows, in id order.
    pub const ALL: [GgmlType; 36] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
        GgmlType::MXFP4,
        GgmlType::NVFP4,
        GgmlType::Q1_0,
        GgmlType::Q2_0,
    ];

    /// The type for a GGUF type id, or `None` for ids that are retired or unknown.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            36 => I2_S,
            39 => MXFP4,
            40 => NVFP4,
            41 => Q1_0,
            42 => Q2_0,
            _ => return None,
        })
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            I2_S => 36,
            MXFP4 => 39,
            NVFP4 => 40,
            Q1_0 => 41,
            Q2_0 => 42,
        }
    }

    /// ggml's lower-case name (`"q4_1"`, `"tq2_0"`, `"i2_s"`).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q8_1 => "q8_1",
            Q2_K => "q2_K",
            Q3_K => "q3_K",
            Q4_K => "q4_K",
            Q5_K => "q5_K",
            Q6_K => "q6_K",
            Q8_K => "q8_K",
            IQ2_XXS => "iq2_xxs",
            IQ2_XS => "iq2_xs",
            IQ3_XXS => "iq3_xxs",
            IQ1_S => "iq1_s",
            IQ4_NL => "iq4_nl",
            IQ3_S => "iq3_s",
            IQ2_S => "iq2_s",
            IQ4_XS => "iq4_xs",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            F64 => "f64",
            IQ1_M => "iq1_m",
            BF16 => "bf16",
            TQ1_0 => "tq1_0",
            TQ2_0 => "tq2_0",
            I2_S => "i2_s",
            MXFP4 => "mxfp4",
            NVFP4 => "nvfp4",
            Q1_0 => "q1_0",
            Q2_0 => "q2_0",
        }
    }

    /// Byte layout: block size and bytes per block, or I2_S's whole-tensor packing.
    pub fn layout(self) -> Layout {
        use GgmlType::*;
        let (block_size, block_bytes) = match self {
            I2_S => return Layout::I2S,
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            // f16 d + 16 bytes of nibbles
            Q4_0 | IQ4_NL => (32, 18),
            // f16 d, f16 m + 16 bytes
            Q4_1 => (32, 20),
            // f16 d + 4 bytes high bits + 16 bytes
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            // f16 d + 32 int8
            Q8_0 => (32, 34),
            // f16 d, f16 s + 32 int8
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            // f32 d + 256 int8 + 16 i16 block sums
            Q8_K => (256, 292),
            IQ2_XXS => (256, 66),
            IQ2_XS => (256, 74),
            IQ3_XXS => (256, 98),
            IQ1_S => (256, 50),
            IQ3_S => (256, 110),
            IQ2_S => (256, 82),
            IQ4_XS => (256, 136),
            IQ1_M => (256, 56),
            // 48 bytes base-3 (5 trits/byte) + 4 bytes (4 trits/byte) + f16 d
            TQ1_0 => (256, 54),
            // 64 bytes of 2-bit codes + f16 d
            TQ2_0 => (256, 66),
            // e8m0 scale + 16 bytes
            MXFP4 => (32, 17),
            // 4 ue4m3 scales + 32 bytes
            NVFP4 => (64, 36),
            // f16 d + 16 bytes of bits
            Q1_0 => (128, 18),
            // f16 d + 16 bytes of 2-bit codes
            Q2_0 => (64, 18),
        };
        Layout::Blocks {
            block_size,
            block_bytes,
        }
    }

    /// Elements per block (1 for plain types and for I2_S, whose packing spans the tensor).
    pub fn block_size(self) -> u64 {
        match self.layout() {
            Layout::Blocks { block_size, .. } => block_size,
            Layout::I2S => 1,
        }
    }

    /// Bytes per block (for I2_S: none; see [`GgmlType::tensor_bytes`]).
    pub fn block_bytes(self) -> Option<u64> {
        match self.layout() {
            Layout::Blocks { block_bytes, .. } => Some(block_bytes),
            Layout::I2S => None,
        }
    }

    /// Size in bytes of a tensor of this type with the given dimensions (ggml order: `ne0`
    /// first), or `None` when the row length is not a whole number of blocks or the size
    /// overflows.
    pub fn tensor_bytes(self, dims: &[u64]) -> Option<u64> {
        let nelements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        let ne0 = dims.first().copied().unwrap_or(1);
        match self.layout() {
            Layout::Blocks {
                block_size,
                block_bytes,
            } => {
                if ne0 % block_size != 0 {
                    return None;
                }
                (nelements / block_size).checked_mul(block_bytes)
            }
            Layout::I2S => {
                // bitnet.cpp packs 4 codes per byte in 128-element blocks.
                if ne0 % 128 != 0 {
                    return None;
                }
                (nelements / 4).checked_add(32)
            }
        }
    }

    /// True for block-quantized types (everything but the plain float and integer types).
    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GgmlType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown ggml type {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_are_unique() {
        let all = GgmlType::ALL;
        for t in &all {
            assert_eq!(GgmlType::from_id(t.id()), Some(*t));
            assert_eq!(t.name().parse::<GgmlType>().unwrap(), *t);
        }
        let mut names: Vec<_> = all.iter().map(|t| t.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for retired in [4, 5, 31, 32, 33, 37, 38, 43, 1000] {
            assert_eq!(GgmlType::from_id(retired), None);
        }
    }

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(GgmlType::Q4_1.tensor_bytes(&[64, 2]), Some(2 * 2 * 20));
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(&[256, 3]), Some(3 * 66));
        assert_eq!(GgmlType::TQ1_0.tensor_bytes(&[512]), Some(2 * 54));
        assert_eq!(GgmlType::I2_S.tensor_bytes(&[128, 4]), Some(128 + 32));
        assert_eq!(GgmlType::I2_S.tensor_bytes(&[64, 4]), None);
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[33]), None);
        assert_eq!(GgmlType::F32.tensor_bytes(&[u64::MAX, 2]), None);
    }
}
