//! Logits through a kernel byte stream (a Unix socket pair, as the reference's pipe), framed
//! as the references send them: 64 positions of a 128,256-token vocabulary (32 MiB of f32),
//! from a writer thread to the reader.

use std::hint::black_box;

use bitnet_cpp::protocol::{read_frame, write_frame, Response};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let (n_tokens, n_vocab) = (64u32, 128_256u32);
    let logits: Vec<f32> = (0..n_tokens * n_vocab)
        .map(|i| (i % 977) as f32 * 0.01)
        .collect();
    let mut g = c.benchmark_group("transfer");
    g.throughput(Throughput::Bytes(logits.len() as u64 * 4));
    g.sample_size(20);
    g.bench_function("logits_64x128256_through_a_stream", |b| {
        b.iter(|| {
            let (mut rx, mut tx) = std::os::unix::net::UnixStream::pair().unwrap();
            let data = &logits;
            std::thread::scope(|s| {
                s.spawn(move || {
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut tx);
                    write_frame(&mut w, &Response::Logits { n_tokens, n_vocab }, data).unwrap();
                });
                let (h, payload): (Response, Vec<f32>) = read_frame(&mut rx).unwrap().unwrap();
                black_box((h, payload.len()))
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
