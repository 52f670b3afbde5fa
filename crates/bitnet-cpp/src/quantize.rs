//! llama.cpp's own quantizer, run in the llama.cpp reference process.
//!
//! A GGUF file quantized here has exactly the tensor mix a user's
//! `llama-quantize IN OUT TYPE` produces: the same `llama_model_quantize`, with
//! `llama_model_quantize_default_params()` (no importance matrix, no overrides), changing only
//! the file type, whether requantizing is allowed, and threads.
//!
//! The type names are llama-quantize's (`tools/quantize/quantize.cpp`, `QUANT_OPTIONS`, in its
//! order, with its case-insensitive and numeric lookup). A name is *accepted* only when every
//! tensor type its mix can produce is one the engine multiplies ([`ENGINE_TYPES`]); the mix
//! of each file type was read from `llama-quant.cpp` of the pinned llama.cpp
//! (`llama_tensor_get_type_impl`, `tensor_type_fallback`), including the rarer paths: the
//! q6_K/q8_0 output head, row lengths that are not a multiple of the block size (q4_K → q5_0,
//! q5_K → q5_1, q6_K → q8_0, 256-blocks → q4_0, anything → f16 when not a multiple of 32),
//! eight-expert and 70B-shaped models. Tensors llama.cpp never quantizes (norms, 1-d tensors)
//! keep their input type whatever the mix.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bitnet_gguf::{GgmlType, GgufError, GgufFile};

use crate::protocol::{
    QuantizeProgress, QuantizeReport, QuantizeRequest, Request, Response, WirePath,
};
use crate::{Backend, CppError, Session, SessionOptions};

/// The tensor types the engine multiplies once issue 10's type branches (Q5_0/Q5_1/IQ4_NL,
/// the K-quants) have landed: a file type is accepted when its mix stays within these.
pub const ENGINE_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

/// One of llama-quantize's file types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ftype {
    /// llama-quantize's name (`Q4_K_M`).
    pub name: &'static str,
    /// The `llama_ftype` id.
    pub id: u32,
    /// Every tensor type the mix can give a quantized tensor (read from `llama-quant.cpp`;
    /// for refused types, enough of them to show why).
    pub produces: &'static [GgmlType],
    /// Why the type is refused even though its tensor types are supported.
    reason: Option<&'static str>,
}

macro_rules! ftype {
    ($name:literal, $id:literal, [$($t:ident),*]) => {
        Ftype { name: $name, id: $id, produces: &[$(GgmlType::$t),*], reason: None }
    };
    ($name:literal, $id:literal, [$($t:ident),*], $reason:literal) => {
        Ftype { name: $name, id: $id, produces: &[$(GgmlType::$t),*], reason: Some($reason) }
    };
}

