//! llama.cpp's `llama` layer: pre-norm attention, SiLU-gated FFN.

use crate::model::{add, Ctx, LayerCache, Scratch};
use crate::ops;
use crate::weights::LayerWeights;

/// One layer over `x` (n tokens × dim), starting at position `pos0`.
pub(crate) fn layer(
    ctx: &Ctx,
    w: &LayerWeights,
    x: &mut [f32],
    pos0: usize,
    cache: &mut LayerCache,
    s: &mut Scratch,
) {
    // attention: x += wo · attn(norm(x))
    ctx.self_attention(w, x, pos0, cache, s);
    ctx.linear(&w.wo, &s.att, &mut s.mm, &mut s.proj);
    add(x, &s.proj);

    // feed-forward: x += down · (silu(gate · h) * (up · h)), h = norm(x)
    s.h.clear();
    s.h.extend_from_slice(x);
    ops::rms_norm(&mut s.h, &w.ffn_norm, ctx.c.rms_eps);
    ctx.linear(&w.gate, &s.h, &mut s.mm, &mut s.gate);
    ctx.linear(&w.up, &s.h, &mut s.mm, &mut s.up);
    ops::silu_mul(&mut s.gate, &s.up);
    ctx.linear(&w.down, &s.gate, &mut s.mm, &mut s.proj);
    add(x, &s.proj);
}
