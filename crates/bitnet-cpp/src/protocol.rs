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
//! Requests may carry a payload too: [`Request::Sample`] sends the rows of logits to sample
//! from.
//!
//! JSON keeps the small messages readable in logs; logits travel raw, so 64 positions of a
//! 128k vocabulary (32 MiB) cross the pipe in milliseconds. On start-up the reference sends a
//! [`Response::Hello`] frame, which the client checks against [`PROTOCOL_VERSION`].
//!
//! Most requests get exactly one answer. [`Request::Quantize`] is the exception: the
//! reference streams [`Response::QuantizeProgress`] frames (one per tensor) before its final
//! answer, so the client can show progress on a model that takes minutes.
//!
//! File paths cross as [`WirePath`]: bytes, because a Unix file name need not be UTF-8 and a
//! lossy conversion would make the reference open a different (usually missing) file.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use crate::build_facts::{CompiledFacts, Compiler, LibraryVersion};
use crate::run::{EffectiveConfig, RunConfig};
pub use capture::{Capture, TensorFrame};
pub use engine::{serve, Engine};
pub use facts::{FactSource, ModelFacts, Sourced};
pub use wire_path::WirePath;

pub mod callback;
pub mod capture;
mod engine;
pub mod facts;
pub mod server;
mod wire_path;

/// Bumped whenever a message changes shape. Client and reference must agree exactly.
///
/// 2: [`Request::Eval`] carries the output positions; [`Request::Bench`] measures as
/// llama-bench does. 3: [`Request::Sample`] and [`Request::Generate`] (llama.cpp's sampler
/// chain). 4: paths as [`WirePath`] bytes; [`Request::Quantize`] with streamed progress;
/// [`Request::TypeTraits`]; [`Response::Unsupported`] for every request a backend cannot
/// serve (the quantizer, the type table, the sampler chain); typed build facts in
/// [`BuildFacts`]. 5 (two branches, each on its own): [`Request::Load`] carried the run
/// configuration, and [`Request::Eval`] could capture tensors. 6: both — [`Request::Load`]
/// carries the run configuration ([`RunConfig`]: KV cache types, flash attention, micro-batch
/// size, threads) and [`Response::Loaded`] answers with [`LoadFacts`], the configuration as the
/// library resolved it; [`Request::Eval`] may capture intermediate tensors (streamed as
/// [`Response::Tensor`] frames before the logits); [`Request::ModelFacts`] asks for the
/// reference's view of the model's configuration.
pub const PROTOCOL_VERSION: u32 = 6;

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

/// llama.cpp's sampling parameters, as `common_sampler_init` reads them from
/// `common_params_sampling`: the reference builds exactly the chain `llama-completion` builds
/// (the vocabulary's suppress tokens as a −∞ logit bias, `samplers` in order, then `dist`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerChainSpec {
    /// Seed of `dist` and `xtc` (`0xFFFFFFFF`: random).
    pub seed: u32,
    /// Canonical sampler names in chain order (`penalties`, `dry`, `top_n_sigma`, `top_k`,
    /// `typ_p`, `top_p`, `min_p`, `xtc`, `temperature`).
    pub samplers: Vec<String>,
    /// `top_k`.
    pub top_k: i32,
    /// `top_p`.
    pub top_p: f32,
    /// `min_p`.
    pub min_p: f32,
    /// `xtc_probability`.
    pub xtc_probability: f32,
    /// `xtc_threshold`.
    pub xtc_threshold: f32,
    /// `typ_p`.
    pub typical_p: f32,
    /// `temp`.
    pub temp: f32,
    /// `dynatemp_range`.
    pub dynatemp_range: f32,
    /// `dynatemp_exponent`.
    pub dynatemp_exponent: f32,
    /// `penalty_last_n`.
    pub penalty_last_n: i32,
    /// `penalty_repeat`.
    pub penalty_repeat: f32,
    /// `penalty_freq`.
    pub penalty_freq: f32,
    /// `penalty_present`.
    pub penalty_present: f32,
    /// `dry_multiplier`.
    pub dry_multiplier: f32,
    /// `dry_base`.
    pub dry_base: f32,
    /// `dry_allowed_length`.
    pub dry_allowed_length: i32,
    /// `dry_penalty_last_n`.
    pub dry_penalty_last_n: i32,
    /// `dry_sequence_breakers`.
    pub dry_sequence_breakers: Vec<String>,
    /// `top_n_sigma`.
    pub top_n_sigma: f32,
    /// `min_keep`.
    pub min_keep: u32,
}

