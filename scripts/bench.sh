#!/usr/bin/env bash
# Runs every benchmark (release build) and prints a Markdown table for BENCHMARKS.md;
# `scripts/bench.sh GROUP…` runs the groups named (see bench/src/main.rs).
# Needs redis-server (scripts/test.sh installs it); starts its own on a free loopback port
# (never 6379) and stops it, and every avatar-local it starts, when done.
# Installs wrk (apt) for the HTTP load benchmarks (/health and /auth/twitch on a release
# avatar-local, alone and beside 1,000 idle connections of a slow client), zip for the
# functions' package sizes and moto for the cold start with SECRETS_ARN.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
apt_install_missing wrk zip
ensure_moto
# The samlocal group needs Docker, the base image and the functions built (as the tests do).
if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx samlocal; then
  scripts/sam-local.sh prepare
fi
# The function binaries (and the floor they are compared with) in a cargo invocation of
# their own: built with the test harness, they would share its dependencies' features.
functions=()
for dir in functions/*/; do functions+=(-p "$(basename "$dir")"); done
cargo build --release --locked "${functions[@]}" -p lambda-floor
cargo build --release --locked -p avatar-local -p avatar-realtime -p avatar-bench
target/release/avatar-bench "$@"
