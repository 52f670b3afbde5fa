//! Prompt templates, and the BOS / special-token policy that goes with each.
//!
//! Cross-validation tokenizes the *same formatted text* on both sides with the *same*
//! `add_bos` / `parse_special` decision, and that decision belongs to the template: plain
//! formats (raw, instruct) add BOS when the vocabulary does and treat `<s>`-like text as
//! text; chat formats parse their special tokens and never add a BOS of their own (their text
//! carries it where the model wants it).
//!
//! `jinja` renders the model's own `tokenizer.chat_template`, which is untrusted code from the
//! model file: [`jinja`] renders it within limits (instructions, nesting, output, memory, time),
//! and [`BoundedAllocator`] is what lets a binary enforce the memory limit.
//!
//! A flag that a template ignores is never silently dropped: [`template_warnings`] names it
//! (the `--system-prompt` of `raw`), and also the chat markers a vocabulary does not have as
//! single tokens (`<|im_start|>` split into `<`, `|`, `im`, … on a Llama-3 vocabulary).

mod budget;
pub mod jinja;

use std::fmt;
use std::str::FromStr;

use bitnet_gguf::GgufFile;

pub use budget::BoundedAllocator;
pub use jinja::RenderLimit;

/// The templates a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateType {
    /// The prompt as given.
    Raw,
    /// `System: {sys}\n\n` (when given), then `Q: {prompt}\nA:`.
    Instruct,
    /// Llama 3's chat format, starting with `<|begin_of_text|>`.
    Llama3Chat,
    /// ChatML: `<|im_start|>role\n…<|im_end|>\n`, then the assistant opener.
    ChatMl,
    /// Detect from the GGUF's `tokenizer.chat_template`, then `general.name`, else raw.
    Auto,
    /// Render the GGUF's own `tokenizer.chat_template` (Jinja).
    Jinja,
}

/// Every name [`TemplateType::from_str`] accepts.
pub const TEMPLATE_NAMES: &[&str] = &["raw", "instruct", "llama3-chat", "chatml", "auto", "jinja"];

/// Errors choosing or applying a template.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    /// Not a template name.
    #[error("unknown prompt template {0:?} (valid: {names})", names = TEMPLATE_NAMES.join(", "))]
    Unknown(String),
    /// `jinja` on a model without `tokenizer.chat_template`.
    #[error("the model has no tokenizer.chat_template to render; use --prompt-template raw, instruct, llama3-chat or chatml")]
    NoChatTemplate,
    /// The GGUF's `tokenizer.chat_template` is empty (or only whitespace).
    #[error("the model's tokenizer.chat_template is empty: there is no template to render; use --prompt-template raw, instruct, llama3-chat or chatml")]
    EmptyChatTemplate,
    /// The GGUF's template failed to render.
    #[error("the model's chat template failed to render: {0}")]
    Render(String),
    /// The GGUF's template rendered nothing at all.
    #[error("the model's chat template rendered an empty prompt")]
    EmptyRender,
    /// The GGUF's template ran into one of the renderer's limits (see [`jinja`]).
    #[error("the model's chat template hit the renderer's {0}; a tokenizer.chat_template that needs more is malformed or hostile")]
    Limit(RenderLimit),
}

impl TemplateError {
    /// Whether the error is the user's choice of flags (exit 2) rather than a problem with the
    /// model file (exit 3). A template that cannot be rendered is a malformed file.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            TemplateError::Unknown(_) | TemplateError::NoChatTemplate
        )
    }
}

impl FromStr for TemplateType {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "raw" => TemplateType::Raw,
            "instruct" => TemplateType::Instruct,
            "llama3-chat" => TemplateType::Llama3Chat,
            "chatml" => TemplateType::ChatMl,
            "auto" => TemplateType::Auto,
            "jinja" => TemplateType::Jinja,
            other => return Err(TemplateError::Unknown(other.to_string())),
        })
    }
}

