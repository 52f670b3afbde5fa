//! K-quant tests: layouts by hand, encoders and kernels against values recorded from
//! llama.cpp's own functions, error bounds, SIMD == scalar on arbitrary bytes, four tokens ==
//! one, and corrupt scales.
//!
//! The "recorded" expectations were produced by linking the reference's `libggml-base.a` and
//! `libggml-cpu.a` (llama-cpp-sys-2 0.1.161, the build the project compares against) and
//! calling `quantize_row_q*_K_ref`, `quantize_row_q8_K`, `ggml_vec_dot_q*_K_q8_K`,
//! `ggml_quantize_mat_q8_K_4x8`, `ggml_gemv_q4_K_8x8_q8_K` and `ggml_gemm_q4_K_8x8_q8_K` on
//! the inputs below; the same harness compared thousands of random blocks (encoders byte for
//! byte, decoders and kernels bit for bit) without a difference.

use bitnet_gguf::GgmlType;
use proptest::prelude::*;

use super::{q2_k, q3_k, q4_k, q5_k, q6_k};
use crate::activation::{ActivationType, QuantizedActivation};
use crate::blocks::QK_K;
use crate::matrix::{Backend, QuantizedMatrix};
use crate::tests::noise;
use crate::{decode, encode};

const K_QUANTS: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn decoded(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![f32::NAN; bytes.len() / super::block_bytes(ty).unwrap() * QK_K];
    decode(ty, bytes, &mut out).unwrap();
    out
}

fn activation(x: &[f32]) -> QuantizedActivation {
    let mut a = QuantizedActivation::new();
    a.quantize(ActivationType::Q8_K, x).unwrap();
    a
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Scalar];
    if Backend::detect() != Backend::Scalar {
        b.push(Backend::detect());
    }
    b
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn block_sizes_are_ggml_commons() {
    // ggml-common.h static_asserts.
    assert_eq!(q2_k::BYTES, 2 * 2 + QK_K / 16 + QK_K / 4);
    assert_eq!(q3_k::BYTES, 2 + QK_K / 4 + QK_K / 8 + 12);
    assert_eq!(q4_k::BYTES, 2 * 2 + 12 + QK_K / 2);
    assert_eq!(q5_k::BYTES, 2 * 2 + 12 + QK_K / 2 + QK_K / 8);
    assert_eq!(q6_k::BYTES, 2 + QK_K / 16 + 3 * QK_K / 4);
    for ty in K_QUANTS {
        let bytes = ty.block_bytes().unwrap();
        assert_eq!(super::block_bytes(ty).unwrap() as u64, bytes, "{ty}");
        assert_eq!(
            encode(ty, &noise(1, 512), 256).unwrap().len() as u64,
            2 * bytes
        );
    }
}

/// Raw bytes of one block with the f16 `d` (and `dmin`) at their offsets.
fn block_with_scales(ty: GgmlType, d: f32, dmin: f32) -> Vec<u8> {
    let mut b = vec![0u8; super::block_bytes(ty).unwrap()];
    let (d_at, dmin_at) = match ty {
        GgmlType::Q2_K => (q2_k::D, Some(q2_k::D + 2)),
        GgmlType::Q3_K => (q3_k::D, None),
        GgmlType::Q4_K | GgmlType::Q5_K => (0, Some(2)),
        GgmlType::Q6_K => (q6_k::D, None),
        other => unreachable!("{other}"),
    };
    b[d_at..d_at + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    if let Some(at) = dmin_at {
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(dmin).to_le_bytes());
    }
    b
}

