#!/usr/bin/env bash
# The portcullis benchmark: `bash bench/run.sh` (see bench/README.md).
#
# Installs what it needs (Debian: wrk, nginx, caddy, apache2, libapache2-mod-auth-openidc,
# redis-server, curl; npm: the test provider's packages), builds portcullis and the session-store
# benches in release mode, then hands over to bench/bench.py, which starts every server on
# loopback, measures, prints one Markdown table and stops everything it started.
#
# Environment (all optional):
#   BENCH_DURATION=10s        wrk duration per measurement (e.g. 3s for a quick run)
#   BENCH_WARMUP=1s           unmeasured wrk run before each measurement
#   BENCH_ROUNDS=3            interleaved rounds; the best round per contender is shown
#   BENCH_CONNECTIONS="32 256"
#   BENCH_LOGINS=200          logins for the login-cost measurement (0 = skip)
#   BENCH_STREAM=1            1 GiB streaming test (0 = skip); BENCH_STREAM_MIB=1024
#   BENCH_SESSION_MEMORY=1    memory per session, 100,000 sessions (0 = skip)
#   BENCH_CRITERION=1         session-store insert/lookup rates with criterion (0 = skip)
#   BENCH_IDLE_CONNECTIONS=1000  idle keep-alive connections per proxy, for the memory each costs (0 = skip)
#   BENCH_KEEP_TMP=0          1 = keep the generated configurations and logs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'bench: %s\n' "$*" >&2; }

# --- Debian packages ---------------------------------------------------------
bash tests/apt-install.sh wrk nginx caddy apache2 libapache2-mod-auth-openidc redis-server curl python3

# --- the test provider's npm packages ------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "node and npm are required (Node.js >= 20) for the test provider"
  exit 1
fi
IDP_DIR="$ROOT/tests/idp"
if [ ! -d "$IDP_DIR/node_modules/oidc-provider" ]; then
  log "npm ci in tests/idp"
  (cd "$IDP_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# --- builds (before any measurement, so no compiler runs alongside) -------------
log "cargo build --release"
cargo build --release --quiet --bin portcullis --example bare_proxy
if [ "${BENCH_SESSION_MEMORY:-1}" != "0" ] || [ "${BENCH_CRITERION:-1}" != "0" ]; then
  log "cargo bench --no-run (session-store benches)"
  cargo bench --quiet --no-run --bench session_memory --bench session_store 2>/dev/null ||
    cargo bench --no-run --bench session_memory --bench session_store
fi

log "starting (a full run takes 12-25 minutes)"
exec python3 "$ROOT/bench/bench.py"
