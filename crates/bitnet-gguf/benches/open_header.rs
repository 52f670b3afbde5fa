//! Opening a model costs what its header costs: the data section is never touched.
//!
//! Compares opening the real SmolLM2-135M file (98 MB, 272 tensors, a 49k-token vocabulary)
//! with opening a copy of its header followed by a sparse hole (the same parsing work, no
//! tensor bytes at all), and two synthetic files whose headers are identical but whose single
//! tensor holds 4 KiB or 4 GiB (sparse, so no disk is used).

use std::hint::black_box;

use bitnet_gguf::{GgmlType, GgufFile, GgufHeader, GgufWriter, Value};
use criterion::{criterion_group, criterion_main, Criterion};

fn read_all_metadata(f: &GgufHeader) -> usize {
    let mut n = 0;
    for (k, v) in f.metadata() {
        n += k.len() + matches!(v, Value::Array(_)) as usize;
    }
    n + f.tensors().len()
        + f.tokenizer()
            .map(|t| t.tokens.map_or(0, |x| x.len()))
            .unwrap_or(0)
}

/// A file with one f32 tensor of `n` elements whose data is a hole in a sparse file: the
/// header is that of a 1024-element tensor with the dimension patched to `n`.
fn synthetic(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .unwrap();
    w.add_tensor("t", &[1024], GgmlType::F32, vec![0; 4096])
        .unwrap();
    let mut bytes = w.to_bytes();
    let data_offset = GgufHeader::parse(&bytes).unwrap().data_offset as usize;
    bytes.truncate(data_offset);
    let dims_at = (0..data_offset - 8)
        .rev()
        .find(|&i| bytes[i..i + 8] == 1024u64.to_le_bytes())
        .expect("the dimension field");
    bytes[dims_at..dims_at + 8].copy_from_slice(&n.to_le_bytes());
    let path = dir.join(format!("synthetic-{n}.gguf"));
    std::fs::write(&path, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(data_offset as u64 + n * 4).unwrap();
    assert_eq!(
        GgufFile::open(&path).unwrap().tensor("t").unwrap().size,
        n * 4
    );
    path
}

fn bench(c: &mut Criterion) {
    let smollm2 = bitnet_fixtures::smollm2();
    let file = GgufFile::open(&smollm2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The same header followed by a hole: identical parsing work, no tensor bytes on disk.
    let hollow = dir.path().join("smollm2-header-only.gguf");
    std::fs::write(&hollow, &file.bytes()[..file.data_offset as usize]).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&hollow)
        .unwrap()
        .set_len(file.file_size())
        .unwrap();
    drop(file);
    let small = synthetic(dir.path(), 1024);
    let huge = synthetic(dir.path(), 1 << 30);

    let mut g = c.benchmark_group("open_header");
    g.bench_function("smollm2_open_file_read_all_metadata", |b| {
        b.iter(|| {
            let f = GgufFile::open(black_box(&smollm2)).unwrap();
            black_box(read_all_metadata(&f))
        })
    });
    g.bench_function("smollm2_header_with_sparse_hole_read_all_metadata", |b| {
        b.iter(|| {
            let f = GgufFile::open(black_box(&hollow)).unwrap();
            black_box(read_all_metadata(&f))
        })
    });
    g.bench_function("synthetic_4KiB_of_tensor_data", |b| {
        b.iter(|| black_box(GgufFile::open(black_box(&small)).unwrap().tensors().len()))
    });
    g.bench_function("synthetic_4GiB_of_tensor_data", |b| {
        b.iter(|| black_box(GgufFile::open(black_box(&huge)).unwrap().tensors().len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
