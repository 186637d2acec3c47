#!/usr/bin/env bash
# Installs what the end-to-end tests and the quick-start demo need:
#   - Debian packages: chromium (headless browser test), redis-server (session store tests),
#     systemd (systemd-analyze checks deploy/portcullis.service)
#   - npm packages of tests/idp (oidc-provider, playwright-core), exactly as in its lockfile
# Idempotent and quick when everything is already there. Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'setup: %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
bash tests/apt-install.sh chromium redis-server systemd

if [ ! -x /usr/bin/chromium ]; then
  log "/usr/bin/chromium not found after installing the chromium package"
  exit 1
fi

# --- npm packages of tests/idp ---------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "node and npm are required (Node.js >= 20)"
  exit 1
fi

IDP_DIR="$ROOT/tests/idp"
STAMP="$IDP_DIR/node_modules/.portcullis-setup-stamp"
want_stamp="$(node --version) $(sha256sum "$IDP_DIR/package-lock.json" | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
  && [ -d "$IDP_DIR/node_modules/oidc-provider" ] && [ -d "$IDP_DIR/node_modules/playwright-core" ]; then
  : # node_modules already matches the lockfile
else
  log "npm ci in tests/idp"
  # never let playwright download browsers: we use Debian's /usr/bin/chromium
  (cd "$IDP_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
  printf '%s\n' "$want_stamp" >"$STAMP"
fi

log "ok (chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n1 || echo '?'), node $(node --version))"
