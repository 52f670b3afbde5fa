//! The C++ references of bitnet-rs — upstream llama.cpp and Microsoft's bitnet.cpp — as
//! separate processes behind one protocol.
//!
//! Why processes: the crates that vendor the two libraries both declare `links = "llama"` and
//! export the same C symbols, so cargo refuses them in one dependency graph; and a C++
//! `GGML_ASSERT` aborts its whole process, which a cross-validation tool must report, not die
//! of. Each reference is a small server in its own cargo package (`cpp/llama-ref`,
//! `cpp/bitnet-ref`) that depends on this crate with default features off, for
//! [`protocol`], [`run`] (the run configuration both sides share), [`quantize_log`] and (in its build script) [`build_facts`] only. The client
//! half ([`Session`], feature `client`, on by default) starts the right server, validates
//! every model with `bitnet-gguf` before a C++ loader sees it, and turns every failure — a
//! refused model, a crashed or hung process, a protocol mismatch — into a typed
//! [`CppError`].
//!
//! Besides evaluation, the llama.cpp reference runs llama.cpp's own quantizer
//! ([`quantize::quantize`]), so test models have exactly the tensor mixes a user's
//! `llama-quantize` produces; feature `test-models` builds the project's set of them
//! (`test_models`).
#![deny(missing_docs)]

pub mod build_facts;
pub mod protocol;
pub mod quantize_log;
pub mod run;

pub use run::{CacheType, EffectiveConfig, FlashAttn, RunConfig};

#[cfg(feature = "client")]
mod backend;
#[cfg(feature = "client")]
mod binaries;
#[cfg(feature = "client")]
mod capture_stream;
#[cfg(feature = "client")]
pub mod quantize;
#[cfg(feature = "client")]
mod session;
#[cfg(feature = "client")]
mod stderr_log;
#[cfg(feature = "test-models")]
pub mod test_models;

#[cfg(feature = "client")]
pub use backend::{Backend, BackendChoice};
#[cfg(feature = "client")]
pub use binaries::reference_binary;
#[cfg(feature = "client")]
pub use capture_stream::CaptureStream;
#[cfg(feature = "client")]
pub use session::*;
#[cfg(feature = "client")]
pub use stderr_log::cpp_failure_lines;