#[test]
fn q6_k_golden_layout() {
    let mut b = block_with_scales(GgmlType::Q6_K, 0.5, 0.0);
    b[q6_k::SCALES + 12] = 3; // sub-block 12 holds elements 192..208
    b[q6_k::SCALES + 1] = (-2i8) as u8; // sub-block 1: elements 16..32
                                        // Element 200 = 128 + 32·2 + 8: high nibble of ql[64 + 8], bits 5:4 of qh[32 + 8].
    b[72] = 0x50;
    b[q6_k::QH + 40] = 0b10 << 4;
    // Element 17 = 32·0 + 17: low nibble of ql[17], bits 1:0 of qh[17]; code 63.
    b[17] = 0x0F;
    b[q6_k::QH + 17] = 0b11;
    let y = decoded(GgmlType::Q6_K, &b);
    assert_eq!(y[200], 0.5 * 3.0 * (0x25 - 32) as f32);
    assert_eq!(y[17], 0.5 * -2.0 * 31.0);
    assert_eq!(y[199], 0.5 * 3.0 * -32.0, "code 0 is −32");
    assert_eq!(y[0], 0.0, "scale 0");
}

#[test]
fn q4_k_and_q5_k_golden_layout() {
    for ty in [GgmlType::Q4_K, GgmlType::Q5_K] {
        let mut b = block_with_scales(ty, 0.25, 2.0);
        // Sub-block 5 (elements 160..192): scale 0b10_0111 = 39, min 0b11_0001 = 49 — low
        // nibbles in byte 4 + 5 = 9 (scale low, min high), top bits in bytes 1 and 5.
        b[4 + 9] = 0x17;
        b[4 + 1] = 0b10 << 6;
        b[4 + 5] = 0b11 << 6;
        let qs = if ty == GgmlType::Q4_K {
            q4_k::QS
        } else {
            q5_k::QS
        };
        // Element 170 = 64·2 + 32 + 10: high nibble of qs[64 + 10].
        b[qs + 74] = 0x90;
        if ty == GgmlType::Q5_K {
            b[q5_k::QH + 10] = 1 << 5; // bit 2c + h = 5: the fifth bit
        }
        let code = if ty == GgmlType::Q4_K { 9.0 } else { 25.0 };
        let y = decoded(ty, &b);
        assert_eq!(y[170], 0.25 * 39.0 * code - 2.0 * 49.0, "{ty}");
        assert_eq!(y[171], -2.0 * 49.0, "{ty}");
        assert_eq!(
            y[10], 0.0,
            "{ty}: scale and min 0 (the spare bits of byte 1 are sub-block 5's)"
        );
    }
}

#[test]
fn q3_k_golden_layout() {
    let mut b = block_with_scales(GgmlType::Q3_K, 1.0, 0.0);
    // Scale 9 (elements 144..160): low nibble in the high half of scales[1], top bits in
    // bits 5:4 of scales[8 + 1]; (0b01 << 4 | 0x3) − 32 = −13.
    b[q3_k::SCALES + 1] = 0x30;
    b[q3_k::SCALES + 9] = 0b01 << 4;
    // Element 150 = 128 + 22: bits 1:0 of qs[32 + 22], high bit 4 of hmask[22].
    b[q3_k::QS + 54] = 0b10;
    b[22] = 1 << 4;
    let y = decoded(GgmlType::Q3_K, &b);
    assert_eq!(y[150], -13.0 * 2.0, "high bit set: code 2");
    assert_eq!(y[151], -13.0 * -4.0, "high bit clear: −4");
    assert_eq!(y[0], -32.0 * -4.0, "scale code 0 is −32");
}

#[test]
fn q2_k_golden_layout() {
    let mut b = block_with_scales(GgmlType::Q2_K, 0.5, 0.25);
    b[13] = 0x6B; // sub-block 13 (elements 208..224): scale 11, min 6
                  // Element 220 = 128 + 32·2 + 28: bits 5:4 of qs[32 + 28].
    b[q2_k::QS + 60] = 0b11 << 4;
    let y = decoded(GgmlType::Q2_K, &b);
    assert_eq!(y[220], 0.5 * 11.0 * 3.0 - 0.25 * 6.0);
    assert_eq!(y[221], -0.25 * 6.0);
}

#[test]
fn zero_blocks_encode_to_zero() {
    for ty in K_QUANTS {
        let b = encode(ty, &[0.0; 256], 256).unwrap();
        assert!(b.iter().all(|&v| v == 0), "{ty}");
        assert!(decoded(ty, &b).iter().all(|&v| v == 0.0), "{ty}");
    }
}

