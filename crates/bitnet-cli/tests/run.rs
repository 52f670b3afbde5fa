//! `bitnet run`: prompt then continuation on stdout, statistics on stderr, exit codes.

use assert_cmd::Command;
use predicates::prelude::*;

fn bitnet() -> Command {
    Command::cargo_bin("bitnet").unwrap()
}

#[test]
fn smollm2_greedy_says_paris() {
    let out = bitnet()
        .args([
            "run",
            "--prompt",
            "The capital of France is",
            "-n",
            "8",
            "--temp",
            "0",
            "--model",
        ])
        .arg(bitnet_fixtures::smollm2())
        .assert()
        .success()
        .stderr(predicate::str::contains("tok/s"))
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("The capital of France is Paris."),
        "{text:?}"
    );
}

#[test]
fn auto_template_is_reported_and_chatml_applied() {
    bitnet()
        .args([
            "run",
            "--prompt",
            "Hi",
            "-n",
            "2",
            "--prompt-template",
            "auto",
            "--model",
        ])
        .arg(bitnet_fixtures::smollm2())
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        ))
        .stderr(predicate::str::contains("template: chatml (auto:"));
}

#[test]
fn same_arguments_same_output_with_sampling() {
    let run = |seed: &str| {
        bitnet()
            .args([
                "run",
                "--prompt",
                "Once upon a time",
                "-n",
                "12",
                "--temp",
                "0.8",
                "--seed",
                seed,
                "--model",
            ])
            .arg(bitnet_fixtures::smollm2())
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    assert_eq!(run("1"), run("1"));
}

#[test]
fn errors_have_exit_codes_and_one_line_reasons() {
    let dir = tempfile::tempdir().unwrap();
    bitnet()
        .args(["run", "--prompt", "x", "--model", "/nonexistent/m.gguf"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("/nonexistent/m.gguf"));
    let corrupt = dir.path().join("c.gguf");
    std::fs::write(&corrupt, b"GGUF\x01\x00\x00\x00").unwrap();
    bitnet()
        .args(["run", "--prompt", "x", "--model"])
        .arg(&corrupt)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("version 1"));
    bitnet()
        .args(["run", "--prompt", "x", "--model"])
        .arg(bitnet_fixtures::vocab("llama-spm"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("token_embd.weight"));
    bitnet()
        .args(["run", "--prompt", "", "--model"])
        .arg(bitnet_fixtures::smollm2())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("empty"));
    bitnet()
        .args(["run", "--prompt", "x", "--temp", "-1", "--model"])
        .arg(bitnet_fixtures::smollm2())
        .assert()
        .code(2);
    bitnet()
        .args([
            "run",
            "--prompt",
            "x",
            "--prompt-template",
            "nope",
            "--model",
        ])
        .arg(bitnet_fixtures::smollm2())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("llama3-chat"));
}
