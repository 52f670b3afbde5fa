//! The protocol between the client and a reference process.
//!
//! The reference reads requests on its stdin and writes responses on its stdout; everything
//! else it prints goes to stderr. Every message is one frame:
//!
//! ```text
//! u32 LE  header length H
//! H bytes header: one JSON object (a Request or a Response)
//! u64 LE  payload length P (bytes, a multiple of 4)
//! P bytes payload: raw little-endian f32 (logits), empty for most messages
//! ```
//!
//! JSON keeps the small messages readable in logs; logits travel raw, so 64 positions of a
//! 128k vocabulary (32 MiB) cross the pipe in milliseconds. On start-up the reference sends a
//! [`Response::Hello`] frame, which the client checks against [`PROTOCOL_VERSION`].

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Bumped whenever a message changes shape. Client and reference must agree exactly.
pub const PROTOCOL_VERSION: u32 = 2;

/// Headers larger than this are refused: a corrupted stream must not allocate gigabytes.
const MAX_HEADER: u32 = 64 << 20;
/// Payloads larger than this are refused (8 GiB of logits is not a real response).
const MAX_PAYLOAD: u64 = 8 << 30;

/// One message of a conversation for [`Request::ApplyChatTemplate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// What the client asks of a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Load a model (once per process). `n_ctx` 0 means the model's own context length.
    Load {
        /// Path of the GGUF file (already validated by the client).
        model_path: String,
        /// Context size; also the batch size, so one batch covers any prompt that fits.
        n_ctx: u32,
        /// Threads for evaluation; 0 = all available.
        n_threads: u32,
        /// Load only the vocabulary (tokenization; no evaluation possible).
        vocab_only: bool,
    },
    /// Facts about the vocabulary.
    VocabInfo,
    /// `llama_tokenize(text, add_special, parse_special)`.
    Tokenize {
        /// Text to tokenize.
        text: String,
        /// Add BOS/EOS as the vocabulary says (llama.cpp's `add_special`).
        add_special: bool,
        /// Treat special-token text as special tokens.
        parse_special: bool,
    },
    /// `llama_token_to_piece`.
    TokenToPiece {
        /// Token id.
        token: i32,
        /// Render special/control tokens as their text.
        special: bool,
    },
    /// Clear the KV cache and evaluate `tokens` from position 0 in one batch; logits for the
    /// positions in `outputs` (llama.cpp's per-token logits flags), or for every position.
    Eval {
        /// Token ids.
        tokens: Vec<i32>,
        /// Indices into `tokens`, strictly ascending, whose logits come back; absent = all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outputs: Option<Vec<u32>>,
    },
    /// Evaluate one more token after the previous ones; logits for it.
    DecodeNext {
        /// Token id.
        token: i32,
    },
    /// Clear the KV cache.
    Reset,
    /// `llama_chat_apply_template` with the model's own template (or `template`).
    ApplyChatTemplate {
        /// Conversation so far.
        messages: Vec<ChatMessage>,
        /// Append the assistant turn opener.
        add_assistant: bool,
        /// Template to use instead of the model's `tokenizer.chat_template`.
        template: Option<String>,
    },
    /// Backend name, library version and `llama_print_system_info`.
    BuildInfo,
    /// Timed runs measured as llama-bench measures (`tools/llama-bench`): a warm-up, then
    /// `repetitions` prompt runs (cache cleared, `prompt` decoded in one batch with the last
    /// position's logits only), a one-token warm-up, then `repetitions` generation runs
    /// (cache cleared, `gen` decoded one token at a time, each with its logits).
    Bench {
        /// Prompt token ids (empty: no prompt runs).
        prompt: Vec<i32>,
        /// Token ids decoded one at a time (empty: no generation runs).
        gen: Vec<i32>,
        /// Timed runs of each kind.
        repetitions: u32,
    },
    /// End the process cleanly.
    Shutdown,
}

