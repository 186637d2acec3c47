#!/usr/bin/env bash
# The fuzz targets (fuzz/README.md), built with the stable toolchain and libFuzzer's
# coverage instrumentation (the flags cargo fuzz passes, without a sanitizer).
#
#   bash fuzz/run.sh                    every target from its seeds, a fixed number of runs
#                                       with a fixed seed (the test command runs this)
#   bash fuzz/run.sh TARGET [SECONDS]   fuzz one target (default 600 s); the corpus grows
#                                       in fuzz/corpus/TARGET, findings land in fuzz/artifacts
#   bash fuzz/run.sh --build            only build the targets
#   bash fuzz/run.sh --idle ...         any of the above at idle priority (SCHED_IDLE, else
#                                       nice 19): it gets only CPU nothing else wants, so it
#                                       can run beside the tests without slowing them
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ${1-} == --idle ]]; then
  shift
  if chrt --idle 0 true 2>/dev/null; then
    exec chrt --idle 0 bash run.sh "$@"
  fi
  exec nice -n 19 bash run.sh "$@"
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps the instrumentation off build scripts and proc macros. Instrumenting only
# portcullis and the targets (a RUSTC_WRAPPER) saved no build CPU: README, Build time.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --locked --release --target "$triple" --target-dir target/stable --bins
bin="target/stable/$triple/release"
[[ ${1-} == --build ]] && exit

# Runs per target in the smoke run: 20 to 80 s each, 281 s in all one after another on a
# slowed 2-core host (CI, 2026-12-01); the smoke run below runs them side by side.
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

# The smoke run: each target from an empty scratch corpus and its seeds, longest first,
# as many at a time as there are cores: the same runs as one after another, in about half
# the wall time on 2 cores. A target's lines print when it ends.
smoke() { # target
  local scratch status=0
  scratch=$(mktemp -d)
  mkdir -p artifacts
  fuzz "$1" "$scratch" -seed=1 -runs="${runs[$1]}" >"artifacts/$1.out" || status=1
  rm -rf "$scratch"
  cat "artifacts/$1.out"
  return "$status"
}

order=(return_path config request_path cookies request forwarded_for host)
for target in "${order[@]}"; do
  [[ -v "runs[$target]" ]] || { echo "fuzz/run.sh: no run count for $target" >&2; exit 1; }
done
((${#order[@]} == ${#runs[@]})) || { echo "fuzz/run.sh: a target with runs is not in order" >&2; exit 1; }

failed=0 running=0
for target in "${order[@]}"; do
  if ((running == $(nproc))); then
    wait -n || failed=1
    running=$((running - 1))
  fi
  smoke "$target" &
  running=$((running + 1))
done
for ((; running > 0; running--)); do
  wait -n || failed=1
done
exit "$failed"
