#!/usr/bin/env bash
# The one release build command. The Dockerfile's builder stage runs this script and
# the test suite (tests/helm_chart.rs) runs it too, so CI exercises the exact build
# step of the container image even on machines without a container engine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin portcullis "$@"
