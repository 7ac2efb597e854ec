# syntax=docker/dockerfile:1
# step-operator: one image for the controller, the webhook, and the bootstrapper/renewer the
# webhook injects into pods (`step-operator bootstrap` / `renew`).
#
#   docker build -t ghcr.io/step-operator/step-operator:0.1.0 .
#
# The builder runs the same build as `make release`. rust-toolchain.toml (channel "stable") is
# honoured by rustup inside the rust image; pin RUST_VERSION for reproducible builds.

ARG RUST_VERSION=1
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
# No system libraries needed: the binary links no OpenSSL (ring's C and assembly builds with the
# image's own compiler).
WORKDIR /src
# The workspace (Cargo.toml lists "." and "e2e"); .dockerignore keeps target/ and state out.
COPY Cargo.toml Cargo.lock rust-toolchain.toml clippy.toml ./
COPY src ./src
COPY e2e/Cargo.toml ./e2e/Cargo.toml
COPY e2e/src ./e2e/src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin step-operator \
 && install -D -m 0755 target/release/step-operator /out/step-operator

# The runtime filesystem comes from image/rootfs.sh, the script that also builds the image the e2e
# tests run (image/build-oci.sh), so the tested image and this one hold the same files: the binary,
# exactly the shared libraries it loads (glibc, libgcc), CA certificates, passwd/group with nonroot
# (65532); no shell. (It replaces distroless/cc, whose files the tests could not reproduce.)
# bookworm, as the builder: the libraries must be the ones the binary was linked against.
FROM docker.io/library/debian:bookworm-slim AS rootfs
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY image/libs.sh image/rootfs.sh /image/
COPY --from=builder /out/step-operator /out/step-operator
RUN /image/rootfs.sh /out/step-operator /rootfs

# Only what rootfs.sh assembled. COPY --from keeps the stage's owners (/home/nonroot is 65532's).
# USER and ENTRYPOINT must equal image/image.env: image/check-dockerfile.sh checks.
FROM scratch
COPY --from=rootfs /rootfs /
USER 65532:65532
ENTRYPOINT ["/step-operator"]
