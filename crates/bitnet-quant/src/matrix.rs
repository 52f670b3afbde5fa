//! Weight matrices: a typed, borrowed view over a tensor's bytes, and the dot-product
//! dispatch (scalar or AVX2, chosen once when the view is created).

use bitnet_gguf::GgmlType;

use crate::activation::{ActivationType, QuantizedActivation};
use crate::blocks::{self, QK, QK_I2_S, QK_K};
use crate::float_order::{self, FloatOrder, FloatWeights};
use crate::{dequantize, dot, QuantError};

/// Weight types the engine can multiply with (a subset of [`GgmlType`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum WeightType {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bfloat16.
    BF16,
    /// 8-bit, blocks of 32.
    Q8_0,
    /// 4-bit symmetric, blocks of 32.
    Q4_0,
    /// 4-bit with minimum, blocks of 32.
    Q4_1,
    /// 5-bit symmetric, blocks of 32.
    Q5_0,
    /// 5-bit with minimum, blocks of 32.
    Q5_1,
    /// 4-bit indices into a non-linear table of 16 levels, blocks of 32.
    IQ4_NL,
    /// Ternary, base-3 packed, blocks of 256.
    TQ1_0,
    /// Ternary, 2-bit codes, blocks of 256.
    TQ2_0,
    /// BitNet's ternary type: 2-bit codes, one f32 scale per tensor.
    I2_S,
    /// 2-bit k-quant with minimums, blocks of 256.
    Q2_K,
    /// 3-bit k-quant, blocks of 256.
    Q3_K,
    /// 4-bit k-quant with minimums, blocks of 256.
    Q4_K,
    /// 5-bit k-quant with minimums, blocks of 256.
    Q5_K,
    /// 6-bit k-quant, blocks of 256.
    Q6_K,
}

