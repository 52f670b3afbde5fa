//! How a reference's C++ library was built, recorded when the reference is built.
//!
//! The `-sys` crates build llama.cpp and bitnet.cpp with CMake and leave the configuration in
//! their output directory, which cargo hands to the reference package's build script as
//! `DEP_LLAMA_ROOT` (both crates declare `links = "llama"`). The build script calls
//! [`CompiledFacts::collect`] on it and stores the result in the binary; at run time the
//! reference adds what only the running library knows (`llama_print_system_info`).
//!
//! Where each fact comes from:
//! - compiler: `build/CMakeFiles/<cmake>/CMake{C,CXX}Compiler.cmake` (CMake's own detection);
//! - build type and ggml options: `build/CMakeCache.txt`;
//! - CPU flags: the compile command of the CPU kernels' source in
//!   `build/compile_commands.json`, so what the kernels were really compiled with;
//! - SIMD extensions: the compiler asked which ISA macros (`__AVX2__`, …) those exact flags
//!   define, which also resolves `-march=native` (bitnet.cpp) to the build machine's set;
//! - version: the vendoring crate's `Cargo.toml` and `.cargo_vcs_info.json` above the CMake
//!   source directory, and ggml's version from its `CMakeLists.txt`. Neither vendored tree
//!   carries llama.cpp's git commit or build number (CMake reports `unknown` / 0 without git).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The compiler that built a library's CPU kernels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compiler {
    /// CMake's compiler id: `GNU`, `Clang`, `AppleClang`, `MSVC`, …
    pub id: String,
    /// Its version (`12.2.0`).
    pub version: String,
    /// The executable CMake used.
    pub path: String,
}

/// Which release of a library, as far as the vendored sources record it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryVersion {
    /// The crate that vendors and builds it (`llama-cpp-sys-2`).
    pub crate_name: String,
    /// That crate's version.
    pub crate_version: String,
    /// The git commit the crate was published from (`.cargo_vcs_info.json`), if recorded.
    pub crate_commit: Option<String>,
    /// ggml's version (`GGML_VERSION_*` in its `CMakeLists.txt`), when the tree declares one.
    pub ggml_version: Option<String>,
}

impl fmt::Display for LibraryVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.crate_name, self.crate_version)?;
        if let Some(c) = &self.crate_commit {
            write!(f, " (git {})", &c[..c.len().min(12)])?;
        }
        if let Some(g) = &self.ggml_version {
            write!(f, ", ggml {g}")?;
        }
        Ok(())
    }
}

/// Everything about a build that is known when the reference is compiled (the part of
/// [`crate::protocol::BuildFacts`] that comes from its build script).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledFacts {
    /// Version and commit of the vendoring crate, ggml's version.
    pub version: LibraryVersion,
    /// The compiler of the CPU kernels.
    pub compiler: Compiler,
    /// `CMAKE_BUILD_TYPE`.
    pub build_type: String,
    /// The kernels' instruction-selecting flags (`-march=…`, `-m…`), in order.
    pub cpu_flags: Vec<String>,
    /// SIMD extensions those flags enable, per the compiler.
    pub simd: Vec<String>,
    /// ggml/BitNet CMake options that are on.
    pub ggml_options: Vec<String>,
}

