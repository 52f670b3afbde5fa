//! `bitnet-ref-llama`: upstream llama.cpp (crates.io llama-cpp-sys-2 =0.1.161, CPU) behind the
//! bitnet-cpp protocol. Reads requests on stdin, answers on stdout, logs on stderr.
//!
//! The context is configured by the client's `RunConfig` (KV cache types, flash attention,
//! micro-batch size, threads; llama.cpp's own defaults unless asked otherwise), with a batch as
//! large as the context so a prompt is one `llama_decode` with the logits flag on every
//! position. The configuration llama.cpp actually runs — `auto` flash attention resolved —
//! goes back in the `Loaded` answer. ggml's eval callback is installed at context creation
//! (`graph.rs`) and stays off unless a request captures tensors or probes the graph.
//!
//! It also runs llama.cpp's own quantizer (`llama_model_quantize`) as a protocol request rather
//! than as a subcommand of this binary: the client then gets the same typed errors, crash and
//! hang detection as for every other request, the quantizer's per-tensor log lines arrive as
//! progress frames, and bitnet.cpp's reference answers the same request with "unsupported".

mod graph;
mod quantize;
mod sampling;

use std::ffi::{c_char, c_void, CStr, CString};
use std::io::{BufReader, BufWriter};
use std::ptr;

use bitnet_cpp::protocol::callback::EvalCallback;
use bitnet_cpp::protocol::{
    self, server, BuildFacts, Capture, ChatMessage, Engine, LoadFacts, ModelFacts,
    QuantizeProgress, QuantizeReport, QuantizeRequest, SamplerChainSpec, TypeTrait, VocabFacts,
    WirePath,
};
use bitnet_cpp::{EffectiveConfig, FlashAttn, RunConfig};
use llama_cpp_sys_2 as sys;

/// What build.rs recorded about how llama-cpp-sys-2 built llama.cpp.
const COMPILED_FACTS: &str = include_str!(concat!(env!("OUT_DIR"), "/build_facts.json"));

struct Llama {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    vocab: *const sys::llama_vocab,
    n_vocab: u32,
    n_batch: u32,
    n_past: i32,
    /// The eval callback's state, at a stable address for the process's life (owned here,
    /// freed on drop).
    callback: *mut EvalCallback,
}

unsafe extern "C" fn on_log(_level: sys::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if !text.is_null() {
        server::log_text(&CStr::from_ptr(text).to_string_lossy());
    }
}

/// Whether a context created with `asked` runs flash attention, from llama.cpp's log of its
/// creation (`resolve_fused_ops` reports how `auto` was resolved).
fn flash_attention_in_effect(asked: FlashAttn, log: &[String]) -> Result<bool, String> {
    let said = |text: &str| log.iter().any(|line| line.contains(text));
    match asked {
        FlashAttn::On => Ok(true),
        FlashAttn::Off => Ok(false),
        FlashAttn::Auto => {
            if said("enabling flash_attn since it is required") || said("Flash Attention enabled") {
                Ok(true)
            } else if said("Flash Attention not supported, set to disabled") {
                Ok(false)
            } else {
                Err("llama.cpp did not report how it resolved flash attention `auto`".into())
            }
        }
    }
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| "text contains a NUL byte".to_string())
}

/// The path's bytes as C wants them (no UTF-8 requirement: a Unix file name is bytes).
fn path_cstring(p: &WirePath) -> Result<CString, String> {
    CString::new(p.as_bytes()).map_err(|_| format!("path {} contains a NUL byte", p.display()))
}

impl Llama {
    fn need_vocab(&self) -> Result<(), String> {
        if self.vocab.is_null() {
            return Err("no model loaded".into());
        }
        Ok(())
    }

    fn need_ctx(&self) -> Result<(), String> {
        if self.ctx.is_null() {
            return Err("the model was loaded vocabulary-only: evaluation is not possible".into());
        }
        Ok(())
    }

    fn check_tokens(&self, tokens: &[i32]) -> Result<(), String> {
        match tokens.iter().find(|&&t| t < 0 || t as u32 >= self.n_vocab) {
            Some(t) => Err(format!(
                "token id {t} is outside the vocabulary (0..{})",
                self.n_vocab
            )),
            None => Ok(()),
        }
    }

