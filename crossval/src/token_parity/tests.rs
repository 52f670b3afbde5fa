//! Tests of the `token_parity` module.

use super::*;

fn err(rust: &[u32], cpp: &[i32]) -> TokenParityError {
    match validate_token_parity(rust, cpp, "What is 2+2?") {
        Err(e) => e,
        Ok(()) => panic!("expected a mismatch for {rust:?} vs {cpp:?}"),
    }
}

fn ctx() -> ReportContext {
    ReportContext {
        model_path: Some("models/model.gguf".into()),
        prompt_template: Some("raw".into()),
        bos_id: Some(1),
        eos_ids: vec![2],
        ..ReportContext::default()
    }
}

fn has(e: &TokenParityError, pred: impl Fn(&Hint) -> bool) -> bool {
    e.hints().iter().any(pred)
}

#[test]
fn identical_sequences_pass() {
    assert_eq!(validate_token_parity(&[1, 2, 3], &[1, 2, 3], "p"), Ok(()));
    assert_eq!(TokenParityChecker::validate(&[], &[], ""), Ok(()));
}

#[test]
fn first_position_difference() {
    let e = err(&[5, 2, 3], &[6, 2, 3]);
    assert_eq!(e.first_diff_idx, 0);
    assert_eq!(e.rust_tokens, vec![5, 2, 3]);
    assert_eq!(e.cpp_tokens, vec![6, 2, 3]);
    assert_eq!(e.prompt, "What is 2+2?");
}

#[test]
fn prefix_reports_shorter_length() {
    assert_eq!(err(&[1, 2, 3], &[1, 2]).first_diff_idx, 2);
    assert_eq!(err(&[1, 2], &[1, 2, 3]).first_diff_idx, 2);
    assert_eq!(err(&[], &[7]).first_diff_idx, 0);
}

#[test]
fn difference_beyond_first_block() {
    let rust: Vec<u32> = (0..1000).collect();
    let mut cpp: Vec<i32> = (0..1000).collect();
    cpp[777] = 5;
    assert_eq!(err(&rust, &cpp).first_diff_idx, 777);
}

#[test]
fn negative_cpp_id_never_matches_wrapped_value() {
    let e = err(&[u32::MAX, 7], &[-1, 7]);
    assert_eq!(e.first_diff_idx, 0);
    assert_eq!(e.cpp_tokens_raw, vec![-1, 7]);
    let report = e.format_error();
    assert!(report.contains("[-1, 7]"), "{report}");
    assert!(report.contains("-1 (invalid: negative id)"), "{report}");
    assert!(!report.contains("4294967295 (2 tokens)"));
    assert_eq!(first_difference(&[0x8000_0000], &[i32::MIN]), Some(0));
}

#[test]
fn report_has_every_section() {
    let mut c = ctx();
    c.pieces.insert(1, "<s>".into());
    c.pieces.insert(29871, "▁".into());
    c.prompt_template = Some("chatml".into());
    let e = err(&[1, 1, 29871], &[1, 29871]).with_context(c);
    let r = e.format_error();
    for needle in [
        "Token Sequence Mismatch",
        "Rust tokens:\n  [1, 1, 29871] (3 tokens)",
        "C++ tokens:\n  [1, 29871] (2 tokens)",
        "First diff at index: 1",
        "[1] ✗ 1 \"<s>\" BOS | 29871 \"▁\"",
        "[0] ✓ 1 \"<s>\" BOS | 1 \"<s>\" BOS",
        "[2] ✗ 29871 \"▁\"   | (end)",
        "Suggested fixes:",
        "Possible duplicate BOS token",
        "--no-bos or --prompt-template raw",
        "Use --prompt-template raw",
        "Check GGUF chat_template metadata with: bitnet inspect models/model.gguf",
        "--dump-ids",
        "Example command with raw template:",
        "--prompt='What is 2+2?'",
    ] {
        assert!(r.contains(needle), "missing {needle:?} in:\n{r}");
    }
    assert!(!r.contains('\x1b'));
}

