//! Parsing and validating a GGUF header from bytes, and the memory-mapped file.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::GgufError;
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};

/// `GGUF` as the little-endian u32 at offset 0.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// No real file nests arrays; a hostile one could recurse until the stack overflows.
const MAX_NESTING: usize = 8;
/// Smallest possible tensor info: empty name (8), n_dims (4), no dims, type (4), offset (8).
const MIN_TENSOR_INFO: u64 = 24;
/// Smallest possible key/value: empty key (8), type (4), one-byte value.
const MIN_KV: u64 = 13;

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes, computed from `dims` and `ty`.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed and validated header: metadata, tensor infos and where the data starts.
///
/// Invariant: every tensor's bytes lie inside the buffer it was parsed from, at an aligned
/// offset, without overlapping another tensor.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// GGUF version (2 or 3).
    pub version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of the data section and of each tensor.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Size of the buffer the header was validated against.
    pub file_size: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what,
                offset: self.offset(),
                needed: n,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count whose elements each occupy at least `min_size` bytes after it.
    fn count(&mut self, what: &'static str, min_size: u64) -> Result<u64, GgufError> {
        let offset = self.offset();
        let count = self.u64(what)?;
        let max = self.remaining() / min_size;
        if count > max {
            return Err(GgufError::CountTooLarge {
                what,
                count,
                offset,
                available: self.remaining(),
                max,
            });
        }
        Ok(count)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let offset = self.offset();
        let len = self.u64("string length")?;
        if len > self.remaining() {
            return Err(GgufError::StringTooLong {
                len,
                offset,
                available: self.remaining(),
            });
        }
        let start = self.offset();
        let bytes = self.take(len, "string")?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| GgufError::InvalidUtf8 { offset: start })
    }

    fn value_type(&mut self) -> Result<ValueType, GgufError> {
        let offset = self.offset();
        let id = self.u32("value type")?;
        ValueType::from_id(id).ok_or(GgufError::UnknownValueType {
            type_id: id,
            offset,
        })
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>("u8")?[0]),
            ValueType::I8 => Value::I8(self.array::<1>("i8")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            ValueType::Bool => Value::Bool(self.array::<1>("bool")?[0] != 0),
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => Value::Array(self.array_value(depth + 1)?),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
        })
    }

    fn array_value(&mut self, depth: usize) -> Result<Array, GgufError> {
        let start = self.offset();
        if depth > MAX_NESTING {
            return Err(GgufError::NestingTooDeep {
                max: MAX_NESTING,
                offset: start,
            });
        }
        let elem = self.value_type()?;
        let n = self.count("array length", elem.min_encoded_size())? as usize;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const W: usize = std::mem::size_of::<$t>();
                let bytes = self.take((n * W) as u64, "array data")?;
                Array::$variant(
                    bytes
                        .chunks_exact(W)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of W bytes")))
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n as u64, "array data")?.to_vec()),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => Array::Bool(
                self.take(n as u64, "array data")?
                    .iter()
                    .map(|&b| b != 0)
                    .collect(),
            ),
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string()?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

fn align_up(x: u64, alignment: u64) -> Option<u64> {
    x.checked_add(alignment - 1)
        .map(|v| v / alignment * alignment)
}