impl TemplateType {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            TemplateType::Raw => "raw",
            TemplateType::Instruct => "instruct",
            TemplateType::Llama3Chat => "llama3-chat",
            TemplateType::ChatMl => "chatml",
            TemplateType::Auto => "auto",
            TemplateType::Jinja => "jinja",
        }
    }

    /// Whether the formatted text is tokenized with special-token parsing.
    pub fn parse_special(self) -> bool {
        !matches!(self, TemplateType::Raw | TemplateType::Instruct)
    }

    /// The special-token texts the built-in template writes, which the vocabulary must know as
    /// single tokens for the format to mean anything (none for raw, instruct, and the model's
    /// own jinja template).
    pub fn special_markers(self) -> &'static [&'static str] {
        match self {
            TemplateType::Llama3Chat => &[
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ],
            TemplateType::ChatMl => &["<|im_start|>", "<|im_end|>"],
            _ => &[],
        }
    }
}

/// What the model's metadata says about chat formatting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelChatInfo {
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Text of the BOS token.
    pub bos_token: String,
    /// Text of the EOS token.
    pub eos_token: String,
}

impl ModelChatInfo {
    /// Read it from a GGUF file (missing keys are `None` / empty).
    pub fn from_gguf(file: &GgufFile) -> ModelChatInfo {
        let t = file.tokenizer().ok();
        let piece = |id: Option<u32>| {
            t.as_ref()
                .and_then(|t| Some(t.tokens?.get(id? as usize)?.clone()))
                .unwrap_or_default()
        };
        ModelChatInfo {
            chat_template: t.as_ref().and_then(|t| t.chat_template.map(str::to_string)),
            name: file
                .get_str("general.name")
                .ok()
                .flatten()
                .map(str::to_string),
            bos_token: piece(t.as_ref().and_then(|t| t.bos_id)),
            eos_token: piece(t.as_ref().and_then(|t| t.eos_id)),
        }
    }
}

/// A formatted prompt and how to tokenize it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormattedPrompt {
    /// The text both sides tokenize.
    pub text: String,
    /// The template actually applied (never `auto`).
    pub template: TemplateType,
    /// For `auto`: what the detection was based on.
    pub detected_from: Option<String>,
    /// Add BOS when tokenizing.
    pub add_bos: bool,
    /// Parse special-token text as special tokens.
    pub parse_special: bool,
}

/// Decide what `auto` means for this model: the chat template's markers first, then the
/// model name, else raw. Returns the template and the evidence.
pub fn detect(info: &ModelChatInfo) -> (TemplateType, String) {
    if let Some(t) = &info.chat_template {
        if t.contains("<|start_header_id|>") {
            return (
                TemplateType::Llama3Chat,
                "tokenizer.chat_template uses <|start_header_id|>".into(),
            );
        }
        if t.contains("<|im_start|>") {
            return (
                TemplateType::ChatMl,
                "tokenizer.chat_template uses <|im_start|>".into(),
            );
        }
    }
    if let Some(n) = &info.name {
        let lower = n.to_lowercase();
        if lower.contains("llama-3") || lower.contains("llama3") {
            return (TemplateType::Llama3Chat, format!("general.name {n:?}"));
        }
        if lower.contains("instruct") {
            return (TemplateType::Instruct, format!("general.name {n:?}"));
        }
    }
    (
        TemplateType::Raw,
        "no chat template or known model name".into(),
    )
}

