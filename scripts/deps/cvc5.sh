#!/usr/bin/env bash
# The SMT solver `portcullis verify` and tests/verify.rs need: cedar-policy-symcc
# spawns a `cvc5` 1.3.1 executable, named by CVC5 or found on PATH. When CVC5 names
# a real binary, nothing is done. Otherwise this installs the `cvc5==1.3.1` Python
# wheel, which carries the solver as a library, and links scripts/cvc5 (a small
# program that serves SMT-LIB on stdin/stdout like the binary) as .tools/bin/cvc5.
# Idempotent; runs from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -n "${CVC5:-}" ] && [ -x "${CVC5}" ]; then
  exit 0
fi
# Installed and checked by an earlier run: nothing to do.
stamp=.tools/cvc5-1.3.1.ok
if [ -x .tools/bin/cvc5 ] && [ -f "$stamp" ]; then
  exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq python3 python3-pip >/dev/null
  else
    echo "scripts/deps/cvc5.sh: python3 is required" >&2
    exit 1
  fi
fi

if ! python3 -c 'import cvc5, sys; sys.exit(0 if cvc5.__version__ == "1.3.1" else 1)' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq
      apt-get install -y -qq python3-pip >/dev/null
    fi
  fi
  # Debian's system Python refuses global installs (PEP 668) unless told otherwise.
  python3 -m pip install --quiet cvc5==1.3.1 \
    || python3 -m pip install --quiet --break-system-packages cvc5==1.3.1
fi

mkdir -p .tools/bin
ln -sf "$PWD/scripts/cvc5" .tools/bin/cvc5
# A quick end-to-end check: the wrapper must answer a query.
answer="$(printf '(set-logic ALL)\n(declare-const x Int)\n(assert (> x 0))\n(check-sat)\n' | .tools/bin/cvc5 --lang smt 2>/dev/null)"
if [ "$answer" != "sat" ]; then
  echo "scripts/deps/cvc5.sh: .tools/bin/cvc5 does not answer (got: $answer)" >&2
  exit 1
fi
touch "$stamp"
