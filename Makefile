# nudge: the two commands that matter are `make demo` and `make test` (see README.md).
CARGO ?= cargo
RELEASE := target/release/nudge

.PHONY: all build release demo test lint bench static image clean

all: build

build:
	$(CARGO) build --all-targets

release:
	$(CARGO) build --release --bin nudge --example reload_app

## demo: build nudge and show the whole loop on a local kubelet-style volume
demo: release
	@scripts/demo.sh

## test: the whole test suite (unit, integration with real processes, pod emulation, nginx)
test:
	$(CARGO) build --all-targets
	$(CARGO) test --all-targets --no-fail-fast

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## bench: latency against a C inotify+kill floor, RSS, idle CPU (writes BENCHMARKS.md)
bench: release
	@scripts/bench.sh

clean:
	$(CARGO) clean
