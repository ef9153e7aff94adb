#!/usr/bin/env bash
# The test command of README: installs what the tests need when it is missing, then
# runs every test. Each file in scripts/deps/ installs one tool and is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
for dep in scripts/deps/*.sh; do
  [ -e "$dep" ] || continue
  bash "$dep"
done
# Tools the deps scripts installed under .tools/bin (helm, cvc5, ...).
export PATH="$PWD/.tools/bin:$PATH"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
