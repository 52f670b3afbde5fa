//! Unit tests of the dot-product kernels: every weight type against the dot of the dequantized
//! forms, SIMD against scalar, matrix views, batches.

use super::*;
use crate::blocks::round_f16;
use crate::matrix::Backend;

/// Every weight type with a row length that exercises odd block counts.
const KERNEL_CASES: &[(GgmlType, usize)] = &[
    (GgmlType::F32, 77),
    (GgmlType::F16, 101),
    (GgmlType::BF16, 64 + 5),
    (GgmlType::Q8_0, 32 * 7),
    (GgmlType::Q4_0, 32 * 9),
    (GgmlType::Q4_1, 32 * 13),
    (GgmlType::TQ1_0, 256 * 3),
    (GgmlType::TQ2_0, 256 * 3),
    (GgmlType::I2_S, 128 * 35), // one full i16 group of 32 blocks plus a tail of 3
];

fn weights_for(ty: GgmlType, seed: u64, n: usize) -> Vec<f32> {
    match ty {
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S => ternary(seed, n, 0.25),
        _ => noise(seed, n),
    }
}

/// Σ w·x in f64 over the dequantized forms.
fn reference_dot(m: &QuantizedMatrix, r: usize, act: &QuantizedActivation) -> f64 {
    let mut w = vec![0.0; m.cols()];
    m.dequantize_row(r, &mut w);
    let mut x = vec![0.0; m.cols()];
    act.dequantize(&mut x);
    w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[test]
fn kernels_equal_the_dot_of_dequantized_forms() {
    for &(ty, cols) in KERNEL_CASES {
        let rows = 3;
        let bytes = encode(ty, &weights_for(ty, 7, rows * cols), cols).unwrap();
        let m = QuantizedMatrix::new(ty, &bytes, rows, cols)
            .unwrap()
            .with_backend(Backend::Scalar);
        let mut act = QuantizedActivation::new();
        act.quantize(m.activation_type(), &noise(11, cols)).unwrap();
        for r in 0..rows {
            let got = m.dot_row(r, &act) as f64;
            let want = reference_dot(&m, r, &act);
            let mag: f64 = {
                let mut w = vec![0.0; cols];
                m.dequantize_row(r, &mut w);
                let mut x = vec![0.0; cols];
                act.dequantize(&mut x);
                w.iter()
                    .zip(&x)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum()
            };
            // Q4_1's kernel uses the activation's stored s = f16(d·Σq) for the minimum's
            // term; the dequantized form has d16·Σq. Allow for that difference exactly.
            let s_term: f64 = if ty == GgmlType::Q4_1 {
                let w = m.row(r);
                (0..cols / 32)
                    .map(|b| {
                        let mx = crate::blocks::f16_at(w, 20 * b + 2) as f64;
                        let sq: i32 = act.qs[32 * b..32 * b + 32].iter().map(|&q| q as i32).sum();
                        (mx * (act.s[b] as f64 - act.d[b] as f64 * sq as f64)).abs()
                    })
                    .sum()
            } else {
                0.0
            };
            assert!(
                (got - want).abs() <= 1e-5 * mag + 1e-6 + s_term,
                "{ty} row {r}: kernel {got}, dequantized {want}"
            );
        }
    }
}

#[test]
fn i2_s_reproduces_bitnet_cpp_i16_lane_wrap() {
    // All weights +1 and all activations 127: each i16 lane collects 32 blocks × 8 products
    // × 2·127 = 65024 and wraps to -512 in bitnet.cpp's AVX2 kernel.
    let cols = 128 * 32;
    let bytes = encode(GgmlType::I2_S, &vec![0.5; cols], cols).unwrap();
    let mut act = QuantizedActivation::new();
    act.quantize(ActivationType::I8_S, &vec![1.0; cols])
        .unwrap();
    let sumi = 16 * -512;
    let want = (sumi as f32 - (127 * cols) as f32) / 127.0 * 0.5;
    for backend in backends() {
        let m = QuantizedMatrix::new(GgmlType::I2_S, &bytes, 1, cols)
            .unwrap()
            .with_backend(backend);
        assert_eq!(m.dot_row(0, &act), want, "{backend:?}");
    }
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Scalar];
    if Backend::detect() != Backend::Scalar {
        b.push(Backend::detect());
    }
    b
}

