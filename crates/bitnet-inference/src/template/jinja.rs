//! Rendering the model's own chat template (`tokenizer.chat_template`), within limits.
//!
//! The template is code that comes with the model file, so it is untrusted input: a template
//! can loop for ever, nest expressions until the stack overflows, double a string until memory
//! runs out, or print gigabytes. Every one of those becomes a [`RenderLimit`] error instead:
//!
//! | limit | value | what it stops |
//! |---|---|---|
//! | template source | [`MAX_SOURCE_BYTES`] | parsing megabytes of template |
//! | code in one tag | [`MAX_TAG_CODE_BYTES`] bytes outside string literals | expressions nested deeper than the parser and compiler can recurse (each level costs at least one byte of code) |
//! | instructions | [`FUEL`] (minijinja's fuel) | endless and nested loops; deep data structures (a level costs several instructions) |
//! | recursion | minijinja's limit of 500 nested calls | runaway macros |
//! | output | [`MAX_OUTPUT_OVERHEAD_BYTES`] + twice the prompt and system prompt | printing gigabytes |
//! | memory | [`MAX_MEMORY_BYTES`] allocated by the renderer's thread | strings doubled in a loop (needs [`super::BoundedAllocator`]) |
//! | time | [`MAX_RENDER_TIME`] | single instructions that are slow on large values |
//!
//! Real chat templates use a few hundred instructions and a few kilobytes; the limits are
//! orders of magnitude above that. Rendering runs on its own thread with a
//! [`RENDER_STACK_BYTES`] stack, which the nesting and instruction limits keep from overflowing.

use std::fmt;
use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::{budget_this_thread, Watch};
use super::{ModelChatInfo, TemplateError};

/// Largest `tokenizer.chat_template` rendered (bytes).
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
/// Largest amount of code in one `{{ … }}` or `{% … %}` tag: bytes that are neither
/// whitespace nor inside a string literal. It bounds how deep one expression can nest.
pub const MAX_TAG_CODE_BYTES: usize = 4096;
/// Instructions a template may execute (minijinja's fuel).
pub const FUEL: u64 = 200_000;
/// Output allowed on top of twice the prompt and system prompt (bytes).
pub const MAX_OUTPUT_OVERHEAD_BYTES: usize = 4 << 20;
/// Memory the renderer's thread may hold at once (bytes).
pub const MAX_MEMORY_BYTES: usize = 256 << 20;
/// Wall-clock time a render may take.
pub const MAX_RENDER_TIME: Duration = Duration::from_secs(5);
/// Stack of the renderer's thread (reserved address space; pages are used only as needed).
pub const RENDER_STACK_BYTES: usize = 64 << 20;

/// A limit a chat template ran into (see the module documentation for each).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenderLimit {
    /// The template's source is larger than [`MAX_SOURCE_BYTES`].
    SourceSize {
        /// Its size in bytes.
        bytes: usize,
    },
    /// One tag holds more than [`MAX_TAG_CODE_BYTES`] of code.
    TagCode {
        /// 1-based line where the tag starts.
        line: usize,
    },
    /// The template executed more than [`FUEL`] instructions.
    Instructions,
    /// The output grew past its limit.
    Output {
        /// The limit in bytes.
        limit: usize,
    },
    /// The renderer held more than [`MAX_MEMORY_BYTES`].
    Memory,
    /// Rendering took longer than [`MAX_RENDER_TIME`].
    Time,
}

impl fmt::Display for RenderLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderLimit::SourceSize { bytes } => write!(
                f,
                "source size limit: the template is {bytes} bytes, the limit {MAX_SOURCE_BYTES}"
            ),
            RenderLimit::TagCode { line } => write!(
                f,
                "nesting limit: the tag on line {line} holds more than {MAX_TAG_CODE_BYTES} bytes of code"
            ),
            RenderLimit::Instructions => {
                write!(f, "instruction limit: more than {FUEL} instructions")
            }
            RenderLimit::Output { limit } => {
                write!(f, "output limit: more than {limit} bytes rendered")
            }
            RenderLimit::Memory => write!(
                f,
                "memory limit: more than {} MiB held while rendering",
                MAX_MEMORY_BYTES >> 20
            ),
            RenderLimit::Time => write!(
                f,
                "time limit: rendering took more than {} s",
                MAX_RENDER_TIME.as_secs()
            ),
        }
    }
}

/// Render the model's chat template for one user turn (after an optional system turn), with
/// the generation prompt, within the limits above.
pub(crate) fn render(
    info: &ModelChatInfo,
    prompt: &str,
    system: Option<&str>,
) -> Result<String, TemplateError> {
    let source = info
        .chat_template
        .as_deref()
        .ok_or(TemplateError::NoChatTemplate)?;
    if source.trim().is_empty() {
        return Err(TemplateError::EmptyChatTemplate);
    }
    if source.len() > MAX_SOURCE_BYTES {
        return Err(TemplateError::Limit(RenderLimit::SourceSize {
            bytes: source.len(),
        }));
    }
    if let Some(line) = first_oversized_tag(source, MAX_TAG_CODE_BYTES) {
        return Err(TemplateError::Limit(RenderLimit::TagCode { line }));
    }
    let output_limit = MAX_OUTPUT_OVERHEAD_BYTES
        .saturating_add(prompt.len().saturating_mul(2))
        .saturating_add(system.map_or(0, str::len).saturating_mul(2));
    let job = Job {
        source: source.to_string(),
        prompt: prompt.to_string(),
        system: system.map(str::to_string),
        bos: info.bos_token.clone(),
        eos: info.eos_token.clone(),
        output_limit,
    };
    let text = run_on_budgeted_thread(job)?;
    if text.is_empty() {
        return Err(TemplateError::EmptyRender);
    }
    Ok(text)
}

