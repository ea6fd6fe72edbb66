#!/usr/bin/env bash
# Runs the whole pipeline locally, end to end, with no AWS account: a simulated Bitrix24
# portal with demo data that posts its CRM events, a second simulated portal that
# receives forwarded deals, the local PostgreSQL as the mirror, and the seven functions'
# own handlers behind one local HTTP server (`b24-local`: the intake's and the deal
# robot's function URLs, in-process queues feeding the change worker and the deal
# forwarder, the schedules as timers). The story: an initial full sync; live changes on
# the portal flowing through the intake and the worker into PostgreSQL; robots on the
# portal forwarding deals to the central portal exactly once; a smart process and the
# reference tables (pipelines, stages, currencies, users) beside the four entities; a
# scheduled incremental pass and reconcile; edits made in PostgreSQL pushed to the portal by back-sync; a check
# that the mirror equals the portal, row by row.
# Safe to run repeatedly: it recreates its own database `b24sync_demo`.
#
#   scripts/demo.sh            # run the story and exit
#   KEEP=1 scripts/demo.sh     # leave the portal and the functions running to explore
#   DEALS=N scripts/demo.sh    # another portal size (default 20000 deals)
cd "$(dirname "$0")/.."
source scripts/lib.sh

DEALS=${DEALS:-20000}
DB=b24sync_demo
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
TOKEN=demo-application-token
APP_ACCESS=demo-app-access-token
ROUTE_SECRET=demo-route-secret-7f3a9c2e
STATUS_TOKEN=demo-status-token-5b1d8e3a
ENTITIES=(deal contact lead company)
# The demo portal's smart process (entityTypeId 1038), mirrored as sp_1038.
SMART=1038
WORK=.local/demo
mkdir -p "$WORK"

ensure_rust
ensure_postgres

say "Building the simulator, the b24sync CLI and b24-local (debug profile, shared with the tests)"
cargo build -q -p b24-sim -p b24-cli -p b24-local
SIM=target/debug/b24-sim
CLI=target/debug/b24sync
LOCAL=target/debug/b24-local

say "Recreating the demo database $DB"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"

# The portal must know the intake's URL before it starts, so pick the port first.
PORT=$(free_port)
LOCAL_URL="http://127.0.0.1:$PORT"
INTAKE_URL="$LOCAL_URL/lambda-url/webhook-intake/"
ROBOT_URL="$LOCAL_URL/lambda-url/deal-robot/"
STATUS_URL="$LOCAL_URL/lambda-url/status/"

say "Starting a simulated portal: $DEALS deals in two pipelines, 5,000 contacts and leads, 2,000 companies, 12 user fields, a smart process 'Orders' ($SMART) of 2,000 items; its events go to $INTAKE_URL"
start_sim "$WORK" "$SIM" --listen 127.0.0.1:0 --seed 42 --deals "$DEALS" --contacts 5000 --leads 5000 \
    --companies 2000 --user-fields 12 --deal-category Wholesale \
    --smart-process "$SMART:Orders:2000:uf=4:categories=Export|Repairs" \
    --events-to "$INTAKE_URL" --application-token "$TOKEN" \
    --app-token "$TOKEN" --app-access-token "$APP_ACCESS"
