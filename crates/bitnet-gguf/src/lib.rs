//! GGUF v2/v3 files: a validating, memory-mapped, zero-copy reader and a deterministic writer.
//!
//! Every other part of bitnet-rs — tokenizers, the engine, the C++ reference client — reads
//! models through this crate, so it is written to be the one place that distrusts the file.
//! [`GgufFile::open`] maps the file and parses the header eagerly, checking every count and
//! length against the bytes that remain *before* allocating for it, and every tensor's
//! extent against the file size; only then does anyone get to look at the contents. A
//! truncated download, a hostile header or a file with an unknown tensor type therefore
//! fails at open with a [`GgufError`] that names the problem and its byte offset, instead of
//! an allocation failure, a panic, or a C++ abort further down the line.
//!
//! Tensor data is never copied or even touched at open: [`GgufFile::tensor_data`] hands out
//! slices of the map, so opening a multi-gigabyte model costs what its header costs.
//!
//! Metadata arrays are stored typed ([`Array`]), so a 128k-entry vocabulary is one
//! `Vec<String>` that tokenizers borrow as a slice.
//!
//! ```
//! use bitnet_gguf::{GgufFile, GgufWriter, GgmlType, Value};
//!
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", Value::String("llama".into())).unwrap();
//! w.add_tensor("x", &[4], GgmlType::F32, vec![0u8; 16]).unwrap();
//! let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
//! assert_eq!(file.architecture().unwrap(), "llama");
//! assert_eq!(file.tensor("x").unwrap().size, 16);
//! ```
#![deny(missing_docs)]

mod error;
mod metadata;
mod reader;
mod types;
mod value;
mod writer;

pub use error::GgufError;
pub use metadata::{DuplicateToken, ModelHparams, TokenizerMetadata};
pub use reader::{GgufFile, GgufHeader, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
pub use types::{GgmlType, Layout};
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, WriteError};