/// One block of `noise(1, 256)` as llama.cpp's `quantize_row_q*_K_ref` encodes it.
const RECORDED_BLOCKS: [(GgmlType, &str); 5] = [
    (GgmlType::Q2_K, "eddeba7accefdddaedfffcbaddbcbddc7b5ddea1299a567fa3161091817cc60fc46ef3c21d12e87124106bedb0d1b56276dd220dc5221e0b495a8e20ab7fa587b60807e695dd2ea6a4b00eed718ffda98729432c"),
    (GgmlType::Q3_K, "db2ed7a01ad7bd9b819d3cc474fa451fbf605a9ec5f639d3838770a913ffa9a2170b1ce5f1d59d0bf7ede4e1f3983efeb6a744bb215eab88234bb961ca655dba753fc4da18d0e9de1f7c9991c77fabce50347ffd5f986d0e3c0569efd03b9a66084d599849baab570ccfcc03cda0"),
    (GgmlType::Q4_K, "73181524f9f7f9fcf9f9fbffcafbffceadb6c732729959cd2d58301205c06bec63ea5f49f52bb0478040cdf63355964c7d77f5ab19a6458f9a152494914cf232b04cafb20526bb4f1b28499c6fa39e493bd628b34708c96c7678b900affe455d78a06f6a65c7d97b6032bad617bfb4a46de52722e21914127156a139986dab908d0111daa6b61a88797e23cb6d72bd9b"),
    (GgmlType::Q5_K, "28141724fdf9fbfffbf7faffeeecfded57a25a2c845b31178d11b048f876c993d8271dd982a17ed4c6c037ee4438eee53b6c9f55e512a38b4ba150150a71d6d8b6d4af92fa47717f01818bed66ab1d79fbfeea56235c8aff253949382289f35460985f74094d769e264f8338df472c8367bd40877e0093d9ece073015efd8abaf150ced4cb8fc3e7c06485bd2e7f7958ddfb5044f434393413cd727341ed68402d0232d66d8e2721040f57b7dcf58d49"),
    (GgmlType::Q6_K, "8849cf2b9a76b70758d4e1fbd5b2af82f307106bcb503d302d0e9805132975ac282d235ccf64f611baa59b94b1001b5cd825bbfd0186f1204e7eff73a28a5c009f7af08d8d81377369a047502f9c041753e1dc49675f36ee82194b1b7d8d63f15b06779f1fb0a2baec8b1d31894d3f854c1a67a9b702594b05f9a158b0e00f7c8ba92d50d46aa68f53e6e06071cc36ffbb5188b9222d974e172b10924fba865cb21dd2c801e2dec745964ae06bbf7147863837d6a5ed1e9694403edd417fc98989788d7371787b858c80859583757583248c"),
];

#[test]
fn encoders_are_byte_identical_to_llama_cpps() {
    for (ty, recorded) in RECORDED_BLOCKS {
        assert_eq!(
            encode(ty, &noise(1, 256), 256).unwrap(),
            hex(recorded),
            "{ty}"
        );
    }
}

/// `ggml_vec_dot_q*_K_q8_K` of `noise(2, 768)` encoded by ggml and `4 · noise(3, 768)`
/// quantized by `quantize_row_q8_K`.
const RECORDED_DOTS: [(GgmlType, u32); 5] = [
    (GgmlType::Q2_K, 0xc01b_f5a8),
    (GgmlType::Q3_K, 0x411a_443a),
    (GgmlType::Q4_K, 0x40ef_0f7c),
    (GgmlType::Q5_K, 0x4102_2d50),
    (GgmlType::Q6_K, 0x4113_11a5),
];

#[test]
fn kernels_are_bit_identical_to_llama_cpps() {
    let x: Vec<f32> = noise(3, 768).iter().map(|v| v * 4.0).collect();
    let a = activation(&x);
    for (ty, bits) in RECORDED_DOTS {
        let w = encode(ty, &noise(2, 768), 768).unwrap();
        for backend in backends() {
            let m = QuantizedMatrix::new(ty, &w, 1, 768)
                .unwrap()
                .with_backend(backend);
            assert_eq!(m.dot_row(0, &a).to_bits(), bits, "{ty} {backend:?}");
        }
    }
}

