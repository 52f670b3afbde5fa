//! End-to-end tests of `bitnet inspect`: the real binary on generated GGUF files, on corrupt
//! inputs, on bad command lines, and on the real fixture files (vocabularies and SmolLM2).

use std::path::Path;

use assert_cmd::Command;
use bitnet_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};
use predicates::prelude::*;
use serde_json::{json, Value as Json};

const CHAT_TEMPLATE: &str = "{% for message in messages %}\n\
<|im_start|>{{ message['role'] }}\n\
{{ message['content'] }}<|im_end|>\n\
{% endfor %}\n\
{% if add_generation_prompt %}\n\
<|im_start|>assistant\n\
{% endif %}\n\
{# line eight #}\n\
{# line nine: never shown in text mode #}";

fn bitnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bitnet"))
}

/// What one run of the binary produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = bitnet().args(args).output().expect("the binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn inspect(path: &Path, json: bool) -> Run {
    let path = path.to_str().expect("test paths are UTF-8");
    if json {
        run(&["inspect", "--json", path])
    } else {
        run(&["inspect", path])
    }
}

/// Parse `stdout` as a stream of JSON values and insist there is exactly one.
fn one_json_document(stdout: &str) -> Json {
    let docs: Vec<Json> = serde_json::Deserializer::from_str(stdout)
        .into_iter::<Json>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not a JSON stream ({e}):\n{stdout}"));
    assert_eq!(
        docs.len(),
        1,
        "expected exactly one JSON document:\n{stdout}"
    );
    docs.into_iter().next().unwrap()
}

/// A successful text run; returns stdout.
fn inspect_text_ok(path: &Path) -> String {
    let r = inspect(path, false);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.stderr.is_empty(), "stderr: {}", r.stderr);
    r.stdout
}

/// A successful JSON run; returns the document.
fn inspect_json_ok(path: &Path) -> Json {
    let r = inspect(path, true);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.stderr.is_empty(), "stderr: {}", r.stderr);
    one_json_document(&r.stdout)
}

