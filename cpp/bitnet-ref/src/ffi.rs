//! The part of bitnet.cpp's `llama.h` this reference uses. bitnet-llm-sys links the library
//! but its declarations are not ours to rely on, so the structs and functions are declared
//! here from `3rdparty/llama.cpp/include/llama.h` of bitnet-llm-sys 1.0.2 (the fork's old
//! API: model-based tokenizer calls, `llama_new_context_with_model`, `llama_kv_cache_clear`).
//! Field order and types must match that header exactly.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

// Keep the library linked: nothing else references the crate.
use bitnet_llm_sys as _;

pub type llama_token = i32;

#[repr(C)]
pub struct llama_model {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct llama_context {
    _opaque: [u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct llama_model_params {
    pub n_gpu_layers: i32,
    pub split_mode: i32,
    pub main_gpu: i32,
    pub tensor_split: *const f32,
    pub rpc_servers: *const c_char,
    pub progress_callback: Option<unsafe extern "C" fn(f32, *mut c_void) -> bool>,
    pub progress_callback_user_data: *mut c_void,
    pub kv_overrides: *const c_void,
    pub vocab_only: bool,
    pub use_mmap: bool,
    pub use_mlock: bool,
    pub check_tensors: bool,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct llama_context_params {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_seq_max: u32,
    pub n_threads: i32,
    pub n_threads_batch: i32,
    pub rope_scaling_type: i32,
    pub pooling_type: i32,
    pub attention_type: i32,
    pub rope_freq_base: f32,
    pub rope_freq_scale: f32,
    pub yarn_ext_factor: f32,
    pub yarn_attn_factor: f32,
    pub yarn_beta_fast: f32,
    pub yarn_beta_slow: f32,
    pub yarn_orig_ctx: u32,
    pub defrag_thold: f32,
    pub cb_eval: ggml_backend_sched_eval_callback,
    pub cb_eval_user_data: *mut c_void,
    pub type_k: i32,
    pub type_v: i32,
    pub logits_all: bool,
    pub embeddings: bool,
    pub offload_kqv: bool,
    pub flash_attn: bool,
    pub no_perf: bool,
    pub abort_callback: *mut c_void,
    pub abort_callback_data: *mut c_void,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct llama_batch {
    pub n_tokens: i32,
    pub token: *mut llama_token,
    pub embd: *mut f32,
    pub pos: *mut i32,
    pub n_seq_id: *mut i32,
    pub seq_id: *mut *mut i32,
    pub logits: *mut i8,
    pub all_pos_0: i32,
    pub all_pos_1: i32,
    pub all_seq_id: i32,
}

#[repr(C)]
pub struct llama_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// This fork's `struct ggml_tensor` (`ggml/include/ggml.h`): it still has the deprecated
/// `backend` field after `type` and a `grad` pointer before `src`, so it differs from
/// upstream's layout; the offsets are checked below against the header's arithmetic.
#[repr(C)]
pub struct ggml_tensor {
    pub type_: i32,
    pub backend: i32,
    pub buffer: *mut c_void,
    pub ne: [i64; 4],
    pub nb: [usize; 4],
    pub op: i32,
    pub op_params: [i32; 16],
    pub flags: i32,
    pub grad: *mut ggml_tensor,
    pub src: [*mut ggml_tensor; 10],
    pub view_src: *mut ggml_tensor,
    pub view_offs: usize,
    pub data: *mut c_void,
    pub name: [c_char; 64],
    pub extra: *mut c_void,
}

const _: () = {
    assert!(std::mem::offset_of!(ggml_tensor, ne) == 16);
    assert!(std::mem::offset_of!(ggml_tensor, op) == 80);
    assert!(std::mem::offset_of!(ggml_tensor, op_params) == 84);
    assert!(std::mem::offset_of!(ggml_tensor, src) == 160);
    assert!(std::mem::offset_of!(ggml_tensor, data) == 256);
    assert!(std::mem::offset_of!(ggml_tensor, name) == 264);
    assert!(std::mem::size_of::<ggml_tensor>() == 336);
};

/// `ggml_backend_sched_eval_callback`.
pub type ggml_backend_sched_eval_callback =
    Option<unsafe extern "C" fn(t: *mut ggml_tensor, ask: bool, user_data: *mut c_void) -> bool>;

/// `LLAMA_ROPE_TYPE_NORM` / `_NEOX`.
pub const LLAMA_ROPE_TYPE_NORM: i32 = 0;
pub const LLAMA_ROPE_TYPE_NEOX: i32 = 2;

pub type ggml_log_callback =
    Option<unsafe extern "C" fn(level: i32, text: *const c_char, user: *mut c_void)>;

extern "C" {
    pub fn llama_backend_init();
    pub fn llama_log_set(cb: ggml_log_callback, user: *mut c_void);
    pub fn llama_model_default_params() -> llama_model_params;
    pub fn llama_context_default_params() -> llama_context_params;
    pub fn llama_load_model_from_file(
        path: *const c_char,
        params: llama_model_params,
    ) -> *mut llama_model;
    pub fn llama_new_context_with_model(
        model: *mut llama_model,
        params: llama_context_params,
    ) -> *mut llama_context;
    pub fn llama_free(ctx: *mut llama_context);
    pub fn llama_free_model(model: *mut llama_model);
    pub fn llama_n_ctx(ctx: *const llama_context) -> u32;
    pub fn llama_n_batch(ctx: *const llama_context) -> u32;
    pub fn llama_n_ubatch(ctx: *const llama_context) -> u32;
    pub fn llama_n_threads(ctx: *mut llama_context) -> i32;
    pub fn llama_n_vocab(model: *const llama_model) -> i32;
    pub fn llama_vocab_type(model: *const llama_model) -> i32;
    pub fn llama_token_bos(model: *const llama_model) -> llama_token;
    pub fn llama_token_eos(model: *const llama_model) -> llama_token;
    pub fn llama_token_eot(model: *const llama_model) -> llama_token;
    pub fn llama_add_bos_token(model: *const llama_model) -> bool;
    pub fn llama_add_eos_token(model: *const llama_model) -> bool;
    pub fn llama_tokenize(
        model: *const llama_model,
        text: *const c_char,
        text_len: i32,
        tokens: *mut llama_token,
        n_tokens_max: i32,
        add_special: bool,
        parse_special: bool,
    ) -> i32;
    pub fn llama_token_to_piece(
        model: *const llama_model,
        token: llama_token,
        buf: *mut c_char,
        length: i32,
        lstrip: i32,
        special: bool,
    ) -> i32;
    pub fn llama_batch_init(n_tokens: i32, embd: i32, n_seq_max: i32) -> llama_batch;
    pub fn llama_batch_free(batch: llama_batch);
    pub fn llama_decode(ctx: *mut llama_context, batch: llama_batch) -> i32;
    pub fn llama_get_logits_ith(ctx: *mut llama_context, i: i32) -> *mut f32;
    pub fn llama_kv_cache_clear(ctx: *mut llama_context);
    pub fn llama_chat_apply_template(
        model: *const llama_model,
        tmpl: *const c_char,
        chat: *const llama_chat_message,
        n_msg: usize,
        add_ass: bool,
        buf: *mut c_char,
        length: i32,
    ) -> i32;
    pub fn llama_print_system_info() -> *const c_char;
    pub fn llama_n_ctx_train(model: *const llama_model) -> i32;
    pub fn llama_n_embd(model: *const llama_model) -> i32;
    pub fn llama_n_layer(model: *const llama_model) -> i32;
    pub fn llama_n_head(model: *const llama_model) -> i32;
    pub fn llama_rope_type(model: *const llama_model) -> i32;
    pub fn llama_model_meta_val_str(
        model: *const llama_model,
        key: *const c_char,
        buf: *mut c_char,
        buf_size: usize,
    ) -> i32;
    pub fn ggml_op_desc(t: *const ggml_tensor) -> *const c_char;
    pub fn ggml_type_name(ty: i32) -> *const c_char;
}
