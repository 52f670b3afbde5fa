//! `bitnet perplexity`: llama-perplexity's method and output, and the same numbers as llama.cpp
//! on the same text and context.
//!
//! The reference side runs llama-perplexity's procedure on llama.cpp's own logits: the text
//! tokenized by llama.cpp, each window evaluated from an empty cache with BOS in its first slot
//! and the logits flags llama-perplexity sets (`pos ≥ n_ctx/2`), the same per-token arithmetic
//! (`bitnet_inference::perplexity::nll`). The protocol needs nothing new for that, and the only
//! part of llama-perplexity not re-run in C++ is a sum of logarithms — the numbers that can
//! differ between two engines are the logits, and those come from llama.cpp.

use assert_cmd::Command;
use bitnet_cpp::{BackendChoice, Session, SessionOptions};
use bitnet_inference::perplexity::{nll, Accumulator, Plan};
use predicates::prelude::*;

fn bitnet() -> Command {
    Command::cargo_bin("bitnet").unwrap()
}

const CTX: usize = 128;
const CHUNKS: usize = 3;

/// llama.cpp's perplexity of the first `CHUNKS` windows of `text`: the text output
/// llama-perplexity prints, and the final mean negative log-likelihood.
fn reference(model: &std::path::Path, text: &str) -> (String, Accumulator, usize) {
    let opts = SessionOptions {
        n_ctx: CTX as u32,
        ..SessionOptions::default()
    };
    let mut cpp = Session::open(model, BackendChoice::Llama, &opts).unwrap();
    let facts = cpp.vocab_info().unwrap();
    let tokens: Vec<u32> = cpp
        .tokenize(text, true, false)
        .unwrap()
        .into_iter()
        .map(|t| t as u32)
        .collect();
    let plan = Plan::new(tokens.len(), CTX, CTX, Some(CHUNKS)).unwrap();
    let bos = facts.add_bos.then_some(facts.bos as u32);
    let outputs: Vec<u32> = plan.output_positions().iter().map(|&p| p as u32).collect();
    let mut acc = Accumulator::default();
    let mut out = String::new();
    for chunk in 0..plan.n_chunks() {
        let window: Vec<i32> = plan
            .evaluated_window(&tokens, chunk, bos)
            .iter()
            .map(|&t| t as i32)
            .collect();
        let logits = cpp.eval_outputs(&window, &outputs).unwrap();
        for (j, &t) in plan.targets(&tokens, chunk).iter().enumerate() {
            acc.add(nll(logits.row(j), t));
        }
        out.push_str(&format!("[{}]{:.4},", chunk + 1, acc.perplexity()));
    }
    out.push_str(&format!(
        "\nFinal estimate: PPL = {:.4} +/- {:.5}\n",
        acc.perplexity(),
        acc.error().unwrap()
    ));
    (out, acc, tokens.len())
}

/// The value of the top-level `"key": value` of a pretty-printed JSON document, as written.
fn raw_json_value<'a>(doc: &'a str, key: &str) -> &'a str {
    let line = doc
        .lines()
        .find(|l| l.starts_with(&format!("  \"{key}\":")))
        .unwrap_or_else(|| panic!("no {key} in {doc}"));
    line.split_once(':').unwrap().1.trim().trim_end_matches(',')
}

#[test]
fn smollm2_perplexity_equals_llama_cpp_on_the_same_text_and_context() {
    let model = bitnet_fixtures::smollm2();
    let file = bitnet_fixtures::alice();
    let text = std::fs::read_to_string(&file).unwrap();
    let (expected_text, acc, n_tokens) = reference(&model, &text);

    let run = |json: bool| {
        let mut cmd = bitnet();
        cmd.args(["perplexity", "--ctx", "128", "--chunks", "3", "--model"])
            .arg(&model)
            .arg("--file")
            .arg(&file);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.assert().success().get_output().clone();
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (stdout, stderr) = run(false);
    assert_eq!(stdout, expected_text, "stderr: {stderr}");
    assert!(stderr.contains("calculating perplexity over 3 chunks, n_ctx=128, batch_size=128"));

    // Bit for bit: the JSON numbers are written shortest-round-trip, so equal text is equal bits.
    let (doc, _) = run(true);
    let json = |v: f64| serde_json::to_string(&v).unwrap();
    assert_eq!(raw_json_value(&doc, "mean_nll"), json(acc.mean_nll()));
    assert_eq!(raw_json_value(&doc, "ppl"), json(acc.perplexity()));
    assert_eq!(
        raw_json_value(&doc, "ppl_error"),
        json(acc.error().unwrap())
    );
    let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(parsed["n_tokens"], n_tokens);
    assert_eq!(parsed["scored_tokens"], CHUNKS * (CTX - 1 - CTX / 2));
    assert_eq!(parsed["chunks"].as_array().unwrap().len(), CHUNKS);
}

#[test]
fn batches_smaller_than_the_context_give_the_same_windows() {
    // Two batches of 64 per window: the first carries no scored position. The result is the
    // same computation, split differently (this engine evaluates a batch after cached
    // positions exactly as the reference does token by token).
    let model = bitnet_fixtures::smollm2();
    let file = bitnet_fixtures::alice();
    let run = |batch: &str| {
        let out = bitnet()
            .args(["perplexity", "--ctx", "128", "--chunks", "1", "--json"])
            .args(["--batch", batch, "--model"])
            .arg(&model)
            .arg("--file")
            .arg(&file)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    let (one, two) = (run("128"), run("64"));
    assert_eq!(two["n_batch"], 64);
    let (a, b) = (one["ppl"].as_f64().unwrap(), two["ppl"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-3 * a, "{a} vs {b}");
}

#[test]
fn bad_values_are_usage_errors_and_bad_files_runtime_errors() {
    let model = bitnet_fixtures::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Only a few words here.").unwrap();
    bitnet()
        .args(["perplexity", "--ctx", "128", "--model"])
        .arg(&model)
        .arg("--file")
        .arg(&short)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("needs at least 256"));
    bitnet()
        .args(["perplexity", "--ctx", "64", "--batch", "65", "--model"])
        .arg(&model)
        .arg("--file")
        .arg(bitnet_fixtures::alice())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("batch"));
    bitnet()
        .args(["perplexity", "--ctx", "100000", "--model"])
        .arg(&model)
        .arg("--file")
        .arg(bitnet_fixtures::alice())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("past the model's context"));
    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, [b'a', 0xff, 0xfe, b'b']).unwrap();
    bitnet()
        .args(["perplexity", "--json", "--model"])
        .arg(&model)
        .arg("--file")
        .arg(&binary)
        .assert()
        .code(3)
        .stdout(predicate::str::contains("\"error\""))
        .stderr(predicate::str::contains("not UTF-8"));
    bitnet()
        .args(["perplexity", "--model"])
        .arg(&model)
        .arg("--file")
        .arg(dir.path().join("missing.txt"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot read"));
}
