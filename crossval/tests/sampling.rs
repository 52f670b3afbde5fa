//! The engine's sampler against llama.cpp's own sampler chain, run by the llama reference
//! process on the same logits (the reference's, sent back over the protocol), so the test
//! isolates sampling: for every parameter set and seed, both must choose the same tokens.

use std::path::Path;

use bitnet_cpp::{BackendChoice, Session, SessionOptions};
use bitnet_crossval::sampling::chain_spec as spec;
use bitnet_gguf::{GgufFile, GgufWriter, Value};
use bitnet_inference::sampling::{DryBreakers, Sampler, SamplerType, SamplingParams};
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

/// The parameter sets: llama.cpp's defaults, then each sampler pushed into its interesting
/// paths (the unsorted top-p bucket sort on the full vocabulary, min-p's unsorted filter,
/// typical-p, XTC firing, dynamic temperature, penalties, DRY, top-n-sigma, a reordered chain,
/// a greedy chain with penalties, min_keep floors).
fn parameter_sets() -> Vec<(&'static str, SamplingParams)> {
    let d = SamplingParams::default;
    vec![
        ("defaults", d()),
        ("hot", SamplingParams { temp: 1.7, ..d() }),
        (
            "full vocabulary top-p",
            SamplingParams {
                top_k: 0,
                top_p: 0.9,
                min_p: 0.0,
                temp: 1.3,
                ..d()
            },
        ),
        (
            "full vocabulary top-p, tiny p",
            SamplingParams {
                top_k: 0,
                top_p: 0.01,
                min_p: 0.0,
                ..d()
            },
        ),
        (
            "min-p alone",
            SamplingParams {
                top_k: 0,
                top_p: 1.0,
                min_p: 0.02,
                temp: 1.1,
                ..d()
            },
        ),
        (
            "typical",
            SamplingParams {
                typical_p: 0.7,
                top_k: 0,
                ..d()
            },
        ),
        (
            "xtc",
            SamplingParams {
                xtc_probability: 0.6,
                xtc_threshold: 0.05,
                top_k: 100,
                min_p: 0.0,
                ..d()
            },
        ),
        (
            "dynamic temperature",
            SamplingParams {
                dynatemp_range: 0.6,
                dynatemp_exponent: 1.5,
                top_k: 0,
                ..d()
            },
        ),
        (
            "penalties",
            SamplingParams {
                penalty_repeat: 1.3,
                penalty_freq: 0.4,
                penalty_present: 0.25,
                penalty_last_n: 16,
                ..d()
            },
        ),
        (
            "dry",
            SamplingParams {
                dry_multiplier: 0.9,
                dry_allowed_length: 1,
                top_k: 0,
                min_p: 0.0,
                ..d()
            },
        ),
        (
            "top-n-sigma",
            SamplingParams {
                top_n_sigma: 1.5,
                top_k: 0,
                ..d()
            },
        ),
        (
            "reordered chain",
            SamplingParams {
                samplers: vec![
                    SamplerType::Temperature,
                    SamplerType::MinP,
                    SamplerType::TopK,
                    SamplerType::TopP,
                ],
                top_k: 7,
                ..d()
            },
        ),
        (
            "greedy with penalties",
            SamplingParams {
                temp: 0.0,
                penalty_repeat: 1.5,
                ..d()
            },
        ),
        (
            "min_keep",
            SamplingParams {
                min_keep: 5,
                top_p: 0.05,
                min_p: 0.5,
                xtc_probability: 1.0,
                ..d()
            },
        ),
    ]
}

const SEEDS: [u32; 4] = [0, 42, 1234, 0xFFFF_FFFE];

fn reference(model: &Path, vocab_only: bool) -> Session {
    let opts = SessionOptions {
        vocab_only,
        ..SessionOptions::default()
    };
    Session::open(model, BackendChoice::Llama, &opts)
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
}

/// Sample every row on both sides and assert the same tokens; returns them.
fn both(
    cpp: &mut Session,
    tok: &GgufTokenizer,
    p: &SamplingParams,
    bias: &[(u32, f32)],
    accepted: &[u32],
    rows: &[f32],
) -> Vec<u32> {
    let n_vocab = cpp.n_vocab();
    let breakers = if p.dry_enabled() {
        DryBreakers::from_vocab(
            &p.dry_sequence_breakers,
            n_vocab,
            |id| tok.detokenize_bytes(&[id], true).unwrap(),
            |text| tok.encode(text, false, false).unwrap(),
        )
        .unwrap()
    } else {
        DryBreakers::none()
    };
    let mut ours = Sampler::new(p, bias.to_vec(), breakers).unwrap();
    for &t in accepted {
        ours.accept(t);
    }
    let got: Vec<u32> = rows.chunks(n_vocab).map(|r| ours.sample(r)).collect();
    let accepted: Vec<i32> = accepted.iter().map(|&t| t as i32).collect();
    let (expected, seed) = cpp.sample(&spec(p), &accepted, rows).unwrap();
    assert_eq!(seed, p.seed);
    let expected: Vec<u32> = expected.iter().map(|&t| t as u32).collect();
    assert_eq!(got, expected, "seed {}: {p:?}", p.seed);
    got
}