#[test]
fn long_sequences_list_first_64_with_total() {
    let rust: Vec<u32> = (1000..1100).collect();
    let cpp: Vec<i32> = (2000..2100).collect();
    let r = err(&rust, &cpp).format_error();
    assert!(r.contains("(first 64 of 100 tokens)"), "{r}");
    assert!(r.contains("1063, ...]"));
    assert!(!r.contains("1064"));
    assert!(r.contains("2063, ...]"));
}

#[test]
fn report_without_context_renders_without_pieces() {
    let r = err(&[10, 11], &[10, 12]).format_error();
    assert!(r.contains("[1] ✗ 11 | 12"), "{r}");
    assert!(!r.contains("Example command"));
    assert!(!r.contains("bitnet inspect"));
}

#[test]
fn hint_duplicate_bos() {
    let dup = |e: &TokenParityError| has(e, |h| matches!(h, Hint::DuplicateBos { .. }));
    let e = err(&[1, 1, 450], &[1, 450]).with_context(ctx());
    assert!(e.hints().contains(&Hint::DuplicateBos {
        side: TokenSide::Rust,
        bos: 1
    }));
    let e = err(&[1, 450], &[1, 1, 450]).with_context(ctx());
    assert!(e.hints().contains(&Hint::DuplicateBos {
        side: TokenSide::Cpp,
        bos: 1
    }));
    // Without a known BOS id: the repeated first id that the other side starts with.
    assert!(dup(&err(&[7, 7, 450], &[7, 450])));
    // Not: a repeated id that is not BOS, both sides repeated, or no repetition.
    assert!(!dup(&err(&[5, 5, 450], &[5, 450]).with_context(ctx())));
    assert!(!dup(&err(&[1, 1, 450], &[1, 1, 451]).with_context(ctx())));
    assert!(!dup(&err(&[1, 2, 3], &[1, 2, 4]).with_context(ctx())));
    assert!(!dup(&err(&[7, 7, 450], &[8, 450])));
    let r = err(&[1, 2, 3], &[1, 2, 4])
        .with_context(ctx())
        .format_error();
    assert!(!r.contains("duplicate BOS"));
}

#[test]
fn hint_bos_on_one_side() {
    let one = |e: &TokenParityError| has(e, |h| matches!(h, Hint::BosOnOneSide { .. }));
    let e = err(&[1, 450], &[450]).with_context(ctx());
    assert!(e.hints().contains(&Hint::BosOnOneSide {
        side: TokenSide::Rust,
        bos: 1
    }));
    assert!(e
        .format_error()
        .contains("BOS (id 1) starts only the Rust tokens"));
    assert!(one(&err(&[450], &[1, 450]).with_context(ctx())));
    assert!(!one(&err(&[1, 450], &[450]))); // BOS id unknown
    assert!(!one(&err(&[3, 450], &[450]).with_context(ctx())));
    assert!(!one(&err(&[1, 450, 3], &[1, 450, 4]).with_context(ctx())));
}

#[test]
fn hint_raw_template_only_for_non_raw_templates() {
    let raw = |e: &TokenParityError| e.hints().contains(&Hint::UseRawTemplate);
    let mut c = ctx();
    c.prompt_template = Some("llama3-chat".into());
    assert!(raw(&err(&[1, 2], &[1, 3]).with_context(c)));
    assert!(!raw(&err(&[1, 2], &[1, 3]).with_context(ctx())));
    assert!(!raw(&err(&[1, 2], &[1, 3])));
    let r = err(&[1, 2], &[1, 3]).with_context(ctx()).format_error();
    assert!(!r.contains("Use --prompt-template raw"));
}

