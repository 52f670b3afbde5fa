//! The client: backend choice, finding or building a reference, and [`Session`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bitnet_gguf::{GgmlType, GgufError, GgufFile};

use crate::protocol::{
    self, BuildFacts, ChatMessage, Request, Response, VocabFacts, PROTOCOL_VERSION,
};

/// A C++ reference implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Upstream llama.cpp (`cpp/llama-ref`): `llama`, upstream `bitnet` (TQ1_0/TQ2_0), ...
    Llama,
    /// Microsoft's bitnet.cpp (`cpp/bitnet-ref`): `bitnet-b1.58` with I2_S and relu².
    Bitnet,
}

impl Backend {
    /// `llama` or `bitnet`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Llama => "llama",
            Backend::Bitnet => "bitnet",
        }
    }

    /// The reference process's binary name.
    pub fn binary_name(self) -> &'static str {
        match self {
            Backend::Llama => "bitnet-ref-llama",
            Backend::Bitnet => "bitnet-ref-bitnet",
        }
    }

    /// The environment variable that may point at a prebuilt binary.
    pub fn env_var(self) -> &'static str {
        match self {
            Backend::Llama => "BITNET_CPP_LLAMA",
            Backend::Bitnet => "BITNET_CPP_BITNET",
        }
    }

    /// The cargo package directory of the reference, relative to the repository root.
    pub fn package_dir(self) -> &'static str {
        match self {
            Backend::Llama => "cpp/llama-ref",
            Backend::Bitnet => "cpp/bitnet-ref",
        }
    }

    /// Why this backend cannot load `file`, if it cannot.
    pub fn refusal(self, file: &GgufFile) -> Option<String> {
        let arch = file.architecture().unwrap_or("");
        match self {
            Backend::Llama => {
                if arch == "bitnet-b1.58" {
                    return Some("upstream llama.cpp has no `bitnet-b1.58` architecture".into());
                }
                if let Some(t) = file.tensors().iter().find(|t| t.ty == GgmlType::I2_S) {
                    return Some(format!(
                        "upstream llama.cpp cannot read I2_S tensors (first: {})",
                        t.name
                    ));
                }
                None
            }
            Backend::Bitnet => {
                // bitnet.cpp's ggml fork predates ids 37+ and reuses 38/39 for its own TL1/TL2.
                file.tensors().iter().find(|t| t.ty.id() > 36).map(|t| {
                    format!(
                        "bitnet.cpp's ggml fork does not know tensor type {} (tensor {})",
                        t.ty, t.name
                    )
                })
            }
        }
    }

    fn other(self) -> Backend {
        match self {
            Backend::Llama => Backend::Bitnet,
            Backend::Bitnet => Backend::Llama,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The user's backend choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Always llama.cpp.
    Llama,
    /// Always bitnet.cpp.
    Bitnet,
    /// bitnet.cpp for a `bitnet-b1.58` architecture or any I2_S tensor, llama.cpp otherwise.
    #[default]
    Auto,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llama" => Ok(BackendChoice::Llama),
            "bitnet" => Ok(BackendChoice::Bitnet),
            "auto" => Ok(BackendChoice::Auto),
            _ => Err(format!(
                "unknown C++ backend {s:?} (valid: llama, bitnet, auto)"
            )),
        }
    }
}

impl BackendChoice {
    /// Resolve the choice for a validated file.
    ///
    /// # Errors
    /// [`CppError::BackendCannotLoad`] when the chosen backend cannot load the file, naming
    /// the backend that can.
    pub fn resolve(self, file: &GgufFile) -> Result<Backend, CppError> {
        let backend = match self {
            BackendChoice::Llama => Backend::Llama,
            BackendChoice::Bitnet => Backend::Bitnet,
            BackendChoice::Auto => {
                let b158 = file
                    .architecture()
                    .map(|a| a == "bitnet-b1.58")
                    .unwrap_or(false);
                if b158 || file.tensors().iter().any(|t| t.ty == GgmlType::I2_S) {
                    Backend::Bitnet
                } else {
                    Backend::Llama
                }
            }
        };
        match backend.refusal(file) {
            None => Ok(backend),
            Some(reason) => Err(CppError::BackendCannotLoad {
                backend,
                reason,
                use_instead: backend.other(),
            }),
        }
    }
}