impl WeightType {
    /// Every weight type, in ggml's type-id order: the one list of what the engine can
    /// multiply (error messages name these).
    pub const ALL: &'static [WeightType] = &[
        WeightType::F32,
        WeightType::F16,
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q5_1,
        WeightType::Q8_0,
        WeightType::Q2_K,
        WeightType::Q3_K,
        WeightType::Q4_K,
        WeightType::Q5_K,
        WeightType::Q6_K,
        WeightType::IQ4_NL,
        WeightType::BF16,
        WeightType::TQ1_0,
        WeightType::TQ2_0,
        WeightType::I2_S,
    ];

    /// The names of [`WeightType::ALL`] (ggml's: `f32, f16, q4_0, …`), comma-separated.
    pub fn names() -> String {
        WeightType::ALL
            .iter()
            .map(|w| w.ggml().name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The supported weight type for a GGUF tensor type, if any.
    pub fn from_ggml(ty: GgmlType) -> Option<Self> {
        Some(match ty {
            GgmlType::F32 => WeightType::F32,
            GgmlType::F16 => WeightType::F16,
            GgmlType::BF16 => WeightType::BF16,
            GgmlType::Q8_0 => WeightType::Q8_0,
            GgmlType::Q4_0 => WeightType::Q4_0,
            GgmlType::Q4_1 => WeightType::Q4_1,
            GgmlType::Q5_0 => WeightType::Q5_0,
            GgmlType::Q5_1 => WeightType::Q5_1,
            GgmlType::IQ4_NL => WeightType::IQ4_NL,
            GgmlType::TQ1_0 => WeightType::TQ1_0,
            GgmlType::TQ2_0 => WeightType::TQ2_0,
            GgmlType::I2_S => WeightType::I2_S,
            GgmlType::Q2_K => WeightType::Q2_K,
            GgmlType::Q3_K => WeightType::Q3_K,
            GgmlType::Q4_K => WeightType::Q4_K,
            GgmlType::Q5_K => WeightType::Q5_K,
            GgmlType::Q6_K => WeightType::Q6_K,
            _ => return None,
        })
    }

    /// The GGUF tensor type.
    pub fn ggml(self) -> GgmlType {
        match self {
            WeightType::F32 => GgmlType::F32,
            WeightType::F16 => GgmlType::F16,
            WeightType::BF16 => GgmlType::BF16,
            WeightType::Q8_0 => GgmlType::Q8_0,
            WeightType::Q4_0 => GgmlType::Q4_0,
            WeightType::Q4_1 => GgmlType::Q4_1,
            WeightType::Q5_0 => GgmlType::Q5_0,
            WeightType::Q5_1 => GgmlType::Q5_1,
            WeightType::IQ4_NL => GgmlType::IQ4_NL,
            WeightType::TQ1_0 => GgmlType::TQ1_0,
            WeightType::TQ2_0 => GgmlType::TQ2_0,
            WeightType::I2_S => GgmlType::I2_S,
            WeightType::Q2_K => GgmlType::Q2_K,
            WeightType::Q3_K => GgmlType::Q3_K,
            WeightType::Q4_K => GgmlType::Q4_K,
            WeightType::Q5_K => GgmlType::Q5_K,
            WeightType::Q6_K => GgmlType::Q6_K,
        }
    }

    /// How activations must be quantized for this weight type (ggml's `vec_dot_type`;
    /// bitnet.cpp's `GGML_TYPE_I8_S` for I2_S).
    pub fn activation_type(self) -> ActivationType {
        match self {
            WeightType::F32 => ActivationType::F32,
            WeightType::F16 => ActivationType::F16,
            WeightType::BF16 => ActivationType::BF16,
            WeightType::Q8_0 | WeightType::Q4_0 => ActivationType::Q8_0,
            WeightType::Q5_0 | WeightType::IQ4_NL => ActivationType::Q8_0,
            WeightType::Q4_1 | WeightType::Q5_1 => ActivationType::Q8_1,
            WeightType::TQ1_0 | WeightType::TQ2_0 => ActivationType::Q8_K,
            WeightType::I2_S => ActivationType::I8_S,
            WeightType::Q2_K
            | WeightType::Q3_K
            | WeightType::Q4_K
            | WeightType::Q5_K
            | WeightType::Q6_K => ActivationType::Q8_K,
        }
    }

    /// Row lengths must be a multiple of this.
    pub fn block_size(self) -> usize {
        match self {
            WeightType::F32 | WeightType::F16 | WeightType::BF16 => 1,
            WeightType::Q8_0 | WeightType::Q4_0 | WeightType::Q4_1 => QK,
            WeightType::Q5_0 | WeightType::Q5_1 | WeightType::IQ4_NL => QK,
            WeightType::TQ1_0 | WeightType::TQ2_0 => QK_K,
            WeightType::I2_S => QK_I2_S,
            WeightType::Q2_K
            | WeightType::Q3_K
            | WeightType::Q4_K
            | WeightType::Q5_K
            | WeightType::Q6_K => QK_K,
        }
    }
}

/// Signature shared by every row kernel: weight row bytes, I2_S weight scale (ignored by the
/// other types), activation.
pub(crate) type RowKernel = fn(&[u8], f32, &QuantizedActivation) -> f32;

/// The type of an absent four-row kernel (quantized matrices have none).
type Kernel4x4<A> = fn([&[u8]; 4], [&A; 4]) -> [[f32; 4]; 4];

/// A row kernel for four activations at once (the same bits as four [`RowKernel`] calls).
pub(crate) type RowKernel4 = fn(&[u8], f32, [&QuantizedActivation; 4]) -> [f32; 4];

/// Which implementation a kernel comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Backend {
    /// The fastest backend this CPU supports.
    pub(crate) fn detect() -> Backend {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::available() {
            return Backend::Avx2;
        }
        Backend::Scalar
    }
}

