//! Encode throughput on 1 MB of mixed text, ours next to the HF `tokenizers` crate, and the
//! time to load the 128k-token llama-bpe vocabulary.
//!
//! Two texts of 1 MiB: `repeated` is llama.cpp's tokenizer test inputs (English, code, CJK,
//! emoji, odd whitespace) repeated — word caches help a lot, as on real prose; `random` is
//! words drawn by a fixed-seed generator from mixed scripts (Latin, accented Latin, Cyrillic,
//! Greek, CJK, digits, punctuation, emoji, runs of spaces and newlines), so almost no word
//! repeats and caches barely help. HF comparators: the Llama-3 `tokenizer.json` for llama-bpe (same
//! vocabulary), and the Mistral/"Llama-2" `tokenizer.json` for llama-spm (a SentencePiece-style
//! BPE of the same family; the exact Llama-2 tokenizer.json is not among the fixtures).
//!
//! Run: `cargo bench -p bitnet-tokenizers --bench encode`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use bitnet_tokenizers::{GgufTokenizer, HfTokenizer, Tokenizer};

const TARGET: usize = 1 << 20;

fn mixed_text() -> String {
    let pieces: Vec<String> = bitnet_fixtures::test_vectors("llama-bpe")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut text = String::with_capacity(TARGET + 1024);
    'fill: loop {
        for p in &pieces {
            text.push_str(p);
            text.push('\n');
            if text.len() >= TARGET {
                break 'fill;
            }
        }
    }
    text
}

/// Words of 1–9 characters from mixed alphabets, separated by mixed whitespace and
/// punctuation, from a fixed-seed linear congruential generator.
fn random_text() -> String {
    const ALPHABETS: &[&str] = &[
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšž",
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        "αβγδεζηθικλμνξοπρστυφχψω",
        "的一是不了人我在有他这为之大来以个中上们",
        "0123456789",
        "😀🦙🚀✨🔥",
    ];
    const SEPARATORS: &[&str] = &[
        " ", " ", " ", " ", ", ", ". ", "\n", "  ", "\t", "!\n\n", "'s ", " - ",
    ];
    let alphabets: Vec<Vec<char>> = ALPHABETS.iter().map(|a| a.chars().collect()).collect();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    let mut text = String::with_capacity(TARGET + 64);
    while text.len() < TARGET {
        let alphabet = &alphabets[next(alphabets.len())];
        for _ in 0..1 + next(9) {
            text.push(alphabet[next(alphabet.len())]);
        }
        text.push_str(SEPARATORS[next(SEPARATORS.len())]);
    }
    text
}

fn encode(c: &mut Criterion) {
    let spm = GgufTokenizer::open(bitnet_fixtures::vocab("llama-spm")).unwrap();
    let bpe = GgufTokenizer::open(bitnet_fixtures::vocab("llama-bpe")).unwrap();
    let hf_spm = HfTokenizer::from_file(bitnet_fixtures::require(
        bitnet_fixtures::LLAMA2_MISLABELLED_TOKENIZER_JSON,
    ))
    .unwrap();
    let hf_bpe = HfTokenizer::from_file(bitnet_fixtures::require(
        bitnet_fixtures::LLAMA3_TOKENIZER_JSON,
    ))
    .unwrap();

    for (name, text) in [("repeated", mixed_text()), ("random", random_text())] {
        let mut group = c.benchmark_group(format!("encode_1MiB_{name}"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.sample_size(10);
        group.bench_function("llama-spm/bitnet", |b| {
            b.iter(|| spm.encode(&text, false, false).unwrap())
        });
        group.bench_function("llama-spm/hf-tokenizers", |b| {
            b.iter(|| hf_spm.encode(&text, false, false).unwrap())
        });
        group.bench_function("llama-bpe/bitnet", |b| {
            b.iter(|| bpe.encode(&text, false, false).unwrap())
        });
        group.bench_function("llama-bpe/hf-tokenizers", |b| {
            b.iter(|| hf_bpe.encode(&text, false, false).unwrap())
        });
        group.finish();
    }
}

fn load(c: &mut Criterion) {
    let path = bitnet_fixtures::vocab("llama-bpe");
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("llama-bpe/bitnet", |b| {
        b.iter(|| GgufTokenizer::open(&path).unwrap())
    });
    group.finish();
}

criterion_group!(benches, encode, load);
criterion_main!(benches);
