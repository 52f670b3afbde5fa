//! Finding a reference's binary: a prebuilt one named by an environment variable, or one
//! built from its cargo package on first use with the environment the prerequisites script
//! recorded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{Backend, CppError};

/// The repository root (where `cpp/` lives), known at compile time.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where a reference's binary is: `$BITNET_CPP_LLAMA` / `$BITNET_CPP_BITNET` if set,
/// otherwise built (once per process, a no-op when up to date) from its package.
///
/// # Errors
/// [`CppError::NotBuilt`] with the build's error output and what to do.
pub fn reference_binary(backend: Backend) -> Result<PathBuf, CppError> {
    if let Some(p) = std::env::var_os(backend.env_var()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(CppError::NotBuilt {
                backend,
                reason: format!(
                    "{} points at {}, which is not a file",
                    backend.env_var(),
                    p.display()
                ),
            });
        }
        return Ok(p);
    }
    static BUILT: [OnceLock<Result<PathBuf, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = &BUILT[backend as usize];
    slot.get_or_init(|| build_reference(backend))
        .clone()
        .map_err(|reason| CppError::NotBuilt { backend, reason })
}

/// `cargo build --release` of the reference package, with the environment that
/// `scripts/prereqs.sh` recorded (libclang location, bindgen flags).
fn build_reference(backend: Backend) -> Result<PathBuf, String> {
    let root = repo_root();
    let pkg = root.join(backend.package_dir());
    let manifest = pkg.join("Cargo.toml");
    let binary = pkg.join("target/release").join(backend.binary_name());
    if !manifest.is_file() {
        return Err(format!(
            "{} is missing; set {} to a prebuilt {} binary",
            manifest.display(),
            backend.env_var(),
            backend.binary_name()
        ));
    }
    if !binary.is_file() {
        eprintln!(
            "building the {} C++ reference (first time, a few minutes): cargo build --release --manifest-path {}",
            backend.name(),
            manifest.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest);
    // The reference has its own target directory; never inherit the caller's.
    cmd.env_remove("CARGO_TARGET_DIR");
    for (k, v) in prereqs_env(&root) {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "building it failed (cargo build --release --manifest-path {}).\n  Install the prerequisites with `bash scripts/prereqs.sh` (cmake, a C++ compiler{}), then retry.\n  Last lines of the build:\n    {}",
            manifest.display(),
            if backend == Backend::Llama { ", libclang" } else { "" },
            tail.join("\n    ")
        ));
    }
    if !binary.is_file() {
        return Err(format!(
            "the build succeeded but {} does not exist",
            binary.display()
        ));
    }
    Ok(binary)
}

/// `export KEY="VALUE"` lines of `target/prereqs.env`, when the prerequisites script wrote
/// one. PATH lines prepend to the running PATH; other keys the caller already set win.
fn prereqs_env(root: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(root.join("target/prereqs.env")) else {
        return Vec::new();
    };
    let mut path = std::env::var("PATH").unwrap_or_default();
    let mut vars = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line
            .trim()
            .strip_prefix("export ")
            .and_then(|kv| kv.split_once('='))
        else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        if let Some(prefix) = v.strip_suffix(":$PATH") {
            path = format!("{prefix}:{path}");
        } else if std::env::var_os(k).is_none() {
            vars.push((k.to_string(), v.to_string()));
        }
    }
    vars.push(("PATH".to_string(), path));
    vars
}
