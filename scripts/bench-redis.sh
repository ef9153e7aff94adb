#!/usr/bin/env bash
# Benchmarks of the Redis entity store (see BENCHMARKS.md, "Redis entity store"):
# warm and cold decision latency with 1k, 100k and 1M entities in a redis-server the
# bench starts itself, and revocation latency (write to first Deny). Prints the
# warm-path ratios of this one run at the end.
#   bash scripts/bench-redis.sh                 # 1k, 100k, 1M
#   PORTCULLIS_BENCH_SIZES=1000 bash scripts/bench-redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps/redis.sh
export PATH="$PWD/.tools/bin:$PATH"
export PORTCULLIS_BENCH_SIZES="${PORTCULLIS_BENCH_SIZES:-1000,100000,1000000}"
cargo bench --bench redis_entities -- --noplot 2>&1 | tee target/bench-redis.log
python3 - "$PORTCULLIS_BENCH_SIZES" <<'PY'
import json, sys
sizes = [s.strip() for s in sys.argv[1].split(",")]
def mean(group, n):
    with open(f"target/criterion/{group}/{n}/new/estimates.json") as f:
        return json.load(f)["mean"]["point_estimate"]
base = mean("redis_warm", sizes[0])
print("\nsize     warm mean   cold mean   warm / warm@" + sizes[0])
for n in sizes:
    w, c = mean("redis_warm", n), mean("redis_cold", n)
    print(f"{n:>8} {w/1e3:9.2f} us {c/1e3:9.2f} us   {w/base:.3f}x")
PY
