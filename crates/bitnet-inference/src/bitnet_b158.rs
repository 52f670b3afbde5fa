//! Microsoft's `bitnet-b1.58` layer (bitnet.cpp's `build_bitnet_158`): the `bitnet` layer
//! with relu² instead of SiLU in the gated FFN and no matmul scales (I2_S carries its own).

use crate::model::{add, Ctx, LayerCache, LayerIo, Scratch};
use crate::ops;
use crate::tap::names;
use crate::weights::LayerWeights;

/// One layer over `io.x` (one row per token), as bitnet.cpp's `build_bitnet_158` builds it.
pub(crate) fn layer(
    ctx: &Ctx,
    w: &LayerWeights,
    io: &mut LayerIo,
    cache: &mut LayerCache,
    s: &mut Scratch,
) {
    let eps = ctx.c.rms_eps;
    let sub_norm = |v: &mut [f32], g: &Option<Vec<f32>>| {
        ops::rms_norm(v, g.as_deref().expect("bitnet-b1.58 has sub-norms"), eps)
    };

    // attention: x += wo · sub_norm(attn(norm(x)))
    ctx.self_attention(w, io, cache, s);
    sub_norm(&mut s.att, &w.attn_sub_norm);
    io.tap(names::ATTN_SUB_NORM, &s.att);
    ctx.linear(&w.wo, &s.att, &mut s.mm, &mut s.proj);
    io.tap(names::ATTN_O_OUT, &s.proj);
    io.keep_output_rows(&mut s.proj);
    add(&mut io.x, &s.proj);
    io.tap_residual(names::FFN_INP);

    // feed-forward: x += down · sub_norm(relu(gate · h)² * (up · h)), h = norm(x)
    s.h.clear();
    s.h.extend_from_slice(&io.x);
    ops::rms_norm(&mut s.h, &w.ffn_norm, ctx.ffn_norm_eps(io.il));
    io.tap(names::FFN_NORM, &s.h);
    ctx.linear(&w.up, &s.h, &mut s.mm, &mut s.up);
    io.tap(names::FFN_UP, &s.up);
    ctx.linear(&w.gate, &s.h, &mut s.mm, &mut s.gate);
    io.tap(names::FFN_GATE, &s.gate);
    if ctx.silu_instead_of_relu2() {
        ops::silu_mul(&mut s.gate, &s.up);
    } else {
        ops::relu2_mul(&mut s.gate, &s.up);
    }
    io.tap(names::FFN_OUT, &s.gate);
    sub_norm(&mut s.gate, &w.ffn_sub_norm);
    io.tap(names::FFN_SUB_NORM, &s.gate);
    ctx.linear(&w.down, &s.gate, &mut s.mm, &mut s.proj);
    io.tap(names::FFN_DOWN, &s.proj);
    add(&mut io.x, &s.proj);
    io.tap_residual(names::L_OUT);
}
