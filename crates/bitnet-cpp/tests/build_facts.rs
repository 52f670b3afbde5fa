//! The references report their real build — versions, compiler, the CPU kernels' SIMD flags —
//! not placeholders: facts their build scripts read from the `-sys` crates' CMake output.

use bitnet_cpp::{Backend, Session, SessionOptions};

/// The build facts and `llama_print_system_info()`.
fn facts(backend: Backend) -> (bitnet_cpp::protocol::CompiledFacts, String, String) {
    let b = Session::start(backend, &SessionOptions::default())
        .unwrap_or_else(|e| panic!("{backend}: {e}"))
        .build_info()
        .unwrap();
    assert_eq!(b.backend, backend.name());
    let summary = b.summary();
    (b.compiled, b.system_info, summary)
}

/// `12.2.0`, `17.0.6`: a dotted version of numbers.
fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn llama_cpp_reports_its_compiler_flags_and_versions() {
    let (b, system_info, line) = facts(Backend::Llama);
    assert!(
        !b.compiler.id.is_empty() && is_version(&b.compiler.version),
        "{:?}",
        b.compiler
    );
    assert_eq!(b.version.crate_name, "llama-cpp-sys-2");
    assert_eq!(b.version.crate_version, "0.1.161");
    assert_eq!(
        b.version.crate_commit.as_deref().map(str::len),
        Some(40),
        "the published crate's git commit"
    );
    assert!(
        is_version(b.version.ggml_version.as_deref().unwrap_or("")),
        "{:?}",
        b.version
    );
    assert!(!b.build_type.is_empty());
    // The pinned build is GGML_NATIVE=OFF: x86-64 plus explicit AVX2-era flags.
    for flag in ["-march=x86-64", "-mavx2", "-mfma", "-mf16c"] {
        assert!(
            b.cpu_flags.iter().any(|f| f == flag),
            "{flag} in {:?}",
            b.cpu_flags
        );
    }
    for isa in ["AVX", "AVX2", "FMA", "F16C", "BMI2"] {
        assert!(b.simd.iter().any(|s| s == isa), "{isa} in {:?}", b.simd);
    }
    assert!(
        !b.simd.iter().any(|s| s.starts_with("AVX512")),
        "{:?}",
        b.simd
    );
    assert!(
        b.ggml_options.iter().any(|o| o == "GGML_LLAMAFILE"),
        "{:?}",
        b.ggml_options
    );
    assert!(system_info.contains("AVX2 = 1"), "{system_info}");
    for part in [
        &b.compiler.id,
        &b.compiler.version,
        "-mavx2",
        "AVX2",
        "0.1.161",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
}

#[test]
fn bitnet_cpp_reports_march_native_resolved_to_the_build_machine() {
    let (b, system_info, _) = facts(Backend::Bitnet);
    assert!(
        !b.compiler.id.is_empty() && is_version(&b.compiler.version),
        "{:?}",
        b.compiler
    );
    assert_eq!(b.version.crate_name, "bitnet-llm-sys");
    assert_eq!(b.version.crate_version, "1.0.2");
    assert!(
        b.cpu_flags.iter().any(|f| f == "-march=native"),
        "{:?}",
        b.cpu_flags
    );
    // -march=native on any machine this project supports has at least AVX2.
    for isa in ["AVX", "AVX2", "FMA"] {
        assert!(b.simd.iter().any(|s| s == isa), "{isa} in {:?}", b.simd);
    }
    assert!(
        b.ggml_options.iter().any(|o| o == "GGML_NATIVE"),
        "{:?}",
        b.ggml_options
    );
    assert!(!system_info.is_empty());
}