/// What the client asks of a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Load a model (once per process). `n_ctx` 0 means the model's own context length.
    Load {
        /// Path of the GGUF file (already validated by the client).
        model_path: WirePath,
        /// Context size; also the batch size, so one `llama_decode` takes any prompt that
        /// fits (split into micro-batches of `run.n_ubatch`).
        n_ctx: u32,
        /// Load only the vocabulary (tokenization; no evaluation possible).
        vocab_only: bool,
        /// KV cache types, flash attention, micro-batch size, threads (0 = all available).
        run: RunConfig,
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
    /// With `capture`, the intermediate tensors of those graph names come first, one
    /// [`Response::Tensor`] frame each, in graph order ([`capture`]).
    Eval {
        /// Token ids.
        tokens: Vec<i32>,
        /// Indices into `tokens`, strictly ascending, whose logits come back; absent = all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outputs: Option<Vec<u32>>,
        /// llama.cpp graph base names to capture (`attn_norm`, `kq_soft_max`,
        /// `result_output`): a node is sent when its name is one of them, alone or followed
        /// by `-<layer>`. Empty: nothing is captured.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        capture: Vec<String>,
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
    /// How the library was built (version, compiler, SIMD flags) and
    /// `llama_print_system_info`.
    BuildInfo,
    /// ggml's table of tensor types as the library knows them.
    TypeTraits,
    /// Run the library's own quantizer (`llama_model_quantize`) on a file; needs no loaded
    /// model. Answered by [`Response::QuantizeProgress`] frames, then [`Response::Quantized`].
    Quantize(QuantizeRequest),
    /// The reference's view of the loaded model's configuration ([`ModelFacts`]); evaluates
    /// one token (then clears the cache) to read the graph's op parameters.
    ModelFacts,
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
    /// Run llama.cpp's sampler chain on given logits: build the chain, accept `accepted`
    /// (the prompt), then for each of the `n_rows` rows of logits in the payload (`n_vocab`
    /// each) apply the chain, take its pick and accept it — `llama_sampler_sample` on logits
    /// that come from the client instead of a decode. Answer: [`Response::Sampled`].
    Sample {
        /// The chain.
        chain: SamplerChainSpec,
        /// Tokens the chain has already seen (penalties and DRY remember them).
        accepted: Vec<i32>,
        /// Rows of logits in the payload.
        n_rows: u32,
    },
    /// Generate as `llama-completion` does: clear the KV cache, decode `prompt` (logits for
    /// its last token only), build the chain and accept the prompt, then up to `n_predict`
    /// times `llama_sampler_sample` and decode the token, stopping after an end-of-generation
    /// token. Answer: [`Response::Sampled`] (the end-of-generation token included).
    Generate {
        /// The chain.
        chain: SamplerChainSpec,
        /// Prompt token ids.
        prompt: Vec<i32>,
        /// Most tokens to sample.
        n_predict: u32,
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

/// What a reference reports once a model is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFacts {
    /// Vocabulary size (logit row length).
    pub n_vocab: u32,
    /// Context size in effect (0 for a vocabulary-only load).
    pub n_ctx: u32,
    /// Tokens per `llama_decode` call (0 for a vocabulary-only load).
    pub n_batch: u32,
    /// The run configuration as the library resolved it (none for a vocabulary-only load).
    pub config: Option<EffectiveConfig>,
}

/// Build facts of a reference: what it is, how it was compiled, what the CPU offers.
///
/// Everything in `compiled` is recorded when the reference is built (its build script reads
/// the C++ library's CMake configuration; see [`crate::build_facts`]); `system_info` is asked
/// of the library at run time. On the wire `compiled`'s fields sit beside the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFacts {
    /// `llama` or `bitnet`.
    pub backend: String,
    /// Which library, through which crate (`llama.cpp via crates.io llama-cpp-sys-2 =0.1.161 (CPU)`).
    pub library: String,
    /// Versions, compiler, build type, the CPU kernels' flags and SIMD extensions, options.
    #[serde(flatten)]
    pub compiled: CompiledFacts,
    /// `llama_print_system_info()`: what the running CPU offers and the library uses.
    pub system_info: String,
}

impl BuildFacts {
    /// A reference's facts: what its build script recorded (`compiled_json`, the
    /// `build_facts.json` of [`CompiledFacts::record_for_build_script`]), the library's name
    /// and `llama_print_system_info()`.
    pub fn from_recorded(
        compiled_json: &str,
        backend: &str,
        library: &str,
        system_info: String,
    ) -> BuildFacts {
        // The build script wrote and checked the JSON; an unreadable one (impossible) would
        // show as empty fields, which the tests catch.
        let compiled = CompiledFacts::from_json(compiled_json).unwrap_or_default();
        BuildFacts {
            backend: backend.to_string(),
            library: format!(
                "{library} via crates.io {} ={} (CPU)",
                compiled.version.crate_name, compiled.version.crate_version
            ),
            compiled,
            system_info,
        }
    }

    /// One line for reports: version, compiler, build type and the kernels' SIMD flags.
    pub fn summary(&self) -> String {
        let c = &self.compiled;
        format!(
            "{}; {} {} {}; CPU kernels built with {} ({})",
            c.version,
            c.compiler.id,
            c.compiler.version,
            c.build_type,
            c.cpu_flags.join(" "),
            c.simd.join(", ")
        )
    }
}

/// One entry of ggml's type table ([`Request::TypeTraits`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeTrait {
    /// `ggml_type` id.
    pub id: u32,
    /// `ggml_type_name` (`q4_K`, `tq2_0`, …).
    pub name: String,
    /// Elements per block (`ggml_blck_size`).
    pub block_size: u64,
    /// Bytes per block (`ggml_type_size`).
    pub type_size: u64,
}

