#!/usr/bin/env bash
# Runs the whole test suite RUNS times in a row (20 by default) while `stress -c 2` keeps two
# cores busy, to find tests that depend on timing. Each run is what scripts/test.sh runs as
# tests: `cargo test --workspace`, the `sam local start-api` test included (its preparation
# is done once, first). It stops at the first failing run and keeps that run's output.
#
#   scripts/stress.sh [RUNS]
#
# Run scripts/test.sh once first: it installs what the tests need. This script installs only
# `stress` (apt-get). Every run's output is in test-artifacts/stress/run-N.log.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

runs=${1:-20}
apt_install_missing stress
cargo build --workspace --locked
cargo test --workspace --locked --no-run
scripts/sam-local.sh prepare >/dev/null

logs=test-artifacts/stress
mkdir -p "$logs"
stress -c 2 >/dev/null 2>&1 &
stress_pid=$!
trap 'kill "$stress_pid" 2>/dev/null; wait "$stress_pid" 2>/dev/null || true' EXIT

failed=0
for run in $(seq 1 "$runs"); do
  log="$logs/run-$run.log"
  started=$SECONDS
  set +e
  cargo test --workspace --locked -- --include-ignored >"$log" 2>&1
  status=$?
  set -e
  totals=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$log")
  echo "run $run/$runs: $totals in $((SECONDS - started)) s (exit $status)"
  if [ "$status" -ne 0 ]; then
    failed=1
    grep -E '^test .* FAILED$|^---- ' "$log" || true
    echo "stopped: run $run failed; its output is $log"
    break
  fi
done
[ "$failed" -eq 0 ] && echo "all $runs runs passed under stress -c 2"
exit "$failed"
