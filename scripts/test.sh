#!/usr/bin/env bash
# Runs every test of the workspace: pure unit tests, handler tests and the adapter /
# end-to-end tests against the local PostgreSQL, the Bitrix24 simulator and moto (which
# the tests start themselves), and the status page in headless Chromium. Installs or
# starts what it needs; safe to run repeatedly.
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_rust
ensure_postgres
ensure_moto
ensure_chromium

if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first, so the run ends on nextest's summary of every test.
    say "Running doc tests"
    cargo test --workspace --doc
    say "Running every test (cargo nextest, debug profile)"
    cargo nextest run --workspace --no-fail-fast
else
    say "Running every test (cargo test, debug profile)"
    cargo test --workspace --no-fail-fast
fi
