//! llama.cpp's graph as the protocol sees it: the eval callback over this pin's `ggml_tensor`
//! (the bindings' layout), and the model facts read from `llama.h` getters, the loaded GGUF
//! metadata and a one-token graph.

use std::ffi::{c_char, CString};

use bitnet_cpp::protocol::facts::{graph_facts, FactSource, ModelFacts, Sourced};
use llama_cpp_sys_2 as sys;

bitnet_cpp::ggml_eval_callback!(sys);

/// `llama_model_meta_val_str`, or `None` when the key is absent.
fn meta(model: *const sys::llama_model, key: &str) -> Option<String> {
    let key = CString::new(key).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: the buffer holds buf.len() bytes; the model is loaded.
    let n = unsafe {
        sys::llama_model_meta_val_str(
            model,
            key.as_ptr(),
            buf.as_mut_ptr() as *mut c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate((n as usize).min(buf.len() - 1));
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The facts: `llama.h` getters, the loaded metadata, and the graph recorded by a probe
/// (`nodes`, from a one-token evaluation).
pub fn model_facts(
    model: *const sys::llama_model,
    n_vocab: u32,
    nodes: &[bitnet_cpp::protocol::facts::GraphNode],
) -> ModelFacts {
    use FactSource::{Api, Metadata};
    let g = graph_facts(nodes);
    let api = |v: i32| Sourced::known(v.max(0) as u64, Api);
    // SAFETY: the model is loaded; these getters read its hyper-parameters.
    let (n_layer, n_embd, n_head, n_head_kv, n_ctx, rope) = unsafe {
        (
            sys::llama_model_n_layer(model),
            sys::llama_model_n_embd(model),
            sys::llama_model_n_head(model),
            sys::llama_model_n_head_kv(model),
            sys::llama_model_n_ctx_train(model),
            sys::llama_model_rope_type(model),
        )
    };
    let rope_type = match rope {
        sys::LLAMA_ROPE_TYPE_NORM => "norm".to_string(),
        sys::LLAMA_ROPE_TYPE_NEOX => "neox".to_string(),
        other => format!("rope type {other}"),
    };
    ModelFacts {
        architecture: match meta(model, "general.architecture") {
            Some(a) => Sourced::known(a, Metadata),
            None => Sourced::unknown(Metadata, "general.architecture is absent"),
        },
        n_layer: api(n_layer),
        n_embd: api(n_embd),
        n_head: api(n_head),
        n_head_kv: api(n_head_kv),
        head_dim: g.head_dim,
        n_ff: g.n_ff,
        n_vocab: Sourced::known(n_vocab as u64, Api),
        n_ctx_train: api(n_ctx),
        rope_type: Sourced::known(rope_type, Api),
        rope_freq_base: g.rope_freq_base,
        rope_dims: g.rope_dims,
        norm_eps: g.norm_eps,
        ffn_activation: g.ffn_activation,
        output_head: g.output_head,
    }
}
