#!/usr/bin/env bash
# The real function binaries in Docker behind SAM's local API Gateway (`sam local start-api`),
# on a machine that reaches only the package registries.
#
#   scripts/sam-local.sh [up] [PORT]   prepare, start a private Redis, serve on http://127.0.0.1:PORT
#                                      (3000 by default) until Ctrl-C
#   scripts/sam-local.sh prepare       only the preparation (what CI runs before the test)
#   scripts/sam-local.sh serve [PORT]  only `sam local start-api` (after prepare), with the
#                                      variables of the environment; REDIS_URL must be set
#   scripts/sam-local.sh bridge-address   where containers reach this machine (docker0's address)
#
# prepare: installs Docker (Debian's docker.io) and debootstrap with apt-get when missing and
# starts the Docker daemon when it is not running (it keeps running); builds the base image
# for provided.al2023 from Debian packages (debootstrap --variant=minbase, then docker import)
# once, cached by its tag; SAM adds its bundled Runtime Interface Emulator on top, so nothing
# is pulled from a container registry. Then scripts/sam-build.sh for this machine's
# architecture, in debug mode unless SAM_LOCAL_BUILD_MODE=release.
#
# serve: every variable template.yaml declares is set from the environment when present
# (`up` also reads .env), except what sam local decides itself: PUBLIC_BASE_URL is
# http://127.0.0.1:PORT, SQLITE_PATH is /tmp/data.sqlite in each function's container (SAM
# mounts no EFS: one database per function, emptied when its container goes), SECRETS_ARN is
# empty (no AWS). TOKEN_ENCRYPTION_KEY and SESSION_SECRET are generated for the run when
# unset. Containers sit on Docker's default bridge, so Redis and the providers must be
# reachable at the bridge's address (`bridge-address`); `up` starts its Redis there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

STATE_DIR=.aws-sam/sam-local

case $(uname -m) in
  x86_64) ARCH=x86_64 ;;
  aarch64) ARCH=arm64 ;;
  *)
    echo "sam-local: no Lambda architecture for $(uname -m)" >&2
    exit 1
    ;;
esac

bridge_address() {
  local address
  address=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }')
  if [ -z "$address" ]; then
    echo "sam-local: docker0 has no IPv4 address; is the Docker daemon running? (scripts/sam-local.sh prepare)" >&2
    return 1
  fi
  echo "$address"
}

prepare() {
  ensure_docker
  ensure_base_image
  # debug by default: after an edit it rebuilds in seconds where release (LTO) takes minutes
  # per function. SAM_LOCAL_BUILD_MODE=release serves the deployed profile.
  scripts/sam-build.sh "$ARCH" "${SAM_LOCAL_BUILD_MODE:-debug}"
}

# Writes the env-vars file for `sam local start-api` (mode 0600: it holds keys) and prints
# its path. $1: the port; $2: "dotenv" to read .env as well (the environment wins).
write_env_vars() {
  mkdir -p "$STATE_DIR"
  python3 - "$1" "${2:-}" "$STATE_DIR/env-vars.json" <<'PY'
import base64, json, os, secrets, sys
from samcli.yamlhelper import yaml_parse

port, dotenv, out = sys.argv[1], sys.argv[2], sys.argv[3]
with open("template.yaml") as f:
    template = yaml_parse(f.read())
declared = set(template["Globals"]["Function"]["Environment"]["Variables"])
for resource in template["Resources"].values():
    if resource["Type"] == "AWS::Serverless::Function":
        declared |= set(resource["Properties"].get("Environment", {}).get("Variables", {}))

values = {}
if dotenv == "dotenv" and os.path.exists(".env"):
    from dotenv import dotenv_values
    values.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
values.update(os.environ)
chosen = {name: values[name] for name in sorted(declared) if name in values}
if not chosen.get("REDIS_URL"):
    sys.exit("sam-local: REDIS_URL must be set (a Redis the containers reach at the bridge address)")
for key in ("TOKEN_ENCRYPTION_KEY", "SESSION_SECRET"):
    if not chosen.get(key, "").strip():
        chosen[key] = base64.b64encode(secrets.token_bytes(32)).decode()
chosen.update(
    PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
    SQLITE_PATH="/tmp/data.sqlite",
    SECRETS_ARN="",
)
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump({"Parameters": chosen}, f, indent=2)
print(out)
PY
}

serve() {
  local port=${1:-3000}
  ensure_tools_venv
  tools_on_path
  if [ ! -f .aws-sam/build/template.yaml ] || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "sam-local: nothing prepared yet: run scripts/sam-local.sh prepare" >&2
    exit 1
  fi
  local env_vars
  env_vars=$(write_env_vars "$port" "${SAM_LOCAL_DOTENV:-}")
  # The host only: a Redis URL may carry a password.
  local redis_host=${REDIS_URL#*://}
  redis_host=${redis_host##*@}
  echo "sam-local: http://127.0.0.1:$port (functions in Docker, Redis at ${redis_host%%/*}; Ctrl-C stops)"
  # Warm containers keep each function's database for the whole run. LAZY rather than EAGER:
  # SAM 1.170 starts EAGER containers from parallel threads that race to create its runtime,
  # and the loser's container is never stopped.
  exec sam local start-api \
    --template .aws-sam/build/template.yaml \
    --parameter-overrides "Architecture=$ARCH" \
    --invoke-image "$BASE_IMAGE" --skip-pull-image \
    --env-vars "$env_vars" \
    --host 127.0.0.1 --port "$port" \
    --warm-containers LAZY
}

up() {
  local port=${1:-3000}
  prepare
  command -v redis-server >/dev/null 2>&1 || apt_install_missing redis-server
  local bridge redis_port
  bridge=$(bridge_address)
  redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # Protected mode would refuse the containers; only this machine's containers reach $bridge.
  redis-server --port "$redis_port" --bind "127.0.0.1 $bridge" --protected-mode no --save "" \
    --appendonly no --loglevel warning --daemonize no &
  REDIS_PID=$!
  trap 'kill "$REDIS_PID" 2>/dev/null || true' EXIT
  # serve execs sam; run it in a subshell so this shell stays to stop Redis afterwards.
  (REDIS_URL="redis://$bridge:$redis_port" SAM_LOCAL_DOTENV=dotenv serve "$port") || true
}

command=${1:-up}
case $command in
  up)
    up "${2:-3000}"
    ;;
  prepare)
    prepare
    ;;
  serve)
    serve "${2:-3000}"
    ;;
  bridge-address)
    bridge_address
    ;;
  [0-9]*)
    up "$command"
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
