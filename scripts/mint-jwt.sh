#!/usr/bin/env bash
# Mints a test session for the benchmarks: an Ed25519 key pair and an EdDSA JWT for bea
# (issuer https://login.portal.example, audience portal, one hour, amr ["pwd"]).
#
#   scripts/mint-jwt.sh DIR     # writes DIR/login.pem (private), DIR/login.pub.pem,
#                               # prints the token on stdout
# Serve with: --jwt-key-file DIR/login.pub.pem --jwt-issuer https://login.portal.example
#             --jwt-audience portal
# Needs openssl 3 (Ed25519 signing of raw input) and python3.
set -euo pipefail
dir="$1"
openssl genpkey -algorithm ed25519 -out "$dir/login.pem" 2>/dev/null
openssl pkey -in "$dir/login.pem" -pubout -out "$dir/login.pub.pem"
b64url() { python3 -c 'import base64,sys; print(base64.urlsafe_b64encode(sys.stdin.buffer.read()).rstrip(b"=").decode())'; }
now="$(date +%s)"
header="$(printf '{"alg":"EdDSA","typ":"JWT"}' | b64url)"
claims="$(printf '{"sub":"bea","iss":"https://login.portal.example","aud":"portal","exp":%d,"amr":["pwd"]}' "$((now + 3600))" | b64url)"
printf '%s.%s' "$header" "$claims" >"$dir/signing-input"
signature="$(openssl pkeyutl -sign -inkey "$dir/login.pem" -rawin -in "$dir/signing-input" | b64url)"
echo "$header.$claims.$signature"
