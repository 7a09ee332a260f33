# nudge sidecar image: one fully static binary on an empty base.
#   make image            (docker or podman)
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --bin nudge --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/nudge /nudge

FROM scratch
LABEL org.opencontainers.image.title="nudge" \
      org.opencontainers.image.description="Sidecar that reloads an app when its mounted ConfigMap or Secret changes" \
      org.opencontainers.image.source="https://github.com/nudge-dev/nudge" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /nudge /nudge
# Numeric, non-root: satisfies runAsNonRoot without a passwd file.
USER 65532:65532
EXPOSE 9533
ENTRYPOINT ["/nudge"]
