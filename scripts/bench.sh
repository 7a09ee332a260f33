#!/usr/bin/env bash
# make bench: whole-process measurements, written to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench sidecar
ls -l target/release/nudge | awk '{printf "release binary: %d bytes (%.2f MiB)\n", $5, $5/1048576}'
