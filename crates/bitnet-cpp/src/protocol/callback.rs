//! The body of ggml's eval callback (`cb_eval` in the context parameters), shared by both
//! reference processes: each only adapts its own `ggml_tensor` layout ([`GraphTensor`]).
//!
//! The callback is installed when the context is created (it cannot be changed later) and is
//! off unless a request turns it on: then it answers "not needed" for every node, so ggml
//! computes each graph split in one piece, exactly as without a callback. A capturing
//! evaluation ([`Capture`]) asks for the wanted nodes' data, which makes ggml compute up to
//! each of them and stop to show it — the same kernels on the same values, only in more
//! pieces; a probe ([`EvalCallback::probing`]) records the metadata of the nodes of layer 0
//! and of the output head, which [`super::facts::graph_facts`] turns into facts.
//!
//! Both references' `ggml_tensor` structs (bindgen's for llama.cpp, a hand-written one for
//! bitnet.cpp's older layout) use ggml's field names, so [`ggml_eval_callback!`] writes the
//! adapter and the `extern "C"` callback for either.

use super::capture::{float_type_name, read_tensor, split_layer, Capture, TensorFrame};
use super::facts::{GraphNode, GraphSource};

/// A graph node as a reference's FFI shows it.
pub trait GraphTensor: Sized {
    /// `ggml_get_name`.
    fn name(&self) -> String;
    /// `ggml_op_desc`.
    fn op(&self) -> String;
    /// `ne`.
    fn ne(&self) -> [i64; 4];
    /// `nb` (bytes).
    fn nb(&self) -> [usize; 4];
    /// The ggml type id.
    fn ggml_type(&self) -> i32;
    /// `ggml_type_name`.
    fn type_name(&self) -> String;
    /// The data pointer (host memory on the CPU backend; null when unallocated).
    fn data(&self) -> *const u8;
    /// The op parameters.
    fn op_params(&self) -> [i32; 16];
    /// Source `i`, if any.
    fn src(&self, i: usize) -> Option<Self>;
}

/// A C string from ggml (a tensor name, an op or type name), or empty for null.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string alive for the call.
pub unsafe fn c_text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
}

/// In a reference process: `Node`, a [`GraphTensor`] over `$sys::ggml_tensor` (a struct with
/// ggml's field names `name`, `ne`, `nb`, `type_`, `data`, `op_params`, `src`), and
/// `on_eval`, ggml's eval callback (`cb_eval`), whose user data is the context's
/// [`EvalCallback`]. `$sys` is the module of the bindings, which also declares
/// `ggml_op_desc` and `ggml_type_name`.
#[macro_export]
macro_rules! ggml_eval_callback {
    ($sys:ident) => {
        /// A graph node of this reference's ggml.
        pub struct Node(*mut $sys::ggml_tensor);

        impl $crate::protocol::callback::GraphTensor for Node {
            fn name(&self) -> String {
                // SAFETY: the node is live for the callback; its name is NUL-terminated.
                unsafe { $crate::protocol::callback::c_text((*self.0).name.as_ptr()) }
            }
            fn op(&self) -> String {
                // SAFETY: a live node; the description is a static string.
                unsafe { $crate::protocol::callback::c_text($sys::ggml_op_desc(self.0)) }
            }
            fn ne(&self) -> [i64; 4] {
                // SAFETY: a live node.
                unsafe { (*self.0).ne }
            }
            fn nb(&self) -> [usize; 4] {
                // SAFETY: a live node.
                unsafe { (*self.0).nb.map(|b| b as usize) }
            }
            fn ggml_type(&self) -> i32 {
                // SAFETY: a live node.
                unsafe { (*self.0).type_ as i32 }
            }
            fn type_name(&self) -> String {
                // SAFETY: a live node; the type name is a static string.
                unsafe { $crate::protocol::callback::c_text($sys::ggml_type_name((*self.0).type_)) }
            }
            fn data(&self) -> *const u8 {
                // SAFETY: a live node (the CPU backend keeps its data in host memory).
                unsafe { (*self.0).data as *const u8 }
            }
            fn op_params(&self) -> [i32; 16] {
                // SAFETY: a live node.
                unsafe { (*self.0).op_params }
            }
            fn src(&self, i: usize) -> Option<Node> {
                // SAFETY: a live node; its sources are null or live.
                let p = unsafe { (*self.0).src.get(i).copied() };
                p.filter(|p| !p.is_null()).map(Node)
            }
        }

        /// ggml's eval callback: `user` is the context's `EvalCallback`.
        ///
        /// # Safety
        /// Called by ggml with a live node and the pointer given as `cb_eval_user_data`.
        pub unsafe extern "C" fn on_eval(
            t: *mut $sys::ggml_tensor,
            ask: bool,
            user: *mut std::ffi::c_void,
        ) -> bool {
            if t.is_null() || user.is_null() {
                return false;
            }
            (*(user as *mut $crate::protocol::callback::EvalCallback)).on_node(&Node(t), ask)
        }
    };
}

