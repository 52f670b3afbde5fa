//! Stage messages on stderr. Off a terminal (a log, a pipe, a test) each stage is one plain
//! line when it starts. On a terminal the current stage is one live line with its elapsed
//! time, redrawn every [`TICK`], so a prompt that takes minutes to evaluate is visibly
//! working; each finished stage stays on screen with the time it took. Nothing ever goes to
//! stdout, which in JSON mode carries exactly one document.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the live line is redrawn on a terminal.
pub const TICK: Duration = Duration::from_millis(250);

struct Live {
    out: Box<dyn Write + Send>,
    /// The current stage and when it started.
    stage: Option<(String, Instant)>,
}

impl Live {
    fn redraw(&mut self, prefix: &str) {
        if let Some((msg, started)) = &self.stage {
            let _ = write!(
                self.out,
                "\r\x1b[2K{prefix}: {msg} … {:.0} s",
                started.elapsed().as_secs_f64()
            );
            let _ = self.out.flush();
        }
    }

    /// Replace the live line by the finished stage and the time it took.
    fn finish(&mut self, prefix: &str) {
        if let Some((msg, started)) = self.stage.take() {
            let _ = writeln!(
                self.out,
                "\r\x1b[2K{prefix}: {msg} ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            let _ = self.out.flush();
        }
    }
}

/// Reports the stages of a long command on stderr (see the module documentation).
pub struct StageProgress {
    prefix: String,
    live: Option<Arc<Mutex<Live>>>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
    plain: Box<dyn Write + Send>,
}

impl StageProgress {
    /// Progress on stderr; live only when stderr is a terminal.
    pub fn stderr(prefix: &str) -> Self {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        Self::new(prefix, terminal, Box::new(std::io::stderr()))
    }

    /// Progress written to `out`, live (redrawn) when `terminal`.
    pub fn new(prefix: &str, terminal: bool, out: Box<dyn Write + Send>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !terminal {
            return StageProgress {
                prefix: prefix.to_string(),
                live: None,
                stop,
                ticker: None,
                plain: out,
            };
        }
        let live = Arc::new(Mutex::new(Live { out, stage: None }));
        let (thread_live, thread_stop, thread_prefix) =
            (Arc::clone(&live), Arc::clone(&stop), prefix.to_string());
        // Without a ticker thread the live line still appears, it just does not count up.
        let ticker = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    lock(&thread_live).redraw(&thread_prefix);
                }
            })
            .ok();
        StageProgress {
            prefix: prefix.to_string(),
            live: Some(live),
            stop,
            ticker,
            plain: Box::new(std::io::sink()),
        }
    }

    /// A new stage starts (the previous one, if any, is finished).
    pub fn stage(&mut self, msg: &str) {
        match &self.live {
            None => {
                let _ = writeln!(self.plain, "{}: {msg}", self.prefix);
            }
            Some(live) => {
                let mut live = lock(live);
                live.finish(&self.prefix);
                live.stage = Some((msg.to_string(), Instant::now()));
                live.redraw(&self.prefix);
            }
        }
    }
}

fn lock(live: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for StageProgress {
    /// Finishes the last stage and stops the ticker, so what follows starts on a clean line.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        if let Some(live) = &self.live {
            lock(live).finish(&self.prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(s: &Shared) -> String {
        String::from_utf8(s.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn plain_lines_off_a_terminal() {
        let out = Shared::default();
        let mut p = StageProgress::new("crossval", false, Box::new(out.clone()));
        p.stage("loading m.gguf");
        p.stage("evaluating 5 positions");
        drop(p);
        assert_eq!(
            text(&out),
            "crossval: loading m.gguf\ncrossval: evaluating 5 positions\n"
        );
    }

    #[test]
    fn a_live_line_on_a_terminal_and_each_finished_stage_with_its_time() {
        let out = Shared::default();
        let mut p = StageProgress::new("crossval", true, Box::new(out.clone()));
        p.stage("Rust engine: evaluating 5000 positions");
        let first = text(&out);
        assert!(
            first.starts_with("\r\x1b[2Kcrossval: Rust engine: evaluating 5000 positions … 0 s"),
            "{first:?}"
        );
        assert!(!first.contains('\n'), "the live line is not finished yet");
        p.stage("C++ reference: evaluating 5000 positions");
        drop(p);
        let all = text(&out);
        assert!(
            all.contains("\r\x1b[2Kcrossval: Rust engine: evaluating 5000 positions ("),
            "{all:?}"
        );
        assert!(all.ends_with(" s)\n"), "{all:?}");
        assert_eq!(all.matches('\n').count(), 2, "{all:?}");
    }
}
