//! Typed errors. Every structural error carries the byte offset where the problem was found.

use std::path::PathBuf;

use crate::value::ValueType;

/// Everything that can go wrong opening, validating or querying a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic at offset 0 is {found:?}, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found (fewer than four if the file is shorter).
        found: Vec<u8>,
    },
    /// GGUF v1 or a version from the future.
    #[error("unsupported GGUF version {version} at offset 4 (supported: 2 and 3{hint})")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
        /// Extra advice for the user.
        hint: &'static str,
    },
    /// The header ends before a field it announces.
    #[error("truncated or not a GGUF file: the file ends inside its header ({what} at offset {offset} needs {needed} bytes, {available} remain)")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes required.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A count (tensors, keys, array elements) cannot fit in the bytes that remain: the file
    /// ends before the header it announces does.
    #[error("truncated or not a GGUF file: {what} {count} at offset {offset} cannot fit in the {available} bytes that remain (at most {max})")]
    CountTooLarge {
        /// Which count.
        what: &'static str,
        /// The count found.
        count: u64,
        /// Where it was read.
        offset: u64,
        /// Bytes left after it.
        available: u64,
        /// Largest count those bytes could hold.
        max: u64,
    },
    /// A string length exceeds the bytes that remain: the file ends before the header does.
    #[error("truncated or not a GGUF file: a string of {len} bytes at offset {offset} runs past the {available} bytes that remain")]
    StringTooLong {
        /// The length found.
        len: u64,
        /// Where the length was read.
        offset: u64,
        /// Bytes left after it.
        available: u64,
    },
    /// A string is not UTF-8.
    #[error("string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the string's bytes start.
        offset: u64,
    },
    /// A metadata value type id that GGUF does not define.
    #[error("unknown metadata value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The id found.
        type_id: u32,
        /// Where it was read.
        offset: u64,
    },
    /// Arrays nested deeper than any real file uses.
    #[error("arrays nested more than {max} deep at offset {offset}")]
    NestingTooDeep {
        /// The limit.
        max: usize,
        /// Where the too-deep array starts.
        offset: u64,
    },
    /// The same metadata key twice.
    #[error("duplicate metadata key {key:?} at offset {offset}")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where the second one starts.
        offset: u64,
    },
    /// `general.alignment` is zero, not a power of two, or not an integer.
    #[error("invalid general.alignment {value} at offset {offset}: must be a power of two")]
    BadAlignment {
        /// The value found (as text: it may not be an integer).
        value: String,
        /// Where the key starts.
        offset: u64,
    },
    /// The same tensor name twice.
    #[error("duplicate tensor name {name:?} at offset {offset}")]
    DuplicateTensor {
        /// The name.
        name: String,
        /// Where the second tensor info starts.
        offset: u64,
    },
    /// More dimensions than ggml supports.
    #[error(
        "tensor {name:?} at offset {offset} has {n_dims} dimensions (ggml supports at most 4)"
    )]
    TooManyDims {
        /// Tensor name.
        name: String,
        /// Dimensions found.
        n_dims: u32,
        /// Where the tensor info starts.
        offset: u64,
    },
    /// The element count overflows 64 bits.
    #[error("tensor {name:?} at offset {offset}: dimensions {dims:?} overflow")]
    DimensionOverflow {
        /// Tensor name.
        name: String,
        /// The dimensions.
        dims: Vec<u64>,
        /// Where the tensor info starts.
        offset: u64,
    },
    /// A tensor type id that ggml does not define (or a retired one).
    #[error("tensor {name:?} at offset {offset} has unknown type id {type_id}")]
    UnknownTensorType {
        /// Tensor name.
        name: String,
        /// The id found.
        type_id: u32,
        /// Where the type was read.
        offset: u64,
    },
    /// The row length is not a whole number of the type's blocks.
    #[error("tensor {name:?} at offset {offset}: row length {ne0} is not a multiple of {ty}'s block size {block_size}")]
    PartialBlock {
        /// Tensor name.
        name: String,
        /// The type.
        ty: crate::GgmlType,
        /// First dimension.
        ne0: u64,
        /// Required divisor.
        block_size: u64,
        /// Where the tensor info starts.
        offset: u64,
    },
    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error("tensor {name:?}: data offset {data_offset} is not aligned to {alignment} bytes (tensor info at offset {offset})")]
    MisalignedTensor {
        /// Tensor name.
        name: String,
        /// Offset relative to the data section.
        data_offset: u64,
        /// The file's alignment.
        alignment: u64,
        /// Where the tensor info starts.
        offset: u64,
    },
    /// A tensor's data extends past the end of the file: a truncated download.
    #[error("file truncated: tensor {name:?} needs bytes {start}..{end} but the file has {file_size} bytes ({missing} bytes missing); re-download the file")]
    TensorOutOfBounds {
        /// Tensor name.
        name: String,
        /// Absolute start offset.
        start: u64,
        /// Absolute end offset.
        end: u64,
        /// File size.
        file_size: u64,
        /// How many bytes are missing.
        missing: u64,
    },
    /// Two tensors' data ranges overlap.
    #[error("tensors {first:?} and {second:?} overlap in the data section (at offset {offset})")]
    OverlappingTensors {
        /// The earlier tensor.
        first: String,
        /// The later tensor.
        second: String,
        /// Absolute offset where the second starts.
        offset: u64,
    },
    /// A metadata key a caller needs is absent.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata key has a type the caller cannot use.
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What was wanted.
        expected: &'static str,
        /// What the file holds.
        found: ValueType,
    },
    /// A metadata integer does not fit the requested type.
    #[error("metadata key {key:?} value {value} is out of range for {expected}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The value.
        value: i128,
        /// The requested type.
        expected: &'static str,
    },
    /// The requested tensor does not exist.
    #[error("tensor {name:?} not found")]
    MissingTensor {
        /// The name.
        name: String,
    },
}

impl GgufError {
    /// The byte offset the error refers to, when it refers to one.
    pub fn offset(&self) -> Option<u64> {
        use GgufError::*;
        match self {
            BadMagic { .. } => Some(0),
            UnsupportedVersion { .. } => Some(4),
            Truncated { offset, .. }
            | CountTooLarge { offset, .. }
            | StringTooLong { offset, .. }
            | InvalidUtf8 { offset }
            | UnknownValueType { offset, .. }
            | NestingTooDeep { offset, .. }
            | DuplicateKey { offset, .. }
            | BadAlignment { offset, .. }
            | DuplicateTensor { offset, .. }
            | TooManyDims { offset, .. }
            | DimensionOverflow { offset, .. }
            | UnknownTensorType { offset, .. }
            | PartialBlock { offset, .. }
            | MisalignedTensor { offset, .. }
            | OverlappingTensors { offset, .. } => Some(*offset),
            TensorOutOfBounds { start, .. } => Some(*start),
            Io { .. }
            | MissingKey { .. }
            | WrongType { .. }
            | OutOfRange { .. }
            | MissingTensor { .. } => None,
        }
    }
}
