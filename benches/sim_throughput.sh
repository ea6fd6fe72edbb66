#!/usr/bin/env bash
# Simulator list throughput with limits off: starts the release b24-sim with
# 100,000 deals and 20 user fields, then pages every deal over plain HTTP with
# chained `start=-1` / `>ID` batches (50 list commands per request, select * + UF_*)
# using the release-built example `page_all`. Prints one JSON line per run.
#
#   benches/sim_throughput.sh            # 3 runs, 100,000 deals
#   DEALS=20000 RUNS=1 benches/sim_throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEALS=${DEALS:-100000}
USER_FIELDS=${USER_FIELDS:-20}
RUNS=${RUNS:-3}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -p b24-sim --bins --examples

work=$(mktemp -d)
"$TARGET/release/b24-sim" --no-limits --deals "$DEALS" --user-fields "$USER_FIELDS" >"$work/stdout" 2>"$work/stderr" &
sim=$!
trap 'kill "$sim" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do
  grep -q '^B24_WEBHOOK_URL=' "$work/stdout" && break
  kill -0 "$sim" 2>/dev/null || { cat "$work/stderr"; exit 1; }
  sleep 0.1
done
url=$(head -n1 "$work/stdout" | cut -d= -f2-)
echo "deals=$DEALS user_fields=$USER_FIELDS cores=$(nproc)"
for run in $(seq 1 "$RUNS"); do
  printf 'run %s: ' "$run"
  "$TARGET/release/examples/page_all" "$url" deal
done
