#!/usr/bin/env bash
# Runs every test. On a fresh Debian machine with the Rust toolchain it first installs what
# is missing (redis-server, Node.js, the Node packages of the interop test, the moto
# server standing in for AWS Secrets Manager, Chromium and ChromeDriver for the browser
# test, the SAM CLI, cfn-lint and cargo-lambda; Docker for the last step). The tests start
# their own private redis-server processes on free loopback ports (never 6379) and stop them
# when they finish, also when a test fails. The last step builds the functions with
# `sam build` and drives them through `sam local start-api` in Docker, and runs the realtime
# bridge's image (scripts/realtime-image.sh) in Docker against Redis and the fakes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The SECRETS_ARN tests talk to a local Secrets Manager (moto).
ensure_moto

# The interop test drives the npm redlock package; versions are pinned by the lock file.
if [ ! -d tests/node/node_modules/redlock ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi

# The deployment template, checked by SAM's own linter (as `sam deploy` would read it) and
# by cfn-lint, both pinned in .venv-tools/.
ensure_tools_venv
SAM_CLI_TELEMETRY=0 .venv-tools/bin/sam validate --lint --template template.yaml
.venv-tools/bin/cfn-lint template.yaml

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The crate documentation (the tour in shared/src/lib.rs links every floor): a link to
# nothing, or from public docs to a private item, fails the run.
RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -D rustdoc::private_intra_doc_links" \
  cargo doc -p shared --no-deps --features lambda --locked
# The function binaries themselves (cargo test builds only their test harnesses): the
# runtime tests run them as Lambda would.
cargo build --workspace --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The Docker step. sam local start-api: Docker (installed and started when missing), the base
# image (cached) and the x86_64 `sam build` (cargo's incremental build); the realtime bridge's
# image on the same base (scripts/realtime-image.sh); then the tests that run them.
started=$SECONDS
scripts/sam-local.sh prepare
scripts/realtime-image.sh
set +e
# --workspace: the features of the run above, so nothing is built again.
cargo test --workspace --test sam_local --locked -- --ignored 2>&1 | tee -a "$log"
sam_status=${PIPESTATUS[0]}
set -e
echo "Docker step: $((SECONDS - started)) s"
[ "$status" -ne 0 ] || status=$sam_status
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "total: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