/// Everything that can go wrong talking to a reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CppError {
    /// The model failed validation before any C++ code saw it.
    #[error("{path}: {source}")]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// Why.
        source: GgufError,
    },
    /// The chosen backend cannot load this model.
    #[error("the {backend} C++ backend cannot load this model: {reason}; use --cpp-backend {use_instead}")]
    BackendCannotLoad {
        /// The backend asked for.
        backend: Backend,
        /// Why not.
        reason: String,
        /// The backend that can.
        use_instead: Backend,
    },
    /// The reference binary is missing and could not be built.
    #[error("the {backend} C++ reference is not available: {reason}")]
    NotBuilt {
        /// Which reference.
        backend: Backend,
        /// What failed, and what to do.
        reason: String,
    },
    /// The reference process could not be started.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reference speaks another protocol version.
    #[error("{backend} reference speaks protocol {found}, this client speaks {expected}: rebuild it (cargo build --release --manifest-path {}/Cargo.toml)", backend.package_dir())]
    ProtocolMismatch {
        /// Which reference.
        backend: Backend,
        /// Ours.
        expected: u32,
        /// Theirs.
        found: u32,
    },
    /// llama.cpp refused to load the model.
    #[error(
        "{backend} reference could not load the model: {message}{}",
        log_suffix(log)
    )]
    LoadFailed {
        /// Which reference.
        backend: Backend,
        /// The reason.
        message: String,
        /// The last lines of llama.cpp's log.
        log: Vec<String>,
    },
    /// A request failed inside the reference (which is still running).
    #[error("{backend} reference: {message}{}", log_suffix(log))]
    Request {
        /// Which reference.
        backend: Backend,
        /// The reason.
        message: String,
        /// The last lines of llama.cpp's log.
        log: Vec<String>,
    },
    /// The process ended (crashed, aborted, was killed) while we waited for it. The message
    /// quotes the C++ assertion or exception from its stderr when there is one
    /// ([`cpp_failure_lines`]), otherwise the last lines of its stderr.
    #[error(
        "the {backend} reference process died ({status}) during {during}{}",
        death_suffix(stderr)
    )]
    Died {
        /// Which reference.
        backend: Backend,
        /// Exit status as text (`signal 6 (SIGABRT)`, `exit code 3`).
        status: String,
        /// The request it was serving.
        during: String,
        /// Its last stderr lines.
        stderr: Vec<String>,
    },
    /// No answer in time.
    #[error(
        "the {backend} reference did not answer {during} within {after:?} (killed){}",
        log_suffix(stderr)
    )]
    Timeout {
        /// Which reference.
        backend: Backend,
        /// The request.
        during: String,
        /// The limit.
        after: Duration,
        /// Its last stderr lines.
        stderr: Vec<String>,
    },
    /// The reference answered something that makes no sense for the request.
    #[error("{backend} reference: unexpected answer to {during}: {answer}")]
    Unexpected {
        /// Which reference.
        backend: Backend,
        /// The request.
        during: String,
        /// What came back.
        answer: String,
    },
}

fn log_suffix(lines: &[String]) -> String {
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

fn death_suffix(stderr: &[String]) -> String {
    let why = cpp_failure_lines(stderr);
    if why.is_empty() {
        log_suffix(stderr)
    } else {
        format!("\n  C++ said:\n    {}", why.join("\n    "))
    }
}

/// Options for [`Session::open`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Context size (0 = the model's). Also the batch size.
    pub n_ctx: u32,
    /// Threads (0 = all available).
    pub n_threads: u32,
    /// Load only the vocabulary.
    pub vocab_only: bool,
    /// Longest wait for one answer before the process is killed.
    pub timeout: Duration,
    /// Echo the reference's stderr (llama.cpp's log) live.
    pub verbose: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: 512,
            n_threads: 0,
            vocab_only: false,
            timeout: Duration::from_secs(600),
            verbose: false,
        }
    }
}

