//! The client: [`Session`], one running reference process, and [`CppError`].

use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitnet_gguf::{GgufError, GgufFile};

use crate::backend::{Backend, BackendChoice};
use crate::binaries::reference_binary;
use crate::stderr_log::{death_suffix, log_suffix, StderrLog};

use crate::protocol::{
    self, BuildFacts, ChatMessage, LoadFacts, Request, Response, SamplerChainSpec, TypeTrait,
    VocabFacts, WirePath, PROTOCOL_VERSION,
};
use crate::run::{EffectiveConfig, RunConfig};

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
    /// ([`crate::cpp_failure_lines`]), otherwise the last lines of its stderr.
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
    /// The reference cannot do this at all (bitnet.cpp's reference has no quantizer, type
    /// table or sampler chain).
    #[error("the {backend} reference cannot do {request}: use the {} reference", backend.other())]
    Unsupported {
        /// Which reference.
        backend: Backend,
        /// The request.
        request: String,
    },
    /// A path the C++ library could not be given unchanged (off Unix: not valid Unicode).
    #[error("{}: the C++ reference needs a Unicode path on this system; rename the file", path.display())]
    NonUnicodePath {
        /// The path.
        path: PathBuf,
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

/// Options for [`Session::open`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Context size (0 = the model's; otherwise at least `run.n_ubatch`). Also the batch size.
    pub n_ctx: u32,
    /// KV cache types, flash attention, micro-batch size and threads (0 = all available,
    /// resolved here before the reference sees it). Default: llama.cpp's defaults.
    pub run: RunConfig,
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
            run: RunConfig::default(),
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
    facts: LoadFacts,
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
        // The references cap a micro-batch at the context (llama.cpp: n_ubatch ≤ n_batch ≤
        // n_ctx), so the context holds at least one: the micro-batch size then is the one
        // asked for, on both sides.
        let n_ctx = if opts.n_ctx == 0 {
            0
        } else {
            opts.n_ctx.max(opts.run.n_ubatch)
        };
        // The path crosses as bytes: a non-UTF-8 file name reaches the C loader unchanged.
        let model_path =
            WirePath::new(&path).ok_or_else(|| CppError::NonUnicodePath { path: path.clone() })?;
        let request = Request::Load {
            model_path,
            n_ctx,
            vocab_only: opts.vocab_only,
            run: opts.run.with_resolved_threads(),
        };
        match session.call(&request, "load")? {
            (Response::Loaded(facts), _) => {
                session.facts = facts;
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

    /// Start `backend`'s reference (found or built as [`reference_binary`] says) without
    /// loading a model: for requests that need none, such as quantizing a file.
    ///
    /// # Errors
    /// [`CppError::NotBuilt`] and the errors of [`Session::spawn`].
    pub fn start(backend: Backend, opts: &SessionOptions) -> Result<Session, CppError> {
        let binary = reference_binary(backend)?;
        Session::spawn(backend, &binary, opts)
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
        // One frame in flight: a reference streaming tensors faster than the client compares
        // them waits on the pipe instead of filling this process's memory.
        let (tx, rx) = mpsc::sync_channel(1);
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
            facts: LoadFacts {
                n_vocab: 0,
                n_ctx: 0,
                n_batch: 0,
                config: None,
            },
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
        self.facts.n_vocab as usize
    }

    /// Context size in effect (0 for a vocabulary-only session).
    pub fn n_ctx(&self) -> u32 {
        self.facts.n_ctx
    }

    /// Tokens per `llama_decode` call (0 for a vocabulary-only session).
    pub fn n_batch(&self) -> u32 {
        self.facts.n_batch
    }

    /// The run configuration as the reference resolved it (KV types, flash attention with
    /// `auto` decided, micro-batch size, threads); `None` for a vocabulary-only session.
    pub fn effective_config(&self) -> Option<EffectiveConfig> {
        self.facts.config
    }

    /// Its assertion and exception lines (even when a backtrace pushed them out of the
    /// tail), then the last lines of its stderr.
    fn stderr_tail(&self) -> Vec<String> {
        self.stderr.lock().map(|t| t.lines()).unwrap_or_default()
    }

    pub(crate) fn unexpected(&self, during: &str, answer: &Response) -> CppError {
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

    pub(crate) fn receive(&mut self, during: &str) -> Result<(Response, Vec<f32>), CppError> {
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

    pub(crate) fn call(
        &mut self,
        request: &Request,
        during: &str,
    ) -> Result<(Response, Vec<f32>), CppError> {
        self.call_with(request, &[], during)
    }

    /// Send a request with a payload (rows of logits) and read one answer.
    fn call_with(
        &mut self,
        request: &Request,
        payload: &[f32],
        during: &str,
    ) -> Result<(Response, Vec<f32>), CppError> {
        self.send(request, payload, during)?;
        self.receive(during)
    }

    /// Send a request without reading its answer (for answers of several frames, read
    /// with [`Session::receive`]).
    pub(crate) fn send(
        &mut self,
        request: &Request,
        payload: &[f32],
        during: &str,
    ) -> Result<(), CppError> {
        let sent = match self.stdin.as_mut() {
            Some(w) => protocol::write_frame(w, request, payload).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.died(during))
        }
    }

    /// Send a request and turn an `Error` or `Unsupported` answer into a [`CppError`].
    fn ask(&mut self, request: &Request, during: &str) -> Result<(Response, Vec<f32>), CppError> {
        self.ask_with(request, &[], during)
    }

    /// [`Session::ask`] with a payload.
    fn ask_with(
        &mut self,
        request: &Request,
        payload: &[f32],
        during: &str,
    ) -> Result<(Response, Vec<f32>), CppError> {
        let answer = self.call_with(request, payload, during)?;
        self.refusal(answer)
    }

    /// An `Error` answer as [`CppError::Request`], `Unsupported` as
    /// [`CppError::Unsupported`]; anything else passes through.
    pub(crate) fn refusal(
        &self,
        answer: (Response, Vec<f32>),
    ) -> Result<(Response, Vec<f32>), CppError> {
        match answer {
            (Response::Error { message, log }, _) => Err(CppError::Request {
                backend: self.backend,
                message,
                log,
            }),
            (Response::Unsupported { request }, _) => Err(CppError::Unsupported {
                backend: self.backend,
                request,
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
                capture: Vec::new(),
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
                capture: Vec::new(),
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

    /// How the reference's library was built (version, compiler, SIMD flags) and its
    /// system info.
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange.
    pub fn build_info(&mut self) -> Result<BuildFacts, CppError> {
        match self.ask(&Request::BuildInfo, "build_info")? {
            (Response::Build(b), _) => Ok(*b),
            (other, _) => Err(self.unexpected("build_info", &other)),
        }
    }

    /// ggml's tensor-type table as the reference's library knows it.
    ///
    /// # Errors
    /// [`CppError::Unsupported`] for a backend without it; any [`CppError`] from the exchange.
    pub fn type_traits(&mut self) -> Result<Vec<TypeTrait>, CppError> {
        match self.ask(&Request::TypeTraits, "type_traits")? {
            (Response::TypeTraits { types }, _) => Ok(types),
            (other, _) => Err(self.unexpected("type_traits", &other)),
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

    /// llama.cpp's sampler chain on given logits: accept `accepted`, then for each row of
    /// `rows` (whole rows of [`Session::n_vocab`] logits) sample and accept. Returns the
    /// chosen tokens and the chain's seed.
    ///
    /// # Errors
    /// [`CppError::Unsupported`] when the reference has no sampler chain (bitnet.cpp);
    /// [`CppError::Request`] when it refuses the parameters; any [`CppError`] from the
    /// exchange.
    pub fn sample(
        &mut self,
        chain: &SamplerChainSpec,
        accepted: &[i32],
        rows: &[f32],
    ) -> Result<(Vec<i32>, u32), CppError> {
        let n_rows = rows.len().checked_div(self.n_vocab()).unwrap_or(0) as u32;
        let r = Request::Sample {
            chain: chain.clone(),
            accepted: accepted.to_vec(),
            n_rows,
        };
        match self.ask_with(&r, rows, "sample")? {
            (Response::Sampled { tokens, seed }, _) => Ok((tokens, seed)),
            (other, _) => Err(self.unexpected("sample", &other)),
        }
    }

    /// Generate as `llama-completion` does (see [`Request::Generate`]): the sampled tokens,
    /// an end-of-generation token included, and the chain's seed.
    ///
    /// # Errors
    /// [`CppError::Unsupported`] when the reference has no sampler chain (bitnet.cpp); any
    /// [`CppError`] from the exchange.
    pub fn generate(
        &mut self,
        chain: &SamplerChainSpec,
        prompt: &[i32],
        n_predict: u32,
    ) -> Result<(Vec<i32>, u32), CppError> {
        let r = Request::Generate {
            chain: chain.clone(),
            prompt: prompt.to_vec(),
            n_predict,
        };
        match self.ask(&r, "generate")? {
            (Response::Sampled { tokens, seed }, _) => Ok((tokens, seed)),
            (other, _) => Err(self.unexpected("generate", &other)),
        }
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