#[test]
fn hint_inspect_needs_model_and_template_or_special_evidence() {
    let insp = |e: &TokenParityError| has(e, |h| matches!(h, Hint::InspectModel { .. }));
    let mut chat = ctx();
    chat.prompt_template = Some("chatml".into());
    chat.model_path = Some("/m/it's model.gguf".into());
    let e = err(&[1, 2], &[1, 3]).with_context(chat.clone());
    assert!(e
        .format_error()
        .contains("bitnet inspect '/m/it'\\''s model.gguf'"));
    // Raw or instruct template, ordinary tokens: no (neither uses the model's metadata).
    assert!(!insp(&err(&[1, 2], &[1, 3]).with_context(ctx())));
    let mut instruct = ctx();
    instruct.prompt_template = Some("instruct".into());
    assert!(!insp(&err(&[1, 2], &[1, 3]).with_context(instruct)));
    // Raw template but a special token at the difference: yes.
    let mut special = ctx();
    special.special_ids.insert(32000);
    assert!(insp(&err(&[1, 32000], &[1, 3]).with_context(special)));
    // No model path: never.
    chat.model_path = None;
    assert!(!insp(&err(&[1, 2], &[1, 3]).with_context(chat)));
}

#[test]
fn hint_dump_ids_unless_already_given() {
    assert!(err(&[1, 2], &[1, 3]).hints().contains(&Hint::DumpIds));
    let mut c = ctx();
    c.dump_ids_requested = true;
    let e = err(&[1, 2], &[1, 3]).with_context(c);
    assert!(!e.hints().contains(&Hint::DumpIds));
    assert!(!e.format_error().contains("--dump-ids"));
}

#[test]
fn hint_tokenizer_json_when_differing_from_index_zero() {
    let tj = |e: &TokenParityError| has(e, |h| matches!(h, Hint::TokenizerJsonMismatch { .. }));
    let mut c = ctx();
    c.tokenizer_path = Some("tok/tokenizer.json".into());
    let e = err(&[5, 2], &[3, 4]).with_context(c.clone());
    assert!(tj(&e));
    // BOS on one side that does not explain the rest: still suspect.
    assert!(tj(&err(&[1, 5, 2], &[3, 4]).with_context(c.clone())));
    let r = e.format_error();
    assert!(
        r.contains("tok/tokenizer.json may be a different vocabulary"),
        "{r}"
    );
    assert!(r.contains("crossval-tokenizer --model models/model.gguf"));
    // The example command drops --tokenizer.
    let (_, cmd) = e.example_command().expect("example");
    assert!(!cmd.contains("--tokenizer"));
    // The first content token after a BOS both share differs: yes.
    assert!(tj(&err(&[1, 2], &[1, 4]).with_context(c.clone())));
    // Later difference, no tokenizer.json, or BOS explains index 0: no.
    assert!(!tj(&err(&[1, 2, 3], &[1, 2, 4]).with_context(c.clone())));
    assert!(!tj(&err(&[1, 2], &[3, 4]).with_context(ctx())));
    assert!(!tj(&err(&[1, 2], &[2]).with_context(c)));
}

#[test]
fn example_command_only_when_a_flag_change_is_suggested() {
    // Raw template, ordinary difference: nothing to change.
    assert_eq!(
        err(&[1, 2], &[1, 3]).with_context(ctx()).example_command(),
        None
    );
    // Duplicate BOS with raw template: --no-bos.
    let (h, cmd) = err(&[1, 1, 2], &[1, 2])
        .with_context(ctx())
        .example_command()
        .expect("example");
    assert_eq!(h, "Example command:");
    assert!(
        cmd.ends_with("--prompt-template=raw \\\n    --no-bos"),
        "{cmd}"
    );
    // Non-raw template: raw, keeping the tokenizer and the extra flags, dropping the
    // system prompt raw ignores.
    let mut c = ctx();
    c.prompt_template = Some("instruct".into());
    c.tokenizer_path = Some("t.json".into());
    c.system_prompt = Some("Be brief.".into());
    c.extra_args = vec![("--cpp-model".into(), "f 32.gguf".into())];
    let e = err(&[1, 5, 2], &[1, 5, 3]).with_context(c);
    let (h, cmd) = e.example_command().expect("example");
    assert_eq!(h, "Example command with raw template:");
    assert_eq!(
        cmd,
        "cargo run -p xtask --release -- crossval-per-token \\\n    --model=models/model.gguf \\\n    \
         --tokenizer=t.json \\\n    --prompt='What is 2+2?' \\\n    --prompt-template=raw \\\n    \
         --cpp-model='f 32.gguf'"
    );
    assert_eq!(
        e.example_command_line().expect("line"),
        "cargo run -p xtask --release -- crossval-per-token --model=models/model.gguf \
         --tokenizer=t.json --prompt='What is 2+2?' --prompt-template=raw --cpp-model='f 32.gguf'"
    );
    // No model path: no command.
    assert_eq!(err(&[1, 1, 2], &[1, 2]).example_command(), None);
}