/// ISA macros a compiler defines and the names reports use for them (llama.cpp's
/// `system_info` spelling where it has one).
const SIMD_MACROS: &[(&str, &str)] = &[
    ("__SSE3__", "SSE3"),
    ("__SSSE3__", "SSSE3"),
    ("__SSE4_1__", "SSE4.1"),
    ("__SSE4_2__", "SSE4.2"),
    ("__AVX__", "AVX"),
    ("__AVX2__", "AVX2"),
    ("__FMA__", "FMA"),
    ("__F16C__", "F16C"),
    ("__BMI2__", "BMI2"),
    ("__AVXVNNI__", "AVX_VNNI"),
    ("__AVX512F__", "AVX512F"),
    ("__AVX512CD__", "AVX512CD"),
    ("__AVX512BW__", "AVX512BW"),
    ("__AVX512DQ__", "AVX512DQ"),
    ("__AVX512VL__", "AVX512VL"),
    ("__AVX512VBMI__", "AVX512_VBMI"),
    ("__AVX512VNNI__", "AVX512_VNNI"),
    ("__AVX512BF16__", "AVX512_BF16"),
    ("__AMX_TILE__", "AMX_TILE"),
    ("__AMX_INT8__", "AMX_INT8"),
    ("__ARM_NEON", "NEON"),
    ("__ARM_FEATURE_FMA", "ARM_FMA"),
    ("__ARM_FEATURE_DOTPROD", "DOTPROD"),
    ("__ARM_FEATURE_SVE", "SVE"),
];

/// The CMake options that shape the CPU backend's code (the cache also holds dozens of
/// GPU-backend options whose defaults are on but which build nothing here).
const CPU_OPTIONS: &[&str] = &[
    "GGML_NATIVE",
    "GGML_CPU_ALL_VARIANTS",
    "GGML_BACKEND_DL",
    "GGML_CPU_REPACK",
    "GGML_CPU_KLEIDIAI",
    "GGML_CPU_HBM",
    "GGML_LLAMAFILE",
    "GGML_OPENMP",
    "GGML_BLAS",
    "GGML_SSE42",
    "GGML_AVX",
    "GGML_AVX2",
    "GGML_AVX_VNNI",
    "GGML_AVX512",
    "GGML_AVX512_VBMI",
    "GGML_AVX512_VNNI",
    "GGML_AVX512_BF16",
    "GGML_AMX_TILE",
    "GGML_AMX_INT8",
    "GGML_AMX_BF16",
    "GGML_FMA",
    "GGML_F16C",
    "GGML_BMI2",
];

