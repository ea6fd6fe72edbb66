#!/usr/bin/env bash
# Runs the main job locally, end to end, with no AWS account: a simulated Bitrix24
# portal with demo data, the local PostgreSQL as the mirror, and the same sync code the
# scheduled Lambda function runs (full sync, then changes on the portal, then an
# incremental pass and a reconcile), ending with a check that the mirror equals the
# portal. Safe to run repeatedly: it recreates its own database `b24sync_demo`.
#
#   scripts/demo.sh            # run the pipeline and exit
#   KEEP=1 scripts/demo.sh     # leave the simulator running afterwards
cd "$(dirname "$0")/.."
source scripts/lib.sh

DEALS=${DEALS:-20000}
DB=b24sync_demo
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
WORK=.local/demo
mkdir -p "$WORK"

ensure_rust
ensure_postgres

say "Building the simulator and the b24sync CLI (debug profile, shared with the tests)"
cargo build -q -p b24-sim -p b24-cli
SIM=target/debug/b24-sim
CLI=target/debug/b24sync

say "Recreating the demo database $DB"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"

say "Starting a simulated portal: $DEALS deals, contacts, leads, companies, 12 user fields"
start_sim "$WORK" "$SIM" --listen 127.0.0.1:0 --seed 42 --deals "$DEALS" --contacts 5000 --leads 5000 \
    --companies 2000 --user-fields 12
[ -n "${KEEP:-}" ] || trap 'kill $SIM_PID 2>/dev/null || true' EXIT
SIM_BASE=${WEBHOOK%%/rest/*}
say "Simulator up (its webhook URL is in $WORK/sim.out)"

cat >"$WORK/config.toml" <<TOML
[database]
url = "$DATABASE_URL"
schema = "b24"

[portals.demo]
webhook_url = "$WEBHOOK"
entities = ["deal", "contact", "lead", "company"]
TOML
export B24SYNC_CONFIG="$WORK/config.toml"

say "Applying the migrations"
"$CLI" migrate

for entity in deal contact lead company; do
    say "Full sync of $entity"
    "$CLI" sync --portal demo --entity "$entity" --mode full
done

say "Changing the portal: random adds, updates and deletes on every entity"
for entity in deal contact lead company; do
    curl -sf -X POST "$SIM_BASE/_sim/mutate" -H 'content-type: application/json' \
        -d "{\"entity\":\"$entity\",\"seed\":7,\"adds\":50,\"updates\":200,\"deletes\":30}" >/dev/null
done

for entity in deal contact lead company; do
    say "Incremental pass and reconcile of $entity"
    "$CLI" sync --portal demo --entity "$entity" --mode incremental
    "$CLI" sync --portal demo --entity "$entity" --mode reconcile
done

say "Checking that the mirror equals the portal"
for entity in deal contact lead company; do
    "$CLI" check --portal demo --entity "$entity"
done

say "Mirror contents"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "
    SELECT 'deal' AS entity, count(*) FILTER (WHERE deleted_at IS NULL) AS live, count(*) FILTER (WHERE deleted_at IS NOT NULL) AS deleted FROM b24.deal
    UNION ALL SELECT 'contact', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM b24.contact
    UNION ALL SELECT 'lead', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM b24.lead
    UNION ALL SELECT 'company', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM b24.company"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT entity, mode, rows_read, rows_written, rows_deleted, http_requests, error FROM b24._sync_runs ORDER BY id"
say "Done. Explore it: psql -h 127.0.0.1 -U postgres -d $DB"
[ -z "${KEEP:-}" ] || say "Simulator still running (pid $SIM_PID), webhook URL in $WORK/sim.out"
