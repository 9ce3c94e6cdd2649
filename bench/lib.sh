# Sourced by bench/run.sh, bench/ab.sh and bench/profile.sh: what a
# benchmarked tokengate runs with, so that every script measures the same
# server.

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