impl GgufHeader {
    /// Parse and validate the header of a GGUF image held in `bytes`.
    ///
    /// Never trusts a length or count before checking it against the bytes that remain, so a
    /// hostile header cannot cause a huge allocation, and never panics on any input.
    ///
    /// # Errors
    /// A [`GgufError`] naming the first problem and its byte offset.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
        let mut c = Cursor { bytes, pos: 0 };
        if bytes.len() < 4 || bytes[..4] != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                found: bytes[..bytes.len().min(4)].to_vec(),
            });
        }
        c.pos = 4;
        let version = c.u32("version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(GgufError::UnsupportedVersion {
                    version,
                    hint: "; GGUF v1 files predate 64-bit counts: convert with a current llama.cpp",
                })
            }
            _ => {
                return Err(GgufError::UnsupportedVersion {
                    version,
                    hint: "; is the file corrupt, or newer than this tool?",
                })
            }
        }
        let n_tensors = c.count("tensor count", MIN_TENSOR_INFO)?;
        let n_kv = c.count("metadata key/value count", MIN_KV)?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_index = HashMap::with_capacity(n_kv as usize);
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..n_kv {
            let kv_offset = c.offset();
            let key = c.string()?;
            let ty = c.value_type()?;
            let value = c.value(ty, 0)?;
            if key == "general.alignment" {
                alignment = match value.as_i128() {
                    Some(a) if a > 0 && a <= u32::MAX as i128 && (a as u64).is_power_of_two() => {
                        a as u64
                    }
                    _ => {
                        return Err(GgufError::BadAlignment {
                            value: format!("{value:?}"),
                            offset: kv_offset,
                        })
                    }
                };
            }
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey {
                    key,
                    offset: kv_offset,
                });
            }
            metadata.push((key, value));
        }

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        let mut info_offsets = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let info_offset = c.offset();
            let name = c.string()?;
            let n_dims = c.u32("tensor dimension count")?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims {
                    name,
                    n_dims,
                    offset: info_offset,
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64("tensor dimension")?);
            }
            let type_offset = c.offset();
            let type_id = c.u32("tensor type")?;
            let data_offset = c.u64("tensor data offset")?;
            // ggml stores dimensions as int64: anything above i64::MAX is corrupt too.
            let overflow = dims.iter().any(|&d| d > i64::MAX as u64)
                || dims
                    .iter()
                    .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                    .is_none_or(|n| n > i64::MAX as u64);
            if overflow {
                return Err(GgufError::DimensionOverflow {
                    name,
                    dims,
                    offset: info_offset,
                });
            }
            let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
                name: name.clone(),
                type_id,
                offset: type_offset,
            })?;
            let ne0 = dims.first().copied().unwrap_or(1);
            let size = ty
                .tensor_bytes(&dims)
                .ok_or_else(|| GgufError::PartialBlock {
                    name: name.clone(),
                    ty,
                    ne0,
                    block_size: if ty == GgmlType::I2_S {
                        128
                    } else {
                        ty.block_size()
                    },
                    offset: info_offset,
                })?;
            if data_offset % alignment != 0 {
                return Err(GgufError::MisalignedTensor {
                    name,
                    data_offset,
                    alignment,
                    offset: info_offset,
                });
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor {
                    name,
                    offset: info_offset,
                });
            }
            info_offsets.push(info_offset);
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset: data_offset,
                size,
            });
        }

        let file_size = bytes.len() as u64;
        // With no tensors the data section may be absent entirely (vocabulary-only files).
        let data_offset = align_up(c.offset(), alignment).unwrap_or(u64::MAX);
        for t in &tensors {
            let start = data_offset.saturating_add(t.offset);
            let end = start.saturating_add(t.size);
            if end > file_size {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name.clone(),
                    start,
                    end,
                    file_size,
                    missing: end - file_size,
                });
            }
        }
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| (tensors[i].offset, tensors[i].size));
        for pair in order.windows(2) {
            let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
            if a.size > 0 && b.size > 0 && a.offset + a.size > b.offset {
                return Err(GgufError::OverlappingTensors {
                    first: a.name.clone(),
                    second: b.name.clone(),
                    offset: data_offset + b.offset,
                });
            }
        }

        Ok(GgufHeader {
            version,
            metadata,
            key_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
            file_size,
        })
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor info by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A validated GGUF file: the header plus zero-copy access to tensor data.
///
/// Opening maps the file and parses only the header; tensor bytes are not read until a
/// caller asks for them.
pub struct GgufFile {
    path: Option<PathBuf>,
    backing: Backing,
    header: GgufHeader,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("n_kv", &self.header.metadata.len())
            .field("n_tensors", &self.header.tensors.len())
            .finish()
    }
}

/// The header's accessors (metadata, tensor infos) are available directly on the file.
impl std::ops::Deref for GgufFile {
    type Target = GgufHeader;

    fn deref(&self) -> &GgufHeader {
        &self.header
    }
}

impl GgufFile {
    /// Map and validate a file.
    ///
    /// # Errors
    /// [`GgufError::Io`] when the file cannot be opened or mapped; otherwise the first
    /// structural problem found by [`GgufHeader::parse`].
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a directory",
            )));
        }
        // SAFETY: the map is read-only. If another process truncates the file while it is
        // mapped, reads may fault; that is the documented hazard of any mmap-based loader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let header = GgufHeader::parse(&mmap)?;
        Ok(GgufFile {
            path: Some(path.to_path_buf()),
            backing: Backing::Mmap(mmap),
            header,
        })
    }

    /// Validate an in-memory image (tests, fuzzing, generated files).
    ///
    /// # Errors
    /// As [`GgufHeader::parse`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let header = GgufHeader::parse(&bytes)?;
        Ok(GgufFile {
            path: None,
            backing: Backing::Owned(bytes),
            header,
        })
    }

    /// The path this file was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The validated header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.header.file_size
    }

    /// The bytes of a tensor, borrowed from the map (bounds were checked at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.header.data_offset + info.offset) as usize;
        &self.bytes()[start..start + info.size as usize]
    }

    /// The bytes of a tensor by name.
    ///
    /// # Errors
    /// [`GgufError::MissingTensor`] when no tensor has that name.
    pub fn tensor_data_by_name(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_string(),
        })?;
        Ok((info, self.tensor_data(info)))
    }
}