#[test]
fn simd_kernels_are_bit_identical_to_scalar() {
    let detected = Backend::detect();
    if detected == Backend::Scalar {
        // No SIMD on this CPU: the dispatch must then be the scalar kernel itself.
        assert_eq!(backends(), vec![Backend::Scalar]);
        return;
    }
    for &(ty, cols) in KERNEL_CASES {
        for extra in [0, 1, 2] {
            let cols = cols + extra * WeightType::from_ggml(ty).unwrap().block_size();
            let rows = 5;
            let bytes = encode(ty, &weights_for(ty, 3 + extra as u64, rows * cols), cols).unwrap();
            let m = QuantizedMatrix::new(ty, &bytes, rows, cols).unwrap();
            let scalar = m.with_backend(Backend::Scalar);
            let simd = m.with_backend(detected);
            for seed in 0..4 {
                let mut x = noise(100 + seed, cols);
                if seed == 3 {
                    // Large activations: pushes the integer accumulators to their limits.
                    x.iter_mut().for_each(|v| *v = v.signum() * 100.0);
                }
                let mut act = QuantizedActivation::new();
                act.quantize(m.activation_type(), &x).unwrap();
                for r in 0..rows {
                    assert_eq!(
                        scalar.dot_row(r, &act).to_bits(),
                        simd.dot_row(r, &act).to_bits(),
                        "{ty} cols {cols} row {r} seed {seed}"
                    );
                }
            }
        }
    }
}

/// Random bytes (with finite scales) and random full-range activation codes: exercises
/// `maddubs` saturation, the −128 sign-trick wrap, invalid codes (TQ2_0/I2_S code 3) and
/// I2_S's i16 wrap. The scalar emulation must still match the SIMD kernels bit for bit.
#[test]
fn simd_matches_scalar_on_arbitrary_bytes() {
    let detected = Backend::detect();
    if detected == Backend::Scalar {
        assert_eq!(backends(), vec![Backend::Scalar]);
        return;
    }
    let bytes_of = |seed: u64, n: usize| -> Vec<u8> {
        noise(seed, n)
            .iter()
            .map(|v| ((v + 1.0) * 127.99) as u8)
            .collect()
    };
    let one = [0x00u8, 0x3c]; // f16 1.0
    let quarter = [0x00u8, 0x34]; // f16 0.25
    for &(ty, cols) in KERNEL_CASES {
        let rows = 3;
        let size = crate::blocks::tensor_bytes(ty, rows * cols);
        let mut w = bytes_of(21, size);
        match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => continue,
            GgmlType::Q8_0 => w
                .chunks_exact_mut(34)
                .for_each(|b| b[..2].copy_from_slice(&one)),
            GgmlType::Q4_0 => w
                .chunks_exact_mut(18)
                .for_each(|b| b[..2].copy_from_slice(&one)),
            GgmlType::Q4_1 => w.chunks_exact_mut(20).for_each(|b| {
                b[..2].copy_from_slice(&one);
                b[2..4].copy_from_slice(&quarter);
            }),
            GgmlType::TQ1_0 => w
                .chunks_exact_mut(54)
                .for_each(|b| b[52..].copy_from_slice(&one)),
            GgmlType::TQ2_0 => w
                .chunks_exact_mut(66)
                .for_each(|b| b[64..].copy_from_slice(&one)),
            GgmlType::I2_S => {
                let n = rows * cols / 4;
                w[n..n + 4].copy_from_slice(&0.5f32.to_le_bytes());
            }
            other => panic!("no case for {other}"),
        }
        let m = QuantizedMatrix::new(ty, &w, rows, cols).unwrap();
        let mut act = QuantizedActivation::new();
        act.quantize(m.activation_type(), &noise(5, cols)).unwrap();
        for (q, b) in act.qs.iter_mut().zip(bytes_of(33, cols)) {
            *q = b as i8; // full range, including -128
        }
        act.qs[..8].fill(-128);
        if !act.bsums.is_empty() {
            for (s, q) in act.bsums.iter_mut().zip(act.qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| v as i16).sum();
            }
        }
        for r in 0..rows {
            let scalar = m.with_backend(Backend::Scalar).dot_row(r, &act);
            let simd = m.with_backend(detected).dot_row(r, &act);
            assert_eq!(
                scalar.to_bits(),
                simd.to_bits(),
                "{ty} row {r}: {scalar} vs {simd}"
            );
        }
    }
}

#[test]
fn matvec_and_matmul_agree_with_dot_row() {
    let (rows, cols) = (37, 256);
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
        GgmlType::F16,
    ] {
        let bytes = encode(ty, &weights_for(ty, 5, rows * cols), cols).unwrap();
        let m = QuantizedMatrix::new(ty, &bytes, rows, cols).unwrap();
        let acts: Vec<QuantizedActivation> = (0..11)
            .map(|t| {
                let mut a = QuantizedActivation::new();
                a.quantize(m.activation_type(), &noise(50 + t, cols))
                    .unwrap();
                a
            })
            .collect();
        let mut y = vec![0.0; rows];
        m.matvec(&acts[0], &mut y);
        let direct: Vec<f32> = (0..rows).map(|r| m.dot_row(r, &acts[0])).collect();
        assert_eq!(y, direct, "{ty}");
        let mut out = vec![0.0; rows * acts.len()];
        // One thread: tasks of ⌈11 / 2⌉ = 6 tokens, so the four-token kernels run too.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| m.matmul(&acts, &mut out));
        for (t, a) in acts.iter().enumerate() {
            m.matvec(a, &mut y);
            assert_eq!(&out[t * rows..(t + 1) * rows], &y[..], "{ty} token {t}");
        }
    }
}