/// What to quantize, as `llama-quantize IN OUT FTYPE` with its default parameters
/// (`llama_model_quantize_default_params()`: no importance matrix, no overrides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizeRequest {
    /// The model to read.
    pub input: WirePath,
    /// Where to write the result (the client passes a temporary name and renames it).
    pub output: WirePath,
    /// `llama_ftype` id (`LLAMA_FTYPE_MOSTLY_Q4_K_M` = 15, …).
    pub ftype: u32,
    /// Allow requantizing tensors that are already quantized (`--allow-requantize`).
    pub allow_requantize: bool,
    /// Threads; 0 = llama.cpp's default (all hardware threads).
    pub n_threads: u32,
}

/// One tensor written by the quantizer, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizeProgress {
    /// 1-based index of the tensor.
    pub index: u32,
    /// Number of tensors in the model.
    pub total: u32,
    /// Tensor name.
    pub tensor: String,
    /// Its type in the input (`f32`, `q4_1`).
    pub from: String,
    /// Its type in the output (equal to `from` when copied unchanged).
    pub to: String,
}

/// A tensor whose row length does not fit the mix's type, so llama.cpp chose another
/// (`llama-quant.cpp`, `tensor_type_fallback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizeFallback {
    /// Tensor name.
    pub tensor: String,
    /// The type the mix asked for.
    pub wanted: String,
    /// The type used instead.
    pub used: String,
}

