//! Causal grouped-query attention, computed the way each C++ reference computes it for the
//! configured KV cache types and flash-attention setting: the same f32 operations on the same
//! values in the same order, so the engine reproduces the reference's rounding and not just
//! its mathematics.
//!
//! Without flash attention ggml builds `softmax(K·Q·scale + mask)` then `V·weights` from two
//! matrix products, whose kernels depend on the cache type (Q is converted to K's type, the
//! weights to V's) and on the micro-batch: tinyBLAS for several tokens, `vec_dot` for one. With
//! flash attention it runs one fused kernel (`flash.rs`) with an online softmax. The two
//! references differ besides:
//! - upstream llama.cpp (as pinned, built for AVX2 whatever the host) uses 8-lane kernels;
//! - Microsoft's bitnet.cpp is an older ggml that `bitnet-llm-sys` compiles with
//!   `-march=native`: its kernels are as wide as the host's vectors (16 lanes with AVX-512),
//!   its tinyBLAS takes f32 attention weights, and its K·Q product with an F16 K cache never
//!   reaches tinyBLAS (`vec_dot_f16` for a batch too).

mod cache;
mod flash;
pub mod kernels;
pub mod rotation;

pub use bitnet_cpp::run::CacheType;
pub use cache::LayerCache;

use bitnet_gguf::GgmlType;
use bitnet_quant::{ActivationType, QuantizedActivation, QuantizedMatrix, VectorWidth};

use rayon::prelude::*;

use crate::numerics::Numerics;
use kernels::{bf16r, dot, f16r_in_place, finish, lanes_and_head, reduce, soft_max, Dot};

/// Head layout of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention: `n_heads` is a multiple).
    pub n_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
}

impl AttentionShape {
    fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Everything that decides how a layer's attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionPlan {
    /// Head layout.
    pub shape: AttentionShape,
    /// Whose kernels.
    pub numerics: Numerics,
    /// The K cache as the kernels read it.
    pub keys: CacheType,
    /// The V cache as the kernels read it.
    pub values: CacheType,
    /// Whether the fused flash-attention kernel runs.
    pub flash_attn: bool,
    /// The reference's thread count (llama.cpp's flash attention for one token over ≥ 512
    /// cells gives each thread one chunk of the cells).
    pub threads: usize,
}

/// What a caller may ask of [`attend`] besides the heads' outputs.
#[derive(Debug, Default)]
pub struct AttendExtras<'a> {
    /// When given, receives the attention weights (the softmax, before any conversion to V's
    /// type): position `t`'s head `h` weight of cell `j` at `(t × n_heads + h) × stride + j`,
    /// where `stride = probs.len() / (n × n_heads)`; cells a position does not see are left as
    /// they are. Flash attention never materializes the weights (ggml has no `kq_soft_max`
    /// tensor then), so with flash attention on nothing is written.
    pub probs: Option<&'a mut [f32]>,
    /// Cells each position sees beyond its own (0 under the causal mask; a planted fault
    /// widens it in tests), capped at the cache.
    pub extra_visible: usize,
}

/// Reusable buffers for [`attend`].
#[derive(Debug, Default)]
pub struct AttentionScratch {
    scores: Vec<f32>,
    acc: Vec<f32>,
    query: Vec<f32>,
    query_q8: QuantizedActivation,
    partials: Vec<f32>,
}

/// Append the keys `k` and values `v` of `n` new positions `pos0..pos0 + n` to `cache` and
/// attend with their queries `q` (rows of `n_heads × head_dim`), into `out`: what ggml's graph
/// does from the RoPE'd Q, K and V of a micro-batch to the heads' outputs (llama.cpp's
/// `kqv_out`), llama.cpp's Hadamard rotation for quantized caches included ([`rotation`]).
/// `q`, `k` and `v` are rotated in place when the plan says so; with a rotated V cache `out`
/// is still rotated — [`unrotate_output`] finishes it, as llama.cpp does after naming
/// `kqv_out`. `extras` as in [`attend`].
#[allow(clippy::too_many_arguments)]
pub fn append_and_attend(
    plan: &AttentionPlan,
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
    cache: &mut LayerCache,
    pos0: usize,
    scratch: &mut AttentionScratch,
    extras: AttendExtras<'_>,
    out: &mut [f32],
) {
    let (rot_k, rot_v) = rotation::sizes(plan);
    if let Some(n) = rot_k {
        rotation::fwht(q, n);
        rotation::fwht(k, n);
    }
    if let Some(n) = rot_v {
        rotation::fwht(v, n);
    }
    cache.append(k, v, plan.shape.kv_dim(), plan.keys, plan.values);
    attend(plan, q, cache, pos0, scratch, extras, out);
}