/// llama-quantize's list, in its order (a numeric type resolves to the first entry with that
/// id, as there: 12 is `Q3_K`).
pub const FTYPES: &[Ftype] = &[
    ftype!("Q1_0", 40, [Q1_0, Q6_K, Q8_0, F16]),
    ftype!("Q2_0", 41, [Q2_0, Q4_K, Q4_0, Q6_K, Q8_0, F16]),
    ftype!("Q4_0", 2, [Q4_0, Q6_K, Q8_0, F16]),
    ftype!("Q4_1", 3, [Q4_1, Q6_K, Q8_0, F16]),
    ftype!("MXFP4_MOE", 38, [MXFP4, Q8_0, F16]),
    ftype!("Q5_0", 8, [Q5_0, Q6_K, Q8_0, F16]),
    ftype!("Q5_1", 9, [Q5_1, Q6_K, Q8_0, F16]),
    ftype!("IQ2_XXS", 19, [IQ2_XXS, IQ4_NL, Q2_K, Q4_K, Q5_K, Q8_0, F16]),
    ftype!("IQ2_XS", 20, [IQ2_XS, IQ4_NL, Q2_K, Q4_K, Q5_K, Q8_0, F16]),
    ftype!("IQ2_S", 28, [IQ2_XS, IQ3_S, IQ4_NL, Q4_K, Q5_K, Q8_0, F16]),
    ftype!("IQ2_M", 29, [IQ2_S, IQ3_S, IQ4_NL, Q4_K, Q5_K, Q8_0, F16]),
    ftype!("IQ1_S", 24, [IQ1_S, IQ2_XXS, IQ4_NL, Q2_K, Q4_K, Q5_K, Q8_0, F16]),
    ftype!("IQ1_M", 31, [IQ1_M, IQ2_XXS, IQ4_NL, Q2_K, Q4_K, Q5_K, Q8_0, F16]),
    ftype!("TQ1_0", 36, [TQ1_0, Q4_K, Q6_K, Q8_0, Q4_0, Q5_0, F16]),
    ftype!("TQ2_0", 37, [TQ2_0, Q4_K, Q6_K, Q8_0, Q4_0, Q5_0, F16]),
    ftype!("Q2_K", 10, [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q5_0, Q5_1, F16]),
    ftype!(
        "Q2_K_S",
        21,
        [Q2_K, Q4_K, Q6_K, Q8_0, Q4_0, Q5_0, F16],
        "llama.cpp requires an importance matrix for it (llama-quantize --imatrix), which this command does not take"
    ),
    ftype!("IQ3_XXS", 23, [IQ3_XXS, IQ3_S, IQ2_S, IQ4_NL, Q4_K, Q6_K, Q8_0, F16]),
    ftype!("IQ3_S", 26, [IQ3_S, IQ4_NL, Q4_K, Q6_K, Q8_0, F16]),
    ftype!("IQ3_M", 27, [IQ3_S, IQ4_NL, Q4_K, Q6_K, Q8_0, F16]),
    ftype!("Q3_K", 12, [Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q5_0, Q5_1, F16]),
    ftype!("IQ3_XS", 22, [IQ3_S, IQ3_XXS, IQ4_NL, Q4_K, Q6_K, Q8_0, F16]),
    ftype!("Q3_K_S", 11, [Q3_K, Q5_K, Q6_K, Q8_0, Q4_0, Q5_1, F16]),
    ftype!("Q3_K_M", 12, [Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q5_0, Q5_1, F16]),
    ftype!("Q3_K_L", 13, [Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q5_0, Q5_1, F16]),
    ftype!("IQ4_NL", 25, [IQ4_NL, Q5_K, Q6_K, Q8_0, Q5_1, F16]),
    ftype!("IQ4_XS", 30, [IQ4_XS, IQ4_NL, Q5_K, Q6_K, Q8_0, Q5_1, F16]),
    ftype!("Q4_K", 15, [Q4_K, Q5_K, Q6_K, Q8_0, Q5_0, Q5_1, F16]),
    ftype!("Q4_K_S", 14, [Q4_K, Q5_K, Q6_K, Q8_0, Q5_0, Q5_1, F16]),
    ftype!("Q4_K_M", 15, [Q4_K, Q5_K, Q6_K, Q8_0, Q5_0, Q5_1, F16]),
    ftype!("Q5_K", 17, [Q5_K, Q6_K, Q8_0, Q5_1, F16]),
    ftype!("Q5_K_S", 16, [Q5_K, Q6_K, Q8_0, Q5_1, F16]),
    ftype!("Q5_K_M", 17, [Q5_K, Q6_K, Q8_0, Q5_1, F16]),
    ftype!("Q6_K", 18, [Q6_K, Q8_0, F16]),
    ftype!("Q8_0", 7, [Q8_0, F16]),
    ftype!("F16", 1, [F16]),
    ftype!("BF16", 32, [BF16]),
    ftype!("F32", 0, [F32]),
    ftype!(
        "COPY",
        0,
        [],
        "it copies the input's tensors unchanged, which is not a quantization"
    ),
];

