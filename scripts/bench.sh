#!/usr/bin/env bash
# Runs every benchmark (release build) and prints a Markdown table for BENCHMARKS.md.
# Needs redis-server (scripts/test.sh installs it); starts its own on a free loopback port
# (never 6379) and stops it, and every avatar-local it starts, when done.
# Installs wrk (apt) for the HTTP load benchmarks (/health and /auth/twitch on a release
# avatar-local, alone and beside 1,000 idle connections of a slow client).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null 2>&1 || {
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
# The samlocal group needs Docker, the base image and the functions built (as the tests do).
if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx samlocal; then
  scripts/sam-local.sh prepare
fi
cargo build --release --locked -p avatar-local -p avatar-bench
target/release/avatar-bench "$@"
