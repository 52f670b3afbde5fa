//! Activation quantization: what ggml does to the f32 input of a matmul before it calls the
//! weight type's `vec_dot` (the `vec_dot_type` / `from_float` pair in `ggml-cpu/ggml-cpu.c`
//! `type_traits_cpu`, and in bitnet.cpp's `ggml.c` `type_traits` for I2_S).

use bitnet_gguf::GgmlType;

use crate::blocks::{f16_bytes, nearest_int, round_f16, QK, QK_K};
use crate::QuantError;

/// The form a weight type wants its activations in (ggml's `vec_dot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum ActivationType {
    /// Plain f32 (F32 weights).
    F32,
    /// Rounded to f16 (F16 weights: `ggml_cpu_fp32_to_fp16`).
    F16,
    /// Rounded to bf16 (BF16 weights: `ggml_cpu_fp32_to_bf16`).
    BF16,
    /// Blocks of 32 int8 with an f16 scale (Q8_0 and Q4_0 weights: `quantize_row_q8_0`).
    Q8_0,
    /// Q8_0 plus the f16 of `d · Σq` per block (Q4_1 weights: `quantize_row_q8_1`).
    Q8_1,
    /// Blocks of 256 int8 with an f32 scale and 16-element sums (TQ1_0 / TQ2_0 weights:
    /// `quantize_row_q8_K`).
    Q8_K,
    /// BitNet's per-row int8: one f32 scale `127 / max|x|` and `Σq` for the whole row (I2_S
    /// weights: bitnet.cpp `quantize_row_i8_s`).
    I8_S,
}

/// Which of ggml's two x86 Q8_0 / Q8_1 activation quantizers to reproduce.
///
/// They differ in the last bit: the reference (`quantize_row_q8_0_ref`, `…_q8_1_ref` in
/// `ggml-quants.c`, used by builds without AVX) multiplies by `1/d` and rounds half away from
/// zero; the AVX/AVX2 build (`quantize_row_q8_0` / `quantize_row_q8_1` in
/// `ggml-cpu/arch/x86/quants.c`) multiplies by `127/amax` and rounds half to even
/// (`_mm256_round_ps(.., _MM_ROUND_NEAREST)`). Match the build you compare against. The
/// default is [`Q8Flavor::Avx`]: `llama-cpp-sys-2` builds ggml with `GGML_NATIVE=OFF`, which
/// turns ggml's `GGML_AVX`, `GGML_AVX2`, `GGML_FMA` and `GGML_F16C` options on
/// (`ggml/CMakeLists.txt`, `INS_ENB`; confirmed in the reference's `CMakeCache.txt`). Q8_K and
/// I8_S have a single implementation and ignore the flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Q8Flavor {
    /// ggml's portable reference quantizers.
    Generic,
    /// ggml's x86 build with `__AVX__` or `__AVX2__` (how the project's llama.cpp is built).
    #[default]
    Avx,
}

/// One activation row, quantized for a dot product with a weight row.
///
/// Reusable: [`QuantizedActivation::quantize`] overwrites the contents and keeps the buffers,
/// so a forward pass that quantizes into the same value every time allocates only once.
///
/// Invariants (established by `quantize`): for block types `len` is a whole number of blocks;
/// `qs` holds `len` codes; `d` one scale per block (f16 scales already widened to f32);
/// `s` one f16-rounded `d·Σq` per block (Q8_1); `bsums` 16 sums per block (Q8_K).
#[derive(Debug, Clone)]
pub struct QuantizedActivation {
    pub(crate) ty: ActivationType,
    pub(crate) len: usize,
    /// F32 / F16 / BF16: the values (already rounded to the type).
    pub(crate) values: Vec<f32>,
    /// Int8 codes (Q8_0, Q8_1, Q8_K, I8_S).
    pub(crate) qs: Vec<i8>,
    /// Per-block scale as the kernels use it.
    pub(crate) d: Vec<f32>,
    /// Q8_1: per-block `s`.
    pub(crate) s: Vec<f32>,
    /// Q8_K: per-16 sums of the codes.
    pub(crate) bsums: Vec<i16>,
    /// I8_S: `127 / max(|x|, 1e-5)` as f32 ("act_scale").
    pub(crate) row_scale: f32,
    /// I8_S: Σq ("act_sum").
    pub(crate) row_sum: i32,
}