/// Format `prompt` (with an optional system prompt) with `template` for a model whose
/// vocabulary adds BOS by default when `vocab_add_bos`.
///
/// # Errors
/// For `jinja`: [`TemplateError::NoChatTemplate`], [`TemplateError::EmptyChatTemplate`],
/// [`TemplateError::Render`], [`TemplateError::EmptyRender`], [`TemplateError::Limit`].
pub fn format_prompt(
    template: TemplateType,
    prompt: &str,
    system: Option<&str>,
    info: &ModelChatInfo,
    vocab_add_bos: bool,
) -> Result<FormattedPrompt, TemplateError> {
    let (template, detected_from) = match template {
        TemplateType::Auto => {
            let (t, why) = detect(info);
            (t, Some(why))
        }
        t => (t, None),
    };
    let text = match template {
        TemplateType::Raw => prompt.to_string(),
        TemplateType::Instruct => {
            let mut s = String::new();
            if let Some(sys) = system {
                s.push_str(&format!("System: {sys}\n\n"));
            }
            s.push_str(&format!("Q: {prompt}\nA:"));
            s
        }
        TemplateType::Llama3Chat => {
            let mut s = String::from("<|begin_of_text|>");
            if let Some(sys) = system {
                s.push_str(&format!(
                    "<|start_header_id|>system<|end_header_id|>\n\n{sys}<|eot_id|>"
                ));
            }
            s.push_str(&format!(
                "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
            ));
            s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            s
        }
        TemplateType::ChatMl => {
            let mut s = String::new();
            if let Some(sys) = system {
                s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
            }
            s.push_str(&format!(
                "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
            ));
            s
        }
        TemplateType::Jinja => jinja::render(info, prompt, system)?,
        TemplateType::Auto => unreachable!("resolved above"),
    };
    let (add_bos, parse_special) = match template {
        TemplateType::Raw | TemplateType::Instruct => (vocab_add_bos, false),
        TemplateType::Llama3Chat | TemplateType::ChatMl => (false, true),
        // The model's own template decides where BOS goes; add one only if the vocabulary
        // wants it and the rendered text does not already begin with it.
        TemplateType::Jinja => (
            vocab_add_bos && (info.bos_token.is_empty() || !text.starts_with(&info.bos_token)),
            true,
        ),
        TemplateType::Auto => unreachable!("resolved above"),
    };
    Ok(FormattedPrompt {
        text,
        template,
        detected_from,
        add_bos,
        parse_special,
    })
}

/// Something the user should know about a formatted prompt: a flag the template ignores, or a
/// format the vocabulary cannot express. Callers print these as warnings (and list them in
/// their JSON output); they never change the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateWarning {
    /// A system prompt was given, but the formatted text does not contain it.
    SystemPromptIgnored {
        /// The template applied.
        template: TemplateType,
    },
    /// Special markers the template writes are not single tokens of the model's vocabulary,
    /// so they are tokenized as plain text.
    MarkersNotSingleTokens {
        /// The template applied.
        template: TemplateType,
        /// The markers that are not single tokens.
        markers: Vec<&'static str>,
    },
}

impl fmt::Display for TemplateWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateWarning::SystemPromptIgnored { template } => write!(
                f,
                "--system-prompt has no effect: the {} template does not put it in the formatted prompt",
                template.name()
            ),
            TemplateWarning::MarkersNotSingleTokens { template, markers } => write!(
                f,
                "the {} template's markers {} are not single tokens of the model's vocabulary: \
                 they are tokenized as plain text, so the prompt is not in a format the model knows",
                template.name(),
                markers.join(", ")
            ),
        }
    }
}

