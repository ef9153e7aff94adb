#!/usr/bin/env bash
# CPU instructions per request of Portcullis against a minimal hyper server, counted
# by Valgrind's callgrind (issue 14, "lean per request"; the target is <= 3x the
# baseline's instructions per request).
#
# For each server (examples/hyper_baseline.rs, and `portcullis serve` on the embedded
# demo model), in each of CALLGRIND_RUNS runs: start it under
# `valgrind --tool=callgrind` on a free loopback port (it binds port 0 and reports
# the port it got), open ONE keep-alive connection, send CALLGRIND_WARMUP requests,
# zero the counters (`callgrind_control -z`), send CALLGRIND_REQUESTS requests one
# after the other, dump the counters (`callgrind_control -d`), and divide the dump's
# instruction count (Ir, all threads) by the number of requests. The client
# (scripts/callgrind_http_client.py) runs outside Valgrind, so its cost is not
# counted. Prints instructions per request of each, the ratio, and for Portcullis
# the top functions per request, inclusive and self (scripts/callgrind_top.py).
#
#   bash scripts/callgrind-http.sh                            # POST /v1/is_authorized
#   CALLGRIND_ENDPOINT=gateway bash scripts/callgrind-http.sh # GET /forward-auth/nginx
#   CALLGRIND_REQUESTS=5000 CALLGRIND_RUNS=3 bash scripts/callgrind-http.sh
#
# Environment (defaults in brackets):
#   CALLGRIND_ENDPOINT   is_authorized | gateway | gateway_jwt, as in scripts/bench-http.sh
#                        [is_authorized]
#   CALLGRIND_REQUESTS   measured requests per server and run [2000]
#   CALLGRIND_WARMUP     unmeasured requests first, on the same connection [200]
#   CALLGRIND_RUNS       runs (each measures both servers) [2]
#   CALLGRIND_TOP        functions listed per profile [15]
#   CALLGRIND_NICE       niceness of the servers under Valgrind [10]
#   CALLGRIND_DEBUGINFO  0 = measure the binaries of `cargo build --release` in
#                        target/release, the very ones scripts/bench-http.sh runs
#                        (functions are named from the symbol table) [0];
#                        1 = build with line tables into a separate target/callgrind
#                        (release profile plus CARGO_PROFILE_RELEASE_DEBUG=
#                        line-tables-only; Cargo.toml unchanged), for source lines in
#                        kcachegrind (line tables should not change the generated
#                        code; not checked here). Costs a second full build.
#   CALLGRIND_SKIP_BUILD 1 = do not run cargo [0]
# The dumps are kept in target/callgrind-http/<endpoint>/ (open them with
# callgrind_annotate or kcachegrind). Needs valgrind (Debian:
# `apt-get install -y valgrind`) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

ENDPOINT="${CALLGRIND_ENDPOINT:-is_authorized}"
REQUESTS="${CALLGRIND_REQUESTS:-2000}"
WARMUP="${CALLGRIND_WARMUP:-200}"
RUNS="${CALLGRIND_RUNS:-2}"
TOP="${CALLGRIND_TOP:-15}"
NICE="${CALLGRIND_NICE:-10}"

for tool in valgrind callgrind_control python3; do
    command -v "$tool" >/dev/null || { echo "callgrind-http: $tool not found" >&2; exit 1; }
done

if [[ "${CALLGRIND_DEBUGINFO:-0}" == 1 ]]; then
    TARGET=target/callgrind
    BUILD_ENV=(CARGO_TARGET_DIR="$TARGET" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only)
else
    TARGET=target
    BUILD_ENV=()
fi
if [[ "${CALLGRIND_SKIP_BUILD:-0}" != 1 ]]; then
    env "${BUILD_ENV[@]}" nice -n "$NICE" cargo build --release --bin portcullis --example hyper_baseline
fi
PORTCULLIS="$TARGET/release/portcullis"
BASELINE="$TARGET/release/examples/hyper_baseline"

PORTCULLIS_ARGS=(serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0)
# Both servers' answers say "Allow" (Portcullis's gateway answer is JSON too).
EXPECT='"Allow"'
case "$ENDPOINT" in
    is_authorized) ;;
    gateway) PORTCULLIS_ARGS+=(--trusted-principal-header x-portcullis-user) ;;
    gateway_jwt) ;;
    *)
        echo "callgrind-http: CALLGRIND_ENDPOINT must be is_authorized, gateway or gateway_jwt, not $ENDPOINT" >&2
        exit 2
        ;;
esac