impl Default for QuantizedActivation {
    fn default() -> Self {
        Self::new()
    }
}

impl QuantizedActivation {
    /// An empty activation (F32, length 0); fill it with [`QuantizedActivation::quantize`].
    pub fn new() -> Self {
        QuantizedActivation {
            ty: ActivationType::F32,
            len: 0,
            values: Vec::new(),
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            bsums: Vec::new(),
            row_scale: 0.0,
            row_sum: 0,
        }
    }

    /// The activation type this value currently holds.
    pub fn ty(&self) -> ActivationType {
        self.ty
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Quantize `x` as `ty` with the default ([`Q8Flavor::Avx`]) Q8_0 / Q8_1 quantizers.
    ///
    /// # Errors
    /// [`QuantError::PartialBlock`] when `x.len()` is not a multiple of the block size (32 for
    /// Q8_0 / Q8_1, 256 for Q8_K).
    pub fn quantize(&mut self, ty: ActivationType, x: &[f32]) -> Result<(), QuantError> {
        self.quantize_with(ty, x, Q8Flavor::default())
    }

    /// Quantize `x` as `ty`, choosing which ggml Q8_0 / Q8_1 implementation to reproduce.
    ///
    /// # Errors
    /// As [`QuantizedActivation::quantize`].
    pub fn quantize_with(
        &mut self,
        ty: ActivationType,
        x: &[f32],
        flavor: Q8Flavor,
    ) -> Result<(), QuantError> {
        let block = match ty {
            ActivationType::Q8_0 => Some((GgmlType::Q8_0, QK)),
            ActivationType::Q8_1 => Some((GgmlType::Q8_1, QK)),
            ActivationType::Q8_K => Some((GgmlType::Q8_K, QK_K)),
            _ => None,
        };
        if let Some((gt, qk)) = block {
            if !x.len().is_multiple_of(qk) {
                return Err(QuantError::PartialBlock {
                    ty: gt,
                    block: qk as u64,
                    row_len: x.len(),
                });
            }
        }
        self.ty = ty;
        self.len = x.len();
        self.values.clear();
        self.qs.clear();
        self.d.clear();
        self.s.clear();
        self.bsums.clear();
        match ty {
            ActivationType::F32 => self.values.extend_from_slice(x),
            ActivationType::F16 => self.values.extend(x.iter().map(|&v| round_f16(v))),
            ActivationType::BF16 => self
                .values
                .extend(x.iter().map(|&v| half::bf16::from_f32(v).to_f32())),
            ActivationType::Q8_0 | ActivationType::Q8_1 => {
                self.qs.resize(x.len(), 0);
                for (xb, qb) in x.chunks_exact(QK).zip(self.qs.chunks_exact_mut(QK)) {
                    let (d, sum) = q8_block(xb, qb, flavor);
                    // The kernels read `GGML_CPU_FP16_TO_FP32(y.d)`: the stored f16.
                    self.d.push(round_f16(d));
                    if ty == ActivationType::Q8_1 {
                        // `y.s = GGML_FP32_TO_FP16(sum*d)` with the f32 (unrounded) d.
                        self.s.push(round_f16(sum as f32 * d));
                    }
                }
            }
            ActivationType::Q8_K => {
                self.qs.resize(x.len(), 0);
                self.bsums.resize(x.len() / 16, 0);
                for ((xb, qb), bs) in x
                    .chunks_exact(QK_K)
                    .zip(self.qs.chunks_exact_mut(QK_K))
                    .zip(self.bsums.chunks_exact_mut(QK_K / 16))
                {
                    self.d.push(q8_k_block(xb, qb, bs));
                }
            }
            ActivationType::I8_S => {
                self.qs.resize(x.len(), 0);
                let (scale, sum) = i8_s_row(x, &mut self.qs);
                self.row_scale = scale;
                self.row_sum = sum;
            }
        }
        Ok(())
    }

    /// Append a Q8_0 activation's blocks in ggml's `block_q8_0` layout (f16 scale, then 32
    /// codes): what a Q8_0 KV cache stores, since ggml writes a cache row with the same
    /// quantizer (`set_rows` through `from_float`). `None` for any other type.
    pub fn append_q8_0_blocks(&self, out: &mut Vec<u8>) -> Option<()> {
        if self.ty != ActivationType::Q8_0 {
            return None;
        }
        for (q, &d) in self.qs.chunks_exact(QK).zip(&self.d) {
            // `d` is an f16 widened to f32: rounding it again is exact.
            out.extend_from_slice(&f16_bytes(d));
            out.extend(q.iter().map(|&c| c as u8));
        }
        Some(())
    }

    /// The values the quantized activation stands for (codes times scales), into `out`.
    ///
    /// # Panics
    /// If `out.len() != self.len()`.
    pub fn dequantize(&self, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.len,
            "output length must match the activation"
        );
        match self.ty {
            ActivationType::F32 | ActivationType::F16 | ActivationType::BF16 => {
                out.copy_from_slice(&self.values)
            }
            ActivationType::Q8_0 | ActivationType::Q8_1 | ActivationType::Q8_K => {
                let qk = if self.ty == ActivationType::Q8_K {
                    QK_K
                } else {
                    QK
                };
                for ((o, q), d) in out
                    .chunks_exact_mut(qk)
                    .zip(self.qs.chunks_exact(qk))
                    .zip(&self.d)
                {
                    for (o, &q) in o.iter_mut().zip(q) {
                        *o = q as f32 * d;
                    }
                }
            }
            ActivationType::I8_S => {
                for (o, &q) in out.iter_mut().zip(&self.qs) {
                    *o = q as f32 / self.row_scale;
                }
            }
        }
    }
}

