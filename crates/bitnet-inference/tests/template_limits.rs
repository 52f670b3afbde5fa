//! Hostile chat templates (`--prompt-template jinja` / `auto` on a crafted model) end in a
//! named limit, never in a crash, a hang or gigabytes of memory. This test binary installs
//! `BoundedAllocator` as the binaries do, so the memory limit is live here too.

use std::time::{Duration, Instant};

use bitnet_inference::template::{jinja, BoundedAllocator, RenderLimit};
use bitnet_inference::{format_prompt, ModelChatInfo, TemplateError, TemplateType};

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fn render(template: &str) -> Result<String, TemplateError> {
    let info = ModelChatInfo {
        chat_template: Some(template.to_string()),
        name: None,
        bos_token: "<s>".into(),
        eos_token: "</s>".into(),
    };
    format_prompt(TemplateType::Jinja, "Hello", Some("Be brief."), &info, true).map(|f| f.text)
}

fn limit(template: &str) -> RenderLimit {
    let t0 = Instant::now();
    let result = render(template);
    // Every limit answers well within the time limit, except the time limit itself.
    assert!(
        t0.elapsed() < jinja::MAX_RENDER_TIME + Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
    match result {
        Err(TemplateError::Limit(l)) => l,
        other => panic!("expected a limit for {:.80}…, got {other:?}", template),
    }
}

#[test]
fn nested_loops_run_out_of_instructions() {
    let t = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    assert_eq!(limit(t), RenderLimit::Instructions);
}

#[test]
fn chains_nested_past_the_stack_are_refused_before_parsing() {
    for chain in [
        format!("{{{{ 'a'{} }}}}", "|upper".repeat(40_000)),
        format!("{{{{ 1{} }}}}", " + 1".repeat(40_000)),
        format!("{{{{ 'a'{} }}}}", " ~ 'a'".repeat(40_000)),
        format!("{{{{ {}1 }}}}", "-".repeat(40_000)),
        format!("\n\n{{% set x = {}true %}}", "not ".repeat(40_000)),
    ] {
        assert!(matches!(limit(&chain), RenderLimit::TagCode { .. }));
    }
    assert_eq!(
        limit(&format!(
            "\n\n{{% set x = {}true %}}",
            "not ".repeat(40_000)
        )),
        RenderLimit::TagCode { line: 3 }
    );
}

#[test]
fn deep_data_and_runaway_macros_stop_cleanly() {
    // A list nested thousands deep, printed: instructions run out before the stack would.
    let deep = "{% set ns = namespace(v=[]) %}{% for i in range(1000) %}{% for j in range(1000) %}\
                {% set ns.v = [ns.v] %}{% endfor %}{% endfor %}{{ ns.v }}";
    assert_eq!(limit(deep), RenderLimit::Instructions);
    let recursion = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    match render(recursion) {
        Err(TemplateError::Render(m)) => assert!(m.contains("recursion limit"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_string_doubled_in_a_loop_hits_the_memory_limit() {
    let t = "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}\
             {% endfor %}{{ ns.s|length }}";
    assert_eq!(limit(t), RenderLimit::Memory);
}

#[test]
fn fifty_megabytes_of_output_stop_at_the_output_limit() {
    let t = "{% for i in range(100000) %}{{ 'x' * 500 }}{% endfor %}";
    assert!(matches!(limit(t), RenderLimit::Output { .. }));
}

#[test]
fn a_slow_render_stops_at_the_time_limit() {
    let t = "{% set s = 'a' * 50000000 %}{% for i in range(100000) %}\
             {% if (s|upper|length) < 0 %}x{% endif %}{% endfor %}";
    assert_eq!(limit(t), RenderLimit::Time);
}

#[test]
fn oversized_sources_and_empty_templates_are_refused() {
    let big = format!("{{# {} #}}x", "a".repeat(jinja::MAX_SOURCE_BYTES));
    assert!(matches!(limit(&big), RenderLimit::SourceSize { .. }));
    assert_eq!(render(""), Err(TemplateError::EmptyChatTemplate));
    assert_eq!(render(" \n\t"), Err(TemplateError::EmptyChatTemplate));
    assert_eq!(render("{# nothing #}"), Err(TemplateError::EmptyRender));
    assert!(!TemplateError::EmptyChatTemplate.is_usage());
    assert!(!TemplateError::Limit(RenderLimit::Memory).is_usage());
    assert!(TemplateError::NoChatTemplate.is_usage());
}

/// The limits leave real templates alone: SmolLM2's and the 12 KB Gemma-4 template with
/// macros, which llama.cpp's vocabulary files carry.
#[test]
fn real_chat_templates_render_within_the_limits() {
    for path in [
        bitnet_fixtures::smollm2(),
        bitnet_fixtures::vocab("gemma-4"),
        bitnet_fixtures::vocab("command-r"),
    ] {
        let file = bitnet_gguf::GgufFile::open(&path).unwrap();
        let info = ModelChatInfo::from_gguf(&file);
        let f = format_prompt(
            TemplateType::Jinja,
            "What is 2+2?",
            Some("Be brief."),
            &info,
            true,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(f.text.contains("What is 2+2?"), "{}", f.text);
    }
}
