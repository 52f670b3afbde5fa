//! Record how llama.cpp was built (compiler, ggml options) for the reference's build facts:
//! llama-cpp-sys-2's build script names its CMake package directory (`<out>/lib/cmake`, as
//! `DEP_LLAMA_GGML_CMAKE_DIR`); the build tree with `CMakeCache.txt` is `<out>/build`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_GGML_CMAKE_DIR");
    let info = std::env::var_os("DEP_LLAMA_GGML_CMAKE_DIR")
        .map(PathBuf::from)
        .and_then(|cmake| Some(cmake.parent()?.parent()?.join("build")))
        .and_then(|tree| bitnet_cpp::build_info::describe_cmake_build(&tree))
        .unwrap_or_else(|| "unknown (llama-cpp-sys-2's CMake build tree was not found)".into());
    println!("cargo:rustc-env=REFERENCE_BUILD_INFO={info}");
}
