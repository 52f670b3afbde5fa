//! Which C++ reference serves a model: [`Backend`] (the two references and where their
//! binaries live) and [`BackendChoice`] (the user's `llama | bitnet | auto`, resolved against
//! the validated file so a backend that cannot load it is refused before it starts).

use bitnet_gguf::{GgmlType, GgufFile};

use crate::CppError;

/// A C++ reference implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Upstream llama.cpp (`cpp/llama-ref`): `llama`, upstream `bitnet` (TQ1_0/TQ2_0), ...
    Llama,
    /// Microsoft's bitnet.cpp (`cpp/bitnet-ref`): `bitnet-b1.58` with I2_S and relu².
    Bitnet,
}

impl Backend {
    /// `llama` or `bitnet`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Llama => "llama",
            Backend::Bitnet => "bitnet",
        }
    }

    /// The reference process's binary name.
    pub fn binary_name(self) -> &'static str {
        match self {
            Backend::Llama => "bitnet-ref-llama",
            Backend::Bitnet => "bitnet-ref-bitnet",
        }
    }

    /// The environment variable that may point at a prebuilt binary.
    pub fn env_var(self) -> &'static str {
        match self {
            Backend::Llama => "BITNET_CPP_LLAMA",
            Backend::Bitnet => "BITNET_CPP_BITNET",
        }
    }

    /// The cargo package directory of the reference, relative to the repository root.
    pub fn package_dir(self) -> &'static str {
        match self {
            Backend::Llama => "cpp/llama-ref",
            Backend::Bitnet => "cpp/bitnet-ref",
        }
    }

    /// Why this backend cannot load `file`, if it cannot.
    pub fn refusal(self, file: &GgufFile) -> Option<String> {
        let arch = file.architecture().unwrap_or("");
        match self {
            Backend::Llama => {
                if arch == "bitnet-b1.58" {
                    return Some("upstream llama.cpp has no `bitnet-b1.58` architecture".into());
                }
                if let Some(t) = file.tensors().iter().find(|t| t.ty == GgmlType::I2_S) {
                    return Some(format!(
                        "upstream llama.cpp cannot read I2_S tensors (first: {})",
                        t.name
                    ));
                }
                None
            }
            Backend::Bitnet => {
                // bitnet.cpp's ggml fork predates ids 37+ and reuses 38/39 for its own TL1/TL2.
                file.tensors().iter().find(|t| t.ty.id() > 36).map(|t| {
                    format!(
                        "bitnet.cpp's ggml fork does not know tensor type {} (tensor {})",
                        t.ty, t.name
                    )
                })
            }
        }
    }

    /// The other reference.
    pub fn other(self) -> Backend {
        match self {
            Backend::Llama => Backend::Bitnet,
            Backend::Bitnet => Backend::Llama,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The user's backend choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Always llama.cpp.
    Llama,
    /// Always bitnet.cpp.
    Bitnet,
    /// bitnet.cpp for a `bitnet-b1.58` architecture or any I2_S tensor, llama.cpp otherwise.
    #[default]
    Auto,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llama" => Ok(BackendChoice::Llama),
            "bitnet" => Ok(BackendChoice::Bitnet),
            "auto" => Ok(BackendChoice::Auto),
            _ => Err(format!(
                "unknown C++ backend {s:?} (valid: llama, bitnet, auto)"
            )),
        }
    }
}

impl BackendChoice {
    /// Resolve the choice for a validated file.
    ///
    /// # Errors
    /// [`CppError::BackendCannotLoad`] when the chosen backend cannot load the file, naming
    /// the backend that can.
    pub fn resolve(self, file: &GgufFile) -> Result<Backend, CppError> {
        let backend = match self {
            BackendChoice::Llama => Backend::Llama,
            BackendChoice::Bitnet => Backend::Bitnet,
            BackendChoice::Auto => {
                let b158 = file
                    .architecture()
                    .map(|a| a == "bitnet-b1.58")
                    .unwrap_or(false);
                if b158 || file.tensors().iter().any(|t| t.ty == GgmlType::I2_S) {
                    Backend::Bitnet
                } else {
                    Backend::Llama
                }
            }
        };
        match backend.refusal(file) {
            None => Ok(backend),
            Some(reason) => Err(CppError::BackendCannotLoad {
                backend,
                reason,
                use_instead: backend.other(),
            }),
        }
    }
}
