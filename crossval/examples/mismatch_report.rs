//! Prints the pre-gate's report for a typical duplicate-BOS case, as the runner would build it.
//!
//! `cargo run -p bitnet-crossval --example mismatch_report` (add `-- --colour` for ANSI colour).

use bitnet_crossval::{validate_token_parity, ReportContext};

fn main() {
    // Rust side: a tokenizer.json whose post-processor adds BOS, on top of add_bos.
    let rust: Vec<u32> = vec![128000, 128000, 3923, 374, 220, 17, 10, 17, 30];
    let cpp: Vec<i32> = vec![128000, 3923, 374, 220, 17, 10, 17, 30];
    let prompt = "What's 2+2?";
    let Err(err) = validate_token_parity(&rust, &cpp, prompt) else {
        println!("tokens match");
        return;
    };
    let vocab = |id: u32| -> Option<String> {
        Some(
            match id {
                128000 => "<|begin_of_text|>",
                3923 => "What's",
                374 => " ",
                220 => " ",
                17 => "2",
                10 => "+",
                30 => "?",
                _ => return None,
            }
            .to_string(),
        )
    };
    let mut ctx = ReportContext {
        model_path: Some("models/llama3 8b.gguf".into()),
        tokenizer_path: Some("models/tokenizer.json".into()),
        prompt_template: Some("instruct".into()),
        bos_id: Some(128000),
        eos_ids: vec![128001, 128009],
        ..ReportContext::default()
    };
    ctx.fill_pieces(err.window_ids(), vocab);
    let err = err.with_context(ctx);
    let colour = std::env::args().any(|a| a == "--colour");
    print!("{}", err.format_error_styled(colour));
}
