#!/usr/bin/env bash
# Benchmark of the scheduled sync's code path (`b24sync sync`, release build): a full
# sync of N deals with 20 user fields from the simulator with its DEFAULT limits into a
# fresh database on the local PostgreSQL, then an incremental pass after 1,000 deals
# changed on the portal. Prints each run's summary line, rows per HTTP request, rows/s
# into Postgres and the CLI's peak RSS.
# Usage: benches/sync_full.sh [DEALS]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

deals="${1:-100000}"
db=b24sync_bench
ensure_postgres
ensure_gnu_time
bench_start
bench_cleanup() {
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
}

say "Creating the database $db"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export B24SYNC_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"

say "Starting the simulator with $deals deals and 20 user fields (default limits)"
start_sim "$WORK" target/release/b24-sim --deals "$deals" --user-fields 20
export B24SYNC_WEBHOOK=$WEBHOOK
sim_base=${B24SYNC_WEBHOOK%%/rest/*}
target/release/b24sync migrate >/dev/null

report() { # $1 = label, $2 = file with the summary line and time -v output
    local line kb
    line=$(summary_line "$2")
    kb=$(peak_rss_kb "$2")
    echo "$1: $line"
    printf '%s' "$line" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
written = s["rows_inserted"] + s["rows_updated"]
print("  rows_read %d, http_requests %d, rows/request %.1f, seconds %.2f, rows/s %.0f, peak RSS %.1f MB" % (
    s["rows_read"], s["http_requests"], s["rows_read"] / max(s["http_requests"], 1), s["seconds"],
    written / s["seconds"], int(sys.argv[1]) / 1024))
' "$kb"
}

say "Full sync: b24sync sync --portal bench --entity deal --mode full"
/usr/bin/time -v env ${BENCH_ENV:-} target/release/b24sync sync --portal bench --entity deal --mode full >"$WORK/full.out" 2>"$WORK/full.err"
cat "$WORK/full.out" "$WORK/full.err" >"$WORK/full.all"
report "full" "$WORK/full.all"

say "Changing 1,000 deals on the portal"
curl -sf -X POST "$sim_base/_sim/mutate" -H 'content-type: application/json' \
    -d '{"entity":"deal","seed":1,"adds":0,"updates":1000,"deletes":0}' >/dev/null
say "Incremental pass: b24sync sync --portal bench --entity deal --mode incremental"
/usr/bin/time -v target/release/b24sync sync --portal bench --entity deal --mode incremental >"$WORK/inc.out" 2>"$WORK/inc.err"
cat "$WORK/inc.out" "$WORK/inc.err" >"$WORK/inc.all"
report "incremental" "$WORK/inc.all"

say "Portal-side totals (simulator statistics)"
sim_stats; echo
