#!/usr/bin/env bash
# Instructions per proxied request under callgrind: the measure that decides a change to
# the request path on a machine whose speed drifts (bench/README.md, History).
#
#   bash bench/callgrind.sh [BINARY] [CONNECTIONS]     (defaults: target/release/portcullis, 4)
#   bash bench/callgrind.sh --logins N [BINARY]         instructions per login instead
#
# Starts the echo upstream and the test provider, then BINARY under valgrind's callgrind
# with one connection worker and instrumentation off; logs in (bench/login.py), warms up
# for 3 s, then counts the instructions of 10 s of `wrk -t1 -c CONNECTIONS` with the
# session cookie, and prints them per request. The profile stays in the printed directory
# (`callgrind_annotate DIR/callgrind.out` shows where they go). With `--logins N` it counts
# N logins instead (bench/login.py, one at a time, after one untimed login): the login-cost
# target in instructions, which a host's drifting speed does not move. Needs valgrind, wrk,
# node, python3 and tests/idp/node_modules (bash tests/setup.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LOGINS=0
if [ "${1:-}" = "--logins" ]; then
  LOGINS=${2:?--logins needs a count}
  shift 2
fi
BIN=${1:-target/release/portcullis}
CONNECTIONS=${2:-4}
for tool in valgrind callgrind_control callgrind_annotate wrk node python3 curl; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is needed" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "callgrind.sh: no binary at $BIN (cargo build --release)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/portcullis-callgrind.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

ready_line() { # FILE: waits for the peer's one READY line, prints its URL
  for _ in $(seq 100); do
    if grep -q READY "$1"; then awk '{print $2; exit}' "$1"; return; fi
    sleep 0.1
  done
  echo "callgrind.sh: no READY line in $1" >&2; exit 1
}

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
node tests/upstream/echo.mjs >"$DIR/echo.out" 2>/dev/null & PIDS+=($!)
IDP_REDIRECT_URIS="http://localhost:$PORT/callback" IDP_QUIET=1 node tests/idp/server.mjs >"$DIR/idp.out" 2>/dev/null & PIDS+=($!)
UPSTREAM=$(ready_line "$DIR/echo.out")
ISSUER=$(ready_line "$DIR/idp.out")

APP_BASE_URL="http://localhost:$PORT" OIDC_ISSUER="$ISSUER" OIDC_CLIENT_ID=Express.js \
  OIDC_CLIENT_SECRET=insecure_secret UPSTREAM_URL="$UPSTREAM" LISTEN_ADDR="127.0.0.1:$PORT" \
  SESSION_ENCRYPTION_SECRET=callgrind-bench-secret-0123456789abcdef \
  PORTCULLIS_SERVER_WORKERS=1 RUST_LOG=warn PORTCULLIS_OIDC_LOGIN_RATE_PER_CLIENT_PER_MINUTE=0 \
  PORTCULLIS_OIDC_LOGIN_RATE_PER_SECOND=1000 PORTCULLIS_OIDC_LOGIN_RATE_BURST=1000 \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$DIR/callgrind.out" "$BIN" \
  >"$DIR/portcullis.out" 2>&1 & PROXY=$!
PIDS+=("$PROXY")
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/.auth/readyz" >/dev/null && break
  sleep 0.2
done
COOKIE=$(python3 bench/login.py "http://localhost:$PORT/")

if [ "$LOGINS" != "0" ]; then
  callgrind_control -i on "$PROXY" >/dev/null 2>&1
  python3 - "http://localhost:$PORT/" "$LOGINS" <<'PY'
import sys
sys.path.insert(0, "bench")
import login
for _ in range(int(sys.argv[2])):
    login.login(sys.argv[1])
PY
  callgrind_control -i off "$PROXY" >/dev/null 2>&1
  kill -TERM "$PROXY"
  wait "$PROXY" || true
  INSTRUCTIONS=$(callgrind_annotate "$DIR/callgrind.out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$BIN: $LOGINS logins, $((INSTRUCTIONS / LOGINS)) instructions per login ($DIR)"
  exit 0
fi

wrk -t1 -c"$CONNECTIONS" -d3s -H "Cookie: $COOKIE" "http://localhost:$PORT/" >/dev/null
callgrind_control -i on "$PROXY" >/dev/null 2>&1
wrk -t1 -c"$CONNECTIONS" -d10s -H "Cookie: $COOKIE" "http://localhost:$PORT/" >"$DIR/wrk.out"
callgrind_control -i off "$PROXY" >/dev/null 2>&1
kill -TERM "$PROXY"
wait "$PROXY" || true

REQUESTS=$(awk '/requests in/ {print $1}' "$DIR/wrk.out")
INSTRUCTIONS=$(callgrind_annotate "$DIR/callgrind.out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$BIN, c=$CONNECTIONS: $REQUESTS requests, $((INSTRUCTIONS / REQUESTS)) instructions per request ($DIR)"
