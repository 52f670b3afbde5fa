//! Unit tests: golden layouts, round trips, error bounds, activation quantization; the
//! kernels in `kernels.rs`.

use proptest::prelude::*;

use super::*;

mod kernels;

/// Deterministic pseudo-random f32s in [-1, 1) (xorshift), so tests need no RNG crate.
pub(crate) fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Ternary values {-1, 0, +1} × scale.
fn ternary(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    noise(seed, n)
        .into_iter()
        .map(|v| {
            if v < -0.33 {
                -scale
            } else if v > 0.33 {
                scale
            } else {
                0.0
            }
        })
        .collect()
}

fn decoded(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    decode(ty, bytes, &mut out).unwrap();
    out
}

#[test]
fn float_encodings_round_trip_representable_values() {
    let v = [0.0f32, 1.0, -2.5, 0.125, 65504.0];
    let f32b = encode(GgmlType::F32, &v, 5).unwrap();
    assert_eq!(f32b.len(), 20);
    assert_eq!(f32::from_le_bytes(f32b[8..12].try_into().unwrap()), -2.5);
    let f16b = encode(GgmlType::F16, &v, 5).unwrap();
    assert_eq!(decoded(GgmlType::F16, &f16b, 5), v);
    let bf = encode(GgmlType::BF16, &[1.0, -0.5], 2).unwrap();
    assert_eq!(bf, vec![0x80, 0x3f, 0x00, 0xbf]);
    assert_eq!(decoded(GgmlType::BF16, &bf, 2), [1.0, -0.5]);
    assert_eq!(decoded(GgmlType::F32, &f32b, 5), v);
}

#[test]
fn unsupported_and_bad_shapes_are_errors() {
    assert_eq!(
        encode(GgmlType::IQ2_XXS, &[0.0; 256], 256),
        Err(QuantError::Unsupported(GgmlType::IQ2_XXS))
    );
    assert!(matches!(
        encode(GgmlType::F32, &[0.0; 5], 2),
        Err(QuantError::PartialBlock { .. })
    ));
    assert!(matches!(
        encode(GgmlType::Q4_0, &[0.0; 48], 48),
        Err(QuantError::PartialBlock { block: 32, .. })
    ));
    assert!(matches!(
        encode(GgmlType::I2_S, &[0.0; 64], 64),
        Err(QuantError::PartialBlock { block: 128, .. })
    ));
    let mut out = [0.0f32; 32];
    assert_eq!(
        decode(GgmlType::Q8_0, &[0u8; 33], &mut out),
        Err(QuantError::Size {
            ty: GgmlType::Q8_0,
            elements: 32,
            expected: 34,
            got: 33
        })
    );
    assert_eq!(
        decode(GgmlType::IQ2_XXS, &[], &mut []),
        Err(QuantError::Unsupported(GgmlType::IQ2_XXS))
    );
}

#[test]
fn every_encodable_type_has_the_size_ggml_expects() {
    // Sizes from ggml-common.h static_asserts, and bitnet.cpp's nbytes / 4 + 32 for I2_S.
    let expect = |ty| match ty {
        GgmlType::F32 => 4 * 512,
        GgmlType::F16 | GgmlType::BF16 => 2 * 512,
        GgmlType::Q8_0 => 16 * 34,
        GgmlType::Q4_0 => 16 * 18,
        GgmlType::Q4_1 => 16 * 20,
        GgmlType::Q5_0 => 16 * 22,
        GgmlType::Q5_1 => 16 * 24,
        GgmlType::IQ4_NL => 16 * 18,
        GgmlType::TQ1_0 => 2 * 54,
        GgmlType::TQ2_0 => 2 * 66,
        GgmlType::I2_S => 128 + 32,
        GgmlType::Q2_K => 2 * 84,
        GgmlType::Q3_K => 2 * 110,
        GgmlType::Q4_K => 2 * 144,
        GgmlType::Q5_K => 2 * 176,
        GgmlType::Q6_K => 2 * 210,
        other => panic!("no expectation for {other}"),
    };
    let v = noise(1, 512);
    for &ty in ENCODABLE {
        let b = encode(ty, &v, 256).unwrap();
        assert_eq!(b.len(), expect(ty), "{ty}");
        assert_eq!(decoded(ty, &b, 512).len(), 512);
    }
}

