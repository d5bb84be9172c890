#!/usr/bin/env bash
# The realtime bridge's container image, built on this machine without any container
# registry (the root Dockerfile is for users, who have one).
#
#   scripts/realtime-image.sh [TAG]   TAG defaults to avatar-realtime:local
#
# Installs and starts Docker when missing (scripts/lib.sh, as scripts/sam-local.sh does),
# makes the Debian 12 base image from Debian packages once (the one `sam local` uses, cached
# by its tag), builds the `realtime` binary with cargo for this machine's architecture, and
# puts it into an image over that base: /usr/local/bin/realtime as the entry point, run as
# user 1000 (the EFS access point's owner). The binary links dynamically against glibc; the
# base image is Debian 12 (glibc 2.36), so the build machine's glibc must not be newer: the
# script checks that the binary's libraries all resolve inside the image.
#
# REALTIME_IMAGE_PROFILE picks cargo's profile: `dev` by default (target/debug, which
# `cargo build --workspace` has made already, so the image costs seconds), `release` for the
# deployed one (thin LTO: many minutes on a small machine).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

TAG=${1:-avatar-realtime:local}
PROFILE=${REALTIME_IMAGE_PROFILE:-dev}
case $PROFILE in
  dev) OUT=target/debug/realtime ;;
  *) OUT=target/$PROFILE/realtime ;;
esac

started=$SECONDS
ensure_docker
ensure_base_image

cargo build --locked -p avatar-realtime --bin realtime --profile "$PROFILE"

context=$(mktemp -d /tmp/realtime-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp "$OUT" "$context/realtime"
cat >"$context/Dockerfile" <<EOF
FROM $BASE_IMAGE
COPY realtime /usr/local/bin/realtime
# The Lambda directories of the base image are of no use here; no .env is searched for in /.
WORKDIR /
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/realtime"]
EOF
# The classic builder: Debian's docker.io comes without buildx, and the base is local.
if ! built=$(DOCKER_BUILDKIT=0 docker build --quiet --tag "$TAG" "$context" 2>&1); then
  echo "$built" >&2
  exit 1
fi

# Every library the binary needs resolves inside the image (glibc not older than the build's).
linked=$(docker run --rm --entrypoint /usr/bin/ldd "$TAG" /usr/local/bin/realtime 2>&1) || {
  echo "realtime-image: ldd failed in the image: $linked" >&2
  exit 1
}
if grep -q 'not found' <<<"$linked"; then
  echo "realtime-image: the binary does not run on $BASE_IMAGE (a newer glibc at build?):" >&2
  echo "$linked" >&2
  exit 1
fi
echo "realtime-image: $TAG ($PROFILE build, $(du -h "$OUT" | cut -f1) binary) in $((SECONDS - started)) s"