/// The four-activation kernel for `ty` from `backend`, where one exists.
pub(crate) fn kernel4(ty: WeightType, backend: Backend) -> Option<RowKernel4> {
    match backend {
        Backend::Scalar => None,
        // SAFETY (every arm): the AVX2 backend is only chosen when the CPU has AVX2, FMA and
        // F16C (`Backend::detect`).
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => match ty {
            WeightType::I2_S => Some(|w, s, a| unsafe { crate::x86::i2_s_i8_s_x4(w, s, a) }),
            WeightType::Q8_0 => Some(|w, s, a| unsafe { crate::x86::q8_0_q8_0_x4(w, s, a) }),
            WeightType::Q4_1 => Some(|w, s, a| unsafe { crate::x86::q4_1_q8_1_x4(w, s, a) }),
            WeightType::TQ1_0 | WeightType::TQ2_0 => {
                let flavor = crate::ternary_x86::Flavor::best();
                crate::ternary_x86::kernels(ty, flavor).map(|k| k.1)
            }
            WeightType::Q2_K
            | WeightType::Q3_K
            | WeightType::Q4_K
            | WeightType::Q5_K
            | WeightType::Q6_K => crate::kquants::x86::kernels(ty.ggml()).map(|k| k.1),
            // IQ4_NL's four-token kernel has the batch order (its `BatchKernels`).
            WeightType::Q5_0 | WeightType::Q5_1 => crate::legacy::kernel4(ty, backend),
            _ => None,
        },
    }
}

/// Which tokens of a batch llama.cpp multiplies in another order than a lone token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchRule {
    /// The tokens in whole groups of four (the repacked gemm; the rest take the gemv).
    WholeGroupsOfFour,
    /// Every token, when the batch has at least this many (the tiled k-quant matmul).
    AllFrom(usize),
}

/// The kernels for the tokens of a batch that [`BatchRule`] picks.
#[derive(Clone, Copy)]
struct BatchKernels {
    rule: BatchRule,
    kernel: RowKernel,
    kernel4: Option<RowKernel4>,
}

impl BatchKernels {
    /// How many of `n` tokens (the first ones) take these kernels.
    fn tokens(&self, n: usize) -> usize {
        match self.rule {
            BatchRule::WholeGroupsOfFour => n / 4 * 4,
            BatchRule::AllFrom(min) if n >= min => n,
            BatchRule::AllFrom(_) => 0,
        }
    }
}

/// The batch kernels of a plain (not repacked) matrix: llama.cpp multiplies k-quants in
/// batches of 8 tokens or more with its tiled matmul (`ggml_compute_forward_mul_mat_tiled`),
/// and IQ4_NL in batches of two or more with tinyBLAS (`llamafile_sgemm` declines `n < 2`),
/// whose order differs from `vec_dot`'s. (tinyBLAS also takes Q8_0, Q4_0 and Q5_0, with
/// `vec_dot`'s bits.)
fn batch_kernels(ty: WeightType, backend: Backend) -> Option<BatchKernels> {
    if ty == WeightType::IQ4_NL {
        return Some(BatchKernels {
            rule: BatchRule::AllFrom(2),
            kernel: crate::legacy::batch_kernel(ty, backend)?,
            kernel4: crate::legacy::kernel4(ty, backend),
        });
    }
    let (kernel, kernel4) = match backend {
        Backend::Scalar => (crate::kquants::scalar_tiled_kernel(ty.ggml())?, None),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => {
            let (one, four) = crate::kquants::x86::tiled_kernels(ty.ggml())?;
            (one, Some(four))
        }
    };
    Some(BatchKernels {
        rule: BatchRule::AllFrom(crate::kquants::TILED_MIN_BATCH),
        kernel,
        kernel4,
    })
}

