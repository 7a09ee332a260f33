# nudge sidecar image: one fully static binary on an empty base.
#   make image       nudge:latest      http webhooks only (the smallest; most reload endpoints
#                                      are http on the pod's localhost)
#   make image-tls   nudge:latest-tls  https webhooks too (rustls; mount a CA bundle and set
#                                      SSL_CERT_FILE, since scratch has no certificates)
# The build flags live in the Makefile (`make static`, `make static-tls`), so the image ships
# exactly the binary the tests run.
FROM docker.io/library/rust:1-bookworm AS build
ARG VARIANT=slim
WORKDIR /src
COPY . .
RUN if [ "$VARIANT" = tls ]; then make static-tls && cp target/tls/x86_64-unknown-linux-gnu/release/nudge /nudge; \
    else make static && cp target/x86_64-unknown-linux-gnu/release/nudge /nudge; fi

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
