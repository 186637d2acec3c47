#!/usr/bin/env bash
# Installs the named Debian packages that are not installed yet (idempotent, quick when
# nothing is missing). Shared by tests/setup.sh and bench/run.sh.
#   bash tests/apt-install.sh PACKAGE...
set -euo pipefail

is_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

missing=()
for pkg in "$@"; do
  is_installed "$pkg" || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  printf 'apt-install: missing Debian packages: %s (run as root or install them)\n' "${missing[*]}" >&2
  exit 1
fi
printf 'apt-install: installing Debian packages: %s\n' "${missing[*]}" >&2
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
