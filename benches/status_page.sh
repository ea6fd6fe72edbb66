#!/usr/bin/env bash
# Benchmark of the status function: how long its handler takes to answer `/`,
# `/status.json` and `/schema.md` for a mirror of DEALS deals (default 1,000,000) and
# RUNS recorded sync runs (default 1,000), release build, in-process (no HTTP, no Lambda).
# The deal table is made by a real sync of one deal with 20 user fields (so it has the
# store's layout, its triggers and field metadata), then filled with SQL in a throw-away
# database; every 40th deal is soft-deleted. Prints the machine, then one JSON line per
# page (size, min / median / p95 / max of REPEATS answers), and what a COUNT(*) of the
# table costs, which the page never runs.
# Usage: benches/status_page.sh [DEALS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

deals="${1:-1000000}"
runs="${2:-1000}"
db=b24sync_status_bench
ensure_postgres
bench_start
say "Building the status function's render_time example (release)"
cargo build --release -q -p status --example render_time
bench_cleanup() {
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
}
sql() { psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$db" "$@"; }

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(date -u +%Y-%m-%dT%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg)"

say "Creating the database $db"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
start_sim "$WORK" target/release/b24-sim --deals 1 --user-fields 20 --no-limits
cat >"$WORK/config.toml" <<TOML
[database]
url = "postgres://postgres@127.0.0.1:5432/$db"

[portals.bench]
webhook_url = "$WEBHOOK"
entities = ["deal"]

[status]
tokens = ["bench-status-token-0123456789"]
TOML
export B24SYNC_CONFIG="$WORK/config.toml"
target/release/b24sync sync --portal bench --entity deal --mode full --migrate >/dev/null

say "Filling b24.deal__bench to $deals deals with SQL (copies of the synced deal; every 40th deleted)"
columns=$(sql -Atc "SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
    FROM information_schema.columns WHERE table_schema = 'b24' AND table_name = 'deal__bench'
      AND column_name NOT IN ('id', 'date_modify', 'synced_at', 'deleted_at')")
start=$(date +%s.%N)
sql <<SQL
-- The rows stand for what the sync writes, so the back-sync capture leaves them alone.
SET b24sync.writer = 'sync';
INSERT INTO b24.deal__bench (id, date_modify, synced_at, deleted_at, $columns)
SELECT g, now() - g * interval '1 second', now(), CASE WHEN g % 40 = 0 THEN now() END, $columns
FROM b24.deal__bench d, generate_series(2, $deals) g
WHERE d.id = (SELECT min(id) FROM b24.deal__bench);
SQL
echo "filled in $(echo "$(date +%s.%N) - $start" | bc) s"

say "Recording $runs sync runs, one every 5 minutes back from now (1 in 50 failed, with an error)"
sql <<SQL
INSERT INTO b24._sync_runs (portal, entity, mode, started_at, finished_at, outcome, rows_read, rows_written,
                            rows_deleted, http_requests, error)
SELECT 'bench', 'deal', (ARRAY['incremental', 'incremental', 'resume', 'reconcile'])[1 + g % 4],
       now() - g * interval '5 minutes', now() - g * interval '5 minutes' + (1 + g % 7) * interval '1 second',
       CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'completed' END, 100 + g % 900, 50 + g % 400, g % 3, 2 + g % 5,
       CASE WHEN g % 50 = 0 THEN 'crm.deal.list: the portal answered 503 QUERY_LIMIT_EXCEEDED three times' END
FROM generate_series(1, $runs) g;
VACUUM ANALYZE;
SQL
sql -Atc "SELECT 'mirror_counts: ' || live_rows || ' live, ' || deleted_rows || ' deleted' FROM b24._mirror_counts"

say "Timing the status function's answers (REPEATS=${REPEATS:=50} each)"
REPEATS=$REPEATS target/release/examples/render_time

say "For comparison, what counting the table on every request would cost"
sql -c '\timing on' -c "SELECT count(*) FILTER (WHERE deleted_at IS NULL) AS live, count(*) FILTER (WHERE deleted_at IS NOT NULL) AS deleted FROM b24.deal__bench"