enum Mode {
    Off,
    /// A `Capture` whose lifetime the caller of [`EvalCallback::capturing`] guarantees.
    Capture(*mut ()),
    Probe(Vec<GraphNode>),
}

/// What the eval callback does; a reference keeps one at a stable address (its
/// `cb_eval_user_data`).
pub struct EvalCallback {
    mode: Mode,
}

impl Default for EvalCallback {
    fn default() -> Self {
        EvalCallback { mode: Mode::Off }
    }
}

impl EvalCallback {
    /// Run `evaluate` with every node shown to `capture`.
    ///
    /// # Safety
    /// `this` must point to the callback installed in the context that `evaluate` runs, and
    /// nothing else may access it meanwhile.
    pub unsafe fn capturing<R>(
        this: *mut EvalCallback,
        capture: &mut Capture<'_>,
        evaluate: impl FnOnce() -> R,
    ) -> R {
        (*this).mode = Mode::Capture(capture as *mut Capture<'_> as *mut ());
        let result = evaluate();
        (*this).mode = Mode::Off;
        result
    }

    /// Run `evaluate` recording the metadata of the nodes of layer 0 and the output head.
    ///
    /// # Safety
    /// As [`EvalCallback::capturing`].
    pub unsafe fn probing<R>(
        this: *mut EvalCallback,
        evaluate: impl FnOnce() -> R,
    ) -> (R, Vec<GraphNode>) {
        (*this).mode = Mode::Probe(Vec::new());
        let result = evaluate();
        let nodes = match std::mem::replace(&mut (*this).mode, Mode::Off) {
            Mode::Probe(nodes) => nodes,
            _ => Vec::new(),
        };
        (result, nodes)
    }

    /// The callback: `ask` before computing `t` (the answer: whether its data is wanted),
    /// then, for a wanted node, once it is computed (the answer: whether to go on).
    ///
    /// # Safety
    /// `t` must be a live graph node; when `ask` is false, a computed one.
    pub unsafe fn on_node<T: GraphTensor>(&mut self, t: &T, ask: bool) -> bool {
        match &mut self.mode {
            Mode::Off => false,
            Mode::Probe(nodes) => {
                if ask {
                    let name = t.name();
                    let (_, layer) = split_layer(&name);
                    if layer == Some(0) || name.starts_with("result_") {
                        nodes.push(graph_node(t, name));
                    }
                }
                false
            }
            Mode::Capture(capture) => {
                let capture = &mut *(*capture as *mut Capture<'_>);
                if ask {
                    return capture.wants(&t.name());
                }
                let readable = float_type_name(t.ggml_type()).is_some() && !t.data().is_null();
                let data = if readable {
                    read_tensor(t.ggml_type(), t.ne(), t.nb(), t.data()).unwrap_or_default()
                } else {
                    Vec::new()
                };
                let frame = TensorFrame {
                    name: t.name(),
                    op: t.op(),
                    dtype: float_type_name(t.ggml_type())
                        .map(str::to_string)
                        .unwrap_or_else(|| t.type_name()),
                    ne: t.ne().map(|n| n.max(0) as u64),
                    readable,
                };
                capture.offer(frame, data);
                !capture.failed()
            }
        }
    }
}

fn graph_node<T: GraphTensor>(t: &T, name: String) -> GraphNode {
    GraphNode {
        name,
        op: t.op(),
        ne: t.ne(),
        op_params: t.op_params().to_vec(),
        src: (0..2)
            .filter_map(|i| t.src(i))
            .map(|s| GraphSource {
                name: s.name(),
                op: s.op(),
                op_params: s.op_params().to_vec(),
            })
            .collect(),
    }
}