#[test]
fn matrix_view_validates_and_exposes_rows() {
    let v = noise(9, 4 * 64);
    let bytes = encode(GgmlType::Q8_0, &v, 64).unwrap();
    let m = QuantizedMatrix::new(GgmlType::Q8_0, &bytes, 4, 64).unwrap();
    assert_eq!(
        (m.rows(), m.cols(), m.weight_type()),
        (4, 64, WeightType::Q8_0)
    );
    assert_eq!(m.row(2), &bytes[2 * 68..3 * 68]);
    let mut row = vec![0.0; 64];
    m.dequantize_row(2, &mut row);
    assert_eq!(row, decoded(GgmlType::Q8_0, &bytes, 256)[128..192]);
    assert!(matches!(
        QuantizedMatrix::new(GgmlType::Q8_0, &bytes[1..], 4, 64),
        Err(QuantError::Size { .. })
    ));
    let reshaped = QuantizedMatrix::new(GgmlType::Q8_0, &bytes, 8, 32).unwrap();
    assert_eq!(reshaped.row(7), &bytes[7 * 34..]);
    assert!(matches!(
        QuantizedMatrix::new(GgmlType::Q8_0, &bytes, 16, 16),
        Err(QuantError::PartialBlock { .. })
    ));
    assert!(matches!(
        QuantizedMatrix::new(GgmlType::IQ2_XXS, &bytes, 1, 256),
        Err(QuantError::Unsupported(GgmlType::IQ2_XXS))
    ));
    // I2_S rows read the tensor's scale.
    let t = ternary(4, 2 * 128, 0.125);
    let bytes = encode(GgmlType::I2_S, &t, 128).unwrap();
    let m = QuantizedMatrix::new(GgmlType::I2_S, &bytes, 2, 128).unwrap();
    assert_eq!(m.row(1).len(), 32);
    let mut row = vec![0.0; 128];
    m.dequantize_row(1, &mut row);
    assert_eq!(row, t[128..]);
    assert_eq!(round_f16(0.125), 0.125);
}

#[test]
#[should_panic(expected = "activation is Q8_0")]
fn mismatched_activation_panics() {
    let bytes = encode(GgmlType::Q4_1, &[0.5; 32], 32).unwrap();
    let m = QuantizedMatrix::new(GgmlType::Q4_1, &bytes, 1, 32).unwrap();
    let mut a = QuantizedActivation::new();
    a.quantize(ActivationType::Q8_0, &[0.5; 32]).unwrap();
    m.dot_row(0, &a);
}

#[test]
fn weight_types_map_to_ggml_vec_dot_types() {
    for &ty in ENCODABLE {
        let w = WeightType::from_ggml(ty).unwrap();
        assert_eq!(w.ggml(), ty);
    }
    assert_eq!(WeightType::Q4_0.activation_type(), ActivationType::Q8_0);
    assert_eq!(WeightType::Q4_1.activation_type(), ActivationType::Q8_1);
    assert_eq!(WeightType::TQ1_0.activation_type(), ActivationType::Q8_K);
    assert_eq!(WeightType::I2_S.activation_type(), ActivationType::I8_S);
    assert_eq!(WeightType::Q6_K.activation_type(), ActivationType::Q8_K);
    assert_eq!(WeightType::from_ggml(GgmlType::IQ2_XXS), None);
}

