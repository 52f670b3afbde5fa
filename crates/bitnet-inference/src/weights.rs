//! Weights borrowed from the memory map: each matrix is a typed view over the file's bytes,
//! created on demand (cheap: a slice and a kernel choice), so the model is never copied.
//! Only the small vectors (norms, scales) are decoded to f32 at load.

use bitnet_gguf::{GgmlType, GgufFile, TensorInfo};
use bitnet_quant::{QuantizedActivation, QuantizedMatrix, WeightType};

use crate::config::ModelConfig;
use crate::numerics::Numerics;
use crate::InferenceError;

/// Reusable activation buffers for [`MatrixRef::forward`].
#[derive(Debug, Default)]
pub struct MatmulScratch {
    /// Quantized activations, one per token.
    acts: Vec<QuantizedActivation>,
    /// Float activations prepared for an exact-order float product, one per token.
    floats: Vec<Vec<f32>>,
}

/// Where a matrix lives in the file.
#[derive(Debug, Clone)]
pub struct MatrixRef {
    name: String,
    ty: GgmlType,
    start: usize,
    len: usize,
    rows: usize,
    cols: usize,
    /// Upstream `bitnet`'s optional scalar that multiplies the matmul's output.
    scale: Option<f32>,
    /// Whether llama.cpp would move this matrix into its repacked CPU buffer: every matmul
    /// weight except the token embedding (kept plain for row lookups, also when it doubles as
    /// the output head).
    repackable: bool,
}

/// One layer's tensors.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Pre-attention RMSNorm.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: MatrixRef,
    /// Key projection.
    pub wk: MatrixRef,
    /// Value projection.
    pub wv: MatrixRef,
    /// Output projection.
    pub wo: MatrixRef,
    /// BitNet: RMSNorm of the attention output before `wo`.
    pub attn_sub_norm: Option<Vec<f32>>,
    /// Pre-FFN RMSNorm.
    pub ffn_norm: Vec<f32>,
    /// FFN gate.
    pub gate: MatrixRef,
    /// FFN up.
    pub up: MatrixRef,
    /// FFN down.
    pub down: MatrixRef,
    /// BitNet: RMSNorm of the gated FFN activation before `down`.
    pub ffn_sub_norm: Option<Vec<f32>>,
}

/// All tensors of a model, resolved and checked against the config at load.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embedding (rows = vocabulary).
    pub token_embd: MatrixRef,
    /// Final RMSNorm.
    pub output_norm: Vec<f32>,
    /// Output head (the token embedding when tied).
    pub output: MatrixRef,
    /// Layers.
    pub layers: Vec<LayerWeights>,
}

fn info<'f>(file: &'f GgufFile, name: &str) -> Result<&'f TensorInfo, InferenceError> {
    file.tensor(name)
        .ok_or_else(|| InferenceError::MissingTensor(name.to_string()))
}

fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, InferenceError> {
    let t = info(file, name)?;
    if t.n_elements() != len as u64 {
        return Err(InferenceError::BadTensor(format!(
            "{name} has {} elements, expected {len}",
            t.n_elements()
        )));
    }
    let mut out = vec![0f32; len];
    bitnet_quant::decode(t.ty, file.tensor_data(t), &mut out)
        .map_err(|e| InferenceError::BadTensor(format!("{name}: {e}")))?;
    Ok(out)
}

fn matrix(
    file: &GgufFile,
    name: &str,
    cols: usize,
    rows: usize,
    scale_name: Option<&str>,
) -> Result<MatrixRef, InferenceError> {
    let t = info(file, name)?;
    if t.dims.len() != 2 || t.dims[0] as usize != cols || t.dims[1] as usize != rows {
        return Err(InferenceError::BadTensor(format!(
            "{name} has dims {:?}, expected [{cols}, {rows}]",
            t.dims
        )));
    }
    if WeightType::from_ggml(t.ty).is_none() {
        return Err(InferenceError::UnsupportedTensorType {
            tensor: name.to_string(),
            ty: t.ty,
        });
    }
    let scale = match scale_name.and_then(|s| file.tensor(s).map(|_| s)) {
        Some(s) => Some(vector(file, s, 1)?[0]),
        None => None,
    };
    let m = MatrixRef {
        name: name.to_string(),
        ty: t.ty,
        start: (file.data_offset + t.offset) as usize,
        len: t.size as usize,
        rows,
        cols,
        scale,
        repackable: name != "token_embd.weight",
    };
    // Validate the layout once, here, so later views cannot fail.
    m.view(file.bytes())?;
    Ok(m)
}

