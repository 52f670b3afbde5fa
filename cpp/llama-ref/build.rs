//! Records how llama-cpp-sys-2 built llama.cpp (compiler, build type, the CPU kernels' SIMD
//! flags, versions) so the reference can report its real build in `BuildInfo`.
//! llama-cpp-sys-2 declares `links = "llama"`; its CMake output directory arrives here as
//! `DEP_LLAMA_ROOT`.

use std::path::PathBuf;

use bitnet_cpp::build_facts::CompiledFacts;

fn main() {
    let root = PathBuf::from(
        std::env::var_os("DEP_LLAMA_ROOT").expect("llama-cpp-sys-2 reports its DEP_LLAMA_ROOT"),
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("build/CMakeCache.txt").display()
    );
    // ggml's CPU backend: the file whose compile flags are the kernels'.
    let facts = CompiledFacts::collect(&root, "ggml-cpu/ggml-cpu.c")
        .unwrap_or_else(|e| panic!("cannot record llama.cpp's build facts: {e}"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("build_facts.json"), facts.to_json()).expect("OUT_DIR is writable");
}
