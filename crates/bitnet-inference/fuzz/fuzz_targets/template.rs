//! Renders arbitrary text as a GGUF's `tokenizer.chat_template`, through `--prompt-template
//! jinja` and `auto` (which sniffs the template before choosing): the result is a formatted
//! prompt or a typed error, never a panic. Time and memory are held by libFuzzer's
//! `-timeout` and `-rss_limit_mb`, so a template that renders forever or grows without
//! bound is reported as a finding too.
//!
//! The first byte picks `jinja` or `auto` and whether a system prompt is given; the rest is
//! the template.
#![no_main]

use bitnet_inference::{format_prompt, ModelChatInfo, TemplateType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, template)) = data.split_first() else {
        return;
    };
    let info = ModelChatInfo {
        chat_template: Some(String::from_utf8_lossy(template).into_owned()),
        name: Some("fuzz".into()),
        bos_token: "<s>".into(),
        eos_token: "</s>".into(),
    };
    let kind = if pick & 1 == 0 {
        TemplateType::Jinja
    } else {
        TemplateType::Auto
    };
    let system = (pick & 2 != 0).then_some("Be brief.");
    if let Ok(f) = format_prompt(kind, "Hello", system, &info, pick & 4 != 0) {
        assert!(kind == TemplateType::Auto || f.template == TemplateType::Jinja);
    }
});