impl Ftype {
    /// Look a name up as llama-quantize does: case-insensitive, or a `llama_ftype` number.
    pub fn find(name: &str) -> Option<&'static Ftype> {
        FTYPES
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .or_else(|| {
                let id: u32 = name.trim().parse().ok()?;
                FTYPES.iter().find(|f| f.id == id)
            })
    }

    /// Why this file type is refused (`None`: accepted): a tensor type outside
    /// [`ENGINE_TYPES`], or a requirement this command cannot meet.
    pub fn refusal(&self) -> Option<String> {
        if let Some(reason) = self.reason {
            return Some(reason.to_string());
        }
        let missing: Vec<&str> = self
            .produces
            .iter()
            .filter(|t| !ENGINE_TYPES.contains(t))
            .map(|t| t.name())
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "its mix contains {} tensors, which the engine cannot multiply",
                missing.join(", ")
            )
        })
    }

    /// The accepted file types, in llama-quantize's order.
    pub fn accepted() -> impl Iterator<Item = &'static Ftype> {
        FTYPES.iter().filter(|f| f.refusal().is_none())
    }

    /// The accepted names, comma-separated (for messages).
    pub fn accepted_names() -> String {
        Ftype::accepted()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `name` as an accepted file type.
    ///
    /// # Errors
    /// [`QuantizeError::UnknownType`] or [`QuantizeError::RefusedType`], each listing the
    /// accepted names.
    pub fn parse_accepted(name: &str) -> Result<&'static Ftype, QuantizeError> {
        let f = Ftype::find(name).ok_or_else(|| QuantizeError::UnknownType {
            name: name.to_string(),
            accepted: Ftype::accepted_names(),
        })?;
        match f.refusal() {
            None => Ok(f),
            Some(reason) => Err(QuantizeError::RefusedType {
                name: f.name.to_string(),
                reason,
                accepted: Ftype::accepted_names(),
            }),
        }
    }
}

impl std::fmt::Display for Ftype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Everything that can go wrong quantizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    /// Not a name llama-quantize knows (a usage error).
    #[error("unknown quantization type {name:?}; accepted: {accepted}")]
    UnknownType {
        /// The name given.
        name: String,
        /// The accepted names.
        accepted: String,
    },
    /// A llama-quantize type this project refuses (a usage error).
    #[error("quantization type {name} is refused: {reason}; accepted: {accepted}")]
    RefusedType {
        /// The type.
        name: String,
        /// Why.
        reason: String,
        /// The accepted names.
        accepted: String,
    },
    /// The output would overwrite the input (a usage error).
    #[error("{}: the output is the input file; choose another output path", path.display())]
    SameFile {
        /// The path.
        path: PathBuf,
    },
    /// The input is not a readable, valid GGUF file.
    #[error("{}: {source}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        source: GgufError,
    },
    /// llama.cpp cannot read this model at all.
    #[error("{}: llama.cpp's quantizer cannot read this model: {reason}", path.display())]
    InputRefused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The output cannot be written.
    #[error("{}: {source}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input holds quantized tensors and requantizing was not allowed.
    #[error("llama.cpp refused: {reason} (the input is already quantized; allow requantizing with --allow-requantize, at some cost in quality compared with quantizing from f32/f16)")]
    RequantizeRefused {
        /// llama.cpp's message.
        reason: String,
    },
    /// The quantizer failed; its own message.
    #[error("llama.cpp's quantizer failed: {message}")]
    Failed {
        /// The reason llama.cpp gave.
        message: String,
        /// The last lines of its log.
        log: Vec<String>,
    },
    /// The reference process failed (not built, crashed, hung).
    #[error(transparent)]
    Cpp(#[from] CppError),
}

impl QuantizeError {
    /// True for mistakes in what was asked (exit 2); everything else is a runtime error.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            QuantizeError::UnknownType { .. }
                | QuantizeError::RefusedType { .. }
                | QuantizeError::SameFile { .. }
        )
    }
}

