#!/usr/bin/env bash
# The quick-start demo (the README's first command):
#
#     bash deploy/demo.sh
#
# Brings up, on this machine, without Docker and without an Authelia of your own:
#   - the test OpenID Provider (tests/idp, configured like an Authelia client),
#   - a demo upstream that shows the headers it receives (tests/upstream/echo.mjs),
#   - portcullis in front of it, built with `cargo build --release`,
# prints the URL to open and the demo users, and stops everything on Ctrl-C.
#
# Needs: Node.js >= 20.19 with npm, a Rust toolchain (cargo), curl.
# Ports (all on 127.0.0.1), overridable:
#   DEMO_PORT=4180           portcullis (open http://localhost:$DEMO_PORT/)
#   DEMO_IDP_PORT=9091       the test provider (issuer http://127.0.0.1:$DEMO_IDP_PORT)
#   DEMO_UPSTREAM_PORT=9092  the echo upstream
# Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${DEMO_PORT:-4180}"
IDP_PORT="${DEMO_IDP_PORT:-9091}"
UPSTREAM_PORT="${DEMO_UPSTREAM_PORT:-9092}"
READY_TIMEOUT=30 # seconds, for each of the three processes

say() { printf 'demo: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# --- stopping everything ----------------------------------------------------
# The children share our process group, so a Ctrl-C on the terminal reaches all of
# them at once. The trap also signals each child explicitly (which covers
# `kill -INT <pid of this script>` and children that ignore SIGINT), waits for them,
# and SIGKILLs whatever is still alive after a few seconds: nothing is left behind.
# (We deliberately do not `kill 0`: that would also hit whoever started this script.)
PIDS=()
NAMES=()
TMP=""
CLEANED=0

cleanup() {
  [ "$CLEANED" = 1 ] && return
  CLEANED=1
  trap '' INT TERM # a second Ctrl-C must not interrupt the cleanup
  local i pid alive deadline
  if [ "${#PIDS[@]}" -gt 0 ]; then
    say "stopping ${NAMES[*]}"
    # reverse order: portcullis first, then the upstream, then the provider
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
      kill -TERM "${PIDS[i]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + 5))
    while :; do
      alive=()
      for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive+=("$pid")
      done
      [ "${#alive[@]}" -eq 0 ] && break
      if [ "$SECONDS" -ge "$deadline" ]; then
        say "still running after 5 s, killing: ${alive[*]}"
        kill -KILL "${alive[@]}" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
      wait "$pid" 2>/dev/null || true
    done
    say "stopped"
  fi
  [ -n "$TMP" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# --- checks -------------------------------------------------------------------
for port_var in PORT IDP_PORT UPSTREAM_PORT; do
  port="${!port_var}"
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
    || die "DEMO_${port_var} must be a port number (1-65535), got '$port'"
done
[ "$PORT" != "$IDP_PORT" ] && [ "$PORT" != "$UPSTREAM_PORT" ] && [ "$IDP_PORT" != "$UPSTREAM_PORT" ] \
  || die "DEMO_PORT, DEMO_IDP_PORT and DEMO_UPSTREAM_PORT must differ ($PORT, $IDP_PORT, $UPSTREAM_PORT)"

command -v node >/dev/null 2>&1 || die "node not found: install Node.js >= 20.19 (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm not found: install it (Debian: apt-get install npm)"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (https://rustup.rs)"
command -v curl >/dev/null 2>&1 || die "curl not found: install it (Debian: apt-get install curl)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
  || die "Node.js >= 20.19 is required, found $(node --version)"

# Is something already listening on 127.0.0.1:$1? (bash's /dev/tcp: no extra tools needed)
port_taken() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}
for port_var in PORT IDP_PORT UPSTREAM_PORT; do
  port="${!port_var}"
  if port_taken "$port"; then
    die "port $port is already in use (set DEMO_${port_var} to another port, or stop what is listening there)"
  fi
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-demo.XXXXXX")"

# --- npm packages of tests/idp ---------------------------------------------------
# npm writes node_modules/.package-lock.json on every install; when it is missing or
# older than the lockfile, node_modules does not match the lockfile.
IDP_DIR="$ROOT/tests/idp"
if [ ! -d "$IDP_DIR/node_modules/oidc-provider" ] \
  || [ ! -f "$IDP_DIR/node_modules/.package-lock.json" ] \
  || [ "$IDP_DIR/package-lock.json" -nt "$IDP_DIR/node_modules/.package-lock.json" ]; then
  say "installing the test provider's npm packages (npm ci in tests/idp)"
  # no browser download: the demo does not need one (playwright is only for the tests)
  (cd "$IDP_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >"$TMP/npm.log" 2>&1) || {
    tail -n 30 "$TMP/npm.log" >&2
    die "npm ci in tests/idp failed (output above)"
  }
fi

# --- build ----------------------------------------------------------------------
say "building portcullis (cargo build --release; a few minutes the first time)"
if ! cargo build --release --quiet >"$TMP/cargo.log" 2>&1; then
  tail -n 40 "$TMP/cargo.log" >&2
  die "cargo build --release failed (output above)"
fi
# where cargo put it (honours CARGO_TARGET_DIR and build.target-dir)
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).target_directory))' \
  2>/dev/null)" || TARGET_DIR="$ROOT/target"
