#!/usr/bin/env bash
# The release build of the image, as its own CI step (kept out of `cargo test`, whose
# debug build is a different compilation): runs the Dockerfile's build command, then
# checks that the binary starts on the image's defaults (the shipped model read from
# files, as the image lays them out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-release.sh
binary="${CARGO_TARGET_DIR:-target}/release/portcullis"
version="$("$binary" --version)"
case "$version" in
  portcullis\ *) ;;
  *) echo "scripts/check-release.sh: unexpected --version output: $version" >&2; exit 1 ;;
esac
env -i PATH="$PATH" \
  PORTCULLIS_LISTEN=0.0.0.0:8180 \
  PORTCULLIS_SCHEMA="$PWD/schema/portal.cedarschema" \
  PORTCULLIS_POLICIES="$PWD/policies" \
  "$binary" serve --check-config
echo "release build ok: $version"