/// Logits for consecutive positions: `n_tokens` rows of `n_vocab`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Rows.
    pub n_tokens: usize,
    /// Row length.
    pub n_vocab: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Logits {
    /// One position's logits.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_vocab..(i + 1) * self.n_vocab]
    }
}

type Frame = std::io::Result<Option<(Response, Vec<f32>)>>;

/// A running reference process with one model loaded.
///
/// Requests are synchronous. Answers are read on a helper thread so that a hung process is
/// detected by a timeout and a dead one by the end of its output; both become typed errors
/// carrying the last lines of its stderr. Dropping the session shuts the process down.
pub struct Session {
    backend: Backend,
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
    frames: Receiver<Frame>,
    stderr: Arc<Mutex<StderrLog>>,
    timeout: Duration,
    n_vocab: usize,
    n_ctx: u32,
}

const STDERR_LINES: usize = 40;
/// At most this many assertion/exception lines are kept beyond the tail.
const FAILURE_LINES: usize = 16;

/// What a reference printed on stderr: the last lines, and its assertion and exception
/// lines, which a long backtrace printed after them would push out of the tail.
#[derive(Default)]
struct StderrLog {
    tail: VecDeque<String>,
    failures: Vec<String>,
}

impl StderrLog {
    fn push(&mut self, line: String) {
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
    fn lines(&self) -> Vec<String> {
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

impl Session {
    /// Validate `model`, resolve the backend, start its reference and load the model.
    ///
    /// # Errors
    /// Any [`CppError`]: invalid model, backend refusal, reference unavailable, load failure.
    pub fn open(
        model: &Path,
        choice: BackendChoice,
        opts: &SessionOptions,
    ) -> Result<Session, CppError> {
        let file = GgufFile::open(model).map_err(|source| CppError::InvalidModel {
            path: model.to_path_buf(),
            source,
        })?;
        if file.tokenizer().ok().and_then(|t| t.tokens).is_none() {
            return Err(CppError::InvalidModel {
                path: model.to_path_buf(),
                source: GgufError::MissingKey {
                    key: "tokenizer.ggml.tokens".into(),
                },
            });
        }
        let backend = choice.resolve(&file)?;
        if !opts.vocab_only && file.tensors().is_empty() {
            return Err(CppError::LoadFailed {
                backend,
                message: format!("{} has no tensors (a vocabulary-only file): it can be tokenized, not evaluated", model.display()),
                log: vec![],
            });
        }
        drop(file);
        let binary = reference_binary(backend)?;
        let mut session = Session::spawn(backend, &binary, opts)?;
        let path = model.canonicalize().unwrap_or_else(|_| model.to_path_buf());
        let request = Request::Load {
            model_path: path.to_string_lossy().into_owned(),
            n_ctx: opts.n_ctx,
            n_threads: opts.n_threads,
            vocab_only: opts.vocab_only,
        };
        match session.call(&request, "load")? {
            (Response::Loaded { n_vocab, n_ctx }, _) => {
                session.n_vocab = n_vocab as usize;
                session.n_ctx = n_ctx;
                Ok(session)
            }
            (Response::Error { message, log }, _) => Err(CppError::LoadFailed {
                backend,
                message,
                log,
            }),
            (other, _) => Err(session.unexpected("load", &other)),
        }
    }

    /// Start a reference binary and check its handshake (no model loaded yet).
    ///
    /// # Errors
    /// [`CppError::Spawn`], [`CppError::ProtocolMismatch`], [`CppError::Died`],
    /// [`CppError::Timeout`].
    pub fn spawn(
        backend: Backend,
        binary: &Path,
        opts: &SessionOptions,
    ) -> Result<Session, CppError> {
        let mut cmd = Command::new(binary);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if opts.verbose {
            cmd.env("BITNET_CPP_VERBOSE", "1");
        } else {
            // ggml attaches gdb to print a backtrace before it aborts: seconds of waiting and
            // a hundred lines that bury the assertion. Upstream ggml skips it on request.
            cmd.env("GGML_NO_BACKTRACE", "1");
        }
        let mut child = cmd.spawn().map_err(|source| CppError::Spawn {
            path: binary.to_path_buf(),
            source,
        })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take().expect("piped stdin");
        let tail = Arc::new(Mutex::new(StderrLog::default()));
        let sink = Arc::clone(&tail);
        let verbose = opts.verbose;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if verbose {
                    eprintln!("[{}] {line}", backend.name());
                }
                if let Ok(mut t) = sink.lock() {
                    t.push(line);
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 20, stdout);
            loop {
                let frame = protocol::read_frame::<_, Response>(&mut r);
                let end = !matches!(frame, Ok(Some(_)));
                if tx.send(frame).is_err() || end {
                    break;
                }
            }
        });
        let mut s = Session {
            backend,
            child,
            stdin: Some(BufWriter::new(stdin)),
            frames: rx,
            stderr: tail,
            timeout: opts.timeout,
            n_vocab: 0,
            n_ctx: 0,
        };
        match s.receive("the handshake")? {
            (
                Response::Hello {
                    protocol_version, ..
                },
                _,
            ) if protocol_version == PROTOCOL_VERSION => Ok(s),
            (
                Response::Hello {
                    protocol_version, ..
                },
                _,
            ) => Err(CppError::ProtocolMismatch {
                backend,
                expected: PROTOCOL_VERSION,
                found: protocol_version,
            }),
            (other, _) => Err(s.unexpected("the handshake", &other)),
        }
    }

    /// Which reference this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Vocabulary size (logit row length).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Context size in effect (0 for a vocabulary-only session).
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Its assertion and exception lines (even when a backtrace pushed them out of the
    /// tail), then the last lines of its stderr.
    fn stderr_tail(&self) -> Vec<String> {
        self.stderr.lock().map(|t| t.lines()).unwrap_or_default()
    }

    fn unexpected(&self, during: &str, answer: &Response) -> CppError {
        CppError::Unexpected {
            backend: self.backend,
            during: during.to_string(),
            answer: format!("{answer:?}").chars().take(300).collect(),
        }
    }

    fn died(&mut self, during: &str) -> CppError {
        // Give the stderr reader a moment to collect the last words (an abort message).
        let status = match self.child.wait() {
            Ok(s) => describe_status(s),
            Err(e) => format!("status unknown: {e}"),
        };
        std::thread::sleep(Duration::from_millis(50));
        CppError::Died {
            backend: self.backend,
            status,
            during: during.to_string(),
            stderr: self.stderr_tail(),
        }
    }

    fn receive(&mut self, during: &str) -> Result<(Response, Vec<f32>), CppError> {
        match self.frames.recv_timeout(self.timeout) {
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) | Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                Err(self.died(during))
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(CppError::Timeout {
                    backend: self.backend,
                    during: during.to_string(),
                    after: self.timeout,
                    stderr: self.stderr_tail(),
                })
            }
        }
    }