/// Undo a quantized V cache's rotation on the heads' outputs of [`append_and_attend`]
/// (nothing to do for other caches).
pub fn unrotate_output(plan: &AttentionPlan, out: &mut [f32]) {
    if let (_, Some(n)) = rotation::sizes(plan) {
        rotation::fwht(out, n);
    }
}

/// Attention of `n` new positions `pos0..pos0 + n` (their queries `q`, `n` rows of
/// `n_heads × head_dim`) over a cache that already holds them; writes the heads' outputs to
/// `out` (same layout as `q`). `n` is one micro-batch: the reference picks its kernels by it.
/// `extras` asks for the attention weights too ([`AttendExtras`]).
///
/// Every (position, head) pair is computed on its own — the same operations in the same
/// order whichever thread takes it — so the pairs are spread over the thread pool when there
/// is enough work, and run here with `scratch` when there is not.
pub fn attend(
    plan: &AttentionPlan,
    q: &[f32],
    cache: &LayerCache,
    pos0: usize,
    scratch: &mut AttentionScratch,
    extras: AttendExtras<'_>,
    out: &mut [f32],
) {
    let s = plan.shape;
    let hd = s.head_dim;
    let dim = s.n_heads * hd;
    let n = q.len() / dim;
    let group = s.n_heads / s.n_kv_heads;
    let cached = pos0 + n;
    let path = flash::path(plan, n, cached);
    let AttendExtras {
        probs,
        extra_visible,
    } = extras;
    let one =
        |i: usize, out: &mut [f32], weights: Option<&mut [f32]>, sc: &mut AttentionScratch| {
            let (t, h) = (i / s.n_heads, i % s.n_heads);
            let head = Head {
                q: &q[i * hd..(i + 1) * hd],
                kvh: h / group,
                last: (pos0 + t + extra_visible).min(cached - 1),
            };
            let job = HeadJob {
                plan,
                path,
                n,
                head,
                cache,
            };
            attend_head(&job, sc, weights, out);
        };
    let pairs = n * s.n_heads;
    // A pair costs about `cached × head_dim` multiply-adds twice; tasks get at least ~64k of
    // them, so a single token over a short cache stays on this thread.
    let per_task = ((1 << 16) / (cached * hd).max(1)).max(1);
    let stride = probs.as_deref().map_or(0, |p| p.len() / pairs.max(1));
    let serial = pairs <= per_task || rayon::current_num_threads() == 1;
    match (probs.filter(|_| stride > 0), serial) {
        (probs, true) => {
            let mut rows = probs.map(|p| p.chunks_mut(stride));
            for (i, o) in out.chunks_mut(hd).enumerate() {
                one(i, o, rows.as_mut().and_then(Iterator::next), scratch);
            }
        }
        (Some(p), false) => out
            .par_chunks_mut(hd)
            .zip(p.par_chunks_mut(stride))
            .enumerate()
            .with_min_len(per_task)
            .for_each_init(AttentionScratch::default, |sc, (i, (o, w))| {
                one(i, o, Some(w), sc)
            }),
        (None, false) => out
            .par_chunks_mut(hd)
            .enumerate()
            .with_min_len(per_task)
            .for_each_init(AttentionScratch::default, |sc, (i, o)| one(i, o, None, sc)),
    }
}

/// One query head of one position, with what decides how it is computed.
struct HeadJob<'a> {
    plan: &'a AttentionPlan,
    /// The flash-attention path, `None` without flash attention.
    path: Option<flash::Path>,
    /// The micro-batch size (the reference picks its kernels by it).
    n: usize,
    head: Head<'a>,
    cache: &'a LayerCache,
}

/// `job`'s head into `out`; `weights` as in [`non_flash`].
fn attend_head(
    job: &HeadJob,
    scratch: &mut AttentionScratch,
    weights: Option<&mut [f32]>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; the body is the same code compiled with hardware
        // fused multiply-adds (vectorized where independent) instead of libm's `fmaf`:
        // identical results, each correctly rounded.
        unsafe { attend_head_fma(job, scratch, weights, out) };
        return;
    }
    attend_head_impl(job, scratch, weights, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_head_fma(
    job: &HeadJob,
    scratch: &mut AttentionScratch,
    weights: Option<&mut [f32]>,
    out: &mut [f32],
) {
    attend_head_impl(job, scratch, weights, out);
}

// Everything below is `inline(always)` so that it is compiled into `attend_head_fma` with
// hardware fused multiply-adds rather than as separate functions calling libm's `fmaf`.
#[inline(always)]
fn attend_head_impl(
    job: &HeadJob,
    scratch: &mut AttentionScratch,
    weights: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let HeadJob {
        plan,
        path,
        n,
        head,
        cache,
    } = job;
    match *path {
        None => non_flash(plan, *n, head, cache, scratch, weights, out),
        Some(path) => flash::attend_head(plan, path, head, cache, scratch, out),
    }
}

/// One query head of one position.
struct Head<'a> {
    /// Its query (f32, as RoPE left it).
    q: &'a [f32],
    /// The KV head it reads.
    kvh: usize,
    /// The last cell it sees, `0..=last` (its own position under the causal mask).
    last: usize,
}

