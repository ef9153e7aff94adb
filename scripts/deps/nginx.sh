#!/usr/bin/env bash
# Installs nginx for the gateway end-to-end test (tests/gateway_nginx.rs) when it is
# missing. Idempotent; runs from the repository root.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's nginx has the auth_request module built in.
if ! $SUDO apt-get install -y --no-install-recommends nginx >/dev/null 2>&1; then
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y --no-install-recommends nginx >/dev/null
fi
# The package starts a system nginx on port 80 where an init system runs; the test
# starts its own, so stop that one if it is running.
if command -v service >/dev/null 2>&1; then
  $SUDO service nginx stop >/dev/null 2>&1 || true
fi