#[test]
fn q8_0_golden_block() {
    // amax = 127 → d = 1 exactly, so codes are the (integer) inputs.
    let mut v: Vec<f32> = (0..32).map(|j| j as f32 - 16.0).collect();
    v[5] = 127.0;
    let b = encode(GgmlType::Q8_0, &v, 32).unwrap();
    assert_eq!(&b[..2], &[0x00, 0x3c]); // f16 1.0
    assert_eq!(b[2] as i8, -16);
    assert_eq!(b[2 + 5] as i8, 127);
    assert_eq!(b[2 + 31] as i8, 15);
    assert_eq!(decoded(GgmlType::Q8_0, &b, 32), v);
    // roundf rounds half away from zero: 0.5·(1/d) with d = 1 … use d = 2 (amax 254).
    let mut h = vec![0.0f32; 32];
    h[0] = 254.0;
    h[1] = 1.0; // 0.5 → 1
    h[2] = -3.0; // -1.5 → -2
    let b = encode(GgmlType::Q8_0, &h, 32).unwrap();
    assert_eq!((b[3] as i8, b[4] as i8), (1, -2));
}

#[test]
fn q4_0_golden_block() {
    // The element of largest magnitude is -8 → d = -8 / -8 = 1; code = x + 8.
    let v: Vec<f32> = (0..32).map(|j| ((j % 16) as f32) - 8.0).collect();
    let b = encode(GgmlType::Q4_0, &v, 32).unwrap();
    assert_eq!(&b[..2], &[0x00, 0x3c]);
    // byte j: low nibble element j, high nibble element j + 16 (same value here).
    for j in 0..16 {
        assert_eq!(b[2 + j], (j as u8) | ((j as u8) << 4));
    }
    assert_eq!(decoded(GgmlType::Q4_0, &b, 32), v);
    // A positive extreme is clamped: max = +8 → d = -1, x = +8 → code 0 → -8·-1 = 8, but
    // x = -8 → 16.5 → min(15) → (15 - 8)·-1 = -7.
    let mut c = vec![0.0f32; 32];
    c[0] = 8.0;
    c[1] = -8.0;
    let back = decoded(GgmlType::Q4_0, &encode(GgmlType::Q4_0, &c, 32).unwrap(), 32);
    assert_eq!((back[0], back[1], back[2]), (8.0, -7.0, 0.0));
}

/// A block whose largest |x| is tiny (1e-39) gets a subnormal f32 scale, so `1/d` is
/// infinite and every code comes from converting ±∞ or NaN to an integer: C on x86 gives the
/// "integer indefinite" (code 0 after the cast), not Rust's saturation; the TQ quantizers'
/// `lroundf` gives `LONG_MIN`, hence the zero trit. Bytes from the pinned llama.cpp's
/// `quantize_row_q8_0_ref`, `quantize_row_q{4,5}_{0,1}_ref` and `quantize_row_tq{1,2}_0_ref`.
#[test]
fn degenerate_scales_give_ggmls_bytes() {
    let x: Vec<f32> = (0..32).map(|i| ((i % 3) as f32 - 1.0) * 1e-39).collect();
    let hex = |b: Vec<u8>| b.iter().map(|v| format!("{v:02x}")).collect::<String>();
    let zeros = |n: usize| "00".repeat(n);
    let min_f16 = "0080"; // f16(-1e-39) = -0.0
    for (ty, want) in [
        (GgmlType::Q8_0, zeros(34)),
        (GgmlType::Q4_0, zeros(18)),
        (GgmlType::Q4_1, format!("0000{min_f16}{}", zeros(16))),
        (GgmlType::Q5_0, zeros(22)),
        (GgmlType::Q5_1, format!("0000{min_f16}{}", zeros(20))),
    ] {
        assert_eq!(hex(encode(ty, &x, 32).unwrap()), want, "{ty}");
    }
    // TQ: every trit is the zero trit (code 1); the f16 of 1e-39 is 0.
    let x: Vec<f32> = (0..256).map(|i| ((i % 3) as f32 - 1.0) * 1e-39).collect();
    let tq2 = format!("{}0000", "55".repeat(64));
    let tq1 = format!("{}{}0000", "80".repeat(48), "7f".repeat(4));
    assert_eq!(hex(encode(GgmlType::TQ2_0, &x, 256).unwrap()), tq2);
    assert_eq!(hex(encode(GgmlType::TQ1_0, &x, 256).unwrap()), tq1);
}

#[test]
fn q4_1_golden_block() {
    let v: Vec<f32> = (0..32).map(|j| 1.0 + (j % 16) as f32).collect();
    let b = encode(GgmlType::Q4_1, &v, 32).unwrap();
    assert_eq!(&b[..4], &[0x00, 0x3c, 0x00, 0x3c]); // d = 15/15 = 1, m = 1
    assert_eq!(b[4 + 3], 0x33);
    assert_eq!(decoded(GgmlType::Q4_1, &b, 32), v);
}