/// The same row and activation as [`RECORDED_DOTS`], as the first of 8 tokens multiplied by
/// `ggml_mul_mat` (a 4×768 matrix `noise(2)`, tokens `4 · noise(3)`): from 8 tokens on
/// llama.cpp takes its tiled matmul, which folds each block as `fma(d·s1 − dmin·s2, dy, acc)`;
/// with 7 it is still `vec_dot`.
const RECORDED_TILED: [(GgmlType, u32); 5] = [
    (GgmlType::Q2_K, 0xc01b_f5b5),
    (GgmlType::Q3_K, 0x411a_443b),
    (GgmlType::Q4_K, 0x40ef_0f69),
    (GgmlType::Q5_K, 0x4102_2d54),
    (GgmlType::Q6_K, 0x4113_11ab),
];

#[test]
fn batches_of_eight_tokens_take_llama_cpps_tiled_order() {
    let x: Vec<f32> = noise(3, 8 * 768).iter().map(|v| v * 4.0).collect();
    let acts: Vec<QuantizedActivation> = x.chunks_exact(768).map(activation).collect();
    for ((ty, tiled), (_, vec_dot)) in RECORDED_TILED.into_iter().zip(RECORDED_DOTS) {
        let w = encode(ty, &noise(2, 4 * 768), 768).unwrap();
        for backend in backends() {
            let m = QuantizedMatrix::new(ty, &w, 4, 768)
                .unwrap()
                .with_backend(backend);
            let mut out = vec![0.0; 8 * 4];
            m.matmul(&acts, &mut out);
            assert_eq!(out[0].to_bits(), tiled, "{ty} {backend:?}: 8 tokens");
            m.matmul(&acts[..7], &mut out[..7 * 4]);
            assert_eq!(out[0].to_bits(), vec_dot, "{ty} {backend:?}: 7 tokens");
        }
    }
}

/// The first output of an 8×512 Q4_K matrix (`noise(4)`) times `3 · noise(5)` (four tokens):
/// llama.cpp's three kernels give three different f32s for the same row.
#[test]
fn repacked_q4_k_reproduces_gemv_and_gemm() {
    const VEC_DOT: u32 = 0xc035_9cf0;
    const GEMV: [u32; 8] = [
        0xc035_9cf2,
        0x41e8_0b6d,
        0xc211_6eb5,
        0x412c_a868,
        0xc19b_5fe4,
        0x422e_1396,
        0xc1fe_b846,
        0xc18c_3425,
    ];
    const GEMM_TOKEN_0: [u32; 8] = [
        0xc035_9cef,
        0x41e8_0b6c,
        0xc211_6eb6,
        0x412c_a868,
        0xc19b_5fe5,
        0x422e_1395,
        0xc1fe_b846,
        0xc18c_3426,
    ];
    let (rows, cols) = (8, 512);
    let w = encode(GgmlType::Q4_K, &noise(4, rows * cols), cols).unwrap();
    let x: Vec<f32> = noise(5, 4 * cols).iter().map(|v| v * 3.0).collect();
    let acts: Vec<QuantizedActivation> = x.chunks_exact(cols).map(activation).collect();
    for backend in backends() {
        let plain = QuantizedMatrix::new(GgmlType::Q4_K, &w, rows, cols)
            .unwrap()
            .with_backend(backend);
        assert_eq!(plain.dot_row(0, &acts[0]).to_bits(), VEC_DOT, "{backend:?}");
        let m = plain.repacked_like_llama_cpp();
        let mut one = vec![0.0; rows];
        m.matvec(&acts[0], &mut one);
        assert_eq!(one.map_bits(), GEMV, "{backend:?} gemv");
        let mut four = vec![0.0; 4 * rows];
        m.matmul(&acts, &mut four);
        assert_eq!(
            four[..rows].to_vec().map_bits(),
            GEMM_TOKEN_0,
            "{backend:?} gemm"
        );
        // Five tokens: four in the gemm group, the fifth alone through gemv.
        let five: Vec<QuantizedActivation> = acts.iter().chain([&acts[0]]).cloned().collect();
        let mut out = vec![0.0; 5 * rows];
        m.matmul(&five, &mut out);
        assert_eq!(out[..4 * rows], four[..], "{backend:?}");
        assert_eq!(
            out[4 * rows..].to_vec().map_bits(),
            GEMV,
            "{backend:?} leftover token"
        );
    }
}

