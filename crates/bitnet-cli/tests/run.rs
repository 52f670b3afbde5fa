//! `bitnet run`: prompt then continuation on stdout, statistics on stderr, exit codes, and
//! sampled text equal to what llama.cpp's own generation loop produces.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bitnet_cpp::{BackendChoice, Session, SessionOptions};
use bitnet_gguf::GgmlType;
use bitnet_inference::sampling::SamplingParams;
use bitnet_minimodel::{Arch, Spec};
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

/// What the llama reference generates, llama-completion's way, from the prompt `text` with
/// `params`: the text `bitnet run` must print (prompt, continuation, newline).
fn reference_text(cpp: &mut Session, text: &str, params: &SamplingParams, n: u32) -> Vec<u8> {
    let prompt = cpp.tokenize(text, true, false).unwrap();
    let spec = bitnet_crossval::sampling::chain_spec(params);
    let (tokens, seed) = cpp.generate(&spec, &prompt, n).unwrap();
    assert_eq!(seed, params.seed);
    assert!(!tokens.is_empty());
    let eog = cpp.vocab_info().unwrap().eos;
    let mut out = text.as_bytes().to_vec();
    for &t in tokens.iter().filter(|&&t| t != eog) {
        out.extend(cpp.token_to_piece(t, false).unwrap());
    }
    out.push(b'\n');
    out
}

#[test]
fn sampled_text_equals_llama_cpp_generation() {
    // SmolLM2 in the exact configuration (F32 KV cache, no flash attention), where the
    // engine's logits are bit-identical to llama.cpp's: the same seed and flags must give
    // the same text, byte for byte.
    let model = bitnet_fixtures::smollm2();
    let mut cpp = Session::open(&model, BackendChoice::Llama, &SessionOptions::default()).unwrap();
    let cases: [(&str, &[&str], SamplingParams); 3] = [
        (
            "The capital of France is",
            &["--temp", "0.8", "--seed", "42"],
            SamplingParams {
                seed: 42,
                temp: 0.8,
                ..SamplingParams::default()
            },
        ),
        (
            "Once upon a time",
            &[
                "--temp",
                "1.2",
                "--seed",
                "7",
                "--repeat-penalty",
                "1.3",
                "--top-k",
                "0",
            ],
            SamplingParams {
                seed: 7,
                temp: 1.2,
                penalty_repeat: 1.3,
                top_k: 0,
                ..SamplingParams::default()
            },
        ),
        (
            "A list of fruits:",
            &[
                "--seed",
                "3",
                "--dry-multiplier",
                "0.8",
                "--samplers",
                "dry;top_k;temperature",
            ],
            SamplingParams {
                seed: 3,
                dry_multiplier: 0.8,
                samplers: bitnet_inference::sampling::SamplerType::parse_names(
                    "dry;top_k;temperature",
                )
                .unwrap(),
                ..SamplingParams::default()
            },
        ),
    ];
    for (prompt, flags, params) in cases {
        let expected = reference_text(&mut cpp, prompt, &params, 40);
        let got = bitnet()
            .args(["run", "--prompt", prompt, "-n", "40"])
            .args(flags)
            .arg("--model")
            .arg(&model)
            .assert()
            .success()
            .stderr(predicate::str::contains(format!(
                "sampler seed: {}",
                params.seed
            )))
            .get_output()
            .stdout
            .clone();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "{flags:?}"
        );
    }
}

#[test]
fn smollm2_in_every_llama_quantize_mix_continues_as_llama_cpp_does_greedily() {
    // Issue 10: the files users have. Each of llama-quantize's mixes of SmolLM2 (made by
    // llama.cpp's own quantizer, `bitnet_cpp::test_models`) continues a prompt greedily
    // exactly as the reference's generation loop does, in the same configuration.
    use bitnet_cpp::test_models::{self, Base};
    let params = SamplingParams {
        seed: 1,
        temp: 0.0,
        ..SamplingParams::default()
    };
    let prompt = "The three primary colours are";
    for &ftype in Base::Smollm2.mixes() {
        let model = test_models::path(Base::Smollm2, ftype).unwrap();
        let mut cpp =
            Session::open(&model, BackendChoice::Llama, &SessionOptions::default()).unwrap();
        let expected = reference_text(&mut cpp, prompt, &params, 16);
        let got = bitnet()
            .args([
                "run", "--prompt", prompt, "-n", "16", "--temp", "0", "--seed", "1",
            ])
            .arg("--model")
            .arg(&model)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "SmolLM2 {ftype}"
        );
    }
}

#[test]
fn a_random_seed_is_printed_and_reproduces_the_text() {
    let run = |seed: Option<&str>| {
        let mut cmd = bitnet();
        cmd.args(["run", "--prompt", "Once upon a time", "-n", "12", "--model"])
            .arg(bitnet_fixtures::smollm2());
        if let Some(s) = seed {
            cmd.args(["--seed", s]);
        }
        let out = cmd.assert().success().get_output().clone();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let seed = stderr
            .lines()
            .find_map(|l| l.strip_prefix("sampler seed: "))
            .unwrap_or_else(|| panic!("no seed in {stderr:?}"))
            .to_string();
        (out.stdout, seed)
    };
    let (text, seed) = run(Some("-1"));
    assert_ne!(seed, "4294967295");
    let (again, same_seed) = run(Some(&seed));
    assert_eq!(same_seed, seed);
    assert_eq!(text, again);
    let (_, other) = run(None);
    assert_ne!(other, "4294967295");
}