/// One Q8_0 / Q8_1 block; returns the f32 scale `d` and Σq.
fn q8_block(x: &[f32], q: &mut [i8], flavor: Q8Flavor) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (and so SSE4.1): rounding becomes one `roundss`/`roundps`
        // instead of a call to libm's `rintf`, with the same results.
        return unsafe { q8_block_avx2(x, q, flavor) };
    }
    q8_block_impl(x, q, flavor)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn q8_block_avx2(x: &[f32], q: &mut [i8], flavor: Q8Flavor) -> (f32, i32) {
    q8_block_impl(x, q, flavor)
}

#[inline(always)]
fn q8_block_impl(x: &[f32], q: &mut [i8], flavor: Q8Flavor) -> (f32, i32) {
    let amax = match flavor {
        Q8Flavor::Generic => x.iter().fold(0.0f32, |m, v| m.max(v.abs())),
        Q8Flavor::Avx => avx_block_amax(x),
    };
    // Both flavours: `d = amax / 127` in f32.
    let d = amax / 127.0;
    let mut sum = 0i32;
    match flavor {
        Q8Flavor::Generic => {
            // `quantize_row_q8_0_ref` / `quantize_row_q8_1_ref`: id = 1/d, roundf.
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (q, &v) in q.iter_mut().zip(x) {
                *q = (v * id).round() as i8;
                sum += *q as i32;
            }
        }
        Q8Flavor::Avx => {
            // x86 `quantize_row_q8_0` / `q8_1`: id = 127/amax, round half to even, then
            // `_mm256_cvtps_epi32` + saturating packs (values are within ±127 anyway).
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            for (q, &v) in q.iter_mut().zip(x) {
                *q = cvtps_epi32_packs_i8((v * id).round_ties_even());
                sum += *q as i32;
            }
        }
    }
    (d, sum)
}