    fn call(&mut self, request: &Request, during: &str) -> Result<(Response, Vec<f32>), CppError> {
        let sent = match self.stdin.as_mut() {
            Some(w) => protocol::write_frame(w, request, &[]).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.died(during));
        }
        self.receive(during)
    }

    /// Send a request and turn an `Error` answer into [`CppError::Request`].
    fn ask(&mut self, request: &Request, during: &str) -> Result<(Response, Vec<f32>), CppError> {
        match self.call(request, during)? {
            (Response::Error { message, log }, _) => Err(CppError::Request {
                backend: self.backend,
                message,
                log,
            }),
            ok => Ok(ok),
        }
    }

    /// Vocabulary facts as the reference derives them (BOS/EOS defaults included).
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn vocab_info(&mut self) -> Result<VocabFacts, CppError> {
        match self.ask(&Request::VocabInfo, "vocab_info")? {
            (Response::Vocab(v), _) => Ok(v),
            (other, _) => Err(self.unexpected("vocab_info", &other)),
        }
    }

    /// `llama_tokenize(text, add_special, parse_special)`.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<i32>, CppError> {
        let r = Request::Tokenize {
            text: text.to_string(),
            add_special,
            parse_special,
        };
        match self.ask(&r, "tokenize")? {
            (Response::Tokens { tokens }, _) => Ok(tokens),
            (other, _) => Err(self.unexpected("tokenize", &other)),
        }
    }

    /// `llama_token_to_piece` (raw bytes: a byte-fallback token need not be UTF-8).
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn token_to_piece(&mut self, token: i32, special: bool) -> Result<Vec<u8>, CppError> {
        match self.ask(&Request::TokenToPiece { token, special }, "token_to_piece")? {
            (Response::Piece { bytes }, _) => Ok(bytes),
            (other, _) => Err(self.unexpected("token_to_piece", &other)),
        }
    }

    fn logits(&mut self, request: &Request, during: &str, rows: usize) -> Result<Logits, CppError> {
        match self.ask(request, during)? {
            (Response::Logits { n_tokens, n_vocab }, data)
                if n_tokens as usize == rows && data.len() == rows * n_vocab as usize =>
            {
                Ok(Logits {
                    n_tokens: rows,
                    n_vocab: n_vocab as usize,
                    data,
                })
            }
            (other, _) => Err(self.unexpected(during, &other)),
        }
    }

    /// Clear the KV cache and evaluate `tokens` in one batch: logits for every position.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn eval(&mut self, tokens: &[i32]) -> Result<Logits, CppError> {
        self.logits(
            &Request::Eval {
                tokens: tokens.to_vec(),
                outputs: None,
            },
            "eval",
            tokens.len(),
        )
    }

    /// Clear the KV cache and evaluate `tokens` in one batch with the logits flag on the
    /// positions `outputs` only (strictly ascending indices into `tokens`): their logits, in
    /// order.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange; the reference refuses positions that are not
    /// ascending indices into `tokens`.
    pub fn eval_outputs(&mut self, tokens: &[i32], outputs: &[u32]) -> Result<Logits, CppError> {
        self.logits(
            &Request::Eval {
                tokens: tokens.to_vec(),
                outputs: Some(outputs.to_vec()),
            },
            "eval",
            outputs.len(),
        )
    }

    /// Evaluate one more token after the previous ones.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn decode_next(&mut self, token: i32) -> Result<Vec<f32>, CppError> {
        Ok(self
            .logits(&Request::DecodeNext { token }, "decode_next", 1)?
            .data)
    }

    /// Clear the KV cache.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn reset(&mut self) -> Result<(), CppError> {
        match self.ask(&Request::Reset, "reset")? {
            (Response::Done, _) => Ok(()),
            (other, _) => Err(self.unexpected("reset", &other)),
        }
    }

    /// `llama_chat_apply_template` with the model's template, or `template` when given.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn apply_chat_template(
        &mut self,
        messages: &[ChatMessage],
        add_assistant: bool,
        template: Option<&str>,
    ) -> Result<String, CppError> {
        let r = Request::ApplyChatTemplate {
            messages: messages.to_vec(),
            add_assistant,
            template: template.map(str::to_string),
        };
        match self.ask(&r, "apply_chat_template")? {
            (Response::Text { text }, _) => Ok(text),
            (other, _) => Err(self.unexpected("apply_chat_template", &other)),
        }
    }

    /// Backend, library version and system info.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn build_info(&mut self) -> Result<BuildFacts, CppError> {
        match self.ask(&Request::BuildInfo, "build_info")? {
            (Response::Build(b), _) => Ok(b),
            (other, _) => Err(self.unexpected("build_info", &other)),
        }
    }

    /// llama-bench's timed runs of `prompt` (one batch, last logits only) and `gen` (one
    /// token at a time), `repetitions` of each after a warm-up, measured inside the reference:
    /// the seconds of each prompt run and of each generation run.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn bench(
        &mut self,
        prompt: &[i32],
        gen: &[i32],
        repetitions: u32,
    ) -> Result<(Vec<f64>, Vec<f64>), CppError> {
        let request = Request::Bench {
            prompt: prompt.to_vec(),
            gen: gen.to_vec(),
            repetitions,
        };
        match self.ask(&request, "bench")? {
            (
                Response::BenchTimes {
                    prompt_seconds,
                    gen_seconds,
                },
                _,
            ) => Ok((prompt_seconds, gen_seconds)),
            (other, _) => Err(self.unexpected("bench", &other)),
        }
    }

    /// The reference process's peak resident memory so far (`VmHWM`, KiB), where the system
    /// reports it (Linux).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(Some(self.child.id()))
    }

    /// The process id of the reference (tests use it to kill the process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut w) = self.stdin.take() {
            let _ = protocol::write_frame(&mut w, &Request::Shutdown, &[]);
        }
        // A clean shutdown answers at once; anything else is killed.
        let _ = self.frames.recv_timeout(Duration::from_secs(2));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe_status(s: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            let name = match sig {
                6 => " (SIGABRT: a C++ assertion or abort)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV: the C++ code crashed)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("signal {sig}{name}");
        }
    }
    match s.code() {
        Some(c) => format!("exit code {c}"),
        None => "unknown status".into(),
    }
}