impl Head<'_> {
    fn key<'c>(&self, cache: &'c LayerCache, s: &AttentionShape, j: usize) -> &'c [f32] {
        &cache.keys[j * s.kv_dim() + self.kvh * s.head_dim..][..s.head_dim]
    }

    fn value<'c>(&self, cache: &'c LayerCache, s: &AttentionShape, j: usize) -> &'c [f32] {
        &cache.values[j * s.kv_dim() + self.kvh * s.head_dim..][..s.head_dim]
    }
}

/// `x` converted to a float cache type's vector type, as ggml converts the other operand of a
/// product with that type (Q for K, the attention weights for V).
#[inline(always)]
fn convert_to(ty: CacheType, x: &[f32], out: &mut Vec<f32>) {
    out.clear();
    match ty {
        CacheType::F32 => out.extend_from_slice(x),
        CacheType::F16 => {
            out.extend_from_slice(x);
            f16r_in_place(out);
        }
        CacheType::Bf16 => out.extend(x.iter().map(|&v| bf16r(v))),
        CacheType::Q8_0 => unreachable!("a Q8_0 operand is quantized (`Scorer`), not rounded"),
    }
}

/// K·Q for one query head against the cached keys, in a ggml kernel's way: a float dot
/// product on Q converted to K's type, or for a Q8_0 K cache the integer `vec_dot_q8_0_q8_0`
/// on Q quantized with ggml's Q8_0 activation quantizer.
enum Scorer<'a> {
    Float {
        dot: Dot,
        query: &'a [f32],
    },
    Q8_0 {
        keys: QuantizedMatrix<'a>,
        query: &'a QuantizedActivation,
    },
}

impl<'a> Scorer<'a> {
    /// The scorer for `head` with K·Q kernel `dot` (for float K types).
    #[inline(always)]
    fn new(
        plan: &AttentionPlan,
        dot: Dot,
        head: &Head,
        cache: &'a LayerCache,
        query: &'a mut Vec<f32>,
        query_q8: &'a mut QuantizedActivation,
    ) -> Scorer<'a> {
        let s = &plan.shape;
        if plan.keys == CacheType::Q8_0 {
            query_q8
                .quantize(ActivationType::Q8_0, head.q)
                .expect("Q8_0 heads are whole blocks (checked when the run is resolved)");
            let rows = cache.keys.len() / s.head_dim;
            let keys = QuantizedMatrix::new(GgmlType::Q8_0, &cache.key_blocks, rows, s.head_dim)
                .expect("the Q8_0 cache holds whole blocks for every cached head");
            Scorer::Q8_0 {
                keys,
                query: query_q8,
            }
        } else {
            convert_to(plan.keys, head.q, query);
            Scorer::Float { dot, query }
        }
    }

    /// The unscaled score of cell `j`.
    #[inline(always)]
    fn score(&self, head: &Head, cache: &LayerCache, s: &AttentionShape, j: usize) -> f32 {
        match self {
            Scorer::Float { dot: d, query } => dot(*d, head.key(cache, s, j), query),
            Scorer::Q8_0 { keys, query } => keys.dot_row(j * s.n_kv_heads + head.kvh, query),
        }
    }
}