/// `_mm256_max_ps(a, b)` on one lane: `a > b ? a : b`, so a NaN in either operand gives `b`.
#[inline(always)]
fn maxps(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// max|x| of a 32-element block as the AVX `quantize_row_q8_0` / `q8_1` (and the repacked
/// `ggml_quantize_mat_q8_0_4x8`) reduce it: four 8-lane vectors folded lane by lane, then
/// the halves, then pairs. For finite input this is the plain maximum; with a NaN it is
/// whatever that order of `maxps` gives (NaN or not), which decides whether the reference's
/// block scale becomes NaN.
#[inline(always)]
fn avx_block_amax(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (l, lane) in lanes.iter_mut().enumerate() {
        let mut m = x[l].abs();
        for v in 1..4 {
            m = maxps(m, x[8 * v + l].abs());
        }
        *lane = m;
    }
    // _mm_max_ps(high half, low half), then with its own high pair, then lane 0 with lane 1.
    let m4: [f32; 4] = std::array::from_fn(|j| maxps(lanes[4 + j], lanes[j]));
    maxps(maxps(m4[0], m4[2]), maxps(m4[1], m4[3]))
}

/// `_mm256_cvtps_epi32` then the saturating `packs` to int8, for an already rounded value:
/// NaN and anything outside the i32 range become the "integer indefinite" i32::MIN, which
/// saturates to −128.
#[inline(always)]
fn cvtps_epi32_packs_i8(r: f32) -> i8 {
    if r.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&r) {
        -128
    } else {
        (r as i32).clamp(-128, 127) as i8
    }
}

/// ggml `quantize_row_q8_K_ref` (x86 `quantize_row_q8_K` calls it): scale from the signed
/// value of largest magnitude (first one wins), `iscale = −127/max`, `q = min(127,
/// nearest_int(iscale·x))`, `d = 1/iscale`; bsums are sums of 16 consecutive codes. An
/// all-zero block gets d = 0 and zero codes (ggml leaves its bsums unwritten; we zero them).
fn q8_k_block(x: &[f32], q: &mut [i8], bsums: &mut [i16]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, qs) in bsums.iter_mut().zip(q.chunks_exact(16)) {
        *s = qs.iter().map(|&v| v as i16).sum();
    }
    1.0 / iscale
}

/// bitnet.cpp `quantize_row_i8_s` (`3rdparty/llama.cpp/ggml/src/ggml-quants.c`): max|x| in
/// double starting from 1e-5, `s = (float)(127 / max)`, `q = clamp(nearest_int(x·s), −128,
/// 127)`, and Σq. Returns (s, Σq).
///
/// `nearest_int` adds 1.5·2²³ to round; built with `-march=native`, GCC fuses that addition
/// with the product `x·s` into one FMA (`vfmadd132ps`/`vfmadd132ss` in both the vector loop
/// and the scalar fallback of the reference's `libggml.a`), so the product is never rounded
/// to f32 first. Rounding it first changes a code whenever `x·s` lies within half an f32 ulp
/// of a half-integer, which over a forward pass happens every few tokens.
fn i8_s_row(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (hardware fused multiply-add instead of libm's `fmaf`: the
        // same results, faster).
        return unsafe { i8_s_row_fma(x, q) };
    }
    i8_s_row_impl(x, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn i8_s_row_fma(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    i8_s_row_impl(x, q)
}

#[inline(always)]
fn i8_s_row_impl(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    // `max = MAX(max, fabs(x))` with ggml's `MAX(a, b) ((a) > (b) ? (a) : (b))`: a NaN
    // becomes the maximum, and the next value replaces it (f64::max would skip the NaN).
    let max = x.iter().fold(0.00001f64, |m, &v| {
        let a = (v as f64).abs();
        if m > a {
            m
        } else {
            a
        }
    });
    let s = (127.0 / max) as f32;
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        // ggml's `nearest_int` on the fused value: the low mantissa bits hold the integer.
        let magic = v.mul_add(s, 12_582_912.0);
        let v = ((magic.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000).clamp(-128, 127);
        sum += v;
        *q = v as i8;
    }
    (s, sum)
}
