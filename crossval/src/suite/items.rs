//! A suite's items: the prompts of a JSONL file, or the windows of a text.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use bitnet_inference::TemplateType;

/// One line of a prompts file: `{"id": …, "prompt": …}` with optional `template`, `system`,
/// `max_tokens`. Any other field is refused (a misspelt option must not be ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptLine {
    id: String,
    prompt: String,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    max_tokens: Option<usize>,
}

/// A prompt of the suite, as its line gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptItem {
    /// Unique id.
    pub id: String,
    /// The prompt (before its template).
    pub prompt: String,
    /// Its template; `None`: the suite's `--prompt-template`.
    pub template: Option<TemplateType>,
    /// Its system prompt; `None`: the suite's `--system-prompt`.
    pub system: Option<String>,
    /// Its greedy steps; `None`: the suite's `--max-tokens`.
    pub max_tokens: Option<usize>,
}

/// Parse a prompts file: one JSON object per non-blank line.
///
/// # Errors
/// A message naming `path` and the line: not JSON, a missing or unknown field, an empty id or
/// prompt, an unknown template, an id used twice, or no items at all.
pub fn parse_prompts(text: &str, path: &Path) -> Result<Vec<PromptItem>, String> {
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), n + 1);
        let p: PromptLine = serde_json::from_str(line).map_err(|e| {
            format!("{at}: {e} (each line is {{\"id\": …, \"prompt\": …}} with optional template, system, max_tokens)")
        })?;
        if p.id.is_empty() {
            return Err(format!("{at}: the id is empty"));
        }
        if p.prompt.is_empty() {
            return Err(format!("{at}: item {:?} has an empty prompt", p.id));
        }
        if !seen.insert(p.id.clone()) {
            return Err(format!("{at}: the id {:?} is used twice", p.id));
        }
        let template = p
            .template
            .as_deref()
            .map(|t| t.parse::<TemplateType>())
            .transpose()
            .map_err(|e| format!("{at}: item {:?}: {e}", p.id))?;
        items.push(PromptItem {
            id: p.id,
            prompt: p.prompt,
            template,
            system: p.system,
            max_tokens: p.max_tokens,
        });
    }
    if items.is_empty() {
        return Err(format!("{}: no items", path.display()));
    }
    Ok(items)
}

/// The id of text window `chunk` (0-based): `chunk-1`, `chunk-2`, … as llama-perplexity
/// numbers its chunks.
pub fn window_id(chunk: usize) -> String {
    format!("chunk-{}", chunk + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<PromptItem>, String> {
        parse_prompts(text, Path::new("p.jsonl"))
    }

    #[test]
    fn lines_become_items() {
        let items = parse(
            "{\"id\": \"a\", \"prompt\": \"Hi\"}\n\n{\"id\": \"b\", \"prompt\": \"x\", \"template\": \"chatml\", \"system\": \"s\", \"max_tokens\": 2}\n",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].template, None);
        assert_eq!(items[1].template, Some(TemplateType::ChatMl));
        assert_eq!(items[1].system.as_deref(), Some("s"));
        assert_eq!(items[1].max_tokens, Some(2));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse("{\"id\": \"a\", \"prompt\": \"Hi\"}\n{\"id\": \"a\", \"prompt\": \"x\"}")
            .unwrap_err();
        assert!(e.contains("p.jsonl:2") && e.contains("twice"), "{e}");
        let e = parse("{\"id\": \"a\", \"prompt\": \"Hi\", \"temp\": 1}").unwrap_err();
        assert!(e.contains("p.jsonl:1") && e.contains("temp"), "{e}");
        let e = parse("{\"id\": \"a\", \"prompt\": \"Hi\", \"template\": \"nope\"}").unwrap_err();
        assert!(e.contains("nope"), "{e}");
        assert!(parse("{\"id\": \"a\", \"prompt\": \"\"}").is_err());
        assert!(parse("{\"prompt\": \"x\"}").is_err());
        assert!(parse("\n\n").unwrap_err().contains("no items"));
        assert!(parse("not json").is_err());
    }

    #[test]
    fn windows_are_numbered_from_one() {
        assert_eq!(window_id(0), "chunk-1");
    }
}
