#!/usr/bin/env bash
# Simulator memory and generation time for 1,000,000 deals with 20 user fields:
# runs the release b24-sim under /usr/bin/time -v, waits for its first stdout line
# (data generated, server listening), optionally pages through everything once
# (PAGE=1, the default) so the figure includes serving, then stops it with SIGTERM
# and reports the wall time to ready and the peak RSS.
#
#   benches/sim_memory.sh
#   DEALS=200000 PAGE=0 benches/sim_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEALS=${DEALS:-1000000}
USER_FIELDS=${USER_FIELDS:-20}
PAGE=${PAGE:-1}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -p b24-sim --bins --examples

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$(date +%s.%N)
/usr/bin/time -v -o "$work/time" "$TARGET/release/b24-sim" --no-limits --deals "$DEALS" --user-fields "$USER_FIELDS" \
  >"$work/stdout" 2>"$work/stderr" &
timer=$!
for _ in $(seq 1 3000); do
  grep -q '^B24_WEBHOOK_URL=' "$work/stdout" && break
  sleep 0.02
done
ready=$(date +%s.%N)
url=$(head -n1 "$work/stdout" | cut -d= -f2-)
sim=$(pgrep -P "$timer" b24-sim)
echo "deals=$DEALS user_fields=$USER_FIELDS cores=$(nproc)"
echo "ready_after_seconds=$(echo "$ready - $started" | bc)"
grep -m1 'generated' "$work/stderr" || true
if [ "$PAGE" = 1 ]; then
  printf 'page_all: '
  "$TARGET/release/examples/page_all" "$url" deal
fi
kill -TERM "$sim"
wait "$timer" || true
grep -E 'Maximum resident set size|Elapsed \(wall clock\)' "$work/time"
