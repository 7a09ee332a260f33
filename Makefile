# nudge: the two commands that matter are `make demo` and `make test` (see README.md).
CARGO ?= cargo
RELEASE := target/release/nudge

STATIC := target/x86_64-unknown-linux-gnu/release/nudge

.PHONY: all build release demo test lint bench bench-rollout bench-injector static image bless clean

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
	$(CARGO) clippy --all-targets --features rollout -- -D warnings

## static: a fully static nudge (what the container image ships)
static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --bin nudge --target x86_64-unknown-linux-gnu
	@ls -l $(STATIC) | awk '{printf "static binary: %d bytes (%.2f MiB)\n", $$5, $$5/1048576}'

## bless: rewrite the expected files of the inject golden tests after a deliberate change
bless:
	NUDGE_BLESS=1 $(CARGO) test --test inject

## bench: latency against a C inotify+kill floor, RSS, idle CPU (writes BENCHMARKS.md)
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

## image: the container image (needs docker or podman with a running engine)
image:
	@engine=$$(command -v podman || command -v docker) || { echo "make image: neither podman nor docker found" >&2; exit 2; }; \
	$$engine build -t nudge:latest .