/// What the renderer's thread needs (owned: the thread may outlive the call).
struct Job {
    source: String,
    prompt: String,
    system: Option<String>,
    bos: String,
    eos: String,
    output_limit: usize,
}

fn run_on_budgeted_thread(job: Job) -> Result<String, TemplateError> {
    let watch = Arc::new(Watch::default());
    let (tx, rx) = mpsc::channel();
    let thread_watch = Arc::clone(&watch);
    std::thread::Builder::new()
        .name("chat-template".into())
        .stack_size(RENDER_STACK_BYTES)
        .spawn(move || {
            budget_this_thread(MAX_MEMORY_BYTES, &thread_watch);
            let result = render_job(&job);
            // The receiver may have given up (time limit); nothing to do then.
            let _ = tx.send(result);
        })
        .map_err(|e| TemplateError::Render(format!("cannot start the template renderer: {e}")))?;
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The thread ended without sending: only a panic inside the engine does that.
                return Err(TemplateError::Render(
                    "the template renderer stopped unexpectedly".into(),
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if watch.exceeded.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TemplateError::Limit(RenderLimit::Memory));
        }
        if started.elapsed() > MAX_RENDER_TIME {
            // Stop the thread at its next allocation; it holds what it has until exit.
            watch
                .cancelled
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(TemplateError::Limit(RenderLimit::Time));
        }
    }
}

/// A writer that refuses to grow past `limit` bytes and remembers that it did.
struct CappedOutput {
    text: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_job(job: &Job) -> Result<String, TemplateError> {
    let render_err = |e: minijinja::Error| match e.kind() {
        minijinja::ErrorKind::OutOfFuel => TemplateError::Limit(RenderLimit::Instructions),
        _ => TemplateError::Render(e.to_string()),
    };
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_fuel(Some(FUEL));
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", &job.source).map_err(render_err)?;
    let mut messages = Vec::new();
    if let Some(sys) = &job.system {
        messages.push(minijinja::context! { role => "system", content => sys });
    }
    messages.push(minijinja::context! { role => "user", content => &job.prompt });
    let tmpl = env.get_template("chat").map_err(render_err)?;
    let mut out = CappedOutput {
        text: Vec::new(),
        limit: job.output_limit,
        overflowed: false,
    };
    let rendered = tmpl.render_captured_to(
        minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &job.bos,
            eos_token => &job.eos,
        },
        &mut out,
    );
    if out.overflowed {
        return Err(TemplateError::Limit(RenderLimit::Output {
            limit: job.output_limit,
        }));
    }
    rendered.map_err(render_err)?;
    // minijinja writes whole UTF-8 strings, so the bytes are valid UTF-8.
    String::from_utf8(out.text)
        .map_err(|e| TemplateError::Render(format!("the output is not UTF-8: {e}")))
}

/// The 1-based line of the first `{{ … }}` / `{% … %}` tag with more than `limit` bytes of
/// code (neither whitespace nor inside a string literal), or `None`.
///
/// Comments (`{# … #}`) and `{% raw %}` blocks hold no code. An unterminated tag or string is
/// left for the parser to report.
fn first_oversized_tag(source: &str, limit: usize) -> Option<usize> {
    let b = source.as_bytes();
    let line_at = |i: usize| 1 + b[..i].iter().filter(|&&c| c == b'\n').count();
    let mut i = 0;
    while i + 1 < b.len() {
        let closing: &[u8] = match (b[i], b[i + 1]) {
            (b'{', b'{') => b"}}",
            (b'{', b'%') => b"%}",
            (b'{', b'#') => {
                i = find(b, i + 2, b"#}").map_or(b.len(), |j| j + 2);
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let start = i;
        let mut j = i + 2;
        let mut code = 0usize;
        while j < b.len() && !b[j..].starts_with(closing) {
            match b[j] {
                b'\'' | b'"' => j = skip_string(b, j),
                c => {
                    code += usize::from(!c.is_ascii_whitespace());
                    j += 1;
                }
            }
        }
        if code > limit {
            return Some(line_at(start));
        }
        let body = &source[start + 2..j.min(b.len())];
        i = j + 2;
        // `{% raw %}` … `{% endraw %}` is text, whatever it contains.
        if closing == b"%}"
            && body.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace()) == "raw"
        {
            i = find(b, i, b"endraw").map_or(b.len(), |k| k + 6);
        }
    }
    None
}

/// Index just past the string literal starting at `b[start]` (a quote), honouring `\` escapes.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut j = start + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_code_counts_only_code_outside_strings() {
        let long_string = format!("{{% set s = '{}' %}}", "x".repeat(10_000));
        assert_eq!(first_oversized_tag(&long_string, 100), None);
        let chain = format!("a\nb\n{{{{ 1{} }}}}", " + 1".repeat(100));
        assert_eq!(first_oversized_tag(&chain, 100), Some(3));
        assert_eq!(first_oversized_tag(&chain, 1000), None);
        let commented = format!("{{# {} #}}", "-".repeat(1000));
        assert_eq!(first_oversized_tag(&commented, 100), None);
        let raw = format!("{{% raw %}}{{{{ {} }}}}{{% endraw %}}", "-".repeat(1000));
        assert_eq!(first_oversized_tag(&raw, 100), None);
        let escaped = format!(r#"{{{{ "a\"{}" }}}}"#, "-".repeat(1000));
        assert_eq!(first_oversized_tag(&escaped, 100), None);
        assert_eq!(first_oversized_tag("{{ 'unterminated", 100), None);
    }
}
