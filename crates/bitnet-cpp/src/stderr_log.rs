//! What a reference process printed on stderr, kept for its errors: the last lines, and the
//! C++ assertion and exception lines that say why it died.

use std::collections::VecDeque;

/// The last lines of a reference's log, as the tail of an error message.
pub(crate) fn log_suffix(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        let start = lines.len().saturating_sub(12);
        format!(
            "\n  last lines of its log:\n    {}",
            lines[start..].join("\n    ")
        )
    }
}

/// What a dying C++ reference said about why: `GGML_ASSERT` and `GGML_ABORT` lines
/// (`file.cpp:123: GGML_ASSERT(eps >= 0.0f) failed`), an uncaught exception
/// (`terminate called after throwing an instance of 'std::out_of_range'` and its `what():`),
/// in order, without the backtrace that follows them.
pub fn cpp_failure_lines(stderr: &[String]) -> Vec<String> {
    stderr
        .iter()
        .filter(|l| {
            let l = l.trim_start();
            l.contains("GGML_ASSERT")
                || l.starts_with("terminate called")
                || l.starts_with("what():")
                || l.contains("fatal error")
                || is_source_location_message(l)
        })
        .map(|l| l.trim().to_string())
        .collect()
}

/// `path/to/file.c:123: message`: how `ggml_abort` starts every assertion and abort.
fn is_source_location_message(line: &str) -> bool {
    let Some((location, message)) = line.split_once(": ") else {
        return false;
    };
    let Some((file, number)) = location.rsplit_once(':') else {
        return false;
    };
    !message.is_empty()
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && [".c", ".cpp", ".h", ".hpp", ".cc"]
            .iter()
            .any(|ext| file.ends_with(ext))
}

/// Why a reference died: its assertion or exception lines when it printed any, otherwise
/// the last lines of its stderr.
pub(crate) fn death_suffix(stderr: &[String]) -> String {
    let why = cpp_failure_lines(stderr);
    if why.is_empty() {
        log_suffix(stderr)
    } else {
        format!("\n  C++ said:\n    {}", why.join("\n    "))
    }
}

/// The last this many stderr lines are kept.
const STDERR_LINES: usize = 40;
/// At most this many assertion/exception lines are kept beyond the tail.
const FAILURE_LINES: usize = 16;

/// What a reference printed on stderr: the last lines, and its assertion and exception
/// lines, which a long backtrace printed after them would push out of the tail.
#[derive(Default)]
pub(crate) struct StderrLog {
    tail: VecDeque<String>,
    failures: Vec<String>,
}

impl StderrLog {
    /// Keep one more line.
    pub(crate) fn push(&mut self, line: String) {
        if self.failures.len() < FAILURE_LINES
            && !cpp_failure_lines(std::slice::from_ref(&line)).is_empty()
        {
            self.failures.push(line.clone());
        }
        if self.tail.len() == STDERR_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The failure lines no longer in the tail, then the tail.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .failures
            .iter()
            .filter(|f| !self.tail.contains(f))
            .cloned()
            .collect();
        out.extend(self.tail.iter().cloned());
        out
    }
}