/// Options for [`quantize`].
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Requantize tensors that are already quantized (llama-quantize's `--allow-requantize`).
    pub allow_requantize: bool,
    /// Threads; 0 = llama.cpp's default (all hardware threads).
    pub n_threads: u32,
    /// Echo llama.cpp's log live.
    pub verbose: bool,
    /// Longest wait for one tensor (one progress frame) before the reference is killed.
    pub timeout: Duration,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            allow_requantize: false,
            n_threads: 0,
            verbose: false,
            timeout: Duration::from_secs(600),
        }
    }
}

impl Session {
    /// Run llama.cpp's quantizer in this reference, calling `progress` for each tensor as
    /// it is written. The paths are the reference's to open: see [`quantize`] for the checks
    /// and the atomic output.
    ///
    /// # Errors
    /// [`CppError::Unsupported`] on the bitnet.cpp reference, [`CppError::Request`] with the
    /// quantizer's reason, or any error of the exchange.
    pub fn quantize(
        &mut self,
        request: &QuantizeRequest,
        progress: &mut dyn FnMut(&QuantizeProgress),
    ) -> Result<QuantizeReport, CppError> {
        let mut answer = self.call(&Request::Quantize(request.clone()), "quantize")?;
        loop {
            match self.refusal(answer)? {
                (Response::QuantizeProgress(p), _) => progress(&p),
                (Response::Quantized(report), _) => return Ok(report),
                (other, _) => return Err(self.unexpected("quantize", &other)),
            }
            answer = self.receive("quantize")?;
        }
    }
}

/// Quantize `input` into `output` as `llama-quantize input output FTYPE` would, in the
/// llama.cpp reference, calling `progress` for each tensor written.
///
/// The input is validated with `bitnet-gguf` first. The quantizer writes a temporary file
/// next to `output`, renamed over it only on success, so a failure never leaves a partial
/// model behind (llama.cpp itself would).
///
/// # Errors
/// A refused type or `output` naming the input (usage errors, [`QuantizeError::is_usage`]);
/// an unreadable input; llama.cpp's refusal or failure with its reason; an unwritable output;
/// a reference that is unavailable or dies.
pub fn quantize(
    input: &Path,
    output: &Path,
    ftype: &Ftype,
    opts: &QuantizeOptions,
    progress: &mut dyn FnMut(&QuantizeProgress),
) -> Result<QuantizeReport, QuantizeError> {
    if let Some(reason) = ftype.refusal() {
        return Err(QuantizeError::RefusedType {
            name: ftype.name.to_string(),
            reason,
            accepted: Ftype::accepted_names(),
        });
    }
    let file = GgufFile::open(input).map_err(|source| QuantizeError::Input {
        path: input.to_path_buf(),
        source,
    })?;
    if let Some(reason) = Backend::Llama.refusal(&file) {
        return Err(QuantizeError::InputRefused {
            path: input.to_path_buf(),
            reason,
        });
    }
    drop(file);
    if same_file(input, output) {
        return Err(QuantizeError::SameFile {
            path: output.to_path_buf(),
        });
    }
    let temp = temporary_sibling(output).map_err(|source| QuantizeError::Output {
        path: output.to_path_buf(),
        source,
    })?;
    let wire = |p: &Path| {
        WirePath::new(p).ok_or_else(|| CppError::NonUnicodePath {
            path: p.to_path_buf(),
        })
    };
    let request = QuantizeRequest {
        input: wire(input)?,
        output: wire(&temp)?,
        ftype: ftype.id,
        allow_requantize: opts.allow_requantize,
        n_threads: opts.n_threads,
    };
    let session_opts = SessionOptions {
        verbose: opts.verbose,
        timeout: opts.timeout,
        ..SessionOptions::default()
    };
    let result = Session::start(Backend::Llama, &session_opts)
        .and_then(|mut s| s.quantize(&request, progress));
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(match e {
                CppError::Request { message, .. }
                    if message.starts_with("requantizing from type") =>
                {
                    QuantizeError::RequantizeRefused { reason: message }
                }
                CppError::Request { message, log, .. } => QuantizeError::Failed { message, log },
                other => QuantizeError::Cpp(other),
            });
        }
    };
    std::fs::rename(&temp, output).map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        QuantizeError::Output {
            path: output.to_path_buf(),
            source,
        }
    })?;
    Ok(report)
}

