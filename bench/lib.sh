# Sourced by bench/run.sh, bench/ab.sh and bench/profile.sh: what a
# benchmarked tokengate runs with, so that every script measures the same
# server. bench_serve needs LG (the loadgen binary) set.

# The limits a load test would trip (per-client budget, login failures)
# lifted, and logs at warn: the figures measure the work, not the refusals.
BENCH_TOKENGATE_ENV=(
  TOKENGATE_LOG_LEVEL=warn
  TOKENGATE_AUTH_REQUESTS_PER_MINUTE=100000000
  TOKENGATE_LOGIN_MAX_FAILURES=100000000
  TOKENGATE_LOGIN_IP_MAX_FAILURES=100000000
  TOKENGATE_LOGIN_ACCOUNT_MAX_FAILURES=100000000
)

# The account every script registers and logs in with.
BENCH_PASSWORD="load testing is a long sentence too"
BENCH_CREDENTIALS="{\"email\":\"bench@example.com\",\"password\":\"$BENCH_PASSWORD\"}"

# bench_token BASE: registers the account (once) and logs in; prints the
# access token.
bench_token() {
  curl -s "$1/auth/register" -H 'content-type: application/json' -d "$BENCH_CREDENTIALS" >/dev/null
  curl -s "$1/auth/login" -H 'content-type: application/json' -d "$BENCH_CREDENTIALS" |
    sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

# bench_target_dir: cargo's target directory (CARGO_TARGET_DIR and
# .cargo/config included).
bench_target_dir() {
  cargo metadata --format-version 1 --no-deps | sed -E 's/.*"target_directory":"([^"]+)".*/\1/'
}

# bench_serve BIN PORT METRICS_PORT ENV...: starts BIN serve on CPU 0 with a
# fresh data directory (BENCH_DIR, its log in BENCH_DIR/log) and waits
# until it answers; sets BENCH_PID. bench_stop ends it and removes the data.
bench_serve() {
  local bin=$1 port=$2 metrics_port=$3
  shift 3
  BENCH_DIR=$(mktemp -d)
  env "${BENCH_TOKENGATE_ENV[@]}" TOKENGATE_METRICS_ADDR="127.0.0.1:$metrics_port" "$@" \
    taskset -c 0 "$bin" serve --addr "127.0.0.1:$port" --data-dir "$BENCH_DIR/data" >"$BENCH_DIR/log" 2>&1 &
  BENCH_PID=$!
  taskset -c 1 "$LG" ready "http://127.0.0.1:$port/healthz" --since-ns "$(date +%s%N)" >/dev/null
}
bench_stop() {
  [ -n "${BENCH_PID:-}" ] || return 0
  kill "$BENCH_PID" 2>/dev/null || true
  wait "$BENCH_PID" 2>/dev/null || true
  rm -rf "$BENCH_DIR"
}
