//! Issue 15, items 4, 5 and 9: every piece of advice a token-mismatch report prints works when
//! followed. Each hint case below is a real mismatch (real references; real fixtures: the
//! mislabelled Llama-2 tokenizer.json, the Llama-3 tokenizer.json, SmolLM2); the example
//! command the report prints is run exactly as printed, through `sh`, and must not reproduce
//! the failure: it has to match (exit 0).

pub mod common;

use std::path::{Path, PathBuf};

use bitnet_gguf::GgmlType;
use bitnet_minimodel::Arch;
use common::{crossval, one_json, run, tiny};

/// The example command as the text report prints it (after its header line, up to the end).
fn printed_example(report: &str) -> String {
    let start = report
        .find("Example command")
        .unwrap_or_else(|| panic!("no example command in:\n{report}"));
    let body = &report[start..];
    let first_newline = body.find('\n').unwrap();
    body[first_newline + 1..].trim().to_string()
}

/// Runs the printed command through `sh`, with the xtask binary under test in place of
/// `cargo run -p xtask --release --`.
fn run_printed(command: &str) -> std::process::Output {
    let xtask = assert_cmd::cargo::cargo_bin("xtask");
    let prefix = "cargo run -p xtask --release --";
    assert!(command.starts_with(prefix), "{command}");
    let script = format!(
        "'{}'{}",
        xtask.display(),
        command.strip_prefix(prefix).unwrap()
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run sh")
}

struct Case {
    name: &'static str,
    model: PathBuf,
    args: Vec<String>,
    /// Something the report must say for this case.
    says: &'static str,
}

fn case(name: &'static str, model: &Path, args: &[&str], says: &'static str) -> Case {
    Case {
        name,
        model: model.to_path_buf(),
        args: args.iter().map(|s| s.to_string()).collect(),
        says,
    }
}

#[test]
fn every_example_command_a_report_prints_works() {
    let dir = tempfile::tempdir().unwrap();
    let spm = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let other = dir.path().join("bpe");
    std::fs::create_dir_all(&other).unwrap();
    let bpe = tiny(&other, Arch::Llama, GgmlType::F32, "llama-bpe", 1);
    let smollm2 = bitnet_fixtures::smollm2();
    let llama2 = bitnet_fixtures::require(bitnet_fixtures::LLAMA2_MISLABELLED_TOKENIZER_JSON);
    let llama3 = bitnet_fixtures::require(bitnet_fixtures::LLAMA3_TOKENIZER_JSON);
    let (llama2, llama3) = (llama2.to_str().unwrap(), llama3.to_str().unwrap());
    let cases = [
        // A tokenizer.json of another vocabulary, with a non-raw template and a system prompt.
        case(
            "mislabelled tokenizer, instruct",
            &spm,
            &[
                "--tokenizer",
                llama2,
                "--prompt",
                "Hello world, it's 2 o'clock",
                "--prompt-template",
                "instruct",
                "--system-prompt",
                "Be brief.",
            ],
            "may be a different vocabulary",
        ),
        // A tokenizer.json that adds no BOS where the model's vocabulary does.
        case(
            "no BOS in tokenizer.json, raw",
            &bpe,
            &["--tokenizer", llama3, "--prompt", "Hello world"],
            "starts only the C++ tokens",
        ),
        // The same under instruct with a system prompt (the case): raw + --no-bos,
        // without the system prompt raw ignores.
        case(
            "no BOS in tokenizer.json, instruct + system prompt",
            &bpe,
            &[
                "--tokenizer",
                llama3,
                "--prompt",
                "What is 2+2?",
                "--prompt-template",
                "instruct",
                "--system-prompt",
                "Be brief.",
            ],
            "try: --no-bos",
        ),
        // Item 4: auto resolving to raw, with a tokenizer.json of another vocabulary.
        case(
            "auto → raw, Llama-3 tokenizer.json on a Llama-2 vocabulary",
            &spm,
            &[
                "--tokenizer",
                llama3,
                "--prompt",
                "Hi",
                "--prompt-template",
                "auto",
            ],
            "Template: auto → raw",
        ),
        // A real model whose chat template auto detects, with a foreign tokenizer.json.
        case(
            "SmolLM2, auto → chatml, Llama-3 tokenizer.json",
            &smollm2,
            &[
                "--tokenizer",
                llama3,
                "--prompt",
                "What is the capital of France?",
                "--prompt-template",
                "auto",
                "--max-tokens",
                "1",
            ],
            "Template: auto → chatml",
        ),
        // Item 9: a prompt that starts with '-' must survive the copy and paste.
        case(
            "a prompt starting with '-'",
            &spm,
            &["--tokenizer", llama2, "--prompt=-Hi there"],
            "--prompt='-Hi there'",
        ),
    ];
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let (out, report) = run(&mut crossval(&c.model, &args), 2);
        assert!(out.is_empty(), "{}", c.name);
        assert!(
            report.contains(c.says),
            "{}: missing {:?} in:\n{report}",
            c.name,
            c.says
        );
        let printed = printed_example(&report);

        // The JSON document carries the same command, on one line.
        let mut json = crossval(&c.model, &args);
        json.args(["--format", "json"]);
        let (out, _) = run(&mut json, 2);
        let doc = one_json(out.as_bytes());
        assert_eq!(doc["status"], "token_mismatch", "{}", c.name);
        assert_eq!(
            doc["example_command"].as_str().unwrap(),
            printed.replace(" \\\n    ", " "),
            "{}",
            c.name
        );

        let followed = run_printed(&printed);
        assert_eq!(
            followed.status.code(),
            Some(0),
            "{}: following\n{printed}\ngave:\n{}",
            c.name,
            String::from_utf8_lossy(&followed.stderr)
        );
    }
}

/// Item 4: hints and the example use the template applied, not the one asked for: `auto`
/// resolving to raw gets no "use raw" advice.
#[test]
fn advice_follows_the_template_applied() {
    let dir = tempfile::tempdir().unwrap();
    let spm = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm", 1);
    let llama3 = bitnet_fixtures::require(bitnet_fixtures::LLAMA3_TOKENIZER_JSON);
    let mut c = crossval(
        &spm,
        &[
            "--prompt",
            "Hi",
            "--prompt-template",
            "auto",
            "--format",
            "json",
        ],
    );
    c.arg("--tokenizer").arg(&llama3);
    let (out, _) = run(&mut c, 2);
    let doc = one_json(out.as_bytes());
    assert_eq!(doc["template_requested"], "auto");
    assert_eq!(doc["template"], "raw");
    let suggestions = doc["suggestions"].to_string();
    assert!(
        !suggestions.contains("Use --prompt-template raw"),
        "{suggestions}"
    );
    assert!(!suggestions.contains("bitnet inspect"), "{suggestions}");
    let example = doc["example_command"].as_str().unwrap();
    assert!(example.contains("--prompt-template=raw"), "{example}");
    assert!(!example.contains("--tokenizer"), "{example}");
}
