#!/usr/bin/env bash
# The HTTP benchmarks of docs/BENCHMARKS.md, in one run on one machine:
# tokengate serve, the library's axum layer, and the seeds' stacks (bench/peers)
# under the same load generator (bench/loadgen). Each server under test is
# pinned to one core (SERVER_CPU) and the load generator to another
# (LOAD_CPU), so every figure is per core. Prints Markdown tables and writes
# results.tsv, chart.tsv and chart.svg to OUT (default bench/results).
#
#   bench/run.sh                  # the full run (about 15 minutes)
#   QUICK=1 bench/run.sh          # 1 s warm-up, 3 s per figure
#   ALGS="ES256 HS256" bench/run.sh
#
# Needs: cargo, node + npm, python3 (venv), curl, taskset, PostgreSQL on
# 127.0.0.1:5432 (trust; PG_URL to point elsewhere, PG=0 to skip).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/lib.sh

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then WARMUP=${WARMUP:-1}; DURATION=${DURATION:-3}; else WARMUP=${WARMUP:-2}; DURATION=${DURATION:-10}; fi
CONNECTIONS=${CONNECTIONS:-32}
CHAINS=${CHAINS:-16}
LOGINS=${LOGINS:-8}
ALGS=${ALGS:-"ES256 EdDSA RS256 HS256"}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PG=${PG:-1}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/tokengate_bench}
OUT=${OUT:-$ROOT/bench/results}
mkdir -p "$OUT"
ulimit -n 8192 2>/dev/null || true

echo "building (release)..." >&2
cargo build -q --release -p tokengate-server -p loadgen
cargo build -q --release -p tokengate --features axum --example layer_bench
TARGET=$(bench_target_dir)
TG=$TARGET/release/tokengate
LG=$TARGET/release/loadgen
LAYER=$TARGET/release/examples/layer_bench
bench/peers/setup.sh >&2

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

RESULTS=$OUT/results.tsv
CHART=$OUT/chart.tsv
: >"$RESULTS"
: >"$CHART"

on_server() { taskset -c "$SERVER_CPU" "$@"; }
on_loader() { taskset -c "$LOAD_CPU" "$@"; }
field() { sed -E "s/.*[ ^]$1=([^ ]+).*/\1/" <<<" $2"; }

# wait_ready URL SINCE_NS: prints the milliseconds from SINCE_NS to a 200.
wait_ready() { field ready_ms "$(on_loader "$LG" ready "$1" --since-ns "$2")"; }

# tokengate_start NAME PORT ENV...: starts `tokengate serve` on one core
# with its data in $WORK/NAME; sets TG_PID and TG_READY_MS.
tokengate_start() {
  local name=$1 port=$2
  shift 2
  local since
  since=$(date +%s%N)
  env "${BENCH_TOKENGATE_ENV[@]}" TOKENGATE_METRICS_ADDR=127.0.0.1:19464 "$@" \
    taskset -c "$SERVER_CPU" "$TG" serve --addr "127.0.0.1:$port" --data-dir "$WORK/$name" \
    >>"$WORK/$name.log" 2>&1 &
  TG_PID=$!
  PIDS+=("$TG_PID")
  TG_READY_MS=$(wait_ready "http://127.0.0.1:$port/healthz" "$since")
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }


# record SECTION LABEL LINE: keeps a loadgen result line.
record() {
  local line=$3
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(field rate "$line")" "$(field p50_ms "$line")" \
    "$(field p99_ms "$line")" "$(field errors "$line")" >>"$RESULTS"
  printf '  %-58s %10s req/s  p50 %7s ms  p99 %7s ms  errors %s\n' "$2" "$(field rate "$line")" \
    "$(field p50_ms "$line")" "$(field p99_ms "$line")" "$(field errors "$line")" >&2
}

# get SECTION LABEL URL [TOKEN]: the fixed-concurrency GET.
get() {
  local args=("$3" -c "$CONNECTIONS" -d "$DURATION" -w "$WARMUP")
  [ -n "${4:-}" ] && args+=(-H "authorization: Bearer $4")
  record "$1" "$2" "$(on_loader "$LG" get "${args[@]}")"
}