trait Bits {
    fn map_bits(&self) -> [u32; 8];
}

impl Bits for Vec<f32> {
    fn map_bits(&self) -> [u32; 8] {
        std::array::from_fn(|i| self[i].to_bits())
    }
}

/// llama.cpp quantizes the activations of a gemm group with `ggml_quantize_mat_q8_K_4x8`,
/// which picks `+amax` over `−amax` where `quantize_row_q8_K` picks the first of the two: the
/// codes, bsums and scale all change sign, and every kernel's result stays the same bits.
#[test]
fn negated_q8_k_activations_give_the_same_bits() {
    let mut x = noise(8, 512);
    x[3] = -2.0; // −amax first: quantize_row_q8_K takes iscale = 127/2, the 4x8 form −127/2
    x[9] = 2.0;
    let a = activation(&x);
    let mut neg = a.clone();
    neg.qs.iter_mut().for_each(|q| *q = -*q);
    neg.bsums.iter_mut().for_each(|s| *s = -*s);
    neg.d.iter_mut().for_each(|d| *d = -*d);
    for ty in K_QUANTS {
        let w = encode(ty, &noise(9, 8 * 512), 512).unwrap();
        for backend in backends() {
            let m = QuantizedMatrix::new(ty, &w, 8, 512)
                .unwrap()
                .with_backend(backend);
            for m in [m, m.repacked_like_llama_cpp()] {
                let four = [a.clone(), a.clone(), a.clone(), a.clone()];
                let four_neg = [neg.clone(), neg.clone(), neg.clone(), neg.clone()];
                let (mut y, mut y_neg) = (vec![0.0; 32], vec![0.0; 32]);
                m.matmul(&four, &mut y);
                m.matmul(&four_neg, &mut y_neg);
                assert_eq!(y.map_bits(), y_neg.map_bits(), "{ty} {backend:?}");
            }
        }
    }
}

/// One step of the block-wide grid, 2·amax / levels, with half a step to spare.
fn error_bound(ty: GgmlType, amax: f32) -> f32 {
    let levels = match ty {
        GgmlType::Q2_K => 4.0,
        GgmlType::Q3_K => 8.0,
        GgmlType::Q4_K => 16.0,
        GgmlType::Q5_K => 32.0,
        GgmlType::Q6_K => 64.0,
        other => unreachable!("{other}"),
    };
    1.5 * 2.0 * amax / levels
}

/// Arbitrary bytes with finite, moderate f16 scales (exponents 2⁻¹⁰..2¹).
fn arbitrary_block_bytes(ty: GgmlType, seed: u64, blocks: usize) -> Vec<u8> {
    let nb = super::block_bytes(ty).unwrap();
    let mut w: Vec<u8> = noise(seed, blocks * nb)
        .iter()
        .map(|v| ((v + 1.0) * 127.99) as u8)
        .collect();
    let scales = noise(seed + 1, 2 * blocks);
    for (b, s) in w.chunks_exact_mut(nb).zip(scales.chunks_exact(2)) {
        let f = |v: f32| half::f16::from_f32(v * 2.0).to_le_bytes();
        let (d, dmin) = match ty {
            GgmlType::Q2_K => (q2_k::D, Some(q2_k::D + 2)),
            GgmlType::Q3_K => (q3_k::D, None),
            GgmlType::Q6_K => (q6_k::D, None),
            _ => (0, Some(2)),
        };
        b[d..d + 2].copy_from_slice(&f(s[0]));
        if let Some(m) = dmin {
            b[m..m + 2].copy_from_slice(&f(s[1]));
        }
    }
    w
}

