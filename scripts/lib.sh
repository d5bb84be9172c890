# Helpers the scripts share; sourced from the repository root.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs the Debian packages given that are missing (by package name).
apt_install_missing() {
  local missing=()
  local package
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# moto (a local AWS API standing in for Secrets Manager, checking request signatures) and
# boto3, which the tests use to set it up.
ensure_moto() {
  if ! python3 -c 'import moto.server, boto3' >/dev/null 2>&1; then
    command -v pip3 >/dev/null 2>&1 || apt_install_missing python3-pip
    python3 -m pip install --quiet 'moto[server]' boto3 ||
      python3 -m pip install --quiet --break-system-packages 'moto[server]' boto3
  fi
}

# The pinned Python tools, in one venv (.venv-tools/): the SAM CLI (sam), cfn-lint (the version
# this SAM CLI release accepts)
# and cargo-lambda with zig. cargo-lambda finds zig through the first python3 on PATH, so
# whoever builds puts .venv-tools/bin first on PATH (see tools_on_path).
TOOLS_VENV_PINS="aws-sam-cli==1.170.0 cfn-lint==1.58.0 cargo-lambda==1.9.2"

ensure_tools_venv() {
  [ -x .venv-tools/bin/python3 ] || python3 -m venv .venv-tools
  if [ "$(cat .venv-tools/pins 2>/dev/null)" != "$TOOLS_VENV_PINS" ]; then
    echo "installing $TOOLS_VENV_PINS into .venv-tools/"
    # shellcheck disable=SC2086 # the pins are separate words
    .venv-tools/bin/pip install --quiet $TOOLS_VENV_PINS
    echo "$TOOLS_VENV_PINS" >.venv-tools/pins
  fi
}

# For this script only: the venv's tools (and its python3, for zig) first; SAM quiet.
tools_on_path() {
  export PATH="$PWD/.venv-tools/bin:$PATH" SAM_CLI_TELEMETRY=0
}

# Docker and the Debian base image, shared by scripts/sam-local.sh (the functions under
# `sam local`) and scripts/realtime-image.sh (the bridge's image). Nothing is pulled from a
# container registry: the base image is made from Debian packages.

# The recipe's version is in the repository name: SAM tags its emulator image after it.
BASE_IMAGE=avatar-twitch-oauth/lambda-base-debian12-v1:provided.al2023

# Installs Docker (Debian's docker.io) and debootstrap when missing and starts the Docker
# daemon when it is not running (it keeps running).
ensure_docker() {
  apt_install_missing docker.io debootstrap iproute2
  if ! docker info >/dev/null 2>&1; then
    # No systemd on these machines: start the daemon the package installed, in the background.
    echo "starting dockerd (log: /var/log/dockerd.log)"
    as_root sh -c 'setsid dockerd >>/var/log/dockerd.log 2>&1 < /dev/null &'
    local waited=0
    until docker info >/dev/null 2>&1; do
      if [ $waited -ge 600 ]; then
        echo "dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
        exit 1
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
  fi
}

# Builds BASE_IMAGE once (debootstrap --variant=minbase, then docker import), cached by its
# tag: Debian 12 with glibc and CA certificates, and the directories a Lambda base image has.
ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    return
  fi
  echo "building $BASE_IMAGE from Debian packages (debootstrap, about a minute)"
  local rootfs
  rootfs=$(mktemp -d /tmp/lambda-base-rootfs.XXXXXX)
  # The root file system is root-owned; it is only needed until the import.
  trap 'as_root rm -rf "$rootfs" "$rootfs.log"' EXIT
  as_root debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" \
    http://deb.debian.org/debian >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    exit 1
  }
  # What a Lambda base image has and SAM expects: the task and runtime directories.
  as_root sh -c "rm -rf '$rootfs'/var/cache/apt/archives/*.deb '$rootfs'/var/lib/apt/lists/* \
    '$rootfs'/usr/share/doc/* '$rootfs'/usr/share/man/* '$rootfs'/usr/share/locale/* &&
    mkdir -p '$rootfs'/var/task '$rootfs'/var/runtime '$rootfs'/opt"
  as_root tar -C "$rootfs" -c . | docker import \
    --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
    --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/opt/bin' \
    --change 'WORKDIR /var/task' \
    - "$BASE_IMAGE" >/dev/null
  as_root rm -rf "$rootfs" "$rootfs.log"
  trap - EXIT
}
