#!/usr/bin/env bash
# The fuzz targets (fuzz/README.md), built with the stable toolchain and libFuzzer's
# coverage instrumentation (the flags cargo fuzz passes, without a sanitizer).
#
#   bash fuzz/run.sh                    every target from its seeds, a fixed number of runs
#                                       with a fixed seed (the test command runs this)
#   bash fuzz/run.sh TARGET [SECONDS]   fuzz one target (default 600 s); the corpus grows
#                                       in fuzz/corpus/TARGET, findings land in fuzz/artifacts
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

triple=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps the instrumentation off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --locked --release --target "$triple" --target-dir target/stable --bins
bin="target/stable/$triple/release"

# Runs per target in the smoke run: about 15 s each on a 2-core machine.
declare -A runs=(
  [return_path]=2000000 [request_path]=1500000 [host]=1200000 [cookies]=200000
  [forwarded_for]=500000 [config]=150000 [request]=50000
)

fuzz() { # target, corpus dir, libFuzzer options...
  local target=$1 corpus=$2
  shift 2
  mkdir -p "artifacts/$target"
  if ! "$bin/$target" "$corpus" "seeds/$target" -artifact_prefix="artifacts/$target/" \
    -max_len=4096 -print_final_stats=1 "$@" 2>"artifacts/$target.log"; then
    tail -n 60 "artifacts/$target.log"
    for finding in "artifacts/$target"/*; do
      echo "finding: $finding (bytes below, as hex)"
      od -An -tx1 -v "$finding" | head -n 40
    done
    return 1
  fi
  grep -E '^stat::number_of_executed_units|^Done' "artifacts/$target.log" | sed "s/^/$target: /"
}

if [[ $# -gt 0 ]]; then
  target=$1
  mkdir -p "corpus/$target"
  fuzz "$target" "corpus/$target" -max_total_time="${2:-600}"
  exit
fi

failed=0
for target in "${!runs[@]}"; do
  scratch=$(mktemp -d)
  fuzz "$target" "$scratch" -seed=1 -runs="${runs[$target]}" || failed=1
  rm -rf "$scratch"
done
exit "$failed"
