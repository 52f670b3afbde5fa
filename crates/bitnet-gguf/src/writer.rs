//! A deterministic GGUF v3 writer.

use std::io::Write;
use std::path::Path;

use crate::reader::{GgufFile, DEFAULT_ALIGNMENT};
use crate::types::GgmlType;
use crate::value::{Array, Value};

/// Errors from building a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The tensor's data length does not match its type and dimensions.
    #[error("tensor {name:?}: {ty} with dims {dims:?} needs {expected} bytes, got {got}")]
    WrongDataSize {
        /// Tensor name.
        name: String,
        /// Its type.
        ty: GgmlType,
        /// Its dimensions.
        dims: Vec<u64>,
        /// Bytes required.
        expected: u64,
        /// Bytes supplied.
        got: u64,
    },
    /// The type cannot represent these dimensions (partial block, overflow).
    #[error("tensor {name:?}: {ty} cannot hold dims {dims:?}")]
    BadShape {
        /// Tensor name.
        name: String,
        /// Its type.
        ty: GgmlType,
        /// Its dimensions.
        dims: Vec<u64>,
    },
    /// A key or tensor name was added twice.
    #[error("duplicate {what} {name:?}")]
    Duplicate {
        /// "metadata key" or "tensor".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// [`GgufWriter::replace_tensor`] named a tensor the writer does not hold.
    #[error("no tensor {0:?} to replace")]
    MissingTensor(String),
    /// Alignment must be a non-zero power of two.
    #[error("alignment {0} is not a power of two")]
    BadAlignment(u64),
    /// Writing the output failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF v3 image: metadata and tensors in insertion order, each tensor aligned,
/// padding zero-filled, so the same inputs always give the same bytes.
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// An empty file with the default alignment (32).
    pub fn new() -> GgufWriter {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// A copy of `file` — its alignment, metadata and tensors, in order — to derive a
    /// modified file from (tests craft variants this way: one tensor in another type, …).
    ///
    /// # Errors
    /// Only for a file the reader would not have accepted (a bad alignment).
    pub fn from_file(file: &GgufFile) -> Result<GgufWriter, WriteError> {
        let mut w = GgufWriter::new().with_alignment(file.alignment)?;
        for (k, v) in file.metadata() {
            if k != "general.alignment" {
                w.add_metadata(k.clone(), v.clone())?;
            }
        }
        for t in file.tensors() {
            w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t).to_vec())?;
        }
        Ok(w)
    }

    /// Use another alignment; it is recorded as `general.alignment` when it is not 32.
    ///
    /// # Errors
    /// [`WriteError::BadAlignment`] unless `alignment` is a power of two.
    pub fn with_alignment(mut self, alignment: u64) -> Result<GgufWriter, WriteError> {
        if !alignment.is_power_of_two() || alignment > u32::MAX as u64 {
            return Err(WriteError::BadAlignment(alignment));
        }
        self.alignment = alignment;
        Ok(self)
    }

    /// Add a metadata key.
    ///
    /// # Errors
    /// [`WriteError::Duplicate`] if the key was added before.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: Value,
    ) -> Result<&mut Self, WriteError> {
        let key = key.into();
        if key == "general.alignment" || self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(WriteError::Duplicate {
                what: "metadata key",
                name: key,
            });
        }
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Add a tensor; `dims` in ggml order (row length first), `data` already encoded in `ty`.
    ///
    /// # Errors
    /// [`WriteError::BadShape`] / [`WriteError::WrongDataSize`] when `data` does not fit the
    /// shape, [`WriteError::Duplicate`] for a repeated name.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, WriteError> {
        let name = name.into();
        let expected = ty.tensor_bytes(dims).ok_or_else(|| WriteError::BadShape {
            name: name.clone(),
            ty,
            dims: dims.to_vec(),
        })?;
        if expected != data.len() as u64 {
            return Err(WriteError::WrongDataSize {
                name,
                ty,
                dims: dims.to_vec(),
                expected,
                got: data.len() as u64,
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(WriteError::Duplicate {
                what: "tensor",
                name,
            });
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// Replace the value of `key`, or add it when absent: the one-field rewrites that crafted
    /// test models are made of. Keeps the key's position, so only that field changes.
    ///
    /// # Errors
    /// [`WriteError::Duplicate`] for `general.alignment` (set with [`GgufWriter::with_alignment`]).
    pub fn set_metadata(
        &mut self,
        key: impl Into<String>,
        value: Value,
    ) -> Result<&mut Self, WriteError> {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => {
                self.add_metadata(key, value)?;
            }
        }
        Ok(self)
    }

    /// Remove `key`; its value, if it was there.
    pub fn remove_metadata(&mut self, key: &str) -> Option<Value> {
        let i = self.metadata.iter().position(|(k, _)| k == key)?;
        Some(self.metadata.remove(i).1)
    }

    /// The metadata added so far, in order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The tensor names added so far, in order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    /// Remove a tensor; whether it was there.
    pub fn remove_tensor(&mut self, name: &str) -> bool {
        let before = self.tensors.len();
        self.tensors.retain(|t| t.name != name);
        self.tensors.len() != before
    }

    /// Give a tensor another name; whether it was there.
    ///
    /// # Errors
    /// [`WriteError::Duplicate`] when `new_name` is already taken.
    pub fn rename_tensor(&mut self, name: &str, new_name: &str) -> Result<bool, WriteError> {
        if self.tensors.iter().any(|t| t.name == new_name) {
            return Err(WriteError::Duplicate {
                what: "tensor",
                name: new_name.to_string(),
            });
        }
        Ok(match self.tensors.iter_mut().find(|t| t.name == name) {
            Some(t) => {
                t.name = new_name.to_string();
                true
            }
            None => false,
        })
    }

    /// The type, dimensions and encoded bytes of a tensor, for in-place edits (a byte of a
    /// block's scale, say); the length cannot change, so the layout stays valid.
    pub fn tensor_mut(&mut self, name: &str) -> Option<(GgmlType, &[u64], &mut [u8])> {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .map(|t| (t.ty, t.dims.as_slice(), t.data.as_mut_slice()))
    }

    /// Replace a tensor's type, dimensions and data, keeping its place in the file (pass its
    /// own dimensions to retype it in place).
    ///
    /// # Errors
    /// As [`GgufWriter::add_tensor`]; [`WriteError::MissingTensor`] when there is no such
    /// tensor (the writer is then unchanged).
    pub fn replace_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, WriteError> {
        let Some(i) = self.tensors.iter().position(|t| t.name == name) else {
            return Err(WriteError::MissingTensor(name.to_string()));
        };
        let t = self.tensors.remove(i);
        if let Err(e) = self.add_tensor(name, dims, ty, data) {
            self.tensors.insert(i, t);
            return Err(e);
        }
        let new = self.tensors.pop().expect("just added");
        self.tensors.insert(i, new);
        Ok(self)
    }

    /// The complete file image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Write the image to a file (created or truncated).
    ///
    /// # Errors
    /// [`WriteError::Io`] on any I/O failure.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), WriteError> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        self.write_to(&mut f)?;
        f.flush()?;
        Ok(())
    }

    /// Stream the image to any writer.
    ///
    /// # Errors
    /// [`WriteError::Io`] on any I/O failure.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<(), WriteError> {
        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        let extra = u64::from(self.alignment != DEFAULT_ALIGNMENT);
        head.extend_from_slice(&(self.metadata.len() as u64 + extra).to_le_bytes());
        if self.alignment != DEFAULT_ALIGNMENT {
            put_string(&mut head, "general.alignment");
            put_value(&mut head, &Value::U32(self.alignment as u32));
        }
        for (k, v) in &self.metadata {
            put_string(&mut head, k);
            put_value(&mut head, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        w.write_all(&head)?;
        if self.tensors.is_empty() {
            return Ok(());
        }
        // The data section starts aligned, so padding each tensor to the alignment keeps
        // every following tensor at its recorded offset.
        let zeros = vec![0u8; self.alignment as usize];
        let pad = |len: u64| ((self.alignment - len % self.alignment) % self.alignment) as usize;
        w.write_all(&zeros[..pad(head.len() as u64)])?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            w.write_all(&zeros[..pad(t.data.len() as u64)])?;
        }
        Ok(())
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
    put_payload(out, v);
}

fn put_payload(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&x| u8::from(x))),
        Array::String(v) => v.iter().for_each(|s| put_string(out, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
    }
}
