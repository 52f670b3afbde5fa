//! Matrix–vector throughput of every weight type at BitNet-2B's hidden size (2560 × 2560),
//! a 32-token batched product, and activation quantization. `cargo bench -p bitnet-quant`.

use bitnet_quant::{encode, ActivationType, GgmlType, QuantizedActivation, QuantizedMatrix};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: usize = 2560;

fn values(n: usize, ternary: bool) -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if ternary {
                v.mul_add(1.5, 0.0).round().clamp(-1.0, 1.0) * 0.25
            } else {
                v
            }
        })
        .collect()
}

fn matvec(c: &mut Criterion) {
    let mut g = c.benchmark_group("matvec_2560x2560");
    g.throughput(Throughput::Elements((N * N) as u64));
    let x = values(N, false);
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let ternary = matches!(ty, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S);
        let bytes = encode(ty, &values(N * N, ternary), N).unwrap();
        let m = QuantizedMatrix::new(ty, &bytes, N, N).unwrap();
        let mut act = QuantizedActivation::new();
        act.quantize(m.activation_type(), &x).unwrap();
        let mut out = vec![0.0f32; N];
        g.bench_function(ty.name(), |b| b.iter(|| m.matvec(&act, &mut out)));
    }
    g.finish();
}

fn matmul_prompt(c: &mut Criterion) {
    const TOKENS: usize = 32;
    let mut g = c.benchmark_group("matmul_2560x2560_32_tokens");
    g.sample_size(10);
    g.throughput(Throughput::Elements((N * N * TOKENS) as u64));
    let x = values(N * TOKENS, false);
    for ty in [GgmlType::Q4_1, GgmlType::TQ2_0, GgmlType::I2_S] {
        let ternary = ty != GgmlType::Q4_1;
        let bytes = encode(ty, &values(N * N, ternary), N).unwrap();
        let m = QuantizedMatrix::new(ty, &bytes, N, N).unwrap();
        let acts: Vec<QuantizedActivation> = x
            .chunks_exact(N)
            .map(|t| {
                let mut a = QuantizedActivation::new();
                a.quantize(m.activation_type(), t).unwrap();
                a
            })
            .collect();
        let mut out = vec![0.0f32; N * TOKENS];
        g.bench_function(ty.name(), |b| b.iter(|| m.matmul(&acts, &mut out)));
    }
    g.finish();
}

fn quantize_activation(c: &mut Criterion) {
    let mut g = c.benchmark_group("quantize_activation_2560");
    let x = values(N, false);
    let mut act = QuantizedActivation::new();
    for ty in [
        ActivationType::Q8_0,
        ActivationType::Q8_1,
        ActivationType::Q8_K,
        ActivationType::I8_S,
    ] {
        g.bench_function(format!("{ty:?}"), |b| {
            b.iter(|| act.quantize(ty, &x).unwrap())
        });
    }
    g.finish();
}

/// The k-quant row kernels on one thread, 2560 rows of 2560: one token (`vec_dot`, and the
/// gemv order of repacked Q4_K), and 8 tokens per row (the tiled order of plain matrices, the
/// gemm order of repacked Q4_K). Time per element = time per row / 2560 (per row and token
/// for the 8-token kernels).
fn kquant_rows(c: &mut Criterion) {
    const TOKENS: usize = 8;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let x = values(N * TOKENS, false);
    let w = values(N * N, false);
    for ty in [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let mut g = c.benchmark_group(format!("kquant_rows_2560/{}", ty.name()));
        g.sample_size(10);
        let bytes = encode(ty, &w, N).unwrap();
        let plain = QuantizedMatrix::new(ty, &bytes, N, N).unwrap();
        let acts: Vec<QuantizedActivation> = x
            .chunks_exact(N)
            .map(|t| {
                let mut a = QuantizedActivation::new();
                a.quantize(plain.activation_type(), t).unwrap();
                a
            })
            .collect();
        let mut out = vec![0.0f32; N * TOKENS];
        let mut variants = vec![("", plain)];
        if ty == GgmlType::Q4_K {
            variants.push(("repacked_", plain.repacked_like_llama_cpp()));
        }
        for (name, m) in variants {
            g.throughput(Throughput::Elements((N * N) as u64));
            g.bench_function(format!("{name}one_token"), |b| {
                b.iter(|| pool.install(|| m.matvec(&acts[0], &mut out[..N])))
            });
            g.throughput(Throughput::Elements((N * N * TOKENS) as u64));
            g.bench_function(format!("{name}{TOKENS}_tokens"), |b| {
                b.iter(|| pool.install(|| m.matmul(&acts, &mut out)))
            });
        }
        g.finish();
    }
}

criterion_group!(
    benches,
    matvec,
    matmul_prompt,
    quantize_activation,
    kquant_rows
);
criterion_main!(benches);