/// Repacked Q4_K: `(gemv order, gemm order)` (see `kquants::q4_k::dot_repacked`).
fn repacked_q4_k_kernels(backend: Backend) -> (RowKernel, BatchKernels) {
    use crate::kquants::q4_k::{dot_repacked, GEMM_FOLD, GEMV_FOLD};
    let (gemv, gemm, gemm4): (RowKernel, RowKernel, Option<RowKernel4>) = match backend {
        Backend::Scalar => (
            |w, _, a| dot_repacked(w, a, GEMV_FOLD),
            |w, _, a| dot_repacked(w, a, GEMM_FOLD),
            None,
        ),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => {
            let (gemv, gemm, gemm4) = crate::kquants::x86::q4_k_repacked_kernels();
            (gemv, gemm, Some(gemm4))
        }
    };
    let batch = BatchKernels {
        rule: BatchRule::WholeGroupsOfFour,
        kernel: gemm,
        kernel4: gemm4,
    };
    (gemv, batch)
}

/// The kernel for Q4_0 repacked as llama.cpp repacks it.
fn repacked_q4_0_kernel(backend: Backend) -> RowKernel {
    match backend {
        Backend::Scalar => |w, _, a| dot::q4_0_q8_0_repacked(w, a),
        // SAFETY: the AVX2 backend is only chosen when the CPU has AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => |w, s, a| unsafe { crate::x86::q4_0_q8_0_repacked(w, s, a) },
    }
}

/// The row kernel for `ty` from `backend`.
pub(crate) fn kernel(ty: WeightType, backend: Backend) -> RowKernel {
    match backend {
        Backend::Scalar => match ty {
            WeightType::F32 => |w, _, a| dot::f32_f32(w, a),
            WeightType::F16 => |w, _, a| dot::f16_f16(w, a),
            WeightType::BF16 => |w, _, a| dot::bf16_bf16(w, a),
            WeightType::Q8_0 => |w, _, a| dot::q8_0_q8_0(w, a),
            WeightType::Q4_0 => |w, _, a| dot::q4_0_q8_0(w, a),
            WeightType::Q4_1 => |w, _, a| dot::q4_1_q8_1(w, a),
            WeightType::TQ1_0 => |w, _, a| dot::tq1_0_q8_k(w, a),
            WeightType::TQ2_0 => |w, _, a| dot::tq2_0_q8_k(w, a),
            WeightType::I2_S => dot::i2_s_i8_s,
            WeightType::Q5_0 | WeightType::Q5_1 | WeightType::IQ4_NL => {
                crate::legacy::kernel(ty, backend)
            }
            WeightType::Q2_K
            | WeightType::Q3_K
            | WeightType::Q4_K
            | WeightType::Q5_K
            | WeightType::Q6_K => {
                crate::kquants::scalar_kernel(ty.ggml()).expect("every k-quant has a scalar kernel")
            }
        },
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => crate::x86::kernel(ty),
    }
}

/// A weight matrix of `rows × cols` elements borrowed from its encoded bytes (e.g. a GGUF
/// memory map): rows are contiguous, `cols` elements each, in ggml's layout for the type.
///
/// Creating the view validates the size once and picks the fastest kernel for this CPU;
/// the accessors then never allocate or copy weights.
#[derive(Clone, Copy)]
pub struct QuantizedMatrix<'a> {
    ty: WeightType,
    data: &'a [u8],
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// I2_S: the per-tensor scale; 1 for the other types (unused).
    scale: f32,
    kernel: RowKernel,
    kernel4: Option<RowKernel4>,
    /// Kernels for the tokens of a batch that llama.cpp sums in another order.
    batch: Option<BatchKernels>,
    backend: Backend,
}

