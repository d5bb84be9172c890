# The realtime bridge's image (README, "The realtime bridge"): the `realtime` binary built in
# the official Rust image, run on Debian 12 slim as user 1000 (the owner of the database's
# EFS access point). Build it for the stack's Architecture (arm64 by default):
#
#   docker buildx build --platform linux/arm64 -t avatar-realtime .
#
# Without a registry (this repository's tests), scripts/realtime-image.sh makes the same
# image from a binary built on the machine.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p avatar-realtime --bin realtime \
    && cp target/release/realtime /usr/local/bin/realtime

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/realtime /usr/local/bin/realtime
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/realtime"]
