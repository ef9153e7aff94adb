#!/usr/bin/env bash
# The file source at scale (see BENCHMARKS.md, "File source at scale"): starts the
# release server on a large portal entity file and prints, per binary and round, the
# time from start to the first `/readyz` 200, the resident memory once ready, after a
# few decisions and after two AuthZEN searches (subject and resource), the peak, the
# memory after the searches and the peak as multiples of the file's size, and how long
# the two searches took.
#
#   bash scripts/bench-file-source.sh                    # target/release/portcullis
#   bash scripts/bench-file-source.sh OLD_BIN NEW_BIN    # compared in one run
#
#   BENCH_ENTITIES   the entity file [target/portal-211k.json, written by
#                    scripts/gen-portal-entities.py when missing]
#   BENCH_ROUNDS     rounds; each round starts every binary once [3]
#
# Needs curl and python3. With no binary named it builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."

ENTITIES="${BENCH_ENTITIES:-target/portal-211k.json}"
ROUNDS="${BENCH_ROUNDS:-3}"
if [[ $# -eq 0 ]]; then
    bash scripts/build-release.sh
    set -- target/release/portcullis
fi
if [[ ! -f "$ENTITIES" ]]; then
    mkdir -p "$(dirname "$ENTITIES")"
    python3 scripts/gen-portal-entities.py "$ENTITIES"
fi
FILE_BYTES="$(stat -c %s "$ENTITIES")"
COUNT="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$ENTITIES")"
echo "entity file: $ENTITIES, $COUNT entities, $((FILE_BYTES / 1024)) KiB"

WORK="$(mktemp -d)"
PID=""
cleanup() {
    if [[ -n "$PID" ]]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# CPU seconds (user + system) the process has used: on a shared machine the time to
# ready depends on the load, its CPU time much less.
cpu_s() { python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$1"; }

# Decisions about the generated data's known uids: the owner of a0 and an outsider.
decide() {
    local port="$1" principal="$2" resource="$3"
    curl -sS -X POST "http://127.0.0.1:$port/v1/is_authorized" \
        -H 'content-type: application/json' \
        -d "{\"principal\":\"Portal::User::\\\"$principal\\\"\",\"action\":\"Portal::Action::\\\"ViewInvoice\\\"\",\"resource\":\"Portal::Invoice::\\\"$resource\\\"\",\"context\":{}}"
}

# AuthZEN searches over the whole data: who may view i0 (subject search), and which
# invoices u0 may view (resource search). Each prints its number of results.
search_subjects() {
    curl -sS -X POST "http://127.0.0.1:$1/access/v1/search/subject" \
        -H 'content-type: application/json' \
        -d '{"subject":{"type":"user"},"action":{"name":"ViewInvoice"},"resource":{"type":"invoice","id":"i0"}}' |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["results"]))'
}
search_resources() {
    curl -sS -X POST "http://127.0.0.1:$1/access/v1/search/resource" \
        -H 'content-type: application/json' \
        -d '{"subject":{"type":"user","id":"u0"},"action":{"name":"ViewInvoice"},"resource":{"type":"invoice"}}' |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["results"]))'
}

# One start of `bin`: prints "ready_s cpu_s rss_ready_kib rss_after_kib rss_search_kib
# hwm_kib search_ms".
run_once() {
    local bin="$1" port admin start ready
    port="$(free_port)"
    admin="$(free_port)"
    start="$(date +%s.%N)"
    "$bin" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --entities "$ENTITIES" >"$WORK/server.log" 2>&1 &
    PID=$!
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" == 200 ]]; do
        kill -0 "$PID" 2>/dev/null || { echo "server exited:" >&2; cat "$WORK/server.log" >&2; exit 1; }
        sleep 0.02
    done
    ready="$(date +%s.%N)"
    local rss_ready cpu
    cpu="$(cpu_s "$PID")"
    rss_ready="$(rss_kib "$PID")"
    local allow deny
    allow="$(decide "$port" u0 i0)"
    deny="$(decide "$port" u1 i0)"
    for i in $(seq 1 50); do decide "$port" "u$i" "i$((i * 7))" >/dev/null; done
    [[ "$allow" == *'"decision":"Allow"'* && "$deny" == *'"decision":"Deny"'* ]] || {
        echo "unexpected decisions: $allow / $deny" >&2
        exit 1
    }
    local rss_after searched found_subjects found_resources
    rss_after="$(rss_kib "$PID")"
    searched="$(date +%s.%N)"
    found_subjects="$(search_subjects "$port")"
    found_resources="$(search_resources "$port")"
    searched="$(python3 -c "print(f'{($(date +%s.%N) - $searched) * 1000:.0f}')")"
    [[ "$found_subjects" -gt 0 && "$found_resources" -gt 0 ]] || {
        echo "searches found nothing: $found_subjects subjects, $found_resources invoices" >&2
        exit 1
    }
    echo "$(python3 -c "print(f'{$ready - $start:.2f}')") $cpu $rss_ready $rss_after $(rss_kib "$PID") $(hwm_kib "$PID") $searched"
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-32s %5s %8s %8s %8s %9s %10s %9s %9s %9s %10s\n' binary round ready_s cpu_s rss_MiB after_MiB search_MiB peak_MiB rss/file peak/file search_ms
for round in $(seq 1 "$ROUNDS"); do
    for bin in "$@"; do
        read -r ready cpu rss after searched hwm ms < <(run_once "$bin")
        python3 - "$bin" "$round" "$ready" "$cpu" "$rss" "$after" "$searched" "$hwm" "$FILE_BYTES" "$ms" <<'PY'
import sys
bin_, rnd, ready, cpu, rss, after, searched, hwm, size, ms = sys.argv[1:]
rss, after, searched, hwm, size = int(rss), int(after), int(searched), int(hwm), int(size)
print(f"{bin_:<32} {rnd:>5} {float(ready):8.2f} {float(cpu):8.2f} {rss/1024:8.0f} {after/1024:9.0f} {searched/1024:10.0f}"
      f" {hwm/1024:9.0f} {searched*1024/size:8.1f}x {hwm*1024/size:8.1f}x {ms:>10}")
PY
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
