#!/usr/bin/env bash
# Installs cargo-fuzz (scripts/fuzz.sh and the fuzz targets in fuzz/) when it is
# missing. The fuzz targets build with the nightly toolchain (libFuzzer's coverage
# instrumentation needs it); cargo-fuzz itself builds with any toolchain. Idempotent:
# nothing is done when `cargo fuzz` already answers.
set -euo pipefail
if cargo fuzz --version >/dev/null 2>&1; then
  exit 0
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
cargo install cargo-fuzz --locked
cargo fuzz --version
