#!/usr/bin/env bash
# Installs `kubernetes-validate` (offline Kubernetes schema validation, with the
# schemas of many Kubernetes versions bundled) into a virtualenv under .tools/ and
# links its command into .tools/bin when it is missing. The version is pinned because
# tests/helm_chart.rs validates against Kubernetes versions this release bundles
# (1.25 to 1.37).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$PWD/.tools/bin"
venv="$PWD/.tools/kubernetes-validate"
version=1.37.0
if [ -x "$bin/kubernetes-validate" ] && [ "$("$bin/kubernetes-validate" --version 2>/dev/null)" = "$version" ]; then
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
mkdir -p "$bin"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version"
ln -sf "$venv/bin/kubernetes-validate" "$bin/kubernetes-validate"
"$bin/kubernetes-validate" --version >/dev/null
echo "installed kubernetes-validate into .tools/bin/kubernetes-validate"
