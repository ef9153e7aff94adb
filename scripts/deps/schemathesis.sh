#!/usr/bin/env bash
# Installs schemathesis (property-based testing of an HTTP API against its OpenAPI
# document) into a virtualenv under .tools/ and links its command into .tools/bin when
# it is missing. tests/openapi.rs runs it against the real server and docs/openapi.json.
# The version is pinned so every machine checks with the same rules.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$PWD/.tools/bin"
venv="$PWD/.tools/schemathesis"
version=4.32.5
if [ -x "$bin/schemathesis" ] && "$bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
mkdir -p "$bin"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
ln -sf "$venv/bin/schemathesis" "$bin/schemathesis"
"$bin/schemathesis" --version >/dev/null
echo "installed $("$bin/schemathesis" --version) into .tools/bin/schemathesis"
