//! ggml's CPU flash attention (`ggml_compute_forward_flash_attn_ext_f16`), as the two
//! references have it. One fused kernel per query head, an online softmax over the visible
//! cells; llama.cpp (llama-cpp-sys-2 0.1.161, `ggml-cpu/ops.cpp`) chooses one of three paths:
//! - **one chunk** (`..._one_chunk`): Q converted to K's vector type, `kq_vec_dot` per cell,
//!   libm's `expf` for the running maximum, the weighted sum of V kept in F16 for an F16 V
//!   cache (`ggml_vec_mad_f16` / `ggml_vec_scale_f16`: every update rounded to F16) and in f32
//!   otherwise; masked cells are skipped;
//! - **tiled** (`..._tiled`, micro-batches of ≥ 64 queries, K and V both F16 after the graph's
//!   cast): f32 Q against K converted to f32 in tiles of 64 cells, a small GEMM (one chain of
//!   fused multiply-adds per score), ggml's vector softmax per tile, f32 accumulators;
//! - **split KV** (one query token, K and V F16, a view of ≥ 512 cells): the cells cut into one
//!   chunk per thread, each chunk run as *one chunk*, the partial results merged in chunk order
//!   (`ggml_flash_attn_ext_reduce_partials`).
//!
//! bitnet.cpp's older ggml has only the first path (its kernels at the host's vector width).
//! The fused multiply-adds below are the ones GCC emits in the pinned builds, read from the
//! disassembly of the reference binaries: llama.cpp contracts `S = S·ms + vs` and the
//! partials' merge; bitnet.cpp's build splits `S = S·ms + vs` over the two branches of the
//! maximum test and rounds `S·ms` before adding.

use bitnet_cpp::run::CacheType;

use super::kernels::{dot, f16r_in_place, soft_max, Dot};
use super::{AttentionPlan, AttentionScratch, Head, LayerCache, Scorer};
use crate::numerics::Numerics;

/// llama.cpp's tile sizes (`GGML_FA_TILE_Q`, `GGML_FA_TILE_KV`).
const TILE_Q: usize = 64;
const TILE_KV: usize = 64;
/// The view length from which llama.cpp splits one token's cells across threads.
const SPLIT_KV_MIN: usize = 512;

/// Which flash-attention path a micro-batch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// Every query head over its visible cells in one pass.
    OneChunk,
    /// Queries in tiles, cells in tiles of 64.
    Tiled,
    /// One query token; the view (`cells` long) cut into one chunk per thread.
    SplitKv {
        /// The KV view's length.
        cells: usize,
    },
}

/// The flash-attention path for a micro-batch of `n` tokens after which `used` positions are
/// cached, or `None` without flash attention.
pub(super) fn path(plan: &AttentionPlan, n: usize, used: usize) -> Option<Path> {
    if !plan.flash_attn {
        return None;
    }
    if plan.numerics != Numerics::LlamaCpp {
        return Some(Path::OneChunk);
    }
    let both_f16 = plan.keys == CacheType::F16 && plan.values == CacheType::F16;
    // llama.cpp's KV view: the used cells padded to 256 (`llama_kv_cache::get_n_kv`).
    let cells = used.div_ceil(256).max(1) * 256;
    Some(if both_f16 && n == 1 && cells >= SPLIT_KV_MIN {
        Path::SplitKv { cells }
    } else if both_f16 && n >= TILE_Q {
        Path::Tiled
    } else {
        Path::OneChunk
    })
}

/// One query head's attention on `path`, into `out`.
#[inline(always)]
pub(super) fn attend_head(
    plan: &AttentionPlan,
    path: Path,
    head: &Head,
    cache: &LayerCache,
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    match path {
        Path::OneChunk => {
            let kernel =
                OneChunk::new(plan, head, cache, &mut scratch.query, &mut scratch.query_q8);
            let (_, sum) = kernel.run(cache, 0..head.last + 1, out);
            normalise(out, sum);
        }
        Path::Tiled => tiled(plan, head, cache, scratch, out),
        Path::SplitKv { cells } => split_kv(plan, cells, head, cache, scratch, out),
    }
}

