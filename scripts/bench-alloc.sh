#!/usr/bin/env bash
# Which global allocator Portcullis ships with, by measurement (issue 14): glibc's
# malloc, mimalloc (feature `mimalloc`) and jemalloc (feature `jemalloc`), side by side
# in one run.
#
# Builds the release binary once per allocator (only the portcullis crate itself and
# the allocator are recompiled) into target/alloc/portcullis-<name>, then:
#   1. instructions per request: each binary under `valgrind --tool=callgrind` on the
#      embedded demo, ALLOC_WARMUP requests on one keep-alive connection, counters
#      zeroed, ALLOC_REQUESTS requests, counters dumped (scripts/callgrind_http_client.py);
#      repeatable on a noisy machine;
#   2. throughput: the three servers run at once, and wrk drives each in turn for
#      ALLOC_ROUNDS rounds (the order rotates every round), POST /v1/is_authorized;
#   3. memory: each server's resident set (VmRSS) and peak (VmHWM) after the load.
# Prints every figure and the ratio of each allocator to glibc.
#
#   bash scripts/bench-alloc.sh
#   ALLOC_ROUNDS=5 ALLOC_DURATION=20s bash scripts/bench-alloc.sh
#
# Environment (defaults in brackets):
#   ALLOC_ROUNDS       wrk rounds, each runs all three [3]
#   ALLOC_DURATION     wrk duration of each measured run [10s]
#   ALLOC_CONNECTIONS  wrk connections [32]
#   ALLOC_REQUESTS     requests counted under callgrind [2000]
#   ALLOC_WARMUP       requests before the counters are zeroed [200]
#   ALLOC_SKIP_BUILD   1 = use the binaries already in target/alloc [0]
# Needs cargo, wrk, valgrind, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ALLOC_ROUNDS:-3}"
DURATION="${ALLOC_DURATION:-10s}"
CONNECTIONS="${ALLOC_CONNECTIONS:-32}"
REQUESTS="${ALLOC_REQUESTS:-2000}"
WARMUP="${ALLOC_WARMUP:-200}"
ALLOCATORS=(glibc mimalloc jemalloc)

for tool in wrk valgrind callgrind_control curl python3; do
    command -v "$tool" >/dev/null || { echo "bench-alloc: $tool not found" >&2; exit 1; }
done

mkdir -p target/alloc
if [[ "${ALLOC_SKIP_BUILD:-0}" != 1 ]]; then
    for a in "${ALLOCATORS[@]}"; do
        features=(--no-default-features)
        [[ $a != glibc ]] && features+=(--features "$a")
        echo "building with $a"
        cargo build --release --bin portcullis "${features[@]}"
        cp target/release/portcullis "target/alloc/portcullis-$a"
    done
    # Leave target/release/portcullis as the default build.
    cargo build --release --bin portcullis
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start <log> <cmd...>: starts a server, prints its pid and address once it serves.
wait_addr() {
    local log="$1" pid="$2" line
    for _ in $(seq 3000); do
        line="$(grep -m1 -E 'portcullis serving' "$log" || true)"
        if [[ -n "$line" ]]; then
            grep -oE '127\.0\.0\.1:[0-9]+' <<<"$line" | head -n1
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "bench-alloc: server exited:" >&2; cat "$log" >&2; return 1; }
        sleep 0.1
    done
    echo "bench-alloc: server did not start" >&2
    return 1
}
ARGS=(serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0)

echo
echo "1. instructions per request (callgrind, $WARMUP warm-up + $REQUESTS counted, one connection)"
for a in "${ALLOCATORS[@]}"; do
    PORTCULLIS_LOG=info valgrind --tool=callgrind --callgrind-out-file="$WORK/$a.callgrind" \
        "target/alloc/portcullis-$a" "${ARGS[@]}" >"$WORK/$a.vg.log" 2>&1 &
    pid=$!
    addr="$(wait_addr "$WORK/$a.vg.log" "$pid")"
    python3 scripts/callgrind_http_client.py "$addr" "$pid" is_authorized "$WARMUP" "$REQUESTS" '"Allow"'
    kill "$pid"; wait "$pid" 2>/dev/null || true
    ir="$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/$a.callgrind.1")"
    echo "ir $a $(( ir / REQUESTS ))" >>"$WORK/results"