impl std::fmt::Debug for QuantizedMatrix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedMatrix")
            .field("ty", &self.ty)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl<'a> QuantizedMatrix<'a> {
    /// View `data` (the whole tensor, `rows × cols` elements of `ty`) as a matrix.
    ///
    /// # Errors
    /// [`QuantError::Unsupported`] for a type without kernels, [`QuantError::PartialBlock`]
    /// when `cols` is not a multiple of the type's block size (128 for I2_S),
    /// [`QuantError::Size`] when `data` is not exactly the tensor's size.
    pub fn new(ty: GgmlType, data: &'a [u8], rows: usize, cols: usize) -> Result<Self, QuantError> {
        let wt = WeightType::from_ggml(ty).ok_or(QuantError::Unsupported(ty))?;
        let block = wt.block_size();
        if cols == 0 || !cols.is_multiple_of(block) {
            return Err(QuantError::PartialBlock {
                ty,
                block: block as u64,
                row_len: cols,
            });
        }
        let n = rows * cols;
        let expected = blocks::tensor_bytes(ty, n);
        if data.len() != expected {
            return Err(QuantError::Size {
                ty,
                elements: n,
                expected,
                got: data.len(),
            });
        }
        let scale = if wt == WeightType::I2_S {
            f32::from_le_bytes(data[n / 4..n / 4 + 4].try_into().unwrap())
        } else {
            1.0
        };
        Ok(QuantizedMatrix {
            ty: wt,
            data,
            rows,
            cols,
            row_bytes: blocks::row_bytes(ty, cols),
            scale,
            kernel: kernel(wt, Backend::detect()),
            kernel4: kernel4(wt, Backend::detect()),
            batch: batch_kernels(wt, Backend::detect()),
            backend: Backend::detect(),
        })
    }

    /// The same matrix summed the way llama.cpp sums it after repacking: on x86 with AVX2,
    /// llama.cpp moves Q4_0, IQ4_NL and Q4_K weights whose row count is a multiple of 8 into
    /// interleaved 8×8 blocks (`GGML_CPU_REPACK`, `ggml_repack_get_optimal_repack_type`) and
    /// folds each row's integer sums into scalar accumulators instead of eight lanes reduced
    /// at the end: Q4_0 and IQ4_NL block by block, for one token and a batch alike; Q4_K
    /// every super-block for one token (`gemv`) but every 64 elements for the tokens of a
    /// batch it takes in whole groups of four (`gemm`), which [`QuantizedMatrix::matmul`]
    /// reproduces. Other types and shapes are returned unchanged.
    pub fn repacked_like_llama_cpp(mut self) -> Self {
        if !self.rows.is_multiple_of(8) {
            return self;
        }
        match self.ty {
            WeightType::Q4_0 => {
                self.kernel = repacked_q4_0_kernel(self.backend);
                self.kernel4 = None;
            }
            WeightType::IQ4_NL => {
                let (kernel, kernel4) = crate::legacy::repacked_iq4_nl(self.backend);
                self.kernel = kernel;
                self.kernel4 = kernel4;
                // The repacked kernels replace tinyBLAS for a batch too.
                self.batch = None;
            }
            WeightType::Q4_K => {
                let (gemv, gemm) = repacked_q4_k_kernels(self.backend);
                self.kernel = gemv;
                self.kernel4 = None;
                self.batch = Some(gemm);
            }
            _ => {}
        }
        self
    }

    /// The weight type.
    pub fn weight_type(&self) -> WeightType {
        self.ty
    }

    /// The activation type [`QuantizedMatrix::dot_row`] expects.
    pub fn activation_type(&self) -> ActivationType {
        self.ty.activation_type()
    }

    /// Number of rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (elements per row, inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The encoded bytes of row `i` (for I2_S: the packed codes only; the scale is the
    /// tensor's, see [`QuantizedMatrix::dequantize_row`]).
    ///
    /// # Panics
    /// If `i >= rows`.
    pub fn row(&self, i: usize) -> &'a [u8] {
        assert!(i < self.rows, "row {i} out of range ({} rows)", self.rows);
        &self.data[i * self.row_bytes..(i + 1) * self.row_bytes]
    }

    /// Row `i` decoded to f32 into `out` (`cols` elements).
    ///
    /// # Panics
    /// If `i >= rows` or `out.len() != cols`.
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols, "output length must equal cols");
        let row = self.row(i);
        match self.ty {
            WeightType::I2_S => dequantize::i2_s_row(row, self.scale, out),
            ty => dequantize::row(ty.ggml(), row, out),
        }
    }

    /// Dot product of row `i` with `act`, computed as the C++ reference computes it for a
    /// lone token (see [`QuantizedMatrix::matmul`] for batches).
    ///
    /// # Panics
    /// If `i >= rows`, or `act` is not of [`QuantizedMatrix::activation_type`] with `cols`
    /// elements.
    #[inline]
    pub fn dot_row(&self, i: usize, act: &QuantizedActivation) -> f32 {
        self.check(act);
        (self.kernel)(self.row(i), self.scale, act)
    }

    /// `out[r] = dot_row(r, act)` for every row, in parallel over rows (rayon).
    ///
    /// # Panics
    /// As [`QuantizedMatrix::dot_row`], and if `out.len() != rows`.
    pub fn matvec(&self, act: &QuantizedActivation, out: &mut [f32]) {
        self.check(act);
        assert_eq!(out.len(), self.rows, "output length must equal rows");
        self.products(
            std::slice::from_ref(act),
            self.cols,
            out,
            |w, a| (self.kernel)(w, self.scale, a),
            None::<fn(&[u8], [&QuantizedActivation; 4]) -> [f32; 4]>,
            None::<Kernel4x4<QuantizedActivation>>,
        );
    }

    /// Batched product: `out[t * rows + r] = dot_row(r, &acts[t])` (token-major, like
    /// ggml's `dst`) — except where llama.cpp sums a batch in another order than a lone
    /// token, which this reproduces: k-quants in batches of 8 or more tokens take its tiled
    /// matmul; IQ4_NL (not repacked) in batches of two or more its tinyBLAS order; for
    /// repacked Q4_K the tokens in whole groups of four (all but the last `acts.len() % 4`)
    /// take its gemm.
    ///
    /// # Panics
    /// As [`QuantizedMatrix::dot_row`] for every activation, and if
    /// `out.len() != acts.len() * rows`.
    pub fn matmul(&self, acts: &[QuantizedActivation], out: &mut [f32]) {
        acts.iter().for_each(|a| self.check(a));
        assert_eq!(
            out.len(),
            acts.len() * self.rows,
            "output must be tokens × rows"
        );
        let special = self.batch.map_or(0, |b| b.tokens(acts.len()));
        let (group_acts, rest_acts) = acts.split_at(special);
        let (group_out, rest_out) = out.split_at_mut(special * self.rows);
        if let Some(g) = self.batch.filter(|_| special > 0) {
            self.products(
                group_acts,
                self.cols,
                group_out,
                |w, a| (g.kernel)(w, self.scale, a),
                g.kernel4
                    .map(|k| move |w: &[u8], a: [&QuantizedActivation; 4]| k(w, self.scale, a)),
                None::<Kernel4x4<QuantizedActivation>>,
            );
        }
        self.products(
            rest_acts,
            self.cols,
            rest_out,
            |w, a| (self.kernel)(w, self.scale, a),
            self.kernel4
                .map(|k| move |w: &[u8], a: [&QuantizedActivation; 4]| k(w, self.scale, a)),
            None::<Kernel4x4<QuantizedActivation>>,
        );
    }

    /// Float product summed in the order of a specific ggml build:
    /// `out[t * rows + r] = row r · x[t]` for the `x.len() / cols` rows of `x`, F32 or F16
    /// weights only. `scratch` holds the prepared activations (reused across calls).
    ///
    /// # Errors
    /// [`QuantError::Unsupported`] for other weight types.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `cols`, or `out.len()` is not tokens × rows.
    pub fn float_matmul(
        &self,
        order: FloatOrder,
        x: &[f32],
        scratch: &mut Vec<Vec<f32>>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let weights = match self.ty {
            WeightType::F32 => FloatWeights::F32,
            WeightType::F16 => FloatWeights::F16,
            other => return Err(QuantError::Unsupported(other.ggml())),
        };
        assert_eq!(x.len() % self.cols, 0, "x must be whole rows of cols");
        let n = x.len() / self.cols;
        assert_eq!(out.len(), n * self.rows, "output must be tokens × rows");
        scratch.resize_with(n, Vec::new);
        for (p, row) in scratch.iter_mut().zip(x.chunks_exact(self.cols)) {
            float_order::prepare(order, weights, row, p);
        }
        let dot = float_order::kernel(order, weights, self.cols);
        // The multi-token kernels take whole registers only.
        let whole = self.cols.is_multiple_of(order.width().lanes());
        let dot4 = float_order::kernel4(order, weights).filter(|_| whole);
        let dot16 = float_order::kernel4x4(order, weights).filter(|_| whole);
        self.products(
            &scratch[..n],
            4 * self.cols,
            out,
            |w, a| dot.call(w, a),
            dot4.map(|k| move |w: &[u8], a: [&Vec<f32>; 4]| k(w, a.map(|v| v.as_slice()))),
            dot16.map(|k| move |w: [&[u8]; 4], a: [&Vec<f32>; 4]| k(w, a.map(|v| v.as_slice()))),
        );
        Ok(())
    }

    /// `out[t * rows + r] = dot(row r, acts[t])`, in parallel, the same bits whatever the
    /// split. One token: tasks over rows. Several, two schedules:
    /// - with a four-row kernel (`dot16`, the float tinyBLAS order): the tokens go in blocks
    ///   whose activations (`act_bytes` each) fit in a core's L2 cache, and each block is split
    ///   into tasks of rows that walk all of its tokens, so the weights (a 128k-row output head)
    ///   are read from memory once per block;
    /// - otherwise: tasks take groups of up to 8 tokens and walk all rows, so the group's
    ///   activations stay in L1 — what the integer kernels, which reload them for every row,
    ///   need most — by `dot4` four tokens at a time where the type has it.
    fn products<A: Sync>(
        &self,
        acts: &[A],
        act_bytes: usize,
        out: &mut [f32],
        dot: impl Fn(&[u8], &A) -> f32 + Sync,
        dot4: Option<impl Fn(&[u8], [&A; 4]) -> [f32; 4] + Sync>,
        dot16: Option<impl Fn([&[u8]; 4], [&A; 4]) -> [[f32; 4]; 4] + Sync>,
    ) {
        const L2_BUDGET: usize = 256 * 1024;
        const MAX_TOKENS_PER_TASK: usize = 8;
        let rows = self.rows;
        if rows == 0 || acts.is_empty() {
            return;
        }
        let threads = rayon::current_num_threads();
        if acts.len() == 1 {
            // Tasks of at least ~16 KiB of weights, about four per thread, claimed as threads
            // become free.
            let min_rows = (16384 / self.row_bytes.max(1)).max(1);
            let per_task = rows.div_ceil(4 * threads).max(min_rows);
            let a = &acts[0];
            let out = DisjointWrites::new(out);
            crate::spin::for_each(rows.div_ceil(per_task), &|task| {
                let lo = task * per_task;
                for r in lo..(lo + per_task).min(rows) {
                    // SAFETY: each task writes its own rows.
                    unsafe { out.write(r, dot(self.row(r), a)) };
                }
            });
            return;
        }
        let out = DisjointWrites::new(out);
        // Tokens `a` (the first is token t0) × rows lo..hi.
        let fill = |a: &[A], t0: usize, lo: usize, hi: usize| {
            let quads = a.len() / 4;
            let quad = |q: usize| [&a[4 * q], &a[4 * q + 1], &a[4 * q + 2], &a[4 * q + 3]];
            let set = |t: usize, r: usize, v: f32| {
                // SAFETY: the schedules below give every (token, row) to exactly one task.
                unsafe { out.write((t0 + t) * rows + r, v) }
            };
            let mut r0 = lo;
            if let Some(dot16) = &dot16 {
                while r0 + 4 <= hi {
                    let w = [
                        self.row(r0),
                        self.row(r0 + 1),
                        self.row(r0 + 2),
                        self.row(r0 + 3),
                    ];
                    for q in 0..quads {
                        for (i, y) in dot16(w, quad(q)).into_iter().enumerate() {
                            for (k, v) in y.into_iter().enumerate() {
                                set(4 * q + k, r0 + i, v);
                            }
                        }
                    }
                    for (t, act) in a.iter().enumerate().skip(4 * quads) {
                        for (i, wr) in w.iter().enumerate() {
                            set(t, r0 + i, dot(wr, act));
                        }
                    }
                    r0 += 4;
                }
            }
            for r in r0..hi {
                let w = self.row(r);
                let mut done = 0;
                if let Some(dot4) = &dot4 {
                    for q in 0..quads {
                        for (k, v) in dot4(w, quad(q)).into_iter().enumerate() {
                            set(4 * q + k, r, v);
                        }
                    }
                    done = 4 * quads;
                }
                for (t, act) in a.iter().enumerate().skip(done) {
                    set(t, r, dot(w, act));
                }
            }
        };
        if dot16.is_some() {
            let block = (L2_BUDGET / act_bytes.max(1)).max(4) / 4 * 4;
            let rows_per_task = rows.div_ceil(4 * threads).div_ceil(4).max(1) * 4;
            for (b, a) in acts.chunks(block).enumerate() {
                crate::spin::for_each(rows.div_ceil(rows_per_task), &|task| {
                    let lo = task * rows_per_task;
                    fill(a, b * block, lo, (lo + rows_per_task).min(rows));
                });
            }
        } else {
            let group = acts
                .len()
                .div_ceil(2 * threads)
                .clamp(1, MAX_TOKENS_PER_TASK);
            crate::spin::for_each(acts.len().div_ceil(group), &|g| {
                let a = &acts[g * group..((g + 1) * group).min(acts.len())];
                fill(a, g * group, 0, rows);
            });
        }
    }

    #[inline]
    fn check(&self, act: &QuantizedActivation) {
        assert!(
            act.ty() == self.activation_type() && act.len() == self.cols,
            "activation is {:?} × {}, the {:?} matrix needs {:?} × {}",
            act.ty(),
            act.len(),
            self.ty,
            self.activation_type(),
            self.cols
        );
    }

    /// Row `i` times `act` in the order llama.cpp uses for a batch of two tokens (tests).
    #[cfg(test)]
    pub(crate) fn batch_dot_row(&self, i: usize, act: &QuantizedActivation) -> f32 {
        self.check(act);
        let k = self
            .batch
            .filter(|b| b.tokens(2) == 2)
            .map_or(self.kernel, |b| b.kernel);
        k(self.row(i), self.scale, act)
    }

    /// The same matrix using the given kernel backend (tests compare backends).
    #[cfg(test)]
    pub(crate) fn with_backend(mut self, backend: Backend) -> Self {
        self.kernel = kernel(self.ty, backend);
        self.kernel4 = kernel4(self.ty, backend);
        self.batch = batch_kernels(self.ty, backend);
        self.backend = backend;
        self
    }
}

/// An output slice that parallel tasks fill at indices they own exclusively (tasks own
/// disjoint sets of rows, and the token-major layout interleaves them, so the slice cannot be
/// split into contiguous parts).
struct DisjointWrites {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: shared between tasks only for `write`, whose callers guarantee that no index is
// written by two tasks; the borrow of the slice outlives every task (`products` returns after
// the parallel loops).
unsafe impl Sync for DisjointWrites {}

impl DisjointWrites {
    fn new(out: &mut [f32]) -> Self {
        DisjointWrites {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// # Safety
    /// No other task may write index `i` concurrently.
    #[inline(always)]
    unsafe fn write(&self, i: usize, v: f32) {
        assert!(i < self.len, "output index {i} out of range ({})", self.len);
        // SAFETY: in bounds (checked); exclusive per the caller's contract.
        unsafe { *self.ptr.add(i) = v };
    }
}