/// The quantizer finished and wrote the output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizeReport {
    /// Tensors written.
    pub tensors: u32,
    /// Tensors that needed a fallback type.
    pub fallbacks: Vec<QuantizeFallback>,
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
    Loaded(LoadFacts),
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
    /// Answer to [`Request::BuildInfo`] (boxed: it is much larger than the other answers).
    Build(Box<BuildFacts>),
    /// Answer to [`Request::TypeTraits`]: every type id the library knows (retired ids
    /// left out).
    TypeTraits {
        /// The table, by id.
        types: Vec<TypeTrait>,
    },
    /// One tensor of a [`Request::Quantize`] is done; more frames follow.
    QuantizeProgress(QuantizeProgress),
    /// [`Request::Quantize`] succeeded.
    Quantized(QuantizeReport),
    /// This backend cannot do what was asked (bitnet.cpp's reference has no quantizer, type
    /// table or sampler chain).
    Unsupported {
        /// The request, by name (`quantize`, `type_traits`, `sample`, `generate`).
        request: String,
    },
    /// One captured tensor of a capturing [`Request::Eval`]; its values in the payload.
    Tensor(TensorFrame),
    /// Answer to [`Request::ModelFacts`].
    Facts(Box<ModelFacts>),
    /// Answer to [`Request::Bench`]: the seconds of each timed run.
    BenchTimes {
        /// One entry per prompt run.
        prompt_seconds: Vec<f64>,
        /// One entry per generation run.
        gen_seconds: Vec<f64>,
    },
    /// Answer to [`Request::Sample`] and [`Request::Generate`].
    Sampled {
        /// The chosen tokens, in order.
        tokens: Vec<i32>,
        /// `llama_sampler_get_seed` of the chain (the seed actually used).
        seed: u32,
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
    use std::path::Path;

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

    /// The capture and facts messages (protocol 6; 5 on the `locate` branch) round-trip; an
    /// `Eval` without a capture list reads as one capturing nothing.
    #[test]
    fn capture_and_facts_messages_round_trip() {
        let eval = Request::Eval {
            tokens: vec![1, 2],
            outputs: None,
            capture: vec!["attn_norm".into(), "result_output".into()],
        };
        let frame = TensorFrame {
            name: "attn_norm-0".into(),
            op: "MUL".into(),
            dtype: "f16".into(),
            ne: [2, 1, 1, 1],
            readable: true,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &eval, &[]).unwrap();
        write_frame(&mut buf, &Response::Tensor(frame.clone()), &[0.5, -1.0]).unwrap();
        write_frame(&mut buf, &Request::ModelFacts, &[]).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<_, Request>(&mut r).unwrap().unwrap().0, eval);
        let (t, values): (Response, _) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((t, values), (Response::Tensor(frame), vec![0.5, -1.0]));
        assert_eq!(
            read_frame::<_, Request>(&mut r).unwrap().unwrap().0,
            Request::ModelFacts
        );
        let old: Request = serde_json::from_str(r#"{"op":"eval","tokens":[3]}"#).unwrap();
        assert_eq!(
            old,
            Request::Eval {
                tokens: vec![3],
                outputs: None,
                capture: vec![]
            }
        );
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
    fn quantize_requests_and_streamed_answers_round_trip() {
        let mut buf = Vec::new();
        let q = Request::Quantize(QuantizeRequest {
            input: WirePath::new(Path::new("in.gguf")).unwrap(),
            output: WirePath::new(Path::new("out.gguf")).unwrap(),
            ftype: 15,
            allow_requantize: true,
            n_threads: 2,
        });
        let answers = [
            Response::QuantizeProgress(QuantizeProgress {
                index: 1,
                total: 2,
                tensor: "token_embd.weight".into(),
                from: "f32".into(),
                to: "q4_K".into(),
            }),
            Response::Quantized(QuantizeReport {
                tensors: 2,
                fallbacks: vec![QuantizeFallback {
                    tensor: "x".into(),
                    wanted: "q4_K".into(),
                    used: "q5_0".into(),
                }],
            }),
            Response::Unsupported {
                request: "quantize".into(),
            },
        ];
        write_frame(&mut buf, &q, &[]).unwrap();
        for a in &answers {
            write_frame(&mut buf, a, &[]).unwrap();
        }
        let mut r = &buf[..];
        let (back, _): (Request, _) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(back, q);
        for a in &answers {
            let (back, _): (Response, _) = read_frame(&mut r).unwrap().unwrap();
            assert_eq!(&back, a);
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
        assert_eq!(argmax(&[5.0]), 0);
    }
}
