use super::*;

const ALL: [Numerics; 3] = [
    Numerics::LlamaCpp,
    Numerics::BitnetCpp(VectorWidth::Avx2),
    Numerics::BitnetCpp(VectorWidth::Avx512),
];

/// Every kernel combination each reference has: (numerics, K, V, flash attention).
fn plans(shape: AttentionShape, threads: usize) -> Vec<AttentionPlan> {
    use CacheType::*;
    let mut out = Vec::new();
    for numerics in ALL {
        let combos: &[(CacheType, CacheType, bool)] = match numerics {
            Numerics::LlamaCpp => &[
                (F32, F32, false),
                (F16, F32, false),
                (F32, F16, false),
                (F16, F16, false),
                (Bf16, Bf16, false),
                (F16, F16, true),
                (Bf16, F16, true),
                (F16, Bf16, true),
                (Bf16, Bf16, true),
            ],
            Numerics::BitnetCpp(_) => &[(F32, F16, false), (F16, F16, false), (F16, F16, true)],
        };
        for &(keys, values, flash_attn) in combos {
            out.push(AttentionPlan {
                shape,
                numerics,
                keys,
                values,
                flash_attn,
                threads,
            });
        }
    }
    out
}

fn cache(plan: &AttentionPlan, k: &[f32], v: &[f32]) -> LayerCache {
    let mut c = LayerCache::default();
    c.append(k, v, plan.shape.kv_dim(), plan.keys, plan.values);
    c
}

#[test]
fn attention_over_one_position_returns_its_value() {
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 2,
    };
    let mut s = AttentionScratch::default();
    for plan in plans(shape, 2) {
        let c = cache(&plan, &[0.5, 0.5], &[7.0, 9.0]);
        let mut out = vec![0.0; 4];
        attend(
            &plan,
            &[1.0, 0.0, 0.0, 1.0],
            &c,
            0,
            &mut s,
            AttendExtras::default(),
            &mut out,
        );
        assert_eq!(out, vec![7.0, 9.0, 7.0, 9.0], "{plan:?}");
    }
}

