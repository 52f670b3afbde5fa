//! Microsoft bitnet.cpp's `bitnet-b1.58` layer (BitNet b1.58 2B-4T): the `bitnet` layer with
//! relu² instead of SiLU in the FFN gate, and no scale tensors.

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
    let eps = ctx.c.rms_eps;
    let sub_norm = |v: &mut [f32], g: &Option<Vec<f32>>| {
        ops::rms_norm(v, g.as_deref().expect("bitnet-b1.58 has sub-norms"), eps)
    };

    // attention: x += wo · sub_norm(attn(norm(x)))
    ctx.self_attention(w, x, pos0, cache, s);
    sub_norm(&mut s.att, &w.attn_sub_norm);
    ctx.linear(&w.wo, &s.att, &mut s.mm, &mut s.proj);
    add(x, &s.proj);

    // feed-forward: x += down · sub_norm(relu(gate · h)² * (up · h)), h = norm(x)
    s.h.clear();
    s.h.extend_from_slice(x);
    ops::rms_norm(&mut s.h, &w.ffn_norm, eps);
    ctx.linear(&w.gate, &s.h, &mut s.mm, &mut s.gate);
    ctx.linear(&w.up, &s.h, &mut s.mm, &mut s.up);
    ops::relu2_mul(&mut s.gate, &s.up);
    sub_norm(&mut s.gate, &w.ffn_sub_norm);
    ctx.linear(&w.down, &s.gate, &mut s.mm, &mut s.proj);
    add(x, &s.proj);
}