chart() { [ -z "$3" ] || printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$CHART"; }
rate_of() { awk -F'\t' -v s="$1" -v l="$2" '$1==s && $2==l {print $3}' "$RESULTS" | tail -1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "server on CPU $SERVER_CPU, load generator on CPU $LOAD_CPU; ${WARMUP}s warm-up, ${DURATION}s measured, $CONNECTIONS connections" >&2

# --- 1. Protected routes --------------------------------------------------
for alg in $ALGS; do
  section="protected $alg"
  echo "== $section" >&2
  raw=$(field rate "$(on_server "$LG" raw-verify "$alg" -d "$DURATION")")
  printf '%s\t%s\t%s\t\t\t\n' "$section" "raw aws-lc-rs $alg verify (one core, no HTTP)" "$raw" >>"$RESULTS"
  echo "  raw $alg verify on one core: $raw/s" >&2
  secret_env=()
  if [ "$alg" = HS256 ]; then
    SECRET=$("$TG" secret generate)
    secret_env=(TOKENGATE_HS_SECRET="$SECRET")
  fi
  base=http://127.0.0.1:18181
  tokengate_start "tg-$alg" 18181 TOKENGATE_SIGNING_ALG="$alg" "${secret_env[@]}"
  TOKEN=$(bench_token "$base")
  ISS=$(python3 -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"=="))["iss"])' "$TOKEN")
  get "$section" "tokengate GET /healthz (unauthenticated ceiling)" "$base/healthz"
  get "$section" "tokengate GET /auth/verify, cache on" "$base/auth/verify" "$TOKEN"
  get "$section" "tokengate GET /auth/me (database read), cache on" "$base/auth/me" "$TOKEN"
  # The layer takes its keys from the JWKS: public keys only, so not HS256.
  layer_caches="10000 0"
  [ "$alg" = HS256 ] && layer_caches=""
  for cache in $layer_caches; do
    env VERIFY_CACHE_SIZE=$cache TOKENGATE_ISSUER="$ISS" PORT=18183 \
      taskset -c "$SERVER_CPU" "$LAYER" >"$WORK/layer.log" 2>&1 &
    layer=$!
    PIDS+=("$layer")
    wait_ready "http://127.0.0.1:18183/" "$(date +%s%N)" >/dev/null
    label="on"
    [ "$cache" = 0 ] && label="off"
    [ "$cache" != 0 ] && get "$section" "axum layer GET / (unauthenticated ceiling)" "http://127.0.0.1:18183/"
    get "$section" "axum layer GET /api/protected, cache $label" "http://127.0.0.1:18183/api/protected" "$TOKEN"
    stop "$layer"
  done
  stop "$TG_PID"
  tokengate_start "tg-$alg" 18181 TOKENGATE_SIGNING_ALG="$alg" "${secret_env[@]}" TOKENGATE_VERIFY_CACHE=false
  get "$section" "tokengate GET /auth/verify, cache off" "$base/auth/verify" "$TOKEN"
  if [ "$alg" = ES256 ]; then
    # Scaling: the server on both cores, the load generator sharing them.
    stop "$TG_PID"
    env TOKENGATE_LOG_LEVEL=warn TOKENGATE_SIGNING_ALG="$alg" TOKENGATE_VERIFY_CACHE=false \
      TOKENGATE_METRICS_ADDR=127.0.0.1:19464 \
      "$TG" serve --addr 127.0.0.1:18181 --data-dir "$WORK/tg-$alg" >>"$WORK/tg-both.log" 2>&1 &
    TG_PID=$!
    PIDS+=("$TG_PID")
    wait_ready "$base/healthz" "$(date +%s%N)" >/dev/null
    record "$section" "tokengate GET /auth/verify, cache off, both cores (loadgen shares them)" \
      "$("$LG" get "$base/auth/verify" -H "authorization: Bearer $TOKEN" -c "$CONNECTIONS" -d "$DURATION" -w "$WARMUP" --threads 2)"
  fi
  # The seeds' stacks, verifying the same token with the same key.
  if [ "$alg" = HS256 ]; then
    peer_env=(JWT_SECRET="$SECRET")
  else
    JWK=$(curl -s "$base/.well-known/jwks.json" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["keys"][0]))')
    peer_env=(JWT_JWK="$JWK")
  fi
  # jsonwebtoken 9 (Node) has no EdDSA.
  if [ "$alg" != EdDSA ]; then
    env "${peer_env[@]}" JWT_ISSUER="$ISS" JWT_AUDIENCE=tokengate PORT=18182 RATE_LIMIT=1000000000 \
      taskset -c "$SERVER_CPU" node bench/peers/express/server.js >"$WORK/express.log" 2>&1 &
    peer=$!
    PIDS+=("$peer")
    wait_ready http://127.0.0.1:18182/healthz "$(date +%s%N)" >/dev/null
    get "$section" "Express + jsonwebtoken GET /api/protected" http://127.0.0.1:18182/api/protected "$TOKEN"
    stop "$peer"
  fi
  env "${peer_env[@]}" JWT_ISSUER="$ISS" JWT_AUDIENCE=tokengate taskset -c "$SERVER_CPU" \
    "$ROOT/bench/peers/flask/.venv/bin/gunicorn" --chdir "$ROOT/bench/peers/flask" -w 3 \
    -b 127.0.0.1:18184 app:app >"$WORK/flask.log" 2>&1 &
  peer=$!
  PIDS+=("$peer")
  wait_ready http://127.0.0.1:18184/healthz "$(date +%s%N)" >/dev/null
  get "$section" "Flask + PyJWT (gunicorn, 3 workers) GET /api/protected" http://127.0.0.1:18184/api/protected "$TOKEN"
  stop "$peer"
  stop "$TG_PID"
  for label in "tokengate GET /auth/verify, cache off" "tokengate GET /auth/verify, cache on" \
    "axum layer GET /api/protected, cache off" "axum layer GET /api/protected, cache on" \
    "Express + jsonwebtoken GET /api/protected" "Flask + PyJWT (gunicorn, 3 workers) GET /api/protected"; do
    chart "$section (one core)" "${label/ GET / }" "$(rate_of "$section" "$label")"
  done
