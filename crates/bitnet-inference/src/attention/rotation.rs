//! llama.cpp's Hadamard rotation for quantized KV caches (`llama_kv_cache`: `attn_rot_k`,
//! `attn_rot_v`; `llama_mul_mat_hadamard`, computed on the CPU by
//! `ggml_compute_forward_fwht`).
//!
//! With a quantized K cache and heads a multiple of 64, llama.cpp rotates Q and K (after RoPE)
//! by an orthonormal Walsh–Hadamard matrix of size `n_rot_k` (64, doubled while it divides the
//! head) before K is stored, which spreads outliers across a block before quantization and
//! leaves Q·K unchanged in exact arithmetic; with a quantized V cache it rotates V by a matrix
//! of 64 before storing it and the attention output back afterwards. The rotation is a fast
//! Walsh–Hadamard transform over consecutive runs of `n` values: each value scaled by
//! `1/sqrt(n)`, then butterflies `(u + v, u − v)` with spans 1, 2, 4, … (ggml's vector passes
//! compute `u − v` as `fma(v, −1, u)`, the same single rounding).

use super::{AttentionPlan, CacheType};
use crate::numerics::Numerics;

/// Rotate every consecutive run of `n` values of `x` (`n` a power of two).
pub fn fwht(x: &mut [f32], n: usize) {
    let scale = 1.0 / (n as f32).sqrt();
    for row in x.chunks_exact_mut(n) {
        row.iter_mut().for_each(|v| *v *= scale);
        let mut span = 1;
        while span < n {
            for block in row.chunks_exact_mut(2 * span) {
                let (lo, hi) = block.split_at_mut(span);
                for (u, v) in lo.iter_mut().zip(hi.iter_mut()) {
                    let (a, b) = (*u, *v);
                    *u = a + b;
                    *v = a - b;
                }
            }
            span *= 2;
        }
    }
}

/// The sizes of the K and V rotations llama.cpp applies for `plan`, if any.
pub(super) fn sizes(plan: &AttentionPlan) -> (Option<usize>, Option<usize>) {
    if plan.numerics != Numerics::LlamaCpp {
        return (None, None);
    }
    let head = plan.shape.head_dim;
    let rotates = |t: CacheType| t.is_quantized() && head.is_multiple_of(64);
    let k = rotates(plan.keys).then(|| {
        let mut n = 64;
        while head.is_multiple_of(2 * n) {
            n *= 2;
        }
        n
    });
    let v = rotates(plan.values).then_some(64);
    (k, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rotation_is_orthonormal_and_its_own_inverse() {
        let x: Vec<f32> = (0..128)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0)
            .collect();
        let mut y = x.clone();
        fwht(&mut y, 64);
        let norm = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>();
        assert!((norm(&y) - norm(&x)).abs() < 1e-3);
        fwht(&mut y, 64);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
        // A constant run goes to its first element.
        let mut c = vec![1.0f32; 64];
        fwht(&mut c, 64);
        assert_eq!(c[0], 8.0);
        assert!(c[1..].iter().all(|&v| v == 0.0));
    }
}
