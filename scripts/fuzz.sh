#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 30), one after the other,
# and fails if any of them crashed (a panic, a failed property, a timeout or running
# out of memory). Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET, read only) and the
# corpus earlier runs grew on this machine (fuzz/corpus/TARGET, not committed). A crash
# leaves its input in fuzz/artifacts/TARGET/; replay it with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...` from fuzz/, then
# make it a regression test of the main suite.
#
# The targets are built once, optimised with debug assertions and overflow checks on,
# without a sanitizer (the code under test is safe Rust: a sanitizer would double the
# build and halve the executions without finding more), 16 codegen units (a build
# several minutes shorter on 2 cores, for slightly slower runs).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
bash scripts/deps/cargo-fuzz.sh
cd fuzz
# The versions the service itself builds; cargo adds the fuzzing crates to the copy.
[ -e Cargo.lock ] || cp ../Cargo.lock Cargo.lock
build=(-s none --codegen-units 16)
cargo +nightly fuzz build "${build[@]}"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: ${seconds}s"
  # -timeout: one input taking 10 s is a finding (a request must never hang).
  if cargo +nightly fuzz run "${build[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$logs/$t" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$t")
    grep -E 'panicked at|^SUMMARY|Test unit written to|ERROR: libFuzzer' "$logs/$t" || tail -20 "$logs/$t"
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -1)
  secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$logs/$t" | tail -1)
  summary+=("$(printf '%-20s %-6s %10s execs %4s s  corpus %s' "$t" "$status" "${runs:-?}" "${secs:-?}" "$(find "corpus/$t" -type f | wc -l)")")
done
echo
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
