#!/usr/bin/env bash
# What the status page's row-count triggers (migration V6) cost the ingest: the
# server's own time for the statements the store's upsert sends, on a copy of the demo
# portal's deal table (run scripts/demo.sh first) without and with the triggers. Each
# statement three times, in a transaction rolled back afterwards, so every round starts
# from the same table:
#   COPY of ROWS new rows (the store's path for new rows: one statement per chunk),
#   INSERT ... ON CONFLICT DO UPDATE of ROWS changed rows (the path for changed rows),
#   UPDATE of deleted_at on a tenth of them (a soft delete).
# Usage: benches/status_triggers.sh [ROWS]   (default 20000: the demo's rows, repeated)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_postgres
rows="${1:-20000}"
db=b24sync_demo
sql() { psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$db" "$@"; }
sql -Atc "SELECT 1 FROM b24._mirror_counts LIMIT 1" >/dev/null 2>&1 \
    || { say "run scripts/demo.sh first (it leaves the database $db, migrated with V6)"; exit 1; }
table=$(sql -Atc "SELECT table_name FROM b24._mirror_tables WHERE entity = 'deal' AND portal = 'demo'")
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(date -u +%Y-%m-%dT%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
dir=$(mktemp -d); chmod 777 "$dir"
cleanup() {
    sql -c "DROP TABLE IF EXISTS b24.bench_plain, b24.bench_counted; DELETE FROM b24._mirror_counts WHERE table_name = 'bench_counted'" || true
    rm -rf "$dir"
}
trap cleanup EXIT
# The demo's live deals, repeated with shifted IDs up to ROWS rows.
sql <<SQL
COPY (SELECT s.*, k FROM (SELECT d.*, row_number() OVER () AS n FROM b24.$table d) s, generate_series(0, 99) k
      WHERE s.n + k * (SELECT count(*) FROM b24.$table) <= $rows) TO '$dir/rows.copy';
SQL
# row_number and k come along in the file: the tables get two extra columns for them.
for name in bench_plain bench_counted; do
    sql -c "CREATE TABLE b24.$name (LIKE b24.$table INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION, n bigint, k int);
            ALTER TABLE b24.$name ADD PRIMARY KEY (portal, id, k)"
done
sql -Atc "SET client_min_messages = warning; SET search_path TO b24; SELECT _mirror_counts_install('bench_counted')" >/dev/null
updates=$(sql -Atc "SELECT string_agg(format('%I = EXCLUDED.%I', column_name, column_name), ', ')
    FROM information_schema.columns WHERE table_schema = 'b24' AND table_name = 'bench_plain'
      AND column_name NOT IN ('portal', 'id', 'k')")
for name in bench_plain bench_counted; do
    echo "== $name ($( [ $name = bench_plain ] && echo 'no triggers' || echo 'with the V6 count triggers'))"
    for round in 1 2 3; do
        sql <<SQL | sed -n 's/^Time: /  round '"$round"': /p' | paste -sd' '
BEGIN;
\\timing on
COPY b24.$name FROM '$dir/rows.copy';
INSERT INTO b24.$name SELECT * FROM b24.$name ON CONFLICT (portal, id, k) DO UPDATE SET $updates;
UPDATE b24.$name SET deleted_at = now() WHERE n % 10 = 0;
\\timing off
ROLLBACK;
SQL
    done
done
echo "(per round: COPY of $rows new rows, upsert of $rows changed rows, soft delete of a tenth)"