BIN="${TARGET_DIR:-$ROOT/target}/release/portcullis"
[ -x "$BIN" ] || die "cargo build succeeded but $BIN is missing"

SECRET="$("$BIN" generate-secret)" && [ -n "$SECRET" ] \
  || die "'portcullis generate-secret' failed"

# --- start a child and wait for its READY line ------------------------------------------
# start NAME READY_WORD COMMAND...: stdout (which carries only the READY line) goes to a
# file, stderr stays on the terminal.
start() {
  local name="$1" word="$2"
  shift 2
  "$@" </dev/null >"$TMP/$name.out" &
  PIDS+=("$!")
  NAMES+=("$name")
  local pid="$!" deadline=$((SECONDS + READY_TIMEOUT))
  until grep -q "^$word " "$TMP/$name.out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready (its messages are above)"
    [ "$SECONDS" -lt "$deadline" ] || die "$name did not print $word within ${READY_TIMEOUT} s"
    sleep 0.1
  done
}

ISSUER="http://127.0.0.1:$IDP_PORT"
BASE_URL="http://localhost:$PORT"
UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT"

say "starting the test provider on $ISSUER"
start idp IDP_READY env IDP_PORT="$IDP_PORT" IDP_REDIRECT_URIS="$BASE_URL/callback" IDP_QUIET=1 \
  node "$ROOT/tests/idp/server.mjs"

say "starting the echo upstream on $UPSTREAM"
start upstream ECHO_READY env ECHO_PORT="$UPSTREAM_PORT" ECHO_QUIET=1 \
  node "$ROOT/tests/upstream/echo.mjs"

say "starting portcullis on 127.0.0.1:$PORT (its log follows)"
APP_BASE_URL="$BASE_URL" \
  LISTEN_ADDR="127.0.0.1:$PORT" \
  OIDC_ISSUER="$ISSUER" \
  OIDC_CLIENT_ID="Express.js" \
  OIDC_CLIENT_SECRET="insecure_secret" \
  SESSION_ENCRYPTION_SECRET="$SECRET" \
  UPSTREAM_URL="$UPSTREAM" \
  OIDC_SCOPES="openid profile email groups offline_access" \
  "$BIN" </dev/null &
PIDS+=("$!")
NAMES+=(portcullis)
PORTCULLIS_PID="$!"

deadline=$((SECONDS + READY_TIMEOUT))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/.auth/readyz" || true)" = 200 ]; do
  kill -0 "$PORTCULLIS_PID" 2>/dev/null || die "portcullis exited before it was ready (its log is above)"
  [ "$SECONDS" -lt "$deadline" ] || die "portcullis did not become ready within ${READY_TIMEOUT} s (http://127.0.0.1:$PORT/.auth/readyz)"
  sleep 0.2
done

cat <<EOF

  ┌──────────────────────────────────────────────────────────────────────┐
  │  portcullis demo is running                                          │
  │                                                                      │
  │  Open       $(printf '%-57s' "$BASE_URL/")│
  │  Log in as  john / password   (also harry, mallory: same password)   │
  │  Your session, tokens and claims:                                    │
  │             $(printf '%-57s' "$BASE_URL/.auth/me")│
  │  Log out    $(printf '%-57s' "$BASE_URL/.auth/logout")│
  │                                                                      │
  │  The page behind the proxy shows the headers the upstream received.  │
  │  Ctrl-C stops everything.                                            │
  └──────────────────────────────────────────────────────────────────────┘

EOF

# --- run until Ctrl-C or until one of the three stops by itself --------------------------
while :; do
  wait -n || true # returns when any child exits, or at once when a trapped signal arrives
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
      die "${NAMES[i]} stopped unexpectedly; stopping the rest"
    fi
  done
done
