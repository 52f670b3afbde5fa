//! Streaming a reference's intermediate tensors: what is sent ([`TensorFrame`]) and the
//! reference-side bookkeeping ([`Capture`]) both reference processes share.
//!
//! A reference captures tensors through ggml's eval callback: asked about every graph node
//! before it is computed, it answers whether it wants the node's data; after the node is
//! computed it reads it. llama.cpp gives several nodes the same name — `Qcur-3` is both the
//! projection and, after RoPE, the rotated queries; `Vcur-3` both the projection and its
//! reshaped view — and the one a layer hands on is the *last* node of that name. So
//! [`Capture`] keeps the latest data of each wanted name and sends a layer's tensors when the
//! graph has moved on to a later layer (ggml computes layers in order), in the order of their
//! last occurrence, and the rest when the evaluation ends: memory stays within one layer's
//! tensors, and what arrives is what the next op consumed.
//!
//! What is sent: every element as f32 in ggml's logical order (`ne[0]` fastest, then `ne[1]`,
//! …), whatever the tensor's strides (views, permutes) — F16 and BF16 values are widened
//! exactly; other types are not readable as floats and are sent with no values, saying so.

use std::io;

use serde::{Deserialize, Serialize};

/// The header of one captured tensor (`Response::Tensor`); the frame's payload holds its
/// values as f32 in logical order, `ne[0]` fastest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorFrame {
    /// The graph name (`attn_norm-3`, `result_output`).
    pub name: String,
    /// The op that produced it (`ggml_op_desc`: `MUL`, `ROPE`, `RESHAPE`, …).
    pub op: String,
    /// The type the reference computed it in (`f32`, `f16`, `bf16`, or another ggml type,
    /// which is sent without values).
    pub dtype: String,
    /// Shape, `ne[0]` fastest.
    pub ne: [u64; 4],
    /// Whether the payload holds the values (false for types not readable as floats).
    pub readable: bool,
}

impl TensorFrame {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// Split a graph name into its base and layer: `attn_norm-3` → (`attn_norm`, 3),
/// `result_norm` → (`result_norm`, none). Names with a suffix after the layer
/// (`Qcur-0 (reshaped)`) have no layer.
pub fn split_layer(name: &str) -> (&str, Option<u32>) {
    match name.rsplit_once('-') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            match n.parse() {
                Ok(layer) => (base, Some(layer)),
                Err(_) => (name, None),
            }
        }
        _ => (name, None),
    }
}

/// Where captured tensors go (the reference writes them as frames).
pub type TensorSink<'w> = dyn FnMut(&TensorFrame, &[f32]) -> io::Result<()> + 'w;

/// The reference side of a capturing evaluation: which names are wanted, the latest data of
/// each, and when to send them (see the module docs).
pub struct Capture<'w> {
    wanted: Vec<String>,
    pending: Vec<(TensorFrame, Vec<f32>)>,
    /// The highest layer any graph node has shown so far.
    layer: Option<u32>,
    sink: &'w mut TensorSink<'w>,
    error: Option<io::Error>,
    sent: usize,
}

impl<'w> Capture<'w> {
    /// Capture the tensors whose base name is in `wanted`, sending each to `sink`.
    pub fn new(wanted: Vec<String>, sink: &'w mut TensorSink<'w>) -> Self {
        Capture {
            wanted,
            pending: Vec::new(),
            layer: None,
            sink,
            error: None,
            sent: 0,
        }
    }

    /// Asked for every graph node, in graph order, before it is computed: whether its data is
    /// wanted. A node of a later layer than any before sends what is pending.
    pub fn wants(&mut self, name: &str) -> bool {
        let (base, layer) = split_layer(name);
        if let Some(l) = layer {
            if self.layer.is_none_or(|cur| l > cur) {
                self.layer = Some(l);
                self.flush();
            }
        }
        self.error.is_none() && self.wanted.iter().any(|w| w == base)
    }

    /// The data of a wanted node, just computed: it replaces any earlier node of that name.
    pub fn offer(&mut self, frame: TensorFrame, data: Vec<f32>) {
        self.pending.retain(|(f, _)| f.name != frame.name);
        self.pending.push((frame, data));
    }

    /// Whether sending has failed (the client is gone): the evaluation may stop.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Send everything still pending; the number of tensors sent in all.
    ///
    /// # Errors
    /// The first error writing to the sink.
    pub fn finish(mut self) -> io::Result<usize> {
        self.flush();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.sent),
        }
    }

    fn flush(&mut self) {
        for (frame, data) in self.pending.drain(..) {
            if self.error.is_some() {
                break;
            }
            match (self.sink)(&frame, &data) {
                Ok(()) => self.sent += 1,
                Err(e) => self.error = Some(e),
            }
        }
        self.pending.clear();
    }
}

/// ggml type ids both references share for the float types.
const GGML_TYPE_F32: i32 = 0;
const GGML_TYPE_F16: i32 = 1;
const GGML_TYPE_BF16: i32 = 30;

/// The exact f32 value of IEEE half-precision bits.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if mant == 0 => sign,
        0 => {
            // Subnormal: normalise the mantissa.
            let shift = mant.leading_zeros() - 21;
            let mant = (mant << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (mant << 13)
        }
        0x1f => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// The dtype name of a float type id, or `None` for a type not readable as floats.
pub fn float_type_name(ggml_type: i32) -> Option<&'static str> {
    match ggml_type {
        GGML_TYPE_F32 => Some("f32"),
        GGML_TYPE_F16 => Some("f16"),
        GGML_TYPE_BF16 => Some("bf16"),
        _ => None,
    }
}

