//! Issue 15: templates in `crossval-per-token`, against the real references, in text and JSON
//! mode: flags a template ignores are named (item 6), chat markers a vocabulary lacks are
//! named, hostile and malformed chat templates stop with the limit or the reason and exit 3
//! (items 16, 21, 22), and a rendered prompt too large for the context is refused from its
//! size before tokenizing (item 16).

pub mod common;

use bitnet_gguf::GgmlType;
use bitnet_minimodel::Arch;
use common::{crossval, one_json, run, tiny, tiny_with_chat_template};

const PROMPT: &str = "What is 2+2?";

fn warnings(doc: &serde_json::Value) -> Vec<String> {
    doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

/// Item 6: one policy for every flag a template ignores: a warning on stderr and in the JSON
/// `warnings` array; the exit code is unchanged.
#[test]
fn flags_a_template_ignores_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let spm = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    for template in ["raw", "auto"] {
        let args = [
            "--prompt",
            PROMPT,
            "--system-prompt",
            "Be brief.",
            "--prompt-template",
            template,
        ];
        let (_, err) = run(&mut crossval(&spm, &args), 0);
        assert!(
            err.contains("warning: --system-prompt has no effect: the raw template"),
            "{template}: {err}"
        );
        let mut json = crossval(&spm, &args);
        json.args(["--format", "json"]);
        let (out, _) = run(&mut json, 0);
        let doc = one_json(out.as_bytes());
        assert!(
            warnings(&doc)
                .iter()
                .any(|w| w.starts_with("--system-prompt has no effect")),
            "{doc}"
        );
    }
    // --no-bos with a chat template that adds no BOS itself (its text carries it).
    let other = dir.path().join("bpe");
    std::fs::create_dir_all(&other).unwrap();
    let bpe = tiny(&other, Arch::Llama, GgmlType::F32, "llama-bpe", 1);
    let args = [
        "--prompt",
        PROMPT,
        "--prompt-template",
        "llama3-chat",
        "--no-bos",
        "--format",
        "json",
    ];
    let (out, _) = run(&mut crossval(&bpe, &args), 0);
    let doc = one_json(out.as_bytes());
    assert_eq!(
        warnings(&doc),
        ["--no-bos has no effect: the llama3-chat template adds no BOS here (any BOS is part of its text)"]
    );
    // A template that uses both: no warnings.
    let args = [
        "--prompt",
        PROMPT,
        "--prompt-template",
        "instruct",
        "--system-prompt",
        "Be brief.",
        "--no-bos",
        "--format",
        "json",
    ];
    let (out, err) = run(&mut crossval(&spm, &args), 0);
    assert!(warnings(&one_json(out.as_bytes())).is_empty());
    assert!(!err.contains("warning:"), "{err}");
}

/// "Also seen": a chat template whose markers are not single tokens of the model's vocabulary
/// (ChatML on a Llama-3 vocabulary, Llama-3 chat on SmolLM2) is named in a warning.
#[test]
fn chat_markers_missing_from_the_vocabulary_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let bpe = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-bpe", 1);
    let (_, err) = run(
        &mut crossval(&bpe, &["--prompt", PROMPT, "--prompt-template", "chatml"]),
        0,
    );
    assert!(
        err.contains(
            "warning: the chatml template's markers <|im_start|>, <|im_end|> are not single tokens"
        ),
        "{err}"
    );
    let (out, _) = run(
        &mut crossval(
            &bitnet_fixtures::smollm2(),
            &[
                "--prompt",
                PROMPT,
                "--prompt-template",
                "llama3-chat",
                "--max-tokens",
                "1",
                "--format",
                "json",
            ],
        ),
        0,
    );
    let doc = one_json(out.as_bytes());
    let w = warnings(&doc);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("<|begin_of_text|>, <|start_header_id|>"),
        "{w:?}"
    );
    // The model's own markers are single tokens: no warning.
    let (out, _) = run(
        &mut crossval(
            &bitnet_fixtures::smollm2(),
            &[
                "--prompt",
                PROMPT,
                "--prompt-template",
                "chatml",
                "--max-tokens",
                "1",
                "--format",
                "json",
            ],
        ),
        0,
    );
    assert!(warnings(&one_json(out.as_bytes())).is_empty());
}

/// Items 16, 21, 22: a chat template that is hostile, empty or fails to render is a malformed
/// file: exit 3 in both formats, the limit or the reason named, before the reference starts.
#[test]
fn hostile_and_malformed_chat_templates_are_runtime_errors_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                .into(),
            "instruction limit",
        ),
        (
            "filters",
            format!("{{{{ messages[0]['content']{} }}}}", "|trim".repeat(40_000)),
            "nesting limit",
        ),
        (
            "doubling",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}\
             {% endfor %}{{ ns.s }}"
                .into(),
            "memory limit",
        ),
        (
            "fifty-megabytes",
            "{% for i in range(100000) %}{{ 'x' * 500 }}{% endfor %}".into(),
            "output limit",
        ),
        ("empty", String::new(), "tokenizer.chat_template is empty"),
        (
            "raises",
            "{{ raise_exception('only user and assistant roles are supported') }}".into(),
            "only user and assistant roles are supported",
        ),
        (
            "renders-nothing",
            "{# nothing #}".into(),
            "rendered an empty prompt",
        ),
    ];
    for (name, template, needle) in cases {
        let model = tiny_with_chat_template(dir.path(), "llama-spm", &template, name);
        let args = ["--prompt", PROMPT, "--prompt-template", "jinja"];
        let (out, err) = run(&mut crossval(&model, &args), 3);
        assert!(out.is_empty(), "{name}");
        assert!(err.contains(needle), "{name}: missing {needle:?} in {err}");
        assert!(!err.contains("starting the C++ reference"), "{name}: {err}");
        let mut json = crossval(&model, &args);
        json.args(["--format", "json"]);
        let (out, _) = run(&mut json, 3);
        let doc = one_json(out.as_bytes());
        assert_eq!(doc["status"], "error", "{name}");
        assert!(
            doc["error"].as_str().unwrap().contains(needle),
            "{name}: {doc}"
        );
    }
}

/// Item 16: a chat template may render a prompt far larger than the context; it is refused from
/// its size (2), without being tokenized.
#[test]
fn a_rendered_prompt_too_large_for_the_context_is_refused_from_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_with_chat_template(
        dir.path(),
        "llama-spm",
        "{% for i in range(6000) %}{{ messages[0]['content'] * 40 }}{% endfor %}",
        "three-megabytes",
    );
    let (out, err) = run(
        &mut crossval(
            &model,
            &[
                "--prompt",
                PROMPT,
                "--prompt-template",
                "jinja",
                "--format",
                "json",
            ],
        ),
        2,
    );
    let doc = one_json(out.as_bytes());
    assert_eq!(doc["status"], "usage_error");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("2880000 bytes, at least"), "{error}");
    assert!(!err.contains("starting the C++ reference"), "{err}");
}
