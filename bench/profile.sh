#!/usr/bin/env bash
# The profiles behind docs/BENCHMARKS.md's "what bounds it": a release
# `tokengate serve` pinned to CPU 0 under `bench/loadgen get` on CPU 1 (32
# connections), and `perf record` on the server for 5 s in the middle of
# the load. Prints the rate, the share per binary and the top symbols.
#
#   bench/profile.sh ES256 off /auth/verify     # the uncached ES256 route
#   bench/profile.sh ES256 on /auth/verify      # cached
#   bench/profile.sh HS256 off /auth/verify
#   bench/profile.sh ES256 on /healthz          # the unauthenticated ceiling
#
# Needs perf (Debian `linux-perf`) and permission to profile another
# process (root, or kernel.perf_event_paranoid <= 1). OUT (default a
# temporary directory) keeps perf.data for `perf report -i`.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ $# -eq 3 ] || { sed -n '2,13p' "$0"; exit 2; }
ALG=$1 CACHE=$2 ROUTE=$3
case "$CACHE" in on) CACHE=true ;; off) CACHE=false ;; *) echo "cache: on or off" >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }
cargo build -q --release -p tokengate-server -p loadgen
TARGET=$(bench_target_dir)
TG=$TARGET/release/tokengate
LG=$TARGET/release/loadgen
OUT=${OUT:-$(mktemp -d)}
PORT=18194
trap bench_stop EXIT

secret=()
[ "$ALG" = HS256 ] && secret=(TOKENGATE_HS_SECRET="$("$TG" secret generate)")
bench_serve "$TG" "$PORT" 19467 TOKENGATE_SIGNING_ALG="$ALG" TOKENGATE_VERIFY_CACHE="$CACHE" "${secret[@]}"
token=$(bench_token "http://127.0.0.1:$PORT")
taskset -c 1 "$LG" get "http://127.0.0.1:$PORT$ROUTE" -H "authorization: Bearer $token" \
  -c 32 -d 9 -w 1 >"$OUT/rate.txt" &
load=$!
sleep 3
# DWARF unwinding: the release build has no frame pointers.
perf record -q -F 499 --call-graph dwarf,16384 -o "$OUT/perf.data" -p "$BENCH_PID" -- sleep 5 >/dev/null 2>&1
wait "$load"
echo "$ALG cache $CACHE $ROUTE, while profiled: $(cat "$OUT/rate.txt")"
perf report -i "$OUT/perf.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -5
perf report -i "$OUT/perf.data" --no-children -g none --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]-]+$//' | head -25
echo "perf.data: $OUT/perf.data"