/// The value column of the text line whose key is `key` (the first such line).
fn text_value<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}:");
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{key}:` line in:\n{text}"))
        .trim()
}

fn sorted_keys(v: &Json) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Every key of the schema is present in every successful document, null or not.
fn assert_schema(doc: &Json) {
    let expect = |v: &Json, keys: &[&str]| {
        let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(sorted_keys(v), keys, "in {v}");
    };
    expect(
        doc,
        &[
            "path",
            "file_size",
            "gguf_version",
            "metadata_count",
            "architecture",
            "name",
            "hparams",
            "tokenizer",
            "tensors",
        ],
    );
    expect(
        &doc["hparams"],
        &[
            "context_length",
            "embedding_length",
            "block_count",
            "feed_forward_length",
            "head_count",
            "head_count_kv",
            "rms_norm_eps",
            "rope_freq_base",
            "rope_dimension_count",
            "vocab_size",
        ],
    );
    expect(
        &doc["tokenizer"],
        &[
            "model",
            "pre",
            "vocab_size",
            "merges_count",
            "bos",
            "eos",
            "eot",
            "unk",
            "pad",
            "add_bos",
            "add_eos",
            "add_space_prefix",
            "chat_template",
        ],
    );
    expect(&doc["tensors"], &["count", "total_bytes", "by_type"]);
    for entry in doc["tensors"]["by_type"]
        .as_array()
        .expect("by_type is an array")
    {
        expect(entry, &["type", "count", "bytes"]);
    }
}

fn s(x: &str) -> Value {
    Value::String(x.to_string())
}

fn strings(items: &[&str]) -> Value {
    Value::Array(Array::String(items.iter().map(|x| x.to_string()).collect()))
}

/// A small llama-like model: hyper-parameters, an SPM-style vocabulary with a chat template,
/// two f32 tensors and one f16 tensor.
fn full_model() -> GgufWriter {
    let mut w = GgufWriter::new();
    let mut kv = |key: &str, value: Value| {
        w.add_metadata(key, value).expect("unique key");
    };
    kv("general.architecture", s("llama"));
    kv("general.name", s("tiny test llama"));
    kv("llama.context_length", Value::U32(2048));
    kv("llama.embedding_length", Value::U32(64));
    kv("llama.block_count", Value::U32(2));
    kv("llama.feed_forward_length", Value::U64(172));
    kv("llama.attention.head_count", Value::U32(4));
    kv("llama.attention.head_count_kv", Value::I32(2));
    kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-6));
    kv("llama.rope.freq_base", Value::F32(10000.0));
    kv("llama.rope.dimension_count", Value::U32(16));
    kv("llama.vocab_size", Value::U32(6));
    kv("tokenizer.ggml.model", s("llama"));
    kv("tokenizer.ggml.pre", s("default"));
    kv(
        "tokenizer.ggml.tokens",
        strings(&[
            "<unk>",
            "<s>",
            "</s>",
            "<|eot|>",
            "\u{2581}hello",
            "\u{2581}world",
        ]),
    );
    kv(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vec![0.0, 0.0, 0.0, 0.0, -1.0, -2.0])),
    );
    kv(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![2, 3, 3, 3, 1, 1])),
    );
    kv("tokenizer.ggml.bos_token_id", Value::U32(1));
    kv("tokenizer.ggml.eos_token_id", Value::U32(2));
    kv("tokenizer.ggml.eot_token_id", Value::U32(3));
    kv("tokenizer.ggml.unknown_token_id", Value::U32(0));
    kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
    kv("tokenizer.ggml.add_eos_token", Value::Bool(false));
    kv("tokenizer.chat_template", s(CHAT_TEMPLATE));
    w.add_tensor(
        "token_embd.weight",
        &[64, 6],
        GgmlType::F32,
        vec![0; 64 * 6 * 4],
    )
    .unwrap();
    w.add_tensor("output_norm.weight", &[64], GgmlType::F32, vec![0; 64 * 4])
        .unwrap();
    w.add_tensor(
        "blk.0.attn_q.weight",
        &[64, 64],
        GgmlType::F16,
        vec![0; 64 * 64 * 2],
    )
    .unwrap();
    w
}

/// A vocabulary-only file as `convert_hf_to_gguf.py --vocab-only` writes for a BPE model,
/// minus the hyper-parameters: architecture, tokenizer keys, no tensors.
fn vocab_only() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", s("llama")).unwrap();
    w.add_metadata("tokenizer.ggml.model", s("gpt2")).unwrap();
    w.add_metadata("tokenizer.ggml.pre", s("llama-bpe"))
        .unwrap();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        strings(&["a", "b", "ab", "<|begin|>"]),
    )
    .unwrap();
    w.add_metadata("tokenizer.ggml.merges", strings(&["a b"]))
        .unwrap();
    w.add_metadata("tokenizer.ggml.bos_token_id", Value::U32(3))
        .unwrap();
    w
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn full_model_json_reports_every_value_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "tiny.gguf", &full_model().to_bytes());
    let doc = inspect_json_ok(&path);
    assert_schema(&doc);

    assert_eq!(doc["path"], path.to_str().unwrap());
    assert_eq!(doc["file_size"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(doc["gguf_version"], 3);
    assert_eq!(doc["metadata_count"], 24);
    assert_eq!(doc["architecture"], "llama");
    assert_eq!(doc["name"], "tiny test llama");

    let h = &doc["hparams"];
    assert_eq!(h["context_length"], 2048);
    assert_eq!(h["embedding_length"], 64);
    assert_eq!(h["block_count"], 2);
    assert_eq!(h["feed_forward_length"], 172);
    assert_eq!(h["head_count"], 4);
    assert_eq!(h["head_count_kv"], 2);
    let eps = h["rms_norm_eps"].as_f64().unwrap();
    assert!((eps - 1e-6).abs() < 1e-12, "{eps}");
    assert_eq!(h["rope_freq_base"], 10000.0);
    assert_eq!(h["rope_dimension_count"], 16);
    assert_eq!(h["vocab_size"], 6);

    let t = &doc["tokenizer"];
    assert_eq!(t["model"], "llama");
    assert_eq!(t["pre"], "default");
    assert_eq!(t["vocab_size"], 6);
    assert_eq!(t["merges_count"], Json::Null);
    assert_eq!(t["bos"], json!({"id": 1, "text": "<s>"}));
    assert_eq!(t["eos"], json!({"id": 2, "text": "</s>"}));
    assert_eq!(t["eot"], json!({"id": 3, "text": "<|eot|>"}));
    assert_eq!(t["unk"], json!({"id": 0, "text": "<unk>"}));
    assert_eq!(t["pad"], Json::Null);
    assert_eq!(t["add_bos"], true);
    assert_eq!(t["add_eos"], false);
    assert_eq!(t["add_space_prefix"], Json::Null, "absent must stay absent");
    assert_eq!(t["chat_template"], CHAT_TEMPLATE, "the whole template");

    assert_eq!(
        doc["tensors"],
        json!({
            "count": 3,
            "total_bytes": 64 * 6 * 4 + 64 * 4 + 64 * 64 * 2,
            "by_type": [
                {"type": "f32", "count": 2, "bytes": 64 * 6 * 4 + 64 * 4},
                {"type": "f16", "count": 1, "bytes": 64 * 64 * 2},
            ],
        })
    );
}

#[test]
fn full_model_text_is_aligned_and_shows_absent_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "tiny.gguf", &full_model().to_bytes());
    let text = inspect_text_ok(&path);

    assert_eq!(text_value(&text, "file"), path.to_str().unwrap());
    assert_eq!(text_value(&text, "gguf version"), "3");
    assert_eq!(text_value(&text, "architecture"), "llama");
    assert_eq!(text_value(&text, "name"), "tiny test llama");
    assert_eq!(text_value(&text, "context_length"), "2048");
    assert_eq!(text_value(&text, "head_count_kv"), "2");
    assert_eq!(text_value(&text, "rms_norm_eps"), "0.000001");
    assert_eq!(text_value(&text, "rope_freq_base"), "10000");
    assert_eq!(text_value(&text, "model"), "llama");
    assert_eq!(text_value(&text, "tokens"), "6");
    assert_eq!(text_value(&text, "bos"), r#"1 "<s>""#);
    assert_eq!(text_value(&text, "eot"), r#"3 "<|eot|>""#);
    assert_eq!(text_value(&text, "pad"), "(absent)");
    assert_eq!(text_value(&text, "add_bos"), "true");
    assert_eq!(text_value(&text, "add_eos"), "false");
    assert_eq!(text_value(&text, "add_space_prefix"), "(absent)");
    assert_eq!(text_value(&text, "chat template"), "9 lines, 235 bytes");
    assert!(
        text.contains("  | {% if add_generation_prompt %}\n  (4 more lines)\n"),
        "{text}"
    );
    assert!(
        !text.contains("line eight"),
        "only the first lines are shown:\n{text}"
    );
    assert!(text_value(&text, "tensors").starts_with("3 ("), "{text}");
    let f16_row = text
        .lines()
        .find(|l| l.trim_start().starts_with("f16 "))
        .unwrap();
    assert_eq!(
        f16_row.split_whitespace().collect::<Vec<_>>(),
        ["f16", "1", "8.0", "KiB"]
    );
    assert!(
        text.contains("MiB") || text.contains("KiB"),
        "human-readable sizes"
    );

    // All `key: value` lines put their values in one column.
    let columns: Vec<usize> = text
        .lines()
        .filter(|l| !l.starts_with("  |") && !l.trim_end().ends_with(':'))
        .filter_map(|l| {
            let colon = l.find(": ")?;
            let rest = &l[colon + 1..];
            Some(colon + 1 + rest.len() - rest.trim_start().len())
        })
        .collect();
    assert!(columns.len() > 20, "{text}");
    assert!(
        columns.windows(2).all(|w| w[0] == w[1]),
        "{columns:?}\n{text}"
    );
    assert!(!text.contains('\u{1b}'), "no colour escapes");
}

#[test]
fn vocab_only_file_has_no_tensors_and_no_hparams() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "vocab.gguf", &vocab_only().to_bytes());

    let doc = inspect_json_ok(&path);
    assert_schema(&doc);
    assert_eq!(doc["architecture"], "llama");
    assert_eq!(doc["name"], Json::Null);
    assert!(
        doc["hparams"]
            .as_object()
            .unwrap()
            .values()
            .all(Json::is_null),
        "{doc}"
    );
    assert_eq!(doc["tokenizer"]["model"], "gpt2");
    assert_eq!(doc["tokenizer"]["pre"], "llama-bpe");
    assert_eq!(doc["tokenizer"]["vocab_size"], 4);
    assert_eq!(doc["tokenizer"]["merges_count"], 1);
    assert_eq!(
        doc["tokenizer"]["bos"],
        json!({"id": 3, "text": "<|begin|>"})
    );
    assert_eq!(doc["tokenizer"]["eos"], Json::Null);
    assert_eq!(doc["tokenizer"]["add_bos"], Json::Null);
    assert_eq!(doc["tokenizer"]["chat_template"], Json::Null);
    assert_eq!(
        doc["tensors"],
        json!({"count": 0, "total_bytes": 0, "by_type": []})
    );

    let text = inspect_text_ok(&path);
    assert_eq!(text_value(&text, "hyper-parameters"), "(absent)");
    assert_eq!(text_value(&text, "tensors"), "0 (vocabulary only)");
    assert_eq!(text_value(&text, "chat template"), "(absent)");
    assert_eq!(text_value(&text, "add_bos"), "(absent)");
    assert_eq!(text_value(&text, "merges"), "1");
}

#[test]
fn file_without_architecture_or_tokenizer_is_reported_not_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.tokens", strings(&["x", "y"]))
        .unwrap();
    w.add_metadata("tokenizer.ggml.eos_token_id", Value::U32(7))
        .unwrap();
    let path = write(&dir, "bare.gguf", &w.to_bytes());

    let doc = inspect_json_ok(&path);
    assert_schema(&doc);
    assert_eq!(doc["architecture"], Json::Null);
    assert_eq!(doc["tokenizer"]["model"], Json::Null);
    assert_eq!(doc["tokenizer"]["vocab_size"], 2);
    // An id outside the vocabulary keeps its id and has no text.
    assert_eq!(doc["tokenizer"]["eos"], json!({"id": 7, "text": null}));

    let text = inspect_text_ok(&path);
    assert_eq!(text_value(&text, "architecture"), "(absent)");
    assert!(
        text_value(&text, "eos").starts_with("7 (out of range"),
        "{text}"
    );

    let empty = write(&dir, "empty-header.gguf", &GgufWriter::new().to_bytes());
    assert_schema(&inspect_json_ok(&empty));
    assert_eq!(text_value(&inspect_text_ok(&empty), "metadata keys"), "0");
}

#[test]
fn per_layer_head_counts_are_shown_as_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", s("gemma4")).unwrap();
    w.add_metadata(
        "gemma4.attention.head_count_kv",
        Value::Array(Array::U32(vec![8, 8, 2])),
    )
    .unwrap();
    let path = write(&dir, "per-layer.gguf", &w.to_bytes());
    let doc = inspect_json_ok(&path);
    assert_eq!(doc["hparams"]["head_count_kv"], json!([8, 8, 2]));
    let text = inspect_text_ok(&path);
    assert_eq!(
        text_value(&text, "head_count_kv"),
        "per layer [8, 8, 2] (3 values)"
    );
}

/// Checks both modes fail with exit 3 and one `error: PATH: REASON` line naming `reason`.
fn assert_runtime_error(path: &Path, reason: &str) {
    let shown = path.to_str().unwrap();
    let prefix = format!("error: {shown}: ");

    let text = inspect(path, false);
    assert_eq!(text.code, Some(3), "stderr: {}", text.stderr);
    assert!(text.stdout.is_empty(), "stdout: {}", text.stdout);
    assert_eq!(text.stderr.lines().count(), 1, "one line: {}", text.stderr);
    assert!(text.stderr.starts_with(&prefix), "{}", text.stderr);
    assert!(
        text.stderr.contains(reason),
        "want {reason:?} in {}",
        text.stderr
    );

    let json = inspect(path, true);
    assert_eq!(json.code, Some(3), "stderr: {}", json.stderr);
    assert_eq!(json.stderr, text.stderr);
    let doc = one_json_document(&json.stdout);
    assert_eq!(sorted_keys(&doc), ["error", "path"]);
    assert_eq!(doc["path"], shown);
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains(reason), "want {reason:?} in {error}");
    assert_eq!(text.stderr.trim_end(), format!("{prefix}{error}"));
}

#[test]
fn unreadable_files_exit_3_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    assert_runtime_error(&dir.path().join("missing.gguf"), "cannot read");
    assert_runtime_error(dir.path(), "is a directory");
}

#[test]
fn corrupt_files_exit_3_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let valid = full_model().to_bytes();

    assert_runtime_error(&write(&dir, "empty.gguf", b""), "not a GGUF file");

    let mut bad_magic = valid.clone();
    bad_magic[..4].copy_from_slice(b"GGML");
    assert_runtime_error(&write(&dir, "magic.gguf", &bad_magic), "not a GGUF file");

    let mut v1 = valid.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_runtime_error(&write(&dir, "v1.gguf", &v1), "unsupported GGUF version 1");

    let mut future = valid.clone();
    future[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert_runtime_error(
        &write(&dir, "v4.gguf", &future),
        "unsupported GGUF version 4",
    );

    let text = b"this is not a model, just some text that is long enough\n";
    assert_runtime_error(&write(&dir, "notes.gguf", text), "not a GGUF file");
}

#[test]
fn truncated_files_exit_3_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let valid = full_model().to_bytes();
    let header_end = valid.len() - 64 * 64 * 2 - 64 * 4 - 64 * 6 * 4;
    // Cut inside the magic, the version, the counts, the metadata, the tensor infos, and
    // the tensor data (the typical interrupted download).
    let cuts = [
        (2, "not a GGUF file"),
        (6, "truncated"),
        (20, ""),
        (200, ""),
        (header_end - 10, ""),
        (header_end, "truncated"),
        (valid.len() - 1, "1 bytes missing"),
    ];
    for (i, (len, reason)) in cuts.into_iter().enumerate() {
        let path = write(&dir, &format!("cut{i}.gguf"), &valid[..len]);
        assert_runtime_error(&path, reason);
    }
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        &["inspect"][..],
        &[],
        &["inspect", "a.gguf", "b.gguf"],
        &["inspect", "--bogus", "a.gguf"],
        &["frobnicate"],
    ] {
        let r = run(args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        assert!(!r.stderr.is_empty(), "{args:?}");
    }
    bitnet()
        .arg("inspect")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("<MODEL>"));

    bitnet()
        .arg("--help")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("inspect"));
    bitnet()
        .args(["inspect", "--help"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("--json").and(predicate::str::contains("absent")));
    bitnet()
        .arg("--version")
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("bitnet "));
}

#[test]
fn usage_errors_in_json_mode_still_print_one_document() {
    let r = run(&["inspect", "--json"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let doc = one_json_document(&r.stdout);
    assert_eq!(sorted_keys(&doc), ["error"]);
    assert!(doc["error"].as_str().unwrap().contains("<MODEL>"), "{doc}");
    assert!(r.stderr.contains("<MODEL>"), "{}", r.stderr);

    let r = run(&["inspect", "--json", "--bogus", "x.gguf"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(one_json_document(&r.stdout)["error"]
        .as_str()
        .unwrap()
        .contains("--bogus"));
}

// ---- Real data: the fixture files (fetched with `cargo run -p xtask -- fixtures`). ----

#[test]
fn smollm2_is_a_llama_with_gpt2_bpe_chatml_and_q4_1_tensors() {
    let path = bitnet_fixtures::smollm2();
    let file = GgufFile::open(&path).unwrap();
    let doc = inspect_json_ok(&path);
    assert_schema(&doc);
    assert_eq!(doc["architecture"], "llama");
    assert_eq!(doc["tokenizer"]["model"], "gpt2");
    assert_eq!(doc["tokenizer"]["pre"], "smollm");
    let template = doc["tokenizer"]["chat_template"].as_str().unwrap();
    assert!(template.contains("<|im_start|>"), "{template}");
    assert_eq!(Some(template), file.tokenizer().unwrap().chat_template);

    let tokens = file.tokenizer().unwrap().tokens.unwrap().len();
    assert_eq!(doc["tokenizer"]["vocab_size"], tokens);
    assert_eq!(doc["file_size"], std::fs::metadata(&path).unwrap().len());

    let by_type = doc["tensors"]["by_type"].as_array().unwrap();
    let types: Vec<&str> = by_type
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"q4_1"), "{types:?}");
    assert_eq!(doc["tensors"]["count"], file.tensors().len());
    let total: u64 = file.tensors().iter().map(|t| t.size).sum();
    assert_eq!(doc["tensors"]["total_bytes"], total);
    let by_type_count: u64 = by_type.iter().map(|t| t["count"].as_u64().unwrap()).sum();
    assert_eq!(by_type_count, file.tensors().len() as u64);

    let text = inspect_text_ok(&path);
    assert_eq!(text_value(&text, "architecture"), "llama");
    assert_eq!(text_value(&text, "pre"), "smollm");
    assert!(text.contains("<|im_start|>"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("q4_1 ")),
        "{text}"
    );
    assert!(text.lines().count() < 60, "text mode stays short:\n{text}");
}

#[test]
fn every_vocab_fixture_inspects_in_both_modes() {
    let names = bitnet_fixtures::all_vocab_names();
    assert_eq!(names.len(), 19);
    for name in names {
        let path = bitnet_fixtures::vocab(name);
        let file = GgufFile::open(&path).unwrap();
        let tok = file.tokenizer().unwrap();
        let n_tokens = tok.tokens.expect("a vocabulary file has tokens").len();

        let doc = inspect_json_ok(&path);
        assert_schema(&doc);
        assert_eq!(doc["tokenizer"]["vocab_size"], n_tokens, "{name}");
        assert_eq!(doc["tokenizer"]["model"], json!(tok.model), "{name}");
        assert_eq!(doc["tokenizer"]["pre"], json!(tok.pre), "{name}");
        assert_eq!(doc["tokenizer"]["add_bos"], json!(tok.add_bos), "{name}");
        assert_eq!(
            doc["architecture"],
            json!(file.get_str("general.architecture").unwrap()),
            "{name}"
        );
        assert_eq!(doc["tensors"]["count"], 0, "{name}");

        let text = inspect_text_ok(&path);
        assert_eq!(text_value(&text, "tokens"), n_tokens.to_string(), "{name}");
        assert_eq!(
            text_value(&text, "tensors"),
            "0 (vocabulary only)",
            "{name}"
        );
    }
}

#[test]
fn known_vocab_facts() {
    let spm = inspect_json_ok(&bitnet_fixtures::vocab("llama-spm"));
    let t = &spm["tokenizer"];
    assert_eq!(t["model"], "llama");
    assert_eq!(t["vocab_size"], 32000);
    assert_eq!(t["bos"], json!({"id": 1, "text": "<s>"}));
    assert_eq!(t["eos"], json!({"id": 2, "text": "</s>"}));
    assert_eq!(t["unk"], json!({"id": 0, "text": "<unk>"}));
    assert_eq!(t["add_bos"], true);

    let bpe = inspect_json_ok(&bitnet_fixtures::vocab("llama-bpe"));
    let t = &bpe["tokenizer"];
    assert_eq!(t["model"], "gpt2");
    assert_eq!(t["pre"], "llama-bpe");
    assert_eq!(t["vocab_size"], 128256);
    assert_eq!(t["bos"], json!({"id": 128000, "text": "<|begin_of_text|>"}));
    // The file stores no add_bos key (llama.cpp still adds BOS): absent, not false.
    assert_eq!(t["add_bos"], Json::Null);
    assert_eq!(bpe["hparams"]["rope_freq_base"], 500000.0);
    let text = inspect_text_ok(&bitnet_fixtures::vocab("llama-bpe"));
    assert_eq!(text_value(&text, "add_bos"), "(absent)");

    // Gemma 4 stores head_count_kv per layer.
    let gemma = inspect_json_ok(&bitnet_fixtures::vocab("gemma-4"));
    let kv = gemma["hparams"]["head_count_kv"].as_array().unwrap();
    assert_eq!(kv.len(), 30);
    assert_eq!(gemma["hparams"]["block_count"], 30);
}