#[test]
fn tq2_0_golden_layout() {
    let mut v = vec![0.0f32; 256];
    v[0] = 0.5; // byte 0, bits 1:0 → code 2
    v[32] = -0.5; // byte 0, bits 3:2 → code 0
    v[128 + 97] = 0.5; // byte 32 + 1, bits 7:6 → code 2
    let b = encode(GgmlType::TQ2_0, &v, 256).unwrap();
    assert_eq!(b.len(), 66);
    assert_eq!(b[0], 0b01_01_00_10);
    assert_eq!(b[33], 0b10_01_01_01);
    assert_eq!(b[5], 0x55);
    assert_eq!(&b[64..], &[0x00, 0x38]); // f16 0.5, after the codes
    assert_eq!(decoded(GgmlType::TQ2_0, &b, 256), v);
}

#[test]
fn tq1_0_golden_layout() {
    // All zero: trits 1 → base-3 11111 = 121 → ceil(121·256/243) = 128; qh 1111·3 → 127.
    let b = encode(GgmlType::TQ1_0, &[0.0; 256], 256).unwrap();
    assert!(b[..48].iter().all(|&q| q == 128));
    assert!(b[48..52].iter().all(|&q| q == 127));
    assert_eq!(&b[52..], &[0, 0]);
    // Element 0 is the most significant trit of byte 0: 21111₃ = 202 → 213.
    let mut v = vec![0.0f32; 256];
    v[0] = 1.0;
    v[160 + 16] = -1.0; // byte 32, second trit: 10111₃ → 94 → ceil(94·256/243) = 100
    v[240 + 4 + 3] = 1.0; // qh byte 3, second trit
    let b = encode(GgmlType::TQ1_0, &v, 256).unwrap();
    assert_eq!(b[0], 213);
    assert_eq!(b[32], 100);
    assert_eq!(&b[52..], &[0x00, 0x3c]);
    assert_eq!(decoded(GgmlType::TQ1_0, &b, 256), v);
}

#[test]
fn i2_s_golden_layout() {
    let mut v = vec![0.0f32; 256];
    v[0] = 0.75; // block 0, byte 0, bits 7:6 → code 2
    v[32] = -0.75; // byte 0, bits 5:4 → code 0
    v[128 + 96 + 31] = -0.25; // block 1, byte 31, bits 1:0 → code 0 (sign, not rounding)
    v[3] = 1e-7; // below bitnet.cpp's 1e-6 threshold → zero
    let b = encode(GgmlType::I2_S, &v, 128).unwrap();
    assert_eq!(b.len(), 256 / 4 + 32);
    assert_eq!(b[0], 0b10_00_01_01);
    assert_eq!(b[1], 0x55);
    assert_eq!(b[3], 0x55);
    assert_eq!(b[32 + 31], 0b01_01_01_00);
    assert_eq!(f32::from_le_bytes(b[64..68].try_into().unwrap()), 0.75);
    assert!(b[68..].iter().all(|&p| p == 0));
    let back = decoded(GgmlType::I2_S, &b, 256);
    assert_eq!(
        (back[0], back[32], back[3], back[255]),
        (0.75, -0.75, 0.0, -0.75)
    );
}

#[test]
fn ternary_tensors_round_trip_exactly() {
    // Scales f16 can hold exactly, as gen-mini-gguf uses.
    for (seed, scale) in [(1u64, 0.5f32), (2, 0.046875), (3, 3.0)] {
        let v = ternary(seed, 1024, scale);
        for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::I2_S] {
            let b = encode(ty, &v, 512).unwrap();
            assert_eq!(decoded(ty, &b, 1024), v, "{ty} scale {scale}");
        }
    }
}

