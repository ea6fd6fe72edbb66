#!/usr/bin/env bash
# Where PostgreSQL's time goes when it ingests mirror rows: plain server-side COPY of the
# demo's deal rows (run scripts/demo.sh first) into a copy of the mirror table, into a
# table with only the raw record as jsonb, and into one with the raw record as json
# (no parsing into jsonb). No client work is involved: it is the server's floor.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_postgres
db=b24sync_demo
psql -h 127.0.0.1 -U postgres -d "$db" -Atc "SELECT 1 FROM b24.deal LIMIT 1" >/dev/null 2>&1 \
    || { say "run scripts/demo.sh first (it leaves the database $db)"; exit 1; }
# The demo portal's own deal table (b24.deal is the view across portals).
table=$(psql -h 127.0.0.1 -U postgres -d "$db" -Atc \
    "SELECT table_name FROM b24._mirror_tables WHERE entity = 'deal' ORDER BY portal LIMIT 1")
dir=$(mktemp -d); chmod 777 "$dir"; trap 'rm -rf "$dir"' EXIT
psql -h 127.0.0.1 -U postgres -d "$db" -q <<SQL
\\timing on
COPY (SELECT * FROM b24.$table) TO '$dir/all.copy';
COPY (SELECT portal, id, raw, date_modify FROM b24.$table) TO '$dir/raw.copy';
CREATE TEMP TABLE t_all (LIKE b24.$table INCLUDING ALL);
ALTER TABLE t_all ALTER COLUMN raw SET COMPRESSION lz4;
CREATE TEMP TABLE t_jsonb (portal text, id bigint, raw jsonb COMPRESSION lz4, date_modify timestamptz, PRIMARY KEY (portal, id));
CREATE TEMP TABLE t_json (portal text, id bigint, raw json, date_modify timestamptz, PRIMARY KEY (portal, id));
SELECT count(*) AS rows, (SELECT count(*) FROM information_schema.columns WHERE table_schema = 'b24' AND table_name = '$table') AS columns FROM b24.$table;
\\echo 'COPY into the full mirror table:'
COPY t_all FROM '$dir/all.copy';
\\echo 'COPY of the raw record only, as jsonb:'
COPY t_jsonb FROM '$dir/raw.copy';
\\echo 'COPY of the raw record only, as json:'
COPY t_json FROM '$dir/raw.copy';
SQL