impl MatrixRef {
    /// The tensor's name in the file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The typed view over the file's bytes.
    ///
    /// # Errors
    /// When the bytes do not fit the type and shape (checked at load, so not after).
    pub fn view<'a>(&self, bytes: &'a [u8]) -> Result<QuantizedMatrix<'a>, InferenceError> {
        QuantizedMatrix::new(
            self.ty,
            &bytes[self.start..self.start + self.len],
            self.rows,
            self.cols,
        )
        .map_err(|e| InferenceError::BadTensor(format!("{}: {e}", self.name)))
    }

    /// `out[t] = W · x[t]` for every token row of `x` (`cols` each), computed as the C++
    /// reference behind `numerics` computes it: the activation quantization it applies for
    /// a quantized type, its summation order for F32/F16 weights; then the optional scale.
    pub fn forward(
        &self,
        bytes: &[u8],
        numerics: Numerics,
        x: &[f32],
        scratch: &mut MatmulScratch,
        out: &mut Vec<f32>,
    ) {
        let mut m = self.view(bytes).expect("validated at load");
        if numerics == Numerics::LlamaCpp && self.repackable {
            m = m.repacked_like_llama_cpp();
        }
        let n = x.len() / self.cols;
        out.clear();
        out.resize(n * self.rows, 0.0);
        match m.weight_type() {
            WeightType::F32 | WeightType::F16 => m
                .float_matmul(
                    numerics.float_order(n, self.rows, self.cols),
                    x,
                    &mut scratch.floats,
                    out,
                )
                .expect("F32 and F16 have float products"),
            _ => {
                let acts = &mut scratch.acts;
                acts.resize_with(n, QuantizedActivation::new);
                for (a, row) in acts.iter_mut().zip(x.chunks_exact(self.cols)) {
                    a.quantize(m.activation_type(), row)
                        .expect("row length checked at load");
                }
                if n == 1 {
                    m.matvec(&acts[0], out);
                } else {
                    m.matmul(&acts[..n], out);
                }
            }
        }
        if let Some(s) = self.scale {
            out.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// Row `i` dequantized (token embedding lookup).
    pub fn row(&self, bytes: &[u8], i: usize, out: &mut [f32]) {
        self.view(bytes)
            .expect("validated at load")
            .dequantize_row(i, out);
    }
}

impl Weights {
    /// Resolve every tensor the architecture needs and check its shape and type.
    ///
    /// # Errors
    /// [`InferenceError::MissingTensor`], [`InferenceError::BadTensor`] or
    /// [`InferenceError::UnsupportedTensorType`].
    pub fn load(file: &GgufFile, c: &ModelConfig) -> Result<Weights, InferenceError> {
        use crate::config::Architecture::*;
        let bitnet = matches!(c.arch, Bitnet | BitnetB158);
        let scaled = c.arch == Bitnet;
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        let token_embd = matrix(file, "token_embd.weight", d, c.n_vocab, None)?;
        let output = match (c.arch, file.tensor("output.weight")) {
            (Llama, Some(_)) | (BitnetB158, Some(_)) => {
                matrix(file, "output.weight", d, c.n_vocab, None)?
            }
            _ => token_embd.clone(),
        };
        // Grown layer by layer: a hostile block_count fails at its first missing tensor
        // instead of sizing an allocation.
        let mut layers = Vec::new();
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let mat = |s: &str, cols, rows| {
                let scale = n(&format!("{s}.scale"));
                matrix(
                    file,
                    &n(&format!("{s}.weight")),
                    cols,
                    rows,
                    scaled.then_some(scale.as_str()),
                )
            };
            layers.push(LayerWeights {
                attn_norm: vector(file, &n("attn_norm.weight"), d)?,
                wq: mat("attn_q", d, d)?,
                wk: mat("attn_k", d, kv)?,
                wv: mat("attn_v", d, kv)?,
                wo: mat("attn_output", d, d)?,
                attn_sub_norm: if bitnet {
                    Some(vector(file, &n("attn_sub_norm.weight"), d)?)
                } else {
                    None
                },
                ffn_norm: vector(file, &n("ffn_norm.weight"), d)?,
                gate: mat("ffn_gate", d, f)?,
                up: mat("ffn_up", d, f)?,
                down: mat("ffn_down", f, d)?,
                ffn_sub_norm: if bitnet {
                    Some(vector(file, &n("ffn_sub_norm.weight"), f)?)
                } else {
                    None
                },
            });
        }
        Ok(Weights {
            token_embd,
            output_norm: vector(file, "output_norm.weight", d)?,
            output,
            layers,
        })
    }
}