    /// Decode `tokens` at positions n_past.. in chunks of n_batch, with the logits flag on the
    /// entries `outputs` (ascending indices); their rows, in order.
    fn decode(
        &mut self,
        tokens: &[i32],
        outputs: &[u32],
        out: &mut Vec<f32>,
    ) -> Result<(), String> {
        self.need_ctx()?;
        self.check_tokens(tokens)?;
        let n_vocab = self.n_vocab as usize;
        out.clear();
        out.reserve(outputs.len() * n_vocab);
        let mut wanted = outputs.iter().map(|&i| i as usize).peekable();
        for (c, chunk) in tokens.chunks(self.n_batch as usize).enumerate() {
            let base = c * self.n_batch as usize;
            let flagged = |i: usize| outputs.binary_search(&((base + i) as u32)).is_ok();
            // SAFETY: the batch is allocated for chunk.len() entries with one sequence id each
            // and freed below; every pointer written stays within those allocations.
            unsafe {
                let mut batch = sys::llama_batch_init(chunk.len() as i32, 0, 1);
                for (i, &t) in chunk.iter().enumerate() {
                    *batch.token.add(i) = t;
                    *batch.pos.add(i) = self.n_past + i as i32;
                    *batch.n_seq_id.add(i) = 1;
                    *(*batch.seq_id.add(i)) = 0;
                    *batch.logits.add(i) = i8::from(flagged(i));
                }
                batch.n_tokens = chunk.len() as i32;
                let rc = sys::llama_decode(self.ctx, batch);
                sys::llama_batch_free(batch);
                if rc != 0 {
                    return Err(format!("llama_decode failed with code {rc}"));
                }
                while let Some(i) = wanted.next_if(|&i| i < base + chunk.len()) {
                    let i = i - base;
                    let row = sys::llama_get_logits_ith(self.ctx, i as i32);
                    if row.is_null() {
                        return Err(format!("llama_get_logits_ith({i}) returned no logits"));
                    }
                    out.extend_from_slice(std::slice::from_raw_parts(row, n_vocab));
                }
            }
            self.n_past += chunk.len() as i32;
        }
        Ok(())
    }

    /// [`Engine::sample`]: the chain on the client's rows of logits.
    fn sample_rows(
        &mut self,
        spec: &SamplerChainSpec,
        accepted: &[i32],
        rows: &[f32],
    ) -> Result<(Vec<i32>, u32), String> {
        self.need_vocab()?;
        self.check_tokens(accepted)?;
        // SAFETY: vocab belongs to the loaded model.
        let mut chain = unsafe { sampling::Chain::new(self.vocab, spec)? };
        for &t in accepted {
            chain.accept(t);
        }
        let tokens = rows
            .chunks(self.n_vocab as usize)
            .map(|row| chain.sample_row(row))
            .collect::<Result<Vec<i32>, String>>()?;
        Ok((tokens, chain.seed()))
    }

    /// [`Engine::generate`]: llama-completion's loop.
    fn generate_tokens(
        &mut self,
        spec: &SamplerChainSpec,
        prompt: &[i32],
        n_predict: u32,
    ) -> Result<(Vec<i32>, u32), String> {
        if prompt.is_empty() {
            return Err("nothing to evaluate: the prompt is empty".into());
        }
        self.reset()?;
        // As llama-completion decodes a prompt: logits for its last token only (the row also
        // stays in the context, where llama_sampler_sample reads it).
        let mut row = Vec::new();
        self.decode(prompt, &[prompt.len() as u32 - 1], &mut row)?;
        // SAFETY: vocab belongs to the loaded model.
        let mut chain = unsafe { sampling::Chain::new(self.vocab, spec)? };
        for &t in prompt {
            chain.accept(t);
        }
        let mut tokens = Vec::new();
        while tokens.len() < n_predict as usize {
            // SAFETY: the last decode asked for logits of its last token.
            let t = unsafe { chain.sample_context(self.ctx) };
            tokens.push(t);
            // SAFETY: vocab belongs to the loaded model.
            if unsafe { sys::llama_vocab_is_eog(self.vocab, t) }
                || tokens.len() == n_predict as usize
            {
                break;
            }
            self.decode(&[t], &[0], &mut row)?;
        }
        Ok((tokens, chain.seed()))
    }
}