#[test]
fn help_teaches_every_sampling_flag_with_its_default() {
    let out = bitnet()
        .args(["run", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(out).unwrap();
    for flag in [
        "--temp <N>",
        "--seed <SEED>",
        "--top-k <N>",
        "--top-p <N>",
        "--min-p <N>",
        "--typical <N>",
        "--top-nsigma <N>",
        "--xtc-probability <N>",
        "--xtc-threshold <N>",
        "--repeat-last-n <N>",
        "--repeat-penalty <N>",
        "--presence-penalty <N>",
        "--frequency-penalty <N>",
        "--dry-multiplier <N>",
        "--dry-base <N>",
        "--dry-allowed-length <N>",
        "--dry-penalty-last-n <N>",
        "--dry-sequence-breaker <STRING>",
        "--dynatemp-range <N>",
        "--dynatemp-exp <N>",
        "--samplers <SAMPLERS>",
        "--sampler-seq <SEQUENCE>",
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing from:\n{help}"));
        let entry = &help[at..];
        let end = entry[flag.len()..]
            .find("\n  -")
            .map_or(entry.len(), |e| e + flag.len());
        assert!(
            entry[..end].contains("[default:"),
            "{flag} has no default:\n{}",
            &entry[..end]
        );
    }
}

#[test]
fn bad_sampling_values_are_usage_errors() {
    for (flags, says) in [
        (&["--temp", "-1"][..], "--temp"),
        (&["--temp", "nan"][..], "--temp"),
        (&["--top-k", "many"][..], "--top-k"),
        (&["--repeat-penalty", "0"][..], "--repeat-penalty"),
        (&["--repeat-last-n", "-1"][..], "--repeat-last-n"),
        (&["--dry-base", "0.5"][..], "--dry-base"),
        (&["--dry-penalty-last-n", "-3"][..], "--dry-penalty-last-n"),
        (&["--dry-sequence-breaker", ""][..], "breaker"),
        (&["--samplers", "top_k;bogus"][..], "bogus"),
        (&["--sampler-seq", "kq"][..], "\"q\""),
        (
            &["--samplers", "top_k", "--sampler-seq", "k"][..],
            "cannot be used with",
        ),
        (&["--seed", "-2"][..], "seed"),
        (&["--seed", "4294967296"][..], "seed"),
        (&["--top-p", "inf"][..], "--top-p"),
    ] {
        bitnet()
            .args(["run", "--prompt", "x"])
            .args(flags)
            .arg("--model")
            .arg(bitnet_fixtures::smollm2())
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
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

/// A tiny llama model on the llama-spm vocabulary, with `template` as its chat template when
/// given (in its own subdirectory `name`).
fn tiny(dir: &Path, template: Option<&str>, name: &str) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let spec = Spec {
        chat_template: template.map(str::to_string),
        ..Spec::new(Arch::Llama, GgmlType::F32)
    };
    bitnet_minimodel::write_tiny(&sub, &spec, &bitnet_fixtures::vocab("llama-spm")).unwrap()
}

/// Issue 15, items 16, 21, 22: `run` treats a chat template exactly as crossval does: a
/// malformed or hostile one is a runtime error (3) naming the cause; `jinja` on a model without
/// one is a usage error (2).
#[test]
fn malformed_chat_templates_exit_3_like_crossval() {
    let dir = tempfile::tempdir().unwrap();
    for (name, template, needle) in [
        (
            "raises",
            "{{ raise_exception('roles must alternate') }}",
            "roles must alternate",
        ),
        ("empty", "", "tokenizer.chat_template is empty"),
        (
            "loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "instruction limit",
        ),
        (
            "doubling",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "memory limit",
        ),
    ] {
        let model = tiny(dir.path(), Some(template), name);
        bitnet()
            .args(["run", "--prompt", "Hi", "-n", "2", "--prompt-template", "jinja", "--model"])
            .arg(&model)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(needle));
    }
    let plain = tiny(dir.path(), None, "plain");
    bitnet()
        .args([
            "run",
            "--prompt",
            "Hi",
            "--prompt-template",
            "jinja",
            "--model",
        ])
        .arg(&plain)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no tokenizer.chat_template"));
}

/// Issue 15, items 7 and 11 for `run`: a request that cannot fit the context is a usage error
/// (2) with the numbers, decided before generating anything.
#[test]
fn requests_that_cannot_fit_the_context_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), None, "plain");
    let long = "word ".repeat(600);
    for (args, needle) in [
        (
            vec!["--prompt", long.as_str(), "-n", "2"],
            "exceed the model's context of 512",
        ),
        (
            vec!["--prompt", "Hi", "-n", "18446744073709551615"],
            "context is 512 tokens",
        ),
        (vec!["--prompt", "Hi", "-n", "-1"], "invalid value '-1'"),
    ] {
        bitnet()
            .arg("run")
            .args(&args)
            .arg("--model")
            .arg(&model)
            .assert()
            .code(2)
            .stdout(predicate::str::is_empty())
            .stderr(predicate::str::contains(needle));
    }
}

/// Issue 15, items 6 and 9 for `run`: a system prompt the template ignores is named in a
/// warning; a prompt may start with '-'.
#[test]
fn ignored_flags_are_warned_about_and_prompts_may_start_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), None, "plain");
    bitnet()
        .args([
            "run",
            "--prompt",
            "-Hi",
            "-n",
            "2",
            "--system-prompt",
            "Be brief.",
            "--model",
        ])
        .arg(&model)
        .assert()
        .success()
        .stdout(predicate::str::starts_with("-Hi"))
        .stderr(predicate::str::contains(
            "warning: --system-prompt has no effect: the raw template",
        ));
}
