//! Helpers for the reference processes themselves: the C++ log (kept for errors, echoed
//! when verbose, tapped for progress) and the frame stream on the real stdout.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;

/// Lines of the C++ library's log kept for attaching to errors.
const LOG_LINES: usize = 64;

static LOG: Mutex<(VecDeque<String>, String)> = Mutex::new((VecDeque::new(), String::new()));

/// Where completed log lines also go while a [`LogTap`] lives.
static TAP: Mutex<Option<Sender<String>>> = Mutex::new(None);

/// Every completed line of the C++ log from now until this value is dropped, for a
/// request that turns the library's log into progress (the quantizer logs one line per
/// tensor and has no other progress interface). One tap at a time: a new one replaces
/// the old.
pub struct LogTap {
    lines: Receiver<String>,
}

impl LogTap {
    /// Start collecting lines.
    pub fn start() -> LogTap {
        let (tx, rx) = mpsc::channel();
        if let Ok(mut tap) = TAP.lock() {
            *tap = Some(tx);
        }
        LogTap { lines: rx }
    }

    /// The lines, in order (they arrive from whichever thread the library logs on).
    pub fn lines(&self) -> &Receiver<String> {
        &self.lines
    }
}

impl Drop for LogTap {
    fn drop(&mut self) {
        if let Ok(mut tap) = TAP.lock() {
            *tap = None;
        }
    }
}

/// Record a piece of the C++ log (ggml sends partial lines); echo it to stderr when
/// `BITNET_CPP_VERBOSE` is set.
pub fn log_text(text: &str) {
    if std::env::var_os("BITNET_CPP_VERBOSE").is_some() {
        eprint!("{text}");
    }
    let Ok(mut guard) = LOG.lock() else { return };
    let (lines, partial) = &mut *guard;
    partial.push_str(text);
    while let Some(nl) = partial.find('\n') {
        let line: String = partial.drain(..=nl).collect();
        let line = line.trim_end().to_string();
        if !line.is_empty() {
            if let Ok(tap) = TAP.lock() {
                if let Some(tx) = tap.as_ref() {
                    let _ = tx.send(line.clone());
                }
            }
            if lines.len() == LOG_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }
}

/// The recorded log lines, oldest first.
pub fn log_tail() -> Vec<String> {
    LOG.lock()
        .map(|g| g.0.iter().cloned().collect())
        .unwrap_or_default()
}

/// Take the process's stdout for protocol frames and point file descriptor 1 at stderr,
/// so nothing the C++ library prints can corrupt the frame stream.
///
/// # Errors
/// When the descriptors cannot be duplicated.
#[cfg(unix)]
pub fn take_stdout_for_frames() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    extern "C" {
        fn dup(fd: i32) -> i32;
        fn dup2(from: i32, to: i32) -> i32;
    }
    // SAFETY: plain POSIX calls on the standard descriptors; the duplicate is owned by
    // the returned File and nothing else.
    unsafe {
        let frames = dup(1);
        if frames < 0 || dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::fs::File::from_raw_fd(frames))
    }
}
