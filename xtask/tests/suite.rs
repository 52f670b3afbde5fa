//! `xtask crossval-suite` and `crossval-merge`, end to end against the real C++ references:
//! suites that match, a reference on other weights, a wrong tokenizer that shows on one item,
//! shards merged into the single run's summary, `--resume`.

pub mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bitnet_gguf::GgmlType;
use bitnet_minimodel::{Arch, Spec};
use predicates::prelude::*;
use serde_json::Value;

use common::one_json;

/// A Llama-3-style chat template, so that the suite's `jinja` and `auto` items run on tiny
/// models too (the vocabulary GGUFs carry none).
const LLAMA3_JINJA: &str =
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}\
<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}\
<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/// A tiny random-weight model on the Llama-3 vocabulary (`llama-bpe`) with a chat template and
/// a context long enough for the failure-classes suite's longest prompt.
fn tiny(dir: &Path, arch: Arch, qtype: GgmlType, seed: u64) -> PathBuf {
    let spec = Spec {
        seed,
        ctx: Some(2048),
        chat_template: Some(LLAMA3_JINJA.to_string()),
        ..Spec::new(arch, qtype)
    };
    let sub = dir.join(format!("{}-{qtype:?}-{seed}", arch.name()));
    std::fs::create_dir_all(&sub).unwrap();
    bitnet_minimodel::write_tiny(&sub, &spec, &bitnet_fixtures::vocab("llama-bpe")).unwrap()
}

/// The repository's prompt suite of known failure classes.
fn failure_classes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("crossval")
        .join("suites")
        .join("failure-classes.jsonl")
}

/// The failure-classes suite without the items named in `without`, written into `dir`.
fn failure_classes_without(dir: &Path, without: &[&str]) -> PathBuf {
    let kept: Vec<String> = std::fs::read_to_string(failure_classes())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            !without.iter().any(|id| v["id"] == *id)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.join("failure-classes-subset.jsonl");
    std::fs::write(&path, kept.concat()).unwrap();
    path
}

fn xtask(task: &str) -> Command {
    let mut c = Command::cargo_bin("xtask").unwrap();
    c.arg(task);
    c
}

fn suite(model: &Path, extra: &[&str]) -> Command {
    let mut c = xtask("crossval-suite");
    c.arg("--model").arg(model).args(extra);
    c
}

fn stdout_of(c: &mut Command, code: i32) -> Vec<u8> {
    c.assert().code(code).get_output().stdout.clone()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// The lines of an `--out` file, parsed.
fn out_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn n_prompts(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Every item matched: the counts, no item named as failed, KL zero, PPL equal on both sides.
fn assert_all_matched(doc: &Value, n: usize) {
    assert_eq!(doc["status"], "ok", "{doc:#}");
    assert_eq!(doc["exit_code"], 0);
    let items = &doc["items"];
    assert_eq!(items["selected"], n, "{doc:#}");
    assert_eq!(items["finished"], n);
    assert_eq!(items["matched"], n, "{doc:#}");
    for k in ["diverged", "token_mismatch", "error"] {
        assert_eq!(items[k], 0, "{k}: {doc:#}");
    }
    for k in ["token_mismatches", "diverged", "errors", "missing"] {
        assert!(doc[k].as_array().unwrap().is_empty(), "{k}: {doc:#}");
    }
    let stats = &doc["stats"];
    assert!(stats.is_object(), "no statistics: {doc:#}");
    assert_eq!(stats["ppl_q"], stats["ppl_base"], "{stats:#}");
}

#[test]
fn smollm2_failure_classes_suite_matches_llama_cpp_and_streams_one_line_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.jsonl");
    let prompts = failure_classes();
    let n = n_prompts(&prompts);
    let output = suite(
        &bitnet_fixtures::smollm2(),
        &["--format", "json", "--prompts"],
    )
    .arg(&prompts)
    .arg("--out")
    .arg(&out)
    .assert()
    .code(0)
    .get_output()
    .clone();
    let doc = one_json(&output.stdout);
    assert_all_matched(&doc, n);
    let lines = out_lines(&out);
    assert_eq!(lines.len(), n);
    assert!(lines.iter().all(|l| l["status"] == "ok"), "{lines:#?}");
    // Every item's one-line view on stderr, in input order.
    let err = String::from_utf8(output.stderr).unwrap();
    for l in &lines {
        let id = l["id"].as_str().unwrap();
        assert!(
            err.contains(&format!("✓ {id} ")),
            "no line for {id}:\n{err}"
        );
    }
    assert!(out.with_extension("jsonl.tokstats").exists());
}

#[test]
fn tiny_ternary_suites_match_both_references() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = failure_classes();
    let n = n_prompts(&prompts);
    // Upstream llama.cpp's bitnet with TQ2_0, and Microsoft's bitnet-b1.58 with I2_S.
    for (arch, qtype) in [
        (Arch::Bitnet, GgmlType::TQ2_0),
        (Arch::BitnetB158, GgmlType::I2_S),
    ] {
        let model = tiny(dir.path(), arch, qtype, 1);
        let doc = one_json(&stdout_of(
            suite(&model, &["--format", "json", "--prompts"]).arg(&prompts),
            0,
        ));
        assert_all_matched(&doc, n);
    }
}