impl Engine for Llama {
    fn backend(&self) -> &'static str {
        "llama"
    }

    fn load(
        &mut self,
        model_path: &WirePath,
        n_ctx: u32,
        vocab_only: bool,
        run: &RunConfig,
    ) -> Result<LoadFacts, String> {
        if !self.model.is_null() {
            return Err("a model is already loaded (one model per process)".into());
        }
        let path = path_cstring(model_path)?;
        // SAFETY: FFI calls with valid parameters; pointers are checked before use.
        unsafe {
            let mut mp = sys::llama_model_default_params();
            mp.vocab_only = vocab_only;
            mp.n_gpu_layers = 0;
            let model = sys::llama_model_load_from_file(path.as_ptr(), mp);
            if model.is_null() {
                return Err(format!("llama.cpp could not load {}", model_path.display()));
            }
            self.model = model;
            self.vocab = sys::llama_model_get_vocab(model);
            self.n_vocab = sys::llama_vocab_n_tokens(self.vocab) as u32;
            if vocab_only {
                return Ok(LoadFacts {
                    n_vocab: self.n_vocab,
                    n_ctx: 0,
                    n_batch: 0,
                    config: None,
                });
            }
            let mut cp = sys::llama_context_default_params();
            cp.n_ctx = n_ctx;
            let threads = run.resolved_threads() as i32;
            cp.n_threads = threads;
            cp.n_threads_batch = threads;
            cp.type_k = run.cache_type_k.ggml_id() as _;
            cp.type_v = run.cache_type_v.ggml_id() as _;
            cp.flash_attn_type = match run.flash_attn {
                FlashAttn::On => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
                FlashAttn::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
                FlashAttn::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            } as _;
            cp.no_perf = true;
            if n_ctx > 0 {
                cp.n_batch = n_ctx;
            }
            cp.n_ubatch = run.n_ubatch;
            cp.cb_eval = Some(graph::on_eval);
            cp.cb_eval_user_data = self.callback as *mut c_void;
            // What the library logs while it creates the context is where it says how it
            // configured it (it has no API for that) or why it refused.
            let tap = server::LogTap::start();
            let ctx = sys::llama_init_from_model(model, cp);
            let log = tap.drain();
            drop(tap);
            if ctx.is_null() {
                return Err(server::context_refused("llama.cpp", run, &log));
            }
            self.ctx = ctx;
            let flash_attn = flash_attention_in_effect(run.flash_attn, &log)?;
            let n_ctx = sys::llama_n_ctx(ctx);
            self.n_batch = sys::llama_n_batch(ctx).max(1);
            Ok(LoadFacts {
                n_vocab: self.n_vocab,
                n_ctx,
                n_batch: self.n_batch,
                config: Some(EffectiveConfig {
                    cache_type_k: run.cache_type_k,
                    cache_type_v: run.cache_type_v,
                    flash_attn,
                    n_ubatch: sys::llama_n_ubatch(ctx),
                    threads: sys::llama_n_threads(ctx) as u32,
                }),
            })
        }
    }

    fn vocab(&mut self) -> Result<VocabFacts, String> {
        self.need_vocab()?;
        // SAFETY: vocab is a valid pointer owned by the loaded model.
        unsafe {
            let v = self.vocab;
            let ty = match sys::llama_vocab_type(v) {
                sys::LLAMA_VOCAB_TYPE_SPM => "spm",
                sys::LLAMA_VOCAB_TYPE_BPE => "bpe",
                sys::LLAMA_VOCAB_TYPE_WPM => "wpm",
                sys::LLAMA_VOCAB_TYPE_UGM => "ugm",
                sys::LLAMA_VOCAB_TYPE_RWKV => "rwkv",
                sys::LLAMA_VOCAB_TYPE_NONE => "none",
                _ => "other",
            };
            Ok(VocabFacts {
                n_vocab: self.n_vocab,
                bos: sys::llama_vocab_bos(v),
                eos: sys::llama_vocab_eos(v),
                eot: sys::llama_vocab_eot(v),
                add_bos: sys::llama_vocab_get_add_bos(v),
                add_eos: sys::llama_vocab_get_add_eos(v),
                vocab_type: ty.to_string(),
            })
        }
    }

    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<i32>, String> {
        self.need_vocab()?;
        let len = i32::try_from(text.len()).map_err(|_| "text too long".to_string())?;
        let mut out = vec![0i32; text.len() + 8];
        for _ in 0..2 {
            // SAFETY: the buffer holds out.len() tokens; llama_tokenize writes at most that many
            // and returns the negated required count otherwise.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab,
                    text.as_ptr() as *const c_char,
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return Ok(out);
            }
            if n == i32::MIN {
                return Err("llama_tokenize overflowed".into());
            }
            out.resize((-n) as usize, 0);
        }
        Err("llama_tokenize kept asking for a larger buffer".into())
    }

    fn token_to_piece(&mut self, token: i32, special: bool) -> Result<Vec<u8>, String> {
        self.need_vocab()?;
        if token < 0 || token as u32 >= self.n_vocab {
            return Err(format!(
                "token id {token} is outside the vocabulary (0..{})",
                self.n_vocab
            ));
        }
        let mut buf = vec![0u8; 64];
        for _ in 0..2 {
            // SAFETY: buf holds buf.len() bytes.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab,
                    token,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf.resize((-n) as usize, 0);
        }
        Err("llama_token_to_piece kept asking for a larger buffer".into())
    }

    fn eval(&mut self, tokens: &[i32], outputs: &[u32], out: &mut Vec<f32>) -> Result<(), String> {
        self.reset()?;
        if tokens.is_empty() {
            return Err("nothing to evaluate: the token list is empty".into());
        }
        self.decode(tokens, outputs, out)
    }

    fn eval_capture(
        &mut self,
        tokens: &[i32],
        outputs: &[u32],
        capture: &mut Capture<'_>,
        out: &mut Vec<f32>,
    ) -> Result<(), String> {
        let callback = self.callback;
        // SAFETY: `callback` is the state installed in this context; only the callback
        // touches it during the evaluation.
        unsafe { EvalCallback::capturing(callback, capture, || self.eval(tokens, outputs, out)) }
    }

    fn model_facts(&mut self) -> Result<ModelFacts, String> {
        self.need_ctx()?;
        // SAFETY: the vocabulary is loaded.
        let bos = unsafe { sys::llama_vocab_bos(self.vocab) };
        let token = if bos >= 0 && (bos as u32) < self.n_vocab {
            bos
        } else {
            0
        };
        let callback = self.callback;
        let mut logits = Vec::new();
        // SAFETY: as in eval_capture.
        let (evaluated, nodes) =
            unsafe { EvalCallback::probing(callback, || self.eval(&[token], &[0], &mut logits)) };
        evaluated?;
        self.reset()?;
        Ok(graph::model_facts(self.model, self.n_vocab, &nodes))
    }

    fn decode_next(&mut self, token: i32, out: &mut Vec<f32>) -> Result<(), String> {
        self.decode(&[token], &[0], out)
    }

    fn reset(&mut self) -> Result<(), String> {
        self.need_ctx()?;
        // SAFETY: ctx is valid; clearing the memory (KV cache) including its data.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx), true) };
        self.n_past = 0;
        Ok(())
    }

    fn apply_chat_template(
        &mut self,
        messages: &[ChatMessage],
        add_assistant: bool,
        template: Option<&str>,
    ) -> Result<String, String> {
        self.need_vocab()?;
        let owned: Vec<(CString, CString)> = messages
            .iter()
            .map(|m| Ok((cstring(&m.role)?, cstring(&m.content)?)))
            .collect::<Result<_, String>>()?;
        let chat: Vec<sys::llama_chat_message> = owned
            .iter()
            .map(|(r, c)| sys::llama_chat_message {
                role: r.as_ptr(),
                content: c.as_ptr(),
            })
            .collect();
        let custom = template.map(cstring).transpose()?;
        // SAFETY: the template pointer is either the model's own string or `custom`, alive
        // for this call; the buffer is resized to what llama.cpp asks for.
        unsafe {
            let tmpl = match &custom {
                Some(c) => c.as_ptr(),
                None => sys::llama_model_chat_template(self.model, ptr::null()),
            };
            if tmpl.is_null() {
                return Err("the model has no tokenizer.chat_template".into());
            }
            let mut buf = vec![0u8; 4096];
            for _ in 0..2 {
                let n = sys::llama_chat_apply_template(
                    tmpl,
                    chat.as_ptr(),
                    chat.len(),
                    add_assistant,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as i32,
                );
                if n < 0 {
                    return Err("llama_chat_apply_template does not support this template".into());
                }
                if (n as usize) <= buf.len() {
                    buf.truncate(n as usize);
                    return String::from_utf8(buf)
                        .map_err(|_| "template output is not UTF-8".into());
                }
                buf.resize(n as usize, 0);
            }
        }
        Err("llama_chat_apply_template kept asking for a larger buffer".into())
    }

    fn build(&mut self) -> BuildFacts {
        // SAFETY: returns a static string.
        let info = unsafe { CStr::from_ptr(sys::llama_print_system_info()) };
        BuildFacts::from_recorded(
            COMPILED_FACTS,
            "llama",
            "llama.cpp",
            info.to_string_lossy().trim().to_string(),
        )
    }

    fn type_traits(&mut self) -> Option<Vec<TypeTrait>> {
        let mut types = Vec::new();
        for id in 0..sys::GGML_TYPE_COUNT {
            // SAFETY: ggml's static table has an entry for every id below GGML_TYPE_COUNT.
            let t = unsafe { &*sys::ggml_get_type_traits(id) };
            // Retired ids keep a placeholder entry with a block size of 0.
            if t.blck_size == 0 || t.type_name.is_null() {
                continue;
            }
            // SAFETY: a static NUL-terminated name.
            let name = unsafe { CStr::from_ptr(t.type_name) };
            types.push(TypeTrait {
                id,
                name: name.to_string_lossy().into_owned(),
                block_size: t.blck_size as u64,
                type_size: t.type_size as u64,
            });
        }
        Some(types)
    }

    fn quantize(
        &mut self,
        request: &QuantizeRequest,
        progress: &mut dyn FnMut(QuantizeProgress),
    ) -> Option<Result<QuantizeReport, String>> {
        Some(quantize::run(request, progress))
    }

    fn log_tail(&self) -> Vec<String> {
        server::log_tail()
    }

    fn n_vocab(&self) -> u32 {
        self.n_vocab
    }

    fn sample(
        &mut self,
        spec: &SamplerChainSpec,
        accepted: &[i32],
        rows: &[f32],
    ) -> Option<Result<(Vec<i32>, u32), String>> {
        Some(self.sample_rows(spec, accepted, rows))
    }

    fn generate(
        &mut self,
        spec: &SamplerChainSpec,
        prompt: &[i32],
        n_predict: u32,
    ) -> Option<Result<(Vec<i32>, u32), String>> {
        Some(self.generate_tokens(spec, prompt, n_predict))
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        // SAFETY: freeing what load created, once.
        unsafe {
            if !self.ctx.is_null() {
                sys::llama_free(self.ctx);
            }
            if !self.model.is_null() {
                sys::llama_model_free(self.model);
            }
            drop(Box::from_raw(self.callback));
        }
    }
}

fn main() {
    let frames = match server::take_stdout_for_frames() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bitnet-ref-llama: cannot set up the protocol stream: {e}");
            std::process::exit(3);
        }
    };
    // SAFETY: installing a log callback and initialising the backend once, before any use.
    unsafe {
        sys::llama_log_set(Some(on_log), ptr::null_mut());
        sys::llama_backend_init();
    }
    let mut engine = Llama {
        model: ptr::null_mut(),
        ctx: ptr::null_mut(),
        vocab: ptr::null(),
        n_vocab: 0,
        n_batch: 1,
        n_past: 0,
        callback: Box::into_raw(Box::default()),
    };
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(frames);
    if let Err(e) = protocol::serve(&mut engine, &mut input, &mut output) {
        eprintln!("bitnet-ref-llama: protocol error: {e}");
        std::process::exit(3);
    }
}
