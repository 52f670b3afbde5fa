//! Tensor element types for bitnet-rs: encoding f32 values into ggml's layouts.
//!
//! This crate grows into the numeric core of the engine (block layouts, dequantisation,
//! activation quantisation and integer dot products for every supported type). Today it
//! holds the writers that `xtask gen-mini-gguf` needs; each type is added here, once, and
//! used by both the model generator and the engine so the two can never disagree on a layout.
#![deny(missing_docs)]

use bitnet_gguf::GgmlType;

/// Errors from encoding a tensor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuantError {
    /// No encoder exists for this type yet.
    #[error("encoding to {0} is not supported (supported: {list})", list = supported_list())]
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
}

/// Types [`encode`] can produce.
pub const ENCODABLE: &[GgmlType] = &[GgmlType::F32, GgmlType::F16, GgmlType::BF16];

fn supported_list() -> String {
    ENCODABLE
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encode row-major f32 values (`row_len` per row) as `ty`, exactly as ggml stores them.
///
/// # Errors
/// [`QuantError::Unsupported`] for a type without an encoder, [`QuantError::PartialBlock`]
/// when `row_len` is not a multiple of the type's block size.
pub fn encode(ty: GgmlType, values: &[f32], row_len: usize) -> Result<Vec<u8>, QuantError> {
    let block = ty.block_size();
    if row_len == 0 || row_len as u64 % block != 0 || values.len() % row_len != 0 {
        return Err(QuantError::PartialBlock { ty, block, row_len });
    }
    match ty {
        GgmlType::F32 => Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        // Round to nearest even, as ggml's GGML_FP32_TO_FP16 and GGML_FP32_TO_BF16 do.
        GgmlType::F16 => Ok(values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect()),
        GgmlType::BF16 => Ok(values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect()),
        other => Err(QuantError::Unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_encodings_round_trip_representable_values() {
        let v = [0.0f32, 1.0, -2.5, 0.125, 65504.0];
        let f32b = encode(GgmlType::F32, &v, 5).unwrap();
        assert_eq!(f32b.len(), 20);
        assert_eq!(f32::from_le_bytes(f32b[8..12].try_into().unwrap()), -2.5);
        let f16b = encode(GgmlType::F16, &v, 5).unwrap();
        let back: Vec<f32> = f16b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(back, v);
        let bf = encode(GgmlType::BF16, &[1.0, -0.5], 2).unwrap();
        assert_eq!(bf, vec![0x80, 0x3f, 0x00, 0xbf]);
    }

    #[test]
    fn unsupported_and_bad_shapes_are_errors() {
        assert_eq!(
            encode(GgmlType::Q6_K, &[0.0; 256], 256),
            Err(QuantError::Unsupported(GgmlType::Q6_K))
        );
        assert!(matches!(
            encode(GgmlType::F32, &[0.0; 5], 2),
            Err(QuantError::PartialBlock { .. })
        ));
    }
}
