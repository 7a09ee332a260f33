#!/usr/bin/env bash
# make bench: whole-process measurements (benches/sidecar.rs, benches/webhook.rs) and criterion
# micro-benchmarks (benches/hashing.rs, benches/target_lookup.rs); each writes its "## Sidecar"
# section of BENCHMARKS.md. About 3 minutes once built.
#
# `make bench` first builds what the whole-process benches run: the static binary the image ships
# (`make static`) and the example app (`make release`). With another target directory:
#   CARGO_TARGET_DIR=DIR make bench STATIC=DIR/x86_64-unknown-linux-gnu/release/nudge
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench sidecar --bench webhook --bench hashing --bench target_lookup
ls -l "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/nudge" |
    awk '{printf "static binary: %d bytes (%.2f MiB)\n", $5, $5/1048576}'
