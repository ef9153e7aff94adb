#!/usr/bin/env bash
# Throughput of Portcullis against a minimal hyper server, measured in one run
# (issue 14, "lean per request"; the target is >= 60% of the baseline's req/s).
#
# Builds the release binaries, starts both servers on free loopback ports (each binds
# port 0 and reports the port it got), then runs wrk against each, one after the
# other, for BENCH_ROUNDS rounds (alternating which one goes first), and prints the
# req/s of each, the ratio portcullis/baseline, and wrk's latency p50/p99.
#
#   bash scripts/bench-http.sh                              # POST /v1/is_authorized
#   BENCH_ENDPOINT=gateway bash scripts/bench-http.sh       # GET /forward-auth/nginx
#   BENCH_CONNECTIONS=64 BENCH_DURATION=20s bash scripts/bench-http.sh
#
# Environment (defaults in brackets):
#   BENCH_ENDPOINT     is_authorized | gateway | gateway_jwt [is_authorized]
#                        is_authorized: the decision API, bea PayInvoice inv-1001,
#                          the embedded demo model, `serve --listen` and no other flag.
#                        gateway: nginx auth_request dialect for
#                          `POST /accounts/acme/invoices/inv-1001/pay` as bea, who is
#                          named by a trusted header (`--trusted-principal-header`).
#                        gateway_jwt: the same check, bea named by an EdDSA JWT
#                          (scripts/mint-jwt.sh; the verified-token cache on, as by
#                          default).
#   BENCH_THREADS      wrk threads [1]
#   BENCH_CONNECTIONS  wrk connections [32]
#   BENCH_DURATION     wrk duration of each measured run [10s]
#   BENCH_WARMUP       wrk duration of the unmeasured warm-up of each server [2s]
#   BENCH_ROUNDS       measured rounds; each round runs both servers [3]
#   BENCH_NICE         niceness of wrk and both servers [10]
#   BENCH_SKIP_BUILD   1 = use the binaries already in target/release [0]
# Needs wrk (Debian: `apt-get install -y wrk`), curl and python3.
#
# Both servers run on the same machine as wrk, so on a small machine the three share
# the cores: the ratio of one run is the figure to compare, not the absolute req/s.
set -euo pipefail
cd "$(dirname "$0")/.."

ENDPOINT="${BENCH_ENDPOINT:-is_authorized}"
THREADS="${BENCH_THREADS:-1}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
DURATION="${BENCH_DURATION:-10s}"
WARMUP="${BENCH_WARMUP:-2s}"
ROUNDS="${BENCH_ROUNDS:-3}"
NICE="${BENCH_NICE:-10}"

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench-http: $tool not found" >&2; exit 1; }
done

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    nice -n "$NICE" cargo build --release --bin portcullis --example hyper_baseline
fi
PORTCULLIS=target/release/portcullis
BASELINE=target/release/examples/hyper_baseline

WORK="$(mktemp -d)"
PIDS=()
WRK_PID=""
cleanup() {
    local pid
    if [[ -n "$WRK_PID" ]]; then
        kill "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until `log` has a line matching `pattern`, then prints the first
# host:port found on that line. Fails if `pid` exits or after 60 s.
wait_for_addr() {
    local log="$1" pattern="$2" pid="$3" line
    for _ in $(seq 600); do
        line="$(grep -m1 -E "$pattern" "$log" || true)"
        if [[ -n "$line" ]]; then
            grep -oE '127\.0\.0\.1:[0-9]+' <<<"$line" | head -n1
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "bench-http: server exited:" >&2; cat "$log" >&2; return 1; }
        sleep 0.1
    done
    echo "bench-http: server did not start:" >&2
    cat "$log" >&2
    return 1
}

PORTCULLIS_ARGS=(serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0)
case "$ENDPOINT" in
    is_authorized)
        cat >"$WORK/request.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/v1/is_authorized"
wrk.headers["content-type"] = "application/json"
wrk.body = [[{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\"","context":{}}]]
LUA
        ;;
    gateway)
        PORTCULLIS_ARGS+=(--trusted-principal-header x-portcullis-user)
        cat >"$WORK/request.lua" <<'LUA'
wrk.method = "GET"
wrk.path = "/forward-auth/nginx"
wrk.headers["x-original-method"] = "POST"
wrk.headers["x-original-uri"] = "/accounts/acme/invoices/inv-1001/pay"
wrk.headers["x-portcullis-user"] = "bea"
LUA
        ;;
    gateway_jwt)
        TOKEN="$(bash scripts/mint-jwt.sh "$WORK")"
        PORTCULLIS_ARGS+=(--jwt-key-file "$WORK/login.pub.pem"
            --jwt-issuer https://login.portal.example --jwt-audience portal)
        cat >"$WORK/request.lua" <<LUA
wrk.method = "GET"
wrk.path = "/forward-auth/nginx"
wrk.headers["x-original-method"] = "POST"
wrk.headers["x-original-uri"] = "/accounts/acme/invoices/inv-1001/pay"
wrk.headers["authorization"] = "Bearer $TOKEN"
LUA
        ;;
    *)
        echo "bench-http: BENCH_ENDPOINT must be is_authorized, gateway or gateway_jwt, not $ENDPOINT" >&2
        exit 2
        ;;
esac
# Machine-readable summary line, printed by wrk when a run ends.
cat >>"$WORK/request.lua" <<'LUA'
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

nice -n "$NICE" "$BASELINE" 127.0.0.1:0 >"$WORK/baseline.log" 2>&1 &
pid=$!
PIDS+=("$pid")
BASELINE_ADDR="$(wait_for_addr "$WORK/baseline.log" 'listening on' "$pid")"