/// `out *= 1/S` (ggml multiplies by the inverse; a zero sum gives zeros).
#[inline(always)]
fn normalise(out: &mut [f32], sum: f32) {
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|v| *v *= inv);
}

/// The one-chunk kernel for one query head: its converted query and its kernels.
struct OneChunk<'a> {
    plan: &'a AttentionPlan,
    head: &'a Head<'a>,
    scorer: Scorer<'a>,
    /// Whether the weighted sum of V is kept in F16 (an F16 V cache).
    f16_sum: bool,
    /// Whether `S = S·ms + vs` is one fused multiply-add (llama.cpp's build).
    fused_sum: bool,
}

impl<'a> OneChunk<'a> {
    #[inline(always)]
    fn new(
        plan: &'a AttentionPlan,
        head: &'a Head<'a>,
        cache: &'a LayerCache,
        query: &'a mut Vec<f32>,
        query_q8: &'a mut bitnet_quant::QuantizedActivation,
    ) -> Self {
        // Q goes to K's `vec_dot_type`: F16 for an F16 cache (F32 was cast to F16 by the
        // graph), BF16, or Q8_0 blocks.
        let kq = match plan.keys {
            CacheType::Bf16 => Dot::VecBf16,
            _ => Dot::VecF16(plan.numerics.width()),
        };
        OneChunk {
            plan,
            head,
            scorer: Scorer::new(plan, kq, head, cache, query, query_q8),
            f16_sum: plan.values == CacheType::F16,
            fused_sum: plan.numerics == Numerics::LlamaCpp,
        }
    }

    /// The online softmax over `cells` (all visible): writes the unnormalised weighted sum of
    /// V to `acc` and returns the running maximum and the sum of weights.
    #[inline(always)]
    fn run(
        &self,
        cache: &LayerCache,
        cells: std::ops::Range<usize>,
        acc: &mut [f32],
    ) -> (f32, f32) {
        let s = &self.plan.shape;
        let scale = s.scale();
        acc.fill(0.0);
        let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
        for j in cells {
            let score = self.scorer.score(self.head, cache, s, j) * scale;
            let (mut ms, mut vs) = (1f32, 1f32);
            if score > m {
                // A new maximum: rescale what was summed so far.
                ms = (m - score).exp();
                m = score;
                acc.iter_mut().for_each(|a| *a *= ms);
                if self.f16_sum {
                    f16r_in_place(acc);
                }
            } else {
                vs = (score - m).exp();
            }
            let v = self.head.value(cache, s, j);
            for (a, &x) in acc.iter_mut().zip(v) {
                *a = x.mul_add(vs, *a);
            }
            if self.f16_sum {
                // Every update rounded to F16, as `ggml_vec_mad_f16` stores it.
                f16r_in_place(acc);
            }
            sum = if self.fused_sum {
                sum.mul_add(ms, vs)
            } else {
                sum * ms + vs
            };
        }
        (m, sum)
    }
}

/// llama.cpp's tiled path for one query row: tiles of 64 cells from cell 0; a tile with no
/// visible cell changes nothing.
#[inline(always)]
fn tiled(
    plan: &AttentionPlan,
    head: &Head,
    cache: &LayerCache,
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    let s = &plan.shape;
    let scale = s.scale();
    let kq = &mut scratch.scores;
    out.fill(0.0);
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for tile in (0..=head.last).step_by(TILE_KV) {
        kq.clear();
        kq.resize(TILE_KV, f32::NEG_INFINITY);
        let visible = (head.last + 1 - tile).min(TILE_KV);
        sequential_scores(
            head.q,
            |j| head.key(cache, s, tile + j),
            scale,
            &mut kq[..visible],
        );
        let tile_max = kq.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let m_new = m.max(tile_max);
        if m_new > m {
            let ms = (m - m_new).exp();
            out.iter_mut().for_each(|a| *a *= ms);
            sum *= ms;
        }
        m = m_new;
        sum = (sum as f64 + soft_max::<8>(kq, m_new)) as f32;
        for (j, &p) in (tile..=head.last.min(tile + TILE_KV - 1)).zip(kq.iter()) {
            for (a, &x) in out.iter_mut().zip(head.value(cache, s, j)) {
                *a = x.mul_add(p, *a);
            }
        }
    }
    normalise(out, sum);
}

