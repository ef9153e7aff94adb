#!/usr/bin/env bash
# Soak: Portcullis on the portal model with its entities in Redis, held at half of its
# measured maximum throughput for SOAK_SECONDS (10 minutes), sampling every 10 s the
# p50/p99 latency, resident memory and open file descriptors. Prints a table and a
# summary comparing minute 1 with the last minute (the figures BENCHMARKS.md reports;
# goals: RSS growth under 5%, no fd growth, p99 flat). Not part of CI.
#
#   bash scripts/soak.sh
#   SOAK_SECONDS=120 bash scripts/soak.sh      # a shorter run
#
# Environment (defaults in brackets):
#   SOAK_SECONDS      length of the held load [600]
#   SOAK_INTERVAL     sampling interval in seconds [10]
#   SOAK_CONNECTIONS  keep-alive connections of the load [16]
#   SOAK_RATE         requests per second; measured with wrk and halved when unset
#   SOAK_SKIP_BUILD   1 = use the binaries already in target/release [0]
# Needs redis-server (scripts/deps/redis.sh installs it) and wrk (`apt-get install -y wrk`).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TOTAL="${SOAK_SECONDS:-600}"
INTERVAL="${SOAK_INTERVAL:-10}"
CONNECTIONS="${SOAK_CONNECTIONS:-16}"

for tool in redis-server wrk python3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool not found" >&2; exit 1; }
done
if [[ "${SOAK_SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin portcullis --example soak_load
fi
PORTCULLIS=target/release/portcullis
LOAD=target/release/examples/soak_load

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

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
"$PORTCULLIS" entities --redis-url "redis://127.0.0.1:$REDIS_PORT" import examples/portal/entities.json

PORT="$(free_port)"
ADMIN="$(free_port)"
"$PORTCULLIS" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" >"$WORK/portcullis.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 300); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN/readyz" || true)" == 200 ]] && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/portcullis.log" >&2; exit 1; }
    sleep 0.1
done

if [[ -z "${SOAK_RATE:-}" ]]; then
    cat >"$WORK/request.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/v1/is_authorized"
wrk.headers["content-type"] = "application/json"
wrk.body = [[{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\""}]]
LUA
    wrk -t1 -c"$CONNECTIONS" -d10s -s "$WORK/request.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk.txt"
    MAX="$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")"
    SOAK_RATE="$(python3 -c "print(int(float('$MAX') / 2))")"
    echo "soak: maximum ${MAX} req/s with wrk -t1 -c${CONNECTIONS}; holding ${SOAK_RATE} req/s"
else
    echo "soak: holding ${SOAK_RATE} req/s"
fi

"$LOAD" "127.0.0.1:$PORT" "$SERVER" "$SOAK_RATE" "$SECONDS_TOTAL" "$INTERVAL" "$CONNECTIONS"
