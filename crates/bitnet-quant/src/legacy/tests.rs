//! Q5_0, Q5_1 and IQ4_NL: layouts, round trips, kernels (scalar vs SIMD, four tokens vs one,
//! batch vs one token, repacked), corrupt scales.

use proptest::prelude::*;

use super::KVALUES_IQ4NL;
use crate::activation::{ActivationType, QuantizedActivation};
use crate::blocks::{f16_at, round_f16, IQ4_NL_BYTES, Q5_0_BYTES, Q5_1_BYTES, QK};
use crate::matrix::{Backend, QuantizedMatrix, WeightType};
use crate::tests::noise;
use crate::{decode, encode, GgmlType};

const TYPES: [GgmlType; 3] = [GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL];

fn decoded(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    decode(ty, bytes, &mut out).unwrap();
    out
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Scalar];
    if Backend::detect() != Backend::Scalar {
        b.push(Backend::detect());
    }
    b
}

fn activation(ty: ActivationType, x: &[f32]) -> QuantizedActivation {
    let mut a = QuantizedActivation::new();
    a.quantize(ty, x).unwrap();
    a
}

#[test]
fn q5_0_golden_block() {
    // The element of largest magnitude is −16 → d = −16 / −16 = 1; code = x + 16.
    let v: Vec<f32> = (0..32).map(|j| j as f32 - 16.0).collect();
    let b = encode(GgmlType::Q5_0, &v, 32).unwrap();
    assert_eq!(b.len(), Q5_0_BYTES);
    assert_eq!(&b[..2], &[0x00, 0x3c]); // f16 1.0
                                        // Codes 16..32 (elements 16..32) have the fifth bit: qh = 0xFFFF0000, little-endian.
    assert_eq!(&b[2..6], &[0x00, 0x00, 0xff, 0xff]);
    for j in 0..16 {
        // Low nibble: element j (code j); high nibble: element j + 16 (code j + 16).
        assert_eq!(b[6 + j], (j as u8) | ((j as u8) << 4), "byte {j}");
    }
    assert_eq!(decoded(GgmlType::Q5_0, &b, 32), v);
    // A positive extreme: d = 16 / −16 = −1; +16 → code 0 → 16, but −16 → 32.5 → clamped
    // to 31 → −15.
    let mut c = vec![0.0f32; 32];
    c[0] = 16.0;
    c[1] = -16.0;
    c[2] = 3.0;
    let back = decoded(GgmlType::Q5_0, &encode(GgmlType::Q5_0, &c, 32).unwrap(), 32);
    assert_eq!(&back[..4], &[16.0, -15.0, 3.0, 0.0]);
}

#[test]
fn q5_1_golden_block() {
    // min 1, max 32 → d = 31 / 31 = 1, m = 1, code = x − 1.
    let v: Vec<f32> = (0..32).map(|j| 1.0 + j as f32).collect();
    let b = encode(GgmlType::Q5_1, &v, 32).unwrap();
    assert_eq!(b.len(), Q5_1_BYTES);
    assert_eq!(&b[..4], &[0x00, 0x3c, 0x00, 0x3c]);
    assert_eq!(&b[4..8], &[0x00, 0x00, 0xff, 0xff]);
    assert_eq!(b[8 + 5], 0x55);
    assert_eq!(decoded(GgmlType::Q5_1, &b, 32), v);
    // A constant block: d = 0, every code 0, the value is the minimum.
    let b = encode(GgmlType::Q5_1, &[-2.5; 32], 32).unwrap();
    assert_eq!(&b[..2], &[0, 0]);
    assert!(b[4..].iter().all(|&q| q == 0));
    assert_eq!(decoded(GgmlType::Q5_1, &b, 32), vec![-2.5; 32]);
}