OUT="target/callgrind-http/$ENDPOINT"
rm -rf "$OUT"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
SERVER_PID=""
CLIENT_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    if [[ -n "$CLIENT_PID" ]]; then
        kill "$CLIENT_PID" 2>/dev/null || true
        wait "$CLIENT_PID" 2>/dev/null || true
    fi
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ "$ENDPOINT" == gateway_jwt ]]; then
    # bea named by an EdDSA JWT, verified once and then answered by the token cache.
    PORTCULLIS_BENCH_TOKEN="$(bash scripts/mint-jwt.sh "$WORK")"
    export PORTCULLIS_BENCH_TOKEN
    PORTCULLIS_ARGS+=(--jwt-key-file "$WORK/login.pub.pem"
        --jwt-issuer https://login.portal.example --jwt-audience portal)
fi

# Waits until `log` has a line matching `pattern`, then prints the first
# host:port found on that line. Fails if `pid` exits or after 300 s (start-up under
# Valgrind is slow: Portcullis compiles and validates its policies first).
wait_for_addr() {
    local log="$1" pattern="$2" pid="$3" line
    for _ in $(seq 3000); do
        line="$(grep -m1 -E "$pattern" "$log" || true)"
        if [[ -n "$line" ]]; then
            grep -oE '127\.0\.0\.1:[0-9]+' <<<"$line" | head -n1
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "callgrind-http: server exited:" >&2; cat "$log" >&2; return 1; }
        sleep 0.1
    done
    echo "callgrind-http: server did not start:" >&2
    cat "$log" >&2
    return 1
}

# measure <server> <run>: one server under callgrind; leaves the dump in
# $OUT/<server>.<run>.dump and appends `<server> <run> <Ir>` to $WORK/results.
measure() {
    local server="$1" run="$2" cmd pattern addr dump ir
    if [[ $server == baseline ]]; then
        cmd=("$BASELINE" 127.0.0.1:0)
        pattern='listening on'
    else
        cmd=("$PORTCULLIS" "${PORTCULLIS_ARGS[@]}")
        pattern='portcullis serving'
    fi
    local base="$WORK/$server.$run"
    PORTCULLIS_LOG=info nice -n "$NICE" valgrind --tool=callgrind \
        --callgrind-out-file="$base.callgrind" "${cmd[@]}" >"$base.log" 2>&1 &
    SERVER_PID=$!
    addr="$(wait_for_addr "$base.log" "$pattern" "$SERVER_PID")"
    # In the background, so that the traps run at once on INT/TERM and stop it.
    python3 scripts/callgrind_http_client.py "$addr" "$SERVER_PID" "$ENDPOINT" \
        "$WARMUP" "$REQUESTS" "$EXPECT" &
    CLIENT_PID=$!
    wait "$CLIENT_PID"
    CLIENT_PID=""
    # callgrind_control -d writes <out-file>.1: the counts since the -z.
    dump="$base.callgrind.1"
    [[ -s "$dump" ]] || { echo "callgrind-http: no dump $dump" >&2; ls "$WORK" >&2; exit 1; }
    stop_server
    cp "$dump" "$OUT/$server.$run.dump"
    ir="$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")"
    echo "$server $run $ir" >>"$WORK/results"
    printf 'run %s %-10s %15s Ir over %s requests = %s per request\n' "$run" "$server" "$ir" "$REQUESTS" \
        "$(( ir / REQUESTS ))"
}

echo "endpoint $ENDPOINT; $WARMUP warm-up + $REQUESTS measured requests on one connection, $RUNS runs"
for run in $(seq "$RUNS"); do
    measure baseline "$run"
    measure portcullis "$run"
done

python3 - "$WORK/results" "$REQUESTS" <<'PY'
import sys
ir = {}
for line in open(sys.argv[1]):
    server, run, count = line.split()
    ir[(server, int(run))] = int(count)
n = int(sys.argv[2])
print()
print("run   baseline Ir/req   portcullis Ir/req   ratio")
for run in sorted({r for _, r in ir}):
    b, p = ir[("baseline", run)] / n, ir[("portcullis", run)] / n
    print(f"{run:<5} {b:>15,.0f} {p:>19,.0f} {p / b:>7.2f}x   (target <= 3x)")
PY

# The profile of Portcullis's last run, per request. callgrind_annotate's own self
# ranking is misled by the calls in progress at the zeroing (see
# scripts/callgrind_top.py), so the figures are read from the dump directly.
LAST="$OUT/portcullis.$RUNS.dump"
echo
echo "portcullis, run $RUNS: top $TOP functions per request ($LAST)"
python3 scripts/callgrind_top.py "$LAST" "$REQUESTS" "$TOP"
echo
echo "More: callgrind_annotate --inclusive=yes $LAST, or kcachegrind."
