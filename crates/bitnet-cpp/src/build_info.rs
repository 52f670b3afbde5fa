//! How a reference's C++ library was built, read from its CMake build tree by the reference
//! package's build script: the compiler CMake used and the ggml options the build had (the
//! SIMD flags among them). The reference reports it in [`crate::protocol::BuildFacts`], so a
//! report states the real build, not a description of the intended one.

use std::fs;
use std::path::{Path, PathBuf};

/// The ggml CMake options worth stating: what decides which kernels, and so which float
/// orders, the library runs.
const GGML_OPTIONS: &[&str] = &[
    "GGML_NATIVE",
    "GGML_AVX",
    "GGML_AVX2",
    "GGML_AVX512",
    "GGML_FMA",
    "GGML_F16C",
    "GGML_BMI2",
    "GGML_LLAMAFILE",
    "GGML_OPENMP",
    "BITNET_X86_TL2",
];

/// `KEY:TYPE=VALUE` of a `CMakeCache.txt`.
fn cache_value(cache: &str, key: &str) -> Option<String> {
    cache.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.split(':').next()? == key).then(|| v.trim().to_string())
    })
}

/// `set(KEY "VALUE")` of a CMake compiler file.
fn set_value(text: &str, key: &str) -> Option<String> {
    let prefix = format!("set({key} ");
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(&prefix)?;
        Some(rest.trim_end_matches(')').trim_matches('"').to_string())
    })
}

/// The compiler and ggml options of the CMake build tree `build_dir` (the directory holding
/// `CMakeCache.txt`), e.g. `GNU 12.2.0 (/usr/bin/c++), Release, GGML_NATIVE=OFF, GGML_AVX2=ON`.
/// `None` when the tree is not there.
pub fn describe_cmake_build(build_dir: &Path) -> Option<String> {
    let cache = fs::read_to_string(build_dir.join("CMakeCache.txt")).ok()?;
    let compiler_file = fs::read_dir(build_dir.join("CMakeFiles"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("CMakeCXXCompiler.cmake"))
        .find(|p| p.is_file());
    let compiler = compiler_file
        .and_then(|p| fs::read_to_string(p).ok())
        .map(|t| {
            format!(
                "{} {}",
                set_value(&t, "CMAKE_CXX_COMPILER_ID").unwrap_or_else(|| "unknown".into()),
                set_value(&t, "CMAKE_CXX_COMPILER_VERSION").unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "unknown compiler".into());
    let path = cache_value(&cache, "CMAKE_CXX_COMPILER").unwrap_or_default();
    let mut parts = vec![format!("{} ({path})", compiler.trim())];
    if let Some(t) = cache_value(&cache, "CMAKE_BUILD_TYPE").filter(|t| !t.is_empty()) {
        parts.push(t);
    }
    for option in GGML_OPTIONS {
        if let Some(v) = cache_value(&cache, option) {
            parts.push(format!("{option}={v}"));
        }
    }
    Some(parts.join(", "))
}

/// The most recently configured CMake build tree among `candidates` (directories that may
/// hold a `CMakeCache.txt`).
pub fn newest_build_tree(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates
        .into_iter()
        .filter_map(|dir| {
            let modified = fs::metadata(dir.join("CMakeCache.txt"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((modified, dir))
        })
        .max_by_key(|(t, _)| *t)
        .map(|(_, dir)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_tree_is_described() {
        let dir =
            std::env::temp_dir().join(format!("bitnet-cpp-build-info-{}", std::process::id()));
        let files = dir.join("CMakeFiles/3.25.1");
        fs::create_dir_all(&files).unwrap();
        fs::write(
            dir.join("CMakeCache.txt"),
            "CMAKE_BUILD_TYPE:STRING=Release\nCMAKE_CXX_COMPILER:STRING=/usr/bin/c++\nGGML_AVX2:BOOL=ON\nGGML_NATIVE:BOOL=OFF\n",
        )
        .unwrap();
        fs::write(
            files.join("CMakeCXXCompiler.cmake"),
            "set(CMAKE_CXX_COMPILER_ID \"GNU\")\nset(CMAKE_CXX_COMPILER_VERSION \"12.2.0\")\n",
        )
        .unwrap();
        assert_eq!(
            describe_cmake_build(&dir).unwrap(),
            "GNU 12.2.0 (/usr/bin/c++), Release, GGML_NATIVE=OFF, GGML_AVX2=ON"
        );
        assert_eq!(
            newest_build_tree([dir.clone(), dir.join("nope")]),
            Some(dir.clone())
        );
        assert!(describe_cmake_build(&dir.join("nope")).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