/// Every fix the hints name is in the example, and no flag without effect: a BOS on one
/// side under `instruct` with a system prompt gives raw + --no-bos, without the system
/// prompt (issue 15, item 5).
#[test]
fn example_carries_every_fix_and_no_flag_without_effect() {
    let mut c = ctx();
    c.prompt_template = Some("instruct".into());
    c.system_prompt = Some("Be brief.".into());
    c.tokenizer_path = Some("llama3.json".into());
    c.add_bos = Some(true);
    c.vocab_add_bos = Some(true);
    // C++ has BOS 1, Rust none; the next ids line up, so the BOS explains index 0.
    let e = err(&[450, 451], &[1, 450, 451]).with_context(c.clone());
    assert!(e.hints().contains(&Hint::UseRawTemplate));
    let (_, cmd) = e.example_command().expect("example");
    assert!(cmd.contains("--prompt-template=raw"), "{cmd}");
    assert!(cmd.contains("--no-bos"), "{cmd}");
    assert!(cmd.contains("--tokenizer=llama3.json"), "{cmd}");
    assert!(!cmd.contains("--system-prompt"), "{cmd}");
    // The tokenizer.json is suspect: dropping it is the fix, and --no-bos is not needed.
    let e = err(&[9, 450], &[1, 450, 451]).with_context(c.clone());
    let (_, cmd) = e.example_command().expect("example");
    assert!(!cmd.contains("--tokenizer"), "{cmd}");
    assert!(!cmd.contains("--no-bos"), "{cmd}");
    // A vocabulary without BOS: --no-bos does nothing under raw, so it is not suggested.
    c.vocab_add_bos = Some(false);
    let e = err(&[450, 451], &[1, 450, 451]).with_context(c.clone());
    let (_, cmd) = e.example_command().expect("example");
    assert!(!cmd.contains("--no-bos"), "{cmd}");
    // A given --no-bos is dropped with chat templates (they never add BOS) and a system
    // prompt is kept where it is used.
    let mut chat = ctx();
    chat.prompt_template = Some("chatml".into());
    chat.system_prompt = Some("S".into());
    chat.no_bos_requested = true;
    chat.tokenizer_path = Some("t.json".into());
    let e = err(&[5, 2], &[3, 4]).with_context(chat);
    let (_, cmd) = e.example_command().expect("example");
    assert!(
        cmd.contains("--prompt-template=raw") && cmd.contains("--no-bos"),
        "{cmd}"
    );
    // BOS from the text (the tokenizers added none): --no-bos cannot help, raw can.
    let mut text_bos = ctx();
    text_bos.prompt_template = Some("jinja".into());
    text_bos.add_bos = Some(false);
    let e = err(&[1, 450], &[450]).with_context(text_bos);
    let s = e.suggestions().join("\n");
    assert!(s.contains("the formatted text carries it"), "{s}");
    assert!(!s.contains("try: --no-bos"), "{s}");
}

#[test]
fn the_report_shows_the_requested_and_the_applied_template() {
    let mut c = ctx();
    c.requested_template = Some("auto".into());
    c.prompt_template = Some("raw".into());
    c.tokenizer_path = Some("t.json".into());
    let e = err(&[5, 2], &[3, 4]).with_context(c);
    let r = e.format_error();
    assert!(r.contains("Template: auto → raw"), "{r}");
    assert!(!e.hints().contains(&Hint::UseRawTemplate));
    assert!(!r.contains("Use --prompt-template raw"), "{r}");
    assert!(r.contains("--prompt-template=raw"), "{r}");
}

fn sh_args(script: &str) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

