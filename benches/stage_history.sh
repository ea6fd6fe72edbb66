#!/usr/bin/env bash
# Benchmark of the stage history: the first reference refresh of a portal of N deals
# (the whole history: one creation entry per deal) and a later one after 1,000 deals
# changed (only the new entries), `b24sync sync --mode reference` with
# `stage_history = true` against the simulator with its DEFAULT limits, into a fresh
# database. Prints each refresh's stage-history summary: entries read, HTTP requests,
# entries per request, seconds. Release build.
# Usage: benches/stage_history.sh [DEALS]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

deals="${1:-100000}"
db=b24sync_bench_history
ensure_postgres
bench_start
bench_cleanup() {
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
}

say "Creating the database $db"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
say "Starting the simulator with $deals deals (default limits)"
start_sim "$WORK" target/release/b24-sim --deals "$deals"
sim_base=${WEBHOOK%%/rest/*}
config=$(printf '{"database":{"url":"postgres://postgres@127.0.0.1:5432/%s"},"portals":{"bench":{"webhook_url":"%s","entities":["deal"],"stage_history":true}}}' \
    "$db" "$WEBHOOK")
target/release/b24sync --config "$config" migrate >/dev/null

refresh() { # $1 = label
    target/release/b24sync --config "$config" sync --portal bench --entity deal --mode reference >"$WORK/run.out"
    grep '"stage_history_deal"' "$WORK/run.out" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
print("%s: %d entries read, %d written, %d HTTP requests (%.0f entries per request), %.2f s, 503/429 %d/%d" % (
    sys.argv[1], s["rows_read"], s["rows_inserted"], s["http_requests"], s["rows_read"] / max(s["http_requests"], 1),
    s["seconds"], s["throttled_503"], s["throttled_429"]))
' "$1"
}

say "First refresh: the whole history"
refresh "first refresh"
say "Changing 1,000 deals on the portal (stage moves among them)"
curl -sf -X POST "$sim_base/_sim/mutate" -H 'content-type: application/json' \
    -d '{"entity":"deal","seed":1,"adds":0,"updates":1000,"deletes":0}' >/dev/null
say "Second refresh: only the entries after the newest stored"
refresh "second refresh"