PORTCULLIS_LOG=info nice -n "$NICE" "$PORTCULLIS" "${PORTCULLIS_ARGS[@]}" >"$WORK/portcullis.log" 2>&1 &
pid=$!
PIDS+=("$pid")
PORTCULLIS_ADDR="$(wait_for_addr "$WORK/portcullis.log" 'portcullis serving' "$pid")"

# One request to each, shown, so a wrong answer (e.g. a Deny) is seen at once.
probe() {
    local addr="$1"
    if [[ "$ENDPOINT" == is_authorized ]]; then
        curl -sS -o "$WORK/probe.body" -w '%{http_code}' -X POST "http://$addr/v1/is_authorized" \
            -H 'content-type: application/json' \
            --data-binary '{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\"","context":{}}'
    elif [[ "$ENDPOINT" == gateway ]]; then
        curl -sS -o "$WORK/probe.body" -w '%{http_code}' "http://$addr/forward-auth/nginx" \
            -H 'x-original-method: POST' -H 'x-original-uri: /accounts/acme/invoices/inv-1001/pay' \
            -H 'x-portcullis-user: bea'
    else
        curl -sS -o "$WORK/probe.body" -w '%{http_code}' "http://$addr/forward-auth/nginx" \
            -H 'x-original-method: POST' -H 'x-original-uri: /accounts/acme/invoices/inv-1001/pay' \
            -H "authorization: Bearer $TOKEN"
    fi
}
for server in baseline portcullis; do
    if [[ $server == baseline ]]; then addr="$BASELINE_ADDR"; else addr="$PORTCULLIS_ADDR"; fi
    status="$(probe "$addr")"
    echo "$server on $addr: HTTP $status $(head -c 200 "$WORK/probe.body")"
    if [[ "$status" != 200 ]]; then
        echo "bench-http: $server did not answer 200" >&2
        exit 1
    fi
done
if ! grep -q '"Allow"' "$WORK/probe.body"; then
    echo "bench-http: portcullis did not allow the request" >&2
    exit 1
fi

# run_wrk <server> <addr> <duration> <label>: one wrk run; its summary line goes to
# $WORK/results as `<label> <server> BENCH ...`.
run_wrk() {
    local server="$1" addr="$2" duration="$3" label="$4"
    local out="$WORK/wrk-$label-$server.txt"
    # In the background, so that the traps run at once on INT/TERM and stop it.
    nice -n "$NICE" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency \
        -s "$WORK/request.lua" "http://$addr" >"$out" &
    WRK_PID=$!
    wait "$WRK_PID"
    WRK_PID=""
    echo "$label $server $(grep '^BENCH ' "$out")" >>"$WORK/results"
}

echo "endpoint $ENDPOINT; wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, warm-up $WARMUP each"
run_wrk baseline "$BASELINE_ADDR" "$WARMUP" warmup
run_wrk portcullis "$PORTCULLIS_ADDR" "$WARMUP" warmup
for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then order=(baseline portcullis); else order=(portcullis baseline); fi
    for server in "${order[@]}"; do
        if [[ $server == baseline ]]; then addr="$BASELINE_ADDR"; else addr="$PORTCULLIS_ADDR"; fi
        run_wrk "$server" "$addr" "$DURATION" "round$round"
        tail -n1 "$WORK/results"
    done
done

python3 - "$WORK/results" <<'PY'
import re, statistics, sys

runs = {}  # (round, server) -> dict
for line in open(sys.argv[1]):
    label, server, _, *fields = line.split()
    if label == "warmup":
        continue
    d = {k: int(v) for k, v in (f.split("=") for f in fields)}
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
    runs[(label, server)] = d

rounds = sorted({r for r, _ in runs}, key=lambda r: int(r[5:]))
print()
print("round    baseline req/s  portcullis req/s  ratio   baseline p50/p99 us  portcullis p50/p99 us")
ratios = []
for r in rounds:
    b, p = runs[(r, "baseline")], runs[(r, "portcullis")]
    ratio = p["rps"] / b["rps"]
    ratios.append(ratio)
    print(f"{r:<8} {b['rps']:>14.0f} {p['rps']:>17.0f} {ratio:>6.1%}   "
          f"{b['p50_us']:>8} / {b['p99_us']:<8}   {p['p50_us']:>8} / {p['p99_us']:<8}")
    for name, d in (("baseline", b), ("portcullis", p)):
        if d["errors"] or d["non2xx"]:
            print(f"  warning: {name}: {d['errors']} socket errors, {d['non2xx']} non-2xx answers")

def total(server):
    req = sum(runs[(r, server)]["requests"] for r in rounds)
    secs = sum(runs[(r, server)]["duration_us"] for r in rounds) / 1e6
    return req / secs

tb, tp = total("baseline"), total("portcullis")
print()
print(f"all rounds: baseline {tb:.0f} req/s, portcullis {tp:.0f} req/s, "
      f"ratio portcullis/baseline {tp / tb:.1%} "
      f"(per round: min {min(ratios):.1%}, median {statistics.median(ratios):.1%}, max {max(ratios):.1%}; target >= 60%)")
for name in ("baseline", "portcullis"):
    p50 = statistics.median(runs[(r, name)]["p50_us"] for r in rounds)
    p99 = statistics.median(runs[(r, name)]["p99_us"] for r in rounds)
    print(f"latency {name:<10} p50 {p50 / 1000:.3f} ms, p99 {p99 / 1000:.3f} ms (median over rounds)")
PY
