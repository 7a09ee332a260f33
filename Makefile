# nudge: the two commands that matter are `make demo` and `make test` (see README.md).
CARGO ?= cargo
RELEASE := target/release/nudge

STATIC := target/x86_64-unknown-linux-gnu/release/nudge
STATIC_TLS := target/tls/x86_64-unknown-linux-gnu/release/nudge
# The image's binary: glibc linked in (no loader, runs FROM scratch) and not position-independent
# (a static-pie carries 0.15 MiB of relocations it applies to itself at start-up).
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static

.PHONY: all build release demo test lint bench bench-rollout bench-injector static static-tls image image-tls bless clean

all: build

build:
	$(CARGO) build --all-targets

release:
	$(CARGO) build --release --bin nudge --example reload_app

## demo: build nudge and show the whole loop on a local kubelet-style volume
demo: release
	@scripts/demo.sh

## test: the whole test suite (unit, integration with real processes, pod emulation, nginx,
## the static binary in an empty root, the rollout controller against a real API server)
test: static
	$(CARGO) build --all-targets --features rollout
	$(CARGO) test --all-targets --features rollout --no-fail-fast

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings
	$(CARGO) clippy --all-targets --features rollout -- -D warnings

## static: the fully static nudge the image ships (http webhooks only; no TLS library)
static:
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --release --bin nudge --target x86_64-unknown-linux-gnu --no-default-features
	@ls -l $(STATIC) | awk '{printf "static binary: %d bytes (%.2f MiB)\n", $$5, $$5/1048576}'

## static-tls: the same with https webhooks (rustls), for the `-tls` image
static-tls:
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --release --bin nudge --target x86_64-unknown-linux-gnu --target-dir target/tls
	@ls -l $(STATIC_TLS) | awk '{printf "static binary with TLS: %d bytes (%.2f MiB)\n", $$5, $$5/1048576}'

## bless: rewrite the expected files of the inject golden tests after a deliberate change
bless:
	NUDGE_BLESS=1 $(CARGO) test --test inject

## bench: on the static binary: signal and webhook latency against a C inotify+kill floor, RSS
## and CPU under updates (3, 100, 10 x 1 MiB volumes), idle CPU, start-up; criterion: hashing
## throughput, target lookup among 10,000 processes (writes BENCHMARKS.md; about 5 minutes)
bench: release static
	@scripts/bench.sh

## bench-rollout: `nudge rollout` RSS, start-up and update latency at N=1,000 and 9,100 objects
## on a real API server (writes BENCHMARKS.md; N=... to pick sizes, e.g. N="1000")
bench-rollout:
	$(CARGO) bench --features rollout --bench rollout -- $(N)

## bench-injector: `nudge injector` admission latency p50/p99 (loopback HTTPS, and pod creation
## through a real API server with and without the webhook), RSS idle and under load
## (writes its section of BENCHMARKS.md)
bench-injector:
	$(CARGO) bench --features rollout --bench injector

clean:
	$(CARGO) clean

## image, image-tls: the container images nudge:latest and nudge:latest-tls (need docker or
## podman with a running engine)
ENGINE = $$(command -v podman || command -v docker || { echo "make image: neither podman nor docker found" >&2; exit 2; })
image:
	@engine=$(ENGINE) && $$engine build -t nudge:latest .
image-tls:
	@engine=$(ENGINE) && $$engine build --build-arg VARIANT=tls -t nudge:latest-tls .