impl CompiledFacts {
    /// Read the facts from a `-sys` crate's CMake output directory (`DEP_LLAMA_ROOT`: the
    /// directory holding `build/`). `kernel_source` is the end of the path of the source file
    /// whose compile flags are the CPU kernels' (`ggml-cpu/ggml-cpu.c` for llama.cpp,
    /// `ggml/src/ggml.c` for bitnet.cpp's older ggml).
    ///
    /// # Errors
    /// A missing or unreadable CMake file, or no compile command for `kernel_source`.
    pub fn collect(cmake_out: &Path, kernel_source: &str) -> Result<CompiledFacts, String> {
        let build = cmake_out.join("build");
        let cache = parse_cmake_cache(&read(&build.join("CMakeCache.txt"))?);
        let command = kernel_command(&read(&build.join("compile_commands.json"))?, kernel_source)?;
        let language = if kernel_source.ends_with(".c") {
            "C"
        } else {
            "CXX"
        };
        let compiler = detected_compiler(&build, language)?;
        let cpu_flags = cpu_flags(&command);
        // The command's first word is the compiler, unless a cache wrapper runs it.
        let compiler_exe = command
            .iter()
            .find(|w| {
                let name = Path::new(w.as_str()).file_name().and_then(|n| n.to_str());
                !matches!(name, Some("ccache" | "sccache"))
            })
            .cloned()
            .unwrap_or_else(|| compiler.path.clone());
        let simd = simd_for_flags(Path::new(&compiler_exe), &cpu_flags)?;
        let ggml_options: Vec<String> = cache
            .iter()
            .filter(|(k, (ty, v))| {
                (CPU_OPTIONS.contains(&k.as_str()) || k.starts_with("BITNET_"))
                    && ty == "BOOL"
                    && matches!(v.to_ascii_uppercase().as_str(), "ON" | "TRUE" | "1" | "YES")
            })
            .map(|(k, _)| k.clone())
            .collect();
        let source_dir = cache
            .get("CMAKE_HOME_DIRECTORY")
            .map(|(_, v)| PathBuf::from(v))
            .ok_or("CMakeCache.txt has no CMAKE_HOME_DIRECTORY")?;
        let ggml_dir = cache
            .get("ggml_SOURCE_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| source_dir.join("ggml"));
        Ok(CompiledFacts {
            version: library_version(&source_dir, &ggml_dir)?,
            compiler,
            build_type: cache
                .get("CMAKE_BUILD_TYPE")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            cpu_flags,
            simd,
            ggml_options,
        })
    }

    /// What a reference package's `build.rs` does: read the `-sys` crate's CMake output
    /// (`DEP_LLAMA_ROOT`; both vendoring crates declare `links = "llama"`), ask cargo to
    /// rerun when its configuration changes, and store the facts as
    /// `$OUT_DIR/build_facts.json` for the binary to `include_str!`.
    ///
    /// # Panics
    /// When the facts cannot be read: a reference that cannot say how it was built fails
    /// its build rather than report placeholders.
    pub fn record_for_build_script(kernel_source: &str) {
        let root = PathBuf::from(
            std::env::var_os("DEP_LLAMA_ROOT")
                .expect("the -sys crate (links = \"llama\") reports DEP_LLAMA_ROOT"),
        );
        println!(
            "cargo:rerun-if-changed={}",
            root.join("build/CMakeCache.txt").display()
        );
        let facts = CompiledFacts::collect(&root, kernel_source)
            .unwrap_or_else(|e| panic!("cannot record the C++ library's build facts: {e}"));
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        std::fs::write(out.join("build_facts.json"), facts.to_json()).expect("OUT_DIR is writable");
    }

    /// JSON, as the build script stores it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Read back what [`CompiledFacts::to_json`] wrote.
    ///
    /// # Errors
    /// Text that is not such a document.
    pub fn from_json(text: &str) -> Result<CompiledFacts, String> {
        serde_json::from_str(text).map_err(|e| format!("bad build facts: {e}"))
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `KEY:TYPE=VALUE` lines of a CMake cache; comments and blank lines skipped.
fn parse_cmake_cache(text: &str) -> BTreeMap<String, (String, String)> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let Some((key_ty, value)) = line.split_once('=') else {
            continue;
        };
        let Some((key, ty)) = key_ty.split_once(':') else {
            continue;
        };
        map.insert(key.to_string(), (ty.to_string(), value.to_string()));
    }
    map
}

/// The compile command of the file whose path ends with `suffix`, split into arguments.
fn kernel_command(compile_commands: &str, suffix: &str) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Entry {
        file: String,
        command: Option<String>,
        arguments: Option<Vec<String>>,
    }
    let entries: Vec<Entry> = serde_json::from_str(compile_commands)
        .map_err(|e| format!("compile_commands.json: {e}"))?;
    let entry = entries
        .into_iter()
        .find(|e| e.file.ends_with(suffix))
        .ok_or_else(|| format!("compile_commands.json has no command for {suffix}"))?;
    match (entry.arguments, entry.command) {
        (Some(args), _) => Ok(args),
        // CMake writes one line with single spaces; flags never contain spaces.
        (None, Some(cmd)) => Ok(cmd.split_whitespace().map(str::to_string).collect()),
        (None, None) => Err(format!("the compile command for {suffix} is empty")),
    }
}

/// The arguments that choose instructions: `-march=…`, `-mtune=…`, `-mcpu=…` and ISA
/// switches like `-mavx2`; not ABI flags (`-m64`).
fn cpu_flags(command: &[String]) -> Vec<String> {
    command
        .iter()
        .filter(|a| a.starts_with("-m") && !matches!(a.as_str(), "-m64" | "-m32" | "-mx32"))
        .cloned()
        .collect()
}