/// Every kernel computes the same attention up to the rounding of its cache types, over
/// lengths that cross the vector, padding, tile and split boundaries, in one batch and token by
/// token.
#[test]
fn every_kernel_agrees_with_a_plain_f64_attention() {
    let shape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 40,
    };
    let kv_dim = 80;
    let dim = 160;
    let val = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.5) - 1.0;
    let mut s = AttentionScratch::default();
    let n_total = 300;
    let q: Vec<f32> = (0..n_total * dim).map(|i| val(i, 1)).collect();
    let keys: Vec<f32> = (0..n_total * kv_dim).map(|i| val(i, 2)).collect();
    let values: Vec<f32> = (0..n_total * kv_dim).map(|i| val(i, 3)).collect();
    let expected = |t: usize| -> Vec<f64> {
        let mut e = vec![0f64; dim];
        for h in 0..4 {
            let kvh = h / 2;
            let scores: Vec<f64> = (0..=t)
                .map(|j| {
                    (0..40)
                        .map(|d| {
                            q[t * dim + h * 40 + d] as f64 * keys[j * kv_dim + kvh * 40 + d] as f64
                        })
                        .sum::<f64>()
                        / 40f64.sqrt()
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let z: f64 = w.iter().sum();
            for d in 0..40 {
                e[h * 40 + d] = (0..=t)
                    .map(|j| w[j] / z * values[j * kv_dim + kvh * 40 + d] as f64)
                    .sum();
            }
        }
        e
    };
    let expected: Vec<Vec<f64>> = (0..n_total).map(expected).collect();
    for plan in plans(shape, 3) {
        // F16 or bfloat16 caches and F16 accumulators (flash attention's weighted sum of an
        // F16 V, rounded at each of up to 300 updates) carry their rounding.
        let tol = match (plan.keys, plan.values) {
            (CacheType::Bf16, _) | (_, CacheType::Bf16) => 3e-2,
            (_, CacheType::F16) if plan.flash_attn => 1.5e-2,
            (CacheType::F16, _) | (_, CacheType::F16) => 4e-3,
            _ => 1e-5,
        };
        // A batch of 100 (tiled flash attention from 64), then tokens one by one up to 300
        // (llama.cpp's split-KV path beyond 256 cells).
        let mut c = LayerCache::default();
        let mut pos = 0;
        for n in std::iter::once(100).chain(std::iter::repeat_n(1, 200)) {
            c.append(
                &keys[pos * kv_dim..(pos + n) * kv_dim],
                &values[pos * kv_dim..(pos + n) * kv_dim],
                kv_dim,
                plan.keys,
                plan.values,
            );
            let mut out = vec![0f32; n * dim];
            let cells = pos + n;
            let mut probs = vec![0f32; n * shape.n_heads * cells];
            attend(
                &plan,
                &q[pos * dim..(pos + n) * dim],
                &c,
                pos,
                &mut s,
                AttendExtras {
                    probs: Some(probs.as_mut_slice()),
                    extra_visible: 0,
                },
                &mut out,
            );
            // The attention weights: each head's sum to one over the cells it sees, nothing
            // beyond them; flash attention has none to give.
            for (row, weights) in probs.chunks(cells).enumerate() {
                let seen = pos + row / shape.n_heads + 1;
                let total: f64 = weights[..seen].iter().map(|&p| p as f64).sum();
                if plan.flash_attn {
                    assert!(weights.iter().all(|&p| p == 0.0), "{plan:?}");
                } else {
                    assert!(
                        (total - 1.0).abs() < 1e-5,
                        "{plan:?}: weights sum to {total}"
                    );
                    assert!(weights[seen..].iter().all(|&p| p == 0.0), "{plan:?}");
                }
            }
            for t in [0, n / 2, n - 1] {
                let e = &expected[pos + t];
                for (i, (&a, &b)) in out[t * dim..(t + 1) * dim].iter().zip(e).enumerate() {
                    assert!(
                        (a as f64 - b).abs() <= tol,
                        "{plan:?} position {} [{i}]: {a} vs {b}",
                        pos + t
                    );
                }
            }
            pos += n;
        }
    }
}

/// Q8_0 caches (llama.cpp only; heads of 64, so Q/K and V are Hadamard-rotated, which leaves
/// the attention unchanged up to the quantization): every kernel path agrees with a plain f64
/// attention of the unrotated values.
#[test]
fn q8_0_caches_with_rotation_agree_with_a_plain_f64_attention() {
    use CacheType::*;
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 64,
    };
    let (dim, kv_dim, n_total) = (128, 64, 80);
    let val = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.5) - 1.0;
    let q: Vec<f32> = (0..n_total * dim).map(|i| val(i, 1)).collect();
    let keys: Vec<f32> = (0..n_total * kv_dim).map(|i| val(i, 2)).collect();
    let values: Vec<f32> = (0..n_total * kv_dim).map(|i| val(i, 3)).collect();
    let expected = |t: usize, h: usize, d: usize| -> f64 {
        let scores: Vec<f64> = (0..=t)
            .map(|j| {
                (0..64)
                    .map(|e| q[t * dim + h * 64 + e] as f64 * keys[j * kv_dim + e] as f64)
                    .sum::<f64>()
                    / 8.0
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
        let z: f64 = w.iter().sum();
        (0..=t)
            .map(|j| w[j] / z * values[j * kv_dim + d] as f64)
            .sum()
    };
    let mut s = AttentionScratch::default();
    for (keys_ty, values_ty, flash_attn) in [
        (Q8_0, F16, false),
        (Q8_0, F32, false),
        (Q8_0, F16, true),
        (F16, Q8_0, true),
        (Q8_0, Q8_0, true),
    ] {
        let plan = AttentionPlan {
            shape,
            numerics: Numerics::LlamaCpp,
            keys: keys_ty,
            values: values_ty,
            flash_attn,
            threads: 2,
        };
        let mut c = LayerCache::default();
        let mut pos = 0;
        for n in [70, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] {
            let mut qq = q[pos * dim..(pos + n) * dim].to_vec();
            let mut kk = keys[pos * kv_dim..(pos + n) * kv_dim].to_vec();
            let mut vv = values[pos * kv_dim..(pos + n) * kv_dim].to_vec();
            let mut out = vec![0f32; n * dim];
            append_and_attend(
                &plan,
                &mut qq,
                &mut kk,
                &mut vv,
                &mut c,
                pos,
                &mut s,
                AttendExtras::default(),
                &mut out,
            );
            unrotate_output(&plan, &mut out);
            for t in [0, n - 1] {
                for h in 0..2 {
                    for d in 0..64 {
                        let (a, b) = (out[t * dim + h * 64 + d], expected(pos + t, h, d));
                        assert!(
                            (a as f64 - b).abs() < 3e-2,
                            "{plan:?} position {} head {h} [{d}]: {a} vs {b}",
                            pos + t
                        );
                    }
                }
            }
            pos += n;
        }
    }
}
