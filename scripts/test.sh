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

step "lints (cargo clippy --workspace --all-targets -- -D warnings)"
cargo clippy --quiet --workspace --all-targets -- -D warnings

step "tests (cargo test --workspace)"
cargo test --workspace
