# syntax=docker/dockerfile:1
#
# sts-bridge container image.
#
#   docker build -t sts-bridge .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/config/example.toml:/etc/sts-bridge/config.toml:ro" \
#     -v "$PWD/keys:/keys:ro" \
#     sts-bridge
#
# config/example.toml signs assertions with keys/sts-bridge-2026-12.pem (relative to /):
# create it with `sts-bridge keys generate` and make it readable for uid 65532.
#
# The runtime image holds the binary and nothing else: no shell, no package manager.
# It runs as uid/gid 65532 and writes only to /data (the default SQLite location when
# DATABASE_URL is unset), so the root filesystem can be mounted read-only.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds; the
# binary is copied out in the same step because /src/target is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin sts-bridge \
 && install -D -m 0755 target/release/sts-bridge /out/sts-bridge \
 && install -d -m 0750 /out/data

# glibc and libgcc only; TLS roots are compiled into the binary (webpki-roots).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/sts-bridge /usr/local/bin/sts-bridge
COPY --from=builder --chown=65532:65532 /out/data /data
# The default `audit.sqlite_path` (data/sts-bridge.sqlite) is relative to the working
# directory, so from / it resolves to /data/sts-bridge.sqlite.
WORKDIR /
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sts-bridge"]
CMD ["serve", "--config", "/etc/sts-bridge/config.toml"]
