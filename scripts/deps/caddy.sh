#!/usr/bin/env bash
# Installs Caddy for the gateway end-to-end test (tests/gateway_caddy.rs) when it is
# missing. Idempotent; runs from the repository root.
set -euo pipefail
if command -v caddy >/dev/null 2>&1 || [ -x /usr/bin/caddy ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's caddy has the forward_auth directive built in (Caddy 2.5 and later).
if ! $SUDO apt-get install -y --no-install-recommends caddy >/dev/null 2>&1; then
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y --no-install-recommends caddy >/dev/null
fi
# The package starts a system Caddy on port 80 where an init system runs; the test
# starts its own, so stop that one if it is running.
if command -v service >/dev/null 2>&1; then
  $SUDO service caddy stop >/dev/null 2>&1 || true
fi