/// The warnings for `formatted` (made from `system`, if any): a system prompt the template
/// ignored, and the template's [`TemplateType::special_markers`] for which `token_count` (the
/// number of tokens the model's vocabulary makes of the text, special tokens parsed) is not 1.
pub fn template_warnings(
    formatted: &FormattedPrompt,
    system: Option<&str>,
    mut token_count: impl FnMut(&str) -> usize,
) -> Vec<TemplateWarning> {
    let mut warnings = Vec::new();
    if system.is_some_and(|s| !s.is_empty() && !formatted.text.contains(s)) {
        warnings.push(TemplateWarning::SystemPromptIgnored {
            template: formatted.template,
        });
    }
    let markers: Vec<&'static str> = formatted
        .template
        .special_markers()
        .iter()
        .copied()
        .filter(|m| token_count(m) != 1)
        .collect();
    if !markers.is_empty() {
        warnings.push(TemplateWarning::MarkersNotSingleTokens {
            template: formatted.template,
            markers,
        });
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tmpl: Option<&str>, name: Option<&str>) -> ModelChatInfo {
        ModelChatInfo {
            chat_template: tmpl.map(str::to_string),
            name: name.map(str::to_string),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        }
    }

    #[test]
    fn names_round_trip_and_unknown_lists_valid_names() {
        for n in TEMPLATE_NAMES {
            assert_eq!(n.parse::<TemplateType>().unwrap().name(), *n);
        }
        let e = "llama4".parse::<TemplateType>().unwrap_err().to_string();
        assert!(TEMPLATE_NAMES.iter().all(|n| e.contains(n)), "{e}");
    }

    #[test]
    fn instruct_and_raw_are_exact_and_follow_the_vocabulary_bos() {
        let i = info(None, None);
        let f = format_prompt(
            TemplateType::Instruct,
            "What is 2+2?",
            Some("Be brief."),
            &i,
            true,
        )
        .unwrap();
        assert_eq!(f.text, "System: Be brief.\n\nQ: What is 2+2?\nA:");
        assert!(f.add_bos && !f.parse_special);
        let f = format_prompt(TemplateType::Instruct, "Hi", None, &i, false).unwrap();
        assert_eq!(f.text, "Q: Hi\nA:");
        assert!(!f.add_bos);
        let f = format_prompt(TemplateType::Raw, "<s>x", None, &i, true).unwrap();
        assert_eq!(f.text, "<s>x");
        assert!(f.add_bos && !f.parse_special);
    }

    #[test]
    fn chat_formats_parse_specials_and_never_add_bos() {
        let i = info(None, None);
        let f = format_prompt(TemplateType::Llama3Chat, "Hi", Some("S"), &i, true).unwrap();
        assert_eq!(
            f.text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert!(!f.add_bos && f.parse_special);
        let f = format_prompt(TemplateType::ChatMl, "Hi", None, &i, true).unwrap();
        assert_eq!(
            f.text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(!f.add_bos && f.parse_special);
    }

    #[test]
    fn auto_detects_and_says_why() {
        let f = format_prompt(
            TemplateType::Auto,
            "Hi",
            None,
            &info(Some("{{ '<|im_start|>' }}"), None),
            true,
        )
        .unwrap();
        assert_eq!(f.template, TemplateType::ChatMl);
        assert!(f.detected_from.unwrap().contains("<|im_start|>"));
        let f = format_prompt(
            TemplateType::Auto,
            "Hi",
            None,
            &info(None, Some("Meta-Llama-3-8B")),
            true,
        )
        .unwrap();
        assert_eq!(f.template, TemplateType::Llama3Chat);
        let f = format_prompt(TemplateType::Auto, "Hi", None, &info(None, None), true).unwrap();
        assert_eq!(f.template, TemplateType::Raw);
        assert!(f.add_bos);
    }

    #[test]
    fn warnings_name_an_ignored_system_prompt_and_missing_markers() {
        let i = info(None, None);
        let raw = format_prompt(TemplateType::Raw, "Hi", Some("Be brief."), &i, true).unwrap();
        assert_eq!(
            template_warnings(&raw, Some("Be brief."), |_| 1),
            [TemplateWarning::SystemPromptIgnored {
                template: TemplateType::Raw
            }]
        );
        assert!(template_warnings(&raw, None, |_| 1).is_empty());
        let chatml = format_prompt(TemplateType::ChatMl, "Hi", Some("S"), &i, true).unwrap();
        assert!(template_warnings(&chatml, Some("S"), |_| 1).is_empty());
        // A vocabulary that splits <|im_end|> into pieces.
        let w = template_warnings(
            &chatml,
            Some("S"),
            |m| if m == "<|im_end|>" { 5 } else { 1 },
        );
        assert_eq!(
            w,
            [TemplateWarning::MarkersNotSingleTokens {
                template: TemplateType::ChatMl,
                markers: vec!["<|im_end|>"]
            }]
        );
        assert!(w[0]
            .to_string()
            .contains("<|im_end|> are not single tokens"));
        assert!(TemplateType::Raw.special_markers().is_empty());
        assert_eq!(TemplateType::Llama3Chat.special_markers().len(), 4);
    }

    #[test]
    fn jinja_renders_the_models_template() {
        let tmpl = "{{ bos_token }}{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'].strip() }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}";
        let f = format_prompt(
            TemplateType::Jinja,
            " Hi ",
            Some("S"),
            &info(Some(tmpl), None),
            true,
        )
        .unwrap();
        assert_eq!(f.text, "<s>[SYSTEM] S\n[USER] Hi\n[ASSISTANT]");
        assert!(!f.add_bos, "the text already starts with BOS");
        assert!(f.parse_special);
        assert_eq!(
            format_prompt(TemplateType::Jinja, "x", None, &info(None, None), true).unwrap_err(),
            TemplateError::NoChatTemplate
        );
        let bad = format_prompt(
            TemplateType::Jinja,
            "x",
            None,
            &info(Some("{{ raise_exception('nope') }}"), None),
            true,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("nope"));
    }
}
