//! One layer's KV cache in the reference's cache types.
//!
//! Positions are stored as f32 rows of `kv_dim`, holding exactly the values the cache type can
//! represent: a row is rounded to F16 or bfloat16, or quantized to Q8_0, when it is written,
//! as ggml converts it when it stores the row (`set_rows` through the type's `from_float`), so
//! every kernel reads the values the reference reads. A Q8_0 cache keeps its blocks too, for
//! the integer K·Q product. (An F32 cache under llama.cpp's flash attention is written as F16:
//! its graph casts the cache view to F16 before the kernel, which rounds the same values the
//! same way.)

use bitnet_cpp::run::CacheType;
use bitnet_quant::{ActivationType, QuantizedActivation};

use super::kernels::{bf16r, f16r_in_place};

/// Keys and values of one layer, position-major.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    /// Keys: `kv_dim` values per cached position.
    pub keys: Vec<f32>,
    /// Values: `kv_dim` values per cached position.
    pub values: Vec<f32>,
    /// A Q8_0 K cache's `block_q8_0`s, `kv_dim / 32` per position (empty for other types).
    pub key_blocks: Vec<u8>,
}

/// Append `rows` (of `kv_dim`) as a cache of type `ty` stores them; a Q8_0 cache's blocks go
/// to `blocks` as well, when given.
fn store(
    ty: CacheType,
    rows: &[f32],
    kv_dim: usize,
    out: &mut Vec<f32>,
    mut blocks: Option<&mut Vec<u8>>,
) {
    match ty {
        CacheType::F32 => out.extend_from_slice(rows),
        CacheType::F16 => {
            let start = out.len();
            out.extend_from_slice(rows);
            f16r_in_place(&mut out[start..]);
        }
        CacheType::Bf16 => out.extend(rows.iter().map(|&v| bf16r(v))),
        CacheType::Q8_0 => {
            let mut q = QuantizedActivation::new();
            for row in rows.chunks_exact(kv_dim) {
                q.quantize(ActivationType::Q8_0, row).expect(
                    "a Q8_0 cache's rows are whole blocks (checked when the run is resolved)",
                );
                let start = out.len();
                out.resize(start + kv_dim, 0.0);
                q.dequantize(&mut out[start..]);
                if let Some(b) = blocks.as_deref_mut() {
                    q.append_q8_0_blocks(b);
                }
            }
        }
    }
}

impl LayerCache {
    /// Append the keys and values of new positions (rows of `kv_dim`), stored as `keys` and
    /// `values` caches store them.
    pub fn append(
        &mut self,
        k: &[f32],
        v: &[f32],
        kv_dim: usize,
        keys: CacheType,
        values: CacheType,
    ) {
        store(keys, k, kv_dim, &mut self.keys, Some(&mut self.key_blocks));
        store(values, v, kv_dim, &mut self.values, None);
    }

    /// Forget every position.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.key_blocks.clear();
    }
}