/// I2_S and TQ2_0 holding the same ternary weights give the same products up to the scale's
/// rounding (I2_S keeps the tensor's scale in f32, TQ2_0 one f16 per 256 weights), when both
/// see the same int8 activation codes. (In a model they do not: each type implies its own
/// activation quantization, I8_S per row vs Q8_K per block, so model logits differ more.)
#[test]
fn i2_s_and_tq2_0_agree_up_to_the_scale_rounding() {
    let cols = 512;
    // 0.75 is an f16; 0.1 and 0.0123 are not (TQ2_0 stores them rounded).
    for (seed, scale) in [(1, 0.75f32), (2, 0.1), (3, 0.0123)] {
        let w = ternary(seed, cols, scale);
        // Activations that correlate with the weights, so the sum is far from zero.
        let x: Vec<f32> = noise(seed + 10, cols)
            .iter()
            .zip(&w)
            .map(|(&n, &v)| 0.5 * n + 0.5 * v.signum())
            .collect();
        let mut i8s = QuantizedActivation::new();
        i8s.quantize(ActivationType::I8_S, &x).unwrap();
        // The same codes as a Q8_K activation: every block's scale is I8_S's 1/s.
        let q8k = QuantizedActivation {
            ty: ActivationType::Q8_K,
            len: cols,
            qs: i8s.qs.clone(),
            d: vec![1.0 / i8s.row_scale; cols / crate::blocks::QK_K],
            bsums: i8s
                .qs
                .chunks_exact(16)
                .map(|c| c.iter().map(|&v| v as i16).sum())
                .collect(),
            ..QuantizedActivation::new()
        };
        let i2s = encode(GgmlType::I2_S, &w, cols).unwrap();
        let tq2 = encode(GgmlType::TQ2_0, &w, cols).unwrap();
        let a = QuantizedMatrix::new(GgmlType::I2_S, &i2s, 1, cols).unwrap();
        let b = QuantizedMatrix::new(GgmlType::TQ2_0, &tq2, 1, cols).unwrap();
        let (ya, yb) = (a.dot_row(0, &i8s), b.dot_row(0, &q8k));
        // The exact integer sum of ternary × code.
        let sumi: i64 = w
            .iter()
            .zip(&i8s.qs)
            .map(|(&v, &q)| (v / scale).round() as i64 * q as i64)
            .sum();
        assert!(sumi > 1000, "a degenerate sum proves little ({sumi})");
        // Each result is Σ(ternary·code)/s times the scale its type stores, to f32 rounding,
        // so the two differ exactly by the ratio of the stored scales.
        let (sa, sb) = (scale as f64, round_f16(scale) as f64);
        let exact = |s: f64| sumi as f64 / i8s.row_scale as f64 * s;
        for (y, s) in [(ya, sa), (yb, sb)] {
            assert!(
                ((y as f64 - exact(s)) / exact(s)).abs() < 1e-6,
                "{y} vs {}",
                exact(s)
            );
        }
        assert!(
            (ya as f64 / yb as f64 - sa / sb).abs() < 2e-6,
            "{ya} / {yb}"
        );
        if sa == sb {
            assert!(
                (ya - yb).abs() <= 2.0 * f32::EPSILON * ya.abs(),
                "{ya} vs {yb}"
            );
        }
    }
}

#[test]
fn repacked_q4_0_follows_llama_cpps_order_on_every_backend() {
    let cols = 256;
    for rows in [16, 12] {
        let bytes = encode(GgmlType::Q4_0, &noise(31, rows * cols), cols).unwrap();
        let plain = QuantizedMatrix::new(GgmlType::Q4_0, &bytes, rows, cols).unwrap();
        let mut a = QuantizedActivation::new();
        a.quantize(ActivationType::Q8_0, &noise(32, cols)).unwrap();
        for backend in backends() {
            let m = plain.with_backend(backend).repacked_like_llama_cpp();
            for r in 0..rows {
                let got = m.dot_row(r, &a);
                let expected = if rows % 8 == 0 {
                    dot::q4_0_q8_0_repacked(m.row(r), &a)
                } else {
                    plain.with_backend(backend).dot_row(r, &a)
                };
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "{backend:?} rows {rows} row {r}"
                );
                assert!((got as f64 - reference_dot(&m, r, &a)).abs() < 1e-3);
            }
        }
    }
}

/// Wide rows put fewer tokens in each cache block (32 here for 8192 int8 codes): a batch of
/// 70 spans three blocks, the last one partial, and still gives every token's own bits.
#[test]
fn matmul_over_several_token_blocks_equals_matvec() {
    let (rows, cols, n) = (12, 8192, 70);
    let bytes = encode(GgmlType::Q8_0, &noise(41, rows * cols), cols).unwrap();
    let m = QuantizedMatrix::new(GgmlType::Q8_0, &bytes, rows, cols).unwrap();
    let acts: Vec<QuantizedActivation> = (0..n)
        .map(|t| {
            let mut a = QuantizedActivation::new();
            a.quantize(ActivationType::Q8_0, &noise(100 + t as u64, cols))
                .unwrap();
            a
        })
        .collect();
    let mut out = vec![0.0; rows * n];
    m.matmul(&acts, &mut out);
    let mut y = vec![0.0; rows];
    for (t, a) in acts.iter().enumerate() {
        m.matvec(a, &mut y);
        assert_eq!(&out[t * rows..(t + 1) * rows], &y[..], "token {t}");
    }
}
