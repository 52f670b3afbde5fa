//! Records how bitnet-llm-sys built bitnet.cpp (compiler, build type, the I2_S kernels' SIMD
//! flags — `-march=native`, resolved to the build machine's extensions — and versions) so
//! the reference can report its real build in `BuildInfo`. bitnet-llm-sys declares
//! `links = "llama"`; its CMake output directory arrives here as `DEP_LLAMA_ROOT`.

use std::path::PathBuf;

use bitnet_cpp::build_facts::CompiledFacts;

fn main() {
    let root = PathBuf::from(
        std::env::var_os("DEP_LLAMA_ROOT").expect("bitnet-llm-sys reports its DEP_LLAMA_ROOT"),
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("build/CMakeCache.txt").display()
    );
    // BitNet's I2_S matmul kernel: the code bitnet-b1.58 models spend their time in.
    let facts = CompiledFacts::collect(&root, "src/ggml-bitnet-mad.cpp")
        .unwrap_or_else(|e| panic!("cannot record bitnet.cpp's build facts: {e}"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("build_facts.json"), facts.to_json()).expect("OUT_DIR is writable");
}
