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

# glibc, libgcc and CA certificates (the image also ships libssl3, which the binary does not
# use); no shell. Runs as nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/step-operator /step-operator
USER 65532:65532
ENTRYPOINT ["/step-operator"]
