//! End-to-end tests of `bitnet tokenize`: the real binary on the real vocabularies, checked
//! against llama.cpp's HF-generated test vectors, plus bad inputs and bad command lines.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value as Json;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(args)
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The ids of a one-document JSON output.
fn ids(doc: &str) -> Vec<u32> {
    let doc: Json = serde_json::from_str(doc).unwrap_or_else(|e| panic!("not JSON ({e}): {doc}"));
    doc["ids"]
        .as_array()
        .expect("ids array")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

/// A non-empty test vector of `vocab`.
fn vector(vocab: &str, index: usize) -> (String, Vec<u32>) {
    let v = bitnet_fixtures::test_vectors(vocab);
    let non_empty: Vec<_> = v
        .into_iter()
        .filter(|(t, ids)| !t.trim().is_empty() && !ids.is_empty())
        .collect();
    non_empty[index % non_empty.len()].clone()
}

#[test]
fn gguf_json_output_matches_the_vectors_with_and_without_bos() {
    let model = bitnet_fixtures::vocab("llama-bpe");
    let (text, expected) = vector("llama-bpe", 7);
    let no_bos = run(&[
        "tokenize",
        "--model",
        path_str(&model),
        "--no-bos",
        "--prompt",
        &text,
        "--json",
    ]);
    assert_eq!(no_bos.code, Some(0), "{}", no_bos.stderr);
    assert_eq!(ids(&no_bos.stdout), expected);
    let doc: Json = serde_json::from_str(&no_bos.stdout).unwrap();
    assert_eq!(doc["pieces"].as_array().unwrap().len(), expected.len());
    assert_eq!(no_bos.stdout.lines().count(), 1, "exactly one document");

    // Default BOS is the vocabulary's: llama-bpe adds <|begin_of_text|> (128000).
    let default = run(&[
        "tokenize",
        "--model",
        path_str(&model),
        "--prompt",
        &text,
        "--json",
    ]);
    assert_eq!(ids(&default.stdout), [vec![128000], expected].concat());
    let doc: Json = serde_json::from_str(&default.stdout).unwrap();
    assert_eq!(doc["pieces"][0], "<|begin_of_text|>");
}

#[test]
fn spm_vocabulary_and_text_mode() {
    let model = bitnet_fixtures::vocab("llama-spm");
    let (text, expected) = vector("llama-spm", 3);
    let out = run(&[
        "tokenize",
        "--model",
        path_str(&model),
        "--no-bos",
        "--prompt",
        &text,
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap();
    let list: Vec<String> = expected.iter().map(u32::to_string).collect();
    assert_eq!(first, format!("ids: [{}]", list.join(", ")));
    assert_eq!(
        out.stdout.lines().count(),
        1 + expected.len(),
        "one line per token"
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn input_jsonl_prints_one_document_per_line_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.jsonl");
    let vectors: Vec<_> = (0..4).map(|i| vector("gpt-2", i * 5)).collect();
    let lines: Vec<String> = vectors
        .iter()
        .map(|(t, _)| serde_json::to_string(t).unwrap())
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = run(&[
        "tokenize",
        "--model",
        path_str(&bitnet_fixtures::vocab("gpt-2")),
        "--input-jsonl",
        path_str(&file),
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let docs: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(docs.len(), vectors.len());
    for (doc, (_, expected)) in docs.iter().zip(&vectors) {
        // gpt-2 adds no BOS by default.
        assert_eq!(&ids(doc), expected);
    }
}

#[test]
fn hf_tokenizer_json_matches_the_vectors() {
    let json = bitnet_fixtures::require(bitnet_fixtures::LLAMA3_TOKENIZER_JSON);
    let (text, expected) = vector("llama-bpe", 11);
    let out = run(&[
        "tokenize",
        "--tokenizer",
        path_str(&json),
        "--prompt",
        &text,
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The shipped tokenizer.json's post-processor adds no BOS, so its default adds none.
    assert_eq!(ids(&out.stdout), expected);
}

#[test]
fn parse_special_switch() {
    let model = bitnet_fixtures::vocab("llama-bpe");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "tokenize",
            "--model",
            path_str(&model),
            "--no-bos",
            "--json",
            "--prompt",
            "<|begin_of_text|>Hi",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let parsed = ids(&args(&["--parse-special"]).stdout);
    assert_eq!(parsed[0], 128000);
    let plain = ids(&args(&[]).stdout);
    assert!(!plain.contains(&128000) && plain.len() > parsed.len());
}

#[test]
fn add_bos_on_a_vocabulary_without_bos_says_so() {
    let out = run(&[
        "tokenize",
        "--model",
        path_str(&bitnet_fixtures::vocab("gpt-2")),
        "--add-bos",
        "--prompt",
        "",
        "--json",
    ]);
    assert_eq!(out.code, Some(0));
    assert!(
        ids(&out.stdout).is_empty(),
        "empty text, no BOS: {}",
        out.stdout
    );
    assert!(out.stderr.contains("does not add BOS"), "{}", out.stderr);
}

#[test]
fn bad_inputs_exit_3_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let model = bitnet_fixtures::vocab("llama-spm");

    let latin1 = dir.path().join("latin1.jsonl");
    std::fs::write(&latin1, b"\"caf\xe9\"\n").unwrap();
    let out = run(&[
        "tokenize",
        "--model",
        path_str(&model),
        "--input-jsonl",
        path_str(&latin1),
        "--json",
    ]);
    assert_eq!(out.code, Some(3));
    assert!(
        out.stderr.contains("not UTF-8") && out.stderr.contains("latin1.jsonl"),
        "{}",
        out.stderr
    );
    let doc: Json = serde_json::from_str(&out.stdout).expect("one JSON error document");
    assert!(doc["error"].as_str().unwrap().contains("not UTF-8"));

    let not_strings = dir.path().join("objects.jsonl");
    std::fs::write(&not_strings, "\"ok\"\n{\"text\": \"no\"}\n").unwrap();
    let out = run(&[
        "tokenize",
        "--model",
        path_str(&model),
        "--input-jsonl",
        path_str(&not_strings),
    ]);
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains("objects.jsonl:2"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    let missing = dir.path().join("missing.gguf");
    let out = run(&["tokenize", "--model", path_str(&missing), "--prompt", "x"]);
    assert_eq!(out.code, Some(3));
    assert_eq!(
        out.stderr.matches("missing.gguf").count(),
        1,
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let bert = bitnet_fixtures::vocab("bert-bge");
    let out = run(&["tokenize", "--model", path_str(&bert), "--prompt", "x"]);
    assert_eq!(out.code, Some(3));
    assert!(
        out.stderr.contains("unsupported tokenizer model `bert`"),
        "{}",
        out.stderr
    );

    let other = dir.path().join("tokenizer.model");
    std::fs::write(&other, b"x").unwrap();
    let out = run(&["tokenize", "--tokenizer", path_str(&other), "--prompt", "x"]);
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains("tokenizer.json"), "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let model = bitnet_fixtures::vocab("gpt-2");
    let m = path_str(&model);
    for args in [
        vec!["tokenize", "--prompt", "x"],
        vec!["tokenize", "--model", m],
        vec![
            "tokenize",
            "--model",
            m,
            "--prompt",
            "x",
            "--add-bos",
            "--no-bos",
        ],
        vec!["tokenize", "--model", m, "--tokenizer", m, "--prompt", "x"],
    ] {
        let out = run(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
    }
    let out = run(&["tokenize", "--model", m, "--json"]);
    assert_eq!(out.code, Some(2));
    let doc: Json = serde_json::from_str(&out.stdout).expect("JSON usage error");
    assert!(doc["error"].is_string());
}

/// A prompt the vocabulary cannot spell is an error naming the characters (llama.cpp would
/// abort on it), in text and JSON mode alike: never a silently shortened token list.
#[test]
fn text_the_vocabulary_cannot_spell_is_exit_3_naming_it() {
    use bitnet_gguf::GgmlType;
    use bitnet_minimodel::{crafted, Arch, Spec};
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("no-bytes.gguf");
    let variant = crafted::variants(Arch::Llama, GgmlType::F32)
        .into_iter()
        .find(|v| v.name == "vocabulary without byte tokens")
        .unwrap();
    variant
        .write(
            &Spec::new(Arch::Llama, GgmlType::F32),
            &bitnet_fixtures::vocab("llama-spm"),
            &model,
        )
        .unwrap();
    let text = run(&[
        "tokenize",
        "--model",
        path_str(&model),
        "--prompt",
        "Hello 🦀 world",
    ]);
    assert_eq!(text.code, Some(3), "{}", text.stderr);
    assert!(
        text.stderr.contains("U+1F980") && text.stderr.contains("cannot represent"),
        "{}",
        text.stderr
    );
    assert!(text.stdout.is_empty());
    let json = run(&[
        "tokenize",
        "--model",
        path_str(&model),
        "--prompt",
        "Hello 🦀 world",
        "--json",
    ]);
    assert_eq!(json.code, Some(3));
    let doc: Json = serde_json::from_str(&json.stdout).unwrap();
    assert!(doc["error"].as_str().unwrap().contains("U+1F980"), "{doc}");
    // What it can spell still tokenizes.
    let ok = run(&[
        "tokenize",
        "--model",
        path_str(&model),
        "--prompt",
        "Hello world",
    ]);
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
}