#[test]
fn iq4_nl_golden_block() {
    // Values exactly on the table: the scale search finds d = 1 (an exact fit maximises
    // Σwqx² / Σwq²), and element j gets index j mod 16.
    let v: Vec<f32> = (0..32).map(|j| KVALUES_IQ4NL[j % 16] as f32).collect();
    let b = encode(GgmlType::IQ4_NL, &v, 32).unwrap();
    assert_eq!(b.len(), IQ4_NL_BYTES);
    assert_eq!(&b[..2], &[0x00, 0x3c]);
    for j in 0..16 {
        assert_eq!(b[2 + j], (j as u8) | ((j as u8) << 4), "byte {j}");
    }
    assert_eq!(decoded(GgmlType::IQ4_NL, &b, 32), v);
    // The same values scaled by −1/4: the search takes a negative scale, d = −0.25.
    let w: Vec<f32> = v.iter().map(|x| x * -0.25).collect();
    let b = encode(GgmlType::IQ4_NL, &w, 32).unwrap();
    assert_eq!(f16_at(&b, 0), -0.25);
    assert_eq!(decoded(GgmlType::IQ4_NL, &b, 32), w);
    // All zero (below GROUP_MAX_EPS): scale 0, and every index is the level nearest 0 (1, at
    // index 8) — what ggml writes.
    let b = encode(GgmlType::IQ4_NL, &[0.0; 32], 32).unwrap();
    assert_eq!(&b[..2], &[0, 0]);
    assert!(b[2..].iter().all(|&q| q == 0x88));
    assert_eq!(decoded(GgmlType::IQ4_NL, &b, 32), vec![0.0; 32]);
}

/// Bytes written by the pinned llama.cpp's own quantizers (ggml-base of `llama-cpp-sys-2
/// 0.1.161`: `quantize_row_q5_0_ref`, `quantize_row_q5_1_ref`, `quantize_iq4_nl`) for the
/// first block of `noise(7, 32)`, recorded from its static library.
#[test]
fn encoders_match_bytes_from_llama_cpp() {
    let v = noise(7, 32);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for (ty, want) in [
        (GgmlType::Q5_0, GOLDEN_Q5_0),
        (GgmlType::Q5_1, GOLDEN_Q5_1),
        (GgmlType::IQ4_NL, GOLDEN_IQ4_NL),
    ] {
        assert_eq!(hex(&encode(ty, &v, 32).unwrap()), want, "{ty}");
    }
}

const GOLDEN_Q5_0: &str = "7f2b8f4f98ba6fef30b2ab969225e638bc0f60508146";
const GOLDEN_Q5_1: &str = "af2b7fbb8f4f98ba5fee30a2ab869225d538bb0e60508146";
const GOLDEN_IQ4_NL: &str = "ac1f2f7f18e9e53241ab6cad5e8fc0b039b2";

/// Relative size of one f16 rounding step, and slack for f32 arithmetic.
const F16_REL: f32 = 1.0 / 2048.0;
const SLACK: f32 = 1e-6;

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn round_trip(ty: GgmlType, v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let b = encode(ty, v, v.len()).unwrap();
    let back = decoded(ty, &b, v.len());
    (b, back)
}

