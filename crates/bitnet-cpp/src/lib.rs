//! The C++ references of bitnet-rs — upstream llama.cpp and Microsoft's bitnet.cpp — as
//! separate processes behind one protocol.
//!
//! Why processes: the crates that vendor the two libraries both declare `links = "llama"` and
//! export the same C symbols, so cargo refuses them in one dependency graph; and a C++
//! `GGML_ASSERT` aborts its whole process, which a cross-validation tool must report, not die
//! of. Each reference is a small server in its own cargo package (`cpp/llama-ref`,
//! `cpp/bitnet-ref`) that depends on this crate with default features off, for
//! [`protocol`] only. The client half ([`Session`], feature `client`, on by default) starts
//! the right server, validates every model with `bitnet-gguf` before a C++ loader sees it,
//! and turns every failure — a refused model, a crashed or hung process, a protocol mismatch —
//! into a typed [`CppError`].
#![deny(missing_docs)]

pub mod build_info;
pub mod protocol;
pub mod run;

pub use run::{CacheType, EffectiveConfig, FlashAttn, RunConfig};

#[cfg(feature = "client")]
mod session;

#[cfg(feature = "client")]
pub use session::*;