fn check_bound(ty: GgmlType, v: &[f32], block: usize, bound: impl Fn(&[f32]) -> f32) {
    let back = decoded(ty, &encode(ty, v, v.len()).unwrap(), v.len());
    for (xb, yb) in v.chunks(block).zip(back.chunks(block)) {
        let b = bound(xb);
        for (x, y) in xb.iter().zip(yb) {
            assert!((x - y).abs() <= b, "{ty}: {x} → {y}, bound {b}");
        }
    }
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Relative size of one f16 rounding step, and slack for f32 arithmetic.
const F16_REL: f32 = 1.0 / 2048.0;
const SLACK: f32 = 1e-6;

proptest! {
    #[test]
    fn q8_0_error_is_half_a_step(v in prop::collection::vec(-100.0f32..100.0, 32 * 3)) {
        check_bound(GgmlType::Q8_0, &v, 32, |x| {
            let a = amax(x);
            a / 254.0 + a * F16_REL + a * SLACK
        });
    }

    #[test]
    fn q4_0_error_is_one_step(v in prop::collection::vec(-100.0f32..100.0, 32 * 3)) {
        // Half a step, except the clamp at +8·d costs a whole step.
        check_bound(GgmlType::Q4_0, &v, 32, |x| {
            let a = amax(x);
            a / 8.0 + a * F16_REL + a * SLACK
        });
    }

    #[test]
    fn q4_1_error_is_half_a_step(v in prop::collection::vec(-100.0f32..100.0, 32 * 3)) {
        check_bound(GgmlType::Q4_1, &v, 32, |x| {
            let (lo, hi) = x.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let d = (hi - lo) / 15.0;
            d / 2.0 + 16.0 * d * F16_REL + lo.abs() * F16_REL + amax(x) * SLACK
        });
    }

    #[test]
    fn tq_error_is_half_the_scale(v in prop::collection::vec(-4.0f32..4.0, 512)) {
        for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
            check_bound(ty, &v, 256, |x| amax(x) * (0.5 + 2.0 * F16_REL + SLACK));
        }
    }

    #[test]
    fn ternary_round_trip(seed in any::<u64>(), exp in -8i32..8) {
        let scale = 2f32.powi(exp) * 1.5;
        let v = ternary(seed, 512, scale);
        for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::I2_S] {
            prop_assert_eq!(&decoded(ty, &encode(ty, &v, 256).unwrap(), 512), &v);
        }
    }

    #[test]
    fn i2_s_keeps_signs(v in prop::collection::vec(-2.0f32..2.0, 256)) {
        let back = decoded(GgmlType::I2_S, &encode(GgmlType::I2_S, &v, 256).unwrap(), 256);
        let a = amax(&v);
        for (x, y) in v.iter().zip(&back) {
            let expect = if x.abs() < 1e-6 { 0.0 } else { a.copysign(*x) };
            prop_assert_eq!(*y, expect);
        }
    }

    #[test]
    fn q8_activations_are_within_half_a_step(v in prop::collection::vec(-50.0f32..50.0, 64)) {
        for flavor in [Q8Flavor::Generic, Q8Flavor::Avx] {
            for ty in [ActivationType::Q8_0, ActivationType::Q8_1] {
                let mut a = QuantizedActivation::new();
                a.quantize_with(ty, &v, flavor).unwrap();
                let mut back = vec![0.0; 64];
                a.dequantize(&mut back);
                for (xb, yb) in v.chunks(32).zip(back.chunks(32)) {
                    let m = amax(xb);
                    for (x, y) in xb.iter().zip(yb) {
                        prop_assert!((x - y).abs() <= m / 254.0 + m * F16_REL + m * SLACK);
                    }
                }
            }
        }
    }
}

#[test]
fn q8_flavors_differ_only_in_rounding_ties() {
    // amax 127 → d = 1, id = 1 (generic) and 127/127 = 1 (AVX): only the tie rule differs.
    let mut v = vec![0.0f32; 32];
    v[0] = 127.0;
    v[1] = 2.5;
    v[2] = -0.5;
    v[3] = 1.5;
    let mut g = QuantizedActivation::new();
    g.quantize_with(ActivationType::Q8_1, &v, Q8Flavor::Generic)
        .unwrap();
    let mut a = QuantizedActivation::new();
    a.quantize_with(ActivationType::Q8_1, &v, Q8Flavor::Avx)
        .unwrap();
    assert_eq!(&g.qs[..4], &[127, 3, -1, 2]); // roundf: half away from zero
    assert_eq!(&a.qs[..4], &[127, 2, 0, 2]); // _MM_ROUND_NEAREST: half to even
    assert_eq!(g.d[0], 1.0);
    assert_eq!(g.s[0], 131.0); // f16(Σq · d)
    assert_eq!(a.s[0], 131.0); // 127 + 2 + 0 + 2: the same sum by coincidence
}

