#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test:
# the test provider's own self-test, the unit tests and the end-to-end tests against
# the real binary, the real oidc-provider, a real upstream and headless Chromium;
# then every fuzz target from its seeds (fuzz/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/setup.sh
(cd tests/idp && node --test selftest.mjs)
cargo test --lib --bins --tests
bash fuzz/run.sh