done

# --- 2. Login ---------------------------------------------------------------
echo "== login" >&2
login_flood() { # SECTION LABEL BASE PATH
  local line
  line=$(on_loader "$LG" login "$3$4" --body "$BENCH_CREDENTIALS" -c "$LOGINS" -d "$DURATION" -w "$WARMUP")
  record "$1" "$2" "$line"
}
for params in "19456 2 OWASP" "7168 5 Keycloak"; do
  read -r m t who <<<"$params"
  raw=$(field rate "$(on_server "$LG" hash --memory-kib "$m" --iterations "$t" -d "$DURATION")")
  printf '%s\t%s\t%s\t\t\t\n' "login" "raw argon2id m=$m t=$t p=1 ($who), one core" "$raw" >>"$RESULTS"
  echo "  raw argon2id m=$m t=$t: $raw/s" >&2
  tokengate_start "tg-login-$who" 18181 TOKENGATE_SIGNING_ALG=ES256 TOKENGATE_VERIFY_CACHE=false \
    TOKENGATE_ARGON2_MEMORY_KIB="$m" TOKENGATE_ARGON2_ITERATIONS="$t"
  TOKEN=$(bench_token http://127.0.0.1:18181)
  login_flood login "tokengate POST /auth/login, argon2id m=$m t=$t ($who)" http://127.0.0.1:18181 /auth/login
  chart "login (one core, logins/s)" "raw argon2id $who" "$raw"
  chart "login (one core, logins/s)" "tokengate login $who" "$(rate_of login "tokengate POST /auth/login, argon2id m=$m t=$t ($who)")"
  stop "$TG_PID"
  if [ "$who" = OWASP ]; then
    # Token verification while logins saturate the hashing pool, with the
    # hashing threads at the default niceness (10) and at the server's own
    # priority (0), one after the other in this run.
    for nice in 10 0; do
      tokengate_start "tg-flood-$nice" 18181 TOKENGATE_SIGNING_ALG=ES256 TOKENGATE_VERIFY_CACHE=false \
        TOKENGATE_ARGON2_MEMORY_KIB="$m" TOKENGATE_ARGON2_ITERATIONS="$t" TOKENGATE_PASSWORD_HASH_NICENESS="$nice"
      TOKEN=$(bench_token http://127.0.0.1:18181)
      on_loader "$LG" login http://127.0.0.1:18181/auth/login --body "$BENCH_CREDENTIALS" -c "$LOGINS" \
        -d "$DURATION" -w "$WARMUP" >"$WORK/flood.txt" &
      flood=$!
      record login "tokengate GET /auth/verify (cache off) during the login flood, hashing niceness $nice" \
        "$(on_loader "$LG" get http://127.0.0.1:18181/auth/verify -H "authorization: Bearer $TOKEN" -c 4 -d "$DURATION" -w "$WARMUP")"
      wait "$flood"
      record login "tokengate POST /auth/login flood next to the verify load, hashing niceness $nice" "$(cat "$WORK/flood.txt")"
      stop "$TG_PID"
    done
  fi
done

# Imported bcrypt hashes (cost 10, as the Express peer stores them): each
# account's first login checks bcrypt, then replaces the hash with argon2id
# (OWASP costs), so every request of this flood is a different account.
raw=$(field rate "$(on_server "$LG" hash --bcrypt-cost 10 -d "$DURATION")")
printf '%s\t%s\t%s\t\t\t\n' "login" "raw bcrypt cost 10 check, one core" "$raw" >>"$RESULTS"
echo "  raw bcrypt cost 10: $raw/s" >&2
"$LG" bcrypt-accounts --cost 10 --count 4000 --password "$BENCH_PASSWORD" --csv "$WORK/imported.csv" \
  --bodies "$WORK/imported.jsonl"
"$TG" migrate --data-dir "$WORK/tg-bcrypt" >>"$WORK/tg-bcrypt.log" 2>&1
"$TG" user import "$WORK/imported.csv" --data-dir "$WORK/tg-bcrypt" >>"$WORK/tg-bcrypt.log" 2>&1
tokengate_start tg-bcrypt 18181 TOKENGATE_SIGNING_ALG=ES256
record login "tokengate POST /auth/login, imported bcrypt cost 10 (check + argon2id rehash)" \
  "$(on_loader "$LG" login http://127.0.0.1:18181/auth/login --bodies "$WORK/imported.jsonl" -c "$LOGINS" -d "$DURATION" -w "$WARMUP")"
stop "$TG_PID"
chart "login (one core, logins/s)" "tokengate login, imported bcrypt 10" "$(rate_of login "tokengate POST /auth/login, imported bcrypt cost 10 (check + argon2id rehash)")"
env JWT_ISSUER=bench JWT_AUDIENCE=bench PORT=18182 RATE_LIMIT=1000000000 \
  taskset -c "$SERVER_CPU" node bench/peers/express/server.js >"$WORK/express.log" 2>&1 &
peer=$!
PIDS+=("$peer")
wait_ready http://127.0.0.1:18182/healthz "$(date +%s%N)" >/dev/null
login_flood login "Express POST /api/login, bcryptjs cost 10" http://127.0.0.1:18182 /api/login
chart "login (one core, logins/s)" "Express bcryptjs cost 10" "$(rate_of login "Express POST /api/login, bcryptjs cost 10")"

# --- 3. Refresh with rotation -------------------------------------------
echo "== refresh" >&2
record refresh "Express POST /api/refresh (rotation in memory)" \
  "$(on_loader "$LG" refresh http://127.0.0.1:18182 --login-path /api/login --login-body "$BENCH_CREDENTIALS" \
    --refresh-path /api/refresh --field refreshToken -c "$CHAINS" -d "$DURATION" -w "$WARMUP")"
stop "$peer"
refresh_run() { # LABEL ENV...
  local label=$1
  shift
  tokengate_start tg-refresh-$RANDOM 18181 TOKENGATE_SIGNING_ALG=ES256 "$@"
  bench_token http://127.0.0.1:18181 >/dev/null
  record refresh "$label" "$(on_loader "$LG" refresh http://127.0.0.1:18181 --login-body "$BENCH_CREDENTIALS" \
    -c "$CHAINS" -d "$DURATION" -w "$WARMUP")"
  chart "refresh with rotation (one core, $CHAINS chains)" "${label%% (*}" "$(rate_of refresh "$label")"
  stop "$TG_PID"
}
refresh_run "tokengate POST /auth/refresh, SQLite (ES256)"
if [ "$PG" = 1 ]; then
  psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS tokengate_bench" -c "CREATE DATABASE tokengate_bench" >/dev/null
  refresh_run "tokengate POST /auth/refresh, PostgreSQL (ES256)" TOKENGATE_DATABASE_URL="$PG_URL"
fi
chart "refresh with rotation (one core, $CHAINS chains)" "Express (in memory)" "$(rate_of refresh "Express POST /api/refresh (rotation in memory)")"

# --- 4. Memory and start-up ---------------------------------------------
echo "== memory" >&2
rss() { awk -v k="$2:" '$1==k {printf "%.1f", $2/1024}' "/proc/$1/status"; }
tokengate_start tg-memory 18181 TOKENGATE_SIGNING_ALG=ES256
sleep 1
idle=$(rss "$TG_PID" VmRSS)
TOKEN=$(bench_token http://127.0.0.1:18181)
sleep 1
after_login=$(rss "$TG_PID" VmRSS)
on_loader "$LG" get http://127.0.0.1:18181/auth/verify -H "authorization: Bearer $TOKEN" -c 1000 \
  -d "$DURATION" -w 1 >"$WORK/thousand.txt"
peak=$(rss "$TG_PID" VmHWM)
printf 'memory\ttokengate ready after start (ms)\t%s\t\t\t\n' "$TG_READY_MS" >>"$RESULTS"
printf 'memory\ttokengate idle RSS (MiB)\t%s\t\t\t\n' "$idle" >>"$RESULTS"
printf 'memory\ttokengate idle RSS after one registration and one login (MiB)\t%s\t\t\t\n' "$after_login" >>"$RESULTS"
printf 'memory\ttokengate peak RSS at 1000 connections (MiB)\t%s\t\t\t\n' "$peak" >>"$RESULTS"
record memory "tokengate GET /auth/verify at 1000 connections" "$(cat "$WORK/thousand.txt")"
stop "$TG_PID"
since=$(date +%s%N)
env JWT_ISSUER=bench JWT_AUDIENCE=bench PORT=18182 taskset -c "$SERVER_CPU" node bench/peers/express/server.js >"$WORK/express.log" 2>&1 &
peer=$!
PIDS+=("$peer")
ready=$(wait_ready http://127.0.0.1:18182/healthz "$since")
sleep 1
printf 'memory\tExpress ready after start (ms)\t%s\t\t\t\n' "$ready" >>"$RESULTS"
printf 'memory\tExpress idle RSS (MiB)\t%s\t\t\t\n' "$(rss "$peer" VmRSS)" >>"$RESULTS"
on_loader "$LG" get http://127.0.0.1:18182/healthz -c 1000 -d "$DURATION" -w 1 >/dev/null
printf 'memory\tExpress peak RSS at 1000 connections (MiB)\t%s\t\t\t\n' "$(rss "$peer" VmHWM)" >>"$RESULTS"
stop "$peer"

# --- Tables and chart -------------------------------------------------------
{
  echo "| scenario | system and route | rate (/s) | p50 (ms) | p99 (ms) | errors |"
  echo "|---|---|---:|---:|---:|---:|"
  awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$RESULTS"
} | tee "$OUT/results.md"
"$LG" chart "$CHART" "$OUT/chart.svg" \
  --title "tokengate vs the seeds' stacks, one core each ($(date -u +%Y-%m-%d), $(nproc)-core $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))" \
  --unit "per second"
echo "wrote $OUT/results.tsv, $OUT/results.md, $OUT/chart.svg" >&2
