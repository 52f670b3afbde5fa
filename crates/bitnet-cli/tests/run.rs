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

/// The run configuration flags, named as llama.cpp names them: out of the box the engine runs
/// as llama.cpp does by default (F16 caches, flash attention on) and continues SmolLM2's prompt
/// as llama.cpp then does; `--exact-reference` (F32 caches, no flash attention) continues it
/// the other way llama.cpp does in that configuration. The statistics line states which.
#[test]
fn run_configuration_flags_choose_which_llama_cpp_to_match() {
    let continuation = |flags: &[&str]| {
        let out = bitnet()
            .args(["run", "--prompt", "The capital of France is", "-n", "12"])
            .args(flags)
            .arg("--model")
            .arg(bitnet_fixtures::smollm2())
            .assert()
            .success()
            .get_output()
            .clone();
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (defaults, err) = continuation(&[]);
    assert!(
        defaults.contains("Paris.\n\nThe United States"),
        "{defaults:?}"
    );
    assert!(
        err.contains("K cache f16, V cache f16, flash attention on"),
        "{err}"
    );
    let (exact, err) = continuation(&["--exact-reference"]);
    assert!(exact.contains("Paris.\n\nThe answer is"), "{exact:?}");
    assert!(
        err.contains("K cache f32, V cache f32, flash attention off"),
        "{err}"
    );
    // llama.cpp's spelling of the same configuration gives the same text.
    let (spelled, _) = continuation(&["-ctk", "f32", "-ctv", "f32", "-fa", "off"]);
    assert_eq!(spelled, exact);
}

/// A configuration llama.cpp refuses is a usage error with llama.cpp's reason; so are values
/// llama.cpp does not know and contradictory flags.
#[test]
fn refused_run_configurations_are_usage_errors() {
    let model = bitnet_fixtures::smollm2();
    for (flags, reason) in [
        (&["-ctv", "q8_0", "-fa", "off"][..], "requires flash_attn"),
        (&["-ctk", "q4_0"][..], "does not reproduce"),
        (&["-fa", "sometimes"][..], "on, off, auto"),
        (
            &["--exact-reference", "-fa", "on"][..],
            "cannot be used with",
        ),
        (&["-ub", "0"][..], "at least 1"),
    ] {
        bitnet()
            .args(["run", "--prompt", "Hi", "-n", "1"])
            .args(flags)
            .arg("--model")
            .arg(&model)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(reason));
    }
}
