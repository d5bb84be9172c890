#!/usr/bin/env bash
# Builds every function of template.yaml with `sam build` (BuildMethod rust-cargolambda: cargo
# lambda, release profile, zig as the linker) into .aws-sam/build/<Function>/bootstrap, then
# checks that each function of the built template has its bootstrap for the architecture.
#
#   scripts/sam-build.sh [arm64|x86_64] [release|debug]
#
# arm64 (the default) is what AWS runs and needs the Rust target aarch64-unknown-linux-gnu;
# x86_64 is for `sam local` on an x86_64 machine (scripts/sam-local.sh). release (the
# default) is the deployed profile (LTO, one codegen unit: minutes per changed binary);
# debug (SAM_BUILD_MODE=debug) rebuilds in seconds, for the sam local dev loop. No Docker.
# Installs the pinned SAM CLI and cargo-lambda into .venv-tools/ when missing. Cargo's own
# incremental build in target/ is the cache: a second build recompiles only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

arch=${1:-arm64}
mode=${2:-release}
case $mode in
  release) ;;
  debug) export SAM_BUILD_MODE=debug ;;
  *)
    echo "usage: $0 [arm64|x86_64] [release|debug]" >&2
    exit 2
    ;;
esac
case $arch in
  arm64) rust_target=aarch64-unknown-linux-gnu elf_machine=183 ;;
  x86_64) rust_target=x86_64-unknown-linux-gnu elf_machine=62 ;;
  *)
    echo "usage: $0 [arm64|x86_64] [release|debug]" >&2
    exit 2
    ;;
esac
if ! rustup target list --installed | grep -qx "$rust_target"; then
  echo "sam-build: $arch needs the Rust target $rust_target: rustup target add $rust_target" \
    "(or build for this machine: $0 $(uname -m | sed 's/aarch64/arm64/'))" >&2
  exit 1
fi

ensure_tools_venv
tools_on_path
sam build --template-file template.yaml --parameter-overrides "Architecture=$arch"

# Every function of the template (whatever functions it has today) must have a bootstrap
# built for $arch: an ELF executable whose machine field is arm64 (183) or x86-64 (62).
python3 - "$elf_machine" <<'PY'
import os, struct, sys
from samcli.yamlhelper import yaml_parse

machine = int(sys.argv[1])
build = ".aws-sam/build"
with open(os.path.join(build, "template.yaml")) as f:
    resources = yaml_parse(f.read())["Resources"]
functions = {n: r for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
problems = []
for name, resource in sorted(functions.items()):
    path = os.path.join(build, resource["Properties"]["CodeUri"], "bootstrap")
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError as e:
        problems.append(f"{name}: no bootstrap ({e.strerror})")
        continue
    if header[:4] != b"\x7fELF" or struct.unpack_from("<H", header, 18)[0] != machine:
        problems.append(f"{name}: {path} is not an executable for ELF machine {machine}")
    elif not os.access(path, os.X_OK):
        problems.append(f"{name}: {path} is not executable")
if problems or not functions:
    sys.exit("sam-build: " + ("; ".join(problems) or "the template has no functions"))
sizes = ", ".join(
    f"{n} {os.path.getsize(os.path.join(build, r['Properties']['CodeUri'], 'bootstrap')) // 1024} KiB"
    for n, r in sorted(functions.items())
)
print(f"sam-build: {len(functions)} bootstraps: {sizes}")
PY
