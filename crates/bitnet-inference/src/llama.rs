//! llama.cpp's `llama` layer: pre-norm attention, SiLU-gated FFN.

use crate::model::{add, Ctx, LayerCache, LayerIo, Scratch};
use crate::ops;
use crate::tap::names;
use crate::weights::LayerWeights;

/// One layer over `io.x` (one row per token), as llama.cpp's `llm_build_llama` builds it.
pub(crate) fn layer(
    ctx: &Ctx,
    w: &LayerWeights,
    io: &mut LayerIo,
    cache: &mut LayerCache,
    s: &mut Scratch,
) {
    // attention: x += wo · attn(norm(x))
    ctx.self_attention(w, io, cache, s);
    ctx.linear(&w.wo, &s.att, &mut s.mm, &mut s.proj);
    io.tap(names::ATTN_OUT, &s.proj);
    io.keep_output_rows(&mut s.proj);
    add(&mut io.x, &s.proj);
    io.tap_residual(names::FFN_INP);

    // feed-forward: x += down · (silu(gate · h) * (up · h)), h = norm(x)
    s.h.clear();
    s.h.extend_from_slice(&io.x);
    ops::rms_norm(&mut s.h, &w.ffn_norm, ctx.ffn_norm_eps(io.il));
    io.tap(names::FFN_NORM, &s.h);
    ctx.linear(&w.up, &s.h, &mut s.mm, &mut s.up);
    io.tap(names::FFN_UP, &s.up);
    ctx.linear(&w.gate, &s.h, &mut s.mm, &mut s.gate);
    io.tap(names::FFN_GATE, &s.gate);
    ops::silu_mul(&mut s.gate, &s.up);
    io.tap(names::FFN_SWIGLU, &s.gate);
    ctx.linear(&w.down, &s.gate, &mut s.mm, &mut s.proj);
    io.tap(names::FFN_OUT, &s.proj);
    add(&mut io.x, &s.proj);
    io.tap_residual(names::L_OUT);
}
