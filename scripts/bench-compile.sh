#!/usr/bin/env bash
# Model compile time at scale (see BENCHMARKS.md, "Compile at scale"): the issue 14
# document-sharing workload — 5 base policies and N grants of the form
#   permit (principal == User::"uI", action == Action::"view", resource == Doc::"dJ");
# — timed through the release binary: `portcullis validate` (read, parse, link,
# strictly validate, derive) for each N, and a hot reload of the first N: a served
# model gets one more grant written into its policy file, and the time from the write
# to the first decision that the new grant allows is measured.
#
#   bash scripts/bench-compile.sh                  # target/release/portcullis
#   bash scripts/bench-compile.sh BIN [BIN...]     # each binary in turn
#
#   BENCH_GRANTS   grant counts [10000,30000]
#
# Needs curl and python3. With no binary named it builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."

GRANTS="${BENCH_GRANTS:-10000,30000}"
if [[ $# -eq 0 ]]; then
    bash scripts/build-release.sh
    set -- target/release/portcullis
fi

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

cat >"$WORK/docs.cedarschema" <<'SCHEMA'
entity Team;
entity User in [Team] = { disabled: Bool };
entity Folder;
entity Doc in [Folder] = { owner: User, public: Bool };
action view, edit appliesTo { principal: [User], resource: [Doc] };
SCHEMA

# One model directory per grant count: base policies and grants in one file.
model() {
    local n="$1" dir="$WORK/model-$1"
    mkdir -p "$dir/policies"
    python3 - "$n" "$dir/policies/docs.cedar" <<'PY'
import random, sys
n, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(14)
with open(out, "w") as f:
    f.write('@id("owner")\npermit (principal, action, resource) when { resource.owner == principal };\n')
    f.write('@id("public")\npermit (principal, action == Action::"view", resource) when { resource.public };\n')
    f.write('@id("team-folder")\npermit (principal in Team::"staff", action == Action::"view", resource in Folder::"shared");\n')
    f.write('@id("disabled")\nforbid (principal, action, resource) when { principal.disabled };\n')
    f.write('@id("no-edit-shared")\nforbid (principal, action == Action::"edit", resource in Folder::"archive");\n')
    for k in range(n):
        u, d = rng.randrange(1000), rng.randrange(10000)
        f.write(f'@id("grant{k}")\npermit (principal == User::"u{u}", action == Action::"view", resource == Doc::"d{d}");\n')
PY
    # The reload asks about a newcomer and one document: both exist in the data.
    cat >"$dir/entities.json" <<'JSON'
[{"uid":{"type":"User","id":"newcomer"},"attrs":{"disabled":false},"parents":[]},
 {"uid":{"type":"Doc","id":"d0"},"attrs":{"owner":{"type":"User","id":"u0"},"public":false},"parents":[]}]
JSON
    echo "$dir"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
IFS=, read -ra COUNTS <<<"$GRANTS"
for bin in "$@"; do
    for n in "${COUNTS[@]}"; do
        dir="$(model "$n")"
        start="$(now)"
        "$bin" validate --schema "$WORK/docs.cedarschema" --policies "$dir/policies" \
            >"$WORK/validate.log" 2>&1 || { cat "$WORK/validate.log" >&2; exit 1; }
        echo "$bin validate, $n grants: $(elapsed "$start" "$(now)") s"
    done
    # Hot reload of the first size.
    n="${COUNTS[0]}"
    dir="$WORK/model-$n"
    port="$(free_port)"
    "$bin" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$(free_port)" \
        --schema "$WORK/docs.cedarschema" --policies "$dir/policies" \
        --entities "$dir/entities.json" >"$WORK/serve.log" 2>&1 &
    PID=$!
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" == 200 ]]; do
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
        sleep 0.05
    done
    ask() {
        curl -sS -X POST "http://127.0.0.1:$port/v1/is_authorized" -H 'content-type: application/json' \
            -d '{"principal":"User::\"newcomer\"","action":"Action::\"view\"","resource":"Doc::\"d0\"","context":{}}'
    }
    [[ "$(ask)" == *'"decision":"Deny"'* ]] || { echo "the newcomer is allowed before the edit" >&2; exit 1; }
    start="$(now)"
    printf '@id("newcomer")\npermit (principal == User::"newcomer", action == Action::"view", resource == Doc::"d0");\n' \
        >>"$dir/policies/docs.cedar"
    until [[ "$(ask)" == *'"decision":"Allow"'* ]]; do
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
        sleep 0.01
    done
    echo "$bin hot reload, $n grants: edit to first Allow $(elapsed "$start" "$(now)") s"
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
