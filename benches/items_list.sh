#!/usr/bin/env bash
# Benchmark of listing through the universal crm.item.list against the classic method:
# `b24sync list` of N deals through crm.deal.list (--api classic), the same N deals
# through crm.item.list (--api items), and N items of a smart process (always
# crm.item.list), each with 20 user fields, from the simulator with its default limits
# (burst 50, 2 requests/s, 480 operating seconds per method per 10 minutes), release
# build. Per run: rows per HTTP request, the client's operating seconds per 10,000 rows,
# the simulator's own charge for the list method per 10,000 rows, wall time, 503/429 and
# the CLI's peak RSS.
# Usage: benches/items_list.sh [ROWS]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

rows="${1:-100000}"
ensure_gnu_time
bench_start

list_run() { # $1 = entity, $2 = api, $3 = the list method the simulator charges
    local entity=$1 api=$2 method=$3 summary stats kb
    # A simulator of its own per run: its leaky bucket and operating window start empty,
    # as the classic listing's benchmark does (a run right after another would meet the
    # first one's requests in the bucket and its method's total in the window).
    if [ -n "$SIM_PID" ]; then kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; fi
    say "Starting the simulator: $rows deals and a smart process (1038 Orders) of $rows items, 20 user fields each"
    start_sim "$WORK" target/release/b24-sim --deals "$rows" --user-fields 20 \
        --smart-process "1038:Orders:$rows:uf=20"
    say "b24sync list --entity $entity --api $api --select '*,UF_*' --format count"
    /usr/bin/time -v target/release/b24sync list --webhook "$WEBHOOK" --entity "$entity" --api "$api" \
        --select '*,UF_*' --format count 2>"$WORK/$entity-$api.err"
    summary=$(summary_line "$WORK/$entity-$api.err")
    stats=$(sim_stats)
    kb=$(peak_rss_kb "$WORK/$entity-$api.err")
    echo "summary: $summary"
    echo "simulator: $stats"
    python3 - "$summary" "$stats" "$method" "$kb" "$entity" "$api" <<'PY'
import json, sys
summary, stats = json.loads(sys.argv[1]), json.loads(sys.argv[2])
method, kb, entity, api = sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
rows, requests = summary["rows"], summary["http_requests"]
charged = stats["operating_seconds_by_method"].get(method, 0.0)
print(f"| {entity} via {method} ({api}) | {rows:,} | {requests} | {rows / requests:,.1f} | "
      f"{summary['seconds']:.1f} s | {summary['operating_seconds'] / rows * 10000:.3f} | "
      f"{charged / rows * 10000:.3f} | {stats['status_503']} / {stats['status_429']} | {kb / 1024:.1f} MB |")
PY
}

list_run deal classic crm.deal.list
list_run deal items crm.item.list
list_run sp_1038 items crm.item.list