/// `out[j] = (q · key(j)) · scale`, each dot product one chain of fused multiply-adds in
/// element order ([`Dot::Sequential`], llama.cpp's `simd_gemm`): eight cells side by side, so
/// their independent chains overlap instead of each waiting on its own previous step.
#[inline(always)]
fn sequential_scores<'k>(q: &[f32], key: impl Fn(usize) -> &'k [f32], scale: f32, out: &mut [f32]) {
    const CELLS: usize = 8;
    let done = out.len() / CELLS * CELLS;
    let mut groups = out.chunks_exact_mut(CELLS);
    for (g, scores) in groups.by_ref().enumerate() {
        let keys: [&[f32]; CELLS] = std::array::from_fn(|c| &key(g * CELLS + c)[..q.len()]);
        let mut acc = [0f32; CELLS];
        for (d, &x) in q.iter().enumerate() {
            for (a, k) in acc.iter_mut().zip(&keys) {
                *a = x.mul_add(k[d], *a);
            }
        }
        for (o, a) in scores.iter_mut().zip(acc) {
            *o = a * scale;
        }
    }
    for (j, o) in groups.into_remainder().iter_mut().enumerate() {
        *o = dot(Dot::Sequential, q, key(done + j)) * scale;
    }
}

/// llama.cpp's split-KV path for one query token: one chunk of the `cells`-long view per
/// thread, each run as one chunk, merged in chunk order.
#[inline(always)]
fn split_kv(
    plan: &AttentionPlan,
    cells: usize,
    head: &Head,
    cache: &LayerCache,
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    let threads = plan.threads.max(1);
    let chunk = cells.div_ceil(threads);
    let dim = out.len();
    let AttentionScratch {
        query,
        query_q8,
        partials,
        ..
    } = scratch;
    let kernel = OneChunk::new(plan, head, cache, query, query_q8);
    partials.clear();
    partials.resize(dim, 0.0);
    out.fill(0.0);
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for c in 0..threads {
        let start = c * chunk;
        let end = ((c + 1) * chunk).min(cells).min(head.last + 1);
        if start >= end {
            // Every cell of the chunk is masked (or beyond the view): S = 0, skipped.
            continue;
        }
        let (m_c, sum_c) = kernel.run(cache, start..end, partials);
        let m_new = m.max(m_c);
        let scale_old = (m - m_new).exp();
        let scale_new = (m_c - m_new).exp();
        for (a, &p) in out.iter_mut().zip(partials.iter()) {
            *a = a.mul_add(scale_old, p * scale_new);
        }
        sum = sum.mul_add(scale_old, sum_c * scale_new);
        m = m_new;
    }
    normalise(out, sum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::AttentionShape;
    use bitnet_quant::VectorWidth;

    fn plan(flash_attn: bool, numerics: Numerics) -> AttentionPlan {
        AttentionPlan {
            shape: AttentionShape {
                n_heads: 2,
                n_kv_heads: 1,
                head_dim: 64,
            },
            numerics,
            keys: CacheType::F16,
            values: CacheType::F16,
            flash_attn,
            threads: 2,
        }
    }

    #[test]
    fn paths_follow_llama_cpps_conditions() {
        let p = plan(true, Numerics::LlamaCpp);
        assert_eq!(path(&plan(false, Numerics::LlamaCpp), 1, 10), None);
        assert_eq!(path(&p, 1, 10), Some(Path::OneChunk));
        assert_eq!(path(&p, 63, 100), Some(Path::OneChunk));
        assert_eq!(path(&p, 64, 100), Some(Path::Tiled));
        assert_eq!(path(&p, 1, 256), Some(Path::OneChunk));
        assert_eq!(path(&p, 1, 257), Some(Path::SplitKv { cells: 512 }));
        let bf16 = AttentionPlan {
            keys: CacheType::Bf16,
            ..p
        };
        assert_eq!(path(&bf16, 1, 600), Some(Path::OneChunk));
        assert_eq!(path(&bf16, 100, 600), Some(Path::OneChunk));
        let old = plan(true, Numerics::BitnetCpp(VectorWidth::Avx512));
        assert_eq!(path(&old, 100, 600), Some(Path::OneChunk));
    }
}