/// Whether `output` names the same file as `input` (through links, `..` or a different
/// spelling), including an output that does not exist yet.
fn same_file(input: &Path, output: &Path) -> bool {
    let Ok(input) = input.canonicalize() else {
        return false;
    };
    if let Ok(out) = output.canonicalize() {
        return out == input;
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match (parent.canonicalize(), output.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name) == input,
        _ => false,
    }
}

/// A fresh name in `output`'s directory (so the final rename stays on one file system),
/// unique per process and call: `.NAME.PID.N.partial`. The directory must exist.
fn temporary_sibling(output: &Path) -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = output.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the output path names no file",
        )
    })?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("the directory {} does not exist", dir.display()),
        ));
    }
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(
        ".{}.{}.partial",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(dir.join(temp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_as_llama_quantize_resolves_them() {
        assert_eq!(Ftype::find("q4_k_m").unwrap().name, "Q4_K_M");
        assert_eq!(Ftype::find("Q4_K_M").unwrap().id, 15);
        // Numbers take the first entry with the id: the aliases come first in the list.
        assert_eq!(Ftype::find("12").unwrap().name, "Q3_K");
        assert_eq!(Ftype::find("15").unwrap().name, "Q4_K");
        assert_eq!(Ftype::find("0").unwrap().name, "F32");
        assert!(Ftype::find("Q4_K_X").is_none());
        assert!(Ftype::find("999").is_none());
    }

    #[test]
    fn accepted_types_are_exactly_those_whose_mix_the_engine_multiplies() {
        let accepted: Vec<&str> = Ftype::accepted().map(|f| f.name).collect();
        assert_eq!(
            accepted,
            [
                "Q4_0", "Q4_1", "Q5_0", "Q5_1", "TQ1_0", "TQ2_0", "Q2_K", "Q3_K", "Q3_K_S",
                "Q3_K_M", "Q3_K_L", "IQ4_NL", "Q4_K", "Q4_K_S", "Q4_K_M", "Q5_K", "Q5_K_S",
                "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16", "F32"
            ]
        );
        for f in FTYPES {
            if f.reason.is_none() && !accepted.contains(&f.name) {
                assert!(
                    f.produces.iter().any(|t| !ENGINE_TYPES.contains(t)),
                    "{} refused without an unsupported type",
                    f.name
                );
            }
        }
        let e = Ftype::parse_accepted("iq2_xxs").unwrap_err();
        assert!(e.is_usage());
        let text = e.to_string();
        assert!(
            text.contains("iq2_xxs") && text.contains("Q4_K_M"),
            "{text}"
        );
        assert!(Ftype::parse_accepted("Q2_K_S")
            .unwrap_err()
            .to_string()
            .contains("importance matrix"));
        assert!(matches!(
            Ftype::parse_accepted("nope"),
            Err(QuantizeError::UnknownType { .. })
        ));
    }

    #[test]
    fn same_file_sees_through_spellings_and_missing_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.gguf");
        std::fs::write(&a, b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(same_file(&a, &dir.path().join("sub/../a.gguf")));
        assert!(same_file(&a, &a));
        assert!(!same_file(&a, &dir.path().join("b.gguf")));
        assert!(!same_file(&dir.path().join("missing"), &a));
        let t = temporary_sibling(&dir.path().join("out.gguf")).unwrap();
        assert_eq!(t.parent(), Some(dir.path()));
        assert!(t
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".out.gguf."));
        assert!(temporary_sibling(&dir.path().join("no/such/dir/x.gguf")).is_err());
    }
}
