#!/usr/bin/env bash
# Load test, side by side in one run: tokengate's protected route (GET
# /auth/me: verify the access token, check the revocation denylist, read the
# user from SQLite) against the seeds' Express + jsonwebtoken protected route
# (verify only), both on HS256 with the same secret and the same token.
# Needs: wrk (Debian package), node + npm. Writes nothing outside a temp dir.
set -euo pipefail
cd "$(dirname "$0")"
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
(cd express && npm install --silent --no-audit --no-fund >/dev/null)
cargo build -q --release -p tokengate-server
BIN=$(cargo metadata --format-version 1 --no-deps | sed -E 's/.*"target_directory":"([^"]+)".*/\1/')/release/tokengate
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

SECRET=$("$BIN" secret generate)
ISSUER=http://127.0.0.1:18181
TOKENGATE_SIGNING_ALG=HS256 TOKENGATE_HS_SECRET=$SECRET TOKENGATE_LOG_LEVEL=warn \
  TOKENGATE_AUTH_REQUESTS_PER_MINUTE=100000000 \
  "$BIN" serve --addr 127.0.0.1:18181 --data-dir "$WORK/data" >/dev/null 2>&1 &
JWT_SECRET=$SECRET JWT_ISSUER=$ISSUER JWT_AUDIENCE=tokengate PORT=18182 node express/server.js &
for _ in $(seq 50); do curl -s localhost:18181/healthz >/dev/null && curl -s -o /dev/null localhost:18182/ && break; sleep 0.2; done

PASSWORD="load testing is a long sentence too"
curl -s localhost:18181/auth/register -H 'content-type: application/json' \
  -d "{\"email\":\"bench@example.com\",\"password\":\"$PASSWORD\"}" >/dev/null
TOKEN=$(curl -s localhost:18181/auth/login -H 'content-type: application/json' \
  -d "{\"email\":\"bench@example.com\",\"password\":\"$PASSWORD\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
[ "$(curl -s -o /dev/null -w '%{http_code}' localhost:18182/protected -H "authorization: Bearer $TOKEN")" = 200 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' localhost:18181/auth/me -H "authorization: Bearer $TOKEN")" = 200 ]

measure() { # slug label url
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "authorization: Bearer $TOKEN" "$3" >"$WORK/$1.txt"
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.txt")
  errors=$(awk '/Non-2xx/ {print $5}' "$WORK/$1.txt")
  printf '%-36s %12s %10s %10s %8s\n' "$2" "$rps" "$p50" "$p99" "${errors:-0}"
  echo "$rps" >"$WORK/$1.rps"
}
echo "wrk -t2 -c$CONNECTIONS -d$DURATION on $(nproc) cores; same token, same HS256 secret"
printf '%-36s %12s %10s %10s %8s\n' route req/s p50 p99 non-2xx
measure express "express+jsonwebtoken GET /protected" http://127.0.0.1:18182/protected
measure tokengate "tokengate GET /auth/me" http://127.0.0.1:18181/auth/me
awk -v a="$(cat "$WORK/tokengate.rps")" -v b="$(cat "$WORK/express.rps")" \
  'BEGIN { printf "ratio tokengate / express: %.2fx\n", a / b }'
