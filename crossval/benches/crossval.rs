//! Criterion benches: the token parity pre-gate and the logits comparison.
use std::hint::black_box;

use bitnet_crossval::{compare_logits, compare_position, validate_token_parity, LogitsMatrix};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    for n in [10usize, 100, 1_000, 100_000] {
        let rust: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % 128_256).collect();
        let cpp: Vec<i32> = rust.iter().map(|&t| t as i32).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| validate_token_parity(black_box(&rust), black_box(&cpp), black_box("p")))
        });
    }
    group.finish();
}

fn bench_logits(c: &mut Criterion) {
    const VOCAB: usize = 128_256;
    const ROWS: usize = 16;
    let rust: Vec<f32> = (0..VOCAB * ROWS)
        .map(|i| ((i as f32) * 0.618_034).sin() * 8.0)
        .collect();
    let cpp: Vec<f32> = rust
        .iter()
        .enumerate()
        .map(|(i, &x)| x + ((i % 13) as f32 - 6.0) * 1e-4)
        .collect();
    let mut group = c.benchmark_group("logits_compare");
    group.sample_size(20);
    // Bytes read: both matrices.
    group.throughput(Throughput::Bytes((2 * VOCAB * ROWS * 4) as u64));
    group.bench_function("128256x16", |b| {
        b.iter(|| {
            let r = LogitsMatrix::rust(black_box(&rust), VOCAB).expect("shape");
            let c = LogitsMatrix::cpp(black_box(&cpp), VOCAB).expect("shape");
            compare_logits(r, c, 0.999).expect("compare")
        })
    });
    // The same work one position at a time on the calling thread (no splitting across cores).
    group.bench_function("128256x16_one_thread", |b| {
        b.iter(|| {
            (0..ROWS)
                .map(|t| {
                    let span = t * VOCAB..(t + 1) * VOCAB;
                    let (r, c) = (&black_box(&rust)[span.clone()], &black_box(&cpp)[span]);
                    compare_position(t, r, c, 0.999).expect("compare")
                })
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_validate, bench_logits);
criterion_main!(benches);
