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