SIM_BASE=${WEBHOOK%%/rest/*}
DEMO_PID=$SIM_PID
DEMO_WEBHOOK=$WEBHOOK

say "Starting a second simulated portal, central.sim.test, empty: robots on the demo portal forward deals to it"
mkdir -p "$WORK/central"
start_sim "$WORK/central" "$SIM" --listen 127.0.0.1:0 --seed 43 --domain central.sim.test
CENTRAL_PID=$SIM_PID
CENTRAL_WEBHOOK=$WEBHOOK
CENTRAL_BASE=${CENTRAL_WEBHOOK%%/rest/*}

cat >"$WORK/config.toml" <<TOML
[database]
url = "$DATABASE_URL"
schema = "b24"

[portals.demo]
webhook_url = "$DEMO_WEBHOOK"
entities = ["deal", "contact", "lead", "company"]
# Every smart process the portal has (crm.type.list), through crm.item.*.
smart_processes = "all"
# The stage history of deals, leads and the smart process, appended on every reference refresh.
stage_history = true
# What the intake and the deal robot check on every call: the portal's domain and its
# application token.
domain = "sim.bitrix24.test"
application_tokens = ["$TOKEN"]
# Edits made in the mirror are pushed back to this portal (the portal wins conflicts).
back_sync = { enabled = true }

# The portal that receives forwarded deals (mirrored too: its deals only).
[portals.central]
webhook_url = "$CENTRAL_WEBHOOK"
entities = ["deal"]
domain = "central.sim.test"

# A robot on a demo deal's stage hands the deal to central.
[routes.demo-to-central]
source = "demo"
target = "central"
secret = "$ROUTE_SECRET"
fields = { TITLE = "TITLE", OPPORTUNITY = "OPPORTUNITY", CURRENCY_ID = "CURRENCY_ID", STAGE_ID = "STAGE_ID" }
values = { STAGE_ID = { by = "label", default = "NEW" } }
constants = { SOURCE_ID = "PARTNER", COMMENTS = "Forwarded by the demo portal's robot" }
copy_products = true
wait_for_reply = true
return_values = { targetDealId = "target_deal_id" }

# Who may read the status function's page (a bearer token, or the Basic password).
[status]
tokens = ["$STATUS_TOKEN"]
TOML
export B24SYNC_CONFIG="$WORK/config.toml"

say "Starting b24-local on $LOCAL_URL: intake, change queue and worker, deal robot and forwarder, schedules incremental every 20 s, reconcile every 30 s, back-sync every 10 s (log: $WORK/local.log)"
"$LOCAL" --listen "127.0.0.1:$PORT" --schedule incremental=20s --schedule reconcile=30s \
    --back-sync 10s --batch-window 2s >"$WORK/local.log" 2>&1 &
LOCAL_PID=$!
if [ -z "${KEEP:-}" ]; then
    trap 'kill $DEMO_PID $CENTRAL_PID $LOCAL_PID 2>/dev/null || true' EXIT
fi
for _ in $(seq 1 600); do
    grep -q '^B24_LOCAL_URL=' "$WORK/local.log" 2>/dev/null && break
    kill -0 "$LOCAL_PID" 2>/dev/null || { cat "$WORK/local.log" >&2; say "b24-local did not start"; exit 1; }
    sleep 0.2
done

# sync_invoke REQUEST: invokes the sync-scheduled function through the Lambda Invoke API
# and prints one line per run it answers with.
sync_invoke() {
    curl -sf -X POST "$LOCAL_URL/2015-03-31/functions/sync-scheduled/invocations" \
        -H 'content-type: application/json' -d "$1" >"$WORK/invoke.json"
    python3 - "$WORK/invoke.json" <<'PY'
import json, sys
for run in json.load(open(sys.argv[1]))["runs"]:
    print(f"    {run['entity']:13} {run.get('rows_inserted', 0):>6} rows in {run.get('seconds', 0):.1f} s, {run.get('http_requests', 0)} requests ({run['outcome']})")
PY
}

say "Initial full sync: the sync-scheduled function, invoked through the Lambda Invoke API"
sync_invoke '{"portal":"demo","mode":"full"}'
say "Reference tables: pipelines, stage and list values, currencies, users, and the stage history (mode reference, as its schedule runs it)"
sync_invoke '{"portal":"demo","mode":"reference"}'

say "Live changes: random adds, updates and deletes on every entity; each one is an event to the intake"
for entity in "${ENTITIES[@]}"; do
    curl -sf -X POST "$SIM_BASE/_sim/mutate" -H 'content-type: application/json' \
        -d "{\"entity\":\"$entity\",\"seed\":7,\"adds\":50,\"updates\":200,\"deletes\":30}" >/dev/null
done
# Smart-process items raise ONCRMDYNAMICITEM* events with their entityTypeId.
curl -sf -X POST "$SIM_BASE/_sim/mutate" -H 'content-type: application/json' \
    -d "{\"entity_type_id\":$SMART,\"seed\":7,\"adds\":20,\"updates\":80,\"deletes\":10}" >/dev/null
say "Waiting for the change queue to drain (the worker applies batches after a 2 s window)"
python3 - "$SIM_BASE" "$LOCAL_URL" <<'PY'
import json, sys, time, urllib.request
sim, local = sys.argv[1], sys.argv[2]
get = lambda url: json.load(urllib.request.urlopen(url))
deadline = time.time() + 120
while True:
    events, status = get(sim + "/_sim/stats"), get(local + "/_local/status")
    queue = status["queue"]
    if queue["sent"] >= events["events_sent"] and queue["waiting"] == 0 and queue["in_flight"] == 0:
        break
    if time.time() > deadline:
        sys.exit(f"the queue did not drain: portal {events}, local {status}")
    time.sleep(0.5)
worker = status["worker"]
print(f"    {events['events_sent']} events sent ({events['events_failed']} failed), {queue['sent']} queued, "
      f"{worker['messages']} applied in {worker['batches']} worker batches, {queue['dead_letter']} dead letters")
PY

say "Checking the mirror against the portal after the live path alone"
for entity in "${ENTITIES[@]}" "sp_$SMART"; do
    "$CLI" check --portal demo --entity "$entity"
done

say "Deal forwarding: registering the route's application robot on the demo portal (b24sync robot-register, in the application's context)"
B24SYNC_APP_AUTH=$APP_ACCESS "$CLI" robot-register --route demo-to-central --handler "$ROBOT_URL" \
    --endpoint "$SIM_BASE/rest/" >"$WORK/robot.json"
python3 - "$WORK/robot.json" <<'PY'
import json, sys
answer = json.load(open(sys.argv[1]))
params = answer["bizproc.robot.add"]
print(f"    registered robot {params['CODE']!r} ({params['NAME']}) -> {params['HANDLER']}")
PY
say "Robots fire on ten demo deals: five application robots (waiting for their reply), five built-in Webhook robots (route and secret in the URL), then three of the application robots again"
python3 - "$SIM_BASE" "$DEMO_WEBHOOK" "$CENTRAL_WEBHOOK" "$LOCAL_URL" "$ROBOT_URL?route=demo-to-central&secret=$ROUTE_SECRET" <<'PY'
import json, sys, time, urllib.request
sim, demo, central, local, webhook_robot_url = sys.argv[1:6]
def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request))
get = lambda url: json.load(urllib.request.urlopen(url))
# The first ten live deals (the live changes above may have deleted any given ID).
deals = [int(d["ID"]) for d in post(demo + "crm.deal.list.json", {"order": {"ID": "ASC"}, "select": ["ID"]})["result"][:10]]
answers = [post(f"{sim}/_sim/robot/app", {"deal_id": d, "code": "demo-to-central"}) for d in deals[:5]]
answers += [post(f"{sim}/_sim/robot/webhook", {"url": webhook_robot_url, "deal_id": d}) for d in deals[5:]]
answers += [post(f"{sim}/_sim/robot/app", {"deal_id": d, "code": "demo-to-central"}) for d in deals[:3]]
statuses = sorted({a["status"] for a in answers})
print(f"    {len(answers)} robot calls for deals {deals}, answered {statuses} by the deal robot")
if statuses != [202]:
    sys.exit(f"a robot call was not accepted: {answers}")
deadline = time.time() + 120
while True:
    status = get(local + "/_local/status")
    queue = status["forward_queue"]
    if queue["sent"] >= len(answers) and queue["waiting"] == 0 and queue["in_flight"] == 0:
        break
    if time.time() > deadline:
        sys.exit(f"the forward queue did not drain: {status}")
    time.sleep(0.5)
copies = post(central + "crm.deal.list.json", {"filter": {"ORIGINATOR_ID": "b24sync:sim.bitrix24.test"},
              "select": ["ID", "TITLE", "ORIGIN_ID", "STAGE_ID"], "order": {"ID": "ASC"}})["result"]
by_origin = {}
for deal in copies:
    by_origin.setdefault(int(deal["ORIGIN_ID"]), []).append(deal)
replies = get(sim + "/_sim/workflow-replies")
print(f"    {queue['deleted']} forward jobs done ({status['forwarder']['failed_messages']} failed, {queue['dead_letter']} dead letters); "
      f"central holds {len(copies)} forwarded deals for {len(by_origin)} demo deals; {len(replies)} waiting robots heard back")
for origin in deals[:3]:
    copy = by_origin.get(origin, [{}])[0]
    print(f"    demo deal {origin} -> central deal {copy.get('ID')} {copy.get('TITLE')!r} ({copy.get('STAGE_ID')}), forwarded twice, one copy")
if sorted(by_origin) != sorted(deals) or any(len(d) != 1 for d in by_origin.values()):
    sys.exit(f"expected exactly one central deal for each of {deals}: {by_origin}")
if len(replies) != 8:
    sys.exit(f"expected 8 workflow replies (one per application robot call), got {len(replies)}")
PY

say "Back-sync: a deal edited and a company inserted in PostgreSQL, as an internal app would; the back-sync schedule pushes them"
EDITED=$(psql -qAt -h 127.0.0.1 -U postgres -d "$DB" -c "
    UPDATE b24.deal__demo SET title = 'Edited in PostgreSQL', opportunity = 4242
    WHERE id = (SELECT min(id) FROM b24.deal__demo WHERE deleted_at IS NULL) RETURNING id")
psql -q -h 127.0.0.1 -U postgres -d "$DB" -c "INSERT INTO b24.company__demo (title, comments) VALUES ('Founded in PostgreSQL', 'created by back-sync')"
python3 - "$DATABASE_URL" "$DEMO_WEBHOOK" "$EDITED" <<'PY'
import json, subprocess, sys, time, urllib.error, urllib.request
database, demo, edited = sys.argv[1], sys.argv[2], sys.argv[3]
sql = lambda q: subprocess.run(["psql", "-qAt", database, "-c", q], check=True, capture_output=True, text=True).stdout.strip()
def portal(method, body):
    # The functions keep the portal's request bucket busy: wait out a 503 as a client would.
    for attempt in range(60):
        request = urllib.request.Request(demo + method + ".json", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        try:
            return json.load(urllib.request.urlopen(request))["result"]
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
            time.sleep(1)
    sys.exit(f"{method}: the portal kept answering 503")
deadline = time.time() + 60
while sql("SELECT count(*) FROM b24._outbox WHERE state IN ('pending', 'pushing')") != "0":
    if time.time() > deadline:
        sys.exit("back-sync did not push the edits: " + sql("SELECT id, op, state, last_error FROM b24._outbox"))
    time.sleep(0.5)
deal = portal("crm.deal.get", {"id": edited})
company = portal("crm.company.list", {"filter": {"ORIGINATOR_ID": "b24sync:postgres"}, "select": ["ID", "TITLE"]})
local_id = sql("SELECT id FROM b24.company__demo WHERE title = 'Founded in PostgreSQL'")
print(f"    deal {edited} on the portal: {deal['TITLE']!r}, {deal['OPPORTUNITY']}")
print(f"    company created on the portal: {[(c['ID'], c['TITLE']) for c in company]}; the mirror row took ID {local_id}")
if deal["TITLE"] != "Edited in PostgreSQL" or len(company) != 1 or company[0]["ID"] != local_id:
    sys.exit("the edits did not arrive as made")
print("    outbox: " + sql("SELECT string_agg(op || ' ' || state, ', ' ORDER BY id) FROM b24._outbox"))
PY

say "Waiting for the next scheduled incremental pass and reconcile"
python3 - "$LOCAL_URL" "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)" <<'PY'
import json, sys, time, urllib.request
from datetime import datetime
local, since = sys.argv[1], datetime.fromisoformat(sys.argv[2])
started_since = lambda s: s["runs"]["last_started_at"] and datetime.fromisoformat(s["runs"]["last_started_at"]) >= since
deadline = time.time() + 180
while True:
    schedules = json.load(urllib.request.urlopen(local + "/_local/status"))["schedules"]
    if all(started_since(s) and s["runs"]["last_finished_at"] and datetime.fromisoformat(s["runs"]["last_finished_at"]) >= datetime.fromisoformat(s["runs"]["last_started_at"]) for s in schedules):
        break
    if time.time() > deadline:
        sys.exit(f"the schedules did not run: {schedules}")
    time.sleep(1)
for s in schedules:
    answer = s["runs"]["last_answer"]
    runs = answer.get("runs", [])
    summary = ", ".join(f"{r['entity']} {r['outcome']}" for r in runs) or answer
    print(f"    {s['name']}: {s['runs']['runs']} run(s), {s['runs']['failures']} failed; last: {summary}")
PY

say "Final check: the mirror equals both portals"
for entity in "${ENTITIES[@]}" "sp_$SMART"; do
    "$CLI" check --portal demo --entity "$entity"
done
"$CLI" check --portal central --entity deal

say "Mirror contents"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "
    SELECT portal, entity, count(*) FILTER (WHERE deleted_at IS NULL) AS live, count(*) FILTER (WHERE deleted_at IS NOT NULL) AS deleted
    FROM (SELECT portal, 'deal' AS entity, deleted_at FROM b24.deal
          UNION ALL SELECT portal, 'contact', deleted_at FROM b24.contact
          UNION ALL SELECT portal, 'lead', deleted_at FROM b24.lead
          UNION ALL SELECT portal, 'company', deleted_at FROM b24.company
          UNION ALL SELECT portal, 'sp_$SMART', deleted_at FROM b24.sp_$SMART) AS mirror
    GROUP BY portal, entity ORDER BY portal DESC, entity"
say "Deals per pipeline and stage, by name: the mirror joined with the reference tables (README, Reference tables)"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "
    SELECT c.name AS pipeline, s.name AS stage, count(*) AS deals
    FROM b24.deal d
    JOIN b24.crm_category c ON c.portal = d.portal AND c.entity_type_id = 2 AND c.id = d.category_id
    JOIN b24.crm_status s ON s.portal = d.portal AND s.status_id = d.stage_id
     AND s.entity_id = CASE d.category_id WHEN 0 THEN 'DEAL_STAGE' ELSE 'DEAL_STAGE_' || d.category_id END
    WHERE d.portal = 'demo' AND d.deleted_at IS NULL
    GROUP BY c.id, c.name, s.name, s.sort ORDER BY c.id, s.sort"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT portal, entity, mode, rows_read, rows_written, rows_deleted, http_requests, error FROM b24._sync_runs ORDER BY id"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT route, source_deal_id, target_deal_id, state, forwards, attempts FROM b24._forward_ledger ORDER BY source_deal_id"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT id, entity, record_id, op, state, attempts, bitrix_id, last_error FROM b24._outbox ORDER BY id"
say "The status function: $STATUS_URL (token as the Basic password: http://status:$STATUS_TOKEN@127.0.0.1:$PORT/lambda-url/status/)"
curl -sf -H "Authorization: Bearer $STATUS_TOKEN" "${STATUS_URL}status.json" >"$WORK/status.json"
python3 - "$WORK/status.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"    overall {report['health']['level']}: {'; '.join(report['health']['reasons'])}")
for portal in report["portals"]:
    counts = ", ".join(f"{e['entity']} {e.get('rows', {}).get('live', 0)} live / {e.get('rows', {}).get('deleted', 0)} deleted"
                       for e in portal["entities"])
    print(f"    {portal['name']}: {portal['health']['level']} ({'; '.join(portal['health']['reasons'])}); {counts}")
PY
say "Done. Explore it: psql -h 127.0.0.1 -U postgres -d $DB"
if [ -n "${KEEP:-}" ]; then
    say "Still running: the demo portal (pid $DEMO_PID) at $SIM_BASE, the central portal (pid $CENTRAL_PID) at $CENTRAL_BASE and b24-local (pid $LOCAL_PID) at $LOCAL_URL"
    cat >&2 <<EOF
    status of the queue, worker and schedules:  curl $LOCAL_URL/_local/status
    the status page (open it in a browser):     http://status:$STATUS_TOKEN@127.0.0.1:$PORT/lambda-url/status/
    the status report and the mirror's columns: curl -H 'Authorization: Bearer $STATUS_TOKEN' ${STATUS_URL}status.json  (or schema.md)
    more changes (each one an event):           curl -X POST $SIM_BASE/_sim/mutate -d '{"entity":"deal","seed":9,"updates":100}'
    a sync by hand:                             curl -X POST $LOCAL_URL/2015-03-31/functions/sync-scheduled/invocations -d @events/sync-scheduled/incremental.json
    fire a schedule now:                        curl -X POST $LOCAL_URL/_local/schedules/reconcile-demo
    forward deal 42 with the Webhook robot:     curl -X POST $SIM_BASE/_sim/robot/webhook -d '{"url":"$ROBOT_URL?route=demo-to-central&secret=$ROUTE_SECRET","deal_id":42}'
    forward deal 43 with the application robot: curl -X POST $SIM_BASE/_sim/robot/app -d '{"deal_id":43,"code":"demo-to-central"}'
    the forwarded deals on central:             curl $CENTRAL_WEBHOOK/crm.deal.list -d '{"filter":{"ORIGINATOR_ID":"b24sync:sim.bitrix24.test"}}' 
    the functions' log and metric lines:       tail -f $WORK/local.log
    stop them:                                  kill $DEMO_PID $CENTRAL_PID $LOCAL_PID
EOF
fi