/// Full-range activation codes (including −128, which ggml's quantizer never makes) with
/// consistent bsums, and arbitrary scales: the kernels' integer steps at their limits.
fn arbitrary_activation(seed: u64, blocks: usize) -> QuantizedActivation {
    let mut a = activation(&noise(seed, blocks * QK_K));
    for (q, v) in a.qs.iter_mut().zip(noise(seed + 7, blocks * QK_K)) {
        *q = ((v + 1.0) * 127.99) as u8 as i8;
    }
    a.qs[..16].fill(-128);
    a.qs[16..32].fill(127);
    for (s, q) in a.bsums.iter_mut().zip(a.qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| v as i16).sum();
    }
    a
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// (Magnitudes much below 0.05 put Q6_K's f16 `d ≈ amax / 4096` among the f16
    /// subnormals, whose coarse spacing adds to the error — in llama.cpp as here.)
    #[test]
    fn decode_of_encode_is_within_a_step(
        seed in any::<u64>(),
        scale in prop::sample::select(vec![0.05f32, 1.0, 30.0, 1e4]),
        skew in prop::sample::select(vec![0.0f32, 0.5, 2.0]),
    ) {
        let x: Vec<f32> = noise(seed, 3 * QK_K).iter().map(|v| (v + skew) * scale).collect();
        for ty in K_QUANTS {
            let y = decoded(ty, &encode(ty, &x, QK_K).unwrap());
            for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact(QK_K)) {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (e, (a, b)) in xb.iter().zip(yb).enumerate() {
                    prop_assert!((a - b).abs() <= error_bound(ty, amax), "{ty} element {e}: {a} → {b} (amax {amax})");
                }
            }
        }
    }

    #[test]
    fn simd_is_bit_identical_to_scalar_on_arbitrary_bytes(
        seed in any::<u64>(),
        blocks in prop::sample::select(vec![1usize, 3, 5]),
    ) {
        let detected = Backend::detect();
        let a = arbitrary_activation(seed ^ 0x5555, blocks);
        for ty in K_QUANTS {
            let w = arbitrary_block_bytes(ty, seed, 2 * blocks);
            let m = QuantizedMatrix::new(ty, &w, 2, blocks * QK_K).unwrap();
            for r in 0..2 {
                let scalar = m.with_backend(Backend::Scalar).dot_row(r, &a);
                let simd = m.with_backend(detected).dot_row(r, &a);
                prop_assert_eq!(scalar.to_bits(), simd.to_bits(), "{} row {}", ty, r);
            }
        }
        // The tiled order (batches of 8) on the same bytes.
        let acts: Vec<QuantizedActivation> = (0..8).map(|t| arbitrary_activation(seed + 100 + t, blocks)).collect();
        for ty in K_QUANTS {
            let w = arbitrary_block_bytes(ty, seed ^ 0x77, 2 * blocks);
            let m = QuantizedMatrix::new(ty, &w, 2, blocks * QK_K).unwrap();
            let (mut scalar, mut simd) = (vec![0.0; 16], vec![0.0; 16]);
            m.with_backend(Backend::Scalar).matmul(&acts, &mut scalar);
            m.with_backend(detected).matmul(&acts, &mut simd);
            prop_assert_eq!(scalar.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), simd.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{} tiled", ty);
        }
        // The repacked kernels (gemv and the gemm group order) on the same bytes.
        let w = arbitrary_block_bytes(GgmlType::Q4_K, seed, 8 * blocks);
        let m = QuantizedMatrix::new(GgmlType::Q4_K, &w, 8, blocks * QK_K).unwrap();
        let acts: Vec<QuantizedActivation> = (0..5).map(|t| arbitrary_activation(seed + t, blocks)).collect();
        let (mut scalar, mut simd) = (vec![0.0; 40], vec![0.0; 40]);
        m.with_backend(Backend::Scalar).repacked_like_llama_cpp().matmul(&acts, &mut scalar);
        m.with_backend(detected).repacked_like_llama_cpp().matmul(&acts, &mut simd);
        prop_assert_eq!(scalar.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), simd.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn four_token_kernels_equal_one_token_kernels(seed in any::<u64>(), tokens in 4usize..13) {
        let cols = 3 * QK_K;
        let acts: Vec<QuantizedActivation> = (0..tokens as u64)
            .map(|t| activation(&noise(seed.wrapping_add(t), cols).iter().map(|v| v * 5.0).collect::<Vec<_>>()))
            .collect();
        // One thread: tasks of up to 8 tokens, so the four-token kernels run.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        for ty in K_QUANTS {
            let w = encode(ty, &noise(seed ^ 0xabc, 8 * cols), cols).unwrap();
            for backend in backends() {
                let plain = QuantizedMatrix::new(ty, &w, 8, cols).unwrap().with_backend(backend);
                for (repacked, m) in [plain, plain.repacked_like_llama_cpp()].into_iter().enumerate() {
                    let mut out = vec![0.0; tokens * 8];
                    pool.install(|| m.matmul(&acts, &mut out));
                    let grouped = repacked == 1 && ty == GgmlType::Q4_K;
                    let tiled = super::scalar_tiled_kernel(ty).unwrap();
                    for (t, a) in acts.iter().enumerate() {
                        // Tokens of a repacked gemm group follow the gemm order; batches of 8
                        // or more of plain matrices the tiled order; the rest the one-token
                        // kernel.
                        let one: Vec<u32> = if grouped && t < tokens / 4 * 4 {
                            (0..8).map(|r| q4_k::dot_repacked(m.row(r), a, q4_k::GEMM_FOLD).to_bits()).collect()
                        } else if !grouped && tokens >= super::TILED_MIN_BATCH {
                            (0..8).map(|r| tiled(m.row(r), 1.0, a).to_bits()).collect()
                        } else {
                            (0..8).map(|r| m.dot_row(r, a).to_bits()).collect()
                        };
                        let got: Vec<u32> = out[t * 8..t * 8 + 8].iter().map(|v| v.to_bits()).collect();
                        prop_assert_eq!(got, one, "{} {:?} token {}", ty, backend, t);
                    }
                }
            }
        }
    }
}

