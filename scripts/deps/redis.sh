#!/usr/bin/env bash
# Installs redis-server and redis-cli (the Redis entity store tests start their own
# servers, a TLS server and a three-master cluster on free loopback ports; openssl
# makes the TLS test's certificates). Idempotent.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends redis-server redis-tools openssl; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends redis-server redis-tools openssl
fi