/// Facts about the loaded vocabulary, as the reference sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabFacts {
    /// Number of tokens.
    pub n_vocab: u32,
    /// BOS id (-1 when none).
    pub bos: i32,
    /// EOS id (-1 when none).
    pub eos: i32,
    /// EOT id (-1 when none).
    pub eot: i32,
    /// Whether `add_special` adds BOS (llama.cpp's derived default, not just the GGUF key).
    pub add_bos: bool,
    /// Whether `add_special` adds EOS.
    pub add_eos: bool,
    /// `spm`, `bpe`, `wpm`, `ugm`, `rwkv`, `plamo2` or `none`.
    pub vocab_type: String,
}

/// Build facts of a reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFacts {
    /// `llama` or `bitnet`.
    pub backend: String,
    /// Which library, at which version (`llama-cpp-sys-2 =0.1.161`).
    pub library: String,
    /// `llama_print_system_info()`.
    pub system_info: String,
}

/// What a reference answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Sent once at start-up.
    Hello {
        /// The reference's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// `llama` or `bitnet`.
        backend: String,
    },
    /// The model is loaded.
    Loaded {
        /// Vocabulary size (logit row length).
        n_vocab: u32,
        /// Context size in effect (0 for a vocabulary-only load).
        n_ctx: u32,
    },
    /// Answer to [`Request::VocabInfo`].
    Vocab(VocabFacts),
    /// Answer to [`Request::Tokenize`].
    Tokens {
        /// Token ids.
        tokens: Vec<i32>,
    },
    /// Answer to [`Request::TokenToPiece`]: raw bytes (a byte token may not be UTF-8).
    Piece {
        /// The piece's bytes.
        bytes: Vec<u8>,
    },
    /// Logits in the payload: `n_tokens` rows of `n_vocab` f32.
    Logits {
        /// Rows.
        n_tokens: u32,
        /// Row length.
        n_vocab: u32,
    },
    /// Answer to [`Request::ApplyChatTemplate`].
    Text {
        /// The formatted conversation.
        text: String,
    },
    /// Answer to [`Request::BuildInfo`].
    Build(BuildFacts),
    /// Answer to [`Request::Bench`]: the seconds of each timed run.
    BenchTimes {
        /// One entry per prompt run.
        prompt_seconds: Vec<f64>,
        /// One entry per generation run.
        gen_seconds: Vec<f64>,
    },
    /// A request without a value to return succeeded.
    Done,
    /// The request failed; the reference is still usable unless it says otherwise.
    Error {
        /// What went wrong.
        message: String,
        /// The last lines of llama.cpp's log.
        log: Vec<String>,
    },
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Write one frame.
///
/// # Errors
/// Any I/O error from `w`.
pub fn write_frame<W: Write, T: Serialize>(
    w: &mut W,
    header: &T,
    payload: &[f32],
) -> io::Result<()> {
    let json = serde_json::to_vec(header).map_err(|e| invalid(e.to_string()))?;
    w.write_all(&(json.len() as u32).to_le_bytes())?;
    w.write_all(&json)?;
    w.write_all(&((payload.len() * 4) as u64).to_le_bytes())?;
    if cfg!(target_endian = "little") {
        w.write_all(bytemuck::cast_slice(payload))?;
    } else {
        for v in payload {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    w.flush()
}

/// Read one frame; `Ok(None)` on a clean end of stream before the frame starts.
///
/// # Errors
/// I/O errors, a truncated frame, oversized lengths or a header that is not a `T`.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<(T, Vec<f32>)>> {
    let mut len = [0u8; 4];
    match r.read(&mut len[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut len[1..])?,
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(invalid(format!(
            "frame header of {len} bytes exceeds the limit"
        )));
    }
    let mut json = Vec::new();
    read_growing(r, &mut json, len as usize)?;
    let header: T = serde_json::from_slice(&json).map_err(|e| {
        invalid(format!(
            "bad frame header ({e}): {}",
            String::from_utf8_lossy(&json[..json.len().min(200)])
        ))
    })?;
    let mut plen = [0u8; 8];
    r.read_exact(&mut plen)?;
    let plen = u64::from_le_bytes(plen);
    if plen > MAX_PAYLOAD || plen % 4 != 0 {
        return Err(invalid(format!("bad payload length {plen}")));
    }
    let mut payload: Vec<f32> = Vec::new();
    read_growing(r, &mut payload, (plen / 4) as usize)?;
    if cfg!(target_endian = "big") {
        for v in &mut payload {
            *v = f32::from_bits(u32::from_le(v.to_bits()));
        }
    }
    Ok(Some((header, payload)))
}

/// Read exactly `n` elements into `out`, growing it by at most [`READ_CHUNK`] bytes at a
/// time: the memory follows the bytes that actually arrive, so a corrupted or hostile
/// length (up to the limits above) on a short stream fails with `UnexpectedEof` after
/// allocating what was sent, not gigabytes up front.
fn read_growing<R: Read, T: bytemuck::Pod + Default>(
    r: &mut R,
    out: &mut Vec<T>,
    n: usize,
) -> io::Result<()> {
    let step = (READ_CHUNK / std::mem::size_of::<T>()).max(1);
    out.clear();
    while out.len() < n {
        let start = out.len();
        let end = (start + step).min(n);
        out.resize(end, T::default());
        r.read_exact(bytemuck::cast_slice_mut(&mut out[start..end]))?;
    }
    Ok(())
}

/// Largest step by which [`read_frame`] grows a buffer before the bytes for it have arrived.
const READ_CHUNK: usize = 16 << 20;

/// A C++ library behind the protocol: each reference process implements this over its own
/// FFI, and [`serve`] does the rest (framing, dispatch, errors), identically for both.
pub trait Engine {
    /// `llama` or `bitnet`.
    fn backend(&self) -> &'static str;
    /// Load the model.
    ///
    /// # Errors
    /// The reason, for the client.
    fn load(
        &mut self,
        model_path: &str,
        n_ctx: u32,
        n_threads: u32,
        vocab_only: bool,
    ) -> Result<(u32, u32), String>;
    /// Vocabulary facts.
    ///
    /// # Errors
    /// The reason, for the client.
    fn vocab(&mut self) -> Result<VocabFacts, String>;
    /// Tokenize.
    ///
    /// # Errors
    /// The reason, for the client.
    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<i32>, String>;
    /// One token's piece.
    ///
    /// # Errors
    /// The reason, for the client.
    fn token_to_piece(&mut self, token: i32, special: bool) -> Result<Vec<u8>, String>;
    /// Clear the cache, evaluate `tokens` in one batch with the logits flag set on the
    /// positions `outputs` (ascending indices, already validated), return those rows.
    ///
    /// # Errors
    /// The reason, for the client.
    fn eval(&mut self, tokens: &[i32], outputs: &[u32], out: &mut Vec<f32>) -> Result<(), String>;
    /// Evaluate one more token; one row of logits.
    ///
    /// # Errors
    /// The reason, for the client.
    fn decode_next(&mut self, token: i32, out: &mut Vec<f32>) -> Result<(), String>;
    /// Clear the cache.
    ///
    /// # Errors
    /// The reason, for the client.
    fn reset(&mut self) -> Result<(), String>;
    /// Format a conversation with a chat template.
    ///
    /// # Errors
    /// The reason, for the client.
    fn apply_chat_template(
        &mut self,
        messages: &[ChatMessage],
        add_assistant: bool,
        template: Option<&str>,
    ) -> Result<String, String>;
    /// Build facts.
    fn build(&mut self) -> BuildFacts;
    /// The last lines of the library's log, attached to errors.
    fn log_tail(&self) -> Vec<String>;
    /// Vocabulary size of the loaded model (0 before load).
    fn n_vocab(&self) -> u32;
}

/// Serve requests from `input` on `output` until shutdown or end of input.
///
/// # Errors
/// I/O errors on the pipes (the client is gone) or an undecodable request.
pub fn serve<E: Engine, R: Read, W: Write>(
    engine: &mut E,
    input: &mut R,
    output: &mut W,
) -> io::Result<()> {
    write_frame(
        output,
        &Response::Hello {
            protocol_version: PROTOCOL_VERSION,
            backend: engine.backend().to_string(),
        },
        &[],
    )?;
    let mut logits = Vec::new();
    while let Some((request, _)) = read_frame::<_, Request>(input)? {
        let fail = |e: &E, message: String| Response::Error {
            message,
            log: e.log_tail(),
        };
        let mut payload: &[f32] = &[];
        let response = match request {
            Request::Shutdown => {
                write_frame(output, &Response::Done, &[])?;
                return Ok(());
            }
            Request::Load {
                model_path,
                n_ctx,
                n_threads,
                vocab_only,
            } => match engine.load(&model_path, n_ctx, n_threads, vocab_only) {
                Ok((n_vocab, n_ctx)) => Response::Loaded { n_vocab, n_ctx },
                Err(m) => fail(engine, m),
            },
            Request::VocabInfo => match engine.vocab() {
                Ok(v) => Response::Vocab(v),
                Err(m) => fail(engine, m),
            },
            Request::Tokenize {
                text,
                add_special,
                parse_special,
            } => match engine.tokenize(&text, add_special, parse_special) {
                Ok(tokens) => Response::Tokens { tokens },
                Err(m) => fail(engine, m),
            },
            Request::TokenToPiece { token, special } => match engine.token_to_piece(token, special)
            {
                Ok(bytes) => Response::Piece { bytes },
                Err(m) => fail(engine, m),
            },
            Request::Eval { tokens, outputs } => {
                let rows = output_rows(tokens.len(), outputs);
                match rows.and_then(|rows| {
                    engine.eval(&tokens, &rows, &mut logits)?;
                    Ok(rows.len())
                }) {
                    Ok(n) => {
                        payload = &logits;
                        Response::Logits {
                            n_tokens: n as u32,
                            n_vocab: engine.n_vocab(),
                        }
                    }
                    Err(m) => fail(engine, m),
                }
            }
            Request::DecodeNext { token } => match engine.decode_next(token, &mut logits) {
                Ok(()) => {
                    payload = &logits;
                    Response::Logits {
                        n_tokens: 1,
                        n_vocab: engine.n_vocab(),
                    }
                }
                Err(m) => fail(engine, m),
            },
            Request::Reset => match engine.reset() {
                Ok(()) => Response::Done,
                Err(m) => fail(engine, m),
            },
            Request::ApplyChatTemplate {
                messages,
                add_assistant,
                template,
            } => match engine.apply_chat_template(&messages, add_assistant, template.as_deref()) {
                Ok(text) => Response::Text { text },
                Err(m) => fail(engine, m),
            },
            Request::BuildInfo => Response::Build(engine.build()),
            Request::Bench {
                prompt,
                gen,
                repetitions,
            } => match bench(engine, &prompt, &gen, repetitions, &mut logits) {
                Ok((prompt_seconds, gen_seconds)) => Response::BenchTimes {
                    prompt_seconds,
                    gen_seconds,
                },
                Err(m) => fail(engine, m),
            },
        };
        write_frame(output, &response, payload)?;
    }
    Ok(())
}

/// The output rows of an [`Request::Eval`]: `outputs` checked against `n` tokens, or all.
fn output_rows(n: usize, outputs: Option<Vec<u32>>) -> Result<Vec<u32>, String> {
    let Some(rows) = outputs else {
        return Ok((0..n as u32).collect());
    };
    if !rows.windows(2).all(|w| w[0] < w[1]) || rows.last().is_some_and(|&i| i as usize >= n) {
        return Err(format!(
            "output positions must be strictly ascending indices below {n}"
        ));
    }
    Ok(rows)
}

/// llama-bench's method inside the reference process (so no pipe transfer is timed): a
/// warm-up run, then each timed run from an empty cache; prompt runs output the last
/// position's logits only, generation runs decode one token at a time.
fn bench<E: Engine>(
    engine: &mut E,
    prompt: &[i32],
    gen: &[i32],
    repetitions: u32,
    logits: &mut Vec<f32>,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut prompt_seconds = Vec::new();
    if let Some(last) = prompt.len().checked_sub(1) {
        let last = [last as u32];
        engine.eval(prompt, &last, logits)?;
        for _ in 0..repetitions {
            let t = std::time::Instant::now();
            engine.eval(prompt, &last, logits)?;
            prompt_seconds.push(t.elapsed().as_secs_f64());
        }
    }
    let mut gen_seconds = Vec::new();
    if let Some(&first) = gen.first() {
        engine.reset()?;
        engine.decode_next(first, logits)?;
        for _ in 0..repetitions {
            engine.reset()?;
            let t = std::time::Instant::now();
            for &token in gen {
                engine.decode_next(token, logits)?;
            }
            gen_seconds.push(t.elapsed().as_secs_f64());
        }
    }
    Ok((prompt_seconds, gen_seconds))
}

/// Index of the largest value (the first on ties), as greedy sampling picks it.
pub fn argmax(row: &[f32]) -> i32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_payload() {
        let mut buf = Vec::new();
        let logits = vec![1.5f32, -2.0, f32::MIN_POSITIVE, 3.25];
        write_frame(
            &mut buf,
            &Response::Logits {
                n_tokens: 2,
                n_vocab: 2,
            },
            &logits,
        )
        .unwrap();
        write_frame(
            &mut buf,
            &Request::Tokenize {
                text: "a\u{0}b ✓".into(),
                add_special: true,
                parse_special: false,
            },
            &[],
        )
        .unwrap();
        let mut r = &buf[..];
        let (h, p): (Response, _) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(
            h,
            Response::Logits {
                n_tokens: 2,
                n_vocab: 2
            }
        );
        assert_eq!(p, logits);
        let (h, p): (Request, _) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(
            h,
            Request::Tokenize {
                text: "a\u{0}b ✓".into(),
                add_special: true,
                parse_special: false
            }
        );
        assert!(p.is_empty());
        assert!(read_frame::<_, Request>(&mut r).unwrap().is_none());
    }

    #[test]
    fn corrupt_streams_are_errors_not_allocations() {
        let mut r = &[0xff, 0xff, 0xff, 0x7f][..];
        assert!(read_frame::<_, Request>(&mut r).is_err());
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Reset, &[1.0]).unwrap();
        buf.truncate(buf.len() - 2);
        assert!(read_frame::<_, Request>(&mut &buf[..]).is_err());
        let mut r = &b"\x05\x00\x00\x00{bad}\x00\x00\x00\x00\x00\x00\x00\x00"[..];
        assert!(read_frame::<_, Request>(&mut r).is_err());
        // The largest payload length allowed, on a stream that then ends: an error, after
        // allocating one chunk, not 8 GiB up front.
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Reset, &[]).unwrap();
        let n = buf.len();
        buf[n - 8..].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
        buf.extend_from_slice(&[0; 12]);
        let err = read_frame::<_, Request>(&mut &buf[..]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
        assert_eq!(argmax(&[5.0]), 0);
    }
}

/// Helpers for the reference processes themselves.
pub mod server {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Lines of the C++ library's log kept for attaching to errors.
    const LOG_LINES: usize = 64;

    static LOG: Mutex<(VecDeque<String>, String)> = Mutex::new((VecDeque::new(), String::new()));

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
}
