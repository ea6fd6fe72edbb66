#!/usr/bin/env bash
# Start-up figures of the seven Lambda functions for BENCHMARKS.md: binary size, process
# start to ready (first GET .../invocation/next against a local stand-in of the Lambda
# Runtime API), the first invocation with a sample event, and peak memory (VmHWM).
#
#   benches/functions.sh          # 10 starts per function
#   RUNS=20 benches/functions.sh
#
# The functions are built in release, together, as `sam build` builds each of them
# (x86_64 here, not the arm64 bootstraps). The harness (the b24-testkit example
# function_startup) is a debug build: it only spawns the binaries and times them; it
# starts moto (Secrets Manager, SQS), a throw-away database on the local PostgreSQL and a
# simulated portal (2,000 deals, 500 contacts and leads, 200 companies, 12 user fields),
# plus two for the forwarder (a partner with 10 deals, an empty central portal).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
RUNS=${RUNS:-10}
TARGET=${CARGO_TARGET_DIR:-target}

ensure_rust
ensure_postgres
ensure_moto
say "Building the seven functions in release (one build, as their sizes depend on it)"
cargo build --release -q -p webhook-intake -p change-worker -p sync-scheduled -p deal-robot -p deal-forwarder -p status -p back-sync
say "Building the harness (debug)"
cargo build -q -p b24-testkit --example function_startup
say "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/^Mem:/ {print $2}') GiB, $(date -u +%Y-%m-%d)"
"$TARGET/debug/examples/function_startup" "$TARGET/release" "$RUNS"