/// ggml's non-flash graph for one head: `kq = K·Q` (Q converted to K's type), `softmax(kq ·
/// scale + mask)` over the cache view padded to 32 cells, then `V·weights` (weights converted
/// to V's type). `n` is the micro-batch size. `weights`, when given, receives the softmax
/// (ggml's `kq_soft_max`) of the cells the head sees.
#[inline(always)]
fn non_flash(
    plan: &AttentionPlan,
    n: usize,
    head: &Head,
    cache: &LayerCache,
    scratch: &mut AttentionScratch,
    weights: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let s = &plan.shape;
    let batch = n > 1;
    let width = plan.numerics.width();
    let AttentionScratch {
        scores,
        acc,
        query,
        query_q8,
        ..
    } = scratch;
    // K·Q: tinyBLAS in llama.cpp for a batch with a converted Q (F16, BF16; a Q8_0 batch's
    // tinyBLAS gives `vec_dot_q8_0_q8_0`'s sums); `vec_dot` otherwise (F32 Q stays
    // non-contiguous and never reaches tinyBLAS; bitnet.cpp's tinyBLAS takes no F16 second
    // operand).
    let kq = match (plan.numerics, plan.keys) {
        (_, CacheType::F32) => Dot::VecF32(width),
        (Numerics::LlamaCpp, CacheType::F16 | CacheType::Bf16) if batch => {
            Dot::TinyBlas { lanes: 8 }
        }
        (Numerics::LlamaCpp, CacheType::Bf16) => Dot::VecBf16,
        (_, _) => Dot::VecF16(width),
    };
    let scorer = Scorer::new(plan, kq, head, cache, query, query_q8);
    let n_kv = head.last + 1;
    // Both references pad the KV view without flash attention (bitnet.cpp to 32 cells,
    // llama.cpp to 256): the masked cells give exact zeros in the same lanes either way.
    let padded = n_kv.div_ceil(32) * 32;
    let scale = s.scale();
    scores.clear();
    for j in 0..n_kv {
        scores.push(scorer.score(head, cache, s, j) * scale);
    }
    scores.resize(padded, f32::NEG_INFINITY);
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = match width {
        VectorWidth::Avx2 => soft_max::<8>(scores, max),
        VectorWidth::Avx512 => soft_max::<16>(scores, max),
    };
    let inv = (1.0 / sum) as f32;
    scores.iter_mut().for_each(|v| *v *= inv);
    if let Some(w) = weights {
        w[..n_kv].copy_from_slice(&scores[..n_kv]);
    }

    // V·weights: tinyBLAS for a batch, `vec_dot` for one token; llama.cpp converts the weights
    // to V's type for both, bitnet.cpp's tinyBLAS multiplies its F16 V by f32 weights.
    let pv = match (plan.numerics, plan.values, batch) {
        (Numerics::LlamaCpp, _, true) => Dot::TinyBlas { lanes: 8 },
        (Numerics::BitnetCpp(w), _, true) => Dot::TinyBlas { lanes: w.lanes() },
        (_, CacheType::F32, false) => Dot::VecF32(width),
        (Numerics::LlamaCpp, CacheType::Bf16, false) => Dot::VecBf16,
        (_, _, false) => Dot::VecF16(width),
    };
    let weights_as = match (plan.numerics, batch) {
        (Numerics::BitnetCpp(_), true) => CacheType::F32,
        _ => plan.values,
    };
    let p = std::mem::take(scores);
    convert_to(weights_as, &p, scores);
    weighted_values(pv, scores, n_kv, |j| head.value(cache, s, j), acc, out);
}

/// `out[d] = Σ_j w[j] · v(j)[d]` over the cells `0..n_kv` of the weights `w` (a padded view:
/// masked cells carry zero weight), summed in the order of `dot`.
#[inline(always)]
fn weighted_values<'v>(
    dot: Dot,
    w: &[f32],
    n_kv: usize,
    v: impl Fn(usize) -> &'v [f32],
    acc: &mut Vec<f32>,
    out: &mut [f32],
) {
    let dim = out.len();
    let (lanes, head) = lanes_and_head(dot, w.len());
    // One accumulator lane per (output, j mod lanes): cell j goes to the same lane, in the
    // same order, as in ggml's kernel, so the sums are identical. The accumulators are
    // lane-major (`acc[lane * dim + d]`), so each cell updates one contiguous run of them,
    // which the compiler vectorizes (each element still gets its own fused multiply-add).
    // Masked cells would add exact zeros; they are skipped.
    acc.clear();
    acc.resize(dim * lanes, 0.0);
    for (j, &p) in w[..head.min(n_kv)].iter().enumerate() {
        let lane = &mut acc[(j % lanes) * dim..][..dim];
        for (a, &x) in lane.iter_mut().zip(v(j)) {
            *a = x.mul_add(p, *a);
        }
    }
    let mut column = [0f32; 64];
    for (d, o) in out.iter_mut().enumerate() {
        let a = &mut column[..lanes];
        for (l, c) in a.iter_mut().enumerate() {
            *c = acc[l * dim + d];
        }
        let tail = (head..n_kv.max(head)).map(|j| (v(j)[d], w[j]));
        *o = finish(dot, reduce(dot, a), tail);
    }
}

#[cfg(test)]
mod tests;