proptest! {
    #[test]
    fn q5_0_error_is_one_step(v in prop::collection::vec(-100.0f32..100.0, 32 * 3)) {
        // Half a step (amax / 32), except the clamp at +16·d costs a whole one.
        let (_, back) = round_trip(GgmlType::Q5_0, &v);
        for (xb, yb) in v.chunks(32).zip(back.chunks(32)) {
            let a = amax(xb);
            for (x, y) in xb.iter().zip(yb) {
                prop_assert!((x - y).abs() <= a / 16.0 + a * F16_REL + a * SLACK, "{x} → {y}");
            }
        }
    }

    #[test]
    fn q5_1_error_is_half_a_step(v in prop::collection::vec(-100.0f32..100.0, 32 * 3)) {
        let (_, back) = round_trip(GgmlType::Q5_1, &v);
        for (xb, yb) in v.chunks(32).zip(back.chunks(32)) {
            let (lo, hi) = xb.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let d = (hi - lo) / 31.0;
            let bound = d / 2.0 + 32.0 * d * F16_REL + lo.abs() * F16_REL + amax(xb) * SLACK;
            for (x, y) in xb.iter().zip(yb) {
                prop_assert!((x - y).abs() <= bound, "{x} → {y}, bound {bound}");
            }
        }
    }

    /// IQ4_NL's error: every element decodes to the table level nearest to it for the block's
    /// scale (up to the scale's f16 rounding), so it is off by at most half the widest gap
    /// between adjacent levels (24 / 2) times the scale, or by how far it lies past the
    /// table's ends.
    #[test]
    fn iq4_nl_decodes_to_the_nearest_level(v in prop::collection::vec(-100.0f32..100.0, 32 * 3)) {
        let (b, back) = round_trip(GgmlType::IQ4_NL, &v);
        for ((xb, yb), blk) in v.chunks(32).zip(back.chunks(32)).zip(b.chunks(IQ4_NL_BYTES)) {
            let d = f16_at(blk, 0);
            let a = amax(xb);
            prop_assert!(d != 0.0 || a < 1e-15, "a non-zero block needs a scale");
            let ends = [d * KVALUES_IQ4NL[0] as f32, d * KVALUES_IQ4NL[15] as f32];
            let (lo, hi) = (ends[0].min(ends[1]), ends[0].max(ends[1]));
            for (x, y) in xb.iter().zip(yb) {
                let nearest = KVALUES_IQ4NL
                    .iter()
                    .map(|&l| (x - d * l as f32).abs())
                    .fold(f32::MAX, f32::min);
                prop_assert!((x - y).abs() <= nearest + 256.0 * d.abs() * F16_REL + a * SLACK,
                    "{x} → {y}, nearest level off by {nearest}");
                let past_the_ends = (x - hi).max(lo - x).max(0.0);
                prop_assert!(
                    (x - y).abs() <= 12.0 * d.abs() + past_the_ends + 256.0 * d.abs() * F16_REL,
                    "{x} → {y}, scale {d}"
                );
            }
        }
    }
}

/// Random blocks of every new type with finite scales: random nibbles and fifth bits, scales
/// and minimums in ±2 — or, with `extreme`, f16's largest and smallest magnitudes.
fn random_blocks(ty: GgmlType, seed: u64, rows: usize, cols: usize) -> Vec<u8> {
    random_blocks_with(ty, seed, rows, cols, false)
}

