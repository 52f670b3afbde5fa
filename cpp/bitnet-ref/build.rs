//! Record how bitnet.cpp was built (compiler, ggml options) for the reference's build facts.
//! bitnet-llm-sys's build script does not name its output directory, so its CMake build tree
//! is found next to this package's: `target/<profile>/build/bitnet-llm-sys-*/out/build` (the
//! most recently configured one, when old builds linger).

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR = target/<profile>/build/bitnet-ref-bitnet-<hash>/out
    let candidates = out
        .parent()
        .and_then(|p| p.parent())
        .and_then(|build| std::fs::read_dir(build).ok())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("bitnet-llm-sys-")
        })
        .map(|e| e.path().join("out/build"));
    let info = bitnet_cpp::build_info::newest_build_tree(candidates)
        .and_then(|tree| bitnet_cpp::build_info::describe_cmake_build(&tree))
        .unwrap_or_else(|| "unknown (bitnet-llm-sys's CMake build tree was not found)".into());
    println!("cargo:rustc-env=REFERENCE_BUILD_INFO={info}");
}
