# syntax=docker/dockerfile:1
# The xdp-ingress image: one static-ish binary with the eBPF object embedded.
#   docker build -t ghcr.io/xdp-ingress/xdp-ingress:0.1.0 .
# Build stage: stable Rust for the daemon, the nightly + rust-src + bpf-linker for the eBPF
# programs, installed by the same `cargo xtask setup` developers use (build-only mode).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV XTASK_SETUP_BUILD_ONLY=1
RUN cargo xtask setup \
 && cargo build --release --locked --package ingress-user \
 && cp target/release/xdp-ingress /xdp-ingress

# Run stage: no compiler, no shell tools beyond Debian's base.
FROM debian:bookworm-slim
COPY --from=build /xdp-ingress /usr/local/bin/xdp-ingress
ENTRYPOINT ["xdp-ingress"]
