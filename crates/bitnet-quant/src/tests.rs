//! Unit tests: golden layouts, round trips, error bounds, activation quantization, kernels.

use proptest::prelude::*;

use super::*;
use crate::blocks::round_f16;
use crate::matrix::Backend;

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