/// Read a tensor's elements as f32 in logical order (`ne[0]` fastest), following its strides
/// `nb` (bytes). `None` when the type is not F32, F16 or BF16.
///
/// # Safety
/// `data` must point to a tensor of type `ggml_type` with shape `ne` and strides `nb` whose
/// every element is readable (a computed tensor in host memory).
pub unsafe fn read_tensor(
    ggml_type: i32,
    ne: [i64; 4],
    nb: [usize; 4],
    data: *const u8,
) -> Option<Vec<f32>> {
    float_type_name(ggml_type)?;
    let ne = ne.map(|n| n.max(0) as usize);
    let mut out = Vec::with_capacity(ne.iter().product());
    for i3 in 0..ne[3] {
        for i2 in 0..ne[2] {
            for i1 in 0..ne[1] {
                let row = data.add(i1 * nb[1] + i2 * nb[2] + i3 * nb[3]);
                for i0 in 0..ne[0] {
                    let p = row.add(i0 * nb[0]);
                    out.push(match ggml_type {
                        GGML_TYPE_F32 => (p as *const f32).read_unaligned(),
                        GGML_TYPE_F16 => f16_to_f32((p as *const u16).read_unaligned()),
                        _ => f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16),
                    });
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_suffixes_parse() {
        assert_eq!(split_layer("attn_norm-12"), ("attn_norm", Some(12)));
        assert_eq!(split_layer("ffn_sqr(relu)-0"), ("ffn_sqr(relu)", Some(0)));
        assert_eq!(split_layer("result_output"), ("result_output", None));
        assert_eq!(
            split_layer("Qcur-0 (reshaped)"),
            ("Qcur-0 (reshaped)", None)
        );
        assert_eq!(
            split_layer("cache_k_l0 (view)"),
            ("cache_k_l0 (view)", None)
        );
        assert_eq!(split_layer("x-"), ("x-", None));
    }

    fn frame(name: &str) -> TensorFrame {
        TensorFrame {
            name: name.into(),
            op: "MUL".into(),
            dtype: "f32".into(),
            ne: [1, 1, 1, 1],
            readable: true,
        }
    }

    /// The last node of a name wins, a layer is sent when the next begins, in the order of
    /// last occurrence, and the rest at the end.
    #[test]
    fn capture_sends_last_occurrences_layer_by_layer() {
        let sent = std::cell::RefCell::new(Vec::<(String, f32)>::new());
        let mut sink = |f: &TensorFrame, d: &[f32]| {
            sent.borrow_mut().push((f.name.clone(), d[0]));
            Ok(())
        };
        let wanted = vec!["Qcur".into(), "Vcur".into(), "result_norm".into()];
        let mut c = Capture::new(wanted, &mut sink);
        let node = |c: &mut Capture, name: &str, v: f32| {
            if c.wants(name) {
                c.offer(frame(name), vec![v]);
            }
        };
        node(&mut c, "attn_norm-0", 0.0);
        node(&mut c, "Qcur-0", 1.0);
        node(&mut c, "Vcur-0", 2.0);
        node(&mut c, "Qcur-0 (reshaped)", 9.0);
        node(&mut c, "Qcur-0", 3.0);
        assert!(
            sent.borrow().is_empty(),
            "layer 0 is held until layer 1 starts"
        );
        node(&mut c, "norm-1", 0.0);
        assert_eq!(sent.borrow().len(), 2);
        node(&mut c, "Qcur-1", 4.0);
        node(&mut c, "result_norm", 5.0);
        assert_eq!(c.finish().unwrap(), 4);
        let got: Vec<(String, f32)> = sent.borrow().clone();
        let names: Vec<(&str, f32)> = got.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(
            names,
            vec![
                ("Vcur-0", 2.0),
                ("Qcur-0", 3.0),
                ("Qcur-1", 4.0),
                ("result_norm", 5.0)
            ]
        );
    }

    #[test]
    fn a_failing_sink_stops_the_capture() {
        let mut sink = |_: &TensorFrame, _: &[f32]| Err(io::Error::other("gone"));
        let mut c = Capture::new(vec!["a".into()], &mut sink);
        assert!(c.wants("a-0"));
        c.offer(frame("a-0"), vec![1.0]);
        assert!(!c.wants("b-1"));
        assert!(c.failed());
        assert!(c.finish().is_err());
    }

    #[test]
    fn halves_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }

    #[test]
    fn strided_tensors_read_in_logical_order() {
        // A 2×3 f32 matrix stored transposed (column-major): logical [i1][i0].
        let stored: [f32; 6] = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0];
        let v = unsafe {
            read_tensor(
                0,
                [3, 2, 1, 1],
                [8, 4, 24, 24],
                stored.as_ptr() as *const u8,
            )
        }
        .unwrap();
        assert_eq!(v, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let halves: [u16; 2] = [0x3c00, 0x4000];
        let v = unsafe { read_tensor(1, [2, 1, 1, 1], [2, 4, 4, 4], halves.as_ptr() as *const u8) };
        assert_eq!(v.unwrap(), vec![1.0, 2.0]);
        assert!(unsafe {
            read_tensor(8, [1, 1, 1, 1], [1, 1, 1, 1], halves.as_ptr() as *const u8)
        }
        .is_none());
    }
}
