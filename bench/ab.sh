#!/usr/bin/env bash
# Same-run A/B comparisons behind the "what changed" tables of
# docs/BENCHMARKS.md: two variants alternate, two rounds, the server pinned
# to CPU 0 and bench/loadgen to CPU 1, so noise hits both alike.
#
#   bench/ab.sh refresh OLD_TOKENGATE NEW_TOKENGATE  # two builds, 16 refresh chains
#   bench/ab.sh hash-threads                         # login at 4 vs 1 hashing threads
#   bench/ab.sh routes OLD_TOKENGATE NEW_TOKENGATE   # two builds: /healthz and /auth/verify (ES256)
#
# Builds bench/loadgen and tokengate (release) first; OLD/NEW are paths to
# `tokengate` binaries (e.g. one built from an earlier commit).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build -q --release -p tokengate-server -p loadgen
TARGET=$(bench_target_dir)
LG=$TARGET/release/loadgen
PORT=18191

# serve BINARY ENV...: starts a pinned ES256 server (ENV may override)
# with one registered account (bench_serve sets BENCH_PID).
serve() {
  local bin=$1
  shift
  bench_serve "$bin" "$PORT" 19465 TOKENGATE_SIGNING_ALG=ES256 "$@"
  curl -s "http://127.0.0.1:$PORT/auth/register" -H 'content-type: application/json' -d "$BENCH_CREDENTIALS" >/dev/null
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

case "${1:-}" in
refresh)
  for round in 1 2; do
    for variant in old new; do
      [ "$variant" = old ] && bin=$2 || bin=$3
      serve "$bin"
      before=$(ticks "$BENCH_PID")
      out=$(taskset -c 1 "$LG" refresh "http://127.0.0.1:$PORT" --login-body "$BENCH_CREDENTIALS" -c 16 -d 6 -w 1)
      echo "$variant round $round: $out server_cpu_ticks=$(($(ticks "$BENCH_PID") - before))"
      bench_stop
    done
  done
  ;;
routes)
  for round in 1 2; do
    for variant in old new; do
      [ "$variant" = old ] && bin=$2 || bin=$3
      for cache in true false; do
        serve "$bin" TOKENGATE_VERIFY_CACHE="$cache"
        token=$(bench_token "http://127.0.0.1:$PORT")
        if [ "$cache" = true ]; then
          out=$(taskset -c 1 "$LG" get "http://127.0.0.1:$PORT/healthz" -c 32 -d 6 -w 1)
          echo "$variant round $round /healthz: $out"
        fi
        out=$(taskset -c 1 "$LG" get "http://127.0.0.1:$PORT/auth/verify" -H "authorization: Bearer $token" -c 32 -d 6 -w 1)
        echo "$variant round $round /auth/verify cache=$cache: $out"
        bench_stop
      done
    done
  done
  ;;
hash-threads)
  bin=$TARGET/release/tokengate
  for round in 1 2; do
    for threads in 4 1; do
      for params in "7168 5" "19456 2"; do
        read -r m t <<<"$params"
        serve "$bin" TOKENGATE_ARGON2_MEMORY_KIB="$m" TOKENGATE_ARGON2_ITERATIONS="$t" \
          TOKENGATE_PASSWORD_HASH_CONCURRENCY="$threads"
        raw=$(taskset -c 0 "$LG" hash --memory-kib "$m" --iterations "$t" -d 4)
        out=$(taskset -c 1 "$LG" login "http://127.0.0.1:$PORT/auth/login" --body "$BENCH_CREDENTIALS" -c 8 -d 6 -w 1)
        echo "m=$m t=$t threads=$threads round $round: $raw | $out"
        bench_stop
      done
    done
  done
  ;;
*)
  sed -n '2,10p' "$0"
  exit 2
  ;;
esac
