//! Records how llama-cpp-sys-2 built llama.cpp (compiler, build type, the CPU kernels' SIMD
//! flags, versions) so the reference can report its real build in `BuildInfo`.

fn main() {
    // ggml's CPU backend: the file whose compile flags are the kernels'.
    bitnet_cpp::build_facts::CompiledFacts::record_for_build_script("ggml-cpu/ggml-cpu.c");
}