/// `set(CMAKE_<LANG>_COMPILER_ID "GNU")` and `…_VERSION` from CMake's detection file.
fn detected_compiler(build: &Path, language: &str) -> Result<Compiler, String> {
    let files = build.join("CMakeFiles");
    let name = format!("CMake{language}Compiler.cmake");
    let dir = std::fs::read_dir(&files).map_err(|e| format!("{}: {e}", files.display()))?;
    let file = dir
        .filter_map(Result::ok)
        .map(|e| e.path().join(&name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no {name} under {}", files.display()))?;
    let text = read(&file)?;
    let value = |key: &str| -> Option<String> {
        let prefix = format!("set(CMAKE_{language}_{key} \"");
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split_once('"'))
            .map(|(v, _)| v.to_string())
    };
    let compiler = Compiler {
        id: value("COMPILER_ID").unwrap_or_default(),
        version: value("COMPILER_VERSION").unwrap_or_default(),
        path: value("COMPILER").unwrap_or_default(),
    };
    if compiler.id.is_empty() || compiler.version.is_empty() {
        return Err(format!("{} does not name the compiler", file.display()));
    }
    Ok(compiler)
}

/// Ask the compiler which ISA macros `flags` define (`cc FLAGS -dM -E -x c /dev/null`).
fn simd_for_flags(compiler: &Path, flags: &[String]) -> Result<Vec<String>, String> {
    let out = Command::new(compiler)
        .args(flags)
        .args(["-dM", "-E", "-x", "c", "/dev/null"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", compiler.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} -dM -E failed: {}",
            compiler.display(),
            flags.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(simd_from_macros(&String::from_utf8_lossy(&out.stdout)))
}

/// The names of [`SIMD_MACROS`] defined in a `-dM` listing, in the table's order.
fn simd_from_macros(defines: &str) -> Vec<String> {
    let defined: Vec<&str> = defines
        .lines()
        .filter_map(|l| l.strip_prefix("#define "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    SIMD_MACROS
        .iter()
        .filter(|(m, _)| defined.contains(m))
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The crate above `source_dir` (its `Cargo.toml` and `.cargo_vcs_info.json`) and ggml's
/// declared version.
fn library_version(source_dir: &Path, ggml_dir: &Path) -> Result<LibraryVersion, String> {
    let crate_dir = source_dir
        .ancestors()
        .find(|d| d.join("Cargo.toml").is_file())
        .ok_or_else(|| format!("no Cargo.toml above {}", source_dir.display()))?;
    let manifest = read(&crate_dir.join("Cargo.toml"))?;
    let (crate_name, crate_version) = package_name_version(&manifest)
        .ok_or_else(|| format!("{}: no [package] name/version", crate_dir.display()))?;
    let crate_commit = std::fs::read_to_string(crate_dir.join(".cargo_vcs_info.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["git"]["sha1"].as_str().map(str::to_string));
    let ggml_version = std::fs::read_to_string(ggml_dir.join("CMakeLists.txt"))
        .ok()
        .and_then(|t| ggml_declared_version(&t));
    Ok(LibraryVersion {
        crate_name,
        crate_version,
        crate_commit,
        ggml_version,
    })
}

/// `name` and `version` of a manifest's `[package]` table (a published, normalised
/// `Cargo.toml`: one `key = "value"` per line).
fn package_name_version(manifest: &str) -> Option<(String, String)> {
    let mut in_package = false;
    let (mut name, mut version) = (None, None);
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "name" => name = Some(v),
                "version" => version = Some(v),
                _ => {}
            }
        }
    }
    Some((name?, version?))
}

/// `set(GGML_VERSION_MAJOR 0)` … `PATCH` → `0.26.0`.
fn ggml_declared_version(cmakelists: &str) -> Option<String> {
    let part = |p: &str| {
        let prefix = format!("set(GGML_VERSION_{p} ");
        cmakelists
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.strip_suffix(')'))
            .map(|v| v.trim().to_string())
    };
    Some(format!(
        "{}.{}.{}",
        part("MAJOR")?,
        part("MINOR")?,
        part("PATCH")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmake_cache_entries_and_bool_options() {
        let cache = parse_cmake_cache(
            "# comment\n//doc line\nGGML_AVX2:BOOL=ON\nGGML_NATIVE:BOOL=OFF\nCMAKE_BUILD_TYPE:STRING=RelWithDebInfo\nX:INTERNAL=a=b\n",
        );
        assert_eq!(cache["GGML_AVX2"], ("BOOL".into(), "ON".into()));
        assert_eq!(cache["CMAKE_BUILD_TYPE"].1, "RelWithDebInfo");
        assert_eq!(cache["X"].1, "a=b");
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn kernel_flags_come_from_the_kernel_command() {
        let json = r#"[
            {"directory": "/b", "command": "/usr/bin/cc -O2 -march=x86-64 -c other.c", "file": "/s/other.c"},
            {"directory": "/b", "command": "/usr/bin/cc -m64 -march=x86-64 -w -O2 -msse4.2 -mf16c -mfma -mavx2 -std=gnu11 -c /s/ggml/src/ggml-cpu/ggml-cpu.c", "file": "/s/ggml/src/ggml-cpu/ggml-cpu.c"}
        ]"#;
        let cmd = kernel_command(json, "ggml-cpu/ggml-cpu.c").unwrap();
        assert_eq!(cmd[0], "/usr/bin/cc");
        assert_eq!(
            cpu_flags(&cmd),
            ["-march=x86-64", "-msse4.2", "-mf16c", "-mfma", "-mavx2"]
        );
        assert!(kernel_command(json, "missing.c").is_err());
        let args = r#"[{"directory": "/b", "arguments": ["c++", "-march=native", "-c", "k.cpp"], "file": "k.cpp"}]"#;
        assert_eq!(
            cpu_flags(&kernel_command(args, "k.cpp").unwrap()),
            ["-march=native"]
        );
    }

    #[test]
    fn simd_names_from_predefined_macros() {
        let defines = "#define __AVX2__ 1\n#define __x86_64__ 1\n#define __FMA__ 1\n#define __AVX__ 1\n#define __AVX512F__ 1\n";
        assert_eq!(simd_from_macros(defines), ["AVX", "AVX2", "FMA", "AVX512F"]);
    }

    #[test]
    fn versions_from_manifest_and_ggml_cmakelists() {
        let manifest = "[package]\nedition = \"2021\"\nname = \"llama-cpp-sys-2\"\nversion = \"0.1.161\"\n\n[dependencies.x]\nversion = \"1\"\n";
        assert_eq!(
            package_name_version(manifest),
            Some(("llama-cpp-sys-2".into(), "0.1.161".into()))
        );
        let ggml =
            "set(GGML_VERSION_MAJOR 0)\nset(GGML_VERSION_MINOR 26)\nset(GGML_VERSION_PATCH 0)\n";
        assert_eq!(ggml_declared_version(ggml).as_deref(), Some("0.26.0"));
        assert_eq!(ggml_declared_version("project(ggml)"), None);
        let v = LibraryVersion {
            crate_name: "llama-cpp-sys-2".into(),
            crate_version: "0.1.161".into(),
            crate_commit: Some("e7af607ebd5ec2932709ef918c17cca2f9b0fce4".into()),
            ggml_version: Some("0.26.0".into()),
        };
        assert_eq!(
            v.to_string(),
            "llama-cpp-sys-2 0.1.161 (git e7af607ebd5e), ggml 0.26.0"
        );
    }

    #[test]
    fn facts_round_trip_as_json() {
        let f = CompiledFacts {
            build_type: "Release".into(),
            cpu_flags: vec!["-march=native".into()],
            ..CompiledFacts::default()
        };
        assert_eq!(CompiledFacts::from_json(&f.to_json()).unwrap(), f);
        assert!(CompiledFacts::from_json("{").is_err());
    }
}
