//! Records how bitnet-llm-sys built bitnet.cpp (compiler, build type, the I2_S kernels' SIMD
//! flags — `-march=native`, resolved to the build machine's extensions — and versions) so
//! the reference can report its real build in `BuildInfo`.

fn main() {
    // BitNet's I2_S matmul kernel: the code bitnet-b1.58 models spend their time in.
    bitnet_cpp::build_facts::CompiledFacts::record_for_build_script("src/ggml-bitnet-mad.cpp");
}