done

cat >"$WORK/request.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/v1/is_authorized"
wrk.headers["content-type"] = "application/json"
wrk.body = [[{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\"","context":{}}]]
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

declare -A ADDR PID
for a in "${ALLOCATORS[@]}"; do
    PORTCULLIS_LOG=info "target/alloc/portcullis-$a" "${ARGS[@]}" >"$WORK/$a.log" 2>&1 &
    PID[$a]=$!
    PIDS+=("${PID[$a]}")
    ADDR[$a]="$(wait_addr "$WORK/$a.log" "${PID[$a]}")"
    curl -sS -X POST "http://${ADDR[$a]}/v1/is_authorized" -H 'content-type: application/json' \
        --data-binary '{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\"","context":{}}' \
        | grep -q '"Allow"' || { echo "bench-alloc: $a did not allow" >&2; exit 1; }
    echo "rss_idle $a $(awk '/^VmRSS/ {print $2}' "/proc/${PID[$a]}/status")" >>"$WORK/results"
done

echo
echo "2. throughput (wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, order rotating)"
for a in "${ALLOCATORS[@]}"; do
    wrk -t1 -c"$CONNECTIONS" -d2s -s "$WORK/request.lua" "http://${ADDR[$a]}" >/dev/null
done
for round in $(seq "$ROUNDS"); do
    for k in 0 1 2; do
        a="${ALLOCATORS[$(( (round + k) % 3 ))]}"
        out="$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/request.lua" "http://${ADDR[$a]}" | grep '^BENCH ')"
        echo "round$round $a $out" | tee -a "$WORK/results"
    done
done
for a in "${ALLOCATORS[@]}"; do
    echo "rss $a $(awk '/^VmRSS/ {print $2}' "/proc/${PID[$a]}/status") $(awk '/^VmHWM/ {print $2}' "/proc/${PID[$a]}/status")" >>"$WORK/results"
done

python3 - "$WORK/results" <<'PY'
import sys
ir, idle, rss, runs = {}, {}, {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "ir":
        ir[f[1]] = int(f[2])
    elif f[0] == "rss_idle":
        idle[f[1]] = int(f[2])
    elif f[0] == "rss":
        rss[f[1]] = (int(f[2]), int(f[3]))
    else:
        d = {k: int(v) for k, v in (x.split("=") for x in f[3:])}
        r = runs.setdefault(f[1], [0, 0, [], []])
        r[0] += d["requests"]; r[1] += d["duration_us"]; r[2].append(d["p50_us"]); r[3].append(d["p99_us"])
        if d["errors"] or d["non2xx"]:
            print(f"warning: {f[1]} {f[0]}: {d['errors']} errors, {d['non2xx']} non-2xx")
base = runs["glibc"][0] / runs["glibc"][1]
print()
print("allocator  Ir/request  vs glibc   req/s   vs glibc  p50 ms  p99 ms  RSS idle KiB  RSS after KiB  peak KiB")
for a in ("glibc", "mimalloc", "jemalloc"):
    req, us, p50, p99 = runs[a]
    rps = req / (us / 1e6)
    med = lambda xs: sorted(xs)[len(xs) // 2] / 1000
    print(f"{a:<10} {ir[a]:>10,} {ir[a] / ir['glibc']:>8.2f}x {rps:>7.0f} {rps / (base * 1e6):>8.2f}x "
          f"{med(p50):>7.3f} {med(p99):>7.3f} {idle[a]:>13,} {rss[a][0]:>14,} {rss[a][1]:>9,}")
PY