const NASTY: &[&str] = &[
    "What is 2+2?",
    "-Hi",
    "--format json",
    "it's \"quoted\"",
    "line one\nline two\n",
    "$HOME $(echo pwned) `id` ${x}",
    r"back\slash \\ \n",
    "ünïcödé ▁ 日本語 🦀‍🔥",
    "'",
    "''",
    " leading and trailing ",
    "*.gguf ?[a] ~ # ; & | < > ! %",
    "",
];

#[test]
fn shell_quote_round_trips_through_sh() {
    for s in NASTY {
        let got = sh_args(&format!("printf '%s\\0' {}", shell_quote(s)));
        let want: Vec<String> = if s.is_empty() {
            vec![]
        } else {
            vec![s.to_string()]
        };
        assert_eq!(got, want, "quoted as {}", shell_quote(s));
    }
    assert_eq!(shell_quote("models/a-b_c.gguf"), "models/a-b_c.gguf");
    assert_eq!(shell_quote(""), "''");
}

#[test]
fn example_command_is_copy_pasteable() {
    for prompt in NASTY.iter().filter(|p| !p.is_empty()) {
        let mut c = ctx();
        c.command = "printf '%s\\0'".into();
        c.prompt_template = Some("instruct".into());
        c.model_path = Some("my models/$m.gguf".into());
        let e = TokenParityError::new(&[1, 1, 2], &[1, 2], 1, prompt).with_context(c);
        let (_, cmd) = e.example_command().expect("example");
        let args = sh_args(&cmd);
        assert_eq!(
            args,
            vec![
                "--model=my models/$m.gguf".to_string(),
                format!("--prompt={prompt}"),
                "--prompt-template=raw".to_string(),
                // The duplicate BOS hint names --no-bos too, and raw adds BOS.
                "--no-bos".to_string(),
            ],
            "{cmd}"
        );
    }
}

#[test]
fn colour_only_when_asked() {
    let e = err(&[1, 2], &[1, 3]).with_context(ctx());
    assert!(e.format_error_styled(true).contains("\x1b["));
    assert_eq!(e.format_error_styled(false), e.format_error());
    assert!(should_colour(true, None));
    assert!(!should_colour(false, None));
    assert!(!should_colour(true, Some(OsStr::new("1"))));
    assert!(!should_colour(true, Some(OsStr::new(""))));
}

#[test]
fn display_is_one_line_and_alternate_is_the_report() {
    let e = err(&[1, 2], &[1, 3, 4]);
    let line = e.to_string();
    assert_eq!(
        line,
        "token sequence mismatch: Rust and C++ differ at index 1 (Rust 2 tokens, C++ 3 tokens)"
    );
    assert_eq!(format!("{e:#}"), e.format_error());
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("index 1"));
}

#[test]
fn window_ids_and_fill_pieces() {
    let rust: Vec<u32> = (100..120).collect();
    let mut cpp: Vec<i32> = (100..120).collect();
    cpp[10] = -3;
    let e = err(&rust, &cpp);
    assert_eq!(e.window(), 7..15);
    assert_eq!(e.window_ids(), (107..115).collect::<Vec<u32>>());
    let mut c = ReportContext::default();
    c.fill_pieces(e.window_ids(), |id| (id != 108).then(|| format!("p{id}")));
    assert_eq!(c.pieces.len(), 7);
    let r = e.with_context(c).format_error();
    assert!(
        r.contains("[10] ✗ 110 \"p110\" | -3 (invalid: negative id)"),
        "{r}"
    );
    assert!(r.contains("[ 8] ✓ 108"), "{r}");
}

proptest::proptest! {
    #[test]
    fn first_difference_matches_naive(
        rust in proptest::collection::vec(0u32..6, 0..200),
        cpp in proptest::collection::vec(-1i32..6, 0..200),
    ) {
        let naive = rust
            .iter()
            .zip(&cpp)
            .position(|(&a, &b)| b < 0 || a != b as u32)
            .or((rust.len() != cpp.len()).then_some(rust.len().min(cpp.len())));
        proptest::prop_assert_eq!(first_difference(&rust, &cpp), naive);
        let same: Vec<i32> = rust.iter().map(|&t| t as i32).collect();
        proptest::prop_assert!(validate_token_parity(&rust, &same, "").is_ok());
    }
}