/// The repository root (where `cpp/` lives), known at compile time.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Peak resident memory (`VmHWM`, KiB) of process `pid`, or of this process with `None`,
/// where the system reports it (Linux `/proc`); benchmarks compare both engines' figures.
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Where a reference's binary is: `$BITNET_CPP_LLAMA` / `$BITNET_CPP_BITNET` if set,
/// otherwise built (once per process, a no-op when up to date) from its package.
///
/// # Errors
/// [`CppError::NotBuilt`] with the build's error output and what to do.
pub fn reference_binary(backend: Backend) -> Result<PathBuf, CppError> {
    if let Some(p) = std::env::var_os(backend.env_var()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(CppError::NotBuilt {
                backend,
                reason: format!(
                    "{} points at {}, which is not a file",
                    backend.env_var(),
                    p.display()
                ),
            });
        }
        return Ok(p);
    }
    static BUILT: [OnceLock<Result<PathBuf, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = &BUILT[backend as usize];
    slot.get_or_init(|| build_reference(backend))
        .clone()
        .map_err(|reason| CppError::NotBuilt { backend, reason })
}

/// `cargo build --release` of the reference package, with the environment that
/// `scripts/prereqs.sh` recorded (libclang location, bindgen flags).
fn build_reference(backend: Backend) -> Result<PathBuf, String> {
    let root = repo_root();
    let pkg = root.join(backend.package_dir());
    let manifest = pkg.join("Cargo.toml");
    let binary = pkg.join("target/release").join(backend.binary_name());
    if !manifest.is_file() {
        return Err(format!(
            "{} is missing; set {} to a prebuilt {} binary",
            manifest.display(),
            backend.env_var(),
            backend.binary_name()
        ));
    }
    if !binary.is_file() {
        eprintln!(
            "building the {} C++ reference (first time, a few minutes): cargo build --release --manifest-path {}",
            backend.name(),
            manifest.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest);
    // The reference has its own target directory; never inherit the caller's.
    cmd.env_remove("CARGO_TARGET_DIR");
    for (k, v) in prereqs_env(&root) {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "building it failed (cargo build --release --manifest-path {}).\n  Install the prerequisites with `bash scripts/prereqs.sh` (cmake, a C++ compiler{}), then retry.\n  Last lines of the build:\n    {}",
            manifest.display(),
            if backend == Backend::Llama { ", libclang" } else { "" },
            tail.join("\n    ")
        ));
    }
    if !binary.is_file() {
        return Err(format!(
            "the build succeeded but {} does not exist",
            binary.display()
        ));
    }
    Ok(binary)
}

/// `export KEY="VALUE"` lines of `target/prereqs.env`, when the prerequisites script wrote
/// one. PATH lines prepend to the running PATH; other keys the caller already set win.
fn prereqs_env(root: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(root.join("target/prereqs.env")) else {
        return Vec::new();
    };
    let mut path = std::env::var("PATH").unwrap_or_default();
    let mut vars = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line
            .trim()
            .strip_prefix("export ")
            .and_then(|kv| kv.split_once('='))
        else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        if let Some(prefix) = v.strip_suffix(":$PATH") {
            path = format!("{prefix}:{path}");
        } else if std::env::var_os(k).is_none() {
            vars.push((k.to_string(), v.to_string()));
        }
    }
    vars.push(("PATH".to_string(), path));
    vars
}