fn random_blocks_with(ty: GgmlType, seed: u64, rows: usize, cols: usize, extreme: bool) -> Vec<u8> {
    let n = crate::blocks::tensor_bytes(ty, rows * cols);
    let mut w: Vec<u8> = noise(seed, n)
        .iter()
        .map(|v| ((v + 1.0) * 127.99) as u8)
        .collect();
    let (nb, halves) = match ty {
        GgmlType::Q5_0 => (Q5_0_BYTES, 1),
        GgmlType::Q5_1 => (Q5_1_BYTES, 2),
        _ => (IQ4_NL_BYTES, 1),
    };
    let scales = noise(seed + 1, n / nb * halves);
    for (blk, s) in w.chunks_exact_mut(nb).zip(scales.chunks_exact(halves)) {
        for (h, &s) in s.iter().enumerate() {
            let v = if extreme {
                // ±65504 (f16::MAX) or ±2⁻²⁴ (the smallest subnormal).
                let m = if s.abs() > 0.5 {
                    65504.0
                } else {
                    2f32.powi(-24)
                };
                m.copysign(s)
            } else {
                2.0 * s
            };
            blk[2 * h..2 * h + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    w
}

/// Activations with every code, extreme ones included: random full-range codes (−128 too,
/// which the sign trick wraps) and random scales.
fn random_activation(ty: ActivationType, seed: u64, cols: usize) -> QuantizedActivation {
    let mut a = activation(ty, &noise(seed, cols));
    for (q, v) in a.qs.iter_mut().zip(noise(seed + 1, cols)) {
        *q = ((v + 1.0) * 127.99) as u8 as i8;
    }
    a.qs[..4].fill(-128);
    a.qs[4..8].fill(127);
    for (s, q) in a.s.iter_mut().zip(a.qs.chunks_exact(QK)) {
        let sum: i32 = q.iter().map(|&v| v as i32).sum();
        *s = round_f16(sum as f32 * 0.01);
    }
    a
}

/// Row lengths with odd and even block counts (IQ4_NL's one-token kernel pairs blocks).
const COLS: [usize; 5] = [32, 64, 32 * 7, 32 * 8, 32 * 13];

/// The kernels of a matrix, from `backend`: one token, a batch (two or more tokens),
/// repacked.
fn row_kernels(
    m: &QuantizedMatrix,
    backend: Backend,
    r: usize,
    a: &QuantizedActivation,
) -> [u32; 3] {
    let plain = m.with_backend(backend);
    let one = plain.dot_row(r, a);
    let batch = plain.batch_dot_row(r, a);
    let repacked = plain.repacked_like_llama_cpp().dot_row(r, a);
    [one.to_bits(), batch.to_bits(), repacked.to_bits()]
}

#[test]
fn simd_kernels_are_bit_identical_to_scalar() {
    let detected = Backend::detect();
    if detected == Backend::Scalar {
        // No SIMD on this CPU: the dispatch must then be the scalar kernel itself.
        assert_eq!(backends(), vec![Backend::Scalar]);
        return;
    }
    for ty in TYPES {
        let at = WeightType::from_ggml(ty).unwrap().activation_type();
        for cols in COLS {
            let rows = 8;
            for seed in 0..3u64 {
                let (bytes, act) = if seed == 0 {
                    // Encoded weights and ordinary activations.
                    let x = noise(40 + cols as u64, cols);
                    (
                        encode(ty, &noise(seed + cols as u64, rows * cols), cols).unwrap(),
                        activation(at, &x),
                    )
                } else {
                    (
                        random_blocks(ty, seed * 100 + cols as u64, rows, cols),
                        random_activation(at, seed, cols),
                    )
                };
                let m = QuantizedMatrix::new(ty, &bytes, rows, cols).unwrap();
                for r in 0..rows {
                    let scalar = row_kernels(&m, Backend::Scalar, r, &act);
                    let simd = row_kernels(&m, detected, r, &act);
                    assert_eq!(scalar, simd, "{ty} cols {cols} seed {seed} row {r}");
                }
            }
        }
    }
}

/// Σ w·x in f64 over the dequantized forms, and Σ |w·x| (the scale of the rounding error).
fn reference_dot(m: &QuantizedMatrix, r: usize, act: &QuantizedActivation) -> (f64, f64) {
    let mut w = vec![0.0; m.cols()];
    m.dequantize_row(r, &mut w);
    let mut x = vec![0.0; m.cols()];
    act.dequantize(&mut x);
    let p = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64);
    (p.clone().sum(), p.map(f64::abs).sum())
}

#[test]
fn every_order_computes_the_dot_of_the_dequantized_forms() {
    for ty in TYPES {
        let at = WeightType::from_ggml(ty).unwrap().activation_type();
        let cols = 32 * 9;
        let rows = 8;
        let bytes = encode(ty, &noise(3, rows * cols), cols).unwrap();
        let m = QuantizedMatrix::new(ty, &bytes, rows, cols).unwrap();
        let act = activation(at, &noise(4, cols));
        for r in 0..rows {
            let (want, mag) = reference_dot(&m, r, &act);
            // Q5_1's kernel takes the minimum's term from the activation's stored
            // s = f16(d·Σq) instead of d16·Σq: allow exactly that difference.
            let s_term: f64 = if ty == GgmlType::Q5_1 {
                (0..cols / QK)
                    .map(|b| {
                        let mx = f16_at(m.row(r), Q5_1_BYTES * b + 2) as f64;
                        let sq: i32 = act.qs[QK * b..QK * (b + 1)].iter().map(|&q| q as i32).sum();
                        (mx * (act.s[b] as f64 - act.d[b] as f64 * sq as f64)).abs()
                    })
                    .sum()
            } else {
                0.0
            };
            for bits in row_kernels(&m, Backend::Scalar, r, &act) {
                let got = f32::from_bits(bits) as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * mag + 1e-6 + s_term,
                    "{ty} row {r}: kernel {got}, dequantized {want}"
                );
            }
        }
    }
}

/// IQ4_NL's three orders are different sums: on random data the one-token kernel (two
/// accumulators), tinyBLAS (one) and the repacked kernel (one f32) disagree in the last bits
/// for some rows, so a model needs each in its place.
#[test]
fn iq4_nl_orders_differ() {
    let (rows, cols) = (64, 32 * 16);
    let bytes = encode(GgmlType::IQ4_NL, &noise(5, rows * cols), cols).unwrap();
    let m = QuantizedMatrix::new(GgmlType::IQ4_NL, &bytes, rows, cols).unwrap();
    let act = activation(ActivationType::Q8_0, &noise(6, cols));
    let all: Vec<[u32; 3]> = (0..rows)
        .map(|r| row_kernels(&m, Backend::Scalar, r, &act))
        .collect();
    assert!(all.iter().any(|k| k[0] != k[1]), "vec_dot vs tinyBLAS");
    assert!(all.iter().any(|k| k[1] != k[2]), "tinyBLAS vs repacked");
    assert!(all.iter().any(|k| k[0] != k[2]), "vec_dot vs repacked");
    // Q5_0's batch path (tinyBLAS) has `vec_dot`'s operations, Q5_1 has no other path, and
    // neither is repacked: one order each.
    for ty in [GgmlType::Q5_0, GgmlType::Q5_1] {
        let bytes = encode(ty, &noise(5, rows * cols), cols).unwrap();
        let m = QuantizedMatrix::new(ty, &bytes, rows, cols).unwrap();
        let at = WeightType::from_ggml(ty).unwrap().activation_type();
        let act = activation(at, &noise(6, cols));
        for r in 0..rows {
            let [one, batch, repacked] = row_kernels(&m, Backend::Scalar, r, &act);
            assert_eq!((one, one), (batch, repacked), "{ty} row {r}");
        }
    }
}

/// `matvec`, `matmul` of one token, and `matmul` of many (four-token kernels included): each
/// gives the bits of the kernel llama.cpp uses for that many tokens, plain and repacked, rows
/// a multiple of 8 or not.
#[test]
fn matmul_uses_the_batch_order_and_four_token_kernels_keep_it() {
    let cols = 32 * 5;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for ty in TYPES {
        let at = WeightType::from_ggml(ty).unwrap().activation_type();
        for rows in [16, 13] {
            let bytes = encode(ty, &noise(8, rows * cols), cols).unwrap();
            let acts: Vec<QuantizedActivation> = (0..11)
                .map(|t| activation(at, &noise(60 + t, cols)))
                .collect();
            for backend in backends() {
                let plain = QuantizedMatrix::new(ty, &bytes, rows, cols)
                    .unwrap()
                    .with_backend(backend);
                for m in [plain, plain.repacked_like_llama_cpp()] {
                    let mut y = vec![0.0; rows];
                    m.matvec(&acts[0], &mut y);
                    let mut one = vec![0.0; rows];
                    m.matmul(&acts[..1], &mut one);
                    assert_eq!(y, one, "{ty} {backend:?}");
                    let mut out = vec![0.0; rows * acts.len()];
                    // One thread: tasks of ⌈11 / 2⌉ = 6 tokens, so the four-token kernels run.
                    pool.install(|| m.matmul(&acts, &mut out));
                    for (t, a) in acts.iter().enumerate() {
                        for r in 0..rows {
                            let want = m.batch_dot_row(r, a);
                            assert_eq!(
                                out[t * rows + r].to_bits(),
                                want.to_bits(),
                                "{ty} {backend:?} rows {rows} token {t} row {r}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Every kernel of a type from `backend`, for four rows and four activations: the one-token
/// kernel, the batch kernel and the batch's four-token form; for IQ4_NL also the repacked
/// order and its four-token form. Forms a backend lacks are filled in with its row kernel,
/// so the scalar backend's list is the row kernels' bits throughout, and a SIMD list equal
/// to it proves every four-token form repeats the one-token bits.
fn all_kernels(
    ty: GgmlType,
    backend: Backend,
    rows: [&[u8]; 4],
    acts: [&QuantizedActivation; 4],
) -> Vec<u32> {
    let wt = WeightType::from_ggml(ty).unwrap();
    let one = crate::matrix::kernel(wt, backend);
    let batch = super::batch_kernel(wt, backend).unwrap_or(one);
    let mut out: Vec<f32> = Vec::new();
    for row in rows {
        for a in acts {
            out.push(one(row, 1.0, a));
            out.push(batch(row, 1.0, a));
        }
        out.extend(match super::kernel4(wt, backend) {
            Some(k4) => k4(row, 1.0, acts),
            None => acts.map(|a| batch(row, 1.0, a)),
        });
    }
    if ty == GgmlType::IQ4_NL {
        let (row_kernel, row_kernel4) = super::repacked_iq4_nl(backend);
        for row in rows {
            out.extend(acts.map(|a| row_kernel(row, 1.0, a)));
            out.extend(match row_kernel4 {
                Some(k4) => k4(row, 1.0, acts),
                None => acts.map(|a| row_kernel(row, 1.0, a)),
            });
        }
    }
    out.into_iter().map(f32::to_bits).collect()
}

/// NaN's sign and payload are not specified by C or Rust (x86 keeps the first NaN operand,
/// and compilers may swap commutative operands), so two NaNs count as equal.
fn same_bits(a: &[u32], b: &[u32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(&x, &y)| x == y || (f32::from_bits(x).is_nan() && f32::from_bits(y).is_nan()))
}

proptest! {
    /// SIMD == scalar, and every four-token form == the one-token kernel, on random blocks
    /// (odd and even block counts, extreme f16 scales) and random full-range activation
    /// codes.
    #[test]
    fn simd_and_four_token_kernels_match_the_scalar_emulation(
        t in 0usize..3,
        blocks in 1usize..14,
        seed in any::<u64>(),
        extreme in any::<bool>(),
    ) {
        let ty = TYPES[t];
        let cols = QK * blocks;
        let at = WeightType::from_ggml(ty).unwrap().activation_type();
        let w = random_blocks_with(ty, seed, 4, cols, extreme);
        let rb = w.len() / 4;
        let rows = [0, 1, 2, 3].map(|r| &w[r * rb..(r + 1) * rb]);
        let acts: Vec<QuantizedActivation> =
            (0..4).map(|k| random_activation(at, seed ^ (k + 1), cols)).collect();
        let four = [&acts[0], &acts[1], &acts[2], &acts[3]];
        let scalar = all_kernels(ty, Backend::Scalar, rows, four);
        let simd = all_kernels(ty, Backend::detect(), rows, four);
        prop_assert!(same_bits(&scalar, &simd), "{ty}: {scalar:x?} vs {simd:x?}");
    }
}

/// A block with a NaN or infinite scale gives what llama.cpp's arithmetic gives (checked
/// against its static library, NaN sign and payload aside): a NaN scale makes the row's dot
/// NaN; an infinite one makes it ±∞ when every lane of that block (every block's sum, for the
/// repacked order) is non-zero and of one sign, and NaN when one is zero (∞·0) or when
/// infinities of both signs meet. Decoding such a block gives ±∞ / NaN weights. Nothing
/// panics.
#[test]
fn corrupt_scales_give_llama_cpps_non_finite_results() {
    let cols = 32 * 3;
    for ty in TYPES {
        let wt = WeightType::from_ggml(ty).unwrap();
        // Weights 1, 2, 1, 2, … and activations +1: every lane is non-zero and of one sign.
        let w: Vec<f32> = (0..cols).map(|j| 1.0 + (j % 2) as f32).collect();
        let bytes = encode(ty, &w, cols).unwrap();
        let act = activation(wt.activation_type(), &vec![1.0; cols]);
        let nb = bytes.len() / 3;
        let with_scale = |block: usize, bits: u16| {
            let mut b = bytes.clone();
            b[nb * block..nb * block + 2].copy_from_slice(&bits.to_le_bytes());
            b
        };
        for backend in backends() {
            let dots = |b: &[u8]| {
                let m = QuantizedMatrix::new(ty, b, 1, cols).unwrap();
                row_kernels(&m, backend, 0, &act).map(f32::from_bits)
            };
            let finite = dots(&bytes);
            assert!(
                finite.iter().all(|v| v.is_finite() && *v > 0.0),
                "{ty}: {finite:?}"
            );
            let nan = with_scale(1, 0x7e00);
            assert!(dots(&nan).iter().all(|v| v.is_nan()), "{ty} NaN scale");
            assert!(decoded(ty, &nan, cols)[32..64].iter().all(|v| v.is_nan()));
            let pos_inf = with_scale(2, 0x7c00);
            let neg_inf = with_scale(2, 0xfc00);
            // The positive weights are code·d + m (Q5_1: codes ≥ 0) or value·d with the
            // value of d's sign (Q5_0 takes d = max / −16 < 0, IQ4_NL's search may pick either
            // sign), so replacing d by +∞ gives products of the original d's sign.
            let sign = match ty {
                GgmlType::Q5_1 => 1.0,
                _ => f16_at(&bytes, 2 * nb).signum(),
            };
            let p = dots(&pos_inf);
            assert!(
                p.iter().all(|&v| v == sign * f32::INFINITY),
                "{ty} +inf: {p:?}"
            );
            let n = dots(&neg_inf);
            assert!(
                n.iter().all(|&v| v == -sign * f32::INFINITY),
                "{ty} -inf: {n:?}"
            );
            // Both signs: ∞ − ∞.
            let mut both = pos_inf.clone();
            both[0..2].copy_from_slice(&0xfc00u16.to_le_bytes());
            assert!(dots(&both).iter().all(|v| v.is_nan()), "{ty} ±inf");
            // An infinite scale on a block whose activations are all zero: ∞·0.
            let mut x = vec![1.0; cols];
            x[64..].fill(0.0);
            let zero_tail = activation(wt.activation_type(), &x);
            let m = QuantizedMatrix::new(ty, &pos_inf, 1, cols).unwrap();
            let v = row_kernels(&m, backend, 0, &zero_tail).map(f32::from_bits);
            assert!(v.iter().all(|v| v.is_nan()), "{ty} ∞·0: {v:?}");
        }
    }
}

/// `WeightType::ALL` is exactly the set `from_ggml` accepts, so the names error messages list
/// are the types the engine multiplies.
#[test]
fn weight_type_list_is_what_from_ggml_accepts() {
    for ty in GgmlType::ALL {
        let listed = WeightType::ALL.iter().any(|w| w.ggml() == ty);
        assert_eq!(WeightType::from_ggml(ty).is_some(), listed, "{ty}");
    }
    assert_eq!(
        WeightType::ALL.len(),
        GgmlType::ALL
            .iter()
            .filter(|&&t| WeightType::from_ggml(t).is_some())
            .count()
    );
    let names = WeightType::names();
    assert!(names.starts_with(
        "f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl, bf16"
    ));
    assert!(names.ends_with("i2_s"));
}