/// Rows of logits the way a model produces them: the reference's own, for every position of
/// a prompt and for a few decode steps after it.
fn model_rows(cpp: &mut Session, prompt: &[i32]) -> Vec<f32> {
    let mut rows = cpp.eval(prompt).unwrap().data;
    let n_vocab = cpp.n_vocab();
    // Mostly the greedy continuation, every third step a prompt token instead.
    for (step, &prompt_token) in prompt.iter().enumerate().take(8) {
        let last = &rows[rows.len() - n_vocab..];
        let next = bitnet_inference::ops::argmax(last) as i32;
        let t = if step % 3 == 2 { prompt_token } else { next };
        rows.extend(cpp.decode_next(t).unwrap());
    }
    rows
}

#[test]
fn smollm2_logits_sample_identically_across_parameters_and_seeds() {
    let model = bitnet_fixtures::smollm2();
    let mut cpp = reference(&model, false);
    let file = GgufFile::open(&model).unwrap();
    let tok = GgufTokenizer::from_header(file.header(), &model).unwrap();
    let text = "Q: What is the capital of France?\nA: Paris.\nQ: What is the capital of Italy?\nA:";
    let prompt = cpp.tokenize(text, true, false).unwrap();
    let rows = model_rows(&mut cpp, &prompt);
    let accepted: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
    for (name, base) in parameter_sets() {
        let mut distinct = std::collections::HashSet::new();
        for seed in SEEDS {
            let p = SamplingParams {
                seed,
                ..base.clone()
            };
            distinct.insert(both(&mut cpp, &tok, &p, &[], &accepted, &rows));
        }
        // Not a vacuous comparison: where the chain leaves a choice, the seeds lead
        // somewhere different (a 1% nucleus and temperature 0 leave none).
        let deterministic = base.temp <= 0.0 || base.top_p <= 0.01;
        assert_eq!(
            distinct.len() > 1,
            !deterministic,
            "{name}: {} distinct token sequences over {} seeds",
            distinct.len(),
            SEEDS.len()
        );
    }
}

/// Logits with many exact ties (multiples of 0.5) and a spread wide enough to fill llama.cpp's
/// sort buckets from both ends: where ties decide the order, only libstdc++'s unstable sorts
/// give llama.cpp's picks.
fn tied_rows(n_vocab: usize, n_rows: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n_vocab * n_rows)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = (s % 1000) as f32 / 1000.0;
            // Mostly low logits, a thin top tail, everything on a 0.5 grid.
            ((x * x * x * 48.0 - 14.0) * 2.0).round() / 2.0
        })
        .collect()
}

#[test]
fn tied_logits_sample_identically() {
    let vocab = bitnet_fixtures::vocab("llama-bpe");
    let mut cpp = reference(&vocab, true);
    let tok = GgufTokenizer::open(&vocab).unwrap();
    let rows = tied_rows(cpp.n_vocab(), 12);
    let accepted = tok.encode("a: b\n\"c\" * a: b\n", false, false).unwrap();
    for (_, base) in parameter_sets() {
        for seed in SEEDS {
            let p = SamplingParams {
                seed,
                ..base.clone()
            };
            both(&mut cpp, &tok, &p, &[], &accepted, &rows);
        }
    }
}

#[test]
fn suppressed_tokens_are_biased_away_on_both_sides() {
    // A copy of a vocabulary with tokenizer.ggml.suppress_tokens, which llama.cpp turns into
    // a −∞ logit bias at the head of the chain.
    let dir = tempfile::tempdir().unwrap();
    let vocab = bitnet_fixtures::vocab("llama-spm");
    let source = GgufFile::open(&vocab).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in source.header().metadata() {
        w.add_metadata(k, v.clone()).unwrap();
    }
    let suppressed = [5i32, 200, 7, 1_000_000];
    w.add_metadata(
        "tokenizer.ggml.suppress_tokens",
        Value::Array(bitnet_gguf::Array::I32(suppressed.to_vec())),
    )
    .unwrap();
    let path = dir.path().join("suppress.gguf");
    w.write_file(&path).unwrap();

    let mut cpp = reference(&path, true);
    let file = GgufFile::open(&path).unwrap();
    let tok = GgufTokenizer::from_header(file.header(), &path).unwrap();
    let n_vocab = cpp.n_vocab();
    let bias = bitnet_inference::sampling::suppress_tokens(file.header(), n_vocab).unwrap();
    assert_eq!(bias.len(), 3, "the out-of-range id is dropped");
    let mut rows = tied_rows(n_vocab, 6);
    for row in rows.chunks_mut(n_vocab) {
        row[5] = 100.0;
        row[200] = 99.0;
    }
    for seed in SEEDS {
        let p = SamplingParams {
            seed,
            temp: 2.0,
            ..SamplingParams::default()
        };
        let got = both(&mut cpp, &tok, &p, &bias, &[], &rows);
        assert!(got.iter().all(|&t| t != 5 && t != 200 && t != 7), "{got:?}");
    }
}

#[test]
fn the_bitnet_reference_says_it_has_no_sampler_chain() {
    let vocab = bitnet_fixtures::vocab("llama-spm");
    let opts = SessionOptions {
        vocab_only: true,
        ..SessionOptions::default()
    };
    let mut cpp = Session::open(&vocab, BackendChoice::Bitnet, &opts).unwrap();
    let rows = vec![0.0; cpp.n_vocab()];
    let err = cpp
        .sample(&spec(&SamplingParams::default()), &[], &rows)
        .unwrap_err();
    // Protocol 4's typed refusal, naming the reference that can.
    assert!(
        matches!(err, bitnet_cpp::CppError::Unsupported { .. })
            && err.to_string().contains("use the llama reference"),
        "{err}"
    );
}
