#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test:
# the test provider's own self-test, the unit tests and the end-to-end tests against
# the real binary, the real oidc-provider, a real upstream and headless Chromium;
# then every fuzz target from its seeds (fuzz/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The fuzz run (its release build is the largest single step here) starts first, beside
# everything else, at idle priority: it gets only the CPU the installs, the test build's
# serial stretches and the tests waiting on their peers leave unused (fuzz/README.md,
# Build time, for what that saved). Its output follows theirs. `set -m` gives it a process
# group of its own, which the trap stops if this script ends early.
fuzz_log=$(mktemp)
set -m
bash fuzz/run.sh --idle >"$fuzz_log" 2>&1 &
fuzz=$!
set +m
trap 'kill -- "-$fuzz" 2>/dev/null || true; rm -f "$fuzz_log"' EXIT

bash tests/setup.sh
(cd tests/idp && node --test selftest.mjs)
# The unit tests, then the end-to-end tests: one test binary, tests/e2e (tests/README.md).
cargo test --lib --bins --tests

echo "tests/run.sh: the fuzz run (fuzz/run.sh), started beside the tests:"
fuzz_status=0
wait "$fuzz" || fuzz_status=$?
cat "$fuzz_log"
exit "$fuzz_status"
