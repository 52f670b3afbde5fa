//! Matrix–vector throughput of every weight type at BitNet-2B's hidden size (2560 × 2560),
//! a 32-token batched product, one thread's time per row for each kernel order of the
//! Q5_0 / Q5_1 / IQ4_NL types, and activation quantization. `cargo bench -p bitnet-quant`.

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
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::IQ4_NL,
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
        if ty == GgmlType::IQ4_NL {
            let r = m.repacked_like_llama_cpp();
            g.bench_function("iq4_nl repacked", |b| b.iter(|| r.matvec(&act, &mut out)));
        }
    }
    g.finish();
}

/// The first `rows` rows of an N-column matrix of `ty`, in llama.cpp's repacked order if
/// asked.
fn view(ty: GgmlType, bytes: &[u8], rows: usize, repacked: bool) -> QuantizedMatrix<'_> {
    let row_bytes = bytes.len() / N;
    let m = QuantizedMatrix::new(ty, &bytes[..rows * row_bytes], rows, N).unwrap();
    if repacked {
        m.repacked_like_llama_cpp()
    } else {
        m
    }
}

/// One thread, one kernel: the time per 2560-element row of each order llama.cpp sums Q5_0,
/// Q5_1 and IQ4_NL in (`vec_dot` for one token; for 32 tokens the batch path — tinyBLAS for
/// IQ4_NL — four tokens per weight row; the repacked IQ4_NL order), to set next to
/// llama.cpp's own kernels timed the same way. Divide the time by 2560 rows, or by 64 rows ×
/// 32 tokens: the batch group takes 64 rows so that one iteration (~0.2 ms) fits in a
/// scheduler time slice on a shared machine.
fn row_kernels(c: &mut Criterion) {
    const TOKENS: usize = 32;
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let x = values(N * TOKENS, false);
    let mut one = c.benchmark_group("one_thread_2560_rows_1_token");
    one.throughput(Throughput::Elements((N * N) as u64));
    let mut cases = Vec::new();
    for ty in [GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL] {
        let bytes = encode(ty, &values(N * N, false), N).unwrap();
        cases.push((ty.name().to_string(), ty, bytes, false));
    }
    let iq4 = encode(GgmlType::IQ4_NL, &values(N * N, false), N).unwrap();
    cases.push(("iq4_nl repacked".into(), GgmlType::IQ4_NL, iq4, true));
    let acts = |m: &QuantizedMatrix| -> Vec<QuantizedActivation> {
        x.chunks_exact(N)
            .map(|t| {
                let mut a = QuantizedActivation::new();
                a.quantize(m.activation_type(), t).unwrap();
                a
            })
            .collect()
    };
    let mut out = vec![0.0f32; N * TOKENS];
    for (name, ty, bytes, repacked) in &cases {
        let m = view(*ty, bytes, N, *repacked);
        let a = acts(&m);
        one.bench_function(name.as_str(), |b| {
            b.iter(|| one_thread.install(|| m.matvec(&a[0], &mut out[..N])))
        });
    }
    one.finish();
    const BATCH_ROWS: usize = 64;
    let mut batch = c.benchmark_group("one_thread_64_rows_32_tokens");
    batch.throughput(Throughput::Elements((BATCH_ROWS * N * TOKENS) as u64));
    for (name, ty, bytes, repacked) in &cases {
        let m = view(*ty, bytes, BATCH_ROWS, *repacked);
        let a = acts(&m);
        let out = &mut out[..BATCH_ROWS * TOKENS];
        batch.bench_function(name.as_str(), |b| {
            b.iter(|| one_thread.install(|| m.matmul(&a, out)))
        });
    }
    batch.finish();
}

fn matmul_prompt(c: &mut Criterion) {
    const TOKENS: usize = 32;
    let mut g = c.benchmark_group("matmul_2560x2560_32_tokens");
    g.sample_size(10);
    g.throughput(Throughput::Elements((N * N * TOKENS) as u64));
    let x = values(N * TOKENS, false);
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::IQ4_NL,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
    ] {
        let ternary = matches!(ty, GgmlType::TQ2_0 | GgmlType::I2_S);
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
    row_kernels,
    quantize_activation,
    kquant_rows
);
criterion_main!(benches);
