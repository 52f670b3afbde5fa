#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, fetches the real test
# data, then checks formatting, lints and runs every test. This is the README's test command
# and the only thing .ci/run calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "prerequisites (scripts/prereqs.sh)"
bash scripts/prereqs.sh
# shellcheck disable=SC1091
source target/prereqs.env

step "test data (cargo run -p xtask -- fixtures)"
cargo run --quiet -p xtask -- fixtures >/dev/null

step "formatting (cargo fmt --check)"
cargo fmt --all --check
for pkg in cpp/llama-ref cpp/bitnet-ref; do
    cargo fmt --manifest-path "$pkg/Cargo.toml" --check
done

step "lints (cargo clippy --workspace --all-targets -- -D warnings)"
cargo clippy --quiet --workspace --all-targets -- -D warnings

# The C++ references are separate cargo packages (both vendored libraries declare
# links = "llama"). First build: ~1 min for bitnet.cpp, several for llama.cpp; afterwards
# cargo sees them up to date and nothing is rebuilt.
for pkg in cpp/bitnet-ref cpp/llama-ref; do
    step "C++ reference $pkg (cargo build --release; clippy)"
    cargo build --quiet --release --manifest-path "$pkg/Cargo.toml"
    cargo clippy --quiet --release --manifest-path "$pkg/Cargo.toml" -- -D warnings
done

step "tests (cargo test --workspace)"
cargo test --workspace