#[test]
fn q8_k_activation_matches_ggml_reference() {
    let mut v = vec![0.0f32; 256];
    v[7] = -2.0; // the signed extreme → iscale = -127 / -2 = 63.5
    v[8] = 1.0; // 63.5 → 64 (ties to even)
    v[9] = 0.5; // 31.75 → 32
    v[20] = 2.0; // 127
    let mut a = QuantizedActivation::new();
    a.quantize(ActivationType::Q8_K, &v).unwrap();
    assert_eq!(a.d, vec![1.0 / 63.5]);
    assert_eq!(&a.qs[7..10], &[-127, 64, 32]);
    assert_eq!(a.qs[20], 127);
    assert_eq!(a.bsums[0], -127 + 64 + 32);
    assert_eq!(a.bsums[1], 127);
    // An all-zero block: d = 0 and zero codes.
    a.quantize(ActivationType::Q8_K, &[0.0; 512]).unwrap();
    assert_eq!(a.d, vec![0.0, 0.0]);
    assert!(a.qs.iter().all(|&q| q == 0) && a.bsums.iter().all(|&s| s == 0));
    assert!(matches!(
        a.quantize(ActivationType::Q8_K, &[0.0; 100]),
        Err(QuantError::PartialBlock { block: 256, .. })
    ));
}

#[test]
fn i8_s_activation_matches_bitnet_cpp() {
    // max 127 → s = 1: the codes are the inputs rounded half to even.
    let v = [
        127.0f32,
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -200.0 / 127.0 * 127.0 / 200.0,
        3.4,
    ];
    let mut a = QuantizedActivation::new();
    a.quantize(ActivationType::I8_S, &v).unwrap();
    assert_eq!(a.row_scale, 1.0);
    assert_eq!(&a.qs, &[127, 0, 2, 2, 0, -2, -1, 3]);
    assert_eq!(a.row_sum, 127 + 2 + 2 - 2 - 1 + 3);
    // The max is floored at 1e-5: zeros quantize with s = 127 / 1e-5.
    a.quantize(ActivationType::I8_S, &[0.0; 4]).unwrap();
    assert_eq!(a.row_scale, (127.0f64 / 0.00001) as f32);
    assert_eq!(a.row_sum, 0);
    // -max maps to -127 (the clamp at -128 is never reached from the scale itself).
    a.quantize(ActivationType::I8_S, &[-3.0, 1.0]).unwrap();
    assert_eq!(&a.qs, &[-127, 42]);
    // x·s is rounded once, as bitnet.cpp's fused multiply-add does: with s = f32(127/3) these
    // products lie just off a half-integer (7.49999998…, 8.50000011…) but round to it in
    // f32, where ties-to-even would give 8 and 8 instead of 7 and 9.
    let x = [
        -3.0,
        f32::from_le_bytes([0xd6, 0x6a, 0x35, 0x3e]),
        f32::from_le_bytes([0x37, 0x9b, 0x4d, 0x3e]),
    ];
    a.quantize(ActivationType::I8_S, &x).unwrap();
    assert_eq!(a.row_scale, (127.0f64 / 3.0) as f32);
    assert_eq!((x[1] * a.row_scale, x[2] * a.row_scale), (7.5, 8.5));
    assert_eq!(&a.qs, &[-127, 7, 9]);
}

#[test]
fn activation_buffers_are_reused() {
    let mut a = QuantizedActivation::new();
    a.quantize(ActivationType::Q8_K, &noise(3, 1024)).unwrap();
    let cap = a.qs.capacity();
    a.quantize(ActivationType::Q8_0, &noise(4, 512)).unwrap();
    assert_eq!(a.len(), 512);
    assert_eq!(a.qs.capacity(), cap);
    assert_eq!(a.ty(), ActivationType::Q8_0);
}

/// A Q8_0 activation written as `block_q8_0`s decodes to the values it stands for, and the
/// weight kernel reads those blocks (a Q8_0 KV cache row is such an activation).
#[test]
fn q8_0_activation_blocks_are_block_q8_0() {
    let x = noise(7, 64);
    let mut a = QuantizedActivation::new();
    a.quantize(ActivationType::Q8_0, &x).unwrap();
    let mut blocks = Vec::new();
    a.append_q8_0_blocks(&mut blocks).unwrap();
    assert_eq!(blocks.len(), 2 * 34);
    let mut values = vec![0f32; 64];
    a.dequantize(&mut values);
    assert_eq!(decoded(GgmlType::Q8_0, &blocks, 64), values);
    let m = QuantizedMatrix::new(GgmlType::Q8_0, &blocks, 1, 64).unwrap();
    let mut y = QuantizedActivation::new();
    y.quantize(ActivationType::Q8_0, &noise(8, 64)).unwrap();
    let mut yv = vec![0f32; 64];
    y.dequantize(&mut yv);
    let exact: f64 = values
        .iter()
        .zip(&yv)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    assert!((m.dot_row(0, &y) as f64 - exact).abs() < 1e-4);
    let mut f32_act = QuantizedActivation::new();
    f32_act.quantize(ActivationType::F32, &x).unwrap();
    assert!(f32_act.append_q8_0_blocks(&mut blocks).is_none());
}