#[test]
fn a_reference_on_other_weights_diverges_on_every_item_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let ours = tiny(dir.path(), Arch::Llama, GgmlType::F32, 1);
    let other = tiny(dir.path(), Arch::Llama, GgmlType::F32, 2);
    // Divergence shows on every item; the long one would only cost CI time.
    let prompts = failure_classes_without(dir.path(), &["long-near-context-limit"]);
    let n = n_prompts(&prompts);
    let doc = one_json(&stdout_of(
        suite(
            &ours,
            &["--format", "json", "--max-tokens", "1", "--prompts"],
        )
        .arg(&prompts)
        .arg("--cpp-model")
        .arg(&other),
        1,
    ));
    assert_eq!(doc["status"], "diverged", "{doc:#}");
    assert_eq!(doc["items"]["diverged"], n, "{doc:#}");
    assert_eq!(doc["items"]["matched"], 0);
    assert_eq!(doc["items"]["token_mismatch"], 0);
    assert_eq!(doc["diverged"].as_array().unwrap().len(), n);
    // The statistics say how far apart the two models are.
    let kl_mean = doc["stats"]["kl"]["mean"]["value"].as_f64().unwrap();
    assert!(kl_mean > 0.0, "{doc:#}");
    // The text summary says the same.
    suite(&ours, &["--max-tokens", "1", "--prompts"])
        .arg(&prompts)
        .arg("--cpp-model")
        .arg(&other)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!("0 matched, {n} diverged")));
}

/// The Llama-3 tokenizer.json adds no BOS where the model's vocabulary does: items whose
/// template writes `<|begin_of_text|>` itself tokenize alike, the raw one does not. That one
/// item fails the pre-gate, the others are still compared, and the summary names it.
#[test]
fn one_item_with_a_wrong_tokenizer_exits_2_and_the_summary_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, 1);
    let prompts = dir.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        concat!(
            "{\"id\": \"chat-hello\", \"prompt\": \"Hello world\", \"template\": \"llama3-chat\"}\n",
            "{\"id\": \"raw-digits\", \"prompt\": \"1234567890\"}\n",
            "{\"id\": \"chat-cjk\", \"prompt\": \"你好世界 🦀\", \"template\": \"llama3-chat\"}\n",
        ),
    )
    .unwrap();
    let tok = bitnet_fixtures::require(bitnet_fixtures::LLAMA3_TOKENIZER_JSON);
    let mut c = suite(&model, &["--format", "json", "--prompts"]);
    c.arg(&prompts).arg("--tokenizer").arg(&tok);
    let doc = one_json(&stdout_of(&mut c, 2));
    assert_eq!(doc["status"], "token_mismatch", "{doc:#}");
    assert_eq!(ids(&doc["token_mismatches"]), ["raw-digits"]);
    assert_eq!(doc["items"]["matched"], 2, "{doc:#}");
    assert_eq!(doc["items"]["token_mismatch"], 1);
    let mut c = suite(&model, &["--prompts"]);
    c.arg(&prompts).arg("--tokenizer").arg(&tok);
    let text = String::from_utf8(stdout_of(&mut c, 2)).unwrap();
    assert!(
        text.contains("raw-digits (#1): first difference at token 0"),
        "{text}"
    );
}

/// Text mode on the prose corpus: three shards merged give the single run's summary byte for
/// byte (text and JSON), and a resumed run gives it too.
#[test]
fn three_shards_merged_equal_the_single_run_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::Q8_0, 3);
    let text = bitnet_fixtures::require(bitnet_fixtures::ALICE29_TXT);
    let base = ["--ctx", "64", "--chunks", "7"];
    let run = |out: &Path, extra: &[&str], format: &str| {
        let mut c = suite(&model, &base);
        c.arg("--text")
            .arg(&text)
            .arg("--out")
            .arg(out)
            .args(["--format", format])
            .args(extra);
        stdout_of(&mut c, 0)
    };
    let single = dir.path().join("single.jsonl");
    let single_json = run(&single, &[], "json");
    let doc = one_json(&single_json);
    assert_all_matched(&doc, 7);
    // llama-perplexity scores positions n_ctx/2 .. n_ctx-2 of each window (the tokens after them).
    assert_eq!(doc["stats"]["n_tokens"], 7 * (64 - 1 - 32), "{doc:#}");

    let shards: Vec<PathBuf> = (1..=3)
        .map(|i| {
            let out = dir.path().join(format!("shard-{i}.jsonl"));
            run(&out, &["--shard", &format!("{i}/3")], "json");
            out
        })
        .collect();
    let merge = |format: &str| {
        let mut c = xtask("crossval-merge");
        c.args(&shards).args(["--format", format]);
        stdout_of(&mut c, 0)
    };
    assert_eq!(
        String::from_utf8(merge("json")).unwrap(),
        String::from_utf8(single_json.clone()).unwrap()
    );
    // The text summary of the single run, as merge prints it from one output.
    let mut c = xtask("crossval-merge");
    c.arg(&single);
    let single_text = stdout_of(&mut c, 0);
    assert_eq!(
        String::from_utf8(merge("text")).unwrap(),
        String::from_utf8(single_text).unwrap()
    );

    // An interrupted run (its last item lost) resumed: the same summary again.
    let resumed = dir.path().join("resumed.jsonl");
    std::fs::copy(&single, &resumed).unwrap();
    std::fs::copy(
        single.with_extension("jsonl.tokstats"),
        resumed.with_extension("jsonl.tokstats"),
    )
    .unwrap();
    let all = std::fs::read_to_string(&resumed).unwrap();
    let kept: Vec<&str> = all.lines().take(5).collect();
    std::fs::write(&resumed, kept.join("\n") + "\n").unwrap();
    let mut c = suite(&model, &base);
    c.arg("--text")
        .arg(&text)
        .arg("--out")
        .arg(&resumed)
        .args(["--format", "json", "--resume"]);
    let out = c.assert().code(0).get_output().clone();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(single_json).unwrap()
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("already in --out"), "{err}");
    assert_eq!(out_lines(&resumed).len(), 7);
}

