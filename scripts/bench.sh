#!/usr/bin/env bash
# Runs every benchmark (release build) and prints a Markdown table for BENCHMARKS.md.
# Needs redis-server (scripts/test.sh installs it); starts its own on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked -p avatar-bench