/// NaN or infinite super-block scales: no panic, and the value ggml's arithmetic gives —
/// `inf · 0` is NaN, so a block whose scale is infinite poisons the whole row (some lane or
/// the minimums' term is zero) unless every term is non-zero.
#[test]
fn corrupt_scales_give_ggmls_values_without_panicking() {
    let x = noise(12, 2 * QK_K);
    let a = activation(&x);
    for ty in K_QUANTS {
        let nb = super::block_bytes(ty).unwrap();
        let good = encode(ty, &noise(13, 2 * QK_K), 2 * QK_K).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for offset in [0usize, 2] {
                let mut w = good.clone();
                let at = match ty {
                    GgmlType::Q2_K => q2_k::D + offset,
                    GgmlType::Q3_K => q3_k::D,
                    GgmlType::Q6_K => q6_k::D,
                    _ => offset,
                };
                w[nb + at..nb + at + 2].copy_from_slice(&half::f16::from_f32(bad).to_le_bytes());
                let y = decoded(ty, &w);
                assert!(
                    y[..QK_K].iter().all(|v| v.is_finite()),
                    "{ty}: the first block is intact"
                );
                assert!(
                    y[QK_K..].iter().any(|v| !v.is_finite()),
                    "{ty}: the corrupt block decodes to non-finite values"
                );
                let m = QuantizedMatrix::new(ty, &w, 1, 2 * QK_K).unwrap();
                let results: Vec<f32> = backends()
                    .iter()
                    .map(|&b| m.with_backend(b).dot_row(0, &a))
                    .collect();
                for r in &results {
                    assert!(!r.is_finite(), "{ty} {bad} at +{offset}: {r}");
                    assert_eq!(r.is_nan(), results[0].is_nan(), "{ty}: backends agree");
                }
                if bad.is_nan() {
                    assert!(results[0].is_nan(), "{ty}: NaN propagates");
                }
                let encoded = encode(ty, &[bad; QK_K], QK_K).unwrap();
                assert_eq!(
                    encoded.len(),
                    nb,
                    "{ty}: encoding non-finite values does not panic"
                );
            }
        }
    }
}