#[test]
fn help_documents_the_exit_codes_and_bad_shards_are_usage_errors() {
    for task in ["crossval-suite", "crossval-merge"] {
        xtask(task)
            .arg("--help")
            .assert()
            .code(0)
            .stdout(predicate::str::contains("Exit codes: 0"))
            .stdout(predicate::str::contains("1 some item"))
            .stdout(predicate::str::contains("3 runtime error"));
    }
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, 1);
    for bad in ["0/3", "4/3", "1/0", "x"] {
        suite(&model, &["--shard", bad, "--prompts"])
            .arg(failure_classes())
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--shard"));
    }
}

/// A flag an item's template ignores is never ignored in silence: each such item is named.
#[test]
fn flags_an_items_template_ignores_are_warned_about_item_by_item() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, 1);
    let prompts = dir.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        concat!(
            "{\"id\": \"raw\", \"prompt\": \"Hello world\"}\n",
            "{\"id\": \"chat\", \"prompt\": \"Hello world\", \"template\": \"llama3-chat\"}\n",
        ),
    )
    .unwrap();
    let out = suite(
        &model,
        &["--system-prompt", "Be brief.", "--no-bos", "--prompts"],
    )
    .arg(&prompts)
    .assert()
    .code(0)
    .get_output()
    .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("warning: item \"raw\": --system-prompt has no effect"),
        "{err}"
    );
    assert!(
        err.contains("warning: item \"chat\": --no-bos has no effect"),
        "{err}"
    );
    assert!(!err.contains("item \"chat\": --system-prompt"), "{err}");
}

/// The run configuration flags are crossval-per-token's (llama.cpp's spellings too): a suite
/// runs both sides in the configuration asked for and states it — in the text summary and in
/// the JSON settings, as the reference resolved it — and a configuration the model's
/// reference refuses is a usage error (2) before anything runs.
#[test]
fn a_suite_states_its_run_configuration_and_a_refused_one_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, 1);
    let prompts = dir.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        concat!(
            "{\"id\": \"a\", \"prompt\": \"Hello world\"}\n",
            "{\"id\": \"b\", \"prompt\": \"The quick brown fox\"}\n",
        ),
    )
    .unwrap();
    let exact = ["--exact-reference", "--threads", "1", "--max-tokens", "2"];
    let mut c = suite(&model, &exact);
    c.arg("--prompts").arg(&prompts).args(["--format", "json"]);
    let doc = one_json(&stdout_of(&mut c, 0));
    assert_all_matched(&doc, 2);
    let rc = &doc["settings"]["run_configuration"];
    assert_eq!(rc["cache_type_k"], "f32", "{doc:#}");
    assert_eq!(rc["cache_type_v"], "f32", "{doc:#}");
    assert_eq!(rc["flash_attn"], false, "{doc:#}");
    assert_eq!(rc["n_ubatch"], 512, "{doc:#}");
    assert_eq!(rc["threads"], 1, "{doc:#}");

    // llama.cpp's own flag names, in text mode.
    let mut c = suite(
        &model,
        &["-ctk", "f16", "-ctv", "f16", "-fa", "on", "-ub", "3"],
    );
    c.args(["--threads", "1", "--max-tokens", "2", "--prompts"])
        .arg(&prompts);
    let text = String::from_utf8(stdout_of(&mut c, 0)).unwrap();
    assert!(
        text.contains(
            "run configuration: K cache f16, V cache f16, flash attention on, n_ubatch 3, 1 thread"
        ),
        "{text}"
    );

    // llama.cpp refuses a quantized V cache without flash attention.
    let mut c = suite(&model, &["-ctv", "q8_0", "-fa", "off", "--prompts"]);
    c.arg(&prompts);
    let out = c.assert().code(2).get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("quantized V cache (q8_0) requires flash_attn to be enabled"),
        "{err}"
    );
    assert!(!err.contains("items to run"), "nothing ran: {err}");
}
